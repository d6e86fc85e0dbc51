"""Running IMU simulator with exact ground truth.

Synthesises what a 3-axis accelerometer (and gyroscope) on the foot (instep), the shank or the sacrum reads
while a runner stands, walks and runs, together with the TRUE gait events used to build the signal.  Shapes
come from real recordings (sacral force-plate treadmill running, shank treadmill running/walking, multi-site
overground IMUs), condensed into ``_sim_templates.py`` by ``tools/fit_sim_templates.py``; nothing is read
from the recordings at run time.  See docs/simulator.md for the model, the frames and the sign conventions.

Public API
----------
RunnerProfile      who runs: mass, cadence, speed, contact time, foot strike, impact, asymmetry, variability
Segment            one part of a session: ``Segment("run", 60.0, {"cadence_spm": 165})``
simulate           whole recording for several sites -> SimulatedRecording (signals + true events)
SimulatorStream    the same signal generated incrementally for one site, forever, with bounded memory
SIM_EVENT_DTYPE    structured dtype of the true steps
SITES              valid site names

Body frame (every site): x = antero-posterior forward, y = medio-lateral LEFT, z = vertical up.
Sensor frame = R @ body frame (``orientation``).  Acceleration is proper acceleration (gravity included:
standing still reads +1 g along body z).
"""
from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from . import _sim_model as M

__all__ = [
    "RunnerProfile", "Segment", "SiteSignal", "SimulatedRecording", "SimulatorStream", "simulate",
    "SIM_EVENT_DTYPE", "SITES", "FOOT_STRIKES", "ACTIVITIES",
]

G0 = 9.80665
SITES = ("foot_left", "foot_right", "shank_left", "shank_right", "sacrum")
_SITE_ALIASES = {"foot": "foot_left", "shank": "shank_left", "sacrum_center": "sacrum", "hip": "sacrum"}
_SITE_CODES = {s: i for i, s in enumerate(SITES)}
FOOT_STRIKES = tuple(M.STRIKE_CODES)
ACTIVITIES = ("stand", "walk", "run")

#: One row per TRUE step (stance of one foot).  Codes: side 0 = left, 1 = right; activity 1 = walking,
#: 2 = running (same codes as runform.dsp ACTIVITY_*); foot_strike 0 rearfoot, 1 midfoot, 2 forefoot.
SIM_EVENT_DTYPE = np.dtype([
    ("ic_s", np.float64),  # initial contact, true time
    ("tc_s", np.float64),  # terminal contact (toe-off), true time
    ("side", np.int8),
    ("activity", np.int8),
    ("gct_ms", np.float64),  # tc - ic
    ("flight_ms", np.float64),  # running: next IC (other foot) - this TC; NaN walking / last step of a bout
    ("double_support_ms", np.float64),  # walking: this TC - next IC; NaN running / last step
    ("step_time_ms", np.float64),  # previous IC -> this IC (NaN for the first step of a bout)
    ("cadence_spm", np.float64),  # 60000 / step_time_ms
    ("next_step_time_ms", np.float64),  # this IC -> next IC as scheduled (NaN for the last step of a bout)
    ("speed_ms", np.float64),
    ("foot_strike", np.int8),
    ("impact_peak_g", np.float64),  # target peak axial tibial (shank) acceleration of this step
    ("peak_accel_g_foot", np.float64),  # true noise-free |acc| maximum, IC .. IC+120 ms, foot of this side
    ("peak_accel_g_shank", np.float64),  # same for the shank of this side
    ("peak_accel_g_sacrum", np.float64),  # same for the sacrum
    ("bout", np.int32),  # index of the continuous walk/run bout
    ("step_index", np.int64),  # running count of true steps since the start
])


@dataclass(frozen=True)
class RunnerProfile:
    """Who is running and how.  ``None`` values are derived (see docs/simulator.md).

    Parameters
    ----------
    mass_kg : body mass (used for force-type outputs; the signals are in g, so mass does not change them).
    cadence_spm, speed_ms : running cadence (steps/min, both feet) and speed.
    gct_ms : running ground contact time; None = from speed and cadence (fitted to the sacrum treadmill data).
    foot_strike : "rearfoot", "midfoot" or "forefoot".
    impact_peak_g : running peak axial shank acceleration (tibial shock); None = about 3 g per m/s for rearfoot,
        x0.7 midfoot, x0.55 forefoot.
    asymmetry_pct : left/right asymmetry of contact time and impact; + = left longer and heavier.  Left GCT is
        gct x (1 + a/200), right gct x (1 - a/200); impact x (1 +- a/100).
    step_cv, gct_cv, impact_cv : step-to-step coefficients of variation (normal, clipped at 3 SD).
    walk_cadence_spm, walk_speed_ms : defaults for "walk" segments.
    activity : activity when no segments are given ("run", "walk" or "stand").
    """

    mass_kg: float = 70.0
    cadence_spm: float = 170.0
    speed_ms: float = 3.3
    gct_ms: float | None = None
    foot_strike: str = "rearfoot"
    impact_peak_g: float | None = None
    asymmetry_pct: float = 0.0
    step_cv: float = 0.02
    gct_cv: float = 0.03
    impact_cv: float = 0.08
    walk_cadence_spm: float = 115.0
    walk_speed_ms: float = 1.35
    activity: str = "run"

    def __post_init__(self):
        if self.foot_strike not in M.STRIKE_CODES:
            raise ValueError(f"foot_strike must be one of {FOOT_STRIKES}, got {self.foot_strike!r}")
        if self.activity not in ACTIVITIES:
            raise ValueError(f"activity must be one of {ACTIVITIES}, got {self.activity!r}")
        for name in ("mass_kg", "cadence_spm", "speed_ms", "walk_cadence_spm", "walk_speed_ms"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if not 40.0 <= self.cadence_spm <= 260.0 or not 40.0 <= self.walk_cadence_spm <= 200.0:
            raise ValueError(f"cadence out of range (running {self.cadence_spm}, walking {self.walk_cadence_spm} spm)")
        if self.gct_ms is not None and not 0 < self.gct_ms < 60000.0 / self.cadence_spm:
            raise ValueError(f"gct_ms={self.gct_ms} must be positive and shorter than the step time "
                             f"{60000.0 / self.cadence_spm:.0f} ms at {self.cadence_spm} spm (running has flight)")
        if self.impact_peak_g is not None and not self.impact_peak_g > 1.0:
            raise ValueError(f"impact_peak_g must be > 1 g, got {self.impact_peak_g}")
        if not -60.0 <= self.asymmetry_pct <= 60.0:
            raise ValueError(f"asymmetry_pct must be within +-60, got {self.asymmetry_pct}")
        for name in ("step_cv", "gct_cv", "impact_cv"):
            if not 0.0 <= getattr(self, name) <= 0.3:
                raise ValueError(f"{name} must be within 0..0.3, got {getattr(self, name)}")


_PROFILE_FIELDS = {f.name for f in dataclasses.fields(RunnerProfile)}


@dataclass(frozen=True)
class Segment:
    """One part of a session: ``activity`` ("stand" | "walk" | "run") for ``duration_s`` seconds, with profile
    ``overrides`` (any RunnerProfile field; for "walk", cadence_spm/speed_ms default to the profile's walk_*)."""

    activity: str
    duration_s: float
    overrides: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if self.activity not in ACTIVITIES:
            raise ValueError(f"Segment activity must be one of {ACTIVITIES}, got {self.activity!r}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0) and self.duration_s != math.inf:
            raise ValueError(f"Segment duration_s must be positive, got {self.duration_s!r}")
        bad = set(self.overrides) - _PROFILE_FIELDS
        if bad:
            raise ValueError(f"unknown Segment override(s) {sorted(bad)}; valid: {sorted(_PROFILE_FIELDS)}")


def _plans(profile: RunnerProfile, segments: Sequence[Segment]) -> list[M._SegPlan]:
    plans, t, bout, prev_gait = [], 0.0, -1, False
    for seg in segments:
        ov = dict(seg.overrides)
        if seg.activity == "walk":
            ov.setdefault("cadence_spm", profile.walk_cadence_spm)
            ov.setdefault("speed_ms", profile.walk_speed_ms)
        if seg.activity == "walk":
            # walking contact is longer than the step: the profile's running-only GCT check does not apply
            d = {k: v for k, v in ov.items() if k != "gct_ms"}
            d["gct_ms"] = None
            p = dataclasses.replace(profile, **d)
            gct = ov.get("gct_ms")
        else:
            p = dataclasses.replace(profile, **ov)
            gct = p.gct_ms
        gait = seg.activity != "stand"
        if gait and not prev_gait:
            bout += 1
        prev_gait = gait
        plans.append(M._SegPlan(
            start_s=t, end_s=t + seg.duration_s, activity=M.ACT_CODES[seg.activity],
            cadence_spm=float(ov.get("cadence_spm", p.cadence_spm)), speed_ms=float(p.speed_ms),
            gct_ms=None if gct is None else float(gct), strike=M.STRIKE_CODES[p.foot_strike],
            impact_peak_g=p.impact_peak_g, asymmetry_pct=p.asymmetry_pct, step_cv=p.step_cv, gct_cv=p.gct_cv,
            impact_cv=p.impact_cv, bout=bout if gait else -1))
        t += seg.duration_s
    return plans


def _resolve_site(site: str) -> str:
    s = _SITE_ALIASES.get(site, site)
    if s not in _SITE_CODES:
        raise ValueError(f"unknown site {site!r}; valid: {SITES} (aliases: {sorted(_SITE_ALIASES)})")
    return s


def _site_kind_side(site: str) -> tuple[str, int]:
    if site == "sacrum":
        return "sacrum", -1
    kind, side = site.split("_")
    return kind, (M.LEFT if side == "left" else M.RIGHT)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _orientation(spec, seed: int, site: str) -> np.ndarray:
    if isinstance(spec, Mapping):
        spec = spec.get(site, spec.get(_SITE_ALIASES.get(site, site), "aligned"))
    if isinstance(spec, str):
        if spec == "aligned":
            return np.eye(3)
        if spec == "random":
            return _random_rotation(np.random.default_rng([int(seed), 29, _SITE_CODES[site]]))
        raise ValueError(f"orientation must be 'random', 'aligned' or a 3x3 rotation matrix, got {spec!r}")
    r = np.asarray(spec, dtype=np.float64)
    if r.shape != (3, 3) or not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or np.linalg.det(r) < 0:
        raise ValueError(f"orientation matrix must be a proper 3x3 rotation (R @ R.T = I, det = +1), got {r!r}")
    return r


@dataclass(frozen=True)
class SiteSignal:
    """The samples of one simulated sensor.

    acc_ms2 (n,3) sensor frame incl. gravity, clipped at +-range_g; gyr_dps (n,3) or None; time_s (n,) TRUE
    time of each sample; sensor_tick (n,) int64 on the sensor's drifting clock; tick_hz its nominal rate;
    sampling_rate_hz nominal sample rate; orientation R (sensor = R @ body); clipped (n,) any axis at range.
    """

    site: str
    acc_ms2: np.ndarray
    gyr_dps: np.ndarray | None
    time_s: np.ndarray
    sensor_tick: np.ndarray
    tick_hz: float
    sampling_rate_hz: float
    orientation: np.ndarray
    clipped: np.ndarray
    range_g: float


@dataclass(frozen=True)
class SimulatedRecording:
    signals: dict
    events: np.ndarray
    profile: RunnerProfile
    segments: tuple
    duration_s: float
    seed: int

    def steps_for_site(self, site: str) -> np.ndarray:
        """The true steps as a runform.dsp STEP_DTYPE array (peak_accel_g taken from ``site``), for comparing
        detector output with the truth field by field.  Side-specific foot/shank sites keep only their side."""
        from runform.dsp import STEP_DTYPE  # local import: the simulator does not need the DSP

        s = _resolve_site(site)
        kind, side = _site_kind_side(s)
        ev = self.events if side < 0 else self.events[self.events["side"] == side]
        out = np.zeros(len(ev), dtype=STEP_DTYPE)
        fs = self.signals[site].sampling_rate_hz if site in self.signals else np.nan
        out["ic_s"], out["tc_s"], out["side"] = ev["ic_s"], ev["tc_s"], ev["side"]
        out["ic_index"], out["tc_index"] = ev["ic_s"] * fs, ev["tc_s"] * fs
        out["gct_ms"], out["flight_ms"] = ev["gct_ms"], ev["flight_ms"]
        out["step_time_ms"], out["cadence_spm"] = ev["step_time_ms"], ev["cadence_spm"]
        out["cadence_smoothed_spm"] = ev["cadence_spm"]
        out["duty_factor"] = ev["gct_ms"] / (2.0 * ev["next_step_time_ms"])
        out["peak_accel_g"] = ev[f"peak_accel_g_{kind}"]
        out["loading_rate_gps"] = np.nan
        out["peak_vgrf_bw"] = np.nan
        out["activity"] = ev["activity"]
        out["emitted_index"] = -1
        if site in self.signals:
            sig = self.signals[site]
            idx = np.clip(np.searchsorted(sig.time_s, ev["ic_s"]), 0, len(sig.time_s) - 1)
            end = np.clip(np.searchsorted(sig.time_s, ev["ic_s"] + 0.12), 0, len(sig.time_s))
            out["clipped"] = [bool(sig.clipped[a:b].any()) for a, b in zip(idx, end)]
        return out


def _rotate(v: np.ndarray, R: np.ndarray) -> np.ndarray:
    """v @ R.T row by row with elementwise arithmetic: bitwise identical however the rows are chunked
    (a BLAS matmul may round differently for different block sizes)."""
    return v[:, 0:1] * R[:, 0] + v[:, 1:2] * R[:, 1] + v[:, 2:3] * R[:, 2]


_NOISE_BLOCK = 4096  # samples per noise block (fixed: read() chunking never changes the noise)
_EVENT_LOOKAHEAD_S = 4.0  # steps are generated this far beyond the samples (>= one stride + a swing)


class SimulatorStream:
    """Incremental simulator for ONE site: ``read(n)`` returns the next n samples, forever.

    Same signal model and same samples as :func:`simulate` for the same arguments, however ``read`` is
    chunked.  Memory is bounded: only the steps around the current time are kept, and the truth history
    is a bounded ring (``max_history_steps``).  After the last segment the runner stands forever; with
    ``segments=None`` the profile's activity continues forever.

    Attributes after each read: ``last_clipped_`` (bool array of the samples just returned),
    ``samples_read_``, ``time_s_`` (true time of the next sample).
    """

    def __init__(self, profile: RunnerProfile | None = None, site: str = "sacrum", sampling_rate_hz: float = 500.0,
                 seed: int = 0, segments: Sequence[Segment] | None = None, *, noise_g: float = 0.005,
                 noise_dps: float = 0.3, orientation="random", range_g: float = 16.0, gyro: bool = True,
                 gyro_range_dps: float = 2000.0, rate_error_ppm: float = 0.0, clock_drift_ppm: float = 0.0,
                 tick_hz: float | None = None, tick_offset: int = 0, start_time_s: float = 0.0,
                 max_history_steps: int = 20000, _truth_peaks: bool = True):
        self.profile = profile if profile is not None else RunnerProfile()
        self.site_name = site
        self.site = _resolve_site(site)
        self._kind, self._side = _site_kind_side(self.site)
        if not (math.isfinite(sampling_rate_hz) and sampling_rate_hz > 0):
            raise ValueError(f"sampling_rate_hz must be positive, got {sampling_rate_hz!r}")
        if not (range_g > 1.0):
            raise ValueError(f"range_g must be > 1 g (gravity alone reaches 1 g), got {range_g!r}")
        if noise_g < 0 or noise_dps < 0:
            raise ValueError("noise_g and noise_dps must be >= 0")
        if abs(rate_error_ppm) >= 1e5 or abs(clock_drift_ppm) >= 1e5:
            raise ValueError("rate_error_ppm and clock_drift_ppm must be within +-100000 ppm")
        self.sampling_rate_hz = float(sampling_rate_hz)
        self.actual_rate_hz = self.sampling_rate_hz * (1.0 + rate_error_ppm * 1e-6)
        self.tick_hz = float(tick_hz) if tick_hz is not None else self.sampling_rate_hz
        self.tick_rate_true_hz = self.tick_hz * (1.0 + clock_drift_ppm * 1e-6)
        self.tick_offset = int(tick_offset)
        self.start_time_s = float(start_time_s)
        self.seed = int(seed)
        self.noise_g, self.noise_dps = float(noise_g), float(noise_dps)
        self.range_g, self.gyro_range_dps = float(range_g), float(gyro_range_dps)
        self.gyro = bool(gyro)
        self.rate_error_ppm, self.clock_drift_ppm = float(rate_error_ppm), float(clock_drift_ppm)
        self.orientation = _orientation(orientation, self.seed, self.site)
        if segments is None:
            segments = [Segment(self.profile.activity, math.inf)]
        self.segments = tuple(segments)
        self._plans = _plans(self.profile, self.segments)
        ends = self._plans[-1].end_s if self._plans else 0.0
        if math.isfinite(ends):  # stand forever afterwards
            self._plans.append(M._SegPlan(ends, math.inf, M.ACT_STAND, 1.0, 1.0, None, 0, None, 0, 0, 0, 0, -1))
        self._sched = M._StepScheduler(self._plans, self.seed, end_s=None if not math.isfinite(ends) else ends)
        self._steps = np.zeros(0, dtype=M.STEP_INTERNAL_DTYPE)
        self._history = collections.deque(maxlen=int(max_history_steps))
        self._pending = np.zeros(0, dtype=SIM_EVENT_DTYPE)  # generated, not yet in history (tc > time_s_)
        self._step_count = 0
        self._prev_ic = (-1, math.nan)  # (bout, ic) of the previous step
        self._gen_until = -math.inf
        self.samples_read_ = 0
        self.last_clipped_ = np.zeros(0, dtype=bool)
        self._drain_pos = 0
        self._truth_peaks = bool(_truth_peaks)

    # --------------------------------------------------------------------------------- truth
    @property
    def time_s_(self) -> float:
        return self.start_time_s + self.samples_read_ / self.actual_rate_hz

    def _ensure_steps(self, t_until: float) -> None:
        if t_until <= self._gen_until:
            return
        # generate in whole seconds so the step table does not depend on the read size
        t_until = math.ceil(t_until)
        new = self._sched.generate_until(t_until - self.start_time_s)
        self._gen_until = t_until
        if len(new):
            self._steps = np.concatenate([self._steps, new])
            self._pending = np.concatenate([self._pending, self._truth_rows(new)])

    def _truth_rows(self, new: np.ndarray) -> np.ndarray:
        out = np.zeros(len(new), dtype=SIM_EVENT_DTYPE)
        t0 = self.start_time_s
        out["ic_s"], out["tc_s"] = new["ic_s"] + t0, new["tc_s"] + t0
        out["side"], out["activity"] = new["side"], new["activity"]
        out["gct_ms"] = (new["tc_s"] - new["ic_s"]) * 1000.0
        nxt = np.where(new["last"], np.nan, new["step_time_s"] * 1000.0)
        out["next_step_time_ms"] = nxt
        run = new["activity"] == M.ACT_RUN
        out["flight_ms"] = np.where(run, nxt - out["gct_ms"], np.nan)
        out["double_support_ms"] = np.where(run, np.nan, out["gct_ms"] - nxt)
        prev_ic = np.empty(len(new))
        pb, pic = self._prev_ic
        for i in range(len(new)):
            prev_ic[i] = pic if (pb == new["bout"][i] and not new["first"][i]) else np.nan
            pb, pic = int(new["bout"][i]), float(new["ic_s"][i])
        self._prev_ic = (pb, pic)
        out["step_time_ms"] = (new["ic_s"] - prev_ic) * 1000.0
        out["cadence_spm"] = 60000.0 / out["step_time_ms"]
        out["speed_ms"], out["foot_strike"], out["impact_peak_g"] = new["speed_ms"], new["strike"], new["impact_g"]
        out["bout"] = new["bout"]
        out["step_index"] = self._step_count + np.arange(len(new))
        self._step_count += len(new)
        # true peaks: noise-free model on a 1 kHz grid over IC .. IC+120 ms, for each site kind
        grid = np.arange(0.0, 0.12, 0.001)
        for kind in ("foot", "shank", "sacrum") if self._truth_peaks else ():
            peaks = np.empty(len(new))
            for side in (M.LEFT, M.RIGHT):
                sel = new["side"] == side
                if not sel.any():
                    continue
                tt = (new["ic_s"][sel][:, None] + grid[None, :]).ravel()
                acc, _ = M.synth_body(kind, side, self._steps, tt)
                peaks[sel] = np.linalg.norm(acc, axis=1).reshape(sel.sum(), len(grid)).max(axis=1)
            out[f"peak_accel_g_{kind}"] = peaks
        if not self._truth_peaks:
            for kind in ("foot", "shank", "sacrum"):
                out[f"peak_accel_g_{kind}"] = np.nan
        return out

    def _prune(self, t_now: float) -> None:
        """Keep the steps that can still shape samples at t >= t_now (bounded memory)."""
        rel = t_now - self.start_time_s
        if len(self._steps) > 12:
            keep_from = int(np.sum(self._steps["tc_s"] + self._steps["swing_out_s"] < rel - 2.0))
            keep_from = min(keep_from, len(self._steps) - 8)
            keep_from = max(keep_from - 4, 0)
            if keep_from > 0:
                self._steps = self._steps[keep_from:]
        done = self._pending["tc_s"] <= t_now
        if done.any():
            self._history.extend(self._pending[done].tolist())
            self._pending = self._pending[~done]

    def events_until(self, t_s: float) -> np.ndarray:
        """The true steps (SIM_EVENT_DTYPE) with terminal contact <= t_s, from the retained history
        (the last ``max_history_steps`` steps), including steps up to the generation horizon."""
        self._ensure_steps(t_s + _EVENT_LOOKAHEAD_S)
        rows = list(self._history)
        out = np.array(rows, dtype=SIM_EVENT_DTYPE) if rows else np.zeros(0, SIM_EVENT_DTYPE)
        extra = self._pending[self._pending["tc_s"] <= t_s]
        out = np.concatenate([out, extra])
        return out[out["tc_s"] <= t_s]

    # --------------------------------------------------------------------------------- samples
    def _noise(self, k0: int, n: int, channels: int, code: int) -> np.ndarray:
        b0, b1 = k0 // _NOISE_BLOCK, (k0 + n - 1) // _NOISE_BLOCK
        blocks = [np.random.default_rng([self.seed, 17, code, _SITE_CODES[self.site], b]).standard_normal(
            (_NOISE_BLOCK, channels)) for b in range(b0, b1 + 1)]
        allb = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        off = k0 - b0 * _NOISE_BLOCK
        return allb[off: off + n]

    def read_block(self, n_samples: int):
        """Next n samples: (acc_ms2, gyr_dps|None, time_s, sensor_tick, clipped)."""
        n = int(n_samples)
        if n < 0:
            raise ValueError(f"n_samples must be >= 0, got {n_samples!r}")
        k = self.samples_read_ + np.arange(n, dtype=np.int64)
        t = self.start_time_s + k / self.actual_rate_hz
        if n == 0:
            return np.zeros((0, 3)), (np.zeros((0, 3)) if self.gyro else None), t, np.zeros(0, np.int64), \
                np.zeros(0, bool)
        self._ensure_steps(t[-1] + _EVENT_LOOKAHEAD_S)
        rel = t - self.start_time_s
        acc_b, gyr_b = M.synth_body(self._kind, self._side, self._steps, rel)
        sway_a, sway_g = M.postural_sway(rel, self.seed, _SITE_CODES[self.site])
        acc_b = acc_b + sway_a
        gyr_b = gyr_b + sway_g
        R = self.orientation
        acc = _rotate(acc_b, R)
        if self.noise_g > 0:
            acc = acc + self.noise_g * self._noise(self.samples_read_, n, 3, 1)
        lim = self.range_g
        clipped = np.any(np.abs(acc) >= lim, axis=1)
        acc = np.clip(acc, -lim, lim) * G0
        gyr = None
        if self.gyro:
            gyr = _rotate(gyr_b, R)
            if self.noise_dps > 0:
                gyr = gyr + self.noise_dps * self._noise(self.samples_read_, n, 3, 2)
            gyr = np.clip(gyr, -self.gyro_range_dps, self.gyro_range_dps)
        tick = self.tick_offset + np.floor(self.tick_rate_true_hz * (k / self.actual_rate_hz) + 0.5).astype(np.int64)
        self.samples_read_ += n
        self.last_clipped_ = clipped
        self._prune(self.time_s_)
        return acc, gyr, t, tick, clipped

    def read(self, n_samples: int):
        """Next n samples: ``(acc_ms2 (n,3), gyr_dps (n,3) | None, time_s (n,), sensor_tick (n,) int64)``."""
        acc, gyr, t, tick, _ = self.read_block(n_samples)
        return acc, gyr, t, tick

    def drain_events(self) -> np.ndarray:
        """True steps completed (tc <= time of the next sample) since the previous drain."""
        ev = self.events_until(self.time_s_)
        new = ev[ev["step_index"] >= self._drain_pos]
        if len(new):
            self._drain_pos = int(new["step_index"][-1]) + 1
        return new


def _gyro_sites(gyro, sites: Iterable[str]) -> set:
    if gyro is True:
        return set(sites)
    if gyro is False or gyro is None:
        return set()
    if isinstance(gyro, str):
        gyro = [gyro]
    return {s for s in sites if s in set(gyro) or _resolve_site(s) in {_resolve_site(g) for g in gyro}}


def simulate(profile: RunnerProfile | None = None, sites: Sequence[str] = ("sacrum",), duration_s: float | None = None,
             segments: Sequence[Segment] | None = None, sampling_rate_hz: float = 500.0, seed: int = 0,
             noise_g: float = 0.005, orientation="random", range_g: float = 16.0, gyro=True,
             rate_error_ppm: float = 0.0, clock_drift_ppm: float = 0.0, *, noise_dps: float = 0.3,
             gyro_range_dps: float = 2000.0, tick_hz: float | None = None, start_time_s: float = 0.0,
             chunk_samples: int = 16384) -> SimulatedRecording:
    """Simulate a whole recording for one or more sites (all share the same true steps).

    ``duration_s`` defaults to the total of ``segments``; without segments it is required.  ``gyro`` is a bool
    or a collection of site names that carry a gyroscope.  ``orientation`` is "random" (a uniformly random
    mounting per site, seeded), "aligned" (sensor = body frame), a 3x3 rotation, or a dict site -> one of those.
    Returns a SimulatedRecording whose ``events`` are the steps that finished within the recording.
    """
    profile = profile if profile is not None else RunnerProfile()
    if isinstance(sites, str):
        sites = (sites,)
    if not sites:
        raise ValueError("sites must name at least one site")
    for s in sites:
        _resolve_site(s)
    if segments is not None:
        segments = tuple(segments)
        total = float(sum(s.duration_s for s in segments))
        if duration_s is None:
            duration_s = total
    if duration_s is None or not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive finite number (or give finite segments), got {duration_s!r}")
    gsites = _gyro_sites(gyro, sites)
    signals, events = {}, None
    for n_site, site in enumerate(sites):
        st = SimulatorStream(profile, site, sampling_rate_hz=sampling_rate_hz, seed=seed, segments=segments,
                             noise_g=noise_g, noise_dps=noise_dps, orientation=orientation, range_g=range_g,
                             gyro=site in gsites, gyro_range_dps=gyro_range_dps, rate_error_ppm=rate_error_ppm,
                             clock_drift_ppm=clock_drift_ppm, tick_hz=tick_hz, start_time_s=start_time_s,
                             max_history_steps=10 ** 9, _truth_peaks=n_site == 0)
        n = int(math.floor(duration_s * st.actual_rate_hz + 1e-9))
        acc = np.empty((n, 3))
        gyr = np.empty((n, 3)) if st.gyro else None
        t = np.empty(n)
        tick = np.empty(n, np.int64)
        clipped = np.empty(n, bool)
        for a in range(0, n, chunk_samples):
            b = min(a + chunk_samples, n)
            ca, cg, ct, ck, cc = st.read_block(b - a)
            acc[a:b], t[a:b], tick[a:b], clipped[a:b] = ca, ct, ck, cc
            if gyr is not None:
                gyr[a:b] = cg
        signals[site] = SiteSignal(site=site, acc_ms2=acc, gyr_dps=gyr, time_s=t, sensor_tick=tick,
                                   tick_hz=st.tick_hz, sampling_rate_hz=st.sampling_rate_hz,
                                   orientation=st.orientation, clipped=clipped, range_g=st.range_g)
        if events is None:
            events = st.events_until(start_time_s + duration_s)
    return SimulatedRecording(signals=signals, events=events, profile=profile,
                              segments=tuple(segments) if segments is not None else (), duration_s=float(duration_s),
                              seed=int(seed))
