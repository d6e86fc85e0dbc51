"""Parquet export (pyarrow): ``raw.parquet`` (all sensors, ``sensor_id``/``site`` dictionary columns),
``steps.parquet``, ``metrics.parquet``, ``cues.parquet``, ``notes.parquet`` in a directory.

Each field carries ``unit`` and ``description`` in its Arrow field metadata; each file's schema metadata has
``runform.session`` (the session JSON: runner, sensors and sites, clock mapping, summary). Raw samples are
streamed row group by row group (bounded memory), zstd-compressed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._common import (DESCRIPTIONS, ExportError, RAW_COLUMNS, dumps, metrics_table, raw_columns, session_metadata,
                      step_columns, steps_table, unit_of)


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportError("Parquet export needs pyarrow: pip install 'runform[export]'") from None
    return pa, pq


def _field(pa, name, typ):
    return pa.field(name, typ, metadata={"unit": unit_of(name), "description": DESCRIPTIONS.get(name, "")})


def _table(pa, cols: dict, names, meta_json: str):
    arrays, fields = [], []
    for n in names:
        v = cols[n]
        if isinstance(v, np.ndarray) and v.dtype != object:
            a = pa.array(v)
        else:
            a = pa.array([None if x is None else x for x in list(v)], type=pa.string())
        arrays.append(a)
        fields.append(_field(pa, n, a.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata={"runform.session": meta_json}))


def export_parquet(store, session_id: str, out) -> list[Path]:
    pa, pq = _pa()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = session_metadata(store, session_id)
    meta_json = dumps(meta)
    session = store.get_session(session_id)
    fields = [_field(pa, "sensor_id", pa.dictionary(pa.int32(), pa.string())),
              _field(pa, "site", pa.dictionary(pa.int32(), pa.string()))]
    types = {"clipped": pa.bool_(), "sensor_tick": pa.int64(), "arrival_ns": pa.int64(), "seq": pa.int64(),
             "first_tick": pa.int64()}
    fields += [_field(pa, n, types.get(n, pa.float64())) for n in RAW_COLUMNS]
    schema = pa.schema(fields, metadata={"runform.session": meta_json})
    paths = [out / "raw.parquet"]
    with pq.ParquetWriter(out / "raw.parquet", schema, compression="zstd") as w:
        for piece in store.iter_raw_chunks(session_id):
            cols = raw_columns(piece, session)
            n = len(cols["time_s"])
            arrays = [pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), pa.array([str(piece["sensor_id"][0])])),
                      pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), pa.array([str(piece["site"][0])]))]
            arrays += [pa.array(cols[c], type=types.get(c, pa.float64())) for c in RAW_COLUMNS]
            w.write_table(pa.Table.from_arrays(arrays, schema=schema))
    st = steps_table(store.read_steps(session_id))
    pq.write_table(_table(pa, st, step_columns(), meta_json), out / "steps.parquet", compression="zstd")
    m = metrics_table(store.read_metrics(session_id))
    pq.write_table(_table(pa, m, list(m), meta_json), out / "metrics.parquet", compression="zstd")
    c = store.read_cues(session_id)
    pq.write_table(_table(pa, {n: (c[n] if c.dtype[n].kind != "U" else c[n].astype(object)) for n in c.dtype.names},
                          c.dtype.names, meta_json), out / "cues.parquet", compression="zstd")
    notes = store.read_notes(session_id)
    nt = {"id": np.array([n["id"] for n in notes], np.int64),
          "time_s": np.array([np.nan if n["time_s"] is None else n["time_s"] for n in notes], np.float64),
          "created_unix_s": np.array([n["created_unix_s"] for n in notes], np.float64),
          "kind": np.array([n["kind"] for n in notes], object), "author": np.array([n["author"] for n in notes], object),
          "text": np.array([n["text"] for n in notes], object)}
    pq.write_table(_table(pa, nt, list(nt), meta_json), out / "notes.parquet", compression="zstd")
    return paths + [out / f"{t}.parquet" for t in ("steps", "metrics", "cues", "notes")]
