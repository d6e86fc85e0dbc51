"""HDF5 export (h5py): one file.

Layout::

    /                      attrs: runform_session (JSON), runner_id, session_id, clock_monotonic_s,
                           clock_utc_unix_s, format "runform-hdf5", format_version 1
    /raw/<sensor_id>/      attrs: sensor_id, site, sampling_rate_hz, tick_hz
        time_s (n,) f8, utc_unix_s (n,) f8, acc_ms2 (n,3) f8, gyr_dps (n,3) f8 (if any gyro), clipped (n,) bool,
        sensor_tick, arrival_ns, seq, first_tick (n,) i8          each with attrs unit, description
    /steps, /metrics, /cues    compound datasets; attrs units (JSON name -> unit)
    /notes                 compound (id, time_s, created_unix_s, kind, author, text)

Datasets are chunked, gzip-compressed and grown piece by piece (bounded memory).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._common import DESCRIPTIONS, ExportError, dumps, safe_name, session_metadata, unit_of


def _h5():
    try:
        import h5py
    except ImportError:
        raise ExportError("HDF5 export needs h5py: pip install 'runform[export]'") from None
    return h5py


def _to_fixed(a: np.ndarray) -> np.ndarray:
    """Unicode fields -> UTF-8 byte strings (h5py stores no numpy 'U')."""
    dt = []
    for n in a.dtype.names:
        f = a.dtype[n]
        dt.append((n, f"S{max(1, f.itemsize // 4 * 4)}") if f.kind == "U" else (n, f))
    out = np.zeros(len(a), dt)
    for n in a.dtype.names:
        out[n] = np.char.encode(a[n], "utf-8") if a.dtype[n].kind == "U" else a[n]
    return out


def export_hdf5(store, session_id: str, out) -> list[Path]:
    h5py = _h5()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = session_metadata(store, session_id)
    session = store.get_session(session_id)
    with h5py.File(out, "w") as f:
        f.attrs["format"] = "runform-hdf5"
        f.attrs["format_version"] = 1
        f.attrs["runform_session"] = dumps(meta)
        f.attrs["session_id"] = session.id
        f.attrs["runner_id"] = session.runner_id
        for k in ("clock_monotonic_s", "clock_utc_unix_s"):
            v = getattr(session, k)
            f.attrs[k] = np.nan if v is None else v
        raw = f.create_group("raw")
        for s in store.raw_sensors(session_id):
            g = raw.create_group(safe_name(s["sensor_id"]))
            info = next((x for x in session.sensors if x.sensor_id == s["sensor_id"]), None)
            g.attrs["sensor_id"], g.attrs["site"] = s["sensor_id"], s["site"]
            g.attrs["sampling_rate_hz"] = np.nan if info is None or info.sampling_rate_hz is None else info.sampling_rate_hz
            g.attrs["tick_hz"] = np.nan if info is None or info.tick_hz is None else info.tick_hz
            ds: dict = {}
            for piece in store.iter_raw_chunks(session_id, s["sensor_id"]):
                cols = {"time_s": piece["time_s"], "utc_unix_s": np.asarray(session.to_utc(piece["time_s"]), float),
                        "acc_ms2": piece["acc_ms2"], "clipped": piece["clipped"], "sensor_tick": piece["sensor_tick"],
                        "arrival_ns": piece["arrival_ns"], "seq": piece["seq"], "first_tick": piece["first_tick"]}
                if piece["gyr_dps"] is not None:
                    cols["gyr_dps"] = piece["gyr_dps"]
                for k, v in cols.items():
                    if k not in ds:
                        ds[k] = g.create_dataset(k, data=v, maxshape=(None,) + v.shape[1:],
                                                 chunks=(min(65536, max(1, len(v))),) + v.shape[1:],
                                                 compression="gzip", compression_opts=4, shuffle=True)
                        ds[k].attrs["unit"] = unit_of(k)
                        ds[k].attrs["description"] = DESCRIPTIONS.get(k, DESCRIPTIONS.get(k.replace("_ms2", "_x_ms2"), ""))
                    else:
                        d = ds[k]
                        n0 = d.shape[0]
                        d.resize(n0 + len(v), axis=0)
                        d[n0:] = v
            if "acc_ms2" in ds:
                ds["acc_ms2"].attrs["description"] = "acceleration (x, y, z sensor axes), gravity included"
            if "gyr_dps" in ds:
                ds["gyr_dps"].attrs["description"] = "angular rate (x, y, z sensor axes)"
        for name, arr in (("steps", store.read_steps(session_id)), ("metrics", store.read_metrics(session_id)),
                          ("cues", store.read_cues(session_id))):
            d = f.create_dataset(name, data=_to_fixed(arr), compression="gzip")
            d.attrs["units"] = json.dumps({n: unit_of(n) for n in arr.dtype.names})
        notes = store.read_notes(session_id)
        nd = np.zeros(len(notes), [("id", "i8"), ("time_s", "f8"), ("created_unix_s", "f8"), ("kind", "S32"),
                                   ("author", "S64"), ("text", "S1000")])
        for i, n in enumerate(notes):
            nd[i] = (n["id"], np.nan if n["time_s"] is None else n["time_s"], n["created_unix_s"],
                     n["kind"].encode()[:32], (n["author"] or "").encode()[:64], n["text"].encode()[:1000])
        f.create_dataset("notes", data=nd)
    return [out]
