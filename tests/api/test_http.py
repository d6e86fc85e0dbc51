"""HTTP API: every refusal (anonymous, other runner, unassigned therapist, lab studies, expired token, CSRF, body
size, rate limit) and the happy paths they guard, against the real user store and session store.
Study windows in detail: test_studies.py."""
from __future__ import annotations

import io
import logging
import re

import numpy as np
import pytest
from starlette.testclient import TestClient

from runform.server.api import ROUTES

from .conftest import PASSWORD, assert_error, bearer, login


def _fill(path: str, sid: str, runner: str = "alice") -> str:
    return path.replace("{session_id}", sid).replace("{runner}", runner).replace("{fmt}", "csv")


def test_anonymous_gets_401_on_every_protected_route(client, sessions):
    sid = sessions.ids["alice"]
    checked = 0
    for r in ROUTES:
        if not r.auth or r.method == "WS":
            continue
        resp = client.request(r.method, _fill(r.path, sid), json={} if r.method in ("POST", "PUT") else None)
        assert_error(resp, 401, "unauthenticated")
        assert resp.headers["www-authenticate"].startswith("Bearer")
        checked += 1
    assert checked >= 18


def test_wrong_password_and_unknown_user_look_the_same(client):
    a = client.post("/api/v1/auth/login", json={"username": "alice", "password": "nope-nope"})
    b = client.post("/api/v1/auth/login", json={"username": "nobody", "password": "nope-nope"})
    assert_error(a, 401, "invalid_credentials")
    assert_error(b, 401, "invalid_credentials")
    assert a.json() == b.json()
    # a service account cannot log in over HTTP
    assert_error(client.post("/api/v1/auth/login", json={"username": "edge", "password": PASSWORD}), 401)


def test_runner_sees_only_own_data(client, sessions):
    h = bearer(client, "alice")
    a, b = sessions.ids["alice"], sessions.ids["bob"]
    runners = client.get("/api/v1/runners", headers=h).json()["runners"]
    assert [r["id"] for r in runners] == ["alice"]
    ss = client.get("/api/v1/sessions", headers=h).json()["sessions"]
    assert {s["runner_id"] for s in ss} == {"alice"} and a in {s["id"] for s in ss}
    assert client.get(f"/api/v1/sessions/{a}/steps", headers=h).json()["count"] == 10
    for path in (f"/api/v1/sessions/{b}", f"/api/v1/sessions/{b}/steps", f"/api/v1/sessions/{b}/metrics",
                 f"/api/v1/sessions/{b}/raw", f"/api/v1/sessions/{b}/notes", f"/api/v1/sessions/{b}/summary",
                 f"/api/v1/sessions/{b}/cues", f"/api/v1/sessions/{b}/raw/sensors",
                 "/api/v1/runners/bob", "/api/v1/runners/bob/sessions", "/api/v1/sessions?runner=bob",
                 "/api/v1/runners/bob/targets"):
        assert_error(client.get(path, headers=h), 404, "not_found")
    assert_error(client.post(f"/api/v1/sessions/{b}/notes", headers=h, json={"text": "hi"}), 404)
    assert_error(client.get("/api/v1/users", headers=h), 403)


def test_therapist_sees_only_assigned_runners(client, sessions):
    h = bearer(client, "pt")
    a, b = sessions.ids["alice"], sessions.ids["bob"]
    assert [r["id"] for r in client.get("/api/v1/runners", headers=h).json()["runners"]] == ["alice"]
    assert client.get(f"/api/v1/sessions/{a}/metrics", headers=h).json()["count"] == 3
    assert_error(client.get(f"/api/v1/sessions/{b}/steps", headers=h), 404)
    # therapists annotate but do not get raw samples or exports
    r = client.post(f"/api/v1/sessions/{a}/notes", headers=h, json={"text": "knee ok", "time_s": 12.0})
    assert r.status_code == 201 and r.json()["author"] == "pt"
    assert any(n["text"] == "knee ok" for n in client.get(f"/api/v1/sessions/{a}/notes", headers=h).json()["notes"])
    assert_error(client.get(f"/api/v1/sessions/{a}/raw", headers=h), 403, "forbidden")
    # an unassigned therapist sees nothing
    h2 = bearer(client, "pt2")
    assert client.get("/api/v1/runners", headers=h2).json()["runners"] == []
    assert client.get("/api/v1/sessions", headers=h2).json()["sessions"] == []
    assert_error(client.get(f"/api/v1/sessions/{a}", headers=h2), 404)


def test_lab_sees_only_granted_study_runners_and_gets_raw(client, sessions):
    h = bearer(client, "lab")
    a, b = sessions.ids["alice"], sessions.ids["bob"]
    # the participants of its granted study "gait" (alice is only in the study "other", not granted)
    assert [r["id"] for r in client.get("/api/v1/runners", headers=h).json()["runners"]] == ["bob", "dan"]
    assert_error(client.get(f"/api/v1/sessions/{a}/raw", headers=h), 404)
    r = client.get(f"/api/v1/sessions/{b}/raw", headers=h, params={"t0_s": 10.0, "t1_s": 12.0})
    assert r.status_code == 200
    raw = r.json()["raw"]
    assert r.json()["count"] == 200 and len(raw["acc_ms2"]) == 200
    assert raw["acc_ms2"][0] == pytest.approx([1.0, 1.0, 10.81])  # bob's offset k=1
    r = client.get(f"/api/v1/sessions/{b}/raw", headers=h, params={"format": "npz"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npz"
    z = np.load(io.BytesIO(r.content))
    assert z["time_s"].shape == (1000,) and np.allclose(np.diff(z["time_s"]), 0.01)
    # labs read but do not annotate or coach
    assert_error(client.post(f"/api/v1/sessions/{b}/notes", headers=h, json={"text": "x"}), 403)
    assert_error(client.post("/api/v1/runners/bob/control", headers=h, json={"command": "pause"}), 403)


def test_admin_sees_everything(client, sessions):
    h = bearer(client, "root")
    assert {r["id"] for r in client.get("/api/v1/runners", headers=h).json()["runners"]} >= {"alice", "bob"}
    users = {u["name"]: u for u in client.get("/api/v1/users", headers=h).json()["users"]}
    assert users["pt"]["runners"] == ["alice"]
    assert users["lab"]["studies"] == ["gait"] and users["lab"]["runners"] == ["bob", "dan"]
    assert client.get(f"/api/v1/sessions/{sessions.ids['bob']}/summary", headers=h).status_code == 200


def test_raw_range_is_bounded(app_factory, sessions):
    with TestClient(app_factory(max_raw_samples=300)) as c:
        h = bearer(c, "alice")
        sid = sessions.ids["alice"]
        assert_error(c.get(f"/api/v1/sessions/{sid}/raw", headers=h), 400, "range_too_large")
        r = c.get(f"/api/v1/sessions/{sid}/raw", headers=h, params={"t0_s": 10.0, "t1_s": 12.5})
        assert r.status_code == 200 and r.json()["count"] == 250


def test_expired_and_revoked_tokens_refused(client, users):
    tok = login(client, "alice")["token"]
    h = {"Authorization": f"Bearer {tok}"}
    assert client.get("/api/v1/auth/me", headers=h).status_code == 200
    users.test_clock.offset = 13 * 3600  # past the 12 h default lifetime
    try:
        assert_error(client.get("/api/v1/auth/me", headers=h), 401, "token_expired")
    finally:
        users.test_clock.offset = 0.0
    tok2 = login(client, "alice")["token"]
    h2 = {"Authorization": f"Bearer {tok2}"}
    assert client.post("/api/v1/auth/logout", headers=h2).status_code == 200
    assert_error(client.get("/api/v1/auth/me", headers=h2), 401, "invalid_token")
    assert_error(client.get("/api/v1/auth/me", headers={"Authorization": "Bearer rft_forged"}), 401)


def test_cookie_session_needs_csrf_header(app_factory, sessions):
    with TestClient(app_factory(), base_url="http://testserver") as c:
        body = login(c, "pt", mode="cookie")
        assert "token" not in body and body["csrf_token"]
        r = c.post("/api/v1/auth/login", json={"username": "pt", "password": PASSWORD, "mode": "cookie"})
        set_cookie = r.headers.get_list("set-cookie")
        sess_cookie = next(x for x in set_cookie if x.startswith("rf_session="))
        assert "HttpOnly" in sess_cookie and "SameSite=strict" in sess_cookie.replace("Strict", "strict")
        csrf = r.json()["csrf_token"]
        sid = sessions.ids["alice"]
        assert c.get(f"/api/v1/sessions/{sid}/notes").status_code == 200  # reads need no CSRF token
        assert_error(c.post(f"/api/v1/sessions/{sid}/notes", json={"text": "no csrf"}), 403, "csrf_failed")
        assert_error(c.post(f"/api/v1/sessions/{sid}/notes", json={"text": "bad"},
                             headers={"X-CSRF-Token": "wrong"}), 403, "csrf_failed")
        r = c.post(f"/api/v1/sessions/{sid}/notes", json={"text": "with csrf"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201
        assert_error(c.post("/api/v1/auth/logout"), 403, "csrf_failed")


def test_oversized_body_413(app_factory, sessions):
    with TestClient(app_factory(body_limit_bytes=2000)) as c:
        h = bearer(c, "pt")
        sid = sessions.ids["alice"]
        assert_error(c.post(f"/api/v1/sessions/{sid}/notes", headers=h, json={"text": "x" * 5000}), 413,
                      "payload_too_large")

        def chunks():  # no Content-Length: counted while streaming
            for _ in range(10):
                yield b'{"text": "' + b"y" * 500
        r = c.post(f"/api/v1/sessions/{sid}/notes", headers={**h, "Content-Type": "application/json"},
                   content=chunks())
        assert_error(r, 413, "payload_too_large")
        assert c.post(f"/api/v1/sessions/{sid}/notes", headers=h, json={"text": "small"}).status_code == 201


def test_rate_limit_429_with_retry_after(app_factory):
    with TestClient(app_factory(rate_per_s=0.5, rate_burst=5)) as c:
        h = bearer(c, "alice")
        codes = [c.get("/api/v1/auth/me", headers=h).status_code for _ in range(8)]
        assert codes[:5] == [200] * 5 and codes[-1] == 429
        r = c.get("/api/v1/auth/me", headers=h)
        assert_error(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1
    with TestClient(app_factory(login_rate_per_s=0.1, login_burst=2)) as c:
        codes = [c.post("/api/v1/auth/login", json={"username": "alice", "password": "guess-guess"}).status_code
                 for _ in range(4)]
        assert codes[:2] == [401, 401] and codes[2:] == [429, 429]


def test_errors_are_json(client):
    assert_error(client.get("/api/v1/nowhere"), 404)
    assert_error(client.delete("/api/v1/auth/login"), 405)
    assert_error(client.post("/api/v1/auth/login", content=b"{not json", headers={"Content-Type":
                                                                                     "application/json"}), 400)
    h = bearer(client, "alice")
    assert_error(client.get("/api/v1/sessions", headers=h, params={"limit": "many"}), 400, "invalid_parameter")


def test_no_secrets_in_logs(app_factory, caplog):
    caplog.set_level(logging.DEBUG)
    with TestClient(app_factory()) as c:
        tok = login(c, "alice")["token"]
        c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tok}"})
        c.post("/api/v1/auth/login", json={"username": "alice", "password": "wrong-" + PASSWORD})
        ck = c.post("/api/v1/auth/login", json={"username": "bob", "password": PASSWORD, "mode": "cookie"})
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "login ok: user alice" in text  # logging did happen
    for secret in (PASSWORD, tok, tok[4:20], ck.json()["csrf_token"], ck.cookies.get("rf_session") or "zz-none"):
        assert secret not in text


def test_openapi_lists_every_route(client):
    doc = client.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for r in ROUTES:
        assert r.path in doc["paths"], r.path
        method = "get" if r.method == "WS" else r.method.lower()
        assert method in doc["paths"][r.path]
    # and every Starlette route is in the table (nothing served undocumented)
    app = client.app.starlette
    served = {getattr(r, "path", None) for r in app.routes} - {"/", "/dashboards", None}
    assert served <= set(doc["paths"]), served - set(doc["paths"])


def test_security_headers(client):
    r = client.get("/healthz")
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    r = client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.headers["cache-control"] == "no-store"


def test_exports_download_and_refusals(client, sessions):
    h = bearer(client, "alice")
    a, b = sessions.ids["alice"], sessions.ids["bob"]
    formats = client.get("/api/v1/exports", headers=h).json()["formats"]
    assert "csv" in formats
    r = client.get(f"/api/v1/sessions/{a}/export/csv", headers=h)
    assert r.status_code == 200, r.text
    import zipfile
    z = zipfile.ZipFile(io.BytesIO(r.content))
    names = z.namelist()
    assert any(n.endswith("steps.csv") for n in names), names
    steps_csv = z.read(next(n for n in names if n.endswith("steps.csv"))).decode()
    assert len([l for l in steps_csv.splitlines() if l and not l.startswith("#")]) == 11  # header + 10 steps
    assert_error(client.get(f"/api/v1/sessions/{b}/export/csv", headers=h), 404)
    assert_error(client.get(f"/api/v1/sessions/{a}/export/nope", headers=h), 404, "unknown_format")
    assert_error(client.get(f"/api/v1/sessions/{a}/export/csv", headers=bearer(client, "pt")), 403)
    assert client.get(f"/api/v1/sessions/{b}/export/csv", headers=bearer(client, "lab")).status_code == 200
