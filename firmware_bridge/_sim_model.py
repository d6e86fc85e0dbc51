"""Signal model of the IMU simulator (private; public API in ``simulator.py``).

Two parts:

* ``_StepScheduler`` turns a profile and a segment schedule into the TRUE step sequence (initial contact,
  terminal contact, side, activity, per-step amplitudes), lazily and deterministically, in fixed blocks of
  steps so the result never depends on how the caller chunks its reads.
* ``synth_body`` evaluates the continuous body-frame signal of one site (acceleration in g including
  gravity, angular rate in deg/s) at arbitrary true times, from the steps around those times.  It is a pure
  function of (steps, times): no filter state, so any chunking gives identical samples.

Body frame of every segment: x = antero-posterior forward, y = medio-lateral LEFT, z = vertical up (for the
foot and shank: the frame the segment has when the runner stands upright).  Shapes come from
``_sim_templates.py`` (fitted to real recordings by tools/fit_sim_templates.py); see docs/simulator.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _sim_templates as T

ACT_STAND, ACT_WALK, ACT_RUN = 0, 1, 2
ACT_CODES = {"stand": ACT_STAND, "walk": ACT_WALK, "run": ACT_RUN}
STRIKE_CODES = {"rearfoot": 0, "midfoot": 1, "forefoot": 2}
KIND_STAND, KIND_STANCE, KIND_SWING = 0, 1, 2
LEFT, RIGHT = 0, 1

STEP_BLOCK = 32  # steps drawn per random block (fixed: determinism does not depend on chunking)
_PH = np.linspace(0.0, 1.0, T.N_PHASE)

# ------------------------------------------------------------------------------------------- templates


def _a(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)




def _taper(curve: np.ndarray, zero_mean: bool) -> np.ndarray:
    """Bring a stance curve smoothly to 0 at contact and toe-off (no steps into flight), keeping its integral
    (unit mean for vertical curves, zero for antero-posterior ones)."""
    w = np.sqrt(smoothstep(_PH / 0.06) * smoothstep((1.0 - _PH) / 0.12))
    c = curve * w
    bump = np.sin(np.pi * _PH) ** 2
    if zero_mean:
        return c - np.trapezoid(c, _PH) / np.trapezoid(bump, _PH) * bump
    return c / np.trapezoid(c, _PH)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


SAC_V = {0: _taper(_a(T.SACRUM["vertical_rearfoot"]), False), 1: _taper(_a(T.SACRUM["vertical_midfoot"]), False)}
SAC_V[2] = SAC_V[1]
SAC_AP = {0: _taper(_a(T.SACRUM["ap_rearfoot_g"]), True), 1: _taper(_a(T.SACRUM["ap_midfoot_g"]), True)}
SAC_AP[2] = SAC_AP[1]
WALK_FORCE = _a(T.SHANK["walk_force_unit_mean"])
_walk_ap = np.gradient(WALK_FORCE) * -1.0  # braking while loading, propulsion while unloading (shape only)
WALK_AP = 0.12 * _walk_ap / np.max(np.abs(_walk_ap))
WALK_AP = _taper(WALK_AP, True)
SAC_REF_SPEED_MS = 3.0  # Alcantara trials 2.5 / 3.33 m/s

SH = {}
for _act, _name in ((ACT_RUN, "run"), (ACT_WALK, "walk")):
    for _ph in ("stance", "swing"):
        SH[(_act, _ph)] = np.column_stack(
            [_a(T.SHANK[f"{_name}_{_ph}_{ax}_g"]) for ax in ("ap", "ml_lat", "up")])
SH_REF_SPEED = {ACT_RUN: 8.5 / 3.6, ACT_WALK: 4.8 / 3.6}  # Bach treadmill speeds
IMPACT = {ACT_RUN: T.SHANK["impact_transient"]["run"], ACT_WALK: T.SHANK["impact_transient"]["walk"]}
SHANK_PEAK_REF = {ACT_RUN: T.SHANK["run_axial_peak_g_median"], ACT_WALK: T.SHANK["walk_axial_peak_g_median"]}

GY = T.GYRO_SAGITTAL
GYRO_REF_STRIDE_S = GY["stride_s_median"]
SHANK_GYR = (_a(GY["shank_stance_gyr_sag_dps"]), _a(GY["shank_swing_gyr_sag_dps"]))
_FOOT_GYR = (_a(GY["foot_stance_gyr_sag_dps"]), _a(GY["foot_swing_gyr_sag_dps"]))
SAC_GYR_AMP_DPS = np.array(GY["sacrum_gyr_sd_sorted_dps"]) * math.sqrt(2.0)  # sinusoid amplitude from SD


def _foot_pitch_templates():
    """Foot pitch angle (deg, + = toe down) over stance and swing, integrated from the real sagittal rate at
    the reference stride (duty 0.35) and closed so it returns to its start (foot flat mid-stance = 0)."""
    st_s, sw_s = 0.35 * GYRO_REF_STRIDE_S, 0.65 * GYRO_REF_STRIDE_S
    w = np.concatenate([_FOOT_GYR[0] * st_s, _FOOT_GYR[1][1:] * sw_s])  # deg per unit phase
    u = np.concatenate([_PH, 1.0 + _PH[1:]])
    ang = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(u))])
    ang -= ang[-1] * np.clip(u - 1.0, 0.0, 1.0)  # close the loop during swing (angle at next IC = at IC)
    ang -= np.interp(0.4, u, ang)  # flat foot at 40 % of stance
    return ang[: T.N_PHASE].copy(), ang[T.N_PHASE - 1:].copy()


FOOT_PITCH = _foot_pitch_templates()


def interp_curve(curve: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Evaluate a phase curve (N_PHASE points on 0..1) at phases u (any shape, clipped to 0..1)."""
    return np.interp(np.clip(u, 0.0, 1.0), _PH, curve)


def interp_slope(curve: np.ndarray, u: np.ndarray) -> np.ndarray:
    """d curve / d phase at u (piecewise linear derivative of a smoothed curve)."""
    d = np.gradient(curve, _PH)
    return np.interp(np.clip(u, 0.0, 1.0), _PH, d)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# ------------------------------------------------------------------------------------------- steps

STEP_FIELDS = [
    ("ic_s", np.float64), ("tc_s", np.float64), ("side", np.int8), ("activity", np.int8),
    ("strike", np.int8), ("speed_ms", np.float64), ("step_time_s", np.float64),
    ("impact_g", np.float64), ("bout", np.int64), ("first", np.bool_), ("last", np.bool_),
    ("swing_in_s", np.float64), ("swing_out_s", np.float64), ("stride_s", np.float64),
]
STEP_INTERNAL_DTYPE = np.dtype(STEP_FIELDS)


@dataclass(frozen=True)
class _SegPlan:
    start_s: float
    end_s: float
    activity: int
    cadence_spm: float
    speed_ms: float
    gct_ms: float | None
    strike: int
    impact_peak_g: float | None
    asymmetry_pct: float
    step_cv: float
    gct_cv: float
    impact_cv: float
    bout: int


def default_gct_s(activity: int, speed_ms: float, cadence_spm: float) -> float:
    step_s = 60.0 / cadence_spm
    if activity == ACT_RUN:
        gct = T.GAIT_MODEL["run_gct_k"] * speed_ms ** -0.5 * (cadence_spm / 170.0) ** -0.5
        return float(min(gct, 0.92 * step_s))
    return float(T.GAIT_MODEL["walk_duty_factor"] * 2.0 * step_s)


def default_impact_g(activity: int, speed_ms: float, strike: int) -> float:
    """Peak axial tibial (shank) acceleration, g.  Running: the Bach data clip at 8 g at 2.36 m/s; published
    rearfoot PTA grows roughly in proportion to speed (about 3 g per m/s); mid/forefoot strikes lower."""
    if activity == ACT_RUN:
        base = 3.0 * speed_ms
        return float(base * (1.0, 0.7, 0.55)[strike])
    ref_v = SH_REF_SPEED[ACT_WALK]
    return float(SHANK_PEAK_REF[ACT_WALK] * (speed_ms / ref_v) * (1.0, 0.8, 0.7)[strike])


class _StepScheduler:
    """Generates the true steps of a segment plan lazily, block by block (deterministic)."""

    def __init__(self, plans: list[_SegPlan], seed: int, end_s: float | None, transition_s: float = 2.0):
        self.plans = plans
        self.seed = int(seed)
        self.end_s = end_s  # None = last plan repeats forever
        self.transition_s = transition_s
        self._block = 0
        self._draws = np.empty((0, 4))
        self._t_next = None  # next IC time
        self._side = LEFT
        self._bout = -1
        self._bout_end = -np.inf
        self._done = False
        self.generated_until_s = -np.inf

    # plans --------------------------------------------------------------------------------------
    def plan_at(self, t: float) -> _SegPlan | None:
        for p in self.plans:
            if p.start_s <= t < p.end_s:
                return p
        if self.end_s is None and self.plans and t >= self.plans[-1].start_s:
            return self.plans[-1]
        return None

    def _gait_params(self, t: float) -> tuple:
        """cadence, speed, gct(None), impact(None) at time t with linear ramps across gait segment borders."""
        p = self.plan_at(t)
        vals = np.array([p.cadence_spm, p.speed_ms])
        half = 0.5 * self.transition_s
        for q in self.plans:  # ramp from the previous gait plan over +-transition/2 around the border
            if q is p or q.activity == ACT_STAND or q.bout != p.bout:
                continue
            if q.end_s == p.start_s and t - p.start_s < half:
                w = 0.5 + 0.5 * (t - p.start_s) / half
                vals = w * vals + (1 - w) * np.array([q.cadence_spm, q.speed_ms])
            if p.end_s == q.start_s and p.end_s - t < half:
                w = 0.5 + 0.5 * (p.end_s - t) / half
                vals = w * vals + (1 - w) * np.array([q.cadence_spm, q.speed_ms])
        return p, float(vals[0]), float(vals[1])

    def _next_draws(self) -> np.ndarray:
        if len(self._draws) == 0:
            rng = np.random.default_rng([self.seed, 11, self._block])
            self._block += 1
            self._draws = np.clip(rng.standard_normal((STEP_BLOCK, 4)), -3.0, 3.0)
        d, self._draws = self._draws[0], self._draws[1:]
        return d

    def _bout_span(self, t: float) -> tuple[int, float, float]:
        p = self.plan_at(t)
        start = p.start_s
        end = p.end_s if not (self.end_s is None and p is self.plans[-1]) else np.inf
        for q in self.plans:
            if q.bout == p.bout:
                start, end = min(start, q.start_s), max(end, q.end_s if not (
                    self.end_s is None and q is self.plans[-1]) else np.inf)
        return p.bout, start, end

    def _fits(self, t: float) -> bool:
        """A step may start at t if a nominal step still ends inside the bout (deterministic rule)."""
        if t >= self._bout_end:
            return False
        p = self.plan_at(t)
        if p is None or p.activity == ACT_STAND:
            return False
        _, cad, _ = self._gait_params(t)
        return t + 60.0 / cad <= self._bout_end - 0.05

    def generate_until(self, t_until: float) -> np.ndarray:
        """The steps with IC < t_until not generated yet, in order."""
        rows = []
        while not self._done:
            if self._t_next is None:  # find the next gait bout
                nxt = [p for p in self.plans if p.activity != ACT_STAND and p.bout > self._bout]
                if not nxt:
                    self._done = True
                    break
                p0 = nxt[0]
                self._bout, bstart, self._bout_end = self._bout_span(p0.start_s)
                _, cad, _ = self._gait_params(p0.start_s)
                self._t_next = bstart + 0.5 * 60.0 / cad + 0.15  # first contact after a push-off swing
                self._first = True
                if not self._fits(self._t_next):
                    self._t_next = None
                    continue
            t = self._t_next
            if t >= t_until:
                break
            p, cad, speed = self._gait_params(t)
            d = self._next_draws()
            step_s = 60.0 / cad * (1.0 + p.step_cv * d[0])
            side = self._side
            asym = (1.0 if side == LEFT else -1.0) * p.asymmetry_pct / 200.0
            gct0 = p.gct_ms / 1000.0 if p.gct_ms is not None else default_gct_s(p.activity, speed, cad)
            gct = gct0 * (1.0 + asym) * (1.0 + p.gct_cv * d[1])
            if p.activity == ACT_RUN:
                gct = min(gct, 0.95 * step_s)
            else:
                gct = max(gct, 1.05 * step_s)
            imp0 = p.impact_peak_g if p.impact_peak_g is not None else default_impact_g(p.activity, speed, p.strike)
            imp = imp0 * (1.0 + 2.0 * asym) * (1.0 + p.impact_cv * d[2])
            stride = 2.0 * 60.0 / cad
            last = not self._fits(t + step_s)
            rows.append((t, t + gct, side, p.activity, p.strike, speed, step_s, max(imp, 1.2), self._bout,
                         self._first, last, max(stride - gct, 0.25), max(stride - gct, 0.25), stride))
            self._first = False
            self._side = 1 - side
            self._t_next = None if last else t + step_s
        self.generated_until_s = t_until
        return np.array(rows, dtype=STEP_INTERNAL_DTYPE)

    _first = True


# ------------------------------------------------------------------------------------------- legs


def leg_intervals(steps: np.ndarray, side: int):
    """Per-leg interval table (start, end, kind, step index, ramp) from the steps of one leg.

    ramp: 0 none; +1 swing out of standing (weight rises over its first 60 %); -1 swing into standing;
    +2 the first stance of the leg in its bout.  Times before the first interval are STAND.
    """
    idx = np.flatnonzero(steps["side"] == side)
    starts, ends, kinds, sidx, ramps = [], [], [], [], []

    def add(st, en, kd, i, rp):
        starts.append(st); ends.append(en); kinds.append(kd); sidx.append(i); ramps.append(rp)

    for n, i in enumerate(idx):
        s = steps[i]
        prev = idx[n - 1] if n > 0 else -1
        nxt = idx[n + 1] if n + 1 < len(idx) else -1
        first_of_leg = prev < 0 or steps[prev]["bout"] != s["bout"]
        if first_of_leg:
            st = s["ic_s"] - s["swing_in_s"]
            if starts:
                st = max(st, starts[-1])
                if kinds[-1] == KIND_STAND:
                    ends[-1] = st
                else:
                    st = max(st, ends[-1])
            add(st, s["ic_s"], KIND_SWING, i, 1)
        add(s["ic_s"], s["tc_s"], KIND_STANCE, i, 2 if first_of_leg else 0)
        last_of_leg = nxt < 0 or steps[nxt]["bout"] != s["bout"]
        if not last_of_leg:
            add(s["tc_s"], steps[nxt]["ic_s"], KIND_SWING, i, 0)
        else:
            add(s["tc_s"], s["tc_s"] + s["swing_out_s"], KIND_SWING, i, -1)
            add(s["tc_s"] + s["swing_out_s"], np.inf, KIND_STAND, i, 0)
    return (np.array(starts, dtype=np.float64), np.array(ends, dtype=np.float64), np.array(kinds, dtype=np.int8),
            np.array(sidx, dtype=np.int64), np.array(ramps, dtype=np.int8))


class LegState:
    """Vectorised lookup of one leg's state at many times."""

    def __init__(self, steps: np.ndarray, side: int, times: np.ndarray):
        start, end, kind, sidx, ramp = leg_intervals(steps, side)
        n = len(times)
        self.side = side
        if len(start) == 0:
            self.kind = np.zeros(n, np.int8)
            self.u = np.zeros(n)
            self.dur = np.ones(n)
            self.si = np.zeros(n, np.int64)
            self.ramp = np.zeros(n, np.int8)
            self.valid = False
            return
        j = np.searchsorted(start, times, side="right") - 1
        before = j < 0
        jj = np.clip(j, 0, None)
        kind = kind[jj].copy()
        kind[before] = KIND_STAND
        # a STAND interval that ended because a later bout's ramp swing began is handled by searchsorted
        dur = np.where(np.isfinite(end[jj]), end[jj] - start[jj], 1.0)
        u = np.where(np.isfinite(end[jj]), (times - start[jj]) / np.maximum(dur, 1e-9), 0.0)
        self.kind, self.u, self.dur = kind, np.clip(u, 0.0, 1.0), np.maximum(dur, 1e-6)
        self.si = sidx[jj]
        self.ramp = np.where(before, 0, ramp[jj]).astype(np.int8)
        self.t_from_ic = np.where(kind == KIND_STANCE, times - start[jj], np.inf)
        # time since the IC of the step whose stance just ended (for transients leaking into early swing)
        self.valid = True

    def gait_weight(self) -> np.ndarray:
        """1 in stance/swing, 0 standing, smooth across the ramp swings."""
        w = np.where(self.kind == KIND_STAND, 0.0, 1.0)
        up = (self.kind == KIND_SWING) & (self.ramp == 1)
        dn = (self.kind == KIND_SWING) & (self.ramp == -1)
        w = np.where(up, smoothstep(self.u / 0.6), w)
        w = np.where(dn, 1.0 - smoothstep((self.u - 0.4) / 0.6), w)
        return w

    def stand_share(self) -> np.ndarray:
        """How much of the static standing load this leg still allows (sacrum): 1 standing and while lifting
        off for the first step, fading over the first half of its first stance, rising back while stopping."""
        f = np.where(self.kind == KIND_STAND, 1.0, 0.0)
        f = np.where((self.kind == KIND_SWING) & (self.ramp == 1), 1.0, f)
        f = np.where((self.kind == KIND_STANCE) & (self.ramp == 2), 1.0 - smoothstep(self.u / 0.5), f)
        dn = (self.kind == KIND_SWING) & (self.ramp == -1)
        return np.where(dn, smoothstep((self.u - 0.4) / 0.6), f)


# ------------------------------------------------------------------------------------------- synthesis


def _impact_shape(t: np.ndarray, act: np.ndarray, tau_scale: float = 1.0) -> np.ndarray:
    """Unit-peak damped sinusoid (fitted to the Bach shank residuals) of time since IC.  ``tau_scale`` < 1
    damps it faster (the foot, pressed flat on the ground, stops ringing sooner than the tibia)."""
    out = np.zeros_like(t)
    for a in (ACT_RUN, ACT_WALK):
        p = IMPACT[a]
        sel = act == a
        if not np.any(sel):
            continue
        tt = np.clip(t[sel] - p["t_on_s"], 0.0, None)
        tau = p["tau_s"] * tau_scale
        y = np.exp(-tt / tau) * np.sin(2 * np.pi * p["freq_hz"] * tt)
        tpk = math.atan(2 * math.pi * p["freq_hz"] * tau) / (2 * math.pi * p["freq_hz"])
        peak = math.exp(-tpk / tau) * math.sin(2 * math.pi * p["freq_hz"] * tpk)
        out[sel] = np.where(np.isfinite(tt), y / peak, 0.0)
    return out


def impact_peak_time_s(act: int) -> float:
    p = IMPACT[act]
    return p["t_on_s"] + math.atan(2 * math.pi * p["freq_hz"] * p["tau_s"]) / (2 * math.pi * p["freq_hz"])


def _sacrum(steps: np.ndarray, legs: list[LegState], n: int):
    acc = np.zeros((n, 3))
    gyr = np.zeros((n, 3))
    stand_fill = np.ones(n)
    for leg in legs:
        if not leg.valid:
            continue
        stand_fill = np.minimum(stand_fill, leg.stand_share())
        st = leg.kind == KIND_STANCE
        if not np.any(st):
            continue
        s = steps[leg.si[st]]
        u = leg.u[st]
        gct = leg.dur[st]
        act, strike = s["activity"], s["strike"]
        vert = np.empty(u.shape)
        ap = np.empty(u.shape)
        run = act == ACT_RUN
        for code in (0, 1, 2):
            sel = run & (strike == code)
            vert[sel] = interp_curve(SAC_V[code], u[sel])
            ap[sel] = interp_curve(SAC_AP[code], u[sel]) * (s["speed_ms"][sel] / SAC_REF_SPEED_MS)
        wk = ~run
        vert[wk] = interp_curve(WALK_FORCE, u[wk])
        ap[wk] = interp_curve(WALK_AP, u[wk]) * (s["speed_ms"][wk] / 1.4)
        # impulse of each contact = body weight x step time (unit-mean curves) -> mean 1 g over strides
        vert *= s["step_time_s"] / gct
        sign = np.where(leg.side == LEFT, -1.0, 1.0)  # medial GRF: left stance -> towards the right (-y)
        ml_amp = np.where(run, 0.10, 0.05)
        ml = sign * ml_amp * np.sin(np.pi * u)
        acc[st, 0] += ap
        acc[st, 1] += ml
        acc[st, 2] += vert
        # pelvis (zero at contact borders, zero net angle per contact): roll (the swing side drops in early
        # stance, then recovers), yaw (the swing-side hip comes forward), pitch (forward tilt and back)
        k = np.where(run, 1.0, 0.5)
        amp_roll, amp_yaw, amp_pitch = SAC_GYR_AMP_DPS[0], SAC_GYR_AMP_DPS[1], SAC_GYR_AMP_DPS[2]
        side_sign = 1.0 if leg.side == LEFT else -1.0
        gyr[st, 0] += side_sign * k * amp_roll * np.sin(2 * np.pi * u)
        gyr[st, 2] += side_sign * k * amp_yaw * np.sin(np.pi * u)
        gyr[st, 1] += k * amp_pitch * np.sin(2 * np.pi * u)
    acc[:, 2] += stand_fill  # standing (or starting/stopping): body weight carried statically
    return acc, gyr


def _mirror(v: np.ndarray, side: int, is_gyro: bool) -> np.ndarray:
    """Templates are for a RIGHT leg with ML lateral-positive; body frame y is LEFT.

    Right leg: lateral = -y.  Left leg: lateral = +y.  Angular rates (pseudo-vectors) mirror x and z."""
    out = v.copy()
    if not is_gyro:
        out[:, 1] *= (1.0 if side == LEFT else -1.0)
    else:
        if side == LEFT:
            out[:, 0] *= -1.0
            out[:, 2] *= -1.0
    return out


def _shank(steps: np.ndarray, leg: LegState, n: int):
    acc = np.zeros((n, 3))
    acc[:, 2] = 1.0
    gyr = np.zeros((n, 3))
    if not leg.valid:
        return acc, gyr
    st = leg.kind == KIND_STANCE
    sw = leg.kind == KIND_SWING
    for mask, ph in ((st, "stance"), (sw, "swing")):
        if not np.any(mask):
            continue
        s = steps[leg.si[mask]]
        u = leg.u[mask]
        act = s["activity"]
        a = np.zeros((mask.sum(), 3))
        gy = np.zeros(mask.sum())
        for code in (ACT_RUN, ACT_WALK):
            sel = act == code
            if not np.any(sel):
                continue
            tmpl = SH[(code, ph)]
            vals = np.column_stack([interp_curve(tmpl[:, j], u[sel]) for j in range(3)])
            k = np.sqrt(np.maximum(s["speed_ms"][sel], 0.3) / SH_REF_SPEED[code])
            mean = tmpl.mean(axis=0)
            a[sel] = mean + k[:, None] * (vals - mean)
            g_t = SHANK_GYR[0] if ph == "stance" else SHANK_GYR[1]
            kg = GYRO_REF_STRIDE_S / s["stride_s"][sel] * (np.maximum(s["speed_ms"][sel], 0.3) / 3.0) ** 0.3
            gy[sel] = interp_curve(g_t, u[sel]) * kg
        if ph == "stance":
            # impact transient, amplitude so that the axial peak reaches the step's impact target
            tic = leg.t_from_ic[mask]
            shape = _impact_shape(tic, act)
            # the smooth stance curve is about 1.5 g (axial) at the transient's peak
            amp_up = np.maximum(s["impact_g"] - 1.5, 0.0)
            for code in (ACT_RUN, ACT_WALK):
                sel = act == code
                if not np.any(sel):
                    continue
                ratio = np.array(IMPACT[code]["amp_g"]) / IMPACT[code]["amp_g"][2]
                strike_k = np.where(s["strike"][sel] == 0, 1.0, np.where(s["strike"][sel] == 1, 0.6, 0.4))
                vec = ratio[None, :] * np.column_stack([strike_k, np.ones(sel.sum()), np.ones(sel.sum())])
                a[sel] += (amp_up[sel] * shape[sel])[:, None] * vec
            gy += -12.0 * amp_up * shape  # the tibia pitches with the shock
        a = _mirror(a, leg.side, False)
        if ph == "swing":
            w = leg.gait_weight()[mask]
            a = (1.0 - w)[:, None] * np.array([0.0, 0.0, 1.0]) + w[:, None] * a
            gy = w * gy
        acc[mask] = a
        g3 = np.column_stack([0.12 * gy, gy, 0.08 * gy])
        gyr[mask] = _mirror(g3, leg.side, True)
    return acc, gyr


def _foot(steps: np.ndarray, leg: LegState, n: int):
    acc = np.zeros((n, 3))
    acc[:, 2] = 1.0
    gyr = np.zeros((n, 3))
    if not leg.valid:
        return acc, gyr
    for kind, ph in ((KIND_STANCE, 0), (KIND_SWING, 1)):
        mask = leg.kind == kind
        if not np.any(mask):
            continue
        s = steps[leg.si[mask]]
        u = leg.u[mask]
        dur = leg.dur[mask]
        run = s["activity"] == ACT_RUN
        ang_scale = np.where(run, 1.0, 0.8)
        theta_deg = interp_curve(FOOT_PITCH[ph], u) * ang_scale
        omega = interp_slope(FOOT_PITCH[ph], u) * ang_scale / dur  # deg/s about +y (toe down positive)
        # world linear acceleration of the instep (g): swing = minimum-jerk forward + lift
        ax_w = np.zeros(mask.sum())
        az_w = np.zeros(mask.sum())
        if ph == 1:
            stride_len = s["speed_ms"] * s["stride_s"]
            tau = u
            ax_w = stride_len / dur ** 2 * (60 * tau - 180 * tau ** 2 + 120 * tau ** 3) / 9.80665
            lift = np.where(run, 0.22, 0.10)
            az_w = lift * (2 * np.pi) ** 2 / (2 * dur ** 2) * np.cos(2 * np.pi * tau) / 9.80665
        th = np.deg2rad(theta_deg)
        # foot frame = world rotated by +theta about y (toe down); reading = R^T (a_world + g)
        gx, gz = ax_w, az_w + 1.0
        c, sn = np.cos(th), np.sin(th)
        fx = c * gx - sn * gz
        fz = sn * gx + c * gz
        a = np.column_stack([fx, np.zeros_like(fx), fz])
        gy = omega.copy()
        roll = np.zeros_like(omega)
        if ph == 0:
            tic = leg.t_from_ic[mask]
            shape = _impact_shape(tic, s["activity"], tau_scale=0.3)
            strike = s["strike"]
            k = np.where(strike == 0, 1.6, np.where(strike == 1, 1.1, 0.9))
            amp = np.maximum(s["impact_g"] * k - 1.0, 0.0)
            a += (amp * shape)[:, None] * np.array([-0.45, 0.25, 1.0])[None, :]
            # strike-specific slap: rearfoot plantarflexes after heel contact, forefoot dorsiflexes
            slap = np.exp(-0.5 * ((tic - 0.03) / 0.012) ** 2)
            slap_amp = np.where(strike == 0, 350.0, np.where(strike == 1, 80.0, -250.0)) * np.where(run, 1, 0.5)
            gy += slap_amp * slap
            # pronation and back during loading (first 30 % of stance), flat (no roll rate) at mid-stance
            roll = 120.0 * np.where(run, 1.0, 0.5) * np.sin(2 * np.pi * np.clip(u / 0.3, 0, 1))
        a = _mirror(a, leg.side, False)
        g3 = _mirror(np.column_stack([roll, gy, 0.1 * gy]), leg.side, True)
        if ph == 1:
            w = leg.gait_weight()[mask]
            a = (1.0 - w)[:, None] * np.array([0.0, 0.0, 1.0]) + w[:, None] * a
            g3 = w[:, None] * g3
        acc[mask] = a
        gyr[mask] = g3
    return acc, gyr


def synth_body(site_kind: str, side: int, steps: np.ndarray, times: np.ndarray):
    """Noise-free body-frame acceleration (g, incl. gravity) and angular rate (dps) at ``times``."""
    n = len(times)
    if site_kind == "sacrum":
        legs = [LegState(steps, LEFT, times), LegState(steps, RIGHT, times)]
        return _sacrum(steps, legs, n)
    leg = LegState(steps, side, times)
    if site_kind == "shank":
        return _shank(steps, leg, n)
    return _foot(steps, leg, n)


def postural_sway(times: np.ndarray, seed: int, site_code: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic slow sway while standing (a few mg, a few dps): sum of sinusoids with seeded phases."""
    rng = np.random.default_rng([seed, 23, site_code])
    f = rng.uniform(0.1, 1.2, size=(3, 3))
    ph = rng.uniform(0, 2 * np.pi, size=(3, 3))
    acc = np.zeros((len(times), 3))
    gyr = np.zeros((len(times), 3))
    for ax in range(3):
        for k in range(3):
            acc[:, ax] += 0.004 * np.sin(2 * np.pi * f[ax, k] * times + ph[ax, k])
            gyr[:, ax] += 0.6 * np.cos(2 * np.pi * f[ax, k] * times + ph[ax, k])
    return acc, gyr
