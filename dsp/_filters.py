"""Causal IIR filtering with explicit state (like ``scipy.signal.sosfilt(..., zi)``).

Design is done here in NumPy (bilinear transform of an analog Butterworth
prototype) so the runtime needs no SciPy; the tests check it against SciPy.
"""
from __future__ import annotations

import numpy as np

from ._numba_config import jit


def butter_lowpass_sos(cutoff_hz: float, sampling_rate_hz: float, order: int = 2) -> np.ndarray:
    """Second-order sections of a digital Butterworth low-pass (even ``order``).

    Returns an array of shape (order // 2, 6) in SciPy's ``sos`` layout.
    """
    if order < 2 or order % 2:
        raise ValueError(f"order must be an even number >= 2, got {order}")
    nyquist = sampling_rate_hz / 2.0
    if not 0.0 < cutoff_hz < nyquist:
        raise ValueError(
            f"cut-off {cutoff_hz} Hz must lie between 0 and the Nyquist frequency "
            f"{nyquist:g} Hz (sampling rate {sampling_rate_hz:g} Hz)"
        )
    # pre-warped analog cut-off
    k = 2.0 * sampling_rate_hz
    wc = k * np.tan(np.pi * cutoff_hz / sampling_rate_hz)
    sections = []
    for m in range(order // 2):
        theta = np.pi * (2 * m + 1) / (2 * order)
        # analog section: wc^2 / (s^2 + 2 sin(theta) wc s + wc^2)
        a1_analog = 2.0 * np.sin(theta) * wc
        a0 = k * k + a1_analog * k + wc * wc
        b = np.array([wc * wc, 2 * wc * wc, wc * wc]) / a0
        a = np.array([a0, 2 * (wc * wc - k * k), k * k - a1_analog * k + wc * wc]) / a0
        sections.append(np.r_[b, a])
    return np.asarray(sections, dtype=np.float64)


def sos_steady_state(sos: np.ndarray, x0: float) -> np.ndarray:
    """Filter state (n_sections, 2) for a signal that has been constant at ``x0`` forever."""
    zi = np.zeros((sos.shape[0], 2))
    x = x0
    for s in range(sos.shape[0]):
        b0, b1, b2, _, a1, a2 = sos[s]
        # DF-II transposed steady state with input x and output y = x (unit DC gain per section)
        y = x * (b0 + b1 + b2) / (1.0 + a1 + a2)
        zi[s, 1] = b2 * x - a2 * y
        zi[s, 0] = y - b0 * x
        x = y
    return zi


@jit
def sosfilt_kernel(sos, x, zi):
    """Filter ``x`` (1-D) through ``sos``; returns ``(y, zf)``. ``zi`` is not modified."""
    n_sec = sos.shape[0]
    z = zi.copy()
    y = np.empty_like(x)
    for i in range(x.shape[0]):
        v = x[i]
        for s in range(n_sec):
            b0 = sos[s, 0]
            b1 = sos[s, 1]
            b2 = sos[s, 2]
            a1 = sos[s, 4]
            a2 = sos[s, 5]
            out = b0 * v + z[s, 0]
            z[s, 0] = b1 * v - a1 * out + z[s, 1]
            z[s, 1] = b2 * v - a2 * out
            v = out
        y[i] = v
    return y, z


@jit
def sosfilt_bank_kernel(sos, x, cols, zi):
    """Several independent :func:`sosfilt_kernel` filters in one pass over the samples.

    ``sos`` (k, n_sections, 6): filter c's sections; ``x`` (n, m): the input table; ``cols`` (k,) int: the column
    of ``x`` filter c reads (a column may feed several filters); ``zi`` (k, n_sections, 2). Returns ``(y, zf)`` with
    ``y`` of shape (k, n): row c is exactly ``sosfilt_kernel(sos[c], x[:, cols[c]], zi[c])[0]`` (the same
    operations in the same order). One filter waits on its own recursion every sample; interleaving k of them
    lets the processor overlap those waits.
    """
    k = sos.shape[0]
    n_sec = sos.shape[1]
    z = zi.copy()
    n = x.shape[0]
    y = np.empty((k, n))
    for i in range(n):
        for c in range(k):
            v = x[i, cols[c]]
            for s in range(n_sec):
                out = sos[c, s, 0] * v + z[c, s, 0]
                z[c, s, 0] = sos[c, s, 1] * v - sos[c, s, 4] * out + z[c, s, 1]
                z[c, s, 1] = sos[c, s, 2] * v - sos[c, s, 5] * out
                v = out
            y[c, i] = v
    return y, z


def gaussian_derivative_taps(sigma_s: float, sampling_rate_hz: float) -> np.ndarray:
    """FIR taps of the first derivative of a Gaussian (σ = ``sigma_s``), truncated at ±3σ.

    Applied by :func:`fir_kernel`, the output is the slope of the Gaussian-smoothed
    input in input units per second, delayed by ``(len(taps) - 1) / 2`` samples
    (linear phase: the same delay at every frequency). Scaled so that a ramp of
    slope 1 per second gives exactly 1.
    """
    if not (sigma_s > 0.0 and sampling_rate_hz > 0.0):
        raise ValueError(f"sigma_s and sampling_rate_hz must be positive, got {sigma_s}, {sampling_rate_hz}")
    half = max(1, int(np.ceil(3.0 * sigma_s * sampling_rate_hz)))
    k = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-0.5 * (k / (sigma_s * sampling_rate_hz)) ** 2)
    d = -k * g  # taps[j] multiplies x[i - j]: x[i - j] lies k = j - half samples *before* the centre
    d = d[::-1]  # so taps[0] (newest sample) carries the +k side
    # normalise: sum_j taps[j] * (i - j) / fs over a unit ramp = 1 per second
    ramp = -(np.arange(2 * half + 1, dtype=np.float64)) / sampling_rate_hz
    return d / np.dot(d, ramp)


def fir_state(taps: np.ndarray, x0: float) -> np.ndarray:
    """History for :func:`fir_kernel` of a signal that has been constant at ``x0`` forever."""
    return np.full(taps.shape[0] - 1, float(x0))


_FIR_BLOCK = 256  # outputs per block of fir_kernel (2 kB of y: stays in L1)


@jit
def fir_kernel(taps, x, hist):
    """Causal FIR ``y[i] = sum_j taps[j] * x[i - j]``; ``hist`` holds the previous ``len(taps) - 1``
    inputs, newest first. Returns ``(y, new_hist)``; ``hist`` is not modified."""
    m = taps.shape[0]
    n = x.shape[0]
    h = m - 1
    buf = np.empty(h + n)  # oldest ... newest
    for j in range(h):
        buf[j] = hist[h - 1 - j]
    for i in range(n):
        buf[h + i] = x[i]
    # Tap-outer, sample-inner, over blocks of outputs that stay in L1: each y[i] still sums taps[0] ..
    # taps[m-1] in that order from 0.0 (the very rounding of the textbook loop, so results are identical), but
    # the inner loop carries no dependency and, over a zero-based slice (no negative-index wrap-around to
    # check), vectorises. The textbook order waits on one floating-point add per tap per sample (~6x slower).
    y = np.empty(n)
    for i0 in range(0, n, _FIR_BLOCK):
        nb = min(_FIR_BLOCK, n - i0)
        acc = y[i0:i0 + nb]
        acc[:] = 0.0
        for j in range(m):
            tj = taps[j]
            seg = buf[h + i0 - j:h + i0 - j + nb]
            for k in range(nb):
                acc[k] += tj * seg[k]
    out = np.empty(h)
    for j in range(h):
        out[j] = buf[h + n - 1 - j]
    return y, out
