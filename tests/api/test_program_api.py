"""Return-to-run programs end to end: therapist -> API -> retained plan on the real broker -> the edge (running as
the runner's own MQTT user) follows it -> program session records -> real ingest -> SQLite -> pain reports ->
progression (advance / hold / regress, with the reason) -> the next plan. Plus every refusal."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
from starlette.testclient import TestClient

from runform.server import mqtt as m
from runform.server.api import ApiConfig, LiveHub, create_app
from runform.server.edge import Edge, RunnerConfig
from runform.server.ingest import Ingestor
from runform.server.storage import open_store

from tests.server.conftest import ScriptedStepDetector
from tests.server.test_plan_edge import GatedSource

from .conftest import PASSWORD, bearer

pytest.importorskip("runform.firmware_bridge.simulator")

PROGRAM = """
[program]
name = "rtr-test"
title = "Test walk-run"
sessions_to_advance = 2
walk_cadence_spm = 115

[[stage]]
name = "R10 W5 x2"
repeats = 2
intervals = [{ kind = "walk", duration_s = 5 }, { kind = "run", duration_s = 10, target_cadence_spm = 170 }]

[[stage]]
name = "R15 W5 x2"
repeats = 2
intervals = [{ kind = "walk", duration_s = 5 }, { kind = "run", duration_s = 15, target_cadence_spm = 172 }]
"""


@pytest.fixture(scope="module")
def stack(users, broker, tmp_path_factory):
    d = tmp_path_factory.mktemp("programs")
    (d / "rtr-test.toml").write_text(PROGRAM)
    store = open_store(d / "sessions.db")
    ing = Ingestor(store, port=broker.port, username="edge", password=PASSWORD,
                   client_id=f"rf-ingest-programs-{time.monotonic_ns()}", session_expiry_s=0).start()
    assert ing.wait_connected(10)
    hub = LiveHub(m.MqttSettings(host="127.0.0.1", port=broker.port, username="apisvc", password=PASSWORD))
    app = create_app(users, store, hub=hub, config=ApiConfig(
        programs_dir=str(d), login_burst=1000, login_rate_per_s=100, rate_burst=1000, rate_per_s=100,
        ip_rate_burst=5000, ip_rate_per_s=1000))
    with TestClient(app) as c:
        assert hub.wait_connected(10), hub.last_error
        # the ingest is subscribed once a record published now reaches the store (wait on that, not on a delay)
        probe = m.encode_json(m.program_session_payload(
            "probe", "p1", program="rtr-test", stage=1, pain_before=None, pain_after=None, completed_fraction=0,
            run_time_s=0, planned_run_time_s=20, run_steps=0, impact_sum_g=0, start_unix_s=0, end_unix_s=0,
            final=False))
        deadline = time.monotonic() + 20
        while not store.list_program_sessions("probe"):
            assert time.monotonic() < deadline, "ingest never stored the probe record"
            hub.publish(m.program_topic("probe"), probe)
            time.sleep(0.2)
        c.store, c.dir, c.hub, c.port = store, d, hub, broker.port
        yield c
        hub.publish(m.plan_topic("alice"), b"", retain=True)  # leave no retained plan for other tests
        hub.publish(m.plan_topic("probe"), b"", retain=True)
    ing.stop()
    store.close()


def run_session(c) -> dict:
    """One session of alice: her edge logs in as alice, waits for the retained plan, runs the stage to its end."""
    holder = {}
    src = GatedSource("alice", 35.0, lambda: holder["edge"].pipelines["alice"].plan is not None)
    cfg = RunnerConfig("alice", mqtt=m.MqttSettings(port=c.port, username="alice", password=PASSWORD,
                                                    reconnect_min_s=0.2, reconnect_max_s=1.0),
                       programs_dir=c.dir)
    edge = holder["edge"] = Edge([src], {"alice": cfg}, detector_factory=ScriptedStepDetector)
    stats = asyncio.run(edge.run())["alice"]
    key = edge.pipelines["alice"]._program_key()
    deadline = time.monotonic() + 15  # the final record reaches the store through broker + ingest
    while not [r for r in c.store.list_program_sessions("alice") if r["session_key"] == key and r["final"]]:
        assert time.monotonic() < deadline, "final program record not stored"
        time.sleep(0.05)
    return {"stats": stats, "key": key, "pipe": edge.pipelines["alice"]}


def pain(c, who, value, when, runner="alice"):
    r = c.post(f"/api/v1/runners/{runner}/pain", headers=bearer(c, who), json={"pain_0_10": value, "when": when})
    assert r.status_code == 200, r.text
    return r.json()


def retained_plan(c, user="alice") -> dict:
    """The retained plan as a fresh subscriber (the runner's own account) gets it from the broker."""
    from .conftest import MqttClient
    sub = MqttClient(c.port, user, topics=[m.plan_topic("alice")]).start()
    try:
        assert sub.wait_for(lambda t: True, timeout_s=10)
        return json.loads(sub.got()[-1][1])
    finally:
        sub.stop()


def test_program_flow_end_to_end(stack, mqtt_client):
    c = stack
    watch = mqtt_client("pt", topics=["runform/v1/alice/#"])  # the therapist's live view
    hpt = bearer(c, "pt")
    r = c.put("/api/v1/runners/alice/targets", headers=hpt, json={"program": "rtr-test", "stage": 1, "cadence_spm": 170})
    assert r.status_code == 200, r.text
    plan = r.json()["plan"]
    assert r.json()["plan_published"] is True
    assert (plan["program"], plan["stage"], plan["n_stages"], plan["set_by"]) == ("rtr-test", 1, 2, "pt")
    assert plan["targets"]["cadence_spm"] == 170 and plan["decision"] is None
    assert retained_plan(c) == plan

    # the runner rates pain before the first session (no edge running yet): stored, nothing finished to judge
    res = pain(c, "alice", 1, "before")
    assert res["stored"]["pain_0_10"] == 1 and res["forwarded_request_id"]
    assert res["decision"]["action"] == "hold" and "no finished session at stage 1" in res["decision"]["reason"]
    assert res["plan"]["stage"] == 1

    s1 = run_session(c)
    assert s1["stats"]["plans_applied"] == 1 and s1["stats"]["program_records"] >= 2
    # the therapist saw the announcement and the stage in the status
    assert watch.wait_for(lambda t: t.endswith("/cues"))
    cues = [json.loads(p) for t, p in watch.got(lambda t: t.endswith("/cues"))]
    assert any(q["kind"] == "program" and "Stage 1 of 2: R10 W5 x2" in q["text"] for q in cues)
    statuses = [json.loads(p) for t, p in watch.got(lambda t: t.endswith("/status"))]
    assert any(s.get("program") and s["program"]["stage"] == 1 and s["program"]["name"] == "rtr-test"
               for s in statuses)
    [rec1] = c.store.list_program_sessions("alice")
    assert rec1["session_key"] == s1["key"] and rec1["completed_fraction"] == 1.0 and rec1["run_time_s"] == 20.0
    assert rec1["pain_before"] is None  # the edge never heard it; the server's report fills it in below

    assert pain(c, "alice", 1, "after")["decision"] is None
    res = pain(c, "alice", 1, "before")  # day 2
    assert res["decision"]["action"] == "hold" and "tolerated 1 of 2" in res["decision"]["reason"]
    assert res["plan"]["stage"] == 1

    s2 = run_session(c)
    assert s2["key"] != s1["key"]
    assert pain(c, "pt", 0, "after")["stored"]["author"] == "pt"  # the therapist may enter it for the runner
    res = pain(c, "alice", 0, "before")  # day 3: two tolerated sessions at stage 1
    d = res["decision"]
    assert (d["action"], d["from_stage"], d["to_stage"], d["pain_now"]) == ("advance", 1, 2, 0)
    assert d["reason"] == "2 tolerated session(s) at stage 1: advance"
    assert res["plan"]["stage"] == 2 and res["plan"]["set_by"] == "progression" and res["plan"]["decision"] == d
    assert retained_plan(c)["stage"] == 2  # the edge's next session starts stage 2

    prog = c.get("/api/v1/runners/alice/program", headers=hpt).json()
    assert prog["plan"]["stage"] == 2 and prog["plan"]["decision"]["reason"] == d["reason"]
    hist = prog["history"]
    assert [h["session_key"] for h in hist] == [s1["key"], s2["key"]]  # newest last
    assert [(h["pain_before"], h["pain_after"]) for h in hist] == [(1, 1), (1, 0)]  # merged from the reports
    assert all(h["final"] and h["stage"] == 1 for h in hist)
    assert prog["next"]["action"] == "advance" and prog["next"]["pain_now"] == 0
    assert [p["pain_0_10"] for p in prog["pain_reports"]] == [1, 1, 1, 0, 0]

    # pain 6 the next morning: step back
    res = pain(c, "alice", 6, "before")
    d = res["decision"]
    assert (d["action"], d["from_stage"], d["to_stage"]) == ("regress", 2, 1)
    assert d["reason"] == "pain 6/10 >= 5: step back to stage 1"
    assert retained_plan(c)["decision"]["action"] == "regress"

    # the therapist's own change of stage starts a new period (earlier sessions no longer count)
    r = c.put("/api/v1/runners/alice/targets", headers=hpt, json={"stage": 2})
    assert r.json()["plan"]["stage"] == 2 and r.json()["plan"]["decision"] is None
    res = pain(c, "alice", 0, "before")
    assert res["decision"]["action"] == "hold" and "no finished session at stage 2" in res["decision"]["reason"]


def test_refusals(stack, mqtt_client):
    c = stack
    before = c.put("/api/v1/runners/alice/targets", headers=bearer(c, "pt"),
                   json={"program": "rtr-test", "stage": 1}).json()["plan"]
    # a runner cannot set her own plan: not over HTTP ...
    r = c.put("/api/v1/runners/alice/targets", headers=bearer(c, "alice"), json={"program": "rtr-test", "stage": 2})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    # ... nor over MQTT (PUBACK "Not authorized", the retained plan unchanged); nor may her therapist bypass the API
    forged = m.encode_json(m.plan_payload("alice", program="rtr-test", stage=2, n_stages=2, set_by="alice"))
    for who in ("alice", "pt"):
        info = mqtt_client(who).publish(m.plan_topic("alice"), forged)
        assert info.is_published()
        assert retained_plan(c)["time_unix_s"] == before["time_unix_s"]
    # a therapist of other runners does not see alice at all
    h2 = bearer(c, "pt2")
    assert c.get("/api/v1/runners/alice/program", headers=h2).status_code == 404
    assert c.post("/api/v1/runners/alice/pain", headers=h2, json={"pain_0_10": 1, "when": "before"}).status_code == 404
    assert c.put("/api/v1/runners/alice/targets", headers=h2, json={"stage": 1}).status_code == 404
    # nor does another runner; a lab (alice is in no granted study) neither; pain needs a login
    assert c.get("/api/v1/runners/alice/program", headers=bearer(c, "bob")).status_code == 404
    assert c.post("/api/v1/runners/alice/pain", headers=bearer(c, "bob"),
                  json={"pain_0_10": 1, "when": "after"}).status_code == 404
    assert c.post("/api/v1/runners/bob/pain", headers=bearer(c, "lab"),
                  json={"pain_0_10": 1, "when": "after"}).status_code == 403  # sees bob, may not coach
    assert c.post("/api/v1/runners/alice/pain", json={"pain_0_10": 1, "when": "after"}).status_code == 401
    assert c.post("/api/v1/runners/alice/pain", headers=bearer(c, "root"),
                  json={"pain_0_10": 1, "when": "after"}).status_code == 200  # admin
    # bad input: clear JSON errors, nothing stored
    n = len(c.store.list_pain_reports("alice"))
    hpt = bearer(c, "pt")
    for body, msg in [({"pain_0_10": 11, "when": "before"}, "<= 10"), ({"pain_0_10": 2, "when": "during"}, "one of"),
                      ({"pain_0_10": 2.5, "when": "after"}, "integer"), ({"when": "after"}, "pain_0_10"),
                      ({"pain_0_10": 2, "when": "after", "x": 1}, "unknown fields")]:
        r = c.post("/api/v1/runners/alice/pain", headers=hpt, json=body)
        assert r.status_code == 422 and msg in r.json()["error"]["message"], (body, r.text)
    assert len(c.store.list_pain_reports("alice")) == n
    for body, code, msg in [({"program": "no-such"}, "unknown_program", "no program 'no-such'"),
                            ({"program": "../rtr-test"}, "unknown_program", "invalid"),
                            ({"program": "rtr-test", "stage": 3}, "invalid_request", "stage 3 out of range"),
                            ({"program": "rtr-test", "stage": 0}, "invalid_request", "1-based"),
                            ({"program": "", "stage": 1}, "invalid_request", "stage needs a program")]:
        r = c.put("/api/v1/runners/alice/targets", headers=hpt, json=body)
        assert r.status_code == 422 and r.json()["error"]["code"] == code and msg in r.json()["error"]["message"], r.text
    assert c.get("/api/v1/runners/alice/program", headers=hpt).json()["plan"]["time_unix_s"] == before["time_unix_s"]
    assert c.get("/api/v1/runners/nobody/program", headers=bearer(c, "root")).status_code == 404


def test_pain_is_kept_without_broker_or_plan(users, tmp_path):
    """No MQTT at all: the score is still stored (and said not to be forwarded); no plan -> no decision."""
    store = open_store(tmp_path / "s.db")
    app = create_app(users, store, config=ApiConfig(login_burst=1000, login_rate_per_s=100))
    with TestClient(app) as c:
        res = pain(c, "alice", 4, "after")
        assert res["forwarded_request_id"] is None and "no MQTT connection" in res["live_error"]
        assert res["decision"] is None and res["plan"] is None
        assert [(p["pain_0_10"], p["when"], p["author"]) for p in store.list_pain_reports("alice")] == \
            [(4, "after", "alice")]
        r = c.put("/api/v1/runners/alice/targets", headers=bearer(c, "pt"), json={"program": "demo-short"})
        assert r.status_code == 200 and r.json()["plan_published"] is False and r.json()["plan"]["stage"] == 1
        assert store.get_plan("alice")["plan"]["program"] == "demo-short"  # stored even though not sent
    store.close()


def test_program_assigned_before_plans_existed(users, tmp_path):
    """A program only in the user store's settings (assigned before plans existed) still gives a plan, and the
    first pain report before a session turns it into a stored one."""
    store = open_store(tmp_path / "s.db")
    users.set_runner_settings("dan", targets={"cadence_spm": 166}, program="demo-short", set_by="pt")
    try:
        app = create_app(users, store, config=ApiConfig(login_burst=1000, login_rate_per_s=100))
        with TestClient(app) as c:
            got = c.get("/api/v1/runners/dan/program", headers=bearer(c, "root")).json()
            assert got["plan_stored"] is False and got["history"] == [] and got["next"] is None
            assert (got["plan"]["program"], got["plan"]["stage"], got["plan"]["targets"]["cadence_spm"]) == \
                ("demo-short", 1, 166)
            res = pain(c, "dan", 2, "before", runner="dan")
            assert res["decision"]["action"] == "hold" and res["plan"]["stage"] == 1
            assert store.get_plan("dan")["plan"]["decision"]["reason"] == res["decision"]["reason"]
            assert c.get("/api/v1/runners/dan/program", headers=bearer(c, "root")).json()["plan_stored"] is True
    finally:
        users.set_runner_settings("dan", program="", set_by="pt")
        store.close()


def test_server_republishes_stored_plans_when_it_connects(stack, users):
    """The broker lost its retained messages (restart without persistence): a (re)starting server puts every
    stored plan back, so an edge starting later still follows it."""
    c = stack
    plan = c.put("/api/v1/runners/alice/targets", headers=bearer(c, "pt"),
                 json={"program": "rtr-test", "stage": 2}).json()["plan"]
    assert retained_plan(c) == plan
    c.hub.publish(m.plan_topic("alice"), b"", retain=True)  # gone from the broker
    hub2 = LiveHub(m.MqttSettings(host="127.0.0.1", port=c.port, username="apisvc", password=PASSWORD))
    with TestClient(create_app(users, c.store, hub=hub2, config=ApiConfig(programs_dir=str(c.dir)))):
        assert hub2.wait_connected(10)
        deadline = time.monotonic() + 10
        while hub2.counters["published_acked"] < 1:  # the one stored plan (alice), acknowledged by the broker
            assert time.monotonic() < deadline, hub2.counters
            time.sleep(0.05)
        assert retained_plan(c) == plan
