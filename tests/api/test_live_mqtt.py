"""Refusals over MQTT (real Mosquitto, ACL + password file generated from the user store) and over the
WebSocket live stream (fed from that broker), plus control commands going out through the contract."""
from __future__ import annotations

import json
import struct
import time

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from runform.server.api import LiveHub
from runform.server.mqtt import (MqttSettings, control_topic, encode_json, metrics_topic, raw_topic,
                                 reply_payload, reply_topic, status_topic, steps_topic)

from .conftest import PASSWORD, bearer, login


def metrics(runner: str, t: float) -> bytes:
    return json.dumps({"schema": "runform.metrics.v1", "runner": runner, "time_s": t, "window_s": 10,
                       "cadence_spm": 170, "steps_total": 1}).encode()


# ------------------------------------------------------------------------------------------------ MQTT
def test_mqtt_runner_cannot_read_other_runner(mqtt_client):
    a = mqtt_client("alice", topics=["runform/v1/bob/#", "runform/v1/#", "runform/v1/alice/#"])
    edge = mqtt_client("edge")
    for i in range(5):
        edge.publish(metrics_topic("bob"), metrics("bob", i))
        edge.publish(steps_topic("bob", "sacrum"), b'{"x":1}')
    edge.publish(metrics_topic("alice"), metrics("alice", 99))  # sentinel: alice's own data does arrive
    assert a.wait_for(lambda t: t == metrics_topic("alice"))
    time.sleep(0.2)
    assert a.got(lambda t: "/bob/" in t) == []
    # and alice cannot write into bob's tree (PUBACK "not authorized", message not routed)
    spy = mqtt_client("edge", topics=["runform/v1/bob/#"])
    a.publish(metrics_topic("bob"), metrics("bob", -1))
    a.publish(control_topic("bob", "alice"), b"{}")
    edge.publish(status_topic("bob"), b'{"sentinel":1}', qos=1)
    assert spy.wait_for(lambda t: t == status_topic("bob"))
    assert [m for m in spy.got() if m[0] != status_topic("bob")] == []


def test_mqtt_anonymous_and_wrong_password_refused(mqtt_client):
    anon = mqtt_client(None, wait=False)
    bad = mqtt_client("alice", password="wrong password", wait=False)
    for c in (anon, bad):
        assert c.connack and c.connack[0].is_failure and c.connack[0].value == 0x87, c.connack


def test_mqtt_therapist_reads_assigned_only_and_writes_own_control(mqtt_client):
    pt = mqtt_client("pt", topics=["runform/v1/#"])
    pt2 = mqtt_client("pt2", topics=["runform/v1/#"])
    edge = mqtt_client("edge", topics=["runform/v1/+/control/+"])
    edge.publish(metrics_topic("bob"), metrics("bob", 1))
    edge.publish(metrics_topic("alice"), metrics("alice", 1))
    assert pt.wait_for(lambda t: t == metrics_topic("alice"))
    time.sleep(0.2)
    assert pt.got(lambda t: "/bob/" in t) == [] and pt2.got() == []
    # control: pt may write alice/control/pt only
    pt.publish(control_topic("alice", "alice"), b"forged issuer")
    pt.publish(control_topic("bob", "pt"), b"unassigned runner")
    pt.publish(control_topic("alice", "pt"), b"ok")
    assert edge.wait_for(lambda t: t == control_topic("alice", "pt"))
    time.sleep(0.2)
    assert [t for t, _ in edge.got()] == [control_topic("alice", "pt")]


def test_mqtt_lab_reads_enrolled_raw_read_only(mqtt_client):
    """lab is granted the study gait: bob is enrolled now; dan's window is over; alice is in no granted study."""
    lab = mqtt_client("lab", topics=["runform/v1/#"])
    edge = mqtt_client("edge", topics=["runform/v1/+/control/+"])
    edge.publish(raw_topic("alice", "sacrum"), b"RFR1-alice", qos=0)
    edge.publish(raw_topic("dan", "sacrum"), b"RFR1-dan", qos=1)
    edge.publish(metrics_topic("dan"), metrics("dan", 1), qos=1)
    edge.publish(raw_topic("bob", "sacrum"), b"RFR1-bob", qos=1)
    assert lab.wait_for(lambda t: t == raw_topic("bob", "sacrum"))
    time.sleep(0.2)
    assert lab.got(lambda t: "/alice/" in t or "/dan/" in t) == []
    lab.publish(control_topic("bob", "lab"), b"labs do not coach")
    edge.publish(control_topic("bob", "edge"), b"sentinel")
    assert edge.wait_for(lambda t: t == control_topic("bob", "edge"))
    assert edge.got(lambda t: t.endswith("/lab")) == []


def test_user_store_change_reloads_broker(users, broker, mqtt_client):
    """assign/unassign in the store -> files regenerated + SIGHUP -> the broker enforces the new ACL. Mosquitto
    applies a SIGHUP asynchronously: each step waits for its effect (sentinel rounds), never for a fixed time."""
    pt2 = mqtt_client("pt2", topics=["runform/v1/#"])  # read access is checked per message, at delivery
    edge = mqtt_client("edge")
    sync = broker.sync_helper()
    try:
        users.assign("pt2", "dan")  # dan carries the sentinels: pt2 reads him throughout
        assert sync.sync() is True and sync.reloads >= 1
        assert _until(lambda i: _try_round(edge, pt2, "dan", i, sentinel="dan", timeout_s=0.5) is True)
        assert _round(edge, pt2, "bob", 0, sentinel="dan") is False  # not assigned yet
        users.assign("pt2", "bob")
        assert sync.sync() is True
        assert _until(lambda i: _round(edge, pt2, "bob", 100 + i, sentinel="dan"))
    finally:
        users.unassign("pt2", "bob")
        sync.sync()
    try:
        assert _until(lambda i: not _round(edge, pt2, "bob", 1000 + i, sentinel="dan"))  # revoked ...
        assert not _round(edge, pt2, "bob", 2000, sentinel="dan")  # ... and stays so
    finally:
        users.unassign("pt2", "dan")
        sync.sync()


def _try_round(edge, sub, runner: str, i: int, sentinel: str = "bob", timeout_s: float = 10.0) -> bool | None:
    """Publish ``runner``'s raw block, then a sentinel on ``sentinel``'s metrics (same publisher, QoS 1: delivered
    in order); wait for the sentinel at ``sub`` and say whether ``runner``'s block arrived before it (None: the
    sentinel did not arrive within ``timeout_s``)."""
    tag = f"{runner}-{i}-{time.monotonic_ns()}".encode()
    edge.publish(raw_topic(runner, "sacrum"), b"RFR1" + tag, qos=1)
    edge.publish(metrics_topic(sentinel), b'{"sentinel": "' + tag + b'"}', qos=1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sub.lock:
            msgs = list(sub.messages)
        if (metrics_topic(sentinel), b'{"sentinel": "' + tag + b'"}') in msgs:
            return (raw_topic(runner, "sacrum"), b"RFR1" + tag) in msgs
        time.sleep(0.02)
    return None


def _round(edge, sub, runner: str, i: int, sentinel: str = "bob") -> bool:
    got = _try_round(edge, sub, runner, i, sentinel)
    if got is None:
        raise AssertionError(f"sentinel on {sentinel}'s metrics never arrived")
    return got


def _until(pred, timeout_s: float = 20.0) -> bool:
    """True once ``pred(i)`` is (the broker applies a SIGHUP asynchronously: wait for the effect)."""
    end, i = time.monotonic() + timeout_s, 0
    while time.monotonic() < end:
        if pred(i):
            return True
        i += 1
        time.sleep(0.05)
    return False


def _lab_acl_block(broker) -> str:
    return (broker.workdir / "acl").read_text().split("user lab\n")[1].split("\n\n")[0]


def test_mqtt_lab_acl_follows_enrollment_and_time(users, broker, mqtt_client):
    """Enrolling a runner in a granted study lets the lab read its topics; when the enrollment window closes (the
    clock passes enrolled_to_unix_s, no change to the store) the files are regenerated and the lab reads nothing
    more of that runner."""
    lab = mqtt_client("lab", topics=["runform/v1/#"])
    edge = mqtt_client("edge")
    sync = broker.sync_helper()
    clock = users.test_clock
    assert not _round(edge, lab, "alice", -1)
    try:
        now = clock()
        users.enroll("gait", "alice", now - 60, now + 3600)
        assert sync.sync() is True
        assert "topic read runform/v1/alice/#" in _lab_acl_block(broker)
        assert _until(lambda i: _round(edge, lab, "alice", i))
        rev = users.revision
        clock.offset = 7200.0  # two hours later: alice's window is over
        assert sync.sync() is True and users.revision == rev  # regenerated because of the time, not a change
        block = _lab_acl_block(broker)
        assert "alice" not in block and "topic read runform/v1/bob/#" in block and "dan" not in block
        assert _until(lambda i: not _round(edge, lab, "alice", 1000 + i))
        assert not _round(edge, lab, "alice", 2000)  # and stays refused
        assert sync.sync() is False  # nothing changed since
    finally:
        clock.offset = 0.0
        if "alice" in [p.runner for p in users.get_study("gait").participants]:
            users.unenroll("gait", "alice")
        sync.sync()


# ------------------------------------------------------------------------------------------------ live WS
@pytest.fixture(scope="module")
def live_client(app_factory, broker):
    hub = LiveHub(MqttSettings(host="127.0.0.1", port=broker.port, username="apisvc", password=PASSWORD),
                  reply_timeout_s=2.0)
    with TestClient(app_factory(hub=hub)) as c:
        assert hub.wait_connected(10), hub.last_error  # connected and subscribed
        c.hub = hub
        yield c


def _next_message(ws):
    while True:
        m = ws.receive()
        if m.get("text") is not None:
            d = json.loads(m["text"])
            if d["type"] == "message":
                return d
        elif m.get("bytes") is not None:
            return m["bytes"]
        else:
            raise AssertionError(f"closed: {m}")


def test_ws_anonymous_refused(live_client):
    with pytest.raises(WebSocketDisconnect) as ei:
        with live_client.websocket_connect("/api/v1/live") as ws:
            ws.receive_json()
    assert ei.value.code == 4401
    with pytest.raises(WebSocketDisconnect):
        with live_client.websocket_connect("/api/v1/live", headers={"Authorization": "Bearer rft_nope"}) as ws:
            ws.receive_json()


def test_ws_runner_cannot_subscribe_to_other_runner(live_client):
    h = bearer(live_client, "alice")
    with pytest.raises(WebSocketDisconnect) as ei:
        with live_client.websocket_connect("/api/v1/live?runners=bob", headers=h) as ws:
            ws.receive_json()
    assert ei.value.code == 4403


def test_ws_filters_per_user(live_client, mqtt_client):
    edge = mqtt_client("edge")
    ha, hpt, hlab = bearer(live_client, "alice"), bearer(live_client, "pt"), bearer(live_client, "lab")
    with live_client.websocket_connect("/api/v1/live?kinds=metrics,steps,raw", headers=ha) as wa, \
            live_client.websocket_connect("/api/v1/live?kinds=metrics,raw", headers=hpt) as wpt, \
            live_client.websocket_connect("/api/v1/live?kinds=metrics,raw", headers=hlab) as wlab:
        for ws, who in ((wa, "alice"), (wpt, "pt"), (wlab, "lab")):
            hello = ws.receive_json()
            assert hello["type"] == "hello" and hello["user"] == who  # registered with the hub before the hello
        for i in range(3):
            edge.publish(metrics_topic("bob"), metrics("bob", i))
            edge.publish(raw_topic("bob", "sacrum"), b"RFR1bob", qos=1)
        edge.publish(raw_topic("alice", "sacrum"), b"RFR1alice", qos=1)
        edge.publish(metrics_topic("alice"), metrics("alice", 42))  # the sentinel, published last
        # alice: bob's messages never reach her; her raw and her metrics do, in order
        got = [_next_message(wa), _next_message(wa)]
        assert got[0][:4] == b"RFW1"
        n = struct.unpack("<H", got[0][4:6])[0]
        assert got[0][6:6 + n].decode() == raw_topic("alice", "sacrum") and got[0][6 + n:] == b"RFR1alice"
        assert got[1]["runner"] == "alice" and got[1]["payload"]["time_s"] == 42
        # therapist of alice: alice's live raw (for the live trace) then her metrics; never bob's
        got = [_next_message(wpt), _next_message(wpt)]
        assert isinstance(got[0], bytes) and got[0].endswith(b"RFR1alice"), got
        assert isinstance(got[1], dict) and got[1]["runner"] == "alice" and got[1]["kind"] == "metrics"
        assert got[1]["payload"]["time_s"] == 42
        # lab granted bob: bob's metrics and raw, never alice's
        seen = [_next_message(wlab) for _ in range(6)]
        assert all((isinstance(x, bytes) and b"/bob/" in x) or x["runner"] == "bob" for x in seen)
        edge.publish(metrics_topic("bob"), metrics("bob", 100))
        while True:
            x = _next_message(wlab)
            if isinstance(x, dict) and x["payload"]["time_s"] == 100:
                break
            assert (isinstance(x, bytes) and b"/bob/" in x) or x["runner"] == "bob"


def test_ws_lab_live_only_for_participants_enrolled_now(live_client, mqtt_client, users):
    h = bearer(live_client, "lab")
    for r in ("dan", "alice"):  # dan: window over; alice: in no granted study
        with pytest.raises(WebSocketDisconnect) as ei:
            with live_client.websocket_connect(f"/api/v1/live?runners={r}&kinds=raw", headers=h) as ws:
                ws.receive_json()
        assert ei.value.code == 4403
    edge = mqtt_client("edge")
    clock = users.test_clock

    def round_(ws, i: int) -> set[str]:
        """alice's raw + metrics, dan's raw, then bob's metrics as the sentinel: kinds of alice/dan received."""
        edge.publish(raw_topic("dan", "sacrum"), b"RFR1dan", qos=1)
        edge.publish(raw_topic("alice", "sacrum"), b"RFR1alice", qos=1)
        edge.publish(metrics_topic("alice"), metrics("alice", i))
        edge.publish(metrics_topic("bob"), metrics("bob", i))
        got = set()
        while True:
            m = _next_message(ws)
            if isinstance(m, bytes):
                assert b"/dan/" not in m
                got.add("raw" if b"/alice/" in m else "bob-raw")
            elif m["runner"] == "bob" and m["payload"]["time_s"] == i:
                return got
            else:
                assert m["runner"] == "alice" and m["payload"]["time_s"] == i, m
                got.add("metrics")

    with live_client.websocket_connect("/api/v1/live?kinds=metrics,raw", headers=h) as ws:
        assert ws.receive_json()["runners"] == ["bob"]
        assert round_(ws, 0) == set()
        try:
            now = clock()
            users.enroll("gait", "alice", now - 60, now + 3600)
            # the open socket applies the change at its next access re-check (live_recheck_s)
            deadline, i = time.monotonic() + 20, 1
            while (got := round_(ws, i)) != {"raw", "metrics"}:
                assert time.monotonic() < deadline, got
                i += 1
                time.sleep(0.05)
            clock.offset = 7200.0  # alice's window closes: refused from the next message on, no store change
            assert round_(ws, 10_000) == set()
        finally:
            clock.offset = 0.0
            if "alice" in [p.runner for p in users.get_study("gait").participants]:
                users.unenroll("gait", "alice")


def test_ws_closed_when_token_expires(live_client, users):
    h = bearer(live_client, "alice")
    with live_client.websocket_connect("/api/v1/live", headers=h) as ws:
        assert ws.receive_json()["type"] == "hello"
        users.test_clock.offset = 13 * 3600
        try:
            with pytest.raises(WebSocketDisconnect) as ei:
                while True:
                    ws.receive_json()
            assert ei.value.code == 4401
        finally:
            users.test_clock.offset = 0.0


def test_control_goes_out_as_the_user(live_client, mqtt_client):
    edge = mqtt_client("edge", topics=["runform/v1/+/control/+"])

    def on_cmd(c, ud, msg):  # a minimal edge: answer every command on control/reply
        if msg.topic.endswith("/reply"):
            return
        d = json.loads(msg.payload)
        runner, issuer = msg.topic.split("/")[2], msg.topic.split("/")[-1]
        c.publish(reply_topic(runner), encode_json(reply_payload(runner, ok=True, request_id=d["request_id"],
                                                                 command=d["command"], issuer=issuer)), qos=1)
        edge._add(msg)
    edge.c.on_message = on_cmd
    hpt = bearer(live_client, "pt")
    r = live_client.post("/api/v1/runners/alice/control", headers=hpt,
                         json={"command": "set_target_cadence", "args": {"cadence_spm": 172}})
    assert r.status_code == 200, r.text
    assert r.json()["reply"]["ok"] is True and r.json()["reply"]["issuer"] == "pt"
    topic, payload = edge.got(lambda t: t.endswith("/control/pt"))[0]
    assert topic == control_topic("alice", "pt") and json.loads(payload)["args"] == {"cadence_spm": 172}
    # refusals: invalid args (contract validation), unassigned runner, runner-only role limits
    r = live_client.post("/api/v1/runners/alice/control", headers=hpt,
                         json={"command": "set_target_cadence", "args": {"cadence_spm": 999}})
    assert r.status_code == 422 and "cadence_spm" in r.json()["error"]["message"]
    assert live_client.post("/api/v1/runners/bob/control", headers=hpt, json={"command": "pause"}).status_code == 404
    ha = bearer(live_client, "alice")
    r = live_client.post("/api/v1/runners/alice/control", headers=ha,
                         json={"command": "set_target_cadence", "args": {"cadence_spm": 150}})
    assert r.status_code == 403
    assert live_client.post("/api/v1/runners/alice/control", headers=ha,
                            json={"command": "pause", "wait_s": 2}).status_code == 200
    # targets: stored and published as set_target_cadence + set_limits
    r = live_client.put("/api/v1/runners/alice/targets", headers=hpt,
                        json={"cadence_spm": 168, "tolerance_spm": 4, "impact_limit_g": 6,
                              "program": "walk-run-beginner"})
    assert r.status_code == 200, r.text
    assert r.json()["targets"] == {"cadence_spm": 168, "tolerance_spm": 4, "impact_limit_g": 6}
    assert {p["command"] for p in r.json()["published"]} == {"set_target_cadence", "set_limits"}
    deadline = time.monotonic() + 5  # set_target_cadence twice + set_limits
    while len(edge.got(lambda t: t == control_topic("alice", "pt"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    cmds = [json.loads(p)["command"] for t, p in edge.got(lambda t: t == control_topic("alice", "pt"))]
    assert cmds.count("set_limits") == 1
    got = live_client.get("/api/v1/runners/alice/targets", headers=hpt).json()
    assert got["program"] == "walk-run-beginner" and got["set_by"] == "pt"
    assert live_client.put("/api/v1/runners/alice/targets", headers=ha, json={"cadence_spm": 150}).status_code == 403
