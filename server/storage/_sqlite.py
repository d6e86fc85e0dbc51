"""SQLite backend of :class:`SessionStore` (WAL journal, ``synchronous=FULL``).

Durability: every public write is one ``BEGIN IMMEDIATE ... COMMIT``; with ``synchronous=FULL`` the WAL is
fsynced at each commit, so a write that returned survives a process kill *and* a power cut. (``NORMAL`` in WAL
mode is crash-safe for a process kill but may lose the last commits on power loss; a lab logger must not.) The
ingestor amortises the fsync by committing many MQTT messages per transaction (:meth:`transaction`).

Concurrency: one writer connection guarded by a lock; readers get one connection per thread (WAL lets them read
while the writer writes, also from other processes, e.g. the HTTP API while ``runform ingest`` runs).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import sqlite3
import threading
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from runform.dsp import ACTIVITY_NAMES, ACTIVITY_UNKNOWN, SIDE_LEFT, SIDE_RIGHT, SIDE_UNKNOWN, STEP_DTYPE

from . import _chunks
from ._base import (CUE_DTYPE, METRIC_FIELDS, METRICS_DTYPE, NotFoundError, Runner, SensorInfo, Session,
                    SessionStore, StorageCorruptError, StorageError, StorageFullError, StorageReadOnlyError,
                    StorageUnavailableError)

SCHEMA_VERSION = 1
#: Blocks merged into one chunk row at most (a chunk is decoded whole when read).
MAX_CHUNK_SAMPLES = 32768
_ACTIVITY_CODES = {v: k for k, v in ACTIVITY_NAMES.items()}
_STEP_COLS = STEP_DTYPE.names
_INT_STEP = {n for n in _STEP_COLS if STEP_DTYPE[n].kind in "iub"}

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runners (
    id TEXT PRIMARY KEY, display_name TEXT NOT NULL, mass_kg REAL, created_unix_s REAL NOT NULL,
    meta_json TEXT NOT NULL DEFAULT '{{}}');
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, runner_id TEXT NOT NULL REFERENCES runners(id), started_unix_s REAL NOT NULL,
    ended_unix_s REAL, clock_monotonic_s REAL, clock_utc_unix_s REAL, clock_source TEXT, mass_kg REAL,
    program TEXT, notes TEXT, source TEXT, meta_json TEXT NOT NULL DEFAULT '{{}}');
CREATE INDEX IF NOT EXISTS sessions_by_runner ON sessions(runner_id, started_unix_s);
CREATE TABLE IF NOT EXISTS session_sensors (
    session_id TEXT NOT NULL REFERENCES sessions(id), sensor_id TEXT NOT NULL, site TEXT NOT NULL,
    sampling_rate_hz REAL, tick_hz REAL, meta_json TEXT NOT NULL DEFAULT '{{}}',
    PRIMARY KEY (session_id, sensor_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS raw_chunks (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions(id), sensor_id TEXT NOT NULL,
    site TEXT NOT NULL, t0_s REAL NOT NULL, t1_s REAL NOT NULL, n_samples INTEGER NOT NULL,
    n_blocks INTEGER NOT NULL, raw_bytes INTEGER NOT NULL, codec TEXT NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS raw_chunks_by_time ON raw_chunks(session_id, sensor_id, t0_s);
CREATE TABLE IF NOT EXISTS raw_blocks (
    session_id TEXT NOT NULL, sensor_id TEXT NOT NULL, key_seq INTEGER NOT NULL, key_tick INTEGER NOT NULL,
    key_ns INTEGER NOT NULL, chunk_id INTEGER NOT NULL,
    PRIMARY KEY (session_id, sensor_id, key_seq, key_tick, key_ns)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS steps (
    session_id TEXT NOT NULL REFERENCES sessions(id), sensor_id TEXT NOT NULL, site TEXT NOT NULL,
    {", ".join(f"{n} {'INTEGER' if n in _INT_STEP else 'REAL'}" for n in _STEP_COLS)},
    PRIMARY KEY (session_id, sensor_id, ic_s)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metrics (
    session_id TEXT NOT NULL REFERENCES sessions(id), time_s REAL NOT NULL, time_unix_s REAL,
    activity INTEGER, {", ".join(f"{f} REAL" for f in METRIC_FIELDS)}, steps_in_window INTEGER,
    steps_total INTEGER, paused INTEGER, interval_json TEXT, extra_json TEXT,
    PRIMARY KEY (session_id, time_s)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cues (
    session_id TEXT NOT NULL REFERENCES sessions(id), time_s REAL NOT NULL, code TEXT NOT NULL,
    cue_id INTEGER, time_unix_s REAL, kind TEXT, text TEXT, bpm REAL, priority INTEGER, ttl_s REAL,
    expires_unix_s REAL, trigger_arrival_ns INTEGER,
    PRIMARY KEY (session_id, time_s, code)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sensor_stats (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions(id), sensor_id TEXT NOT NULL,
    time_unix_s REAL NOT NULL, stats_json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sensor_stats_by_session ON sensor_stats(session_id, sensor_id);
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions(id), time_s REAL,
    created_unix_s REAL NOT NULL, kind TEXT NOT NULL, author TEXT, text TEXT NOT NULL,
    meta_json TEXT NOT NULL DEFAULT '{{}}', dedup_key TEXT);
CREATE INDEX IF NOT EXISTS notes_by_session ON notes(session_id, time_s);
CREATE UNIQUE INDEX IF NOT EXISTS notes_dedup ON notes(session_id, dedup_key) WHERE dedup_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS program_sessions (
    runner_id TEXT NOT NULL, session_key TEXT NOT NULL, program TEXT NOT NULL, stage INTEGER NOT NULL,
    pain_before INTEGER, pain_after INTEGER, completed_fraction REAL, run_time_s REAL, planned_run_time_s REAL,
    run_steps INTEGER, impact_sum_g REAL, start_unix_s REAL, end_unix_s REAL, final INTEGER NOT NULL DEFAULT 0,
    updated_unix_s REAL NOT NULL,
    PRIMARY KEY (runner_id, session_key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS program_sessions_by_start ON program_sessions(runner_id, start_unix_s);
CREATE TABLE IF NOT EXISTS pain_reports (
    id INTEGER PRIMARY KEY, runner_id TEXT NOT NULL, time_unix_s REAL NOT NULL, pain_0_10 INTEGER NOT NULL,
    when_reported TEXT NOT NULL, author TEXT, session_key TEXT);
CREATE INDEX IF NOT EXISTS pain_reports_by_runner ON pain_reports(runner_id, time_unix_s);
CREATE TABLE IF NOT EXISTS program_plans (
    runner_id TEXT PRIMARY KEY, plan_json TEXT NOT NULL, since_unix_s REAL, updated_unix_s REAL NOT NULL);
"""
# Tables added after schema version 1 (program_sessions, pain_reports, program_plans) are additive: the
# CREATE ... IF NOT EXISTS above runs at every open, which migrates an existing database in place.

_PROGRAM_COLS = ("runner_id", "session_key", "program", "stage", "pain_before", "pain_after", "completed_fraction",
                 "run_time_s", "planned_run_time_s", "run_steps", "impact_sum_g", "start_unix_s", "end_unix_s",
                 "final", "updated_unix_s")


def _i64(v: int) -> int:
    v = int(v) & 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >= (1 << 63) else v


def _f(v) -> float | None:
    """Python float for SQLite (NaN/None -> NULL)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _nan(v) -> float:
    return math.nan if v is None else float(v)


def _host_clock() -> tuple[float, float]:
    m1 = time.monotonic()
    u = time.time()
    m2 = time.monotonic()
    return 0.5 * (m1 + m2), u


def _range_sql(col: str, t0_s, t1_s, args: list) -> str:
    sql = ""
    if t0_s is not None:
        sql += f" AND {col} >= ?"
        args.append(float(t0_s))
    if t1_s is not None:
        sql += f" AND {col} < ?"
        args.append(float(t1_s))
    return sql


class SqliteStore(SessionStore):
    """:class:`SessionStore` in one SQLite file (``open_store("path.db")`` or ``"sqlite:///abs/path.db"``).

    Parameters
    ----------
    path : str | os.PathLike
        Database file (created with the schema if missing).
    synchronous : "FULL" | "NORMAL"
        SQLite ``synchronous`` in WAL mode (default FULL: commits survive power loss).
    busy_timeout_ms : int
        How long a write waits for another process's write lock before ``StorageUnavailableError``.
    max_page_count : int | None
        Optional size limit (pages of 4 kB): writes beyond raise ``StorageFullError`` like a full disk.
    """

    def __init__(self, path, *, synchronous: str = "FULL", busy_timeout_ms: int = 10000,
                 max_page_count: int | None = None) -> None:
        self.path = os.fspath(path)
        self.url = "sqlite:///" + os.path.abspath(self.path)
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = int(busy_timeout_ms)
        self.max_page_count = max_page_count
        self._wlock = threading.RLock()
        self._depth = 0
        self._owner: int | None = None
        self._wconn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._rlock = threading.Lock()
        self._closed = False
        d = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(d):
            raise StorageError(f"directory {d} does not exist", path=self.path)
        with self._wlock:
            conn = self._writer()
            try:
                with self._tx():
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            conn.execute(stmt)
                    conn.execute("INSERT OR IGNORE INTO store_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            except sqlite3.DatabaseError as exc:
                raise self._map(exc, "creating the schema") from None
            v = conn.execute("SELECT value FROM store_meta WHERE key='schema_version'").fetchone()
            if v is None or int(v[0]) != SCHEMA_VERSION:
                raise StorageError(f"{self.path}: schema version {v and v[0]}, this runform needs {SCHEMA_VERSION}",
                                   path=self.path)

    # ------------------------------------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=self.busy_timeout_ms / 1000)
            conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"{self.path}: could not switch to WAL mode (got {mode})", path=self.path)
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            if self.max_page_count:
                conn.execute(f"PRAGMA max_page_count={int(self.max_page_count)}")
            return conn
        except sqlite3.DatabaseError as exc:
            raise self._map(exc, "opening") from None

    def _writer(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError(f"store {self.path} is closed", path=self.path)
        if self._wconn is None:
            self._wconn = self._connect()
        return self._wconn

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError(f"store {self.path} is closed", path=self.path)
        if self._depth and self._owner == threading.get_ident():
            return self._wconn  # inside our own transaction: see its uncommitted rows
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._rlock:
                self._readers.append(conn)
        return conn

    def _map(self, exc: sqlite3.DatabaseError, what: str) -> StorageError:
        name = getattr(exc, "sqlite_errorname", "") or ""
        msg = f"{self.path}: {what} failed: {exc} ({name or 'sqlite error'})"
        if name.startswith("SQLITE_FULL") or "disk is full" in str(exc):
            return StorageFullError(msg + "; nothing of this write was stored, earlier data is intact",
                                    path=self.path)
        if name.startswith("SQLITE_READONLY") or "readonly" in str(exc):
            return StorageReadOnlyError(msg + "; the database or its file system is read-only", path=self.path)
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
            return StorageCorruptError(msg, path=self.path)
        if name.startswith(("SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_PROTOCOL")) \
                or isinstance(exc, sqlite3.OperationalError):
            d = os.path.dirname(os.path.abspath(self.path))
            if not os.access(d, os.W_OK):
                return StorageReadOnlyError(msg + "; the directory is not writable", path=self.path)
            try:
                st = os.statvfs(d)
                if st.f_bavail * st.f_frsize < 64 * 1024:
                    return StorageFullError(msg + "; the disk is full", path=self.path)
            except OSError:
                pass
            return StorageUnavailableError(msg, path=self.path)
        return StorageError(msg, path=self.path)

    def _drop_writer(self) -> None:
        """After an I/O failure, reopen the writer on the next write (SQLite may have left it unusable)."""
        conn, self._wconn = self._wconn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def _tx(self):
        """Writer transaction (re-entrant); commits at the outermost exit."""
        with self._wlock:
            conn = self._writer()
            outer = self._depth == 0
            if outer:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.DatabaseError as exc:
                    err = self._map(exc, "starting a transaction")
                    self._drop_writer()
                    raise err from None
                self._owner = threading.get_ident()
            self._depth += 1
            try:
                yield conn
            except BaseException as exc:
                self._depth -= 1
                if outer:
                    self._owner = None
                    if isinstance(exc, sqlite3.DatabaseError):
                        err = self._map(exc, "writing")
                        self._drop_writer()  # rolls back; reopened on the next write
                        raise err from None
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.DatabaseError:
                        self._drop_writer()
                raise
            self._depth -= 1
            if outer:
                self._owner = None
                try:
                    conn.execute("COMMIT")
                except sqlite3.DatabaseError as exc:
                    err = self._map(exc, "committing")
                    self._drop_writer()
                    raise err from None

    def transaction(self):
        return self._tx()

    def _w(self, what: str):
        return self._tx()

    def close(self) -> None:
        if self._closed:
            return
        with self._wlock:
            self._closed = True
            if self._wconn is not None:
                with contextlib.suppress(Exception):
                    self._wconn.close()
                self._wconn = None
        with self._rlock:
            for c in self._readers:
                with contextlib.suppress(Exception):
                    c.close()
            self._readers.clear()

    def integrity_check(self) -> list[str]:
        conn = self._connect()
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            return [f"integrity_check failed: {exc}"]
        finally:
            conn.close()
        return [] if rows == ["ok"] else rows

    def _q(self, sql: str, args=()) -> list[tuple]:
        try:
            return self._reader().execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._map(exc, "reading") from None

    def _need_session(self, conn, session_id: str) -> None:
        if conn.execute("SELECT 1 FROM sessions WHERE id=?", (session_id,)).fetchone() is None:
            raise NotFoundError(f"no session {session_id!r} in {self.path}", what="session", key=session_id,
                                path=self.path)

    # ------------------------------------------------------------------------------------------ runners
    def create_runner(self, runner_id, display_name=None, mass_kg=None, meta=None, *, exist_ok=False) -> Runner:
        if not isinstance(runner_id, str) or not runner_id:
            raise ValueError(f"runner_id must be a non-empty string, got {runner_id!r}")
        with self._tx() as conn:
            row = conn.execute("SELECT display_name, mass_kg, meta_json FROM runners WHERE id=?",
                               (runner_id,)).fetchone()
            if row is not None:
                if not exist_ok:
                    raise StorageError(f"runner {runner_id!r} exists", path=self.path)
                m = json.loads(row[2])
                m.update(meta or {})
                conn.execute("UPDATE runners SET display_name=?, mass_kg=?, meta_json=? WHERE id=?",
                             (display_name if display_name is not None else row[0],
                              _f(mass_kg) if mass_kg is not None else row[1], json.dumps(m), runner_id))
            else:
                conn.execute("INSERT INTO runners VALUES (?,?,?,?,?)",
                             (runner_id, display_name or runner_id, _f(mass_kg), time.time(),
                              json.dumps(dict(meta or {}))))
            return self._runner_row(conn.execute("SELECT * FROM runners WHERE id=?", (runner_id,)).fetchone())

    @staticmethod
    def _runner_row(r) -> Runner:
        return Runner(r[0], r[1], r[2], r[3], json.loads(r[4]))

    def get_runner(self, runner_id):
        rows = self._q("SELECT * FROM runners WHERE id=?", (runner_id,))
        return self._runner_row(rows[0]) if rows else None

    def list_runners(self):
        return [self._runner_row(r) for r in self._q("SELECT * FROM runners ORDER BY id")]

    # ------------------------------------------------------------------------------------------ sessions
    def create_session(self, runner_id, meta=None) -> str:
        meta = dict(meta or {})
        started = float(meta.pop("started_unix_s", None) or time.time())
        sid = meta.pop("id", None) or (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started)) + f"-{runner_id}-"
                                       + secrets.token_hex(3))
        clock = meta.pop("clock", None)
        if clock is None:
            mono, utc = _host_clock()
            clock = {"monotonic_s": mono, "utc_unix_s": utc, "source": "storage host clock at session creation"}
        sensors = meta.pop("sensors", None) or []
        cols = {k: meta.pop(k, None) for k in ("mass_kg", "program", "notes", "source")}
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM sessions WHERE id=?", (sid,)).fetchone():
                return sid
            r = conn.execute("SELECT mass_kg FROM runners WHERE id=?", (runner_id,)).fetchone()
            if r is None:
                self.create_runner(runner_id, mass_kg=cols["mass_kg"])
            mass = cols["mass_kg"] if cols["mass_kg"] is not None else (r[0] if r else None)
            conn.execute("INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                         (sid, runner_id, started, None, _f(clock.get("monotonic_s")), _f(clock.get("utc_unix_s")),
                          clock.get("source"), _f(mass), cols["program"], cols["notes"], cols["source"],
                          json.dumps(meta, default=str)))
            for s in sensors:
                s = dict(s)
                self.add_sensor(sid, s.pop("sensor_id"), s.pop("site", ""), s.pop("sampling_rate_hz", None),
                                s.pop("tick_hz", None), s)
        return sid

    def end_session(self, session_id, ended_unix_s=None) -> None:
        with self._tx() as conn:
            self._need_session(conn, session_id)
            conn.execute("UPDATE sessions SET ended_unix_s=? WHERE id=?",
                         (float(ended_unix_s if ended_unix_s is not None else time.time()), session_id))

    def update_session(self, session_id, **fields) -> None:
        with self._tx() as conn:
            self._need_session(conn, session_id)
            for k in ("notes", "program", "mass_kg", "source", "started_unix_s", "ended_unix_s"):
                if k in fields:
                    conn.execute(f"UPDATE sessions SET {k}=? WHERE id=?", (fields.pop(k), session_id))
            if "clock" in fields:
                c = fields.pop("clock")
                conn.execute("UPDATE sessions SET clock_monotonic_s=?, clock_utc_unix_s=?, clock_source=? "
                             "WHERE id=?", (_f(c.get("monotonic_s")), _f(c.get("utc_unix_s")), c.get("source"),
                                            session_id))
            if "meta" in fields:
                m = json.loads(conn.execute("SELECT meta_json FROM sessions WHERE id=?",
                                            (session_id,)).fetchone()[0])
                m.update(fields.pop("meta"))
                conn.execute("UPDATE sessions SET meta_json=? WHERE id=?", (json.dumps(m, default=str), session_id))
            if fields:
                raise ValueError(f"unknown session fields {sorted(fields)}")

    def add_sensor(self, session_id, sensor_id, site, sampling_rate_hz=None, tick_hz=None, meta=None) -> None:
        with self._tx() as conn:
            self._need_session(conn, session_id)
            row = conn.execute("SELECT site, sampling_rate_hz, tick_hz, meta_json FROM session_sensors WHERE "
                               "session_id=? AND sensor_id=?", (session_id, sensor_id)).fetchone()
            if row is None:
                conn.execute("INSERT INTO session_sensors VALUES (?,?,?,?,?,?)",
                             (session_id, sensor_id, site or "", _f(sampling_rate_hz), _f(tick_hz),
                              json.dumps(dict(meta or {}), default=str)))
            else:
                m = json.loads(row[3])
                m.update(meta or {})
                conn.execute("UPDATE session_sensors SET site=?, sampling_rate_hz=?, tick_hz=?, meta_json=? "
                             "WHERE session_id=? AND sensor_id=?",
                             (site or row[0], _f(sampling_rate_hz) if sampling_rate_hz is not None else row[1],
                              _f(tick_hz) if tick_hz is not None else row[2], json.dumps(m, default=str),
                              session_id, sensor_id))

    def _session_row(self, r, sensors) -> Session:
        return Session(id=r[0], runner_id=r[1], started_unix_s=r[2], ended_unix_s=r[3], clock_monotonic_s=r[4],
                       clock_utc_unix_s=r[5], clock_source=r[6], mass_kg=r[7], program=r[8], notes=r[9],
                       source=r[10], meta=json.loads(r[11]), sensors=tuple(sensors))

    def _sensors_of(self, ids: list[str]) -> dict[str, list[SensorInfo]]:
        out: dict[str, list[SensorInfo]] = {i: [] for i in ids}
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            for r in self._q(f"SELECT session_id, sensor_id, site, sampling_rate_hz, tick_hz, meta_json FROM "
                             f"session_sensors WHERE session_id IN ({','.join('?' * len(part))}) "
                             f"ORDER BY sensor_id", part):
                out[r[0]].append(SensorInfo(r[1], r[2], r[3], r[4], json.loads(r[5])))
        return out

    def get_session(self, session_id):
        rows = self._q("SELECT * FROM sessions WHERE id=?", (session_id,))
        if not rows:
            return None
        return self._session_row(rows[0], self._sensors_of([session_id])[session_id])

    def list_sessions(self, runner_ids=None, *, open_only=False, limit=None):
        args: list = []
        sql = "SELECT * FROM sessions WHERE 1=1"
        if runner_ids is not None:
            runner_ids = list(runner_ids)
            if not runner_ids:
                return []
            sql += f" AND runner_id IN ({','.join('?' * len(runner_ids))})"
            args += runner_ids
        if open_only:
            sql += " AND ended_unix_s IS NULL"
        sql += " ORDER BY started_unix_s DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        rows = self._q(sql, args)
        sens = self._sensors_of([r[0] for r in rows])
        return [self._session_row(r, sens[r[0]]) for r in rows]

    def delete_session(self, session_id) -> None:
        with self._tx() as conn:
            self._need_session(conn, session_id)
            for t in ("raw_blocks", "raw_chunks", "steps", "metrics", "cues", "sensor_stats", "notes",
                      "session_sensors"):
                conn.execute(f"DELETE FROM {t} WHERE session_id=?", (session_id,))
            conn.execute("DELETE FROM sessions WHERE id=?", (session_id,))

    # ------------------------------------------------------------------------------------------ raw
    def append_raw(self, session_id, sensor_id, site, time_s, acc_ms2, gyr_dps=None, ticks=None, arrival_ns=None,
                   *, clipped=None, seq=None, first_tick=None, sampling_rate_hz=None, tick_hz=None, key=None) -> int:
        t = np.asarray(time_s, np.float64).reshape(-1)
        n = t.shape[0]
        acc = np.asarray(acc_ms2, np.float64)
        if acc.shape != (n, 3):
            raise ValueError(f"acc_ms2 must have shape ({n}, 3), got {acc.shape}")
        if gyr_dps is not None and np.shape(gyr_dps) != (n, 3):
            raise ValueError(f"gyr_dps must have shape ({n}, 3), got {np.shape(gyr_dps)}")
        if ticks is not None and np.shape(ticks) != (n,):
            raise ValueError(f"ticks must have shape ({n},), got {np.shape(ticks)}")
        if n == 0:
            return 0
        arr = -1 if arrival_ns is None else int(np.asarray(arrival_ns).reshape(-1)[0])
        ft = first_tick if first_tick is not None else (int(ticks[0]) if ticks is not None else -1)
        if key is None:
            key = (int(seq), int(ft), arr) if seq is not None else (-1, int(ft), int(t[:1].view(np.int64)[0]))
        block = {"sensor_id": sensor_id, "site": site, "seq": -1 if seq is None else seq, "first_tick": ft,
                 "arrival_ns": arr, "time_s": t, "acc_ms2": acc, "gyr_dps": gyr_dps, "clipped": clipped,
                 "sensor_tick": ticks, "sampling_rate_hz": sampling_rate_hz, "tick_hz": tick_hz, "_key": key}
        return self.append_raw_blocks(session_id, [block])

    @staticmethod
    def _get(b, name, default=None):
        return b.get(name, default) if isinstance(b, Mapping) else getattr(b, name, default)

    def append_raw_blocks(self, session_id, blocks) -> int:
        if not blocks:
            return 0
        g = self._get
        by_sensor: dict[str, list[dict]] = {}
        for b in blocks:
            t = np.asarray(g(b, "time_s"), np.float64).reshape(-1)
            if t.size == 0:
                continue
            key = g(b, "_key")
            if key is None:
                key = (g(b, "seq", -1), g(b, "first_tick", -1), g(b, "arrival_ns", -1))
            key = tuple(_i64(k) for k in key)
            d = {"sensor_id": str(g(b, "sensor_id")), "site": str(g(b, "site", "") or ""), "time_s": t,
                 "acc_ms2": g(b, "acc_ms2"), "gyr_dps": g(b, "gyr_dps"), "clipped": g(b, "clipped"),
                 "sensor_tick": g(b, "sensor_tick"), "seq": _i64(g(b, "seq", -1)),
                 "first_tick": _i64(g(b, "first_tick", -1)), "arrival_ns": _i64(g(b, "arrival_ns", -1)),
                 "sampling_rate_hz": g(b, "sampling_rate_hz"), "tick_hz": g(b, "tick_hz"), "_key": key}
            by_sensor.setdefault(d["sensor_id"], []).append(d)
        stored = 0
        with self._tx() as conn:
            self._need_session(conn, session_id)
            for sensor_id, bl in by_sensor.items():
                seen: set = set()
                new = []
                for d in bl:
                    k = d["_key"]
                    if k in seen or conn.execute(
                            "SELECT 1 FROM raw_blocks WHERE session_id=? AND sensor_id=? AND key_seq=? AND "
                            "key_tick=? AND key_ns=?", (session_id, sensor_id) + k).fetchone():
                        continue
                    seen.add(k)
                    new.append(d)
                if not new:
                    continue
                known = conn.execute("SELECT site, sampling_rate_hz, tick_hz FROM session_sensors WHERE "
                                     "session_id=? AND sensor_id=?", (session_id, sensor_id)).fetchone()
                fs, th = new[0]["sampling_rate_hz"], new[0]["tick_hz"]
                if known is None or (not known[0] and new[0]["site"]) or (known[1] is None and fs is not None) \
                        or (known[2] is None and th is not None and math.isfinite(float(th))):
                    self.add_sensor(session_id, sensor_id, new[0]["site"], fs,
                                    th if th is not None and math.isfinite(float(th)) else None)
                new.sort(key=lambda d: float(d["time_s"][0]))
                # one chunk per at most MAX_CHUNK_SAMPLES samples
                i = 0
                while i < len(new):
                    j, n = i, 0
                    while j < len(new) and (j == i or n + len(new[j]["time_s"]) <= MAX_CHUNK_SAMPLES):
                        n += len(new[j]["time_s"])
                        j += 1
                    part = new[i:j]
                    blob, n, raw_bytes = _chunks.encode_chunk(part)
                    t0 = min(float(np.min(d["time_s"])) for d in part)
                    t1 = max(float(np.max(d["time_s"])) for d in part)
                    cur = conn.execute("INSERT INTO raw_chunks (session_id, sensor_id, site, t0_s, t1_s, n_samples, "
                                       "n_blocks, raw_bytes, codec, data) VALUES (?,?,?,?,?,?,?,?,?,?)",
                                       (session_id, sensor_id, part[0]["site"], t0, t1, n, len(part), raw_bytes,
                                        _chunks.CODEC, blob))
                    cid = cur.lastrowid
                    conn.executemany("INSERT INTO raw_blocks VALUES (?,?,?,?,?,?)",
                                     [(session_id, sensor_id) + d["_key"] + (cid,) for d in part])
                    stored += n
                    i = j
        return stored

    def read_raw(self, session_id, sensor_id=None, t0_s=None, t1_s=None) -> dict[str, Any]:
        args: list = [session_id]
        sql = "SELECT sensor_id, site, data FROM raw_chunks WHERE session_id=?"
        if sensor_id is not None:
            sql += " AND sensor_id=?"
            args.append(sensor_id)
        if t0_s is not None:
            sql += " AND t1_s >= ?"
            args.append(float(t0_s))
        if t1_s is not None:
            sql += " AND t0_s < ?"
            args.append(float(t1_s))
        sql += " ORDER BY sensor_id, t0_s, id"
        rows = self._q(sql, args)
        if not rows and self.get_session(session_id) is None:
            raise NotFoundError(f"no session {session_id!r} in {self.path}", what="session", key=session_id,
                                path=self.path)
        parts = []
        for sid, site, blob in rows:
            try:
                c = _chunks.decode_chunk(blob)
            except _chunks.ChunkError as exc:
                raise StorageCorruptError(f"{self.path}: raw chunk of {session_id}/{sid}: {exc}",
                                          path=self.path) from None
            c["sensor_id"], c["site"] = sid, site
            parts.append(c)
        return _assemble(parts, t0_s, t1_s)

    def raw_sensors(self, session_id) -> list[dict]:
        rows = self._q("SELECT sensor_id, MIN(site), SUM(n_samples), MIN(t0_s), MAX(t1_s), COUNT(*), "
                       "SUM(length(data)), SUM(raw_bytes) FROM raw_chunks WHERE session_id=? GROUP BY sensor_id "
                       "ORDER BY sensor_id", (session_id,))
        return [{"sensor_id": r[0], "site": r[1], "n_samples": int(r[2]), "t0_s": r[3], "t1_s": r[4],
                 "n_chunks": int(r[5]), "stored_bytes": int(r[6]), "uncompressed_bytes": int(r[7])} for r in rows]

    def iter_raw_chunks(self, session_id, sensor_id=None):
        """Per sensor, pieces of at most ~MAX_CHUNK_SAMPLES*8 samples (bounded memory), time-ordered."""
        for s in self.raw_sensors(session_id):
            if sensor_id is not None and s["sensor_id"] != sensor_id:
                continue
            bounds = self._q("SELECT t0_s FROM raw_chunks WHERE session_id=? AND sensor_id=? ORDER BY t0_s",
                             (session_id, s["sensor_id"]))
            edges = [b[0] for b in bounds[::8]] + [math.inf]
            for a, b in zip(edges[:-1], edges[1:]):
                piece = self.read_raw(session_id, s["sensor_id"], a, None if math.isinf(b) else b)
                if len(piece["time_s"]):
                    yield piece

    # ------------------------------------------------------------------------------------------ steps
    def append_steps(self, session_id, sensor, steps, *, site=None) -> int:
        arr = _steps_array(steps)
        if len(arr) == 0:
            return 0
        cols = [arr[n].tolist() for n in _STEP_COLS]
        for k, n in enumerate(_STEP_COLS):
            if n not in _INT_STEP:
                cols[k] = [_f(v) for v in cols[k]]
            else:
                cols[k] = [int(v) for v in cols[k]]
        with self._tx() as conn:
            self._need_session(conn, session_id)
            if site is None:
                r = conn.execute("SELECT site FROM session_sensors WHERE session_id=? AND sensor_id=?",
                                 (session_id, sensor)).fetchone()
                site = r[0] if r else ""
            elif conn.execute("SELECT 1 FROM session_sensors WHERE session_id=? AND sensor_id=?",
                              (session_id, sensor)).fetchone() is None:
                self.add_sensor(session_id, sensor, site)
            before = conn.total_changes
            conn.executemany(f"INSERT OR IGNORE INTO steps VALUES ({','.join('?' * (3 + len(_STEP_COLS)))})",
                             [(session_id, sensor, site) + row for row in zip(*cols)])
            return conn.total_changes - before

    def read_steps(self, session_id, sensor=None, t0_s=None, t1_s=None) -> np.ndarray:
        args: list = [session_id]
        sql = f"SELECT sensor_id, site, {', '.join(_STEP_COLS)} FROM steps WHERE session_id=?"
        if sensor is not None:
            sql += " AND sensor_id=?"
            args.append(sensor)
        sql += _range_sql("ic_s", t0_s, t1_s, args) + " ORDER BY ic_s, sensor_id"
        rows = self._q(sql, args)
        out = np.zeros(len(rows), dtype=STEPS_READ_DTYPE)
        if rows:
            cols = list(zip(*rows))
            out["sensor"] = cols[0]
            out["site"] = cols[1]
            for k, n in enumerate(_STEP_COLS):
                out[n] = np.array(cols[2 + k], dtype=np.float64 if n not in _INT_STEP else np.int64)
        return out

    # ------------------------------------------------------------------------------------------ metrics
    def append_metrics(self, session_id, metrics) -> int:
        if isinstance(metrics, np.ndarray):
            items = [{n: (v.item() if hasattr(v, "item") else v) for n, v in zip(metrics.dtype.names, row)}
                     for row in metrics]
        elif isinstance(metrics, Mapping):
            items = [metrics]
        else:
            items = list(metrics)
        rows = []
        known = {"schema", "runner", "time_s", "time_unix_s", "activity", "steps_in_window", "steps_total",
                 "paused", "interval", *METRIC_FIELDS}
        for m in items:
            act = m.get("activity")
            act = _ACTIVITY_CODES.get(act, ACTIVITY_UNKNOWN) if isinstance(act, str) else \
                (ACTIVITY_UNKNOWN if act is None else int(act))
            extra = {k: v for k, v in m.items() if k not in known}
            rows.append((session_id, float(m["time_s"]), _f(m.get("time_unix_s")), act,
                         *[_f(m.get(f)) for f in METRIC_FIELDS],
                         None if m.get("steps_in_window") is None else int(m["steps_in_window"]),
                         None if m.get("steps_total") is None else int(m["steps_total"]),
                         int(bool(m.get("paused", False))),
                         json.dumps(m["interval"]) if m.get("interval") is not None else None,
                         json.dumps(extra, default=str) if extra else None))
        if not rows:
            return 0
        with self._tx() as conn:
            self._need_session(conn, session_id)
            before = conn.total_changes
            conn.executemany(f"INSERT OR IGNORE INTO metrics VALUES ({','.join('?' * len(rows[0]))})", rows)
            return conn.total_changes - before

    def read_metrics(self, session_id, t0_s=None, t1_s=None) -> np.ndarray:
        args: list = [session_id]
        names = METRICS_DTYPE.names
        sql = f"SELECT {', '.join(names)} FROM metrics WHERE session_id=?" + _range_sql("time_s", t0_s, t1_s, args)
        rows = self._q(sql + " ORDER BY time_s", args)
        out = np.zeros(len(rows), METRICS_DTYPE)
        if rows:
            for k, (n, col) in enumerate(zip(names, zip(*rows))):
                kind = METRICS_DTYPE[n].kind
                if kind == "f":
                    out[n] = np.array(col, np.float64)
                else:
                    out[n] = [(-1 if n == "activity" else 0) if v is None else v for v in col]
        return out

    def read_metrics_intervals(self, session_id) -> list[tuple[float, dict | None]]:
        return [(r[0], json.loads(r[1]) if r[1] else None)
                for r in self._q("SELECT time_s, interval_json FROM metrics WHERE session_id=? ORDER BY time_s",
                                 (session_id,))]

    # ------------------------------------------------------------------------------------------ cues
    def append_cue(self, session_id, cue, *, cue_id: int | None = None) -> int:
        g = self._get
        row = (session_id, float(g(cue, "time_s")), str(g(cue, "code")),
               cue_id if cue_id is not None else g(cue, "cue_id"), _f(g(cue, "time_unix_s")), g(cue, "kind"),
               g(cue, "text"), _f(g(cue, "bpm")), int(g(cue, "priority", 1) or 0), _f(g(cue, "ttl_s")),
               _f(g(cue, "expires_unix_s")), g(cue, "trigger_arrival_ns"))
        with self._tx() as conn:
            self._need_session(conn, session_id)
            before = conn.total_changes
            conn.execute("INSERT OR IGNORE INTO cues VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row)
            return conn.total_changes - before

    def read_cues(self, session_id, t0_s=None, t1_s=None) -> np.ndarray:
        args: list = [session_id]
        sql = ("SELECT cue_id, time_s, time_unix_s, kind, code, text, bpm, priority, ttl_s, trigger_arrival_ns "
               "FROM cues WHERE session_id=?" + _range_sql("time_s", t0_s, t1_s, args) + " ORDER BY time_s, code")
        rows = self._q(sql, args)
        out = np.zeros(len(rows), CUE_DTYPE)
        for i, r in enumerate(rows):
            out[i] = (-1 if r[0] is None else r[0], r[1], _nan(r[2]), r[3] or "", r[4], r[5] or "", _nan(r[6]),
                      r[7] or 0, _nan(r[8]), -1 if r[9] is None else r[9])
        return out

    # ------------------------------------------------------------------------------------------ stats, notes
    def append_sensor_stats(self, session_id, sensor_id, stats, time_unix_s=None) -> None:
        with self._tx() as conn:
            self._need_session(conn, session_id)
            conn.execute("INSERT INTO sensor_stats (session_id, sensor_id, time_unix_s, stats_json) VALUES (?,?,?,?)",
                         (session_id, sensor_id, float(time_unix_s or time.time()),
                          json.dumps(dict(stats), default=str)))

    def read_sensor_stats(self, session_id, sensor_id=None) -> list[dict]:
        args: list = [session_id]
        sql = "SELECT sensor_id, time_unix_s, stats_json FROM sensor_stats WHERE session_id=?"
        if sensor_id is not None:
            sql += " AND sensor_id=?"
            args.append(sensor_id)
        return [{"sensor_id": r[0], "time_unix_s": r[1], **json.loads(r[2])}
                for r in self._q(sql + " ORDER BY id", args)]

    def add_note(self, session_id, text, *, time_s=None, author=None, kind="note", meta=None, key=None) -> int:
        with self._tx() as conn:
            self._need_session(conn, session_id)
            if key is not None:
                r = conn.execute("SELECT id FROM notes WHERE session_id=? AND dedup_key=?",
                                 (session_id, str(key))).fetchone()
                if r is not None:
                    return int(r[0])
            cur = conn.execute("INSERT INTO notes (session_id, time_s, created_unix_s, kind, author, text, meta_json, "
                               "dedup_key) VALUES (?,?,?,?,?,?,?,?)",
                               (session_id, _f(time_s), time.time(), str(kind), author, str(text),
                                json.dumps(dict(meta or {}), default=str), None if key is None else str(key)))
            return int(cur.lastrowid)

    def read_notes(self, session_id) -> list[dict]:
        return [{"id": r[0], "time_s": r[1], "created_unix_s": r[2], "kind": r[3], "author": r[4], "text": r[5],
                 "meta": json.loads(r[6])}
                for r in self._q("SELECT id, time_s, created_unix_s, kind, author, text, meta_json FROM notes "
                                 "WHERE session_id=? ORDER BY COALESCE(time_s, -1e300), id", (session_id,))]

    # ------------------------------------------------------------------------------------------ programs
    @staticmethod
    def _program_row(r) -> dict:
        d = dict(zip(_PROGRAM_COLS, r))
        d["runner"] = d.pop("runner_id")
        d["final"] = bool(d["final"])
        return d

    def upsert_program_session(self, record) -> dict:
        rec = dict(record)
        for k in ("runner", "session_key", "program", "stage"):
            if rec.get(k) is None:
                raise ValueError(f"program session record needs {k!r}")
        for k in ("pain_before", "pain_after"):
            v = rec.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 10):
                raise ValueError(f"{k} must be an integer 0..10 or null, got {v!r}")
        key = (str(rec["runner"]), str(rec["session_key"]))
        with self._tx() as conn:
            old = conn.execute(f"SELECT {', '.join(_PROGRAM_COLS)} FROM program_sessions "
                               "WHERE runner_id=? AND session_key=?", key).fetchone()
            new = {"runner_id": key[0], "session_key": key[1], "program": str(rec["program"]),
                   "stage": int(rec["stage"]), "pain_before": rec.get("pain_before"),
                   "pain_after": rec.get("pain_after"), "completed_fraction": _f(rec.get("completed_fraction")),
                   "run_time_s": _f(rec.get("run_time_s")), "planned_run_time_s": _f(rec.get("planned_run_time_s")),
                   "run_steps": None if rec.get("run_steps") is None else int(rec["run_steps"]),
                   "impact_sum_g": _f(rec.get("impact_sum_g")), "start_unix_s": _f(rec.get("start_unix_s")),
                   "end_unix_s": _f(rec.get("end_unix_s")), "final": int(bool(rec.get("final"))),
                   "updated_unix_s": time.time()}
            if old is not None:
                od = dict(zip(_PROGRAM_COLS, old))
                if (new["end_unix_s"] or -math.inf) < (od["end_unix_s"] or -math.inf):
                    # an older update (redelivered): only what it adds (a pain, final) counts
                    new = {**od, "pain_before": od["pain_before"] if od["pain_before"] is not None
                           else new["pain_before"], "pain_after": od["pain_after"] if od["pain_after"] is not None
                           else new["pain_after"], "final": int(bool(od["final"]) or bool(new["final"])),
                           "updated_unix_s": new["updated_unix_s"]}
                else:
                    for k in ("pain_before", "pain_after"):
                        if new[k] is None:
                            new[k] = od[k]
                    new["final"] = int(bool(od["final"]) or bool(new["final"]))
            conn.execute(f"INSERT OR REPLACE INTO program_sessions ({', '.join(_PROGRAM_COLS)}) VALUES "
                         f"({', '.join('?' * len(_PROGRAM_COLS))})", tuple(new[c] for c in _PROGRAM_COLS))
        return self._program_row(tuple(new[c] for c in _PROGRAM_COLS))

    def list_program_sessions(self, runner_id, *, program=None, limit=None) -> list[dict]:
        sql = f"SELECT {', '.join(_PROGRAM_COLS)} FROM program_sessions WHERE runner_id=?"
        args: list = [runner_id]
        if program is not None:
            sql += " AND program=?"
            args.append(program)
        sql += " ORDER BY COALESCE(start_unix_s, 0) DESC, session_key DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [self._program_row(r) for r in reversed(self._q(sql, tuple(args)))]

    def add_pain_report(self, runner_id, pain_0_10, when, *, author=None, time_unix_s=None, session_key=None) -> int:
        if not isinstance(pain_0_10, int) or isinstance(pain_0_10, bool) or not 0 <= pain_0_10 <= 10:
            raise ValueError(f"pain_0_10 must be an integer 0..10, got {pain_0_10!r}")
        if when not in ("before", "after"):
            raise ValueError(f"when must be 'before' or 'after', got {when!r}")
        with self._tx() as conn:
            cur = conn.execute("INSERT INTO pain_reports (runner_id, time_unix_s, pain_0_10, when_reported, author, "
                               "session_key) VALUES (?,?,?,?,?,?)",
                               (runner_id, time.time() if time_unix_s is None else float(time_unix_s), pain_0_10,
                                when, author, session_key))
            return int(cur.lastrowid)

    def list_pain_reports(self, runner_id, *, since_unix_s=None, limit=None) -> list[dict]:
        sql = ("SELECT id, runner_id, pain_0_10, when_reported, time_unix_s, author, session_key FROM pain_reports "
               "WHERE runner_id=?")
        args: list = [runner_id]
        if since_unix_s is not None:
            sql += " AND time_unix_s >= ?"
            args.append(float(since_unix_s))
        sql += " ORDER BY time_unix_s DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [{"id": r[0], "runner": r[1], "pain_0_10": r[2], "when": r[3], "time_unix_s": r[4], "author": r[5],
                 "session_key": r[6]} for r in reversed(self._q(sql, tuple(args)))]

    def put_plan(self, runner_id, plan, *, since_unix_s=None) -> None:
        with self._tx() as conn:
            if since_unix_s is None:
                r = conn.execute("SELECT since_unix_s FROM program_plans WHERE runner_id=?", (runner_id,)).fetchone()
                since_unix_s = r[0] if r is not None else None
            conn.execute("INSERT OR REPLACE INTO program_plans VALUES (?,?,?,?)",
                         (runner_id, json.dumps(dict(plan), sort_keys=True), _f(since_unix_s), time.time()))

    def get_plan(self, runner_id) -> dict | None:
        rows = self._q("SELECT plan_json, since_unix_s, updated_unix_s FROM program_plans WHERE runner_id=?",
                       (runner_id,))
        if not rows:
            return None
        return {"plan": json.loads(rows[0][0]), "since_unix_s": rows[0][1], "updated_unix_s": rows[0][2]}

    def list_plans(self) -> list[dict]:
        return [{"runner": r[0], "plan": json.loads(r[1]), "since_unix_s": r[2], "updated_unix_s": r[3]}
                for r in self._q("SELECT runner_id, plan_json, since_unix_s, updated_unix_s FROM program_plans "
                                 "ORDER BY runner_id")]

    # ------------------------------------------------------------------------------------------ summary
    def session_summary(self, session_id) -> dict:
        s = self.get_session(session_id)
        if s is None:
            raise NotFoundError(f"no session {session_id!r} in {self.path}", what="session", key=session_id,
                                path=self.path)
        raw = self.raw_sensors(session_id)
        steps = self.read_steps(session_id)
        n_metrics = self._q("SELECT COUNT(*) FROM metrics WHERE session_id=?", (session_id,))[0][0]
        n_cues = self._q("SELECT COUNT(*) FROM cues WHERE session_id=?", (session_id,))[0][0]
        n_notes = self._q("SELECT COUNT(*) FROM notes WHERE session_id=?", (session_id,))[0][0]
        t0 = [r["t0_s"] for r in raw] + ([float(steps["ic_s"].min())] if len(steps) else [])
        t1 = [r["t1_s"] for r in raw] + ([float(steps["ic_s"].max())] if len(steps) else [])
        data_s = (max(t1) - min(t0)) if t0 else 0.0

        def nanmean(x):
            x = x[np.isfinite(x)]
            return float(x.mean()) if x.size else None

        running = steps[steps["activity"] == 2] if len(steps) else steps
        cad = running["cadence_spm"][np.isfinite(running["cadence_spm"])] if len(running) else np.zeros(0)
        stored = sum(r["stored_bytes"] for r in raw)
        unc = sum(r["uncompressed_bytes"] for r in raw)
        return {
            "session_id": s.id, "runner_id": s.runner_id, "started_unix_s": s.started_unix_s,
            "ended_unix_s": s.ended_unix_s, "open": s.is_open, "data_duration_s": data_s,
            "data_t0_s": min(t0) if t0 else None, "data_t1_s": max(t1) if t1 else None,
            "sensors": [{"sensor_id": x.sensor_id, "site": x.site, "sampling_rate_hz": x.sampling_rate_hz,
                         **next(({k: r[k] for k in ("n_samples", "t0_s", "t1_s", "n_chunks")} for r in raw
                                 if r["sensor_id"] == x.sensor_id), {"n_samples": 0})} for x in s.sensors],
            "raw_samples": int(sum(r["n_samples"] for r in raw)), "raw_stored_bytes": stored,
            "raw_compression_ratio": (unc / stored) if stored else None,
            "steps": int(len(steps)), "running_steps": int(len(running)),
            "cadence_median_spm": float(np.median(cad)) if cad.size else None,
            "gct_left_mean_ms": nanmean(running["gct_ms"][running["side"] == SIDE_LEFT]) if len(running) else None,
            "gct_right_mean_ms": nanmean(running["gct_ms"][running["side"] == SIDE_RIGHT]) if len(running) else None,
            "peak_accel_mean_g": nanmean(running["peak_accel_g"]) if len(running) else None,
            "metrics_rows": int(n_metrics), "cues": int(n_cues), "notes": int(n_notes),
        }


STEPS_READ_DTYPE = np.dtype(STEP_DTYPE.descr + [("sensor", "U64"), ("site", "U32")])


def _steps_array(steps) -> np.ndarray:
    """STEP_DTYPE array from a structured array or from dicts (MQTT steps payload rows)."""
    if isinstance(steps, np.ndarray) and steps.dtype.names:
        out = np.zeros(len(steps), STEP_DTYPE)
        from runform.dsp import empty_steps
        out[:] = empty_steps(len(steps))
        out["ic_index"] = np.nan
        out["tc_index"] = np.nan
        out["emitted_index"] = -1
        for n in STEP_DTYPE.names:
            if n in steps.dtype.names:
                out[n] = steps[n]
        return out
    from runform.dsp import empty_steps
    rows = list(steps)
    out = empty_steps(len(rows))
    out["ic_index"] = np.nan
    out["tc_index"] = np.nan
    out["emitted_index"] = -1
    for i, r in enumerate(rows):
        for n in STEP_DTYPE.names:
            if n not in r or r[n] is None:
                continue
            v = r[n]
            if n == "side" and isinstance(v, str):
                v = {"L": SIDE_LEFT, "R": SIDE_RIGHT}.get(v, SIDE_UNKNOWN)
            elif n == "activity" and isinstance(v, str):
                v = _ACTIVITY_CODES.get(v, ACTIVITY_UNKNOWN)
            out[n][i] = v
    return out


def _assemble(parts: list[dict], t0_s, t1_s) -> dict[str, Any]:
    if not parts:
        return {"time_s": np.zeros(0), "acc_ms2": np.zeros((0, 3)), "gyr_dps": None, "clipped": np.zeros(0, bool),
                "sensor_tick": np.zeros(0, np.int64), "arrival_ns": np.zeros(0, np.int64),
                "seq": np.zeros(0, np.int64), "first_tick": np.zeros(0, np.int64),
                "sensor_id": np.zeros(0, "U1"), "site": np.zeros(0, "U1")}
    has_gyr = any(p["gyr_dps"] is not None for p in parts)
    for p in parts:
        if has_gyr and p["gyr_dps"] is None:
            p["gyr_dps"] = np.full((len(p["time_s"]), 3), np.nan)
    counts = [len(p["time_s"]) for p in parts]
    out: dict[str, Any] = {}
    for k in ("time_s", "acc_ms2", "clipped", "sensor_tick", "arrival_ns", "seq", "first_tick"):
        out[k] = np.concatenate([p[k] for p in parts])
    out["gyr_dps"] = np.concatenate([p["gyr_dps"] for p in parts]) if has_gyr else None
    out["sensor_id"] = np.repeat(np.array([p["sensor_id"] for p in parts]), counts)
    out["site"] = np.repeat(np.array([p["site"] for p in parts]), counts)
    # sensor-major, blocks (packets) ordered by their first sample time. Samples are never reordered inside a
    # packet: the clock mapping may let consecutive packets overlap by a fraction of a sample period, and the
    # true sample order is the packet order. Blocks are out of order only when they arrived out of order.
    t = out["time_s"]
    sid = out["sensor_id"]
    offs = np.cumsum([0] + [int(p["block"][-1]) + 1 if len(p["block"]) else 0 for p in parts[:-1]])
    blk = np.concatenate([p["block"] + o for p, o in zip(parts, offs)])
    starts = np.flatnonzero(np.r_[True, blk[1:] != blk[:-1]])
    bt, bs = t[starts], sid[starts]
    order = None
    if np.any((np.diff(bt) < 0) & (bs[1:] == bs[:-1])):
        border = np.lexsort((bt, bs))
        lens = np.diff(np.r_[starts, len(t)])
        order = np.concatenate([np.arange(starts[b], starts[b] + lens[b]) for b in border])
    mask = np.ones(len(t), bool)
    if t0_s is not None:
        mask &= t >= t0_s
    if t1_s is not None:
        mask &= t < t1_s
    if order is not None:
        order = order[mask[order]]
    elif not mask.all():
        order = np.flatnonzero(mask)
    if order is not None:
        for k, v in out.items():
            if v is not None:
                out[k] = v[order]
    return out
