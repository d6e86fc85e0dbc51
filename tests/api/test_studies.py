"""Studies over HTTP: a lab sees a session only if its runner is a participant of a granted study AND the session
started inside that participant's enrollment window; the study routes; the schema-1 -> 2 migration of per-runner
lab grants. (Live WebSocket and MQTT: test_live_mqtt.py.)"""
from __future__ import annotations

import io
import sqlite3
import zipfile

import pytest

from runform.server.auth import Access, User, UserStore, access_for

from .conftest import DAN_TO_UNIX_S, STUDY_FROM_UNIX_S, assert_error, bearer

_SESSION_ROUTES = ("", "/summary", "/steps", "/metrics", "/cues", "/notes", "/raw/sensors", "/raw", "/export/csv")


def _ids(resp) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [s["id"] for s in resp.json()["sessions"]]


# ------------------------------------------------------------------------------------------------ policy
def test_access_window_is_half_open_and_per_runner():
    lab = User("l", "lab")
    acc = Access(lab, frozenset({"r", "q"}), {"r": ((100.0, 200.0), (300.0, None)), "q": ((50.0, 60.0),)})
    assert [acc.sees_session("r", t) for t in (99.9, 100.0, 199.9, 200.0, 299.0, 300.0, 1e12)] == \
        [False, True, True, False, False, True, True]
    assert acc.sees_session("q", 55.0) and not acc.sees_session("q", 150.0)
    assert not acc.sees_session("x", 150.0) and not acc.sees_session("r", None)
    assert acc.sees("q")  # runner level: a participant, whatever the time
    now = [150.0]
    live = Access(lab, acc.runners, acc.windows, clock=lambda: now[0]).for_live()
    assert live.sees("r") and not live.sees("q")  # live: enrolled now only, evaluated at each call
    now[0] = 250.0
    assert not live.sees("r") and live.filter(["r", "q", "x"]) == []
    # other roles: no windows, behaviour unchanged
    assert Access(User("t", "therapist"), frozenset({"r"})).sees_session("r", 0.0)
    assert Access(User("a", "admin"), None).sees_session("anyone", None)


# ------------------------------------------------------------------------------------------------ HTTP: lab
def test_lab_sees_study_sessions_only_inside_enrollment_windows(client, sessions):
    h = bearer(client, "lab")
    ids = sessions.ids
    assert set(_ids(client.get("/api/v1/sessions", headers=h))) == {ids["bob"], ids["dan_in"]}
    assert _ids(client.get("/api/v1/runners/bob/sessions", headers=h)) == [ids["bob"]]
    assert _ids(client.get("/api/v1/runners/dan/sessions", headers=h)) == [ids["dan_in"]]
    assert set(_ids(client.get("/api/v1/sessions", headers=h, params={"runner": "bob,dan"}))) == \
        {ids["bob"], ids["dan_in"]}
    # the limit counts visible sessions (dan_after, newer than dan_in, is skipped, not returned instead)
    assert _ids(client.get("/api/v1/runners/dan/sessions", headers=h, params={"limit": 1})) == [ids["dan_in"]]
    for key in ("bob", "dan_in"):
        for suffix in _SESSION_ROUTES:
            r = client.get(f"/api/v1/sessions/{ids[key]}{suffix}", headers=h)
            assert r.status_code == 200, (key, suffix, r.text)
    # same runner outside the window (before: bob's clinical session; after: dan left), a runner who is in no
    # granted study (alice is only in "other", not granted): 404 like any data the user may not see
    for key in ("bob_clinical", "dan_after", "alice"):
        for suffix in _SESSION_ROUTES:
            assert_error(client.get(f"/api/v1/sessions/{ids[key]}{suffix}", headers=h), 404, "not_found")
    assert_error(client.get("/api/v1/runners/alice/sessions", headers=h), 404)
    assert_error(client.get("/api/v1/sessions", headers=h, params={"runner": "bob,alice"}), 404)
    # the runner itself, its therapist and the admin are not restricted by studies
    assert ids["bob_clinical"] in _ids(client.get("/api/v1/sessions", headers=bearer(client, "bob")))
    assert client.get(f"/api/v1/sessions/{ids['bob_clinical']}/raw", headers=bearer(client, "root")).status_code == 200
    assert client.get(f"/api/v1/sessions/{ids['alice']}/steps", headers=bearer(client, "pt")).status_code == 200


def test_lab_raw_and_export_of_a_study_session(client, sessions):
    h = bearer(client, "lab")
    sid = sessions.ids["dan_in"]  # a session in dan's past window (k = 3 in fill_sessions)
    r = client.get(f"/api/v1/sessions/{sid}/raw", headers=h, params={"t0_s": 10.0, "t1_s": 11.0})
    assert r.status_code == 200 and r.json()["count"] == 100
    assert r.json()["raw"]["acc_ms2"][0] == pytest.approx([3.0, 3.0, 12.81])
    r = client.get(f"/api/v1/sessions/{sid}/export/csv", headers=h)
    assert r.status_code == 200, r.text
    z = zipfile.ZipFile(io.BytesIO(r.content))
    steps = z.read(next(n for n in z.namelist() if n.endswith("steps.csv"))).decode()
    assert len([x for x in steps.splitlines() if x and not x.startswith("#")]) == 11


def test_lab_still_cannot_annotate_or_control(client, sessions):
    h = bearer(client, "lab")
    sid = sessions.ids["bob"]
    assert_error(client.post(f"/api/v1/sessions/{sid}/notes", headers=h, json={"text": "x"}), 403, "forbidden")
    assert_error(client.post("/api/v1/runners/bob/control", headers=h, json={"command": "pause"}), 403)
    assert_error(client.put("/api/v1/runners/bob/targets", headers=h, json={"cadence_spm": 170}), 403)
    assert all(n["author"] != "lab" for n in client.get(f"/api/v1/sessions/{sid}/notes", headers=h).json()["notes"])


# ------------------------------------------------------------------------------------------------ HTTP: studies
def test_list_and_get_studies_per_role(client, sessions):
    ids = sessions.ids
    lab = client.get("/api/v1/studies", headers=bearer(client, "lab")).json()["studies"]
    assert [s["name"] for s in lab] == ["gait"] and "labs" not in lab[0]
    assert lab[0]["participants"] == [
        {"runner": "bob", "enrolled_from_unix_s": STUDY_FROM_UNIX_S, "enrolled_to_unix_s": None},
        {"runner": "dan", "enrolled_from_unix_s": STUDY_FROM_UNIX_S, "enrolled_to_unix_s": DAN_TO_UNIX_S}]
    g = client.get("/api/v1/studies/gait", headers=bearer(client, "lab")).json()
    assert g["title"] == "Gait retraining 2024"
    assert [s["id"] for s in g["sessions"]] == [ids["bob"], ids["dan_in"]]  # newest first
    for name in ("other", "nope"):  # not granted / does not exist: the same answer
        assert_error(client.get(f"/api/v1/studies/{name}", headers=bearer(client, "lab")), 404, "not_found")
    # admin: every study, granted labs, the study's sessions by ITS windows
    adm = {s["name"]: s for s in client.get("/api/v1/studies", headers=bearer(client, "root")).json()["studies"]}
    assert {"gait", "other"} <= set(adm) and adm["gait"]["labs"] == ["lab"] and adm["other"]["labs"] == []
    g = client.get("/api/v1/studies/gait", headers=bearer(client, "root")).json()
    assert {s["id"] for s in g["sessions"]} == {ids["bob"], ids["dan_in"]}
    assert [s["id"] for s in client.get("/api/v1/studies/other", headers=bearer(client, "root")).json()["sessions"]] \
        == [ids["alice"]]
    # a runner sees the studies it is enrolled in, with only its own enrollment and sessions
    bob = client.get("/api/v1/studies", headers=bearer(client, "bob")).json()["studies"]
    assert [s["name"] for s in bob] == ["gait"] and [p["runner"] for p in bob[0]["participants"]] == ["bob"]
    g = client.get("/api/v1/studies/gait", headers=bearer(client, "bob")).json()
    assert [s["id"] for s in g["sessions"]] == [ids["bob"]]  # not bob_clinical (outside), not dan's
    assert_error(client.get("/api/v1/studies/gait", headers=bearer(client, "alice")), 404)
    # therapists are not part of studies
    assert client.get("/api/v1/studies", headers=bearer(client, "pt")).json()["studies"] == []
    assert_error(client.get("/api/v1/studies/gait", headers=bearer(client, "pt")), 404)


def test_study_administration_refusals(client):
    body = {"/api/v1/studies": {"name": "x1"}, "/api/v1/studies/gait/participants": {"runner": "alice"},
            "/api/v1/studies/gait/grants": {"lab": "lab"}}
    for user in ("lab", "alice", "pt"):
        h = bearer(client, user)
        for path, b in body.items():
            assert_error(client.post(path, headers=h, json=b), 403, "forbidden")
        assert_error(client.delete("/api/v1/studies/gait/participants/bob", headers=h), 403, "forbidden")
        assert_error(client.delete("/api/v1/studies/gait/grants/lab", headers=h), 403, "forbidden")
    h = bearer(client, "root")
    assert_error(client.post("/api/v1/studies", headers=h, json={"name": "gait"}), 409, "study_exists")
    assert_error(client.post("/api/v1/studies", headers=h, json={"name": "no spaces"}), 422, "invalid_name")
    assert_error(client.post("/api/v1/studies", headers=h, json={"title": "no name"}), 422, "invalid_request")
    assert_error(client.post("/api/v1/studies", headers=h, json={"name": "t", "title": "x" * 201}), 422,
                  "invalid_title")
    assert_error(client.post("/api/v1/studies/nope/participants", headers=h, json={"runner": "alice"}), 404)
    p = "/api/v1/studies/gait/participants"
    assert_error(client.post(p, headers=h, json={"runner": "nobody"}), 422, "unknown_user")
    assert_error(client.post(p, headers=h, json={"runner": "lab"}), 422, "wrong_role")
    assert_error(client.post(p, headers=h, json={"runner": "alice", "enrolled_from_unix_s": 10,
                                                  "enrolled_to_unix_s": 10}), 422, "invalid_window")
    assert_error(client.post(p, headers=h, json={"runner": "alice", "enrolled_from_unix_s": "yesterday"}), 422,
                  "invalid_window")
    assert_error(client.post("/api/v1/studies/gait/grants", headers=h, json={"lab": "pt"}), 422, "wrong_role")
    assert_error(client.post("/api/v1/studies/nope/grants", headers=h, json={"lab": "lab"}), 404)
    assert_error(client.delete("/api/v1/studies/gait/participants/alice", headers=h), 404)  # not enrolled
    # nothing of that changed the study
    g = client.get("/api/v1/studies/gait", headers=h).json()
    assert [p["runner"] for p in g["participants"]] == ["bob", "dan"] and g["labs"] == ["lab"]


def test_admin_creates_study_enrolls_and_grants(client, sessions, users):
    adm, lab = bearer(client, "root"), bearer(client, "lab")
    sid = sessions.ids["alice"]
    started = client.get(f"/api/v1/sessions/{sid}", headers=adm).json()["started_unix_s"]
    assert_error(client.get(f"/api/v1/sessions/{sid}", headers=lab), 404)
    try:
        r = client.post("/api/v1/studies", headers=adm, json={"name": "spring", "title": "Spring cohort"})
        assert r.status_code == 201 and r.json()["participants"] == [] and r.json()["title"] == "Spring cohort"
        r = client.post("/api/v1/studies/spring/participants", headers=adm,
                        json={"runner": "alice", "enrolled_from_unix_s": started + 1})  # window after the session
        assert r.status_code == 200 and r.json()["enrolled_to_unix_s"] is None
        r = client.post("/api/v1/studies/spring/grants", headers=adm, json={"lab": "lab"})
        assert r.status_code == 200 and r.json()["labs"] == ["lab"]
        assert "spring" in [s["name"] for s in client.get("/api/v1/studies", headers=lab).json()["studies"]]
        assert_error(client.get(f"/api/v1/sessions/{sid}", headers=lab), 404)  # started before the window
        r = client.post("/api/v1/studies/spring/participants", headers=adm,  # enrolling again replaces the window
                        json={"runner": "alice", "enrolled_from_unix_s": started - 60,
                              "enrolled_to_unix_s": started + 60})
        assert r.status_code == 200
        assert client.get(f"/api/v1/sessions/{sid}/raw/sensors", headers=lab).status_code == 200
        assert sid in _ids(client.get("/api/v1/sessions", headers=lab))
        assert _ids(client.get("/api/v1/studies/spring", headers=lab)) == [sid]
        r = client.delete("/api/v1/studies/spring/grants/lab", headers=adm)
        assert r.status_code == 200 and r.json()["labs"] == []
        assert_error(client.get(f"/api/v1/sessions/{sid}", headers=lab), 404)
        assert_error(client.get("/api/v1/studies/spring", headers=lab), 404)
        assert client.delete("/api/v1/studies/spring/participants/alice", headers=adm).status_code == 200
        assert client.get("/api/v1/studies/spring", headers=adm).json()["participants"] == []
    finally:
        if users.find_study("spring") is not None:
            users.delete_study("spring")


# ------------------------------------------------------------------------------------------------ store
def test_store_migrates_per_runner_lab_grants_into_studies(tmp_path):
    """A schema-1 file (grants table lab -> runner) opens as schema 2 with the same access: one study per
    granted runner, named after it, whole history, granted to the same labs."""
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, pw_hash TEXT, mqtt_hash TEXT,
            disabled INTEGER NOT NULL DEFAULT 0, created_unix_s REAL NOT NULL, password_changed_unix_s REAL);
        CREATE TABLE grants (lab TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
            runner TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE, PRIMARY KEY (lab, runner));
        INSERT INTO meta VALUES ('schema_version', '1'), ('revision', '7');
        INSERT INTO users(name, role, created_unix_s) VALUES ('l1', 'lab', 0), ('l2', 'lab', 0),
            ('r1', 'runner', 0), ('r2', 'runner', 0), ('r3', 'runner', 0);
        INSERT INTO grants VALUES ('l1', 'r1'), ('l2', 'r1'), ('l1', 'r2');
    """)
    db.commit()
    db.close()
    with UserStore(path) as s:
        assert s.schema_version == 2 and s.revision == 8  # bumped: the broker files are regenerated
        assert [st.name for st in s.list_studies()] == ["r1", "r2"]
        assert s.get_study("r1").labs == ("l1", "l2")
        assert s.lab_windows("l1") == {"r1": ((0.0, None),), "r2": ((0.0, None),)}
        acc = access_for(s, s.get_user("l2"))
        assert acc.runners == frozenset({"r1"}) and acc.sees_session("r1", 1.0) and not acc.sees_session("r2", 1.0)
        tables = {r[0] for r in s._q("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "grants" not in tables
    with UserStore(path) as s:  # opening again changes nothing
        assert s.revision == 8 and len(s.list_studies()) == 2


def test_store_enrollment_validation_and_cascade(tmp_path):
    with UserStore(tmp_path / "u.db", mqtt_iterations=1000) as s:
        s.add_user("r", "runner")
        s.add_user("l", "lab")
        s.add_study("st")
        s.grant_study("l", "st")
        rev = s.revision
        p = s.enroll("st", "r", 100.0, 200.0)
        assert p.contains(100.0) and not p.contains(200.0) and s.revision > rev
        assert s.enrolled_runners("l", 150.0) == ["r"] and s.enrolled_runners("l", 250.0) == []
        assert s.access_epoch(150.0)[1] == 1 and s.access_epoch(250.0)[1] == 2  # one boundary passed each
        for bad in ((200.0, 100.0), (float("nan"), None), (0.0, float("inf"))):
            with pytest.raises(ValueError):
                s.enroll("st", "r", *bad)
        assert s.lab_windows("l") == {"r": ((100.0, 200.0),)}  # unchanged by the refusals
        s.delete_user("r")  # enrollments go with the user
        assert s.get_study("st").participants == () and s.lab_windows("l") == {}
