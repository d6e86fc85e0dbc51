"""runform.server.exports: sessions out of the store in the formats labs and runners open.

``export_session(store, session_id, fmt, out)`` with ``fmt`` one of :data:`FORMATS`:

- ``csv``     directory: raw_<sensor>.csv, steps.csv, metrics.csv, cues.csv, notes.csv + session.json sidecar
- ``parquet`` directory: raw.parquet (all sensors), steps/metrics/cues/notes.parquet (units in field metadata)
- ``hdf5``    one .h5 file (/raw/<sensor>/..., /steps, /metrics, /cues, /notes; units as attributes)
- ``bids``    Motion-BIDS dataset directory (motion.tsv + channels.tsv + _motion.json per sensor, events.tsv)
- ``fit``     Garmin FIT activity (1 s records with cadence and stance time / GCT balance)
- ``lsl``     not a file: ``replay_session`` streams a stored session to Lab Streaming Layer; live data goes to
              LSL through ``LslForwarder`` (``runform ingest --lsl``)

Every file export carries units, sample times (host monotonic ``time_s`` and UTC), sensor sites and the
session metadata. Details and readers: docs/exports.md.
"""
from __future__ import annotations

from pathlib import Path

from ._common import ExportError, unit_of

__all__ = ["export_session", "FORMATS", "ExportError", "unit_of", "LslOutlet", "LslForwarder", "replay_session",
           "lsl_available"]

FORMATS = ("csv", "parquet", "hdf5", "bids", "fit")


def export_session(store, session_id: str, fmt: str, out) -> list[Path]:
    """Write ``session_id`` from ``store`` as ``fmt`` to ``out``; returns the files written."""
    fmt = fmt.lower()
    if store.get_session(session_id) is None:
        raise ExportError(f"no session {session_id!r} in {store.url}")
    if fmt == "csv":
        from ._csv import export_csv as f
    elif fmt == "parquet":
        from ._parquet import export_parquet as f
    elif fmt in ("hdf5", "h5"):
        from ._hdf5 import export_hdf5 as f
    elif fmt in ("bids", "motion-bids"):
        from ._bids import export_bids as f
    elif fmt == "fit":
        from ._fit import export_fit as f
    else:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)} (or lsl)")
    return f(store, session_id, Path(out))


def __getattr__(name):
    if name in ("LslOutlet", "LslForwarder", "replay_session", "lsl_available"):
        from . import _lsl
        return getattr(_lsl, name)
    raise AttributeError(name)
