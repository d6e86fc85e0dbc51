"""Streaming gait-event kernels: ``(state, chunk) -> (state, events)``.

Both kernels walk the chunk once inside numba, carry everything they need in a
flat float64 state array, and write finished steps into a preallocated event
buffer, so feeding a recording in any chunking gives bit-identical events.

Event rows (float64, ``EV_*`` columns) hold absolute fractional sample indices
(0 = first sample ever fed) and the per-step features; the Python detector
turns them into ``STEP_DTYPE`` records with times.
"""
from __future__ import annotations

import numpy as np

from ._numba_config import jit

# event columns
EV_IC = 0  # fractional index of the IC feature (before bias correction)
EV_TC = 1  # fractional index of the TC feature (before bias correction)
EV_PEAK_V = 2  # sacrum: peak vertical proper acceleration in stance (g) ~ vGRF in BW
EV_PEAK_NORM = 3  # peak |acc| in the impact window (g)
EV_ML_MEAN = 4  # mean medio-lateral acceleration during stance (g, +left)
EV_SLOPE = 5  # max rise of the loading signal (g per sample)
EV_CLIPPED = 6  # 1.0 if any axis reached the clip level in the impact window
EV_EMITTED = 7  # index of the sample at which the step was emitted
EV_N = 8


@jit
def _grown(events):
    """``events`` in a buffer twice as long (the first rows copied). Element by element on purpose: numba
    compiles an array-to-array assignment (``grown[:ne] = events[:ne]``) through its generic broadcasting
    setitem, ~5 s of compilation for a few lines, paid by every process with an empty cache."""
    m = events.shape[0]
    grown = np.empty((2 * m, EV_N))
    for r in range(m):
        for c in range(EV_N):
            grown[r, c] = events[r, c]
    return grown

# ---------------------------------------------------------------- sacrum / hip
# params
SP_THR_IC, SP_THR_TC, SP_MIN_GCT_N, SP_MAX_GCT_N, SP_CLIP_G, SP_IMPACT_N = range(6)
SACRUM_PARAMS_SIZE = 6
# state
_SS_N, _SS_MODE, _SS_PREV, _SS_IC, _SS_PEAKV, _SS_PEAKN, _SS_MLSUM, _SS_CNT, _SS_SLOPE, _SS_CLIP, _SS_ABORTED = range(11)
SACRUM_STATE_SIZE = 11


def sacrum_init() -> np.ndarray:
    st = np.zeros(SACRUM_STATE_SIZE)
    st[_SS_PREV] = np.nan
    return st


@jit
def sacrum_kernel(params, v_g, vf_g, ml_g, norm_g, maxabs_g, state):
    """Stance = vertical proper acceleration above ``thr_ic`` until it falls below ``thr_tc``.

    The trunk's vertical proper acceleration is ~ vGRF / body weight (≈0 g in
    flight), so its threshold crossings mark contact; crossings are linearly
    interpolated between samples. ``vf_g`` is the more heavily smoothed
    vertical signal whose stance maximum estimates the peak vGRF.
    """
    st = state.copy()
    n = v_g.shape[0]
    events = np.empty((n // 8 + 2, EV_N))
    ne = 0
    thr_ic = params[SP_THR_IC]
    thr_tc = params[SP_THR_TC]
    for i in range(n):
        idx = st[_SS_N] + i
        x = v_g[i]
        prev = st[_SS_PREV]
        if st[_SS_MODE] == 0.0:
            if prev == prev and prev < thr_ic and x >= thr_ic:
                st[_SS_MODE] = 1.0
                st[_SS_IC] = idx - 1.0 + (thr_ic - prev) / (x - prev)
                st[_SS_PEAKV] = vf_g[i]
                st[_SS_PEAKN] = norm_g[i]
                st[_SS_MLSUM] = ml_g[i]
                st[_SS_CNT] = 1.0
                st[_SS_SLOPE] = x - prev
                st[_SS_CLIP] = 1.0 if maxabs_g[i] >= params[SP_CLIP_G] else 0.0
        else:
            if vf_g[i] > st[_SS_PEAKV]:
                st[_SS_PEAKV] = vf_g[i]
            dur = idx - st[_SS_IC]
            if dur <= params[SP_IMPACT_N]:
                if norm_g[i] > st[_SS_PEAKN]:
                    st[_SS_PEAKN] = norm_g[i]
                if x - prev > st[_SS_SLOPE]:
                    st[_SS_SLOPE] = x - prev
                if maxabs_g[i] >= params[SP_CLIP_G]:
                    st[_SS_CLIP] = 1.0
            st[_SS_MLSUM] += ml_g[i]
            st[_SS_CNT] += 1.0
            if prev >= thr_tc and x < thr_tc:
                tc = idx - 1.0 + (prev - thr_tc) / (prev - x)
                gct_n = tc - st[_SS_IC]
                if gct_n >= params[SP_MIN_GCT_N]:
                    if ne == events.shape[0]:
                        events = _grown(events)
                    events[ne, EV_IC] = st[_SS_IC]
                    events[ne, EV_TC] = tc
                    events[ne, EV_PEAK_V] = st[_SS_PEAKV]
                    events[ne, EV_PEAK_NORM] = st[_SS_PEAKN]
                    events[ne, EV_ML_MEAN] = st[_SS_MLSUM] / st[_SS_CNT]
                    events[ne, EV_SLOPE] = st[_SS_SLOPE]
                    events[ne, EV_CLIPPED] = st[_SS_CLIP]
                    events[ne, EV_EMITTED] = idx
                    ne += 1
                st[_SS_MODE] = 0.0
            elif dur > params[SP_MAX_GCT_N]:
                # no flight phase: not running (walking/standing) — drop the candidate
                st[_SS_MODE] = 0.0
                st[_SS_ABORTED] += 1.0
        st[_SS_PREV] = x
    st[_SS_N] += n
    return st, events[:ne].copy()


# ----------------------------------------------------------- foot / shank
(
    LP_TRIG_MIN_G,
    LP_TRIG_FRAC,
    LP_REFRACT_FRAC,
    LP_REFRACT_MIN_N,
    LP_IC_WIN_N,
    LP_TC_MIN_FRAC,
    LP_TC_MAX_FRAC,
    LP_STRIDE0_N,
    LP_STRIDE_MAX_N,
    LP_CLIP_G,
    LP_EMA,
    LP_DECAY,
    LP_QUIET_G,
    LP_QUIET_N,
    LP_SWING_N,
) = range(15)
LIMB_PARAMS_SIZE = 15
(
    _LS_N,
    _LS_MODE,
    _LS_PREVN,
    _LS_LAST_IC,
    _LS_BEST,
    _LS_BEST_I,
    _LS_LEFT,
    _LS_RIGHT,
    _LS_WIN_END,
    _LS_PEAK_EMA,
    _LS_STRIDE_EMA,
    _LS_TC_BEST,
    _LS_TC_BEST_I,
    _LS_TC_LEFT,
    _LS_TC_RIGHT,
    _LS_TC_START,
    _LS_TC_END,
    _LS_SLOPE,
    _LS_CLIP,
    _LS_IC,
    _LS_PREV_TC,
    _LS_JBEST,
    _LS_JERK_EMA,
    _LS_PREV_IC_OK,
    _LS_QRUN,
    _LS_STANCE,
    _LS_STANCE_END,
) = range(27)
LIMB_STATE_SIZE = 27


def limb_init(params: np.ndarray) -> np.ndarray:
    st = np.zeros(LIMB_STATE_SIZE)
    st[_LS_PREVN] = np.nan
    st[_LS_LAST_IC] = -1e18
    st[_LS_STRIDE_EMA] = params[LP_STRIDE0_N]
    st[_LS_PEAK_EMA] = 0.0
    st[_LS_PREV_TC] = np.nan
    st[_LS_PREV_IC_OK] = -1e18
    st[_LS_STANCE_END] = -1e18
    return st


@jit
def _parabolic(left, centre, right):
    """Sub-sample offset of a parabola's vertex through three equally spaced points."""
    den = left - 2.0 * centre + right
    if den == 0.0 or left != left or right != right:
        return 0.0
    off = 0.5 * (left - right) / den
    if off > 0.5:
        return 0.5
    if off < -0.5:
        return -0.5
    return off


@jit
def _limb_emit(params, st, events, ne, idx):
    """Confirm the candidate in ``st`` (TC = the best ``tc_sig`` minimum so far), learn from it, write its row."""
    if st[_LS_TC_BEST_I] >= 0.0:
        tc = st[_LS_TC_BEST_I] + _parabolic(st[_LS_TC_LEFT], st[_LS_TC_BEST], st[_LS_TC_RIGHT])
    else:
        tc = np.nan
    if ne == events.shape[0]:
        events = _grown(events)
    a = params[LP_EMA]
    # confirmed: stride from the previous confirmed IC and the impact-jerk level
    if st[_LS_PREV_IC_OK] > -1e17:
        stride = st[_LS_IC] - st[_LS_PREV_IC_OK]
        # a stride far longer than usual hides a missed contact: don't learn from it
        if stride <= params[LP_STRIDE_MAX_N] and stride <= 1.5 * st[_LS_STRIDE_EMA]:
            st[_LS_STRIDE_EMA] += a * (stride - st[_LS_STRIDE_EMA])
    st[_LS_PREV_IC_OK] = st[_LS_IC]
    if st[_LS_JERK_EMA] == 0.0:
        st[_LS_JERK_EMA] = st[_LS_JBEST]
    else:
        st[_LS_JERK_EMA] += a * (st[_LS_JBEST] - st[_LS_JERK_EMA])
    events[ne, EV_IC] = st[_LS_IC]
    events[ne, EV_TC] = tc
    events[ne, EV_PEAK_V] = np.nan
    events[ne, EV_PEAK_NORM] = st[_LS_BEST]
    events[ne, EV_ML_MEAN] = np.nan
    events[ne, EV_SLOPE] = st[_LS_SLOPE]
    events[ne, EV_CLIPPED] = st[_LS_CLIP]
    events[ne, EV_EMITTED] = idx
    st[_LS_MODE] = 0.0
    return events, ne + 1


@jit
def limb_kernel(params, norm_g, jerk_gpms, tc_sig, maxabs_g, state):
    """Initial contact = the impact peak of |acc|; toe-off = minimum of ``tc_sig``.

    1. Trigger when the jerk |d acc/dt| (g/ms) exceeds max(trig_min,
       trig_frac * recent impact jerk) after a refractory time (a fraction of
       the recent stride). Heel-strike impacts are 2-4x sharper than push-off
       or swing peaks, in walking and running alike;
    2. IC feature = the |acc| maximum within ``ic_win`` samples of the trigger
       (parabolic sub-sample refinement);
    3. TC feature = the minimum of ``tc_sig`` between tc_min and tc_max
       fractions of the recent stride after the IC feature; a sharper impact
       inside that window replaces the candidate (it was not a heel strike);
    4. the step is emitted at the end of the TC window (the look-ahead).

    Rest check (``quiet_g`` > 0, the foot): a contact is impact -> foot at rest
    (|acc| within ``quiet_g`` of 1 g for ``quiet_n`` samples) -> push-off -> swing.
    A candidate that came to rest is a contact: a sharper trigger no longer
    replaces it (a soft forefoot impact can be no sharper than its own push-off),
    and a trigger at least ``swing_n`` samples after its rest ended is the next
    contact even inside the TC window or the refractory time (the stride is
    shorter than the learned one, e.g. running after walking): the candidate is
    emitted at once and the new one starts. Without a rest nothing changes.
    """
    st = state.copy()
    n = norm_g.shape[0]
    events = np.empty((n // 16 + 2, EV_N))
    ne = 0
    quiet_g = params[LP_QUIET_G]
    for i in range(n):
        idx = st[_LS_N] + i
        x = norm_g[i]
        mode = st[_LS_MODE]
        j = jerk_gpms[i]
        if quiet_g > 0.0:
            if abs(x - 1.0) < quiet_g:
                st[_LS_QRUN] += 1.0
            else:
                st[_LS_QRUN] = 0.0
            if st[_LS_QRUN] >= params[LP_QUIET_N]:
                st[_LS_STANCE_END] = idx
                if mode != 0.0:
                    st[_LS_STANCE] = 1.0
        trig = params[LP_TRIG_MIN_G]
        t2 = params[LP_TRIG_FRAC] * st[_LS_JERK_EMA]
        if t2 > trig:
            trig = t2
        if mode == 2.0 and idx >= st[_LS_TC_START] and j >= trig:
            if quiet_g > 0.0 and st[_LS_STANCE] == 1.0:
                # the candidate came to rest: a contact. A trigger long after the rest ended is the next one
                if idx - st[_LS_STANCE_END] >= params[LP_SWING_N]:
                    events, ne = _limb_emit(params, st, events, ne, idx)
                    mode = 0.0
            elif j > st[_LS_JBEST]:
                mode = 0.0  # a sharper impact: the candidate was not a heel strike
                st[_LS_MODE] = 0.0
                st[_LS_LAST_IC] = -1e18
        if mode == 0.0:
            # no contact for 1.5 strides (a slower gait, e.g. walking after running): let the learned
            # impact level fade so softer impacts trigger again
            if idx - st[_LS_LAST_IC] > 1.5 * st[_LS_STRIDE_EMA]:
                st[_LS_JERK_EMA] *= params[LP_DECAY]
            refract = params[LP_REFRACT_FRAC] * st[_LS_STRIDE_EMA]
            if refract < params[LP_REFRACT_MIN_N]:
                refract = params[LP_REFRACT_MIN_N]
            free = idx - st[_LS_LAST_IC] >= refract
            if (not free and quiet_g > 0.0 and st[_LS_STANCE] == 1.0 and st[_LS_STANCE_END] > st[_LS_LAST_IC]
                    and idx - st[_LS_STANCE_END] >= params[LP_SWING_N]):
                free = True  # rest, then a swing: the next contact, however short the stride
            if j >= trig and free:
                st[_LS_MODE] = 1.0
                st[_LS_JBEST] = j
                st[_LS_BEST] = x
                st[_LS_BEST_I] = idx
                st[_LS_LEFT] = st[_LS_PREVN]
                st[_LS_RIGHT] = np.nan
                st[_LS_WIN_END] = idx + params[LP_IC_WIN_N]
                p = st[_LS_PREVN]
                st[_LS_SLOPE] = x - p if p == p else 0.0
                st[_LS_CLIP] = 1.0 if maxabs_g[i] >= params[LP_CLIP_G] else 0.0
                st[_LS_STANCE] = 0.0
                st[_LS_QRUN] = 0.0
        elif mode == 1.0:
            if j > st[_LS_JBEST]:
                st[_LS_JBEST] = j
            if idx == st[_LS_BEST_I] + 1.0:
                st[_LS_RIGHT] = x
            if x > st[_LS_BEST]:
                st[_LS_BEST] = x
                st[_LS_BEST_I] = idx
                st[_LS_LEFT] = st[_LS_PREVN]
                st[_LS_RIGHT] = np.nan
            d = x - st[_LS_PREVN]
            if d > st[_LS_SLOPE]:
                st[_LS_SLOPE] = d
            if maxabs_g[i] >= params[LP_CLIP_G]:
                st[_LS_CLIP] = 1.0
            if idx >= st[_LS_WIN_END]:
                ic = st[_LS_BEST_I] + _parabolic(st[_LS_LEFT], st[_LS_BEST], st[_LS_RIGHT])
                st[_LS_IC] = ic
                st[_LS_LAST_IC] = st[_LS_BEST_I]
                st[_LS_TC_START] = st[_LS_BEST_I] + params[LP_TC_MIN_FRAC] * st[_LS_STRIDE_EMA]
                st[_LS_TC_END] = st[_LS_BEST_I] + params[LP_TC_MAX_FRAC] * st[_LS_STRIDE_EMA]
                st[_LS_TC_BEST] = np.inf
                st[_LS_TC_BEST_I] = -1.0
                st[_LS_TC_LEFT] = np.nan
                st[_LS_TC_RIGHT] = np.nan
                st[_LS_MODE] = 2.0
        if mode == 2.0:
            y = tc_sig[i]
            if idx == st[_LS_TC_BEST_I] + 1.0:
                st[_LS_TC_RIGHT] = y
            if idx >= st[_LS_TC_START]:
                if y < st[_LS_TC_BEST]:
                    st[_LS_TC_LEFT] = st[_LS_PREV_TC]
                    st[_LS_TC_BEST] = y
                    st[_LS_TC_BEST_I] = idx
                    st[_LS_TC_RIGHT] = np.nan
            if idx >= st[_LS_TC_END]:
                events, ne = _limb_emit(params, st, events, ne, idx)
        st[_LS_PREVN] = x
        st[_LS_PREV_TC] = tc_sig[i]
    st[_LS_N] += n
    return st, events[:ne].copy()


# ------------------------------------------------- sacrum / hip, walking
# Initial contact in walking (no flight phase, so the running kernel above finds nothing): the steepest
# rise of the trunk's vertical acceleration at loading response, i.e. the maximum of its Gaussian-
# derivative (McCamley et al. 2012's Gaussian-CWT idea as a linear-phase FIR, see _filters), picked
# by a confirmed-peak search with an adaptive level and refractory time.
# params
(WP_DELAY_N, WP_CONFIRM_N, WP_MIN_STEP_N, WP_MAX_STEP_N, WP_REFRACT_FRAC, WP_THR_MIN, WP_THR_FRAC, WP_EMA,
 WP_DECAY, WP_FLIGHT_N) = range(10)
WALK_PARAMS_SIZE = 10
# state
(_WS_N, _WS_BEST, _WS_BEST_I, _WS_LEFT, _WS_RIGHT, _WS_PREV_D, _WS_LAST_IC, _WS_LEVEL, _WS_STEP_EMA,
 _WS_LAST_FLIGHT, _WS_SUPPRESSED, _WS_REJECTED) = range(12)
WALK_STATE_SIZE = 12


def walk_init() -> np.ndarray:
    st = np.zeros(WALK_STATE_SIZE)
    st[_WS_BEST] = -np.inf
    st[_WS_BEST_I] = -1.0
    st[_WS_LEFT] = np.nan
    st[_WS_RIGHT] = np.nan
    st[_WS_PREV_D] = np.nan
    st[_WS_LAST_IC] = -1e18
    st[_WS_STEP_EMA] = np.nan
    st[_WS_LAST_FLIGHT] = -1e18
    return st


@jit
def walk_kernel(params, d_gps, flight, state):
    """Walking initial contacts from ``d_gps``, the Gaussian-derivative of the vertical acceleration (g/s).

    ``d_gps[i]`` belongs to stream index ``idx - delay`` (the FIR's linear-phase delay); ``flight[i]``
    (1.0 / 0.0) says whether the running kernel's vertical signal is below its toe-off threshold at
    ``idx`` (≈ 0 g: the runner is airborne).

    1. a candidate is the largest ``d`` since the refractory time after the last IC ended;
    2. it is confirmed once it has stayed the largest for ``confirm`` samples and exceeds
       max(thr_min, thr_frac × the recent IC level); a smaller peak is dropped (counted);
    3. if a flight phase lies within ``flight_n`` samples before the emission, the runner is running:
       the running kernel owns that step, the candidate is suppressed (counted) and the level is reset;
    4. the refractory time is max(min_step, refract_frac × the recent step time).
    Emitted rows carry IC only (TC and the running features NaN).
    """
    st = state.copy()
    n = d_gps.shape[0]
    events = np.empty((n // 16 + 2, EV_N))
    ne = 0
    delay = params[WP_DELAY_N]
    a = params[WP_EMA]
    for i in range(n):
        idx = st[_WS_N] + i
        c = idx - delay  # the stream index the derivative value belongs to
        x = d_gps[i]
        if flight[i] > 0.5:
            st[_WS_LAST_FLIGHT] = idx
        # no IC for a long time: the learnt level fades (a slower, softer gait)
        if c - st[_WS_LAST_IC] > params[WP_MAX_STEP_N]:
            st[_WS_LEVEL] *= params[WP_DECAY]
        refract = params[WP_MIN_STEP_N]
        s_ema = st[_WS_STEP_EMA]
        if s_ema == s_ema and params[WP_REFRACT_FRAC] * s_ema > refract:
            refract = params[WP_REFRACT_FRAC] * s_ema
        if c >= st[_WS_LAST_IC] + refract:
            if st[_WS_BEST_I] >= 0.0 and c == st[_WS_BEST_I] + 1.0:
                st[_WS_RIGHT] = x
            if x > st[_WS_BEST]:
                st[_WS_BEST] = x
                st[_WS_BEST_I] = c
                st[_WS_LEFT] = st[_WS_PREV_D]
                st[_WS_RIGHT] = np.nan
            if st[_WS_BEST_I] >= 0.0 and c - st[_WS_BEST_I] >= params[WP_CONFIRM_N]:
                thr = params[WP_THR_MIN]
                if params[WP_THR_FRAC] * st[_WS_LEVEL] > thr:
                    thr = params[WP_THR_FRAC] * st[_WS_LEVEL]
                best_i = st[_WS_BEST_I]
                if st[_WS_BEST] >= thr:
                    if idx - st[_WS_LAST_FLIGHT] <= params[WP_FLIGHT_N]:
                        st[_WS_SUPPRESSED] += 1.0
                        st[_WS_LEVEL] = 0.0
                        st[_WS_STEP_EMA] = np.nan
                    else:
                        if st[_WS_LEVEL] == 0.0:
                            st[_WS_LEVEL] = st[_WS_BEST]
                        else:
                            st[_WS_LEVEL] += a * (st[_WS_BEST] - st[_WS_LEVEL])
                        step = best_i - st[_WS_LAST_IC]
                        if params[WP_MIN_STEP_N] <= step <= params[WP_MAX_STEP_N]:
                            if s_ema != s_ema:
                                st[_WS_STEP_EMA] = step
                            else:
                                st[_WS_STEP_EMA] += a * (step - s_ema)
                        if ne == events.shape[0]:
                            events = _grown(events)
                        events[ne, EV_IC] = best_i + _parabolic(st[_WS_LEFT], st[_WS_BEST], st[_WS_RIGHT])
                        events[ne, EV_TC] = np.nan
                        events[ne, EV_PEAK_V] = np.nan
                        events[ne, EV_PEAK_NORM] = np.nan
                        events[ne, EV_ML_MEAN] = np.nan
                        events[ne, EV_SLOPE] = np.nan
                        events[ne, EV_CLIPPED] = 0.0
                        events[ne, EV_EMITTED] = idx
                        ne += 1
                    st[_WS_LAST_IC] = best_i
                else:
                    st[_WS_REJECTED] += 1.0
                st[_WS_BEST] = -np.inf
                st[_WS_BEST_I] = -1.0
                st[_WS_LEFT] = np.nan
                st[_WS_RIGHT] = np.nan
        st[_WS_PREV_D] = x
    st[_WS_N] += n
    return st, events[:ne].copy()


@jit
def merge_walk_run_kernel(run_ev, walk_ev, min_gap_n, state):
    """Merge running and walking event rows in emission order; one IC is never reported twice.

    ``state`` = [last emitted IC index, its kind (1 walking / 2 running / 0 none), dropped count].
    A row of the other kind whose IC lies within ``min_gap_n`` samples after (or before) the last
    emitted IC is the same contact seen by both detectors at the walk/run handover: it is dropped
    (counted). Rows of one kind are never compared with each other, so running alone is unchanged.
    Returns (events, walking flags 1.0/0.0, state).
    """
    st = state.copy()
    nr = run_ev.shape[0]
    nw = walk_ev.shape[0]
    out = np.empty((nr + nw, EV_N))
    walking = np.empty(nr + nw)
    no = 0
    ir = 0
    iw = 0
    while ir < nr or iw < nw:
        take_run = iw >= nw or (ir < nr and run_ev[ir, EV_EMITTED] <= walk_ev[iw, EV_EMITTED])
        if take_run:
            row = run_ev[ir]
            kind = 2.0
            ir += 1
        else:
            row = walk_ev[iw]
            kind = 1.0
            iw += 1
        if st[1] != 0.0 and kind != st[1] and row[EV_IC] < st[0] + min_gap_n:
            st[2] += 1.0
            continue
        for c in range(EV_N):  # element by element (see _grown)
            out[no, c] = row[c]
        walking[no] = 1.0 if kind == 1.0 else 0.0
        no += 1
        st[0] = row[EV_IC]
        st[1] = kind
    return out[:no].copy(), walking[:no].copy(), st
