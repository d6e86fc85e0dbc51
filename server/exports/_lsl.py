"""Lab Streaming Layer outlets (pylsl; the wheels bundle liblsl).

Per runner: one stream per sensor (type ``IMU``, channels acc x/y/z in m/s^2 and, when the sensor has a gyro,
gyr x/y/z in deg/s, ``cf_double64``, nominal rate = the sensor's) and one irregular-rate stream of steps (type
``GaitEvents``: side (0 L, 1 R, -1), gct_ms, flight_ms, step_time_ms, cadence_spm, duty_factor, peak_accel_g,
activity; timestamp = initial contact). Channel labels, units, the sensor site and the session go into the
stream's XML description; ``source_id`` is stable (``runform-{runner}-{sensor}``) so LSL recorders (LabRecorder)
re-attach after a restart.

Timestamps: sample ``time_s`` + ``clock_offset_s``. On Linux ``pylsl.local_clock()`` *is* the host monotonic
clock (``CLOCK_MONOTONIC``), which is runform's ``time_s`` clock, so live data from this host needs offset 0 and
lines up with every other LSL stream of the machine; for data from another host pass the offset between the
clocks. Replays (:func:`replay_session`) shift the stored times to "now".
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from ._common import ExportError

STEP_CHANNELS = ("side", "gct_ms", "flight_ms", "step_time_ms", "cadence_spm", "duty_factor", "peak_accel_g",
                 "activity")


def _pylsl():
    try:
        import pylsl
        pylsl.library_version()
    except Exception as exc:  # ImportError, or liblsl failed to load
        raise ExportError(f"Lab Streaming Layer unavailable: {exc} (pip install 'runform[export]')") from None
    return pylsl


def lsl_available() -> str | None:
    """None if pylsl + liblsl load, else the reason."""
    try:
        _pylsl()
    except ExportError as exc:
        return str(exc)
    return None


class LslOutlet:
    """Outlets for one runner (created lazily per sensor on the first push).

    Parameters
    ----------
    runner : runner id (stream names ``runform {runner} {site}`` and ``runform {runner} steps``)
    session : dict | None   extra description (session id, program...) written into every stream's XML
    clock_offset_s : added to ``time_s`` to get LSL timestamps (0 for data timed on this host)
    """

    def __init__(self, runner: str, session: dict | None = None, *, clock_offset_s: float = 0.0) -> None:
        self.pylsl = _pylsl()
        self.runner = runner
        self.session = dict(session or {})
        self.clock_offset_s = float(clock_offset_s)
        self.outlets_: dict[str, Any] = {}
        self._gyro: dict[str, bool] = {}
        self.samples_pushed_ = 0
        self.steps_pushed_ = 0

    def _desc(self, info, labels_units, site: str | None, sensor_id: str | None) -> None:
        d = info.desc()
        chans = d.append_child("channels")
        for label, unit, typ in labels_units:
            c = chans.append_child("channel")
            c.append_child_value("label", label)
            c.append_child_value("unit", unit)
            c.append_child_value("type", typ)
        acq = d.append_child("acquisition")
        acq.append_child_value("manufacturer", "runform")
        acq.append_child_value("runner", self.runner)
        if sensor_id:
            acq.append_child_value("sensor_id", sensor_id)
        if site:
            acq.append_child_value("site", site)
        acq.append_child_value("time_reference", "host monotonic seconds + clock_offset_s")
        acq.append_child_value("clock_offset_s", repr(self.clock_offset_s))
        for k, v in self.session.items():
            acq.append_child_value(str(k), str(v))

    def _imu(self, sensor_id: str, site: str, fs: float | None, gyro: bool):
        o = self.outlets_.get(sensor_id)
        if o is not None:
            return o
        pl = self.pylsl
        ch = [(f"acc_{a}", "m/s^2", "Acc") for a in "xyz"]
        if gyro:
            ch += [(f"gyr_{a}", "deg/s", "Gyro") for a in "xyz"]
        info = pl.StreamInfo(f"runform {self.runner} {site or sensor_id}", "IMU", len(ch), float(fs or 0.0),
                             pl.cf_double64, f"runform-{self.runner}-{sensor_id}")
        self._desc(info, ch, site, sensor_id)
        o = pl.StreamOutlet(info, chunk_size=0, max_buffered=360)
        self.outlets_[sensor_id] = o
        self._gyro[sensor_id] = gyro
        return o

    def push_raw(self, sensor_id: str, site: str, time_s, acc_ms2, gyr_dps=None,
                 sampling_rate_hz: float | None = None) -> None:
        t = np.asarray(time_s, np.float64)
        if t.size == 0:
            return
        o = self._imu(sensor_id, site, sampling_rate_hz, gyr_dps is not None)
        x = np.asarray(acc_ms2, np.float64)
        if self._gyro[sensor_id]:
            g = np.asarray(gyr_dps, np.float64) if gyr_dps is not None else np.full((len(t), 3), np.nan)
            x = np.hstack([x, g])
        o.push_chunk(np.ascontiguousarray(x), (t + self.clock_offset_s).tolist())
        self.samples_pushed_ += len(t)

    def _steps_outlet(self):
        o = self.outlets_.get("__steps__")
        if o is None:
            pl = self.pylsl
            info = pl.StreamInfo(f"runform {self.runner} steps", "GaitEvents", len(STEP_CHANNELS),
                                 pl.IRREGULAR_RATE, pl.cf_double64, f"runform-{self.runner}-steps")
            from ._common import unit_of
            self._desc(info, [(c, unit_of(c) or "1", "Gait") for c in STEP_CHANNELS], None, None)
            o = pl.StreamOutlet(info)
            self.outlets_["__steps__"] = o
        return o

    def push_steps(self, steps) -> None:
        """STEP_DTYPE array, or step dicts of a ``runform.steps.v1`` payload."""
        if isinstance(steps, np.ndarray):
            if not len(steps):
                return
            x = np.column_stack([steps[c].astype(np.float64) for c in STEP_CHANNELS])
            ts = steps["ic_s"].astype(np.float64)
        else:
            rows = list(steps)
            if not rows:
                return
            from runform.dsp import ACTIVITY_NAMES
            codes = {v: k for k, v in ACTIVITY_NAMES.items()}
            conv = {"side": lambda v: {"L": 0, "R": 1}.get(v, -1), "activity": lambda v: codes.get(v, -1)}
            x = np.array([[conv[c](r.get(c)) if c in conv else (np.nan if r.get(c) is None else r[c])
                           for c in STEP_CHANNELS] for r in rows], np.float64)
            ts = np.array([r["ic_s"] for r in rows], np.float64)
        self._steps_outlet().push_chunk(np.ascontiguousarray(x), (ts + self.clock_offset_s).tolist())
        self.steps_pushed_ += len(ts)

    def close(self) -> None:
        self.outlets_.clear()  # StreamOutlet destructors unregister the streams


class LslForwarder:
    """Ingestor listener: forwards committed raw blocks and steps to per-runner :class:`LslOutlet` s."""

    def __init__(self, clock_offset_s: float = 0.0) -> None:
        _pylsl()
        self.clock_offset_s = clock_offset_s
        self.outlets_: dict[str, LslOutlet] = {}

    def __call__(self, event: str, session_id: str, runner: str, obj) -> None:
        o = self.outlets_.get(runner)
        if o is None:
            o = self.outlets_[runner] = LslOutlet(runner, {"session_id": session_id},
                                                  clock_offset_s=self.clock_offset_s)
        if event == "raw":
            o.push_raw(obj.sensor_id, obj.site, obj.time_s, obj.acc_ms2, obj.gyr_dps, obj.sampling_rate_hz)
        elif event == "steps":
            o.push_steps(obj[2])


def replay_session(store, session_id: str, *, speed: float = 1.0, duration_s: float | None = None,
                   block_s: float = 0.05, wait_for_consumers_s: float = 0.0) -> dict:
    """Stream a stored session to LSL in (``speed`` x) real time, timestamps shifted to now."""
    s = store.get_session(session_id)
    if s is None:
        raise ExportError(f"no session {session_id!r}")
    raw = {x["sensor_id"]: store.read_raw(session_id, x["sensor_id"]) for x in store.raw_sensors(session_id)}
    steps = store.read_steps(session_id)
    t_all = [r["time_s"][0] for r in raw.values() if len(r["time_s"])] + ([steps["ic_s"][0]] if len(steps) else [])
    if not t_all:
        raise ExportError(f"session {session_id} is empty")
    t0 = min(t_all)
    pl = _pylsl()
    start = pl.local_clock()
    out = LslOutlet(s.runner_id, {"session_id": s.id, "replay": "true"}, clock_offset_s=start - t0)
    fs = {x.sensor_id: x.sampling_rate_hz for x in s.sensors}
    for sid, r in raw.items():  # create the outlets before data flows so inlets can resolve them
        out._imu(sid, str(r["site"][0]) if len(r["site"]) else "", fs.get(sid), r["gyr_dps"] is not None)
    out._steps_outlet()
    if wait_for_consumers_s > 0:
        deadline = time.monotonic() + wait_for_consumers_s
        while time.monotonic() < deadline and not all(o.have_consumers() for o in out.outlets_.values()):
            time.sleep(0.02)
    t_end = max([r["time_s"][-1] for r in raw.values() if len(r["time_s"])] + ([steps["ic_s"][-1]] if len(steps) else []))
    if duration_s is not None:
        t_end = min(t_end, t0 + duration_s)
    pos = {sid: 0 for sid in raw}
    spos = 0
    cur = t0
    while cur <= t_end:
        nxt = cur + block_s
        for sid, r in raw.items():
            j = int(np.searchsorted(r["time_s"], min(nxt, t_end + 1e-9), side="right" if nxt > t_end else "left"))
            i = pos[sid]
            if j > i:
                out.push_raw(sid, str(r["site"][i]), r["time_s"][i:j], r["acc_ms2"][i:j],
                             None if r["gyr_dps"] is None else r["gyr_dps"][i:j], fs.get(sid))
                pos[sid] = j
        k = int(np.searchsorted(steps["ic_s"], nxt)) if len(steps) else 0
        if k > spos:
            out.push_steps(steps[spos:k])
            spos = k
        cur = nxt
        delay = start + (cur - t0) / speed - pl.local_clock()
        if delay > 0:
            time.sleep(delay)
    res = {"samples": out.samples_pushed_, "steps": out.steps_pushed_, "streams": len(out.outlets_)}
    time.sleep(0.2)  # let inlets drain before the outlets go away
    out.close()
    return res
