"""runform.server.storage: durable sessions (runners, raw samples, steps, metrics, cues, notes).

``open_store(url_or_path)`` returns a :class:`SessionStore`; the SQLite backend (WAL, ``synchronous=FULL``) is
the default, the interface is backend-independent so PostgreSQL can follow. Layout, durability and the
interface contract: docs/storage.md.

Records: Runner, Session, SensorInfo. Layouts: STEP_DTYPE-based steps (``STEPS_READ_DTYPE``), METRICS_DTYPE,
CUE_DTYPE. Errors (root StorageError): NotFoundError, StorageUnavailableError (StorageFullError,
StorageReadOnlyError), StorageCorruptError.
"""
from __future__ import annotations

import os

from ._base import (CUE_DTYPE, METRIC_FIELDS, METRICS_DTYPE, NOTE_DTYPE, RAW_KEYS, STEP_COLUMNS, NotFoundError,
                    Runner, SensorInfo, Session, SessionStore, StorageCorruptError, StorageError, StorageFullError,
                    StorageReadOnlyError, StorageUnavailableError)
from ._sqlite import STEPS_READ_DTYPE, SqliteStore

__all__ = ["open_store", "SessionStore", "SqliteStore", "Runner", "Session", "SensorInfo", "StorageError",
           "NotFoundError", "StorageUnavailableError", "StorageFullError", "StorageReadOnlyError",
           "StorageCorruptError", "STEPS_READ_DTYPE", "METRICS_DTYPE", "CUE_DTYPE", "NOTE_DTYPE", "RAW_KEYS",
           "STEP_COLUMNS", "METRIC_FIELDS", "DEFAULT_DB_ENV"]

#: Environment variable naming the default database (``runform ingest/export/import-journal --db``).
DEFAULT_DB_ENV = "RUNFORM_DB"


def open_store(url_or_path=None, **options) -> SessionStore:
    """Open (creating if needed) a session store.

    ``url_or_path``: a file path or a SQLAlchemy-style URL (``sqlite:///relative.db``,
    ``sqlite:////absolute/path.db``); None reads
    ``$RUNFORM_DB`` (default ``runform.db`` in the current directory). ``postgresql://...`` is reserved for
    the PostgreSQL backend (not implemented yet: NotImplementedError). ``options`` go to the backend
    (SQLite: ``synchronous``, ``busy_timeout_ms``, ``max_page_count``).
    """
    if url_or_path is None:
        url_or_path = os.environ.get(DEFAULT_DB_ENV, "runform.db")
    s = os.fspath(url_or_path)
    if s.startswith(("postgresql://", "postgres://")):
        raise NotImplementedError("the PostgreSQL backend is not implemented yet; implement SessionStore "
                                  "(runform.server.storage._base) for it -- see docs/storage.md")
    if s.startswith("sqlite:///"):  # SQLAlchemy style: sqlite:///relative.db, sqlite:////absolute/path.db
        s = s[len("sqlite:///"):]
    elif s.startswith("sqlite://"):
        raise ValueError(f"sqlite URLs look like sqlite:///path/to/file.db, got {s!r}")
    elif "://" in s:
        raise ValueError(f"unsupported store URL {s!r} (use a path, sqlite:///path or postgresql://...)")
    return SqliteStore(s, **options)
