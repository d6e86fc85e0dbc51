"""The storage interface (backend-independent): records, layouts, errors and the abstract ``SessionStore``.

A backend (SQLite now, PostgreSQL later) implements every abstract method of :class:`SessionStore`; the HTTP
API, the ingestor, the exports and the CLI use only this interface. See docs/storage.md.
"""
from __future__ import annotations

import abc
import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from runform.dsp import STEP_DTYPE

__all__ = [
    "StorageError", "NotFoundError", "StorageUnavailableError", "StorageFullError", "StorageReadOnlyError",
    "StorageCorruptError", "Runner", "Session", "SensorInfo", "SessionStore", "METRICS_DTYPE", "CUE_DTYPE",
    "NOTE_DTYPE", "STEP_COLUMNS", "METRIC_FIELDS", "RAW_KEYS",
]


# ------------------------------------------------------------------------------------------------ errors
class StorageError(RuntimeError):
    """Root of every storage failure. ``path`` is the database (file or URL) when known."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class NotFoundError(StorageError, KeyError):
    """An operation named a runner or session that does not exist (``what`` and ``key`` say which)."""

    def __init__(self, message: str, *, what: str, key: str, path: str | None = None) -> None:
        StorageError.__init__(self, message, path=path)
        self.what = what
        self.key = key

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class StorageUnavailableError(StorageError):
    """A write failed for a reason that can go away (disk full, read-only file system, locked database).

    Nothing of the failed call was stored (the transaction was rolled back); everything committed before is
    intact. Retry later. ``retry_after_s`` is a hint.
    """

    retry_after_s = 1.0


class StorageFullError(StorageUnavailableError):
    """The disk (or the database's size limit) is full."""


class StorageReadOnlyError(StorageUnavailableError):
    """The database or its file system is read-only."""


class StorageCorruptError(StorageError):
    """The database file is damaged (``PRAGMA integrity_check`` failed or SQLite reported corruption)."""


# ------------------------------------------------------------------------------------------------ records
@dataclass(frozen=True, slots=True)
class Runner:
    id: str
    display_name: str
    mass_kg: float | None = None
    created_unix_s: float = math.nan
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["meta"] = dict(self.meta)
        return d


@dataclass(frozen=True, slots=True)
class SensorInfo:
    """One sensor of a session (filled from the session meta, raw blocks or journal headers)."""

    sensor_id: str
    site: str
    sampling_rate_hz: float | None = None
    tick_hz: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["meta"] = dict(self.meta)
        return d


@dataclass(frozen=True, slots=True)
class Session:
    """A recording of one runner.

    Times: ``started_unix_s``/``ended_unix_s`` are wall clock (UTC seconds). Data times (``time_s`` of raw,
    steps, metrics, cues) are on the recording host's monotonic clock; ``clock_monotonic_s`` and
    ``clock_utc_unix_s`` were read together (``clock_source`` says how), so
    ``utc_unix_s = clock_utc_unix_s + (time_s - clock_monotonic_s)``  (:meth:`to_utc`).
    """

    id: str
    runner_id: str
    started_unix_s: float
    ended_unix_s: float | None = None
    clock_monotonic_s: float | None = None
    clock_utc_unix_s: float | None = None
    clock_source: str | None = None
    sensors: tuple[SensorInfo, ...] = ()
    mass_kg: float | None = None
    program: str | None = None
    notes: str | None = None
    source: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(s.site for s in self.sensors)

    @property
    def is_open(self) -> bool:
        return self.ended_unix_s is None

    def to_utc(self, time_s):
        """Host-monotonic ``time_s`` (scalar or array) -> UTC seconds; NaN when the mapping is unknown."""
        if self.clock_monotonic_s is None or self.clock_utc_unix_s is None:
            return np.asarray(time_s, np.float64) * np.nan
        return self.clock_utc_unix_s + (np.asarray(time_s, np.float64) - self.clock_monotonic_s)

    def to_dict(self) -> dict:
        return {"id": self.id, "runner_id": self.runner_id, "started_unix_s": self.started_unix_s,
                "ended_unix_s": self.ended_unix_s, "clock_monotonic_s": self.clock_monotonic_s,
                "clock_utc_unix_s": self.clock_utc_unix_s, "clock_source": self.clock_source,
                "sensors": [s.to_dict() for s in self.sensors], "sites": list(self.sites),
                "mass_kg": self.mass_kg, "program": self.program, "notes": self.notes, "source": self.source,
                "meta": dict(self.meta)}


# ------------------------------------------------------------------------------------------------ layouts
#: Columns of the steps table: every STEP_DTYPE field (units in the names) plus the sensor.
STEP_COLUMNS: tuple[str, ...] = tuple(STEP_DTYPE.names)

#: Numeric fields of a ``runform.metrics.v1`` payload kept as columns (units in the names).
METRIC_FIELDS: tuple[str, ...] = (
    "window_s", "cadence_spm", "cadence_target_spm", "gct_ms", "gct_left_ms", "gct_right_ms", "balance_left_pct",
    "flight_ms", "duty_factor", "impact_peak_g", "impact_peak_max_g", "loading_rate_gps", "impact_sum_g")
METRICS_DTYPE = np.dtype([("time_s", np.float64), ("time_unix_s", np.float64), ("activity", np.int8)]
                         + [(f, np.float64) for f in METRIC_FIELDS]
                         + [("steps_in_window", np.int64), ("steps_total", np.int64), ("paused", np.bool_)])

CUE_DTYPE = np.dtype([("cue_id", np.int64), ("time_s", np.float64), ("time_unix_s", np.float64),
                      ("kind", "U16"), ("code", "U64"), ("text", "U200"), ("bpm", np.float64),
                      ("priority", np.int8), ("ttl_s", np.float64), ("trigger_arrival_ns", np.int64)])

NOTE_DTYPE = np.dtype([("id", np.int64), ("time_s", np.float64), ("created_unix_s", np.float64),
                       ("kind", "U32"), ("author", "U64"), ("text", "U1000")])

#: Keys of the dict returned by ``read_raw`` (per sample, sorted by sensor then time).
RAW_KEYS = ("time_s", "acc_ms2", "gyr_dps", "clipped", "sensor_tick", "arrival_ns", "seq", "first_tick",
            "sensor_id", "site")


# ------------------------------------------------------------------------------------------------ interface
class SessionStore(abc.ABC):
    """Durable store of runners, sessions, raw samples, steps, metrics, cues, sensor stats and notes.

    Every ``append_*``/``create_*``/``add_*``/``end_session`` is durable when it returns (committed and
    synced), unless it runs inside :meth:`transaction`, which commits once at its end. Appends are
    idempotent: appending the same raw block (same ``key``), step (same sensor and ``ic_s``), metrics row
    (same ``time_s``) or cue (same ``cue_id`` and ``time_s``) again stores nothing new. Writes that fail for
    a transient reason raise :class:`StorageUnavailableError` (subclasses :class:`StorageFullError`,
    :class:`StorageReadOnlyError`) after rolling back, so nothing half-written remains. ``get_*`` return None
    for unknown ids; operations on an unknown session raise :class:`NotFoundError`.
    """

    url: str

    # ---- runners
    @abc.abstractmethod
    def create_runner(self, runner_id: str, display_name: str | None = None, mass_kg: float | None = None,
                      meta: Mapping[str, Any] | None = None, *, exist_ok: bool = False) -> Runner:
        """Add a runner (``runner_id`` is the MQTT topic level). ``exist_ok``: update name/mass instead of
        raising ``StorageError`` when it exists (None arguments keep the stored values)."""

    @abc.abstractmethod
    def get_runner(self, runner_id: str) -> Runner | None: ...

    @abc.abstractmethod
    def list_runners(self) -> list[Runner]: ...

    # ---- sessions
    @abc.abstractmethod
    def create_session(self, runner_id: str, meta: Mapping[str, Any] | None = None) -> str:
        """Start a session; returns its id. The runner is created if unknown. ``meta`` keys (all optional):
        ``id``, ``started_unix_s`` (default now), ``clock`` ({monotonic_s, utc_unix_s, source}; default: this
        host's clocks read now), ``sensors`` (list of {sensor_id, site, sampling_rate_hz, tick_hz, ...}),
        ``mass_kg`` (default the runner's), ``program``, ``notes``, ``source`` and anything else (kept in
        ``Session.meta``). Creating a session whose ``id`` exists returns that id (idempotent)."""

    @abc.abstractmethod
    def end_session(self, session_id: str, ended_unix_s: float | None = None) -> None: ...

    @abc.abstractmethod
    def get_session(self, session_id: str) -> Session | None: ...

    @abc.abstractmethod
    def list_sessions(self, runner_ids: Iterable[str] | None = None, *, open_only: bool = False,
                      limit: int | None = None) -> list[Session]:
        """Sessions, newest first; ``runner_ids`` restricts to those runners (an empty list gives [])."""

    @abc.abstractmethod
    def update_session(self, session_id: str, **fields: Any) -> None:
        """Change ``notes``, ``program``, ``mass_kg``, ``clock`` ({monotonic_s, utc_unix_s, source}) or merge
        keys into ``meta``."""

    @abc.abstractmethod
    def add_sensor(self, session_id: str, sensor_id: str, site: str, sampling_rate_hz: float | None = None,
                   tick_hz: float | None = None, meta: Mapping[str, Any] | None = None) -> None:
        """Register (or update) a sensor of a session; ``append_raw`` does this implicitly."""

    @abc.abstractmethod
    def delete_session(self, session_id: str) -> None: ...

    # ---- raw samples
    @abc.abstractmethod
    def append_raw(self, session_id: str, sensor_id: str, site: str, time_s, acc_ms2, gyr_dps=None, ticks=None,
                   arrival_ns=None, *, clipped=None, seq: int | None = None, first_tick: int | None = None,
                   sampling_rate_hz: float | None = None, tick_hz: float | None = None,
                   key: tuple[int, int, int] | None = None) -> int:
        """Store one block of samples (time_s (n,) float64 host seconds, acc_ms2 (n,3), gyr_dps (n,3)|None,
        ticks (n,) int64 per-sample sensor ticks|None, arrival_ns scalar or (n,)|None, clipped (n,) bool|None).
        ``key`` identifies the block for de-duplication (default: ``(seq, first_tick, arrival_ns)`` when
        ``seq`` is given, else the first sample's time). Returns the number of samples newly stored."""

    @abc.abstractmethod
    def append_raw_blocks(self, session_id: str, blocks: Sequence[Any]) -> int:
        """Store several SampleBlock-like objects (``sensor_id, site, seq, first_tick, tick_hz,
        sampling_rate_hz, arrival_ns, time_s, acc_ms2, gyr_dps, clipped``) as compressed chunks in one
        transaction, skipping blocks stored before (key ``(seq, first_tick, arrival_ns)``). Returns samples
        newly stored."""

    @abc.abstractmethod
    def read_raw(self, session_id: str, sensor_id: str | None = None, t0_s: float | None = None,
                 t1_s: float | None = None) -> dict[str, Any]:
        """Samples with ``t0_s <= time_s < t1_s`` as a dict of arrays (keys ``RAW_KEYS``): ``time_s`` (n,)
        float64, ``acc_ms2`` (n,3), ``gyr_dps`` (n,3) or None (NaN rows where a block had no gyro),
        ``clipped`` (n,) bool, ``sensor_tick`` (n,) int64 (-1 unknown), ``arrival_ns`` (n,) int64 (-1 unknown;
        the arrival of the sample's packet), ``seq`` (n,) int64 (packet), ``first_tick`` (n,) int64 (packet),
        ``sensor_id``/``site`` (n,) str. Sorted by sensor, then packets by their first sample time (samples are
        never reordered inside a packet: consecutive packets may overlap by a fraction of a sample period after
        clock correction, and the packet order is the true sample order)."""

    @abc.abstractmethod
    def raw_sensors(self, session_id: str) -> list[dict]:
        """Per sensor: sensor_id, site, n_samples, t0_s, t1_s, n_chunks, stored_bytes."""

    # ---- steps, metrics, cues, stats, notes
    @abc.abstractmethod
    def append_steps(self, session_id: str, sensor: str, steps, *, site: str | None = None) -> int:
        """STEP_DTYPE array (or dicts with those fields; ``side`` may be "L"/"R", ``activity`` a name).
        Returns steps newly stored (a step is identified by sensor and ``ic_s``)."""

    @abc.abstractmethod
    def read_steps(self, session_id: str, sensor: str | None = None, t0_s: float | None = None,
                   t1_s: float | None = None) -> np.ndarray:
        """STEP_DTYPE-based structured array with extra fields ``sensor`` and ``site``, sorted by ``ic_s``."""

    @abc.abstractmethod
    def append_metrics(self, session_id: str, metrics) -> int:
        """``runform.metrics.v1`` dicts (or a METRICS_DTYPE array); keyed by ``time_s``."""

    @abc.abstractmethod
    def read_metrics(self, session_id: str, t0_s: float | None = None, t1_s: float | None = None) -> np.ndarray:
        """METRICS_DTYPE array sorted by ``time_s``."""

    @abc.abstractmethod
    def append_cue(self, session_id: str, cue) -> int:
        """A ``runform.cue.v1`` dict or a ``runform.server.cues.Cue`` (plus ``cue_id``); returns 1 if new."""

    @abc.abstractmethod
    def read_cues(self, session_id: str, t0_s: float | None = None, t1_s: float | None = None) -> np.ndarray: ...

    @abc.abstractmethod
    def append_sensor_stats(self, session_id: str, sensor_id: str, stats: Mapping[str, Any],
                            time_unix_s: float | None = None) -> None:
        """A snapshot of link/packet statistics (lost, duplicate, malformed packets, rates...)."""

    @abc.abstractmethod
    def read_sensor_stats(self, session_id: str, sensor_id: str | None = None) -> list[dict]: ...

    @abc.abstractmethod
    def add_note(self, session_id: str, text: str, *, time_s: float | None = None, author: str | None = None,
                 kind: str = "note", meta: Mapping[str, Any] | None = None, key: str | None = None) -> int:
        """An annotation (``time_s`` on the data clock, or None for the whole session); returns its id.
        ``key`` makes it idempotent: a second note with the same key returns the first one's id."""

    @abc.abstractmethod
    def read_notes(self, session_id: str) -> list[dict]: ...

    @abc.abstractmethod
    def session_summary(self, session_id: str) -> dict:
        """Counts and headline figures: duration, per-sensor samples, steps, cadence, GCT L/R, cues, notes."""

    # ---- return-to-run programs (runner-level: kept whether or not a data session exists)
    @abc.abstractmethod
    def upsert_program_session(self, record: Mapping[str, Any]) -> dict:
        """Store a ``runform.program_session.v1`` record, keyed by (``runner``, ``session_key``); the runner is
        not required to exist. An update never loses what is stored: a pain that is null in the update keeps
        the stored score, ``final`` never goes back to false, and an older update (smaller ``end_unix_s``, e.g.
        an MQTT redelivery) changes nothing else. Returns the stored record (wire field names)."""

    @abc.abstractmethod
    def list_program_sessions(self, runner_id: str, *, program: str | None = None,
                              limit: int | None = None) -> list[dict]:
        """Program session records of a runner, oldest first (by ``start_unix_s``); ``limit``: the newest N."""

    @abc.abstractmethod
    def add_pain_report(self, runner_id: str, pain_0_10: int, when: str, *, author: str | None = None,
                        time_unix_s: float | None = None, session_key: str | None = None) -> int:
        """A pain score (0-10, ``when`` "before" | "after" a session) as reported, durable at once; returns its
        id. Kept independently of any edge or session (merged into records by ``programs.merge_pain``)."""

    @abc.abstractmethod
    def list_pain_reports(self, runner_id: str, *, since_unix_s: float | None = None,
                          limit: int | None = None) -> list[dict]:
        """``{id, runner, pain_0_10, when, time_unix_s, author, session_key}`` oldest first; ``limit``: newest N."""

    @abc.abstractmethod
    def put_plan(self, runner_id: str, plan: Mapping[str, Any], *, since_unix_s: float | None = None) -> None:
        """Store the runner's current ``runform.plan.v1`` (replaces the previous one). ``since_unix_s``: start
        of the period whose sessions count for progression (set when a therapist changes program or stage;
        None keeps the stored one)."""

    @abc.abstractmethod
    def get_plan(self, runner_id: str) -> dict | None:
        """``{"plan": dict, "since_unix_s": float | None, "updated_unix_s": float}`` or None."""

    @abc.abstractmethod
    def list_plans(self) -> list[dict]:
        """Every stored plan (``get_plan`` dicts plus ``runner``), e.g. to re-publish them after a broker restart."""

    # ---- plumbing
    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager:
        """Group writes into one commit (durable at the end of the ``with``; rolled back on an exception)."""

    @abc.abstractmethod
    def integrity_check(self) -> list[str]:
        """Problems found by the backend's own check (empty list = healthy)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "SessionStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- helpers shared by backends
    def iter_raw_chunks(self, session_id: str, sensor_id: str | None = None) -> Iterator[dict[str, Any]]:
        """``read_raw`` chunk by chunk (bounded memory for exports); default: one piece per sensor."""
        for s in self.raw_sensors(session_id):
            if sensor_id is None or s["sensor_id"] == sensor_id:
                yield self.read_raw(session_id, s["sensor_id"])
