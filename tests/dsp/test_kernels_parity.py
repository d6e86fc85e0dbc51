"""Every numba kernel against its plain twin in tests/dsp/naive.py."""
import math

import numpy as np
import pytest

from runform.dsp import GaitEventDetector
from runform.dsp import _detect as K
from runform.dsp._filters import butter_lowpass_sos, sos_steady_state, sosfilt_kernel
from runform.dsp._orientation import ORIENT_BLOCK, body_frame_kernel, orientation_init, orientation_kernel
from tests.dsp import naive
from tests.dsp.conftest import synthetic_limb, synthetic_running


def test_orientation_kernel_matches_twin():
    t, acc, _ = synthetic_running(duration_s=6.0)
    fs = 500.0
    out, _ = orientation_kernel(np.ascontiguousarray(acc), 1 / (2 * fs), 1 / (4 * fs), orientation_init())
    ref = naive.orientation(acc, 1 / (2 * fs), 1 / (4 * fs), block=ORIENT_BLOCK)
    assert out.shape == ref.shape == (5, acc.shape[0])
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)


def test_orientation_vertical_is_the_per_sample_estimate_bit_for_bit():
    """Only AP/ML use the once-per-block axis: the vertical (and |a|, max |axis|) are exactly the per-sample
    gravity-EMA arithmetic, in the same order as a plain loop, so every event built on them is unchanged."""
    _, acc, _ = synthetic_running(duration_s=3.0, seed=4)
    fs = 500.0
    ag = 1 / (2 * fs)
    out, _ = orientation_kernel(np.ascontiguousarray(acc), ag, 1 / (4 * fs), orientation_init())
    gx, gy, gz = acc[0]
    for i, (ax, ay, az) in enumerate(acc.tolist()):
        gx += ag * (ax - gx)
        gy += ag * (ay - gy)
        gz += ag * (az - gz)
        gn = math.sqrt(gx * gx + gy * gy + gz * gz)
        av = ax * (gx / gn) + ay * (gy / gn) + az * (gz / gn)
        assert out[0, i] == av / 9.80665
        assert out[3, i] == math.sqrt(ax * ax + ay * ay + az * az) / 9.80665
        assert out[4, i] == max(abs(ax), abs(ay), abs(az)) / 9.80665


@pytest.mark.parametrize("max_chunk", [1, 5, 16, 17, 300, 4000])
def test_orientation_kernel_chunks(max_chunk):
    """Any chunking (inside a block of the axis, across blocks and tiles) gives the whole-array result exactly."""
    _, acc, _ = synthetic_running(duration_s=4.0 if max_chunk == 1 else 12.0, seed=2)
    acc = np.ascontiguousarray(acc)
    fs = 500.0
    whole, st_w = orientation_kernel(acc, 1 / (2 * fs), 1 / (4 * fs), orientation_init())
    rng = np.random.default_rng(max_chunk)
    st, parts, pos = orientation_init(), [], 0
    while pos < acc.shape[0]:
        step = int(rng.integers(1, max_chunk + 1))
        out, st = orientation_kernel(acc[pos:pos + step], 1 / (2 * fs), 1 / (4 * fs), st)
        parts.append(out)
        pos += step
    assert np.array_equal(np.concatenate(parts, axis=1), whole)
    assert np.array_equal(st, st_w)


def test_orientation_recovers_vertical_and_ml_under_any_mounting():
    """After convergence, the estimated vertical equals the true vertical whatever the rotation."""
    t, acc_body, _ = synthetic_running(duration_s=20.0, tilt=False)
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.linalg.det(q))  # proper rotation
    fs = 500.0
    out_b, _ = orientation_kernel(np.ascontiguousarray(acc_body), 1 / (2 * fs), 1 / (4 * fs), orientation_init())
    out_r, _ = orientation_kernel(np.ascontiguousarray(acc_body @ q.T), 1 / (2 * fs), 1 / (4 * fs),
                                  orientation_init())
    late = slice(int(12 * fs), None)
    np.testing.assert_allclose(out_r[0, late], acc_body[late, 2] / 9.80665, atol=0.03)
    np.testing.assert_allclose(out_r[0, late], out_b[0, late], atol=0.03)
    np.testing.assert_allclose(out_r[3], out_b[3], rtol=1e-12)  # norm is rotation invariant
    # forward stays forward, and the medio-lateral sway keeps its sign (+left) after the rotation: up x forward
    # is right-handed
    assert np.corrcoef(out_r[1, late], acc_body[late, 0])[0, 1] > 0.9
    assert np.corrcoef(out_r[2, late], acc_body[late, 1])[0, 1] > 0.9


def test_body_frame_kernel_matches_twin():
    _, acc, _ = synthetic_running(duration_s=2.0)
    np.testing.assert_allclose(body_frame_kernel(np.ascontiguousarray(acc)), naive.body_frame(acc), rtol=1e-12)


def _sacrum_inputs(acc, fs):
    comps = body_frame_kernel(np.ascontiguousarray(acc))
    sos = butter_lowpass_sos(20.0, fs)
    v, _ = sosfilt_kernel(sos, comps[0].copy(), sos_steady_state(sos, comps[0][0]))
    return v, comps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sacrum_kernel_matches_twin(seed):
    fs = 500.0
    t, acc, _ = synthetic_running(duration_s=15.0, tilt=False, seed=seed)
    acc = acc[:, [2, 0, 1]]  # body frame: v, ap, ml
    v, comps = _sacrum_inputs(acc, fs)
    params = np.array([0.7, 0.15, 50.0, 225.0, 3.0, 30.0])
    _, ev = K.sacrum_kernel(params, v, v * 0.9, comps[2].copy(), comps[3].copy(), comps[4].copy(),
                            K.sacrum_init())
    ref = naive.sacrum_events(params, v, v * 0.9, comps[2], comps[3], comps[4])
    assert ev.shape[0] > 30
    np.testing.assert_allclose(ev, ref, rtol=1e-9, atol=1e-9)


def test_sacrum_kernel_abandons_stances_without_flight():
    fs = 500.0
    t = np.arange(int(5 * fs)) / fs
    v = 1.0 + 0.5 * np.sin(2 * np.pi * 1.8 * t)  # walking-like: never near 0 g
    params = np.array([0.7, 0.15, 50.0, 225.0, 3.0, 30.0])
    st, ev = K.sacrum_kernel(params, v, v, v * 0, v, v, K.sacrum_init())
    assert ev.shape[0] == 0 and st[10] > 0  # aborted stances are counted
    assert naive.sacrum_events(params, v, v, v * 0, v, v).shape[0] == 0


def test_limb_kernel_matches_twin():
    fs = 500.0
    t, acc, truth = synthetic_limb(duration_s=20.0, fs=fs)
    det = GaitEventDetector("shank", fs)
    comps, _ = orientation_kernel(np.ascontiguousarray(acc), det._alpha_g, det._alpha_c, orientation_init())
    norm = comps[3].copy()
    jerk = det._jerk(acc)
    tc_sig = comps[1].copy()
    _, ev = K.limb_kernel(det._kparams, norm, jerk, tc_sig, comps[4].copy(), K.limb_init(det._kparams))
    ref = naive.LimbTwin(det._kparams).run(norm, jerk, tc_sig, comps[4])
    assert ev.shape[0] >= len(truth) - 2
    np.testing.assert_allclose(ev, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sacrum,fixed_side", [(True, -1), (False, 0), (False, 1)])
def test_step_metrics_kernel_matches_twin(sacrum, fixed_side):
    from runform.dsp._steps import step_metrics_kernel, step_state_init

    rng = np.random.default_rng(4)
    n = 300
    step = 0.35 * (1 + 0.03 * rng.standard_normal(n))
    step[[50, 51, 200]] *= [2.0, 3.0, 8.0]  # a missed contact, a longer gap, a pause
    # a walking interval (sacrum: walking ICs): longer, more variable steps, a missed and an extra contact
    walking = np.zeros(n)
    walking[100:170] = 1.0
    step[100:170] = 0.55 * (1 + 0.08 * rng.standard_normal(70))
    step[[120, 140, 141]] *= [2.0, 0.5, 0.45]
    ic = 10.0 + np.cumsum(step)
    tc = ic + 0.24 * (1 + 0.05 * rng.standard_normal(n))
    ml = 0.08 * np.where(np.arange(n) % 2 == 0, -1.0, 1.0) + 0.05 * rng.standard_normal(n)
    ml[[7, 8]] = np.nan
    tc[walking > 0] = np.nan  # walking steps carry no toe-off
    out = step_metrics_kernel(ic, tc, ml, sacrum, fixed_side, walking, step_state_init())
    ref = naive.step_metrics(ic, tc, ml, sacrum, fixed_side, walking)
    if sacrum:
        w = walking > 0
        assert (out[6][w] == 1).all() and (out[6][~w] == 2).all()  # activity
        assert (out[5][w] == -1).all() and np.isnan(out[0][w]).all()  # no side, no flight while walking
        assert np.isfinite(out[2][105:170]).mean() > 0.85  # walking cadence after the switch (typical restarted)
    for got, want in zip(out[:7], ref):
        np.testing.assert_allclose(got.astype(float), np.asarray(want, float), rtol=1e-12, atol=1e-12)
    # chunked: state carried between calls gives the same result
    st = step_state_init()
    parts = []
    for a, b in ((0, 37), (37, 38), (38, 121), (121, 300)):
        *res, st = step_metrics_kernel(ic[a:b], tc[a:b], ml[a:b], sacrum, fixed_side, walking[a:b], st)
        parts.append(res)
    for k in range(7):
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), out[k])


def test_motion_kernel_matches_twin_and_separates_standing():
    from runform.dsp._motion import motion_kernel

    rng = np.random.default_rng(0)
    x = np.r_[1.0 + 0.01 * rng.standard_normal(1000), 1.0 + 0.8 * np.abs(rng.standard_normal(1000))]
    st = motion_kernel(x, 1 / 500, np.array([np.nan, 0.0]))
    mean, var = x[0], 0.0
    for v in x[1:]:
        d = v - mean
        mean += d / 500
        var = (1 - 1 / 500) * (var + d * d / 500)
    np.testing.assert_allclose(st, [mean, var], rtol=1e-12)
    still = motion_kernel(x[:1000], 1 / 500, np.array([np.nan, 0.0]))
    assert np.sqrt(still[1]) < 0.05 < np.sqrt(st[1])
    parts = motion_kernel(x[700:], 1 / 500, motion_kernel(x[:700], 1 / 500, np.array([np.nan, 0.0])))
    np.testing.assert_array_equal(parts, st)


def test_jerk_and_row_norm_kernels_match_numpy():
    from runform.dsp._motion import jerk_kernel, row_norm_kernel

    rng = np.random.default_rng(9)
    acc = rng.standard_normal((500, 3))
    j, last = jerk_kernel(acc, acc[0].copy(), 2.5)
    ref = np.r_[0.0, np.linalg.norm(np.diff(acc, axis=0), axis=1)] * 2.5
    np.testing.assert_allclose(j, ref, rtol=1e-12)
    np.testing.assert_array_equal(last, acc[-1])
    j1, l1 = jerk_kernel(acc[:123], acc[0].copy(), 2.5)
    j2, _ = jerk_kernel(acc[123:], l1, 2.5)
    np.testing.assert_array_equal(np.r_[j1, j2], j)
    np.testing.assert_allclose(row_norm_kernel(acc), np.linalg.norm(acc, axis=1), rtol=1e-12)


def _sim_sacrum(segments, seed=3, fs=200.0):
    from runform.firmware_bridge.simulator import RunnerProfile, simulate

    rec = simulate(RunnerProfile(cadence_spm=170.0), segments=segments, sites=("sacrum",), sampling_rate_hz=fs,
                   seed=seed, orientation="random")
    return rec.signals["sacrum"], fs


def test_fir_kernel_matches_convolution_and_chunks():
    from runform.dsp._filters import fir_kernel, fir_state, gaussian_derivative_taps

    fs = 100.0
    taps = gaussian_derivative_taps(0.04, fs)
    assert taps.shape[0] == 2 * 12 + 1
    t = np.arange(300) / fs
    np.testing.assert_allclose(fir_kernel(taps, 0.5 * t, fir_state(taps, 0.0))[0][30:], 0.5, rtol=1e-12)  # ramp: slope
    x = np.random.default_rng(2).standard_normal(500)
    y, _ = fir_kernel(taps, x, fir_state(taps, x[0]))
    np.testing.assert_allclose(y, naive.fir(taps, x, x[0]), rtol=1e-12, atol=1e-12)
    h = fir_state(taps, x[0])
    parts = []
    for a, b in ((0, 1), (1, 7), (7, 300), (300, 500)):
        yy, h = fir_kernel(taps, x[a:b], h)
        parts.append(yy)
    np.testing.assert_array_equal(np.concatenate(parts), y)


@pytest.mark.parametrize("seed", [3, 4])
def test_walk_kernel_matches_twin(seed):
    """Walking ICs (run -> walk -> stand in the simulator): the kernel against the rule-by-rule twin."""
    from runform.dsp._filters import fir_kernel, fir_state
    from runform.firmware_bridge.simulator import Segment

    sig, fs = _sim_sacrum([Segment("walk", 12.0), Segment("run", 8.0), Segment("walk", 12.0), Segment("stand", 3.0)],
                          seed=seed)
    det = GaitEventDetector("sacrum", fs)
    comps, _ = orientation_kernel(np.ascontiguousarray(sig.acc_ms2), det._alpha_g, det._alpha_c, orientation_init())
    v = comps[0].copy()
    d, _ = fir_kernel(det._walk_taps, v, fir_state(det._walk_taps, v[0]))
    v_lp, _ = sosfilt_kernel(det._sos, v, sos_steady_state(det._sos, v[0]))
    flight = (v_lp < det.params.tc_threshold_g).astype(float)
    st, ev = K.walk_kernel(det._wparams, d, flight, K.walk_init())
    ref = naive.walk_events(det._wparams, d, flight)
    assert ev.shape[0] > 25 and st[K._WS_SUPPRESSED] > 5  # walking found, running steps left to the running kernel
    np.testing.assert_allclose(ev, ref, rtol=1e-9, atol=1e-9)


def test_merge_walk_run_kernel_matches_twin():
    rng = np.random.default_rng(8)

    def rows(ics, delay):
        r = np.full((len(ics), K.EV_N), np.nan)
        r[:, K.EV_IC] = ics
        r[:, K.EV_EMITTED] = np.floor(ics) + delay
        return r

    run = rows(np.sort(rng.uniform(0, 5000, 40)), 80)
    walk = rows(np.sort(rng.uniform(0, 5000, 40)), 29)
    out, flags, st = K.merge_walk_run_kernel(run, walk, 60.0, np.zeros(3))
    ref, ref_flags = naive.merge_walk_run(run, walk, 60.0)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(flags, ref_flags)
    assert st[2] == 80 - out.shape[0] > 0  # duplicates were dropped and counted
    # running rows alone pass through untouched
    alone, f2, _ = K.merge_walk_run_kernel(run, walk[:0], 60.0, np.zeros(3))
    np.testing.assert_array_equal(alone, run)
    assert not f2.any()
