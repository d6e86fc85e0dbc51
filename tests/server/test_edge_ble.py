"""BLE as a source of the edge, end to end: virtual sensors on bluezoo -> bleak's real BlueZ backend -> Bridge
(BleHub) -> journal -> DSP -> cues -> real Mosquitto -> a separate subscriber, for two runners.

alice wears a runform v1 sensor at the sacrum; bob one on the left foot plus an RSC foot pod (coarse: cadence and
speed only), which must stay out of the DSP and show up in bob's metrics as a coarse sensor.
"""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from runform.server import mqtt as m
from runform.server.cues import CueConfig
from runform.server.edge import BleHub, Edge, RunnerConfig

from .conftest import PASSWORD, SPEC

pytest.importorskip("runform.firmware_bridge.ble")
pytest.importorskip("runform.firmware_bridge.simulator")
pytestmark = pytest.mark.asyncio(loop_scope="session")

FAST = dict(backoff_initial_s=0.1, backoff_max_s=1.0, find_timeout_s=5.0)


async def test_ble_sensors_of_two_runners_to_subscriber(sensors, mosquitto, mqtt_sub, tmp_path):
    from runform.firmware_bridge.ble import SensorSpec
    from runform.firmware_bridge.journal import JournalReader
    from runform.firmware_bridge.simulator import RunnerProfile
    from runform.firmware_bridge.virtual import SensorBehavior, VirtualRscPod
    prof = RunnerProfile(cadence_spm=170)
    beh = dict(connection_interval_ms=15.0, clock_drift_ppm=20.0)
    a = await sensors("sacrum", sampling_rate_hz=500, profile=prof, behavior=SensorBehavior(seed=11, **beh))
    b = await sensors("foot_left", sampling_rate_hz=500, profile=prof, behavior=SensorBehavior(seed=12, **beh))
    pod = await sensors("foot_right", cls=VirtualRscPod, interval_s=0.5, profile=prof,
                        behavior=SensorBehavior(seed=13))
    specs = [SensorSpec(site="sacrum", address=a.address_, runner="alice", sampling_rate_hz=500),
             SensorSpec(site="foot_left", address=b.address_, runner="bob", sampling_rate_hz=500),
             SensorSpec(site="foot_right", address=pod.address_, runner="bob")]
    sub = await asyncio.to_thread(
        lambda: mqtt_sub(mosquitto.port, "edge", topics=[m.runner_filter("alice"), m.runner_filter("bob")]).start())

    hub = BleHub(specs, adapter="hci0", **FAST)
    assert set(hub.sources) == {"alice", "bob"}
    cue = CueConfig(target_cadence_spm=185, tolerance_spm=5, confirm_s=0.5, min_spoken_interval_s=1.0,
                    reminder_interval_s=1.0, imbalance_limit_pct=None)
    settings = m.MqttSettings(port=mosquitto.port, username="edge", password=PASSWORD)
    cfgs = {r: RunnerConfig(r, mqtt=settings, journal_dir=tmp_path / "journal", cue=cue, access=SPEC)
            for r in ("alice", "bob")}
    edge = Edge([hub.sources["alice"], hub.sources["bob"]], cfgs)
    stats = await edge.run(duration_s=14.0)
    ble = hub.stats()
    await asyncio.to_thread(sub.wait_stopped, "alice", "bob")

    # every sensor streamed; nothing was dropped between the bridge and the edge
    for sid in ("alice.sacrum", "bob.foot_left", "bob.foot_right"):
        assert ble[sid]["packets_received"] > 0, ble[sid]
    assert hub.dropped_ == 0 and all(s["dsp_skipped_blocks"] == 0 for s in stats.values())
    pa, pb = edge.pipelines["alice"], edge.pipelines["bob"]
    # the pod's MetricsBlocks never reached the DSP (no detector for it), they were counted as coarse
    assert set(pa.detectors) == {"alice.sacrum"} and set(pb.detectors) == {"bob.foot_left"}
    assert stats["bob"]["coarse_blocks"] == ble["bob.foot_right"]["packets_received"] > 5
    assert stats["alice"]["coarse_blocks"] == 0

    # raw journals: one per sensor, opened at the first connection, every notification in it
    for runner, sid in (("alice", "alice.sacrum"), ("bob", "bob.foot_left"), ("bob", "bob.foot_right")):
        files = list((tmp_path / "journal" / runner).glob(f"*_{sid}.rfj"))
        assert len(files) == 1, sid
        rd = JournalReader(files[0])
        n = sum(1 for _ in rd.packets())
        assert n == ble[sid]["packets_received"] + ble[sid]["packets_malformed"] + ble[sid]["packets_duplicate"]
        assert rd.sensor_["runner"] == runner and rd.sensor_["sensor_id"] == sid
    assert stats["alice"]["journaled_packets"] == ble["alice.sacrum"]["packets_received"]

    # the subscriber got steps, metrics and cues of both runners
    for runner, site in (("alice", "sacrum"), ("bob", "foot_left")):
        steps = [s for x in sub.on(f"{runner}/{site}/steps") for s in m.decode_json(x.payload, m.SCHEMA_STEPS)["steps"]]
        ic = np.array([s["ic_s"] for s in steps])
        assert len(steps) >= 10, (runner, len(steps))
        assert np.all(np.diff(ic) > 0.2)  # no duplicates, plausible step times
        cad = np.median([s["cadence_spm"] for s in steps if s["cadence_spm"] is not None])
        assert 150 < cad < 190, (runner, cad)
        metrics = [m.decode_json(x.payload, m.SCHEMA_METRICS) for x in sub.on(f"{runner}/metrics")]
        assert len(metrics) >= 5
        cues = [m.decode_json(x.payload, m.SCHEMA_CUE) for x in sub.on(f"{runner}/cues")]
        assert any(c["code"] == "cadence_low" for c in cues), (runner, [c["code"] for c in cues])
        assert all(c["trigger_arrival_ns"] for c in cues if c["kind"] == "cadence")
        statuses = [json.loads(x.payload) for x in sub.on(f"{runner}/status")]
        assert any(s["state"] == "online" for s in statuses) and statuses[-1]["state"] == "offline"
    # bob's metrics carry the pod's coarse values (cadence in steps/min of both feet, speed)
    bob_metrics = [json.loads(x.payload) for x in sub.on("bob/metrics")]
    coarse = [c for mt in bob_metrics for c in mt.get("coarse_sensors", [])]
    assert coarse and {c["sensor"] for c in coarse} == {"bob.foot_right"}
    late = coarse[len(coarse) // 2:]
    assert all(abs(c["cadence_spm"] - 170) <= 12 and 2.5 < c["speed_ms"] < 4.5 for c in late), late
    assert not any("coarse_sensors" in json.loads(x.payload) for x in sub.on("alice/metrics"))


async def _until(pred, timeout_s: float) -> bool:
    """Wait (without blocking the loop that drives the edge) until ``pred()`` or the timeout."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_status_links_battery_loss_and_reconnect_seen_by_the_therapist(sensors, mosquitto, mqtt_sub):
    """alice's sensor: 5 % loss on air, battery at 57 %, the link drops once. Her therapist (pt) sees it in the
    retained status: battery, loss (session and recent) matching the sensor's own truth, connected=false during
    the drop, then reconnects=1. Another therapist (pt2) gets nothing."""
    import time

    from runform.firmware_bridge.ble import SensorSpec
    from runform.firmware_bridge.virtual import SensorBehavior

    from .conftest import ScriptedStepDetector
    window_s = 3.0
    vs = await sensors("sacrum", sampling_rate_hz=500, behavior=SensorBehavior(
        connection_interval_ms=15.0, loss_pct=5.0, battery_start_pct=57.0, disconnect_at_s=(2.0,), seed=21))
    spec = SensorSpec(site="sacrum", address=vs.address_, runner="alice", sampling_rate_hz=500)
    topic = m.status_topic("alice")
    t_start = time.time()
    pt = await asyncio.to_thread(lambda: mqtt_sub(mosquitto.port, "pt", topics=[topic]).start())
    pt2 = await asyncio.to_thread(lambda: mqtt_sub(mosquitto.port, "pt2", topics=[topic]).start())
    hub = BleHub([spec], adapter="hci0", **{**FAST, "backoff_initial_s": 2.0})  # an outage of ~2 s (50 packets)
    cfg = RunnerConfig("alice", mqtt=m.MqttSettings(port=mosquitto.port, username="edge", password=PASSWORD),
                       access=SPEC, link_recent_window_s=window_s)
    edge = Edge([hub.sources["alice"]], {"alice": cfg}, detector_factory=ScriptedStepDetector)
    task = asyncio.create_task(edge.run())

    def statuses():  # this run's (not an earlier test's retained one), each validated against the contract
        out = [m.decode_json(x.payload, m.SCHEMA_STATUS) for x in pt.on("alice/status")]
        return [d for d in out if d["time_unix_s"] >= t_start]

    def link_history():
        return [(d, d["links"][0]) for d in statuses() if d.get("links")]

    def reconnected():  # connected, then lost (connected=false), then connected again with reconnects=1
        h = [ln for _, ln in link_history()]
        up = next((i for i, ln in enumerate(h) if ln["connected"]), None)
        down = next((i for i, ln in enumerate(h) if up is not None and i > up and not ln["connected"]), None)
        return down is not None and any(ln["connected"] and ln["reconnects"] == 1 for ln in h[down + 1:])

    try:
        assert await _until(reconnected, 40.0), [ln for _, ln in link_history()]
        t_back = next(d["time_unix_s"] for d, ln in link_history() if ln["connected"] and ln["reconnects"] == 1)
        # a status whose recent window lies entirely after the reconnection (window + one sampling period)
        assert await _until(lambda: any(d["time_unix_s"] > t_back + window_s + 2.0 for d in statuses()), 30.0)
    finally:
        edge.stop()
        await task
    assert await _until(lambda: any(d["state"] == "offline" for d in statuses()), 10.0)  # the edge's last word
    late = next(ln for d, ln in link_history() if d["time_unix_s"] > t_back + window_s + 2.0)
    final = next(ln for d, ln in link_history() if d["state"] == "offline")
    ble = hub.stats()["alice.sacrum"]

    h = [ln for _, ln in link_history()]
    down = [ln for ln in h if not ln["connected"] and ln["packets_received"] > 0]
    assert down and down[0]["reconnects"] == 0  # the drop was published before the reconnection
    assert all(ln["sensor_id"] == "alice.sacrum" and ln["site"] == "sacrum" for ln in h)
    assert late["kind"] == "runform_v1" and late["connected"] and late["arrival_stamped"] is False
    assert late["battery_pct"] == vs.battery_pct() == 57
    assert late["rssi_dbm"] is not None and late["rssi_dbm"] < 0
    assert abs(late["sampling_rate_hz_measured"] - 500) < 10 and late["clock_drift_ppm"] is not None
    # the whole session, against the sensor's own truth: every packet it made up to the last one the edge saw
    # was either received or lost (on air, or unsent while the link was down)
    assert final["connected"] is False and final["reconnects"] == 1
    assert (final["packets_received"], final["packets_lost"]) == (ble["packets_received"], ble["packets_lost"])
    span = final["packets_received"] + final["packets_lost"]
    truth_lost = sum(1 for s in vs.engine_.lost_seqs_ if s < span)
    assert final["packets_lost"] == truth_lost > vs.engine_.packets_unsent_ > 10
    assert final["loss_pct"] == pytest.approx(100 * truth_lost / span, abs=1e-3)
    # the recent loss no longer contains the outage, the session loss does
    assert late["loss_recent_pct"] is not None and late["loss_recent_pct"] < late["loss_pct"]
    assert late["loss_recent_pct"] < 20.0
    assert pt2.on("alice/status") == []  # pt2 is bob's therapist: the broker's ACL gives him nothing of alice
