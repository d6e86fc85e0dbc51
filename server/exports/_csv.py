"""CSV export: one CSV per table (raw per sensor, steps, metrics, cues, notes) + ``session.json`` sidecar.

Numbers are written with Python's shortest round-trip representation (``repr``), so every float64 reads back
bit-identical; missing values are empty fields. Column names carry units (``acc_x_ms2``); the sidecar repeats
unit and description per column and carries the session metadata (runner, sensors and sites, clock mapping).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ._common import (RAW_COLUMNS, column_info, dumps, metrics_table, raw_columns, safe_name, session_metadata,
                      step_columns, steps_table)

_CHUNK_ROWS = 65536


def _fmt_col(a) -> list:
    a = np.asarray(a)
    if a.dtype.kind == "f":
        out = a.tolist()
        return ["" if v != v else v for v in out]  # NaN -> empty
    if a.dtype.kind == "b":
        return np.where(a, "true", "false").tolist()
    return a.tolist()


def _write_rows(w, cols: dict, names) -> int:
    n = len(next(iter(cols.values()))) if cols else 0
    for i in range(0, n, _CHUNK_ROWS):
        w.writerows(zip(*(_fmt_col(cols[k][i:i + _CHUNK_ROWS]) for k in names)))
    return n


def export_csv(store, session_id: str, out) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = session_metadata(store, session_id)
    session = store.get_session(session_id)
    files: dict[str, dict] = {}
    written: list[Path] = []
    for s in store.raw_sensors(session_id):
        name = f"raw_{safe_name(s['sensor_id'])}.csv"
        n = 0
        with open(out / name, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(RAW_COLUMNS)
            for piece in store.iter_raw_chunks(session_id, s["sensor_id"]):
                n += _write_rows(w, raw_columns(piece, session), RAW_COLUMNS)
        files[name] = {"table": "raw", "sensor_id": s["sensor_id"], "site": s["site"], "rows": n,
                       "sampling_rate_hz": next((x.sampling_rate_hz for x in session.sensors
                                                 if x.sensor_id == s["sensor_id"]), None),
                       "columns": column_info(RAW_COLUMNS)}
        written.append(out / name)
    tables = {
        "steps.csv": ("steps", steps_table(store.read_steps(session_id)), step_columns()),
    }
    m = metrics_table(store.read_metrics(session_id))
    tables["metrics.csv"] = ("metrics", m, list(m))
    cues = store.read_cues(session_id)
    tables["cues.csv"] = ("cues", {n: cues[n] for n in cues.dtype.names}, list(cues.dtype.names))
    notes = store.read_notes(session_id)
    ncols = ["id", "time_s", "created_unix_s", "kind", "author", "text"]
    tables["notes.csv"] = ("notes", {k: np.array([(n[k] if n[k] is not None else np.nan) if k.endswith("_s")
                                                  else ("" if n[k] is None else n[k]) for n in notes],
                                                 dtype=np.float64 if k.endswith("_s") else object)
                                     for k in ncols}, ncols)
    for name, (table, cols, names) in tables.items():
        with open(out / name, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(names)
            n = _write_rows(w, cols, names) if len(cols[names[0]]) else 0
        files[name] = {"table": table, "rows": n, "columns": column_info(names)}
        written.append(out / name)
    meta["files"] = files
    meta["format"] = {"name": "runform CSV", "version": 1, "delimiter": ",", "missing": "", "boolean": "true/false",
                      "floats": "shortest round-trip decimal (exact float64)"}
    (out / "session.json").write_text(dumps(meta))
    return [out / "session.json", *written]
