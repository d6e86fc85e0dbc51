"""The edge process end to end: simulator -> journal -> real detector -> cues -> real Mosquitto."""
import asyncio
import json
import socket
import time

import numpy as np
import pytest

from runform.server import mqtt as m
from runform.server.cues import CueConfig
from runform.server.edge import Edge, JournalReplaySource, RunnerConfig, SimulatorSource
from runform.server.programs import load_program

from .conftest import PASSWORD, SPEC, PortGuard

pytest.importorskip("runform.firmware_bridge.simulator")
pytest.importorskip("runform.firmware_bridge.journal")


def settings(port):
    return m.MqttSettings(port=port, username="edge", password=PASSWORD, reconnect_min_s=0.2, reconnect_max_s=1.0)


def chatty_cues():
    # target far above the simulated 170 spm: a "quicker" reminder about every second
    return CueConfig(target_cadence_spm=185, tolerance_spm=5, confirm_s=0.5, min_spoken_interval_s=1.0,
                     reminder_interval_s=1.0, imbalance_limit_pct=None)


def test_broker_killed_and_restarted_mid_run(fresh_mosquitto, mqtt_sub, tmp_path):
    b = fresh_mosquitto.start()
    sub = mqtt_sub(b.port, "edge", topics=[m.runner_filter("alice")]).start()
    src = SimulatorSource("alice", sites=("sacrum",), duration_s=12.0, speed=1.0, seed=3)
    cfg = RunnerConfig("alice", mqtt=settings(b.port), journal_dir=tmp_path / "journal", cue=chatty_cues(),
                       access=SPEC)
    edge = Edge([src], {"alice": cfg})
    from runform.dsp import warmup
    warmup()  # compile first, so the outage timeline below starts with data already flowing
    marks = {}

    async def outage():
        await asyncio.sleep(4.5)
        marks["down"] = time.time()
        await asyncio.to_thread(b.kill)  # crash: no clean shutdown
        guard = PortGuard(b.port)
        await asyncio.sleep(3.5)
        guard.release()
        await asyncio.to_thread(b.start)
        marks["up"] = time.time()

    async def main():
        t = asyncio.create_task(outage())
        stats = await edge.run()
        await t
        return stats

    stats = asyncio.run(main())["alice"]
    sub.wait_stopped("alice")
    p = edge.pipelines["alice"]
    # 1. the journal is complete: every packet the source produced is on disk, outage or not
    from runform.firmware_bridge.journal import JournalReader
    files = list((tmp_path / "journal" / "alice").glob("*.rfj"))
    assert len(files) == 1
    assert sum(1 for _ in JournalReader(files[0]).packets()) == src.packets_ == stats["journaled_packets"] == 300
    # 2. cues before the outage and after the restart; none delivered after its expiry
    cues = [(x, json.loads(x.payload)) for x in sub.on("/cues")]
    assert any(x.recv_unix_s < marks["down"] for x, _ in cues)
    assert any(x.recv_unix_s > marks["up"] for x, _ in cues)
    for x, c in cues:
        m.decode_json(x.payload, m.SCHEMA_CUE)
        assert x.recv_unix_s <= c["expires_unix_s"] + 0.3, "stale cue delivered late"
    assert stats["mqtt_stale_cues"] >= 1  # cues made during the outage were dropped, not delivered late
    # 3. status: online again after the restart (birth on reconnect), offline after the clean stop
    statuses = [(x, json.loads(x.payload)) for x in sub.on("/status")]
    assert any(x.recv_unix_s > marks["up"] and s["state"] == "online" for x, s in statuses)
    assert statuses[-1][1]["state"] == "offline" and statuses[-1][1]["reason"] == "edge stopped"
    assert p.link.counters["connects"] >= 2
    # 4. steps (QoS1) kept flowing; metrics resumed
    assert any(x.recv_unix_s > marks["up"] for x in sub.on("/metrics"))
    steps = [s for x in sub.on("/steps") for s in json.loads(x.payload)["steps"]]
    ic = np.array([s["ic_s"] for s in steps])
    assert len(ic) > 15 and np.all(np.diff(np.unique(ic)) > 0.2)


def test_program_interval_cues_and_live_control_via_broker(mosquitto, mqtt_sub, tmp_path):
    from .test_mqtt_broker import publish_one
    sub = mqtt_sub(mosquitto.port, "pt", topics=[m.runner_filter("alice")]).start()
    prog = load_program("demo-short")
    src = SimulatorSource("alice", sites=("sacrum",), duration_s=40.0, speed=4.0, seed=5)
    cfg = RunnerConfig("alice", mqtt=settings(mosquitto.port), program=prog, access=SPEC,
                       cue=CueConfig(min_spoken_interval_s=2.0, imbalance_limit_pct=None))
    edge = Edge([src], {"alice": cfg})

    async def therapist():
        await asyncio.sleep(1.0)
        ok = await asyncio.to_thread(publish_one, mosquitto.port, "pt", m.control_topic("alice", "pt"),
                                     m.encode_json(m.control_payload("advance_interval", {}, "adv1")))
        assert ok == "Success"
        await asyncio.to_thread(publish_one, mosquitto.port, "pt", m.control_topic("alice", "pt"),
                                m.encode_json(m.control_payload("raw_on", {}, "raw1")))

    async def main():
        t = asyncio.create_task(therapist())
        await edge.run()
        await t

    asyncio.run(main())
    sub.wait_stopped("alice")
    cues = [json.loads(x.payload) for x in sub.on("/cues")]
    interval_cues = [c for c in cues if c["kind"] == "interval"]
    assert interval_cues[0]["code"] == "interval_walk"
    # the therapist skipped the first walk: the run interval starts within ~1-2 s of stream time, not at 20 s
    run_cue = next(c for c in interval_cues if c["code"] == "interval_run")
    assert run_cue["time_s"] - interval_cues[0]["time_s"] < 10.0
    replies = {json.loads(x.payload)["request_id"]: json.loads(x.payload) for x in sub.on("control/reply")}
    assert replies["adv1"]["ok"] and replies["raw1"]["ok"]
    raws = sub.on("/raw")
    assert raws, "raw publishing was switched on"
    blk = m.decode_raw(raws[-1].payload)
    assert blk.site == "sacrum" and blk.acc_ms2.shape == (20, 3) and blk.gyr_dps is not None
    assert raws[-1].props.ContentType == m.RAW_CONTENT_TYPE


def test_replay_of_a_journal_gives_the_same_steps(tmp_path):
    """Record with the simulator (journal on), replay the journal: the DSP sees the same samples."""
    src = SimulatorSource("alice", sites=("sacrum",), duration_s=20.0, speed=0, seed=9)
    e1 = Edge([src], {"alice": RunnerConfig("alice", journal_dir=tmp_path)})
    asyncio.run(e1.run())
    n1 = e1.pipelines["alice"].counters["steps"]
    f = next((tmp_path / "alice").glob("*.rfj"))
    rep = JournalReplaySource(f, "alice", speed=0)
    e2 = Edge([rep], {"alice": RunnerConfig("alice")})
    asyncio.run(e2.run())
    p2 = e2.pipelines["alice"]
    assert p2.counters["samples"] == 20.0 * 500
    assert n1 > 40 and abs(p2.counters["steps"] - n1) <= 1


@pytest.mark.slow
def test_broker_down_30s_mid_run(tmp_path, mqtt_sub):
    """The issue's scenario: the broker dies (SIGKILL) for 30 s while two runners stream, and comes back.

    Realistic settings: the default reconnect backoff (0.5 s doubling to 4 s, +-20 % jitter); the broker keeps
    sessions on disk (``autosave_interval 1``) and the subscriber (a storage-like consumer) has a persistent
    session, so QoS1 steps queued by the edge during the outage reach it after the restart whichever of the two
    reconnects first.
    """
    from runform.dsp import warmup
    from runform.firmware_bridge.journal import JournalReader
    from runform.server.broker import MosquittoBroker

    from .conftest import _need_mosquitto
    _need_mosquitto()
    b = MosquittoBroker(tmp_path / "broker", SPEC, persistence=True, extra_conf=["autosave_interval 1"]).start()
    try:
        sub = mqtt_sub(b.port, "edge", topics=[m.runner_filter("alice"), m.runner_filter("bob")], clean_start=False,
                       session_expiry_s=600).start()
        # the subscriber's session must be in the broker's autosave (written every second) before the crash:
        # wait for a save that began after the SUBACK
        db, t_sub = b.workdir / "data" / "mosquitto.db", time.time()
        end = time.monotonic() + 15
        while not (db.exists() and db.stat().st_mtime > t_sub + 0.05):
            assert time.monotonic() < end, "the broker never autosaved"
            time.sleep(0.05)
        defaults = m.MqttSettings()
        mk = lambda: m.MqttSettings(port=b.port, username="edge", password=PASSWORD)  # noqa: E731
        duration = 44.0
        srcs = [SimulatorSource(r, sites=("sacrum",), duration_s=duration, speed=1.0, seed=k)
                for k, r in enumerate(("alice", "bob"))]
        cfgs = {s.runner: RunnerConfig(s.runner, mqtt=mk(), journal_dir=tmp_path / "journal", cue=chatty_cues(),
                                       access=SPEC) for s in srcs}
        edge = Edge(srcs, cfgs)
        warmup()
        marks = {}

        async def outage():
            await asyncio.sleep(5.0)
            marks["down"], marks["down_mono"] = time.time(), time.monotonic()
            marks["steps_at_down"] = {r: p.counters["steps"] for r, p in edge.pipelines.items()}
            await asyncio.to_thread(b.kill)  # crash: no clean shutdown, no will published by anyone
            marks["dead"] = time.time()  # kill() returns once the broker process is gone
            guard = PortGuard(b.port)
            await asyncio.sleep(30.0)
            guard.release()
            marks["steps_before_up"] = {r: p.counters["steps"] for r, p in edge.pipelines.items()}
            marks["connected_during"] = {r: p.link.connected for r, p in edge.pipelines.items()}
            marks["restart"], marks["restart_mono"] = time.time(), time.monotonic()
            await asyncio.to_thread(b.start)  # returns once the port accepts; the edge may be back before that
            marks["up"], marks["up_mono"] = time.time(), time.monotonic()
            # bob's edge connection dies abruptly once it is back: the broker must publish bob's will
            for _ in range(200):
                if edge.pipelines["bob"].link.connected and edge.pipelines["alice"].link.connected:
                    break
                await asyncio.sleep(0.05)
            marks["reconnected_mono"] = {r: p.link.last_connect_mono for r, p in edge.pipelines.items()}
            await asyncio.sleep(1.0)
            marks["cut"] = time.time()
            edge.pipelines["bob"].link.client.socket().shutdown(socket.SHUT_RDWR)

        async def main():
            t = asyncio.create_task(outage())
            stats = await edge.run()
            await t
            return stats

        stats = asyncio.run(main())
        sub.wait_stopped("alice", "bob")
    finally:
        b.stop()

    for r in ("alice", "bob"):
        p = edge.pipelines[r]
        st = stats[r]
        # the edge kept running through the outage: the DSP kept finding steps while nothing could be sent
        assert not marks["connected_during"][r]
        assert marks["steps_before_up"][r] - marks["steps_at_down"][r] > 60
        assert st["blocks"] == st["samples"] // 20 == duration * 25
        # journal complete
        files = list((tmp_path / "journal" / r).glob("*.rfj"))
        assert len(files) == 1
        assert sum(1 for _ in JournalReader(files[0]).packets()) == st["journaled_packets"] == duration * 25
        # reconnected within the backoff's maximum (+ jitter, + connect) of the broker's return
        delay = marks["reconnected_mono"][r] - marks["restart_mono"]
        print(f"{r}: reconnected {delay:.2f} s after the broker restart began, {p.link.connect_attempts} connect "
              f"attempts, {st['mqtt_stale_cues']} stale cues dropped, {st['steps']} steps")
        assert 0 <= delay <= defaults.reconnect_max_s * 1.2 + 1.0, delay
        assert p.link.connect_attempts > 5  # it kept trying (with backoff) the whole time
        # cues: before and after, none delivered late, the ones made during the outage dropped
        cues = [(x, m.decode_json(x.payload, m.SCHEMA_CUE)) for x in sub.on(f"{r}/cues")]
        assert any(x.recv_unix_s < marks["down"] for x, _ in cues)
        assert any(x.recv_unix_s > marks["up"] + 2.0 for x, _ in cues)
        for x, c in cues:
            assert x.recv_unix_s <= c["expires_unix_s"] + 0.3, "stale cue delivered late"
            # nothing can arrive while the broker is down; a cue made during the outage may only arrive after
            # the restart if it is still within its lifetime (checked above), i.e. it was made < ttl_s before
            assert not marks["dead"] + 0.2 < x.recv_unix_s < marks["restart"], (
                "received during the outage", round(x.recv_unix_s - marks["dead"], 3))
            if marks["dead"] < c["time_unix_s"] < marks["restart"]:
                assert c["time_unix_s"] > marks["restart"] - c["ttl_s"] - 0.3, "a cue made during the outage was sent"
        assert st["mqtt_stale_cues"] >= 10
        # steps (QoS1) made during the outage arrived after it; none lost, none twice
        steps = [s for x in sub.on(f"{r}/sacrum/steps") for s in json.loads(x.payload)["steps"]]
        ic = np.array([s["ic_s"] for s in steps])
        assert len(np.unique(ic)) == st["steps"] > 100
        assert np.sum((ic > marks["down_mono"] + 1) & (ic < marks["restart_mono"] - 1)) > 50
        assert any(x.recv_unix_s > marks["up"] for x in sub.on(f"{r}/metrics"))
    # status: online again after the restart (birth), bob's will after the cut, online again, offline at the end
    for r in ("alice", "bob"):
        statuses = [(x, m.decode_json(x.payload, m.SCHEMA_STATUS)) for x in sub.on(f"{r}/status")]
        assert any(x.recv_unix_s > marks["up"] and s["state"] == "online" for x, s in statuses)
        assert statuses[-1][1]["state"] == "offline" and statuses[-1][1]["reason"] == "edge stopped"
    bob = [(x, json.loads(x.payload)) for x in sub.on("bob/status")]
    wills = [x.recv_unix_s for x, s in bob if s["state"] == "offline" and "last will" in (s["reason"] or "")]
    assert len(wills) == 1 and wills[0] > marks["cut"]
    assert any(x.recv_unix_s > wills[0] and s["state"] == "online" for x, s in bob)
    assert not any("last will" in (json.loads(x.payload)["reason"] or "") for x in sub.on("alice/status"))
