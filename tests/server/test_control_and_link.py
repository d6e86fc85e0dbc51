"""Live control decided by the edge (who may do what), and the MQTT link's connection behaviour against the real
broker: reconnect backoff, client ids that never collide, QoS per topic as delivered."""
import asyncio
import socket
import threading
import time

import pytest

from runform.server import mqtt as m
from runform.server.cues import CueConfig
from runform.server.edge import RunnerConfig, RunnerPipeline, SensorInfo

from .conftest import PASSWORD, SPEC, PortGuard, run_loop_until, synthetic_steps


def _pipeline(**kw):
    cfg = RunnerConfig("alice", access=SPEC, cue=CueConfig(target_cadence_spm=170), **kw)
    return RunnerPipeline(cfg, [SensorInfo("s1", "sacrum", 500.0)])


def _send(p, issuer, command, args=None, rid="r"):
    payload = m.encode_json(m.control_payload(command, args or {}, rid))
    return p.handle_control(m.control_topic("alice", issuer), payload)


def test_the_assigned_therapist_changes_the_target_and_pauses():
    p = _pipeline()
    r = _send(p, "pt", "set_target_cadence", {"cadence_spm": 176, "tolerance_spm": 4})
    assert r["ok"] and r["issuer"] == "pt" and r["state"]["target_cadence_spm"] == 176
    assert p.cues.config.target_cadence_spm == 176 and p.cues.config.tolerance_spm == 4
    r = _send(p, "pt", "pause")
    assert r["ok"] and r["state"]["paused"] and p.paused
    # paused: steps are still counted and published, but no cue is made
    assert p.handle_steps(synthetic_steps(0.0, 40, 150.0), 14.0) == []
    assert _send(p, "pt", "resume")["ok"] and not p.paused
    assert p.counters["control_ok"] == 3 and p.counters["control_rejected"] == 0


@pytest.mark.parametrize("issuer, command, args, why", [
    ("pt2", "set_target_cadence", {"cadence_spm": 150}, "may not control 'alice'"),  # another runner's therapist
    ("pt2", "pause", {}, "may not control 'alice'"),
    ("mallory", "pause", {}, "may not control 'alice'"),  # not a user at all
    ("bob", "resume", {}, "may not control 'alice'"),  # another runner
    ("alice", "set_target_cadence", {"cadence_spm": 150}, "role 'runner' may not set_target_cadence"),
    ("alice", "advance_interval", {}, "role 'runner' may not advance_interval"),
    ("alice", "set_limits", {"impact_limit_g": 9.0}, "role 'runner' may not set_limits"),
])
def test_unauthorised_control_is_refused_with_the_reason_and_changes_nothing(issuer, command, args, why):
    """The edge's own check (the only one on the embedded broker, which has no ACL): issuer known, assigned to
    this runner, and its role allowed for the command."""
    p = _pipeline()
    before = (p.cues.config, p.paused)
    r = _send(p, issuer, command, args, rid="x1")
    assert r["ok"] is False and r["request_id"] == "x1" and r["command"] == command and r["issuer"] == issuer
    assert r["reason"].startswith("unauthorised") and why in r["reason"]
    assert (p.cues.config, p.paused) == before
    assert p.counters["control_unauthorised"] == p.counters["control_rejected"] == 1
    assert p.rejections[-1] == (issuer, r["reason"])


def _settings(port, **kw):
    return m.MqttSettings(port=port, username="edge", password=PASSWORD, **kw)


def test_reconnect_backoff_doubles_with_jitter_up_to_the_cap_and_resets_after_connect(tmp_path):
    from runform.server.broker import MosquittoBroker, free_port

    from .conftest import _need_mosquitto
    _need_mosquitto()
    port = free_port()
    broker = MosquittoBroker(tmp_path / "broker", SPEC, port=port)
    guard = PortGuard(port)  # a port where nothing speaks MQTT: every connect fails
    loop = asyncio.new_event_loop()
    link = m.MqttLink(_settings(port, reconnect_min_s=0.05, reconnect_max_s=0.4), m.make_client_id("edge", "alice"))
    try:
        link.start(loop)
        assert run_loop_until(loop, lambda: len(link.reconnect_delays_s) >= 7, 30)
        delays = list(link.reconnect_delays_s)
        for k, d in enumerate(delays[:7]):
            base = min(0.05 * 2 ** k, 0.4)
            assert 0.8 * base - 1e-9 <= d <= 1.2 * base + 1e-9, (k, delays)
        assert not link.connected and link.connect_attempts >= 7
        guard.release()
        broker.start()
        assert run_loop_until(loop, lambda: link.connected, 20)
        n = len(link.reconnect_delays_s)
        link.client.socket().shutdown(socket.SHUT_RDWR)  # the connection drops: the first wait is short again
        assert run_loop_until(loop, lambda: len(link.reconnect_delays_s) > n, 20)
        assert link.reconnect_delays_s[n] <= 1.2 * 0.05 + 1e-9
        assert run_loop_until(loop, lambda: link.connected and link.counters["connects"] == 2, 20)
    finally:
        link.stop()
        loop.close()
        guard.release()
        broker.stop()


def test_two_edges_for_the_same_runner_do_not_kick_each_other_off(mosquitto, mqtt_sub):
    """Client ids are unique per process and per link: a second edge for the same runner (a restarted one,
    a second worker) gets its own id; with a shared id the broker would disconnect the older client."""
    ids = {m.make_client_id("edge", "alice") for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("rf-edge-alice-") for i in ids)
    sub = mqtt_sub(mosquitto.port, "edge", topics=[m.steps_topic("alice", "collide")]).start()
    links = [m.MqttLink(_settings(mosquitto.port), m.make_client_id("edge", "alice")).start() for _ in range(2)]
    try:
        assert all(link.wait_connected(10) for link in links)
        for k in range(20):
            for i, link in enumerate(links):
                link.enqueue(m.CLASS_STEPS, m.steps_topic("alice", "collide"), b'{"l":%d,"k":%d}' % (i, k))
                link.pump()
        assert sub.wait_for(lambda x: x.payload == b'{"l":1,"k":19}', 10)
        assert sub.wait_for(lambda x: x.payload == b'{"l":0,"k":19}', 10)
        assert all(link.connected and link.counters["connects"] == 1 and link.counters["disconnects"] == 0
                   for link in links)
    finally:
        for link in links:
            link.stop()


def test_qos_and_expiry_per_topic_as_delivered(mosquitto, mqtt_sub):
    """A subscriber asking for QoS 1 on everything gets each topic at the QoS the contract gives it (the
    delivered QoS is the lower of the two): steps, status, replies QoS 1; cues, metrics, raw QoS 0; cues with
    a message expiry of at most their lifetime."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    got = {}
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"qos-{time.monotonic_ns()}", protocol=mqtt.MQTTv5)
    c.username_pw_set("edge", PASSWORD)
    c.on_message = lambda cl, ud, msg: got.setdefault(msg.topic, (msg.qos, msg.retain, msg.properties))
    subacked = threading.Event()
    c.on_subscribe = lambda *a: subacked.set()
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    c.subscribe(m.runner_filter("qosrunner"), qos=1)
    assert subacked.wait(10), "no SUBACK"
    try:
        from runform.firmware_bridge import SampleBlock
        import numpy as np
        p = RunnerPipeline(RunnerConfig("qosrunner", mqtt=_settings(mosquitto.port), publish_raw=True,
                                        cue=CueConfig(target_cadence_spm=185, confirm_s=0.0, min_spoken_interval_s=0)),
                           [SensorInfo("s1", "sacrum", 500.0)])
        loop = asyncio.new_event_loop()
        try:
            p.open(loop)
            assert run_loop_until(loop, lambda: p.link.connected, 10)
            blk = SampleBlock("s1", "sacrum", 0, 0, 32768.0, 500.0, np.zeros((20, 3)), None, time.monotonic_ns(),
                              np.arange(20) / 500.0, False)
            p.link.enqueue(m.CLASS_RAW, m.raw_topic("qosrunner", "sacrum"), m.encode_raw(blk),
                           content_type=m.RAW_CONTENT_TYPE)
            t = 0.0
            for k in range(30):  # 170 spm against a 185 target: metronome + "quicker" cues, metrics every 1 s
                p.handle_steps(synthetic_steps(t, 3, 170.0, first_side=k % 2), t + 3 * 60 / 170,
                               trigger_arrival_ns=time.monotonic_ns())
                t += 3 * 60 / 170
            p.handle_control(m.control_topic("qosrunner", "edge"), m.encode_json(m.control_payload("status")))
            want = {m.steps_topic("qosrunner", "sacrum"), m.metrics_topic("qosrunner"), m.cues_topic("qosrunner"),
                    m.status_topic("qosrunner"), m.reply_topic("qosrunner"), m.raw_topic("qosrunner", "sacrum")}
            assert run_loop_until(loop, lambda: want <= set(got), 10), set(got)
        finally:
            p.close()
            loop.close()
    finally:
        c.disconnect()
        c.loop_stop()
    qos = {t.split("/", 3)[3]: q for t, (q, _, _) in got.items()}
    assert qos == {"sacrum/steps": 1, "status": 1, "control/reply": 1, "metrics": 0, "cues": 0, "sacrum/raw": 0}
    assert qos == {k: m.CLASSES[c].qos for k, c in (("sacrum/steps", "steps"), ("status", "control"),
                                                      ("control/reply", "control"), ("metrics", "metrics"),
                                                      ("cues", "cue"), ("sacrum/raw", "raw"))}
    cue_props = got[m.cues_topic("qosrunner")][2]
    assert 1 <= cue_props.MessageExpiryInterval <= 2
    assert got[m.raw_topic("qosrunner", "sacrum")][2].ContentType == m.RAW_CONTENT_TYPE


def test_a_slow_edge_is_not_a_stalled_broker(mosquitto):
    """The edge's own event loop was busy (a loaded machine) while the broker acknowledged at once: the PUBACKs sit
    unread in the socket. The link must read them before calling the broker stalled (a false stall holds output
    and lets cues expire)."""
    loop = asyncio.new_event_loop()
    link = m.MqttLink(_settings(mosquitto.port), m.make_client_id("edge", "slowedge"))
    try:
        link.start(loop)
        assert run_loop_until(loop, lambda: link.connected, 10)
        link.enqueue(m.CLASS_STEPS, m.steps_topic("slowedge", "sacrum"), b'{"k": 1}')
        assert link.pump() == 1 and link.pending == 1
        time.sleep(link.settings.stall_s * 1.5)  # the loop does not run: the PUBACK arrives but is not read
        link.enqueue(m.CLASS_STEPS, m.steps_topic("slowedge", "sacrum"), b'{"k": 2}')
        assert link.pump() == 1  # sent, not held
        assert not link.stalled and link.counters["stalls"] == 0
        assert run_loop_until(loop, lambda: link.pump() >= 0 and link.pending == 0, 10)  # both acknowledged
    finally:
        link.stop()
        loop.close()
