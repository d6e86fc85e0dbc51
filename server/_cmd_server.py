"""``runform server`` (ingest + HTTP/WebSocket API in one process) and ``runform user ...`` (user administration).

Passwords are never taken from the command line (visible in ``ps`` and shell history): they are prompted for
(twice, no echo) or read as one line from stdin with ``--password-stdin``.
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

log = logging.getLogger("runform.server")

USERS_ENV = "RUNFORM_USERS"
DEFAULT_USERS = "runform-users.db"
SERVER_MQTT_USER = "runform-server"


def _users_path(args) -> str:
    return args.users or os.environ.get(USERS_ENV, DEFAULT_USERS)


def _read_password(args, prompt: str = "Password") -> str:
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline()
        if not line:
            raise SystemExit("error: --password-stdin: nothing on stdin")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise SystemExit("error: no terminal to prompt for a password; use --password-stdin")
    p1 = getpass.getpass(f"{prompt}: ")
    p2 = getpass.getpass(f"{prompt} (again): ")
    if p1 != p2:
        raise SystemExit("error: the passwords differ")
    return p1


def parse_time_unix_s(text: str) -> float:
    """``--from``/``--to`` of ``runform user study enroll``: unix seconds (``1714521600``) or ISO 8601
    (``2024-05-01``, ``2024-05-01T08:00:00+02:00``, ``...Z``; without a UTC offset the time is taken as UTC)."""
    import datetime as dt
    import math
    t = text.strip()
    try:
        v = float(t)
    except ValueError:
        try:
            d = dt.datetime.fromisoformat(t)
        except ValueError:
            raise ValueError(f"time {text!r} is neither unix seconds nor ISO 8601 (e.g. 2024-05-01 or "
                             "2024-05-01T08:00:00Z)") from None
        if d.tzinfo is None:
            d = d.replace(tzinfo=dt.timezone.utc)
        return d.timestamp()
    if not math.isfinite(v):
        raise ValueError(f"time {text!r} is not finite")
    return v


def _fmt_time(t: float | None) -> str:
    import datetime as dt
    if t is None:
        return "open"
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cmd_study(store, args) -> None:
    a = args.study_action
    if a == "add":
        st = store.add_study(args.name, args.title or "")
        print(f"study {st.name} added" + (f" ({st.title})" if st.title else ""))
    elif a == "title":
        store.set_study_title(args.name, args.title)
        print(f"study {args.name}: title changed")
    elif a == "enroll":
        t0 = parse_time_unix_s(args.from_) if args.from_ is not None else None
        t1 = parse_time_unix_s(args.to) if args.to is not None else None
        p = store.enroll(args.name, args.runner, t0, t1)
        print(f"{p.runner} enrolled in study {p.study}: sessions started in [{_fmt_time(p.enrolled_from_unix_s)}, "
              f"{_fmt_time(p.enrolled_to_unix_s)})")
    elif a == "unenroll":
        store.unenroll(args.name, args.runner)
        print(f"{args.runner} removed from study {args.name}")
    elif a == "delete":
        store.delete_study(args.name)
        print(f"study {args.name} deleted (sessions are kept)")
    elif a == "list":
        studies = store.list_studies()
        for st in studies:
            print(f"{st.name}" + (f"  {st.title}" if st.title else "") + f"  labs: {','.join(st.labs) or '-'}")
            for p in st.participants:
                print(f"    {p.runner:<24} {_fmt_time(p.enrolled_from_unix_s)} .. {_fmt_time(p.enrolled_to_unix_s)}")
        if not studies:
            print("no studies")


def _open_users(args):
    from runform.server.auth import open_user_store
    return open_user_store(_users_path(args))


def _cmd_user(args) -> int:
    from runform.server.auth import ROLES, AuthError
    store = _open_users(args)
    try:
        a = args.user_action
        if a == "add":
            pw = None if args.no_password else _read_password(args)
            u = store.add_user(args.name, args.role, pw, mqtt=not args.no_mqtt)
            print(f"added {u.name} (role {u.role}{', MQTT access' if u.has_mqtt else ''})")
        elif a == "passwd":
            store.set_password(args.name, _read_password(args, f"New password for {args.name}"),
                               mqtt=not args.no_mqtt)
            print(f"password of {args.name} changed; its tokens were revoked")
        elif a == "assign":
            store.assign(args.therapist, args.runner)
            print(f"{args.runner} assigned to therapist {args.therapist}")
        elif a == "unassign":
            store.unassign(args.therapist, args.runner)
            print(f"{args.runner} no longer assigned to {args.therapist}")
        elif a == "grant":
            store.grant_study(args.lab, args.study)
            print(f"lab {args.lab} granted study {args.study}")
        elif a == "revoke":
            store.revoke_study(args.lab, args.study)
            print(f"lab {args.lab} no longer granted study {args.study}")
        elif a == "study":
            _cmd_study(store, args)
        elif a in ("disable", "enable"):
            store.set_disabled(args.name, a == "disable")
            print(f"{args.name} {a}d")
        elif a == "delete":
            store.delete_user(args.name)
            print(f"{args.name} deleted")
        elif a == "list":
            print(f"{'name':<24} {'role':<10} {'mqtt':<5} {'state':<9} runners (therapist) / studies (lab, runner)")
            for u in store.list_users(args.role):
                rel = (store.assigned_runners(u.name) if u.role == "therapist"
                       else store.granted_studies(u.name) if u.role == "lab"
                       else store.runner_studies(u.name) if u.role == "runner" else [])
                print(f"{u.name:<24} {u.role:<10} {'yes' if u.has_mqtt else 'no':<5} "
                      f"{'disabled' if u.disabled else 'active':<9} {','.join(rel)}")
        else:
            raise SystemExit(f"unknown action {a!r}; roles are {ROLES}")
    except (AuthError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _start_ingest(store, settings):
    """Start the MQTT -> storage ingestor (returns an object with ``stop()``, or None when it cannot start)."""
    for mod, name in (("runform.server.ingest", "Ingestor"),):
        try:
            m = __import__(mod, fromlist=[name])
            cls = getattr(m, name)
        except (ImportError, AttributeError):
            continue
        try:
            ing = cls(store, settings)
            (getattr(ing, "start", None) or (lambda: None))()
            log.info("ingest: %s.%s storing runform/v1/# into the session store", mod, name)
            return ing
        except TypeError as exc:
            log.warning("ingestor %s.%s has an unexpected signature (%s); ingest disabled", mod, name, exc)
            return None
    log.warning("no ingestor in this build (runform.server.ingest.Ingestor): the API serves stored data only")
    return None


def _cmd_server(args) -> int:
    import uvicorn

    from runform.server.api import ApiConfig, LiveHub, create_app
    from runform.server.auth import ROLE_SERVICE, StoreMosquittoBroker, UnknownUserError
    from runform.server.mqtt import MqttSettings
    from runform.server.storage import open_store

    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    users = _open_users(args)
    sessions = open_store(args.db)
    broker = None
    settings = None
    if args.broker == "managed":
        # the server's own MQTT account: random password per start, only its hash is stored
        pw = secrets.token_urlsafe(24)
        try:
            users.get_user(SERVER_MQTT_USER)
            users.set_password(SERVER_MQTT_USER, pw)
        except UnknownUserError:
            users.add_user(SERVER_MQTT_USER, ROLE_SERVICE, pw)
        workdir = Path(args.broker_dir or (Path(_users_path(args)).resolve().parent / "mosquitto"))
        broker = StoreMosquittoBroker(workdir, users, port=args.mqtt_port or None, websockets=args.mqtt_websockets,
                                      persistence=True).start()
        broker.sync_helper(interval_s=1.0).start()  # user changes (also from `runform user`) -> SIGHUP
        settings = MqttSettings(host="127.0.0.1", port=broker.port, username=SERVER_MQTT_USER, password=pw)
        print(f"mosquitto on 127.0.0.1:{broker.port}" + (f" (websockets {broker.ws_port})" if broker.ws_port else "")
              + f", users and ACL from {_users_path(args)}", flush=True)
    elif args.broker == "external":
        pw = Path(args.mqtt_password_file).read_text().strip() if args.mqtt_password_file else None
        settings = MqttSettings(host=args.mqtt_host, port=args.mqtt_port or 1883, username=args.mqtt_user,
                                password=pw)
    hub = LiveHub(settings) if settings is not None else None
    ingest = _start_ingest(sessions, settings) if settings is not None else None
    cfg = ApiConfig(body_limit_bytes=args.max_body_bytes, rate_per_s=args.rate_per_s, rate_burst=args.rate_burst)
    app = create_app(users, sessions, config=cfg, hub=hub)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.ssl_certfile:
        log.warning("listening on %s without TLS: passwords and tokens travel in clear text", args.host)
    def _on_sigterm(signum, frame):  # uvicorn re-raises SIGTERM after its shutdown: stop our parts too
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        uvicorn.run(app, host=args.host, port=args.port, ssl_certfile=args.ssl_certfile,
                    ssl_keyfile=args.ssl_keyfile, log_level=args.log_level, proxy_headers=False)
    except SystemExit:
        pass
    finally:
        log.info("stopping: ingest, broker, stores")
        if ingest is not None and hasattr(ingest, "stop"):
            ingest.stop()
        if broker is not None:
            broker.stop()
        sessions.close()
        users.close()
    return 0


def register(subparsers) -> None:
    # ---- runform user
    u = subparsers.add_parser("user", help="manage users, roles, therapist assignments, studies and lab grants",
                              description="Users live in a SQLite file (--users, $RUNFORM_USERS, default "
                                          f"{DEFAULT_USERS}). A running server picks changes up within ~1 s "
                                          "(Mosquitto is reloaded).")
    u.add_argument("--users", help=f"user store file (default ${USERS_ENV} or {DEFAULT_USERS})")
    us = u.add_subparsers(dest="user_action", metavar="ACTION", required=True)
    p = us.add_parser("add", help="add a user")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=("runner", "therapist", "lab", "admin", "service"))
    p.add_argument("--password-stdin", action="store_true", help="read the password as one line from stdin")
    p.add_argument("--no-password", action="store_true", help="no password yet (cannot log in until passwd)")
    p.add_argument("--no-mqtt", action="store_true", help="no MQTT broker access for this user")
    p = us.add_parser("passwd", help="change a password (revokes the user's tokens)")
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("--no-mqtt", action="store_true")
    for action, help_ in (("assign", "let a therapist coach a runner"), ("unassign", "remove an assignment")):
        p = us.add_parser(action, help=help_)
        p.add_argument("therapist")
        p.add_argument("runner")
    for action, help_ in (("grant", "let a lab read a study's sessions (raw, exports)"),
                          ("revoke", "remove a lab's grant of a study")):
        p = us.add_parser(action, help=help_)
        p.add_argument("lab")
        p.add_argument("--study", required=True, help="study name (runform user study add)")
    p = us.add_parser("study", help="studies: add, enroll runners with time windows, list",
                      description="A lab granted a study sees the sessions of its participants that started "
                                  "inside their enrollment window [--from, --to).")
    ss = p.add_subparsers(dest="study_action", metavar="STUDY_ACTION", required=True)
    q = ss.add_parser("add", help="add a study")
    q.add_argument("name")
    q.add_argument("--title", default="")
    q = ss.add_parser("title", help="change a study's title")
    q.add_argument("name")
    q.add_argument("title")
    q = ss.add_parser("enroll", help="enroll a runner (again: replaces the window)")
    q.add_argument("name")
    q.add_argument("runner")
    q.add_argument("--from", dest="from_", metavar="TIME",
                   help="window start: unix seconds or ISO 8601, UTC unless an offset is given (default now)")
    q.add_argument("--to", metavar="TIME", help="window end, exclusive (default: open-ended)")
    q = ss.add_parser("unenroll", help="remove a runner and its window from a study")
    q.add_argument("name")
    q.add_argument("runner")
    q = ss.add_parser("delete", help="delete a study (its enrollments and grants; sessions are kept)")
    q.add_argument("name")
    ss.add_parser("list", help="studies with participants, windows and granted labs")
    for action in ("disable", "enable", "delete"):
        p = us.add_parser(action, help=f"{action} a user")
        p.add_argument("name")
    p = us.add_parser("list", help="list users")
    p.add_argument("--role")
    u.set_defaults(func=_cmd_user)

    # ---- runform server
    s = subparsers.add_parser("server", help="storage ingest + HTTP/WebSocket API (+ managed Mosquitto)",
                              description="Serves the API on 127.0.0.1 by default. TLS: --ssl-certfile/--ssl-keyfile.")
    s.add_argument("--users", help=f"user store file (default ${USERS_ENV} or {DEFAULT_USERS})")
    s.add_argument("--db", help="session store (path or sqlite:///...; default $RUNFORM_DB or runform.db)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--ssl-certfile")
    s.add_argument("--ssl-keyfile")
    s.add_argument("--broker", choices=("managed", "external", "none"), default="managed",
                   help="managed: start Mosquitto with users/ACL from the user store (default); external: "
                        "connect to --mqtt-host/--mqtt-port as --mqtt-user; none: no live data/control")
    s.add_argument("--broker-dir", help="managed broker's work directory (default: beside the user store)")
    s.add_argument("--mqtt-host", default="127.0.0.1")
    s.add_argument("--mqtt-port", type=int)
    s.add_argument("--mqtt-websockets", action="store_true", help="managed broker: also a websockets listener")
    s.add_argument("--mqtt-user", default=SERVER_MQTT_USER)
    s.add_argument("--mqtt-password-file", help="external broker: file holding the MQTT password")
    s.add_argument("--max-body-bytes", type=int, default=1 << 20)
    s.add_argument("--rate-per-s", type=float, default=20.0)
    s.add_argument("--rate-burst", type=float, default=60.0)
    s.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    s.set_defaults(func=_cmd_server)
