"""``runform ingest | import-journal | export | sessions``: the storage side from the command line."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading


def _db_arg(p) -> None:
    p.add_argument("--db", default=None, metavar="PATH|URL",
                   help="session store: SQLite file or sqlite:///path (default $RUNFORM_DB or ./runform.db)")


def register(sub) -> None:
    p = sub.add_parser("ingest", help="store everything published under runform/v1/# (MQTT -> database)",
                       description="Subscribe to runform/v1/# with a persistent MQTT v5 session and store raw "
                                   "blocks, steps, metrics, cues, status and commands. Messages are acknowledged "
                                   "only after they are committed (fsynced), so a crash or a full disk loses "
                                   "nothing the broker handed over at QoS 1; redeliveries are de-duplicated.")
    _db_arg(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--user", default=os.environ.get("RUNFORM_MQTT_USER"), help="MQTT user (service role)")
    p.add_argument("--password", default=None, help="MQTT password (default $RUNFORM_MQTT_PASSWORD)")
    p.add_argument("--client-id", default="rf-ingest", help="fixed client id of the persistent session")
    p.add_argument("--batch", type=int, default=1000, help="messages per commit at most")
    p.add_argument("--batch-delay", type=float, default=0.1, metavar="S", help="commit at least this often")
    p.add_argument("--lsl", action="store_true", help="also publish committed raw samples and steps to LSL")
    p.add_argument("--stats-every", type=float, default=0.0, metavar="S", help="print counters every S seconds")
    p.set_defaults(func=_ingest)

    p = sub.add_parser("import-journal", help="import raw journals written by `runform record` / `runform run`",
                       description="Read every *.rfj under DIR (crash-safe raw journals), re-decode them with the "
                                   "sensor clock mapping and store one session per runner. Idempotent: importing "
                                   "again adds nothing.")
    p.add_argument("dir", help="directory (or one .rfj file)")
    _db_arg(p)
    p.add_argument("--runner", default=None, help="runner id (default: from the journal headers)")
    p.add_argument("--session-id", default=None)
    p.add_argument("--mass-kg", type=float, default=None)
    p.add_argument("--no-steps", action="store_true", help="do not run step detection on the samples")
    p.set_defaults(func=_import)

    p = sub.add_parser("export", help="export a stored session (csv, parquet, hdf5, bids, fit; lsl = stream it)",
                       description="Formats: csv (directory + session.json sidecar), parquet (directory), hdf5 "
                                   "(file), bids (Motion-BIDS dataset directory), fit (Garmin FIT activity), lsl "
                                   "(replay to Lab Streaming Layer in real time; --speed). See docs/exports.md.")
    p.add_argument("session", help="session id (`runform sessions` lists them)")
    _db_arg(p)
    p.add_argument("--format", "-f", required=True, choices=["csv", "parquet", "hdf5", "bids", "fit", "lsl"])
    p.add_argument("--out", "-o", default=None, help="output path (file or directory; not for lsl)")
    p.add_argument("--speed", type=float, default=1.0, help="lsl: replay speed factor")
    p.set_defaults(func=_export)

    p = sub.add_parser("sessions", help="list stored sessions (or show one with --id)")
    _db_arg(p)
    p.add_argument("--runner", action="append", default=None)
    p.add_argument("--id", default=None, help="print this session's summary")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_sessions)


def _open(args):
    from runform.server.storage import StorageError, open_store
    try:
        return open_store(args.db)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)


def _open_waiting(args, stop: threading.Event):
    """Open the store; while it is unavailable (read-only / full file system) report once and keep retrying:
    nothing is received (so nothing acknowledged) until the database can be written."""
    from runform.server.storage import StorageError, StorageUnavailableError, open_store
    said = False
    while not stop.is_set():
        try:
            store = open_store(args.db)
            if said:
                print("database writable again: starting ingest", file=sys.stderr, flush=True)
            return store
        except StorageUnavailableError as exc:
            if not said:
                print(f"error: {exc}\nwaiting for the database to become writable (retrying every 2 s); "
                      f"MQTT is not connected meanwhile, the broker keeps the messages", file=sys.stderr, flush=True)
                said = True
            stop.wait(2.0)
        except StorageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2)
    raise SystemExit(0)


def _ingest(args) -> int:
    from runform.server.ingest import Ingestor
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    store = _open_waiting(args, stop)
    listeners = []
    if args.lsl:
        from runform.server.exports import ExportError, LslForwarder
        try:
            listeners.append(LslForwarder())
        except ExportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    password = args.password if args.password is not None else os.environ.get("RUNFORM_MQTT_PASSWORD")
    ing = Ingestor(store, args.host, args.port, username=args.user, password=password, client_id=args.client_id,
                   batch_max_messages=args.batch, batch_max_delay_s=args.batch_delay, listeners=listeners)
    ing.start()
    print(f"ingesting runform/v1/# from {args.host}:{args.port} into {store.url}", flush=True)
    try:
        while not stop.wait(args.stats_every or 3600):
            if args.stats_every:
                print(json.dumps(ing.stats(), default=str), flush=True)
    finally:
        ing.stop()
        print(json.dumps(ing.stats(), default=str), flush=True)
        store.close()
    return 0


def _import(args) -> int:
    from runform.server.ingest import import_journal_dir
    from runform.server.storage import StorageError
    store = _open(args)
    try:
        res = import_journal_dir(store, args.dir, runner=args.runner, session_id=args.session_id,
                                 detect_steps=not args.no_steps, mass_kg=args.mass_kg)
    except (FileNotFoundError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    for r in res:
        s = r["summary"]
        print(f"{r['session_id']}: runner {r['runner']}, {len(r['files'])} journal(s), {r['samples_stored']} "
              f"samples stored ({r['samples_duplicate']} already there), {s['steps']} steps, "
              f"{s['data_duration_s']:.1f} s")
    return 0


def _export(args) -> int:
    from runform.server.exports import ExportError, export_session, replay_session
    store = _open(args)
    try:
        if args.format == "lsl":
            print(f"streaming {args.session} to LSL at {args.speed}x (Ctrl-C stops)", flush=True)
            res = replay_session(store, args.session, speed=args.speed)
            print(json.dumps(res))
            return 0
        if not args.out:
            print("error: --out is required for file formats", file=sys.stderr)
            return 2
        files = export_session(store, args.session, args.format, args.out)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    for f in files:
        print(f)
    return 0


def _sessions(args) -> int:
    store = _open(args)
    try:
        if args.id:
            s = store.get_session(args.id)
            if s is None:
                print(f"error: no session {args.id!r}", file=sys.stderr)
                return 2
            print(json.dumps({"session": s.to_dict(), "summary": store.session_summary(args.id)}, indent=1,
                             default=str))
            return 0
        rows = store.list_sessions(args.runner)
        if args.json:
            print(json.dumps([s.to_dict() for s in rows], indent=1, default=str))
            return 0
        for s in rows:
            print(f"{s.id}\t{s.runner_id}\t{'open' if s.is_open else 'ended'}\t{','.join(s.sites)}\t{s.source or ''}")
    finally:
        store.close()
    return 0
