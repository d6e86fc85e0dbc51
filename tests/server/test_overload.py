"""Overload with the real broker: a broker that stops reading mid-run, and a subscriber that stops reading.

What may be dropped is dropped (stale cues, raw blocks that are in the journal), accepted data is not (journal,
QoS 1 steps), memory stays bounded on both sides, and the edge says so (counters in the status, log lines).
"""
import asyncio
import json
import logging
import socket
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from runform.server import mqtt as m
from runform.server.cues import CueConfig
from runform.server.edge import Edge, RunnerConfig, SimulatorSource

from .conftest import PASSWORD

pytest.importorskip("runform.firmware_bridge.simulator")


def settings(port):
    return m.MqttSettings(port=port, username="edge", password=PASSWORD, reconnect_min_s=0.2, reconnect_max_s=1.0)


def test_edge_under_a_stalled_broker_sheds_what_may_be_shed_and_says_so(fresh_mosquitto, mqtt_sub, tmp_path,
                                                                         caplog):
    """Mosquitto SIGSTOPped for 7 s while the edge streams at 2x real time with raw publishing on (50 raw
    blocks/s; the raw queue holds 256): the TCP connection stays up, nothing is acknowledged."""
    from runform.dsp import warmup
    from runform.firmware_bridge.journal import JournalReader
    caplog.set_level(logging.INFO, logger="runform.mqtt")
    b = fresh_mosquitto.start()
    sub = mqtt_sub(b.port, "edge", topics=[m.runner_filter("alice")]).start()
    src = SimulatorSource("alice", sites=("sacrum",), duration_s=30.0, speed=2.0, seed=4)
    cue = CueConfig(target_cadence_spm=185, tolerance_spm=5, confirm_s=0.5, min_spoken_interval_s=1.0,
                    reminder_interval_s=1.0, imbalance_limit_pct=None)
    cfg = RunnerConfig("alice", mqtt=settings(b.port), journal_dir=tmp_path / "journal", cue=cue, publish_raw=True)
    edge = Edge([src], {"alice": cfg})
    warmup()
    marks = {}

    async def stall():
        p = edge.pipelines["alice"]
        while not (p.link is not None and p.link.connected and p.counters["cues"] >= 2):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        marks["stop"] = time.time()
        b.pause()
        while not p.link.stalled:  # the link notices: no PUBACK for stall_s
            await asyncio.sleep(0.02)
        marks["detected"] = time.time()
        await asyncio.sleep(7.0)
        marks["stale_during"] = p.link.queue.dropped_stale
        marks["cont"] = time.time()
        b.resume()

    async def main():
        t = asyncio.create_task(stall())
        try:
            return await edge.run()
        finally:
            b.resume()
            await t

    stats = asyncio.run(main())["alice"]
    assert sub.wait_for(lambda x: x.topic.endswith("/status") and json.loads(x.payload)["state"] == "offline", 10)
    link = edge.pipelines["alice"].link
    # accepted raw data is never lost: every packet is in the journal
    files = list((tmp_path / "journal" / "alice").glob("*.rfj"))
    assert len(files) == 1
    assert sum(1 for _ in JournalReader(files[0]).packets()) == src.packets_ == stats["journaled_packets"] == 30 * 25
    # what may be shed was shed, and counted: raw over MQTT (journaled), cues that expired while held
    assert stats["mqtt_stalls"] >= 1
    assert stats["mqtt_dropped"]["raw"] > 0
    assert marks["stale_during"] >= 1 and stats["mqtt_stale_cues"] >= marks["stale_during"]
    assert stats["mqtt_dropped"]["steps"] == stats["mqtt_dropped"]["control"] == 0
    for cls, pol in m.CLASSES.items():  # bounded
        assert stats["mqtt_queue_max"][cls] <= pol.maxlen
    assert link.stats()["max_pending"] <= link.settings.window
    # no cue was handed to the stalled broker after the stall was noticed: a cue that arrived after its expiry
    # can only be one made before the broker stopped reading or before the link noticed it
    cues = [(x, m.decode_json(x.payload, m.SCHEMA_CUE)) for x in sub.on("/cues")]
    late = [c for x, c in cues if x.recv_unix_s > c["expires_unix_s"] + 0.3]
    for c in late:
        assert marks["stop"] - 1.0 < c["time_unix_s"] < marks["detected"] + 0.3, (c, marks)
    assert not any(marks["detected"] + 0.3 < c["time_unix_s"] < marks["cont"] - c["ttl_s"] for _, c in cues), \
        "a cue made while the broker was stalled was sent after its lifetime"
    # it recovers: fresh cues after the broker reads again, and every step (QoS 1) arrives once
    assert any(x.recv_unix_s > marks["cont"] and x.recv_unix_s <= c["expires_unix_s"] + 0.3 for x, c in cues)
    steps = [s for x in sub.on("/sacrum/steps") for s in json.loads(x.payload)["steps"]]
    ic = np.array([s["ic_s"] for s in steps])
    assert len(ic) == len(np.unique(ic)) == stats["steps"] > 30
    # ... and says so: the retained status carries the counters, the log says what happened
    final = m.decode_json(sub.on("/status")[-1].payload, m.SCHEMA_STATUS)
    assert final["counters"]["mqtt_stalls"] >= 1 and final["counters"]["mqtt_dropped"]["raw"] > 0
    log = caplog.text
    assert "holding outgoing messages" in log and "acknowledges again" in log
    assert "outgoing raw queue full" in log and "journaled locally" in log


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_slow_subscriber_costs_bounded_memory_and_slows_nobody(fresh_mosquitto, mqtt_sub):
    """A subscriber that stops reading its socket (a phone in a tunnel, a hung dashboard) while the edge
    publishes ~100 MB: the broker keeps at most ``max_queued_bytes`` for it (16 MB in the generated config, about
    30 MB of broker memory) and drops the rest of ITS messages; the edge's queues stay short and a healthy
    subscriber gets every step."""
    b = fresh_mosquitto.start()
    assert "max_queued_bytes 16777216" in b.conf_path.read_text()
    healthy = mqtt_sub(b.port, "edge", topics=[m.steps_topic("alice", "foot_left")]).start()
    slow = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="slow-dashboard", protocol=mqtt.MQTTv5)
    slow.username_pw_set("pt", PASSWORD)
    slow.connect("127.0.0.1", b.port)
    slow.subscribe("runform/v1/alice/#", qos=1)
    for _ in range(20):  # CONNACK, SUBACK; after this nobody reads the socket again
        slow.loop(0.05)
    slow.socket().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    link = m.MqttLink(settings(b.port), m.make_client_id("edge", "alice")).start()
    try:
        assert link.wait_connected(5)
        big = b"x" * 4000
        rss = {"start": _rss_mb(b.pid)}
        n_total, n_marks = 24000, 0
        for i in range(n_total):
            if i % 2:
                link.enqueue(m.CLASS_STEPS, m.steps_topic("alice", "sacrum"), big)
            else:
                link.enqueue(m.CLASS_RAW, m.raw_topic("alice", "sacrum"), big)
            if i % 100 == 0:  # what the healthy subscriber checks: small QoS 1 messages in order
                link.enqueue(m.CLASS_STEPS, m.steps_topic("alice", "foot_left"), b'{"i":%d}' % n_marks)
                n_marks += 1
            deadline = time.monotonic() + 30
            while link.pump() == 0 and link.queue and time.monotonic() < deadline:
                time.sleep(0.001)
            if i + 1 in (n_total // 2, n_total):
                assert healthy.wait_for(lambda x: x.payload == b'{"i":%d}' % (n_marks - 1), 30)
                rss[i + 1] = _rss_mb(b.pid)
        st = link.stats()
    finally:
        link.stop()
    # the first half (48 MB) filled the slow client's queue; the second half (48 MB more) cost nothing
    half, full = rss[n_total // 2], rss[n_total]
    print(f"broker RSS MB: start {rss['start']:.1f}, after 48 MB {half:.1f}, after 96 MB {full:.1f}")
    assert full - half < 6.0, rss
    assert full - rss["start"] < 3 * 16, rss
    assert "Outgoing messages are being dropped for client slow-dashboard" in b.log_tail(200)
    # the edge was not slowed: nothing dropped on its side, its queues never grew
    assert st["published"] == sum(st["enqueued"].values()) == n_total + n_marks
    assert sum(st["dropped_overflow"].values()) == 0 and max(st["queue_max_depth"].values()) <= 2
    got = [int(json.loads(x.payload)["i"]) for x in healthy.on("/foot_left/steps")]
    assert got == list(range(n_marks))
    slow.socket().close()
