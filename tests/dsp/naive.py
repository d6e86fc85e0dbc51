"""Plain, obviously-correct NumPy/Python twins of every DSP kernel (stumpy's tests/naive.py idea).

They are written for clarity, not speed: whole-array, with Python loops where the
algorithm is sequential, and vectorised NumPy where it is not. The parity tests
compare them with the numba kernels.
"""
from __future__ import annotations

import numpy as np

G0 = 9.80665


def sosfilt(sos, x, zi):
    """Direct-form II transposed biquads, textbook form."""
    y = np.array(x, dtype=float)
    z = np.array(zi, dtype=float)
    for s, (b0, b1, b2, _a0, a1, a2) in enumerate(sos):
        out = np.empty_like(y)
        z0, z1 = z[s]
        for i, v in enumerate(y):
            o = b0 * v + z0
            z0 = b1 * v - a1 * o + z1
            z1 = b2 * v - a2 * o
            out[i] = o
        z[s] = (z0, z1)
        y = out
    return y, z


def body_frame(acc_ms2):
    acc = np.asarray(acc_ms2, float)
    return np.vstack([acc[:, 0] / G0, acc[:, 1] / G0, acc[:, 2] / G0,
                      np.linalg.norm(acc, axis=1) / G0, np.abs(acc).max(axis=1) / G0])


def orientation(acc_ms2, alpha_g, alpha_c, block=16):
    """Gravity EMA -> up, every sample; once per block of ``block`` samples (stream indices 0, block, ...):
    the horizontal covariance and the braking-sign EMAs from the block's means, one power-iteration step for AP
    (kept horizontal). Within a block the axis and its sign are fixed; ml = up x forward. Rows: v, ap, ml,
    |a|, max |axis| in g."""
    acc = np.asarray(acc_ms2, float)
    out = np.empty((5, len(acc)))
    alpha_b = 1.0 - (1.0 - alpha_c) ** block
    g = acc[0].copy()
    up0 = acc[0] / np.linalg.norm(acc[0])
    e = np.zeros(3)
    e[np.argmin(np.abs(acc[0]))] = 1.0  # first-minimum tie-break, like the kernel
    ap = e - (e @ up0) * up0
    ap /= np.linalg.norm(ap)
    C = np.zeros((3, 3))
    sign_ema = 0.0
    hh_sum, sign_sum = np.zeros((3, 3)), 0.0
    prev_av = np.linalg.norm(acc[0])
    for i, a in enumerate(acc):
        g = g + alpha_g * (a - g)
        up = g / np.linalg.norm(g)
        av = a @ up
        h = a - av * up
        fwd = -ap if sign_ema > 0 else ap
        ml = np.cross(up, fwd)
        out[:, i] = (av / G0, h @ fwd / G0, h @ ml / G0, np.linalg.norm(a) / G0, np.abs(a).max() / G0)
        hh_sum += np.outer(h, h)
        sign_sum += (h @ ap) * (av - prev_av)
        prev_av = av
        if (i + 1) % block == 0:
            C = C + alpha_b * (hh_sum / block - C)
            sign_ema += alpha_b * (sign_sum / block - sign_ema)
            hh_sum, sign_sum = np.zeros((3, 3)), 0.0
            v = C @ ap
            v = v - (v @ up) * up
            if np.linalg.norm(v) > 1e-12:
                ap = v / np.linalg.norm(v)
            else:
                ap = ap - (ap @ up) * up
                ap = ap / np.linalg.norm(ap)
    return out


def _crossing_samples(x, thr, rising):
    """Sample indices i where x crosses thr between i-1 and i, and the fractional crossing index."""
    x = np.asarray(x, float)
    if rising:
        i = np.nonzero((x[:-1] < thr) & (x[1:] >= thr))[0] + 1
        return i, i - 1 + (thr - x[i - 1]) / (x[i] - x[i - 1])
    i = np.nonzero((x[:-1] >= thr) & (x[1:] < thr))[0] + 1
    return i, i - 1 + (x[i - 1] - thr) / (x[i - 1] - x[i])


def sacrum_events(params, v, vf, ml, norm, maxabs):
    """Stance = from a rising crossing of thr_ic to the next falling crossing of thr_tc.

    Rules: a crossing inside a stance is ignored; a stance longer than max_n samples
    is abandoned (the TC test wins on the sample where both apply); stances shorter
    than min_n are dropped; impact features use samples within impact_n of the IC.
    """
    thr_ic, thr_tc, min_n, max_n, clip_g, impact_n = params
    ups, ups_f = _crossing_samples(v, thr_ic, True)
    downs, downs_f = _crossing_samples(v, thr_tc, False)
    events = []
    free_from = 0
    for ui, uf in zip(ups, ups_f):
        if ui < free_from:
            continue
        abort_at = int(np.floor(uf + max_n)) + 1
        after = np.nonzero(downs > ui)[0]
        if after.size == 0 or downs[after[0]] > abort_at:
            free_from = abort_at + 1
            continue
        di, df = downs[after[0]], downs_f[after[0]]
        free_from = di + 1
        if df - uf < min_n:
            continue
        stance = np.arange(ui, di + 1)
        impact = stance[(stance - uf) <= impact_n]
        impact = np.union1d(impact, [ui])
        slope = np.max(v[impact] - v[impact - 1])
        events.append((uf, df, vf[stance].max(), norm[impact].max(), ml[stance].mean(), slope,
                       float((maxabs[impact] >= clip_g).any()), di))
    return np.array(events, dtype=float).reshape(-1, 8)


class LimbTwin:
    """Readable per-sample transliteration of the limb state machine (waiting -> impact -> toe-off)."""

    def __init__(self, params):
        (self.trig_min, self.trig_frac, self.refract_frac, self.refract_min, self.ic_win,
         self.tc_min_frac, self.tc_max_frac, stride0, self.stride_max, self.clip, self.ema, self.decay,
         self.rest_g, self.rest_n, self.swing_n) = params
        self.stride = stride0
        self.jerk_level = 0.0
        self.phase = "waiting"
        self.last_trigger_peak = -np.inf
        self.prev_confirmed_ic = None
        self.events = []
        self.rest_run = 0  # consecutive samples with |acc| near 1 g
        self.rested = False  # the candidate was followed by a rest (stance)
        self.rest_end = -np.inf  # last sample of a long-enough rest

    @staticmethod
    def vertex(l, c, r):
        den = l - 2 * c + r
        if den == 0 or np.isnan(l) or np.isnan(r):
            return 0.0
        return float(np.clip(0.5 * (l - r) / den, -0.5, 0.5))

    def confirm(self, i):
        tc = self.tc_i + self.vertex(self.tc_left, self.tc_best, self.tc_right) if self.tc_i >= 0 else np.nan
        if self.prev_confirmed_ic is not None:
            stride = self.ic - self.prev_confirmed_ic
            if stride <= self.stride_max and stride <= 1.5 * self.stride:
                self.stride += self.ema * (stride - self.stride)
        self.prev_confirmed_ic = self.ic
        self.jerk_level = self.cand_jerk if self.jerk_level == 0 else (
            self.jerk_level + self.ema * (self.cand_jerk - self.jerk_level))
        self.events.append((self.ic, tc, np.nan, self.best, np.nan, self.slope, float(self.clipped), i))
        self.phase = "waiting"

    def run(self, norm, jerk, tc_sig, maxabs):
        prev_n = np.nan
        prev_tc = np.nan
        rest_check = self.rest_g > 0
        for i in range(len(norm)):
            x, j, y = norm[i], jerk[i], tc_sig[i]
            if rest_check:
                self.rest_run = self.rest_run + 1 if abs(x - 1.0) < self.rest_g else 0
                if self.rest_run >= self.rest_n:
                    self.rest_end = i
                    if self.phase != "waiting":
                        self.rested = True
            trig = max(self.trig_min, self.trig_frac * self.jerk_level)
            if self.phase == "toe-off" and i >= self.tc_start and j >= trig:
                if rest_check and self.rested:  # came to rest: a contact, confirmed once the next one starts
                    if i - self.rest_end >= self.swing_n:
                        self.confirm(i)
                elif j > self.cand_jerk:  # a sharper impact: the candidate was not a heel strike
                    self.phase = "waiting"
                    self.last_trigger_peak = -np.inf
            if self.phase == "waiting":
                if i - self.last_trigger_peak > 1.5 * self.stride:
                    self.jerk_level *= self.decay
                refract = max(self.refract_frac * self.stride, self.refract_min)
                free = i - self.last_trigger_peak >= refract or (
                    rest_check and self.rested and self.rest_end > self.last_trigger_peak
                    and i - self.rest_end >= self.swing_n)
                if j >= trig and free:
                    self.phase = "impact"
                    self.cand_jerk = j
                    self.best, self.best_i, self.left, self.right = x, i, prev_n, np.nan
                    self.win_end = i + self.ic_win
                    self.slope = x - prev_n if not np.isnan(prev_n) else 0.0
                    self.clipped = maxabs[i] >= self.clip
                    self.rested, self.rest_run = False, 0
            elif self.phase == "impact":
                self.cand_jerk = max(self.cand_jerk, j)
                if i == self.best_i + 1:
                    self.right = x
                if x > self.best:
                    self.best, self.best_i, self.left, self.right = x, i, prev_n, np.nan
                self.slope = max(self.slope, x - prev_n)
                self.clipped |= maxabs[i] >= self.clip
                if i >= self.win_end:
                    self.ic = self.best_i + self.vertex(self.left, self.best, self.right)
                    self.last_trigger_peak = self.best_i
                    self.tc_start = self.best_i + self.tc_min_frac * self.stride
                    self.tc_end = self.best_i + self.tc_max_frac * self.stride
                    self.tc_best, self.tc_i, self.tc_left, self.tc_right = np.inf, -1, np.nan, np.nan
                    self.phase = "toe-off"
                    prev_n, prev_tc = x, y
                    continue
            if self.phase == "toe-off":
                if i == self.tc_i + 1:
                    self.tc_right = y
                if i >= self.tc_start and y < self.tc_best:
                    self.tc_best, self.tc_i, self.tc_left, self.tc_right = y, i, prev_tc, np.nan
                if i >= self.tc_end:
                    self.confirm(i)
            prev_n, prev_tc = x, y
        return np.array(self.events, dtype=float).reshape(-1, 8)


def step_metrics(ic_s, tc_s, ml_mean_g, sacrum, fixed_side, walking=None):
    """Readable per-step loop: intervals, gaps, cadence smoothing, flight, duty factor, side vote, activity."""
    prev_ic = prev_tc = cad_smooth = typical = np.nan
    parity, vote = 0, 0.0
    odd = 0
    last_activity = -1
    walking = np.zeros(len(ic_s)) if walking is None else walking
    rows = []
    for ic, tc, ml, wk in zip(ic_s, tc_s, ml_mean_g, walking):
        gct = (tc - ic) * 1000
        walk = sacrum and wk > 0.5
        if sacrum and last_activity != -1 and last_activity != (1 if walk else 2):
            typical = np.nan  # the activity changed: the typical step starts again
        if walk:
            step = (ic - prev_ic) * 1000
            stride = 2 * step
            flight = np.nan
            vote = 0.0
            side = -1
        elif sacrum:
            step = (ic - prev_ic) * 1000
            stride = 2 * step
            flight = (ic - prev_tc) * 1000
            parity ^= 1
            if np.isnan(ml) or abs(ml) < 1e-6:
                side = -1 if vote == 0 else parity
            else:
                agree = (0 if ml < 0 else 1) == parity
                vote = 0.8 * vote + (abs(ml) if agree else -abs(ml))
                if vote < 0:
                    parity ^= 1
                    vote = -vote
                side = parity
        else:
            stride = (ic - prev_ic) * 1000
            step = stride / 2
            flight = step - gct
            side = fixed_side
        if walk and 0 < step < 2000 and not np.isnan(typical) and (step > 1.6 * typical or 1.6 * step < typical):
            odd += 1  # walking: two odd intervals in a row = a new pace
            if odd >= 2:
                typical, odd = step, 0
            else:
                step = stride = np.nan
        elif not (0 < step < 2000) or (not np.isnan(typical) and step > 1.6 * typical):
            step = stride = np.nan
        elif np.isnan(typical):
            typical = step
        else:
            typical, odd = typical + 0.2 * (step - typical), 0
        if not (0 <= flight < 1000) or np.isnan(step):
            flight = np.nan
        cad = 60000 / step if not np.isnan(step) else np.nan
        if not np.isnan(cad):
            cad_smooth = cad if np.isnan(cad_smooth) else cad_smooth + 0.25 * (cad - cad_smooth)
        duty = gct / stride if not np.isnan(stride) else np.nan
        activity = (1 if walk else 2) if sacrum else (-1 if np.isnan(cad) else (2 if cad >= 140 else 1))
        rows.append((flight, step, cad, cad_smooth, duty, side, activity))
        prev_ic, prev_tc = ic, tc
        if activity != -1:
            last_activity = activity
    return [np.array(c) for c in zip(*rows)] if rows else [np.empty(0)] * 7


def fir(taps, x, x0):
    """Causal FIR with a history of constant ``x0``: plain convolution of the padded signal."""
    m = len(taps)
    padded = np.r_[np.full(m - 1, x0), np.asarray(x, float)]
    return np.convolve(padded, taps, mode="valid")


def walk_events(params, d, flight):
    """Sacral walking ICs, written as a list of rules over whole arrays (see _detect.walk_kernel).

    c = i - delay is the sample a derivative value belongs to. After each decision the search restarts
    at max(decision sample + 1, last IC + refractory); the candidate is the first maximum of d from there,
    decided once ``confirm`` samples have passed without a larger value.
    """
    delay, confirm, min_step, max_step, refr_frac, thr_min, thr_frac, ema, decay, flight_n = params
    d = np.asarray(d, float)
    n = len(d)
    events = []
    level, step_ema, last_ic, last_flight = 0.0, np.nan, -1e18, -1e18
    start = 0
    best, best_i = -np.inf, -1
    for i in range(n):
        c = i - delay
        if flight[i] > 0.5:
            last_flight = i
        if c - last_ic > max_step:
            level *= decay
        refract = max(min_step, refr_frac * step_ema) if not np.isnan(step_ema) else min_step
        if c < last_ic + refract or i < start:
            continue
        if d[i] > best:
            best, best_i = d[i], i
        if best_i >= 0 and i - best_i >= confirm:
            bc = best_i - delay
            if best >= max(thr_min, thr_frac * level):
                if i - last_flight <= flight_n:
                    level, step_ema = 0.0, np.nan
                else:
                    level = best if level == 0 else level + ema * (best - level)
                    step = bc - last_ic
                    if min_step <= step <= max_step:
                        step_ema = step if np.isnan(step_ema) else step_ema + ema * (step - step_ema)
                    left = d[best_i - 1] if best_i >= 1 else np.nan
                    right = d[best_i + 1]
                    events.append((bc + LimbTwin.vertex(left, best, right), np.nan, np.nan, np.nan, np.nan, np.nan,
                                   0.0, i))
                last_ic = bc
            best, best_i = -np.inf, -1
            start = i + 1
    return np.array(events, dtype=float).reshape(-1, 8)


def merge_walk_run(run_ev, walk_ev, min_gap_n):
    """All rows in emission order (running first on ties); a row of the other kind within min_gap_n after
    the last kept IC is the same contact: dropped."""
    rows = [(r[7], 0, tuple(r), 0.0) for r in run_ev] + [(w[7], 1, tuple(w), 1.0) for w in walk_ev]
    rows.sort(key=lambda r: (r[0], r[1]))
    kept, flags = [], []
    last_ic, last_kind = None, None
    for _, kind, row, wflag in rows:
        if last_kind is not None and kind != last_kind and row[0] < last_ic + min_gap_n:
            continue
        kept.append(row)
        flags.append(wflag)
        last_ic, last_kind = row[0], kind
    return np.array(kept, dtype=float).reshape(-1, 8), np.array(flags)
