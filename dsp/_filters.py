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
    if n_sec == 1:
        # one biquad (every low-pass of the detectors): the state in registers, not in memory, so each sample
        # waits only on the arithmetic of the recursion (same operations, same order: bit-identical)
        b0 = sos[0, 0]
        b1 = sos[0, 1]
        b2 = sos[0, 2]
        a1 = sos[0, 4]
        a2 = sos[0, 5]
        z0 = z[0, 0]
        z1 = z[0, 1]
        for i in range(x.shape[0]):
            v = x[i]
            out = b0 * v + z0
            z0 = b1 * v - a1 * out + z1
            z1 = b2 * v - a2 * out
            y[i] = out
        z[0, 0] = z0
        z[0, 1] = z1
        return y, z
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
def sosfilt_bank_kernel(sos, x, rows, zi):
    """Several independent :func:`sosfilt_kernel` filters in one pass over the samples.

    ``sos`` (k, n_sections, 6): filter c's sections; ``x`` (m, n): the input rows; ``rows`` (k,) int: the row
    of ``x`` filter c reads (a row may feed several filters); ``zi`` (k, n_sections, 2). Returns ``(y, zf)`` with
    ``y`` of shape (k, n): row c is exactly ``sosfilt_kernel(sos[c], x[rows[c]], zi[c])[0]`` (the same
    operations in the same order). One filter waits on its own recursion every sample; interleaving k of them
    lets the processor overlap those waits. Three single-biquad filters (the sacral bank) keep their state in
    registers (~3x faster than state in memory).
    """
    k = sos.shape[0]
    n_sec = sos.shape[1]
    z = zi.copy()
    n = x.shape[1]
    y = np.empty((k, n))
    if k == 3 and n_sec == 1:
        xa = x[rows[0]]
        xb = x[rows[1]]
        xc = x[rows[2]]
        a_b0, a_b1, a_b2, a_a1, a_a2 = sos[0, 0, 0], sos[0, 0, 1], sos[0, 0, 2], sos[0, 0, 4], sos[0, 0, 5]
        b_b0, b_b1, b_b2, b_a1, b_a2 = sos[1, 0, 0], sos[1, 0, 1], sos[1, 0, 2], sos[1, 0, 4], sos[1, 0, 5]
        c_b0, c_b1, c_b2, c_a1, c_a2 = sos[2, 0, 0], sos[2, 0, 1], sos[2, 0, 2], sos[2, 0, 4], sos[2, 0, 5]
        a_z0, a_z1 = z[0, 0, 0], z[0, 0, 1]
        b_z0, b_z1 = z[1, 0, 0], z[1, 0, 1]
        c_z0, c_z1 = z[2, 0, 0], z[2, 0, 1]
        for i in range(n):
            v = xa[i]
            out = a_b0 * v + a_z0
            a_z0 = a_b1 * v - a_a1 * out + a_z1
            a_z1 = a_b2 * v - a_a2 * out
            y[0, i] = out
            v = xb[i]
            out = b_b0 * v + b_z0
            b_z0 = b_b1 * v - b_a1 * out + b_z1
            b_z1 = b_b2 * v - b_a2 * out
            y[1, i] = out
            v = xc[i]
            out = c_b0 * v + c_z0
            c_z0 = c_b1 * v - c_a1 * out + c_z1
            c_z1 = c_b2 * v - c_a2 * out
            y[2, i] = out
        z[0, 0, 0], z[0, 0, 1] = a_z0, a_z1
        z[1, 0, 0], z[1, 0, 1] = b_z0, b_z1
        z[2, 0, 0], z[2, 0, 1] = c_z0, c_z1
        return y, z
    for i in range(n):
        for c in range(k):
            v = x[rows[c], i]
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
    # the inner loop carries no dependency and, over zero-based slices (no negative-index wrap-around to
    # check), vectorises. Four taps per pass over the block: acc + t0*s0 + t1*s1 + t2*s2 + t3*s3 is evaluated
    # left to right, i.e. the same four additions in the same order as four passes, with one load and one
    # store of the accumulator instead of four. The textbook order waits on one floating-point add per tap per
    # sample (~10x slower); one tap per pass is bound by the accumulator's stores (~1.7x slower).
    y = np.empty(n)
    m4 = m - m % 4
    for i0 in range(0, n, _FIR_BLOCK):
        nb = min(_FIR_BLOCK, n - i0)
        acc = y[i0:i0 + nb]
        acc[:] = 0.0
        for j in range(0, m4, 4):
            t0 = taps[j]
            t1 = taps[j + 1]
            t2 = taps[j + 2]
            t3 = taps[j + 3]
            b = h + i0 - j
            s0 = buf[b:b + nb]
            s1 = buf[b - 1:b - 1 + nb]
            s2 = buf[b - 2:b - 2 + nb]
            s3 = buf[b - 3:b - 3 + nb]
            for k in range(nb):
                acc[k] = acc[k] + t0 * s0[k] + t1 * s1[k] + t2 * s2[k] + t3 * s3[k]
        for j in range(m4, m):
            tj = taps[j]
            seg = buf[h + i0 - j:h + i0 - j + nb]
            for k in range(nb):
                acc[k] += tj * seg[k]
    out = np.empty(h)
    for j in range(h):
        out[j] = buf[h + n - 1 - j]
    return y, out
