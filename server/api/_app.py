"""The HTTP/WebSocket API (Starlette on uvicorn): :func:`create_app`.

Every route is declared once in :data:`ROUTES` (method, path, handler, OpenAPI description); the Starlette
router and the served OpenAPI document (``/api/v1/openapi.json``) are both built from that table.

Authentication: ``Authorization: Bearer <token>`` (API clients) or the ``rf_session`` cookie (browsers; HttpOnly,
SameSite=Strict, Secure over TLS) plus ``X-CSRF-Token`` on every state-changing request. Resources a user may not
see answer 404 (no existence oracle); visible resources without the needed permission answer 403.
"""
from __future__ import annotations

import asyncio
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from runform.server.auth import (PERM_ANNOTATE, PERM_CONTROL, PERM_EXPORT, PERM_RAW, PERM_READ, ROLE_ADMIN,
                                 TOKEN_KIND_BEARER, TOKEN_KIND_COOKIE, Access, AuthenticationError, TokenError,
                                 TokenInfo, UnknownStudyError, UserStore, UserStoreError, access_for)
from runform.server.mqtt import (COMMAND_ARGS, PayloadError, control_payload, encode_json, plan_payload, plan_topic,
                                 validate)
from runform.server.programs import ProgramError, decide_next, merge_pain, resolve_program

from ._errors import ApiError, error_response, exception_handlers
from ._exports import available_formats, run_export
from ._limits import BodyLimitMiddleware, RateLimitMiddleware, TokenBucketLimiter, client_ip
from ._live import DEFAULT_KINDS, LIVE_KINDS, LiveHub
from ._serialize import columns, jsonable, npz_bytes, records

__all__ = ["ApiConfig", "create_app", "ROUTES", "openapi_document", "SESSION_COOKIE", "CSRF_COOKIE",
           "CSRF_HEADER", "API_PREFIX"]

log = logging.getLogger("runform.api")

API_PREFIX = "/api/v1"
SESSION_COOKIE = "rf_session"
CSRF_COOKIE = "rf_csrf"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class ApiConfig:
    """Limits and policies of the API (all bounded by default)."""

    body_limit_bytes: int = 1 << 20
    rate_per_s: float = 20.0  # per credential (token/cookie)
    rate_burst: float = 60.0
    ip_rate_per_s: float = 50.0  # per client IP, every request
    ip_rate_burst: float = 200.0
    login_rate_per_s: float = 0.2  # per client IP: one login every 5 s on average
    login_burst: float = 10.0
    token_ttl_s: float = 12 * 3600.0
    cookie_ttl_s: float = 12 * 3600.0
    cookie_secure: bool | None = None  # None: Secure when the request came over https
    max_rows: int = 100_000  # steps/metrics/cues per response
    max_raw_samples: int = 500_000  # raw samples per response (~17 min of one 500 Hz sensor)
    live_recheck_s: float = 2.0  # WebSocket: re-check token expiry and access this often
    live_queue_len: int = 512
    allowed_origins: tuple[str, ...] = ()  # extra Origins accepted for cookie WebSockets (same host always is)
    dashboards_dir: str | None = None  # default: the runform.dashboards package's static/ folder
    export_dir: str | None = None  # temporary export files (default: system temp)
    programs_dir: str | None = None  # return-to-run program files (NAME.toml) for plans (then the examples)


# ------------------------------------------------------------------------------------------------ helpers
def _state(request) -> "_AppState":
    return request.app.state.rf


@dataclass
class _AppState:
    users: UserStore
    sessions: Any  # runform.server.storage.SessionStore (duck-typed)
    config: ApiConfig
    hub: LiveHub | None
    login_limiter: TokenBucketLimiter
    counters: dict = field(default_factory=lambda: {"logins_ok": 0, "logins_failed": 0, "auth_refused": 0,
                                                    "csrf_refused": 0})


def _bearer(headers) -> str | None:
    h = headers.get("authorization")
    if h and h[:7].lower() == "bearer ":
        return h[7:].strip()
    return None


def _authenticate(st: _AppState, headers, cookies, method: str) -> tuple[Access, TokenInfo]:
    token = _bearer(headers)
    try:
        if token is not None:
            info = st.users.validate_token(token, TOKEN_KIND_BEARER)
        else:
            cookie = cookies.get(SESSION_COOKIE)
            info = st.users.validate_token(cookie, TOKEN_KIND_COOKIE)
            if method not in _SAFE_METHODS and not st.users.csrf_matches(info, headers.get(CSRF_HEADER)):
                st.counters["csrf_refused"] += 1
                raise ApiError(403, "csrf_failed", f"missing or wrong {CSRF_HEADER.title()} header "
                                                   "(required with cookie sessions on state-changing requests)")
    except TokenError as exc:
        st.counters["auth_refused"] += 1
        raise ApiError(401, exc.code, str(exc), headers={"WWW-Authenticate": 'Bearer realm="runform"'}) from None
    if info.user.role == "service":
        raise ApiError(403, "forbidden", "service accounts have no HTTP API access")
    return access_for(st.users, info.user), info


async def _auth(request: Request) -> tuple[Access, TokenInfo]:
    st = _state(request)
    acc, info = _authenticate(st, request.headers, request.cookies, request.method)
    request.state.user = info.user.name
    return acc, info


async def _json_body(request: Request) -> dict:
    ct = request.headers.get("content-type", "")
    if "json" not in ct:
        raise ApiError(415, "unsupported_media_type", "send a JSON object with Content-Type: application/json")
    try:
        body = await request.json()
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "body must be a JSON object")
    return body


def _float_param(request: Request, name: str) -> float | None:
    v = request.query_params.get(name)
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(f):
        raise ApiError(400, "invalid_parameter", f"{name} must be finite")
    return f


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    v = request.query_params.get(name)
    if v is None:
        return default
    try:
        i = int(v)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer, got {v!r}") from None
    if not lo <= i <= hi:
        raise ApiError(400, "invalid_parameter", f"{name} must be in [{lo}, {hi}], got {i}")
    return i


def _not_found(what: str, key: str) -> ApiError:
    return ApiError(404, "not_found", f"no {what} {key!r}")


def _need(acc: Access, perm: str, runner: str) -> None:
    if not acc.sees(runner):
        raise _not_found("runner", runner)
    if not acc.can(perm, runner):
        raise ApiError(403, "forbidden", f"role {acc.user.role!r} may not {perm} data of runner {runner!r}")


async def _session_for(request: Request, perm: str = PERM_READ):
    acc, info = await _auth(request)
    sid = request.path_params["session_id"]
    st = _state(request)
    sess = await run_in_threadpool(st.sessions.get_session, sid)
    if sess is None or not acc.sees_session(sess.runner_id, sess.started_unix_s):  # labs: enrollment windows
        raise _not_found("session", sid)
    _need(acc, perm, sess.runner_id)
    return acc, info, sess


def _table_response(request: Request, arr: np.ndarray, key: str) -> JSONResponse:
    max_rows = _state(request).config.max_rows
    limit = _int_param(request, "limit", max_rows, 1, max_rows)
    truncated = len(arr) > limit
    arr = arr[:limit]
    layout = request.query_params.get("layout", "records")
    if layout not in ("records", "columns"):
        raise ApiError(400, "invalid_parameter", "layout must be 'records' or 'columns'")
    data = records(arr) if layout == "records" else columns(arr)
    return JSONResponse({key: data, "count": int(len(arr)), "truncated": truncated, "layout": layout})


# ------------------------------------------------------------------------------------------------ auth routes
async def login(request: Request) -> Response:
    st = _state(request)
    wait = st.login_limiter.hit(client_ip(request.scope))
    if wait:
        retry = str(max(1, math.ceil(wait)))
        return error_response(429, "rate_limited", f"too many login attempts; retry after {retry} s",
                              {"Retry-After": retry})
    body = await _json_body(request)
    name, password, mode = body.get("username"), body.get("password"), body.get("mode", "bearer")
    if not isinstance(name, str) or not isinstance(password, str):
        raise ApiError(400, "invalid_request", "username and password (strings) are required")
    if mode not in ("bearer", "cookie"):
        raise ApiError(400, "invalid_request", "mode must be 'bearer' or 'cookie'")
    try:
        user = await run_in_threadpool(st.users.authenticate, name, password)
    except AuthenticationError as exc:
        st.counters["logins_failed"] += 1
        log.info("login failed from %s", client_ip(request.scope))  # no user name (could be a password typo)
        raise ApiError(401, exc.code, str(exc)) from None
    cfg = st.config
    kind = TOKEN_KIND_COOKIE if mode == "cookie" else TOKEN_KIND_BEARER
    ttl = cfg.cookie_ttl_s if mode == "cookie" else cfg.token_ttl_s
    token, info = await run_in_threadpool(st.users.issue_token, user, kind, ttl)
    st.counters["logins_ok"] += 1
    log.info("login ok: user %s (%s, %s) from %s", user.name, user.role, mode, client_ip(request.scope))
    out = {"user": _user_json(user), "expires_unix_s": info.expires_unix_s}
    if mode == "bearer":
        return JSONResponse({**out, "token": token, "token_type": "Bearer"}, headers={"Cache-Control": "no-store"})
    resp = JSONResponse({**out, "csrf_token": info.csrf}, headers={"Cache-Control": "no-store"})
    secure = cfg.cookie_secure if cfg.cookie_secure is not None else request.url.scheme == "https"
    resp.set_cookie(SESSION_COOKIE, token, max_age=int(ttl), path="/", secure=secure, httponly=True,
                    samesite="strict")
    resp.set_cookie(CSRF_COOKIE, info.csrf, max_age=int(ttl), path="/", secure=secure, httponly=False,
                    samesite="strict")
    return resp


async def logout(request: Request) -> Response:
    _acc, info = await _auth(request)
    st = _state(request)
    token = _bearer(request.headers) or request.cookies.get(SESSION_COOKIE)
    await run_in_threadpool(st.users.revoke_token, token)
    resp = JSONResponse({"ok": True})
    resp.delete_cookie(SESSION_COOKIE, path="/")
    resp.delete_cookie(CSRF_COOKIE, path="/")
    return resp


def _user_json(user) -> dict:
    return {"name": user.name, "role": user.role}


async def me(request: Request) -> Response:
    acc, info = await _auth(request)
    return JSONResponse({"user": _user_json(info.user), "auth": info.kind, "expires_unix_s": info.expires_unix_s,
                         "csrf_token": info.csrf,
                         "runners": None if acc.runners is None else sorted(acc.runners)},
                        headers={"Cache-Control": "no-store"})


# ------------------------------------------------------------------------------------------------ runners
def _runner_json(st: _AppState, name: str, stored=None) -> dict:
    d = {"id": name, "display_name": name, "mass_kg": None}
    if stored is not None:
        d.update({"display_name": stored.display_name or name, "mass_kg": stored.mass_kg})
    d["live_status"] = st.hub.status.get(name) if st.hub else None
    return d


async def list_runners(request: Request) -> Response:
    acc, _ = await _auth(request)
    st = _state(request)
    stored = {r.id: r for r in await run_in_threadpool(st.sessions.list_runners)}
    names = set(stored) | set(await run_in_threadpool(st.users.runner_names))
    visible = sorted(acc.filter(names))
    return JSONResponse({"runners": [_runner_json(st, n, stored.get(n)) for n in visible]})


async def get_runner(request: Request) -> Response:
    acc, _ = await _auth(request)
    st = _state(request)
    runner = request.path_params["runner"]
    _need(acc, PERM_READ, runner)
    stored = await run_in_threadpool(st.sessions.get_runner, runner)
    if stored is None and runner not in await run_in_threadpool(st.users.runner_names):
        raise _not_found("runner", runner)
    d = _runner_json(st, runner, stored)
    d["settings"] = await run_in_threadpool(st.users.runner_settings, runner)
    return JSONResponse(d)


async def _sessions(request: Request, runners: list[str] | None) -> Response:
    acc, _ = await _auth(request)
    st = _state(request)
    if runners is None:
        q = request.query_params.get("runner")
        runners = [r for r in q.split(",") if r] if q else None
    if runners is not None:
        for r in runners:
            if not acc.sees(r):
                raise _not_found("runner", r)
    else:
        runners = None if acc.runners is None else sorted(acc.runners)
    open_only = request.query_params.get("open_only", "false").lower() in ("1", "true", "yes")
    limit = _int_param(request, "limit", 1000, 1, 10_000)
    sess = await run_in_threadpool(_visible_sessions, st, acc, runners, open_only, limit)
    return JSONResponse({"sessions": [jsonable(s) for s in sess]})


def _visible_sessions(st: _AppState, acc: Access, runners, open_only: bool, limit: int, keep=None) -> list:
    """Newest first, at most ``limit``, only sessions ``acc`` may see (labs: started inside an enrollment window)
    and, if given, ``keep(session)`` accepts. The store cannot filter by window, so read further back until
    ``limit`` visible ones or the end (bounded: at most 64 x ``limit`` rows)."""
    n = limit
    while True:
        got = st.sessions.list_sessions(runners, open_only=open_only, limit=n)
        vis = [s for s in acc.filter_sessions(got) if keep is None or keep(s)]
        if len(vis) >= limit or len(got) < n or n >= 64 * limit:
            return vis[:limit]
        n *= 4


async def list_sessions(request: Request) -> Response:
    return await _sessions(request, None)


async def runner_sessions(request: Request) -> Response:
    return await _sessions(request, [request.path_params["runner"]])


# ------------------------------------------------------------------------------------------------ sessions
async def get_session(request: Request) -> Response:
    _, _, sess = await _session_for(request)
    return JSONResponse(jsonable(sess))


async def session_summary(request: Request) -> Response:
    _, _, sess = await _session_for(request)
    st = _state(request)
    return JSONResponse(jsonable(await run_in_threadpool(st.sessions.session_summary, sess.id)))


async def session_steps(request: Request) -> Response:
    _, _, sess = await _session_for(request)
    st = _state(request)
    t0, t1 = _float_param(request, "t0_s"), _float_param(request, "t1_s")
    sensor = request.query_params.get("sensor")
    arr = await run_in_threadpool(lambda: st.sessions.read_steps(sess.id, sensor, t0, t1))
    return _table_response(request, arr, "steps")


async def session_metrics(request: Request) -> Response:
    _, _, sess = await _session_for(request)
    st = _state(request)
    t0, t1 = _float_param(request, "t0_s"), _float_param(request, "t1_s")
    arr = await run_in_threadpool(lambda: st.sessions.read_metrics(sess.id, t0, t1))
    return _table_response(request, arr, "metrics")


async def session_cues(request: Request) -> Response:
    _, _, sess = await _session_for(request)
    st = _state(request)
    t0, t1 = _float_param(request, "t0_s"), _float_param(request, "t1_s")
    arr = await run_in_threadpool(lambda: st.sessions.read_cues(sess.id, t0, t1))
    return _table_response(request, arr, "cues")


async def raw_sensors(request: Request) -> Response:
    _, _, sess = await _session_for(request, PERM_RAW)
    st = _state(request)
    return JSONResponse({"sensors": jsonable(await run_in_threadpool(st.sessions.raw_sensors, sess.id))})


async def session_raw(request: Request) -> Response:
    _, _, sess = await _session_for(request, PERM_RAW)
    st = _state(request)
    cfg = st.config
    t0, t1 = _float_param(request, "t0_s"), _float_param(request, "t1_s")
    sensor = request.query_params.get("sensor_id")
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "npz"):
        raise ApiError(400, "invalid_parameter", "format must be 'json' or 'npz'")
    # bound the response BEFORE reading: estimate the samples in [t0, t1) from the per-sensor index
    sensors = await run_in_threadpool(st.sessions.raw_sensors, sess.id)
    if sensor is not None:
        sensors = [s for s in sensors if s.get("sensor_id") == sensor]
        if not sensors:
            raise _not_found("raw sensor", sensor)
    est = 0.0
    for s in sensors:
        n, a, b = s.get("n_samples") or 0, s.get("t0_s"), s.get("t1_s")
        if not n or a is None or b is None:
            continue
        lo = a if t0 is None else max(a, t0)
        hi = b if t1 is None else min(b, t1)
        span = b - a
        est += n if span <= 0 else max(0.0, min(1.0, (hi - lo) / span)) * n
    if est > cfg.max_raw_samples * 1.05:
        raise ApiError(400, "range_too_large", f"about {int(est)} samples in this range; at most "
                       f"{cfg.max_raw_samples} per request: narrow t0_s/t1_s or pick one sensor_id")
    data = await run_in_threadpool(st.sessions.read_raw, sess.id, sensor, t0, t1)
    n = len(data["time_s"]) if data.get("time_s") is not None else 0
    if n > cfg.max_raw_samples:
        raise ApiError(400, "range_too_large", f"{n} samples in this range; at most {cfg.max_raw_samples} "
                       "per request: narrow t0_s/t1_s or pick one sensor_id")
    if fmt == "npz":
        body = await run_in_threadpool(npz_bytes, data)
        return Response(body, media_type="application/x-npz", headers={
            "Content-Disposition": f'attachment; filename="{sess.id}-raw.npz"', "X-Sample-Count": str(n)})
    return JSONResponse({"session_id": sess.id, "count": n,
                         "raw": {k: jsonable(v) for k, v in data.items()}})


async def list_notes(request: Request) -> Response:
    _, _, sess = await _session_for(request)
    st = _state(request)
    return JSONResponse({"notes": jsonable(await run_in_threadpool(st.sessions.read_notes, sess.id))})


async def add_note(request: Request) -> Response:
    acc, info, sess = await _session_for(request, PERM_ANNOTATE)
    body = await _json_body(request)
    text, t, kind = body.get("text"), body.get("time_s"), body.get("kind", "note")
    if not isinstance(text, str) or not 1 <= len(text) <= 1000:
        raise ApiError(422, "invalid_request", "text must be a string of 1-1000 characters")
    if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t)):
        raise ApiError(422, "invalid_request", "time_s must be a finite number or null")
    if not isinstance(kind, str) or not 1 <= len(kind) <= 32:
        raise ApiError(422, "invalid_request", "kind must be a string of 1-32 characters")
    st = _state(request)
    nid = await run_in_threadpool(lambda: st.sessions.add_note(sess.id, text, time_s=t, author=info.user.name,
                                                               kind=kind))
    return JSONResponse({"id": int(nid), "session_id": sess.id, "author": info.user.name, "kind": kind,
                         "time_s": t, "text": text}, status_code=201)


# ------------------------------------------------------------------------------------------------ exports
async def list_exports(request: Request) -> Response:
    await _auth(request)
    return JSONResponse({"formats": list(available_formats())})


async def export_session(request: Request) -> Response:
    _, info, sess = await _session_for(request, PERM_EXPORT)
    fmt = request.path_params["fmt"]
    formats = available_formats()
    if fmt not in formats:
        raise ApiError(404, "unknown_format", f"no export format {fmt!r}; available: {list(formats)}")
    st = _state(request)
    tmpdir = tempfile.mkdtemp(prefix="runform-export-", dir=st.config.export_dir)
    try:
        path = await run_in_threadpool(run_export, st.sessions, sess.id, Path(tmpdir), fmt)
    except BaseException:
        shutil.rmtree(tmpdir, True)
        raise
    log.info("export %s of session %s by %s", fmt, sess.id, info.user.name)
    return FileResponse(path, filename=path.name, media_type="application/octet-stream",
                        background=BackgroundTask(shutil.rmtree, tmpdir, True))


# ------------------------------------------------------------------------------------------------ control
_TARGET_FIELDS = {"cadence_spm": "set_target_cadence", "tolerance_spm": "set_target_cadence",
                  "impact_limit_g": "set_limits", "gct_limit_ms": "set_limits", "imbalance_limit_pct": "set_limits"}


async def _publish(st: _AppState, runner: str, issuer: str, command: str, args: dict, wait_s: float):
    payload = control_payload(command, args)
    try:
        data = encode_json(payload)
    except PayloadError as exc:
        raise ApiError(422, "invalid_command", str(exc)) from None
    if st.hub is None:
        raise ApiError(503, "mqtt_unavailable", "the server has no MQTT connection configured")
    try:
        reply = await st.hub.send_command(runner, issuer, payload["request_id"], data, wait_s)
    except ConnectionError as exc:
        raise ApiError(503, "mqtt_unavailable", f"MQTT broker not reachable: {exc}") from None
    return payload["request_id"], reply


async def send_control(request: Request) -> Response:
    acc, info = await _auth(request)
    runner = request.path_params["runner"]
    _need(acc, PERM_CONTROL, runner)
    body = await _json_body(request)
    command, args = body.get("command"), body.get("args", {})
    wait_s = body.get("wait_s", 2.0)
    if not isinstance(command, str) or command not in COMMAND_ARGS:
        raise ApiError(422, "invalid_command", f"command must be one of {sorted(COMMAND_ARGS)}")
    if not isinstance(wait_s, (int, float)) or isinstance(wait_s, bool) or not 0 <= wait_s <= 10:
        raise ApiError(422, "invalid_request", "wait_s must be a number in [0, 10]")
    if not acc.can_command(runner, command):
        raise ApiError(403, "forbidden", f"role {info.user.role!r} may not send {command!r}")
    st = _state(request)
    rid, reply = await _publish(st, runner, info.user.name, command, args if isinstance(args, dict) else {},
                                float(wait_s))
    log.info("control %s -> %s by %s (request %s)", command, runner, info.user.name, rid)
    return JSONResponse({"request_id": rid, "published": True, "reply": reply},
                        status_code=200 if reply is not None else 202)


async def get_targets(request: Request) -> Response:
    acc, _ = await _auth(request)
    runner = request.path_params["runner"]
    _need(acc, PERM_READ, runner)
    st = _state(request)
    if runner not in await run_in_threadpool(st.users.runner_names):
        raise _not_found("runner", runner)
    settings = await run_in_threadpool(st.users.runner_settings, runner)
    live = st.hub.status.get(runner) if st.hub else None
    return JSONResponse({**settings, "live_status": live})


async def put_targets(request: Request) -> Response:
    acc, info = await _auth(request)
    runner = request.path_params["runner"]
    _need(acc, PERM_CONTROL, runner)
    if not acc.can_command(runner, "set_target_cadence"):
        raise ApiError(403, "forbidden", f"role {info.user.role!r} may not set targets")
    body = await _json_body(request)
    unknown = set(body) - set(_TARGET_FIELDS) - {"program", "publish", "stage"}
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown fields {sorted(unknown)}")
    by_cmd: dict[str, dict] = {}
    for k, cmd in _TARGET_FIELDS.items():
        if k in body and body[k] is not None:
            by_cmd.setdefault(cmd, {})[k] = body[k]
    for cmd, args in by_cmd.items():
        try:
            validate(args, COMMAND_ARGS[cmd], "$", cmd)
        except PayloadError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
    if "set_target_cadence" in by_cmd and "cadence_spm" not in by_cmd["set_target_cadence"]:
        raise ApiError(422, "invalid_request", "tolerance_spm needs cadence_spm")
    program = body.get("program")
    if program is not None and (not isinstance(program, str) or len(program) > 200):
        raise ApiError(422, "invalid_request", "program must be a program name (string, at most 200 characters)")
    stage = body.get("stage")
    if stage is not None and (not isinstance(stage, int) or isinstance(stage, bool) or stage < 1):
        raise ApiError(422, "invalid_request", "stage must be an integer >= 1 (1-based)")
    st = _state(request)
    if runner not in await run_in_threadpool(st.users.runner_names):
        raise _not_found("runner", runner)
    old = await run_in_threadpool(st.users.runner_settings, runner)
    if program is not None:
        prog = _program_or_422(st, program or None)
    else:  # unchanged: a stored name that no longer resolves must not block a change of targets
        try:
            prog = resolve_program(old["program"], st.config.programs_dir) if old["program"] else None
        except ProgramError:
            prog = None
    if stage is not None and prog is None:
        raise ApiError(422, "invalid_request", "stage needs a program")
    if stage is not None and stage > len(prog.stages):
        raise ApiError(422, "invalid_request", f"stage {stage} out of range: {prog.name} has {len(prog.stages)} stages")
    targets = {k: v for args in by_cmd.values() for k, v in args.items()}
    settings = await run_in_threadpool(lambda: st.users.set_runner_settings(
        runner, targets=targets, program=prog.name if prog is not None else ("" if program is not None else None),
        set_by=info.user.name))
    plan, plan_error = await _set_plan(st, runner, prog, stage, settings["targets"], info.user.name)
    published, live_error = [], None
    if body.get("publish", True) and by_cmd:
        for cmd, args in by_cmd.items():
            try:
                rid, _ = await _publish(st, runner, info.user.name, cmd, args, 0)
                published.append({"command": cmd, "request_id": rid})
            except ApiError as exc:
                live_error = exc.message
                break
    return JSONResponse({**settings, "published": published, "live_error": live_error, "plan": plan,
                         "plan_published": plan_error is None, "plan_error": plan_error})


# ------------------------------------------------------------------------------------------------ programs
_PLAN_TARGETS = ("cadence_spm", "tolerance_spm")
_PLAN_LIMITS = ("impact_limit_g", "gct_limit_ms", "imbalance_limit_pct")


def _program_or_422(st: _AppState, name: str | None):
    if not name:
        return None
    try:
        return resolve_program(name, st.config.programs_dir)
    except ProgramError as exc:
        raise ApiError(422, "unknown_program", str(exc)) from None


async def _publish_plan(st: _AppState, runner: str, plan: dict) -> str | None:
    """The retained plan out to the broker (the store has it already); returns why it could not be sent."""
    if st.hub is None:
        return "the server has no MQTT connection configured"
    try:
        await st.hub.publish_acked(plan_topic(runner), encode_json(plan), retain=True)  # new subscribers get it
    except (ConnectionError, RuntimeError, PayloadError) as exc:
        log.warning("plan of %s stored, not published: %s", runner, exc)
        return f"MQTT broker not reachable: {exc}"
    return None


async def _set_plan(st: _AppState, runner: str, prog, stage: int | None, targets: dict, set_by: str):
    """A therapist changed targets/program/stage: the new plan, stored and published (retained)."""
    stored = await run_in_threadpool(st.sessions.get_plan, runner)
    old = stored["plan"] if stored else None
    if prog is None:
        new_stage = None
    elif stage is not None:
        new_stage = stage
    elif old and old.get("program") == prog.name and old.get("stage"):
        new_stage = min(int(old["stage"]), len(prog.stages))
    else:
        new_stage = 1
    name = prog.name if prog is not None else None
    changed = old is None or old.get("program") != name or old.get("stage") != new_stage
    plan = plan_payload(runner, program=name, stage=new_stage, n_stages=len(prog.stages) if prog else None,
                        targets={k: targets.get(k) for k in _PLAN_TARGETS},
                        limits={k: targets.get(k) for k in _PLAN_LIMITS},
                        decision=None if changed else (old or {}).get("decision"), set_by=set_by)
    # a therapist's change of program or stage starts a new period: only sessions after it count for progression
    await run_in_threadpool(lambda: st.sessions.put_plan(runner, plan,
                                                         since_unix_s=plan["time_unix_s"] if changed else None))
    return plan, await _publish_plan(st, runner, plan)


async def _republish_plans(st: _AppState) -> None:
    """Publish every stored plan again (retained): the broker may have restarted without persistence."""
    try:
        plans = await run_in_threadpool(st.sessions.list_plans)
        for p in plans:
            await _publish_plan(st, p["runner"], p["plan"])
        if plans:
            log.info("re-published %d stored plan(s)", len(plans))
    except Exception:  # the next connect tries again
        log.exception("re-publishing stored plans failed")


async def _program_history(st: _AppState, runner: str) -> tuple[list[dict], list[dict]]:
    records = await run_in_threadpool(lambda: st.sessions.list_program_sessions(runner, limit=200))
    reports = await run_in_threadpool(lambda: st.sessions.list_pain_reports(runner, limit=1000))
    return merge_pain(records, reports), reports


def _decision_json(d, from_stage: int, pain_now: int) -> dict:
    return {"action": d.action, "reason": d.reason, "from_stage": from_stage, "to_stage": d.next_stage + 1,
            "pain_now": pain_now}


async def _current_plan(st: _AppState, runner: str) -> tuple[dict | None, float | None, bool]:
    """(plan, since_unix_s, stored). Without a stored plan, a program assigned before plans existed (the user
    store's setting) gives one: the stage the runner's edge reports running, else 1 (not stored until used)."""
    stored = await run_in_threadpool(st.sessions.get_plan, runner)
    if stored is not None:
        return stored["plan"], stored.get("since_unix_s"), True
    settings = await run_in_threadpool(st.users.runner_settings, runner)
    if not settings.get("program"):
        return None, None, False
    try:
        prog = resolve_program(settings["program"], st.config.programs_dir)
    except ProgramError:
        return None, None, False
    live = ((st.hub.status.get(runner) if st.hub else None) or {}).get("program") or {}
    stage = live.get("stage") if live.get("name") == prog.name else None
    stage = stage if isinstance(stage, int) and 1 <= stage <= len(prog.stages) else 1
    t = settings.get("targets") or {}
    plan = plan_payload(runner, program=prog.name, stage=stage, n_stages=len(prog.stages),
                        targets={k: t.get(k) for k in _PLAN_TARGETS}, limits={k: t.get(k) for k in _PLAN_LIMITS},
                        set_by=settings.get("set_by"), time_unix_s=settings.get("set_unix_s"))
    return plan, settings.get("set_unix_s"), False


async def _runner_known(st: _AppState, runner: str) -> None:
    if runner in await run_in_threadpool(st.users.runner_names):
        return
    if await run_in_threadpool(st.sessions.get_runner, runner) is None:
        raise _not_found("runner", runner)


async def get_program(request: Request) -> Response:
    acc, _ = await _auth(request)
    runner = request.path_params["runner"]
    _need(acc, PERM_READ, runner)
    st = _state(request)
    await _runner_known(st, runner)
    plan, since, plan_stored = await _current_plan(st, runner)
    history, reports = await _program_history(st, runner)
    nxt = None
    if plan and plan.get("program") and plan.get("stage"):
        try:
            prog = resolve_program(plan["program"], st.config.programs_dir)
        except ProgramError:
            prog = None
        # preview: the decision if the next rating equals the newest pain known (a report or the last record's)
        known = [(r["time_unix_s"], r["pain_0_10"]) for r in reports] + \
            [(h.get("end_unix_s") or 0.0, h["pain_after"]) for h in history if h.get("pain_after") is not None]
        if prog is not None and known:
            pain_now = max(known, key=lambda x: x[0])[1]
            d = decide_next(prog, history, pain_now, current_stage=int(plan["stage"]) - 1, since_unix_s=since)
            nxt = _decision_json(d, int(plan["stage"]), pain_now)
    return JSONResponse({"runner": runner, "plan": plan, "plan_stored": plan_stored, "history": history, "next": nxt,
                         "pain_reports": reports[-50:], "since_unix_s": since})


async def post_pain(request: Request) -> Response:
    acc, info = await _auth(request)
    runner = request.path_params["runner"]
    _need(acc, PERM_CONTROL, runner)
    if not acc.can_command(runner, "report_pain"):
        raise ApiError(403, "forbidden", f"role {info.user.role!r} may not report pain for {runner!r}")
    body = await _json_body(request)
    unknown = set(body) - {"pain_0_10", "when"}
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown fields {sorted(unknown)}")
    try:
        validate(body, COMMAND_ARGS["report_pain"], "$", "report_pain")
    except PayloadError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    pain, when = body["pain_0_10"], body["when"]
    st = _state(request)
    await _runner_known(st, runner)
    # durable first: the score is kept even if no edge runs or the broker is down
    rid = await run_in_threadpool(lambda: st.sessions.add_pain_report(runner, pain, when, author=info.user.name))
    forwarded, live_error = None, None
    try:
        request_id, _ = await _publish(st, runner, info.user.name, "report_pain", {"pain_0_10": pain, "when": when}, 0)
        forwarded = request_id
    except ApiError as exc:
        live_error = exc.message
    decision = plan = plan_error = None
    old, since, plan_stored = await _current_plan(st, runner)
    if when == "before" and old and old.get("program") and old.get("stage"):
        try:
            prog = resolve_program(old["program"], st.config.programs_dir)
        except ProgramError as exc:
            prog, plan_error = None, f"no decision: {exc}"
        if prog is not None:
            history, _ = await _program_history(st, runner)
            cur = min(int(old["stage"]), len(prog.stages))
            d = decide_next(prog, history, pain, current_stage=cur - 1, since_unix_s=since)
            decision = _decision_json(d, cur, pain)
            plan = plan_payload(runner, program=prog.name, stage=d.next_stage + 1, n_stages=len(prog.stages),
                                targets=old.get("targets"), limits=old.get("limits"), decision=decision,
                                set_by="progression")
            await run_in_threadpool(lambda: st.sessions.put_plan(runner, plan, since_unix_s=since))
            plan_error = await _publish_plan(st, runner, plan)
            log.info("progression %s: %s stage %d -> %d (%s)", runner, d.action, cur, d.next_stage + 1, d.reason)
    return JSONResponse({"stored": {"id": rid, "runner": runner, "pain_0_10": pain, "when": when,
                                    "author": info.user.name},
                         "forwarded_request_id": forwarded, "live_error": live_error, "decision": decision,
                         "plan": plan, "plan_error": plan_error})


# ------------------------------------------------------------------------------------------------ studies
def _study_json(acc: Access, study) -> dict | None:
    """What ``acc`` may see of ``study`` (None: nothing). Admin: everything incl. granted labs; lab: granted
    studies with every participant; runner: the studies it is enrolled in, with its own enrollment only."""
    if acc.is_admin:
        return study.to_dict()
    d = {"name": study.name, "title": study.title, "created_unix_s": study.created_unix_s}
    if acc.user.role == "lab" and acc.user.name in study.labs:
        return {**d, "participants": [p.to_dict() for p in study.participants]}
    if acc.user.role == "runner":
        own = [p.to_dict() for p in study.participants if p.runner == acc.user.name]
        return {**d, "participants": own} if own else None
    return None


def _store_error(exc: UserStoreError) -> ApiError:
    if isinstance(exc, UnknownStudyError):
        return _not_found("study", exc.study or "")
    if exc.code == "not_enrolled":
        return ApiError(404, "not_found", str(exc))
    return ApiError(409 if exc.code == "study_exists" else 422, exc.code, str(exc))


def _need_admin(acc: Access) -> None:
    if not acc.is_admin:
        raise ApiError(403, "forbidden", "admin only")


async def list_studies(request: Request) -> Response:
    acc, _ = await _auth(request)
    st = _state(request)
    studies = await run_in_threadpool(st.users.list_studies)
    return JSONResponse({"studies": [d for d in (_study_json(acc, s) for s in studies) if d is not None]})


async def get_study(request: Request) -> Response:
    acc, _ = await _auth(request)
    st = _state(request)
    name = request.path_params["study"]
    study = await run_in_threadpool(st.users.find_study, name)
    d = _study_json(acc, study) if study is not None else None
    if d is None:
        raise _not_found("study", name)
    limit = _int_param(request, "limit", 1000, 1, 10_000)
    shown = {q["runner"] for q in d["participants"]}
    windows = {p.runner: p for p in study.participants if p.runner in shown}
    sess = await run_in_threadpool(_visible_sessions, st, acc, sorted(windows), False, limit,
                                   lambda s: s.runner_id in windows and windows[s.runner_id].contains(
                                       s.started_unix_s))
    return JSONResponse({**d, "sessions": [jsonable(s) for s in sess]})


async def add_study(request: Request) -> Response:
    acc, info = await _auth(request)
    _need_admin(acc)
    body = await _json_body(request)
    name, title = body.get("name"), body.get("title", "")
    if not isinstance(name, str) or not isinstance(title, str):
        raise ApiError(422, "invalid_request", "name (string) is required; title must be a string")
    st = _state(request)
    try:
        study = await run_in_threadpool(st.users.add_study, name, title)
    except UserStoreError as exc:
        raise _store_error(exc) from None
    log.info("study %s added by %s", name, info.user.name)
    return JSONResponse(study.to_dict(), status_code=201)


async def enroll_participant(request: Request) -> Response:
    acc, info = await _auth(request)
    _need_admin(acc)
    body = await _json_body(request)
    runner = body.get("runner")
    t0, t1 = body.get("enrolled_from_unix_s"), body.get("enrolled_to_unix_s")
    if not isinstance(runner, str):
        raise ApiError(422, "invalid_request", "runner (string) is required")
    st = _state(request)
    name = request.path_params["study"]
    try:
        p = await run_in_threadpool(st.users.enroll, name, runner, t0, t1)
    except UserStoreError as exc:
        raise _store_error(exc) from None
    log.info("runner %s enrolled in study %s by %s", runner, name, info.user.name)
    return JSONResponse({"study": name, **p.to_dict()})


async def remove_participant(request: Request) -> Response:
    acc, info = await _auth(request)
    _need_admin(acc)
    st = _state(request)
    name, runner = request.path_params["study"], request.path_params["runner"]
    try:
        await run_in_threadpool(st.users.unenroll, name, runner)
    except UserStoreError as exc:
        raise _store_error(exc) from None
    return JSONResponse({"study": name, "runner": runner, "removed": True})


async def grant_study(request: Request) -> Response:
    acc, info = await _auth(request)
    _need_admin(acc)
    body = await _json_body(request)
    lab = body.get("lab")
    if not isinstance(lab, str):
        raise ApiError(422, "invalid_request", "lab (string) is required")
    st = _state(request)
    name = request.path_params["study"]
    try:
        await run_in_threadpool(st.users.grant_study, lab, name)
        study = await run_in_threadpool(st.users.get_study, name)
    except UserStoreError as exc:
        raise _store_error(exc) from None
    log.info("lab %s granted study %s by %s", lab, name, info.user.name)
    return JSONResponse({"study": name, "labs": list(study.labs)})


async def revoke_study(request: Request) -> Response:
    acc, info = await _auth(request)
    _need_admin(acc)
    st = _state(request)
    name, lab = request.path_params["study"], request.path_params["lab"]
    try:
        await run_in_threadpool(st.users.revoke_study, lab, name)
        study = await run_in_threadpool(st.users.get_study, name)
    except UserStoreError as exc:
        raise _store_error(exc) from None
    log.info("lab %s no longer granted study %s (by %s)", lab, name, info.user.name)
    return JSONResponse({"study": name, "labs": list(study.labs)})


# ------------------------------------------------------------------------------------------------ admin
async def list_users(request: Request) -> Response:
    acc, _ = await _auth(request)
    if not acc.is_admin:
        raise ApiError(403, "forbidden", "admin only")
    st = _state(request)

    def build():
        out = []
        for u in st.users.list_users():
            d = {"name": u.name, "role": u.role, "disabled": u.disabled, "mqtt": u.has_mqtt}
            if u.role == "therapist":
                d["runners"] = st.users.assigned_runners(u.name)
            elif u.role == "lab":
                d["studies"] = st.users.granted_studies(u.name)
                d["runners"] = st.users.granted_runners(u.name)  # participants of those studies
            out.append(d)
        return out
    return JSONResponse({"users": await run_in_threadpool(build)})


async def health(request: Request) -> Response:
    st = _state(request)
    return JSONResponse({"ok": True, "mqtt_connected": bool(st.hub and st.hub.connected)})


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


# ------------------------------------------------------------------------------------------------ live
def _origin_ok(ws: WebSocket, cfg: ApiConfig) -> bool:
    origin = ws.headers.get("origin")
    if origin is None:  # not a browser
        return True
    host = ws.headers.get("host", "")
    from urllib.parse import urlsplit
    o = urlsplit(origin)
    return o.netloc == host or origin in cfg.allowed_origins


async def live(ws: WebSocket) -> None:
    st: _AppState = ws.app.state.rf
    cfg = st.config
    try:
        acc, info = _authenticate(st, ws.headers, ws.cookies, "GET")
    except ApiError as exc:
        await ws.close(code=4401, reason=exc.code)
        return
    acc = acc.for_live()  # labs: only participants enrolled now (re-checked at every message)
    if _bearer(ws.headers) is None and not _origin_ok(ws, cfg):  # cookie auth: cross-site WebSocket hijacking
        await ws.close(code=4403, reason="origin not allowed")
        return
    if st.hub is None:
        await ws.close(code=1011, reason="no MQTT connection configured")
        return
    q = ws.query_params
    runners = frozenset(r for r in q.get("runners", "").split(",") if r) or None
    kinds = frozenset(k for k in q.get("kinds", "").split(",") if k) or DEFAULT_KINDS
    bad = kinds - set(LIVE_KINDS)
    if bad or (runners is not None and not all(acc.sees(r) for r in runners)):
        await ws.close(code=4403, reason="runner not visible" if not bad else "unknown kind")
        return
    await ws.accept()
    client = st.hub.register(acc, runners, kinds)
    visible = sorted(runners if runners is not None else (acc.filter(acc.runners) if acc.runners is not None
                                                           else st.users.runner_names()))
    await ws.send_json({"type": "hello", "user": info.user.name, "role": info.user.role, "runners": visible,
                        "kinds": sorted(kinds)})
    for r in visible:
        s = st.hub.status.get(r)
        if s is not None and "status" in kinds and client.wants(r, "status"):
            await ws.send_json({"type": "message", "kind": "status", "runner": r, "sensor": None, "issuer": None,
                                "topic": f"runform/v1/{r}/status", "payload": s})

    async def recheck():
        rev = st.users.revision
        while True:
            await asyncio.sleep(cfg.live_recheck_s)
            try:
                st.users.validate_token(_bearer(ws.headers) or ws.cookies.get(SESSION_COOKIE))
            except TokenError as exc:
                return exc.code
            r2 = st.users.revision
            if r2 != rev:
                rev = r2
                client.access = access_for(st.users, info.user).for_live()

    async def receiver():
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return "disconnect"

    async def sender():
        while True:
            await client.event.wait()
            client.event.clear()
            while client.queue:
                item = client.queue.popleft()
                if isinstance(item, bytes):
                    await ws.send_bytes(item)
                else:
                    await ws.send_text(item)
                client.sent += 1

    tasks = [asyncio.ensure_future(x()) for x in (recheck, receiver, sender)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is tasks[0] and not t.cancelled() and t.exception() is None:
                await ws.close(code=4401, reason=t.result())
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        for t in tasks:
            t.cancel()
        st.hub.unregister(client)


# ------------------------------------------------------------------------------------------------ table
@dataclass(frozen=True)
class ApiRoute:
    method: str  # "GET" | "POST" | "PUT" | "DELETE" | "WS"
    path: str
    endpoint: Callable[..., Awaitable]
    summary: str
    auth: bool = True
    params: tuple[tuple[str, str, str], ...] = ()  # (name, type, description) query parameters
    body: dict | None = None  # JSON schema of the request body
    responses: tuple[int, ...] = (200,)
    produces: str = "application/json"


_P = API_PREFIX
_T = ("t0_s", "number", "start of the time range, data clock seconds (inclusive)"), \
     ("t1_s", "number", "end of the time range (exclusive)")
_TBL = (("limit", "integer", "at most this many rows (default and maximum: max_rows)"),
        ("layout", "string", "'records' (default) or 'columns'"))
_NUMN = {"type": ["number", "null"]}

ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("POST", f"{_P}/auth/login", login, "Log in: a bearer token (mode=bearer) or a cookie session with "
             "a CSRF token (mode=cookie)", auth=False,
             body={"type": "object", "required": ["username", "password"], "properties": {
                 "username": {"type": "string"}, "password": {"type": "string"},
                 "mode": {"enum": ["bearer", "cookie"]}}}, responses=(200, 400, 401, 429)),
    ApiRoute("POST", f"{_P}/auth/logout", logout, "Revoke the presented token / cookie session"),
    ApiRoute("GET", f"{_P}/auth/me", me, "The logged-in user, its role and visible runners"),
    ApiRoute("GET", f"{_P}/runners", list_runners, "Runners the user may see"),
    ApiRoute("GET", f"{_P}/runners/{{runner}}", get_runner, "One runner with its coaching settings"),
    ApiRoute("GET", f"{_P}/runners/{{runner}}/sessions", runner_sessions, "Sessions of a runner, newest first",
             params=(("open_only", "boolean", "only sessions still recording"), ("limit", "integer", "max"))),
    ApiRoute("GET", f"{_P}/runners/{{runner}}/targets", get_targets,
             "Current targets/program (stored) and the edge's live status"),
    ApiRoute("PUT", f"{_P}/runners/{{runner}}/targets", put_targets,
             "Set targets/limits/program/stage (therapist, admin); sent to the edge as control commands and as "
             "the runner's retained plan (runform/v1/{runner}/plan)",
             body={"type": "object", "properties": {
                 "cadence_spm": _NUMN, "tolerance_spm": _NUMN, "impact_limit_g": _NUMN, "gct_limit_ms": _NUMN,
                 "imbalance_limit_pct": _NUMN, "program": {"type": ["string", "null"]},
                 "stage": {"type": ["integer", "null"], "minimum": 1, "description": "1-based"},
                 "publish": {"type": "boolean"}}}, responses=(200, 403, 404, 422)),
    ApiRoute("GET", f"{_P}/runners/{{runner}}/program", get_program,
             "Return-to-run program: the current plan (retained runform.plan.v1), the program session history "
             "(newest last, pain merged from reports) and a preview of the next decision", responses=(200, 404)),
    ApiRoute("POST", f"{_P}/runners/{{runner}}/pain", post_pain,
             "Report a pain score (runner itself, therapist, admin): stored, forwarded to the edge; 'before' runs "
             "the progression rules and publishes the new plan",
             body={"type": "object", "required": ["pain_0_10", "when"], "additionalProperties": False,
                   "properties": {"pain_0_10": {"type": "integer", "minimum": 0, "maximum": 10},
                                  "when": {"enum": ["before", "after"]}}}, responses=(200, 403, 404, 422)),
    ApiRoute("POST", f"{_P}/runners/{{runner}}/control", send_control,
             "Send a runform.control.v1 command to the runner's edge (as the logged-in user) and wait for "
             "the reply up to wait_s",
             body={"type": "object", "required": ["command"], "properties": {
                 "command": {"enum": sorted(COMMAND_ARGS)}, "args": {"type": "object"},
                 "wait_s": {"type": "number", "minimum": 0, "maximum": 10}}},
             responses=(200, 202, 403, 404, 422, 503)),
    ApiRoute("GET", f"{_P}/sessions", list_sessions, "Sessions of visible runners, newest first",
             params=(("runner", "string", "comma-separated runner ids"),
                     ("open_only", "boolean", "only sessions still recording"), ("limit", "integer", "max"))),
    ApiRoute("GET", f"{_P}/sessions/{{session_id}}", get_session, "One session"),
    ApiRoute("GET", f"{_P}/sessions/{{session_id}}/summary", session_summary, "Counts and headline figures"),
    ApiRoute("GET", f"{_P}/sessions/{{session_id}}/steps", session_steps, "Step events",
             params=(("sensor", "string", "one sensor"),) + _T + _TBL),
    ApiRoute("GET", f"{_P}/sessions/{{session_id}}/metrics", session_metrics, "Rolling metrics (1 Hz)",
             params=_T + _TBL),
    ApiRoute("GET", f"{_P}/sessions/{{session_id}}/cues", session_cues, "Cues sent", params=_T + _TBL),
    ApiRoute("GET", f"{_P}/sessions/{{session_id}}/raw/sensors", raw_sensors, "Raw data per sensor (runner, lab)"),
    ApiRoute("GET", f"{_P}/sessions/{{session_id}}/raw", session_raw,
             "Raw samples of a time range (runner, lab, admin); bounded to max_raw_samples",
             params=(("sensor_id", "string", "one sensor"),) + _T +
             (("format", "string", "'json' (default) or 'npz' (numpy, binary)"),),
             responses=(200, 400, 403, 404), produces="application/json, application/x-npz"),
    ApiRoute("GET", f"{_P}/sessions/{{session_id}}/notes", list_notes, "Annotations"),
    ApiRoute("POST", f"{_P}/sessions/{{session_id}}/notes", add_note, "Annotate (runner, therapist, admin)",
             body={"type": "object", "required": ["text"], "properties": {
                 "text": {"type": "string", "minLength": 1, "maxLength": 1000}, "time_s": _NUMN,
                 "kind": {"type": "string", "maxLength": 32}}}, responses=(201, 403, 404, 422)),
    ApiRoute("GET", f"{_P}/exports", list_exports, "Available export formats"),
    ApiRoute("GET", f"{_P}/sessions/{{session_id}}/export/{{fmt}}", export_session,
             "Download a session export (runner, lab, admin)", produces="application/octet-stream",
             responses=(200, 403, 404)),
    ApiRoute("GET", f"{_P}/users", list_users, "Users, roles, assignments and grants (admin)"),
    ApiRoute("GET", f"{_P}/studies", list_studies, "Studies the user may see (admin: all, with granted labs; lab: "
             "granted studies; runner: its own enrollments) with participants and enrollment windows"),
    ApiRoute("GET", f"{_P}/studies/{{study}}", get_study, "One study: participants with enrollment windows and "
             "the sessions that started inside them (as far as the user may see), newest first",
             params=(("limit", "integer", "max sessions (default 1000)"),), responses=(200, 404)),
    ApiRoute("POST", f"{_P}/studies", add_study, "Create a study (admin)",
             body={"type": "object", "required": ["name"], "properties": {
                 "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
                 "title": {"type": "string", "maxLength": 200}}}, responses=(201, 403, 409, 422)),
    ApiRoute("POST", f"{_P}/studies/{{study}}/participants", enroll_participant,
             "Enroll a runner for sessions started in [enrolled_from_unix_s, enrolled_to_unix_s) (admin; default "
             "from now, open-ended; enrolling again replaces the window)",
             body={"type": "object", "required": ["runner"], "properties": {
                 "runner": {"type": "string"}, "enrolled_from_unix_s": _NUMN, "enrolled_to_unix_s": _NUMN}},
             responses=(200, 403, 404, 422)),
    ApiRoute("DELETE", f"{_P}/studies/{{study}}/participants/{{runner}}", remove_participant,
             "Remove a participant and its whole window from a study (admin)", responses=(200, 403, 404, 422)),
    ApiRoute("POST", f"{_P}/studies/{{study}}/grants", grant_study, "Grant a lab user the study (admin)",
             body={"type": "object", "required": ["lab"], "properties": {"lab": {"type": "string"}}},
             responses=(200, 403, 404, 422)),
    ApiRoute("DELETE", f"{_P}/studies/{{study}}/grants/{{lab}}", revoke_study, "Revoke a lab's grant (admin)",
             responses=(200, 403, 404, 422)),
    ApiRoute("WS", f"{_P}/live", live, "WebSocket of live messages the user may see; query runners=a,b and "
             "kinds=steps,metrics,cues,status,reply,control,raw",
             params=(("runners", "string", "comma-separated runner ids"), ("kinds", "string", "message kinds"))),
    ApiRoute("GET", f"{_P}/openapi.json", openapi, "This document", auth=False),
    ApiRoute("GET", "/healthz", health, "Liveness", auth=False),
)


def openapi_document() -> dict:
    """OpenAPI 3.1 for :data:`ROUTES` (the WebSocket is described as a GET with ``x-websocket: true``)."""
    err = {"$ref": "#/components/schemas/Error"}
    paths: dict[str, dict] = {}
    for r in ROUTES:
        op: dict[str, Any] = {"summary": r.summary, "operationId": r.endpoint.__name__}
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in _path_params(r.path)]
        params += [{"name": n, "in": "query", "required": False, "description": d, "schema": {"type": t}}
                   for n, t, d in r.params]
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": r.body}}}
        responses: dict[str, Any] = {}
        for code in sorted(set(r.responses) | ({401, 429} if r.auth else {429})):
            if code < 300:
                ct = {t.strip(): {} for t in r.produces.split(",")}
                responses[str(code)] = {"description": "OK", "content": ct}
            else:
                responses[str(code)] = {"description": "error",
                                        "content": {"application/json": {"schema": err}}}
        responses["default"] = {"description": "error", "content": {"application/json": {"schema": err}}}
        op["responses"] = responses
        if r.auth:
            op["security"] = [{"bearer": []}, {"cookie": []}]
        if r.method == "WS":
            op["x-websocket"] = True
            op["responses"] = {"101": {"description": "WebSocket upgrade"}, "default": responses["default"]}
        paths.setdefault(r.path, {})["get" if r.method == "WS" else r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "runform API", "version": "1",
                 "description": "Runners, sessions, steps, metrics, raw data, notes, exports, live control. "
                                "Errors are {\"error\": {\"code\", \"message\"}}. See docs/api.md."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                           "description": f"browser session; state-changing requests need the {CSRF_HEADER} "
                                          "header (value from login or /auth/me)"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}},
    }


def _path_params(path: str) -> list[str]:
    import re
    return re.findall(r"{(\w+)}", path)


def _dashboards_dir(cfg: ApiConfig) -> Path | None:
    if cfg.dashboards_dir:
        return Path(cfg.dashboards_dir)
    try:
        return Path(str(resources.files("runform.dashboards"))) / "static"
    except (ModuleNotFoundError, TypeError):
        return None


class _SecurityHeaders:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        api = scope.get("path", "").startswith(API_PREFIX)
        https = scope.get("scheme") == "https"

        async def send2(msg):
            if msg["type"] == "http.response.start":
                h = list(msg.get("headers", []))
                names = {k.lower() for k, _ in h}
                extra = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                         (b"referrer-policy", b"no-referrer"),
                         (b"content-security-policy", b"default-src 'self'; connect-src 'self' ws: wss:; "
                                                      b"frame-ancestors 'none'")]
                if api and b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                if https:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                msg = {**msg, "headers": h + [e for e in extra if e[0] not in names]}
            await send(msg)
        return await self.app(scope, receive, send2)


def create_app(users: UserStore, sessions: Any, *, config: ApiConfig | None = None, hub: LiveHub | None = None,
               manage_hub: bool = True) -> Any:
    """The ASGI app. ``sessions`` is a ``runform.server.storage.SessionStore``; ``hub`` (optional) provides the
    live stream and control publishing (started/stopped with the app when ``manage_hub``)."""
    cfg = config or ApiConfig()
    routes: list = []
    for r in ROUTES:
        if r.method == "WS":
            routes.append(WebSocketRoute(r.path, r.endpoint))
        else:
            routes.append(Route(r.path, r.endpoint, methods=[r.method]))
    ddir = _dashboards_dir(cfg)
    if ddir is not None and ddir.is_dir():
        routes.append(Mount("/dashboards", StaticFiles(directory=str(ddir), html=True), name="dashboards"))
        routes.append(Route("/", lambda request: RedirectResponse("/dashboards/"), methods=["GET"]))

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        if hub is not None:  # the store holds every plan: after a broker restart they are retained again
            hub.on_connected.append(lambda: asyncio.ensure_future(_republish_plans(app.state.rf)))
        if hub is not None and manage_hub:
            await hub.start()
        try:
            yield
        finally:
            if hub is not None and manage_hub:
                await hub.stop()

    app = Starlette(routes=routes, exception_handlers=exception_handlers, lifespan=lifespan)
    app.state.rf = _AppState(users, sessions, cfg, hub,
                             TokenBucketLimiter(cfg.login_rate_per_s, cfg.login_burst))
    app.state.openapi = openapi_document()
    app.state.config = cfg
    wrapped = _SecurityHeaders(app)
    wrapped = BodyLimitMiddleware(wrapped, max_bytes=cfg.body_limit_bytes)
    wrapped = RateLimitMiddleware(wrapped, per_ip=TokenBucketLimiter(cfg.ip_rate_per_s, cfg.ip_rate_burst),
                                  per_credential=TokenBucketLimiter(cfg.rate_per_s, cfg.rate_burst),
                                  exempt_prefixes=("/dashboards/", "/healthz"))
    wrapped.state = app.state  # TestClient/uvicorn use the outer object; keep state reachable
    wrapped.starlette = app
    return wrapped
