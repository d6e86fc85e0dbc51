"""What every export shares: units of the column names, flat raw columns, session metadata."""
from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import numpy as np

from runform.dsp import ACTIVITY_NAMES, SIDE_NAMES, STEP_DTYPE

from ..storage import METRICS_DTYPE, SessionStore, StorageError


class ExportError(RuntimeError):
    """An export could not be written (unknown session/format, missing library, bad output path)."""


#: suffix of a column name -> (unit, description of the unit) ; units as UCUM-like strings
_SUFFIX_UNITS = [
    ("_unix_s", "s", "seconds since 1970-01-01T00:00:00Z (UTC)"),
    ("_ms2", "m/s^2", "metres per second squared"),
    ("_dps", "deg/s", "degrees per second"),
    ("_ns", "ns", "nanoseconds, host monotonic clock"),
    ("_ms", "ms", "milliseconds"),
    ("_s", "s", "seconds"),
    ("_spm", "steps/min", "steps per minute (both feet)"),
    ("_gps", "g/s", "standard gravities per second"),
    ("_g", "g", "standard gravities (9.80665 m/s^2)"),
    ("_bw", "BW", "body weights"),
    ("_hz", "Hz", "hertz"),
    ("_pct", "%", "percent"),
    ("_kg", "kg", "kilograms"),
    ("_index", "samples", "fractional sample index into the sensor's stream"),
]

DESCRIPTIONS = {
    "time_s": "sample time, host monotonic clock, seconds (clock-drift corrected sensor time)",
    "utc_unix_s": "sample time as UTC, via the session's monotonic->UTC mapping",
    "acc_x_ms2": "acceleration, sensor x axis, gravity included", "acc_y_ms2": "acceleration, sensor y axis",
    "acc_z_ms2": "acceleration, sensor z axis", "gyr_x_dps": "angular rate, sensor x axis",
    "gyr_y_dps": "angular rate, sensor y axis", "gyr_z_dps": "angular rate, sensor z axis",
    "clipped": "true where an accelerometer axis hit the measuring range",
    "sensor_tick": "per-sample sensor clock tick (-1: not recorded)",
    "arrival_ns": "host monotonic time the sample's BLE packet arrived (-1: unknown)",
    "seq": "sensor packet sequence number (unwrapped)", "first_tick": "sensor tick of the packet's first sample",
    "ic_s": "initial contact (foot strike)", "tc_s": "terminal contact (toe-off)",
    "side": "L / R / n/a", "gct_ms": "ground contact time", "flight_ms": "flight time after this step",
    "step_time_ms": "time since the previous initial contact", "cadence_spm": "60000 / step_time_ms",
    "cadence_smoothed_spm": "exponentially smoothed cadence", "duty_factor": "contact time / stride time",
    "peak_accel_g": "peak acceleration magnitude in the impact window", "loading_rate_gps": "impact slope proxy",
    "peak_vgrf_bw": "estimated peak vertical ground reaction force (sacrum)", "activity": "activity at the step",
    "emitted_index": "stream index at which the step was emitted",
}


def unit_of(name: str) -> str:
    for suffix, unit, _ in _SUFFIX_UNITS:
        if name.endswith(suffix):
            return unit
    if name in ("duty_factor",):
        return "1"
    return ""


RAW_COLUMNS = ("time_s", "utc_unix_s", "acc_x_ms2", "acc_y_ms2", "acc_z_ms2", "gyr_x_dps", "gyr_y_dps",
               "gyr_z_dps", "clipped", "sensor_tick", "arrival_ns", "seq", "first_tick")


def raw_columns(piece: dict, session) -> dict[str, np.ndarray]:
    """Flat per-sample columns (``RAW_COLUMNS``) from a ``read_raw`` dict."""
    n = len(piece["time_s"])
    acc = piece["acc_ms2"]
    gyr = piece["gyr_dps"] if piece["gyr_dps"] is not None else np.full((n, 3), np.nan)
    return {"time_s": piece["time_s"], "utc_unix_s": np.asarray(session.to_utc(piece["time_s"]), np.float64),
            "acc_x_ms2": acc[:, 0], "acc_y_ms2": acc[:, 1], "acc_z_ms2": acc[:, 2],
            "gyr_x_dps": gyr[:, 0], "gyr_y_dps": gyr[:, 1], "gyr_z_dps": gyr[:, 2],
            "clipped": piece["clipped"], "sensor_tick": piece["sensor_tick"], "arrival_ns": piece["arrival_ns"],
            "seq": piece["seq"], "first_tick": piece["first_tick"]}


def column_info(names) -> list[dict]:
    return [{"name": n, "unit": unit_of(n), "description": DESCRIPTIONS.get(n, "")} for n in names]


def step_columns() -> list[str]:
    return ["sensor", "site"] + list(STEP_DTYPE.names)


def steps_table(steps: np.ndarray) -> dict[str, np.ndarray]:
    """Steps as named columns; ``side`` -> "L"/"R"/"", ``activity`` -> name (strings are what readers expect)."""
    out: dict[str, Any] = {"sensor": steps["sensor"].astype(str), "site": steps["site"].astype(str)}
    for n in STEP_DTYPE.names:
        if n == "side":
            out[n] = np.array([SIDE_NAMES.get(int(v)) or "" for v in steps["side"]], dtype=object)
        elif n == "activity":
            out[n] = np.array([ACTIVITY_NAMES.get(int(v), "unknown") for v in steps["activity"]], dtype=object)
        else:
            out[n] = steps[n]
    return out


def metrics_table(m: np.ndarray) -> dict[str, np.ndarray]:
    out: dict[str, Any] = {}
    for n in METRICS_DTYPE.names:
        out[n] = (np.array([ACTIVITY_NAMES.get(int(v), "unknown") for v in m[n]], dtype=object)
                  if n == "activity" else m[n])
    return out


def session_metadata(store: SessionStore, session_id: str) -> dict[str, Any]:
    s = store.get_session(session_id)
    if s is None:
        raise ExportError(f"no session {session_id!r} in {store.url}")
    r = store.get_runner(s.runner_id)
    try:
        summary = store.session_summary(session_id)
    except StorageError as exc:
        raise ExportError(str(exc)) from None
    d = s.to_dict()
    d["runner"] = r.to_dict() if r else {"id": s.runner_id}
    d["summary"] = summary
    d["raw_sensors"] = store.raw_sensors(session_id)
    d["time_reference"] = ("time_s columns are host monotonic seconds of the recording host; "
                           "utc_unix_s = clock_utc_unix_s + (time_s - clock_monotonic_s)")
    d["exported_unix_s"] = time.time()
    d["exporter"] = "runform " + _version()
    return d


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("runform")
    except Exception:
        return "unknown"


def safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(s))


def json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def dumps(obj) -> str:
    def clean(v):
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(obj), indent=1, default=json_default, allow_nan=False)
