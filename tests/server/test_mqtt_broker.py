"""Contract behaviour against a REAL Mosquitto: ACL, expiry, retained status + last will, control, overload."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from runform.server import mqtt as m
from runform.server.broker import EmbeddedBroker, iotcore_available
from runform.server.cues import Cue, CueConfig
from runform.server.edge import RunnerConfig, RunnerPipeline, SensorInfo

from .conftest import PASSWORD, SPEC, publish_one, run_loop_until, synthetic_steps


def settings(broker, user="edge"):
    return m.MqttSettings(port=broker.port, username=user, password=PASSWORD, reconnect_min_s=0.2,
                          reconnect_max_s=1.0)


def test_anonymous_and_wrong_password_refused(mosquitto, mqtt_sub):
    anon = mqtt_sub(mosquitto.port, user=None).start(wait=False)
    wrong = mqtt_sub(mosquitto.port, user="alice", password="nope").start(wait=False)
    end = time.monotonic() + 10
    while not (anon.connack and wrong.connack):  # wait for the broker's answers (CONNACK)
        assert time.monotonic() < end, "no CONNACK"
        time.sleep(0.02)
    assert not anon.connected.is_set() and not wrong.connected.is_set()
    assert any(rc.value == 0x87 for rc in anon.connack)  # Not authorized
    assert any(rc.value == 0x87 for rc in wrong.connack)


def test_runner_cannot_read_other_runner_and_therapist_scope(mosquitto, mqtt_sub):
    alice = mqtt_sub(mosquitto.port, "alice", topics=["runform/v1/bob/#", "runform/v1/alice/#"]).start()
    pt = mqtt_sub(mosquitto.port, "pt", topics=["runform/v1/+/metrics"]).start()
    edge = mqtt_sub(mosquitto.port, "edge", topics=["runform/v1/+/control/+"]).start()
    for r in ("alice", "bob"):
        payload = m.encode_json({"schema": m.SCHEMA_METRICS, "runner": r, "time_s": 1.0, "window_s": 10.0,
                                 "cadence_spm": 170.0, "steps_total": 5})
        assert publish_one(mosquitto.port, "edge", m.metrics_topic(r), payload) == "Success"
    # therapist commands: own topic for the assigned runner OK; other runner / spoofed issuer refused
    ctl = m.encode_json(m.control_payload("pause"))
    assert publish_one(mosquitto.port, "pt", m.control_topic("alice", "pt"), ctl) == "Success"
    assert publish_one(mosquitto.port, "pt", m.control_topic("bob", "pt"), ctl) == "Not authorized"
    assert publish_one(mosquitto.port, "pt", m.control_topic("alice", "edge"), ctl) == "Not authorized"
    assert publish_one(mosquitto.port, "alice", m.control_topic("alice", "pt"), ctl) == "Not authorized"
    assert publish_one(mosquitto.port, "alice", m.metrics_topic("bob"), b"{}") == "Not authorized"
    # sentinels, published last: everything published before them has been routed to every subscriber when
    # they arrive (the broker routes at receipt, and keeps its order towards each subscriber)
    assert publish_one(mosquitto.port, "edge", m.metrics_topic("alice"), b'{"sentinel": 1}') == "Success"
    assert publish_one(mosquitto.port, "pt", m.control_topic("alice", "pt"), b'{"sentinel": 2}') == "Success"
    for sub, want in ((alice, b'{"sentinel": 2}'), (pt, b'{"sentinel": 1}'), (edge, b'{"sentinel": 2}')):
        assert sub.wait_for(lambda x, want=want: x.payload == want), want
    # alice sees her own subtree (incl. the therapist's command to her) and nothing of bob's
    live = [x for x in alice.messages if not x.retain]  # retained status of other tests on the shared broker
    assert sorted(x.topic for x in live) == ["runform/v1/alice/control/pt"] * 2 + ["runform/v1/alice/metrics"] * 2
    assert not any("/bob/" in x.topic for x in alice.messages)
    assert [x.topic for x in pt.messages] == ["runform/v1/alice/metrics"] * 2
    assert [x.topic for x in edge.messages] == ["runform/v1/alice/control/pt"] * 2


def test_cue_expiry_for_offline_subscriber(fresh_mosquitto, mqtt_sub):
    # the broker queues QoS0 for offline sessions here, so only the EXPIRY can keep the stale cue away
    fresh_mosquitto.extra_conf = ["queue_qos0_messages true"]
    b = fresh_mosquitto.start()
    sub = mqtt_sub(b.port, "alice", client_id="alice-headphones", topics=[m.cues_topic("alice")],
                   clean_start=False, session_expiry_s=300).start()
    sub.stop()
    link = m.MqttLink(settings(b), m.make_client_id("edge", "alice")).start()
    assert link.wait_connected(5)
    for code, ttl in (("short", 2.0), ("long", 10.0)):
        c = Cue("cadence", code, 0.0, 1, "x", None, ttl)
        link.enqueue(m.CLASS_CUE, m.cues_topic("alice"), m.encode_json(m.cue_payload("alice", c, 1)), ttl_s=ttl)
    # a QoS 1 message after the two cues: once it is acknowledged, the broker holds both cues (one connection's
    # packets are processed in order), so their lifetimes on the broker run from (at the latest) now
    link.enqueue(m.CLASS_STEPS, m.steps_topic("alice", "sacrum"), b'{"marker": 1}')
    end = time.monotonic() + 10
    while link.pending or link.queue:
        assert time.monotonic() < end, "marker not acknowledged"
        link.pump()
        time.sleep(0.01)
    # the 2 s cue expires on the broker; the 10 s one has about 6 s left. Mosquitto keeps time in whole seconds
    # (expiry = its clock second at receipt + interval, expired once its clock is past that): a message can live up
    # to 1 s longer than its interval, and the clock second may be one behind at receipt: 2 s + 2 s of margin
    time.sleep(4.0)
    sub2 = mqtt_sub(b.port, "alice", client_id="alice-headphones", topics=[], clean_start=False,
                    session_expiry_s=300).start()
    assert sub2.wait_for(lambda x: True, 3.0)
    # a third cue, sent now: it is queued behind whatever the broker still held for the session
    c = Cue("cadence", "after", 0.0, 1, "x", None, 10.0)
    link.enqueue(m.CLASS_CUE, m.cues_topic("alice"), m.encode_json(m.cue_payload("alice", c, 1)), ttl_s=10.0)
    link.pump()
    assert sub2.wait_for(lambda x: json.loads(x.payload)["code"] == "after", 5.0)
    got = [json.loads(x.payload)["code"] for x in sub2.messages]
    assert got == ["long", "after"]
    assert 5 <= sub2.messages[0].props.MessageExpiryInterval <= 8
    link.stop()


EDGE_SCRIPT = textwrap.dedent("""
    import sys, time, asyncio
    from runform.server.edge import RunnerConfig, RunnerPipeline, SensorInfo
    from runform.server.mqtt import MqttSettings
    port = int(sys.argv[1])
    cfg = RunnerConfig("alice", mqtt=MqttSettings(port=port, username="edge", password=sys.argv[2]))
    p = RunnerPipeline(cfg, [SensorInfo("s1", "sacrum", 500.0)])
    loop = asyncio.new_event_loop()
    p.open(loop)  # the link's socket is driven by this loop: run it
    async def until_connected():
        while not p.link.connected:
            await asyncio.sleep(0.01)
    loop.run_until_complete(asyncio.wait_for(until_connected(), 10))
    print("connected", flush=True)
    loop.run_until_complete(asyncio.sleep(60))
""")


def test_status_retained_and_last_will_when_edge_dies(mosquitto, mqtt_sub, tmp_path):
    script = tmp_path / "edge.py"
    script.write_text(EDGE_SCRIPT)
    watcher = mqtt_sub(mosquitto.port, "pt", topics=[m.status_topic("alice")]).start()
    proc = subprocess.Popen([sys.executable, str(script), str(mosquitto.port), PASSWORD], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"connected"
        assert watcher.wait_for(lambda x: json.loads(x.payload)["state"] == "online", 5)
        with watcher.lock:
            seen = len(watcher.messages)  # an earlier test may have left a retained "offline": only count new ones
        proc.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker must publish the will
        proc.wait(5)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with watcher.lock:
                new = watcher.messages[seen:]
            if any(json.loads(x.payload)["state"] == "offline" for x in new):
                break
            time.sleep(0.02)
        else:
            raise AssertionError("no last will after SIGKILL")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    last = json.loads(watcher.messages[-1].payload)
    assert last["state"] == "offline" and "last will" in last["reason"]
    m.decode_json(watcher.messages[-1].payload, m.SCHEMA_STATUS)
    # retained: a client connecting later sees the offline status at once
    late = mqtt_sub(mosquitto.port, "alice", topics=[m.status_topic("alice")]).start()
    assert late.wait_for(lambda x: x.retain and json.loads(x.payload)["state"] == "offline", 3)


def test_control_validation_authorisation_and_replies(mosquitto, mqtt_sub):
    watcher = mqtt_sub(mosquitto.port, "pt", topics=[m.reply_topic("alice"), m.status_topic("alice")]).start()
    cfg = RunnerConfig("alice", mqtt=settings(mosquitto), access=SPEC, cue=CueConfig(target_cadence_spm=170))
    p = RunnerPipeline(cfg, [SensorInfo("s1", "sacrum", 500.0)])
    loop = asyncio.new_event_loop()
    try:
        p.open(loop)
        assert run_loop_until(loop, lambda: p.link.subscribed, 5)  # SUBACK: commands now reach the edge
        sends = [
            ("pt", b"{not json", None),
            ("pt", json.dumps({"schema": "runform.control.v1", "request_id": "r2", "command": "fly"}).encode(), "r2"),
            ("pt", m.encode_json(m.control_payload("set_target_cadence", {}, "r3"), check=False), "r3"),
            ("alice", m.encode_json(m.control_payload("set_target_cadence", {"cadence_spm": 150}, "r4")), "r4"),
            ("pt", b"x" * 5000, None),
            ("pt", m.encode_json(m.control_payload("set_target_cadence", {"cadence_spm": 178}, "r6")), "r6"),
            ("alice", m.encode_json(m.control_payload("pause", {}, "r7")), "r7"),
        ]
        for user, payload, _ in sends:
            assert publish_one(mosquitto.port, user, m.control_topic("alice", user), payload) == "Success"
        deadline = time.monotonic() + 10
        while len(watcher.on("control/reply")) < len(sends) and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.05))  # runs the edge's control handling
            while not p._control_q.empty():
                p.handle_control(*p._control_q.get_nowait())
            p._pump()
        replies = [m.decode_json(x.payload, m.SCHEMA_REPLY) for x in watcher.on("control/reply")]
        assert len(replies) == len(sends)
        by_id = {r["request_id"]: r for r in replies}
        assert [r["ok"] for r in replies] == [False, False, False, False, False, True, True]
        assert "malformed" in replies[0]["reason"] and "JSON" in replies[0]["reason"]
        assert "$.command" in by_id["r2"]["reason"]
        assert "cadence_spm" in by_id["r3"]["reason"]
        assert "unauthorised" in by_id["r4"]["reason"] and "runner" in by_id["r4"]["reason"]
        assert "exceeds" in replies[4]["reason"]
        assert by_id["r6"]["state"]["target_cadence_spm"] == 178 and p.cues.config.target_cadence_spm == 178
        assert by_id["r7"]["state"]["paused"] is True and p.paused
        assert p.counters["control_rejected"] == 5 and p.counters["control_ok"] == 2
        assert p.counters["control_malformed"] == 4 and p.counters["control_unauthorised"] == 1
        assert all(r["issuer"] in ("pt", "alice") for r in replies)
        assert watcher.wait_for(lambda x: x.topic.endswith("status") and json.loads(x.payload)["state"] == "paused")
    finally:
        p.close()
        loop.close()


def test_overload_keeps_edge_queues_bounded(fresh_mosquitto, mqtt_sub):
    b = fresh_mosquitto.start()
    sub = mqtt_sub(b.port, "edge", topics=["runform/v1/alice/#"]).start()
    link = m.MqttLink(settings(b), m.make_client_id("edge", "alice")).start()
    assert link.wait_connected(5)
    from runform.firmware_bridge import SampleBlock
    blk = SampleBlock("s1", "sacrum", 0, 0, 1.0, 500.0, np.zeros((100, 3)), np.zeros((100, 3)), 0,
                      np.arange(100) / 500, False)
    raw = m.encode_raw(blk)  # ~5 kB
    b.pause()  # SIGSTOP: the broker reads nothing; TCP buffers fill, nothing is acknowledged
    try:
        for i in range(3000):
            link.enqueue(m.CLASS_RAW, m.raw_topic("alice", "sacrum"), raw)
            link.enqueue(m.CLASS_STEPS, m.steps_topic("alice", "sacrum"), b'{"i":%d}' % i)
            if i % 100 == 0:
                link.enqueue(m.CLASS_CUE, m.cues_topic("alice"), b"{}", ttl_s=0.2)
            link.pump()
            time.sleep(0.0005)
        st = link.stats()
    finally:
        b.resume()
    for cls, pol in m.CLASSES.items():
        assert st["queue_max_depth"][cls] <= pol.maxlen
    assert st["max_pending"] <= link.settings.window
    assert st["dropped_overflow"]["raw"] > 0 and st["dropped_stale_cues"] > 0
    # 3000 steps into a 2000-deep queue (+ at most `window` handed to paho before it stalled): oldest dropped
    assert 1000 - link.settings.window <= st["dropped_overflow"]["steps"] <= 1000
    # the link recovers once the broker reads again
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(x.payload == b'{"i":2999}' for x in sub.on("/steps")):
        link.pump()
        time.sleep(0.02)
    steps = [json.loads(x.payload)["i"] for x in sub.on("/steps")]
    assert len(steps) >= 2000 - link.settings.window and steps == sorted(steps) and steps[-1] == 2999
    link.stop()


@pytest.mark.skipif(not iotcore_available(), reason="embedded broker fallback needs iotcore (pip install iotcore)")
def test_embedded_fallback_broker_v5_round_trip(tmp_path, mqtt_sub):
    b = EmbeddedBroker(tmp_path).start()
    try:
        sub = mqtt_sub(b.port, None, topics=[m.runner_filter("alice")]).start()
        link = m.MqttLink(m.MqttSettings(port=b.port), m.make_client_id("edge", "alice")).start()
        assert link.wait_connected(5)
        link.enqueue(m.CLASS_STEPS, m.steps_topic("alice", "sacrum"),
                     m.encode_json(m.steps_payload("alice", "s1", "sacrum", synthetic_steps(0, 3, 170))))
        link.enqueue(m.CLASS_CUE, m.cues_topic("alice"), b'{"c":1}', ttl_s=5)
        link.pump()
        assert sub.wait_for(lambda x: x.topic.endswith("/cues"), 5)
        assert sub.wait_for(lambda x: x.topic.endswith("/steps"), 5)
        cue = sub.on("/cues")[0]
        assert cue.props.MessageExpiryInterval in (4, 5)
        link.stop()
    finally:
        b.stop()
