"""Garmin FIT activity export (fit-tool): one ``record`` per second with running dynamics.

Per second (from the stored 1 s metrics, or from the steps when a session has none):

=====================  ==================================================================================
FIT record field       from
=====================  ==================================================================================
``cadence`` (rpm)      cadence_spm / 2 (FIT running cadence counts strides per minute), integer part ...
``fractional_cadence`` ... and the fraction, so cadence + fractional_cadence = spm / 2 exactly to 1/128
``stance_time`` (ms)   mean ground contact time (gct_ms)
``stance_time_percent`` duty factor x 100 (contact time / stride time)
``stance_time_balance`` GCT left share, % (balance_left_pct; 50 = symmetric)
``activity_type``      running / walking / generic from the detected activity
=====================  ==================================================================================

Vertical oscillation, vertical ratio and step length are not written: runform does not measure them (a
sacrum sensor could estimate vertical oscillation, which is not implemented yet). ``lap`` and ``session`` carry
the averages (avg_running_cadence, avg_stance_time, avg_stance_time_percent, avg_stance_time_balance,
total_strides); timer start/stop events bracket the records; times are UTC via the session's clock mapping.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from runform.dsp import ACTIVITY_RUNNING, ACTIVITY_WALKING, SIDE_LEFT, SIDE_RIGHT

from ._common import ExportError


def _per_second(store, session_id: str, session) -> dict[str, np.ndarray]:
    """1 s rows: time_s, cadence_spm, gct_ms, duty_factor, balance_left_pct, activity."""
    m = store.read_metrics(session_id)
    if len(m):
        return {k: m[k] for k in ("time_s", "cadence_spm", "gct_ms", "duty_factor", "balance_left_pct", "activity")}
    st = store.read_steps(session_id)
    if not len(st):
        raise ExportError(f"session {session_id} has neither metrics nor steps: nothing for a FIT activity")
    sec = np.floor(st["ic_s"]).astype(np.int64)
    uniq, inv = np.unique(sec, return_inverse=True)

    def agg(x, fn):
        out = np.full(len(uniq), np.nan)
        for i in range(len(uniq)):  # one iteration per second of activity (not per sample)
            v = x[inv == i]
            v = v[np.isfinite(v)]
            if v.size:
                out[i] = fn(v)
        return out
    gl = agg(np.where(st["side"] == SIDE_LEFT, st["gct_ms"], np.nan), np.mean)
    gr = agg(np.where(st["side"] == SIDE_RIGHT, st["gct_ms"], np.nan), np.mean)
    act = agg(st["activity"].astype(float), np.median)
    return {"time_s": uniq.astype(float) + 1.0, "cadence_spm": agg(st["cadence_spm"], np.median),
            "gct_ms": agg(st["gct_ms"], np.mean), "duty_factor": agg(st["duty_factor"], np.mean),
            "balance_left_pct": gl / (gl + gr) * 100, "activity": np.nan_to_num(act, nan=-1).astype(int)}


def export_fit(store, session_id: str, out) -> list[Path]:
    try:
        from fit_tool.fit_file_builder import FitFileBuilder
        from fit_tool.profile.messages.activity_message import ActivityMessage
        from fit_tool.profile.messages.device_info_message import DeviceInfoMessage
        from fit_tool.profile.messages.event_message import EventMessage
        from fit_tool.profile.messages.file_id_message import FileIdMessage
        from fit_tool.profile.messages.lap_message import LapMessage
        from fit_tool.profile.messages.record_message import RecordMessage
        from fit_tool.profile.messages.session_message import SessionMessage
        from fit_tool.profile.profile_type import (Activity, ActivityType, Event, EventType, FileType,
                                                   Manufacturer, Sport, SubSport)
    except ImportError:
        raise ExportError("FIT export needs fit-tool: pip install 'runform[export]'") from None
    session = store.get_session(session_id)
    if session is None:
        raise ExportError(f"no session {session_id!r}")
    rows = _per_second(store, session_id, session)
    t = rows["time_s"]
    utc = np.asarray(session.to_utc(t), float)
    if not np.all(np.isfinite(utc)):  # no clock mapping: anchor the first row at the session start
        utc = session.started_unix_s + (t - t[0])
    ms = np.round(utc * 1000).astype(np.int64)
    b = FitFileBuilder(auto_define=True, min_string_size=50)
    fid = FileIdMessage()
    fid.type = FileType.ACTIVITY
    fid.manufacturer = Manufacturer.DEVELOPMENT.value
    fid.product = 0
    fid.serial_number = abs(hash(session.id)) % 0xFFFFFFFF
    fid.time_created = int(ms[0])
    b.add(fid)
    dev = DeviceInfoMessage()
    dev.timestamp = int(ms[0])
    dev.manufacturer = Manufacturer.DEVELOPMENT.value
    dev.product_name = "runform"
    b.add(dev)
    ev = EventMessage()
    ev.event, ev.event_type, ev.timestamp = Event.TIMER, EventType.START, int(ms[0])
    b.add(ev)
    recs = []
    strides = 0.0
    for i in range(len(t)):  # one FIT record per second (a file format writer: per row by nature)
        r = RecordMessage()
        r.timestamp = int(ms[i])
        cad = rows["cadence_spm"][i]
        if math.isfinite(cad):
            half = cad / 2.0
            r.cadence = int(math.floor(half))
            r.fractional_cadence = half - math.floor(half)
            strides += half / 60.0
        if math.isfinite(rows["gct_ms"][i]):
            r.stance_time = float(rows["gct_ms"][i])
        if math.isfinite(rows["duty_factor"][i]):
            r.stance_time_percent = float(rows["duty_factor"][i] * 100)
        if math.isfinite(rows["balance_left_pct"][i]):
            r.stance_time_balance = float(rows["balance_left_pct"][i])
        a = int(rows["activity"][i])
        r.activity_type = (ActivityType.RUNNING if a == ACTIVITY_RUNNING else
                           ActivityType.WALKING if a == ACTIVITY_WALKING else ActivityType.GENERIC)
        recs.append(r)
    b.add_all(recs)
    end = int(ms[-1])
    ev = EventMessage()
    ev.event, ev.event_type, ev.timestamp = Event.TIMER, EventType.STOP_ALL, end
    b.add(ev)
    elapsed = (end - int(ms[0])) / 1000.0

    def nanmean(x):
        x = x[np.isfinite(x)]
        return float(x.mean()) if x.size else None
    run = rows["activity"] == ACTIVITY_RUNNING
    sel = run if run.any() else np.ones(len(t), bool)
    avg = {"cad": nanmean(rows["cadence_spm"][sel]), "gct": nanmean(rows["gct_ms"][sel]),
           "duty": nanmean(rows["duty_factor"][sel]), "bal": nanmean(rows["balance_left_pct"][sel])}
    for cls in (LapMessage, SessionMessage):
        m = cls()
        m.timestamp = end
        m.start_time = int(ms[0])
        m.total_elapsed_time = elapsed
        m.total_timer_time = elapsed
        m.event, m.event_type = Event.LAP if cls is LapMessage else Event.SESSION, EventType.STOP
        m.sport = Sport.RUNNING
        m.sub_sport = SubSport.GENERIC
        if avg["cad"] is not None:
            m.avg_running_cadence = int(avg["cad"] / 2)
            m.avg_fractional_cadence = avg["cad"] / 2 - int(avg["cad"] / 2)
        if avg["gct"] is not None:
            m.avg_stance_time = avg["gct"]
        if avg["duty"] is not None:
            m.avg_stance_time_percent = avg["duty"] * 100
        if avg["bal"] is not None:
            m.avg_stance_time_balance = avg["bal"]
        m.total_strides = int(round(strides))
        if cls is SessionMessage:
            m.first_lap_index = 0
            m.num_laps = 1
        b.add(m)
    act = ActivityMessage()
    act.timestamp = end
    act.total_timer_time = elapsed
    act.num_sessions = 1
    act.type = Activity.MANUAL
    act.event, act.event_type = Event.ACTIVITY, EventType.STOP
    b.add(act)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    b.build().to_file(str(out))
    return [out]
