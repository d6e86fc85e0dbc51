"""Per-step bookkeeping in one compiled pass: intervals, cadence, flight, duty factor, side, activity.

Sequential by nature (each step needs the previous one), so it runs in numba
with its state carried explicitly, like every other kernel.
"""
from __future__ import annotations

import numpy as np

from ._numba_config import jit

# state layout
(ST_PREV_IC, ST_PREV_TC, ST_CAD_SMOOTH, ST_STEP_TYP, ST_PARITY, ST_VOTE, ST_LAST_STEP, ST_ACTIVITY,
 ST_ODD) = range(9)
STEP_STATE_SIZE = 9

CADENCE_SMOOTHING = 0.25  # EMA weight of the newest step in cadence_smoothed_spm
GAP_FACTOR = 1.6  # a step interval this many times the typical one hides a missed contact
RUN_CADENCE_SPM = 140.0  # limb sensors: steps at or above this cadence count as running


def step_state_init() -> np.ndarray:
    st = np.full(STEP_STATE_SIZE, np.nan)
    st[ST_PARITY] = 0.0
    st[ST_VOTE] = 0.0
    st[ST_ACTIVITY] = -1.0
    st[ST_ODD] = 0.0
    return st


@jit
def step_metrics_kernel(ic_s, tc_s, ml_mean_g, sacrum, fixed_side, walking, state):
    """Returns (flight_ms, step_time_ms, cadence_spm, cadence_smoothed_spm, duty_factor, side, activity), state.

    - sacrum: step time = IC - previous IC (either foot); flight = IC - previous TC;
      side from the sign of the mean medio-lateral acceleration in stance (left
      stance pushes the trunk to the right, + = left), with an alternation vote
      so one noisy step cannot break L/R/L/R; a sacral step is running (it needed
      a flight phase) unless ``walking[k]`` (1.0) marks it as a walking IC: then
      side unknown (the vote restarts), no flight, and the typical step time
      restarts when the activity changes (walking steps are longer than running ones);
    - foot/shank (one leg seen): stride = IC - previous IC, step time = stride/2,
      flight = step time - GCT (symmetric gait assumed); running at >= 140 spm;
    - an interval beyond 2 s or 1.6x the typical one (a pause, a missed contact)
      gives NaN interval metrics instead of a wrong number.
    """
    st = state.copy()
    m = ic_s.shape[0]
    flight = np.full(m, np.nan)
    step_ms_out = np.full(m, np.nan)
    cad_out = np.full(m, np.nan)
    cad_s_out = np.full(m, np.nan)
    duty = np.full(m, np.nan)
    side = np.full(m, -1, dtype=np.int8)
    activity = np.full(m, -1, dtype=np.int8)
    for k in range(m):
        ic = ic_s[k]
        tc = tc_s[k]
        gct = (tc - ic) * 1000.0
        walk = sacrum and walking[k] > 0.5
        if walk:
            step_ms = (ic - st[ST_PREV_IC]) * 1000.0
            stride_ms = 2.0 * step_ms
            fl = np.nan
            st[ST_VOTE] = 0.0
            if st[ST_ACTIVITY] == 2.0:
                st[ST_STEP_TYP] = np.nan
        elif sacrum:
            step_ms = (ic - st[ST_PREV_IC]) * 1000.0
            stride_ms = 2.0 * step_ms
            fl = (ic - st[ST_PREV_TC]) * 1000.0
            if st[ST_ACTIVITY] == 1.0:
                st[ST_STEP_TYP] = np.nan
            # side: parity flips every step; the ML sign of each step votes for the parity
            st[ST_PARITY] = 1.0 - st[ST_PARITY]
            mlv = ml_mean_g[k]
            if mlv != mlv or abs(mlv) < 1e-6:
                if st[ST_VOTE] != 0.0:
                    side[k] = 0 if st[ST_PARITY] == 0.0 else 1
            else:
                observed = 0 if mlv < 0 else 1
                predicted = 0 if st[ST_PARITY] == 0.0 else 1
                if observed == predicted:
                    st[ST_VOTE] = 0.8 * st[ST_VOTE] + abs(mlv)
                else:
                    st[ST_VOTE] = 0.8 * st[ST_VOTE] - abs(mlv)
                if st[ST_VOTE] < 0.0:
                    st[ST_PARITY] = 1.0 - st[ST_PARITY]
                    st[ST_VOTE] = -st[ST_VOTE]
                side[k] = 0 if st[ST_PARITY] == 0.0 else 1
        else:
            stride_ms = (ic - st[ST_PREV_IC]) * 1000.0
            step_ms = stride_ms / 2.0
            fl = step_ms - gct
            side[k] = fixed_side
        typical = st[ST_STEP_TYP]
        if walk and 0.0 < step_ms < 2000.0 and typical == typical and (
                step_ms > GAP_FACTOR * typical or GAP_FACTOR * step_ms < typical):
            # walking: a missed or an extra contact gives one odd interval; two odd ones in a row mean
            # the pace changed (walking is far more variable than running): start the typical step again
            st[ST_ODD] += 1.0
            if st[ST_ODD] >= 2.0:
                st[ST_STEP_TYP] = step_ms
                st[ST_ODD] = 0.0
            else:
                step_ms = np.nan
                stride_ms = np.nan
        elif not (0.0 < step_ms < 2000.0) or (typical == typical and step_ms > GAP_FACTOR * typical):
            step_ms = np.nan
            stride_ms = np.nan
        elif typical != typical:
            st[ST_STEP_TYP] = step_ms
        else:
            st[ST_STEP_TYP] = typical + 0.2 * (step_ms - typical)
            st[ST_ODD] = 0.0
        if not (0.0 <= fl < 1000.0) or step_ms != step_ms:
            fl = np.nan
        flight[k] = fl
        step_ms_out[k] = step_ms
        cad = 60000.0 / step_ms if step_ms == step_ms else np.nan
        cad_out[k] = cad
        if cad == cad:
            if st[ST_CAD_SMOOTH] != st[ST_CAD_SMOOTH]:
                st[ST_CAD_SMOOTH] = cad
            else:
                st[ST_CAD_SMOOTH] += CADENCE_SMOOTHING * (cad - st[ST_CAD_SMOOTH])
        cad_s_out[k] = st[ST_CAD_SMOOTH]
        duty[k] = gct / stride_ms if stride_ms == stride_ms else np.nan
        if walk:
            activity[k] = 1
        elif sacrum:
            activity[k] = 2
        elif cad == cad:
            activity[k] = 2 if cad >= RUN_CADENCE_SPM else 1
        st[ST_PREV_IC] = ic
        st[ST_PREV_TC] = tc
        st[ST_LAST_STEP] = tc if tc == tc else ic
        if activity[k] != -1:
            st[ST_ACTIVITY] = activity[k]
    return flight, step_ms_out, cad_out, cad_s_out, duty, side, activity, st
