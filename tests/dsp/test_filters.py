import numpy as np
import pytest
from scipy import signal

from runform.dsp._filters import (butter_lowpass_sos, fir_kernel, fir_state, gaussian_derivative_taps, sos_steady_state,
                                  sosfilt_bank_kernel, sosfilt_kernel)
from tests.dsp import naive


@pytest.mark.parametrize("fs,fc", [(500.0, 20.0), (142.857, 15.0), (100.0, 40.0), (1600.0, 8.0)])
def test_design_matches_scipy(fs, fc):
    ours = butter_lowpass_sos(fc, fs)
    ref = signal.butter(2, fc, fs=fs, output="sos")
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_design_rejects_bad_cutoff():
    with pytest.raises(ValueError, match="Nyquist"):
        butter_lowpass_sos(60.0, 100.0)
    with pytest.raises(ValueError, match="even"):
        butter_lowpass_sos(10.0, 100.0, order=3)


def test_kernel_matches_scipy_naive_and_chunks():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(3000)
    sos = butter_lowpass_sos(20.0, 500.0, order=4)
    zi = sos_steady_state(sos, x[0])
    y, zf = sosfilt_kernel(sos, x, zi)
    y_sp, zf_sp = signal.sosfilt(sos, x, zi=zi)
    np.testing.assert_allclose(y, y_sp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(zf, zf_sp, rtol=1e-12, atol=1e-12)
    y_nv, _ = naive.sosfilt(sos, x, zi)
    np.testing.assert_allclose(y, y_nv, rtol=1e-12, atol=1e-12)
    # any chunking gives the identical output
    cuts = np.sort(rng.choice(np.arange(1, 3000), 40, replace=False))
    z = zi
    parts = []
    for piece in np.split(x, cuts):
        yp, z = sosfilt_kernel(sos, piece, z)
        parts.append(yp)
    assert np.array_equal(np.concatenate(parts), y)


def test_steady_state_has_no_transient():
    sos = butter_lowpass_sos(20.0, 500.0)
    y, _ = sosfilt_kernel(sos, np.full(200, 9.81), sos_steady_state(sos, 9.81))
    np.testing.assert_allclose(y, 9.81, rtol=1e-12)


def test_bank_equals_separate_filters_bit_for_bit_and_chunks():
    """The sacral detector's three low-passes run as one bank: each row must be exactly the single filter
    (three single biquads: the register fast path; two 4th-order filters: the general path)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 2500))
    s20, s8, s4 = butter_lowpass_sos(20.0, 500.0), butter_lowpass_sos(8.0, 500.0), butter_lowpass_sos(20.0, 500.0, 4)
    for sections in ((s20, s8, s20), (s4, s4), (s20, s8)):
        sos = np.stack(sections)
        rows = np.array([0, 0, 2])[: len(sections)]
        zi = np.stack([sos_steady_state(s, x[r, 0]) for s, r in zip(sections, rows)])
        y, zf = sosfilt_bank_kernel(sos, x, rows, zi)
        assert y.shape == (len(sections), 2500)
        for c, (s, r) in enumerate(zip(sections, rows)):
            y1, z1 = sosfilt_kernel(s, np.ascontiguousarray(x[r]), zi[c])
            assert np.array_equal(y[c], y1)
            assert np.array_equal(zf[c], z1)
            np.testing.assert_allclose(y[c], naive.sosfilt(s, x[r], zi[c])[0], rtol=1e-12, atol=1e-12)
        cuts = np.sort(rng.choice(np.arange(1, 2500), 30, replace=False))
        z, parts = zi, []
        for piece in np.split(x, cuts, axis=1):
            yp, z = sosfilt_bank_kernel(sos, np.ascontiguousarray(piece), rows, z)
            parts.append(yp)
        assert np.array_equal(np.concatenate(parts, axis=1), y)
        assert np.array_equal(z, zf)


def test_single_biquad_fast_path_equals_general_path():
    """sosfilt_kernel keeps one biquad's state in registers: bit-identical to the section loop (a 2-section
    filter whose second section passes its input through runs the general loop on the same arithmetic)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal(4000)
    sos = butter_lowpass_sos(15.0, 500.0)
    zi = sos_steady_state(sos, x[0])
    y, zf = sosfilt_kernel(sos, x, zi)
    identity = np.array([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    y2, zf2 = sosfilt_kernel(np.vstack([sos, identity]), x, np.vstack([zi, np.zeros((1, 2))]))
    assert np.array_equal(y, y2)
    assert np.array_equal(zf, zf2[:1])
    np.testing.assert_allclose(y, naive.sosfilt(sos, x, zi)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [1, 7, 255, 256, 257, 3000])
def test_fir_blocked_loop_equals_textbook_sum(n):
    """fir_kernel sums tap by tap over blocks of outputs; every output must equal the textbook per-sample sum
    (taps[0] .. taps[m-1], in that order, from 0.0) exactly, whatever n is against the block size."""
    rng = np.random.default_rng(n)
    taps = gaussian_derivative_taps(0.04, 500.0)
    hist = rng.standard_normal(taps.shape[0] - 1)
    x = rng.standard_normal(n)
    y, new_hist = fir_kernel(taps, x, hist)
    buf = np.r_[hist[::-1], x]
    h = taps.shape[0] - 1
    want = np.empty(n)
    for i in range(n):
        acc = 0.0
        for j in range(taps.shape[0]):
            acc += taps[j] * buf[h + i - j]
        want[i] = acc
    assert np.array_equal(y, want)
    assert np.array_equal(new_hist, buf[::-1][:h])
