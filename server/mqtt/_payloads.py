"""Builders for the JSON payloads (dicts ready for :func:`encode_json`) from runform's typed events."""
from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np

from runform.dsp import ACTIVITY_NAMES, SIDE_LEFT, SIDE_RIGHT

from ._schema import (SCHEMA_CONTROL, SCHEMA_CUE, SCHEMA_PLAN, SCHEMA_PROGRAM_SESSION, SCHEMA_REPLY, SCHEMA_STATUS,
                      SCHEMA_STEPS)

_STEP_FLOAT_FIELDS = ("ic_s", "tc_s", "gct_ms", "flight_ms", "step_time_ms", "cadence_spm", "cadence_smoothed_spm",
                      "duty_factor", "peak_accel_g", "loading_rate_gps", "peak_vgrf_bw")
_ROUND = {"ic_s": 6, "tc_s": 6}
_INF = (float("inf"), float("-inf"))


def steps_payload(runner: str, sensor: str, site: str, steps: np.ndarray) -> dict:
    """STEP_DTYPE array -> ``runform.steps.v1`` dict (NaN -> null). Loops over STEPS (a few per chunk), never
    over samples; one ``tolist`` per field instead of numpy rounding per field keeps it at ~10 us per step."""
    n = len(steps)
    cols = [steps[f].tolist() for f in _STEP_FLOAT_FIELDS]
    digits = [_ROUND.get(f, 3) for f in _STEP_FLOAT_FIELDS]
    side = steps["side"].tolist()
    clipped = steps["clipped"].tolist()
    activity = steps["activity"].tolist()
    rows = []
    for i in range(n):
        row = {f: (None if c[i] != c[i] or c[i] in _INF else round(c[i], d))
               for f, c, d in zip(_STEP_FLOAT_FIELDS, cols, digits)}
        s = side[i]
        row["side"] = "L" if s == SIDE_LEFT else "R" if s == SIDE_RIGHT else None
        row["clipped"] = bool(clipped[i])
        row["activity"] = ACTIVITY_NAMES.get(activity[i], "unknown")
        rows.append(row)
    return {"schema": SCHEMA_STEPS, "runner": runner, "sensor": sensor, "site": site,
            "time_unix_s": time.time(), "steps": rows}


def cue_payload(runner: str, cue, cue_id: int, *, now_unix_s: float | None = None) -> dict:
    now = time.time() if now_unix_s is None else now_unix_s
    return {"schema": SCHEMA_CUE, "runner": runner, "cue_id": int(cue_id), "kind": cue.kind, "code": cue.code,
            "text": cue.text, "bpm": cue.bpm, "priority": int(cue.priority), "time_s": float(cue.time_s),
            "time_unix_s": now, "ttl_s": float(cue.ttl_s), "expires_unix_s": now + float(cue.ttl_s),
            "trigger_arrival_ns": cue.trigger_arrival_ns}


def status_payload(runner: str, state: str, edge_id: str, *, reason: str | None = None, **extra: Any) -> dict:
    d = {"schema": SCHEMA_STATUS, "runner": runner, "state": state, "edge_id": edge_id,
         "time_unix_s": time.time(), "reason": reason}
    d.update(extra)
    return d


def control_payload(command: str, args: dict | None = None, request_id: str | None = None) -> dict:
    return {"schema": SCHEMA_CONTROL, "request_id": request_id or uuid.uuid4().hex[:16], "command": command,
            "args": dict(args or {})}


def reply_payload(runner: str, *, ok: bool, request_id: str | None, command: str | None, issuer: str | None,
                  reason: str | None = None, state: dict | None = None) -> dict:
    return {"schema": SCHEMA_REPLY, "runner": runner, "request_id": request_id, "command": command,
            "issuer": issuer, "ok": bool(ok), "reason": reason, "time_unix_s": time.time(), "state": state or {}}


def plan_payload(runner: str, *, program: str | None, stage: int | None, n_stages: int | None,
                 targets: dict | None = None, limits: dict | None = None, decision: dict | None = None,
                 set_by: str | None = None, time_unix_s: float | None = None) -> dict:
    """``runform.plan.v1`` (``stage`` 1-based). ``targets``: cadence_spm, tolerance_spm; ``limits``:
    impact_limit_g, gct_limit_ms, imbalance_limit_pct (missing keys -> null: the edge keeps its own)."""
    t, lim = dict(targets or {}), dict(limits or {})
    return {"schema": SCHEMA_PLAN, "runner": runner, "program": program, "stage": stage, "n_stages": n_stages,
            "targets": {k: t.get(k) for k in ("cadence_spm", "tolerance_spm")},
            "limits": {k: lim.get(k) for k in ("impact_limit_g", "gct_limit_ms", "imbalance_limit_pct")},
            "decision": decision, "set_by": set_by, "time_unix_s": time.time() if time_unix_s is None else time_unix_s}


def program_session_payload(runner: str, session_key: str, *, program: str, stage: int, pain_before: int | None,
                            pain_after: int | None, completed_fraction: float, run_time_s: float,
                            planned_run_time_s: float, run_steps: int, impact_sum_g: float, start_unix_s: float,
                            end_unix_s: float, final: bool) -> dict:
    """``runform.program_session.v1`` (``stage`` 1-based)."""
    return {"schema": SCHEMA_PROGRAM_SESSION, "runner": runner, "session_key": session_key, "program": program,
            "stage": int(stage), "pain_before": pain_before, "pain_after": pain_after,
            "completed_fraction": round(min(1.0, max(0.0, float(completed_fraction))), 4),
            "run_time_s": round(float(run_time_s), 3), "planned_run_time_s": round(float(planned_run_time_s), 3),
            "run_steps": int(run_steps), "impact_sum_g": round(float(impact_sum_g), 3),
            "start_unix_s": float(start_unix_s), "end_unix_s": float(end_unix_s), "final": bool(final)}
