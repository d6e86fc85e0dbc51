import numpy as np
import pytest
from scipy import signal

from runform.dsp._filters import butter_lowpass_sos, sos_steady_state, sosfilt_kernel
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
