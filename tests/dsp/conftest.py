import os
from pathlib import Path

import numpy as np
import pytest

G0 = 9.80665


def synthetic_running(duration_s=20.0, fs=500.0, cadence_spm=170.0, gct_ms=250.0, seed=0, tilt=True,
                      ml_sway_g=0.08):
    """A crude running sacrum signal for kernel tests: half-sine stance, 0 g flight, noise,
    alternating ML sway (left stance pushes right), optional mounting rotation."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * fs)
    t = np.arange(n) / fs
    step_s = 60.0 / cadence_spm
    v = np.zeros(n)
    ml = np.zeros(n)
    ics = []
    tic = 0.3
    k = 0
    while tic + gct_ms / 1000 < duration_s:
        g = gct_ms / 1000 * (1 + 0.03 * rng.standard_normal())
        m = (t >= tic) & (t < tic + g)
        peak = step_s / g * np.pi / 2  # mean 1 g over the step
        v[m] = peak * np.sin(np.pi * (t[m] - tic) / g)
        ml[m] = (-1 if k % 2 == 0 else 1) * ml_sway_g * np.sin(np.pi * (t[m] - tic) / g)
        ics.append((tic, tic + g, k % 2))
        tic += step_s * (1 + 0.02 * rng.standard_normal())
        k += 1
    ap = -0.3 * np.gradient(v) * fs / 40.0
    acc = np.column_stack([ap, ml, v]) * G0 + 0.02 * G0 * rng.standard_normal((n, 3))
    if tilt:
        a, b = 0.4, -0.7
        rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
        acc = acc @ (rz @ rx).T
    return t, acc, np.array(ics)


def synthetic_limb(duration_s=20.0, fs=500.0, stride_s=0.72, seed=1):
    """A crude shank-like signal: sharp damped impact at IC, a softer push-off bump, swing swing."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * fs)
    t = np.arange(n) / fs
    a = np.zeros((n, 3))
    a[:, 2] = 1.0
    ics = []
    tic = 0.4
    while tic + 0.4 < duration_s:
        dt = t - tic
        m = (dt >= 0) & (dt < 0.12)
        a[m, 2] += 7.0 * np.exp(-dt[m] / 0.012) * np.cos(2 * np.pi * 30 * dt[m])
        a[m, 0] += 2.0 * np.exp(-dt[m] / 0.015) * np.sin(2 * np.pi * 25 * dt[m])
        to = tic + 0.28
        m2 = np.abs(t - to) < 0.06
        a[m2, 0] -= 2.0 * np.cos(np.pi * (t[m2] - to) / 0.12)
        m3 = (t > to + 0.1) & (t < tic + stride_s - 0.05)
        a[m3, 1] += 1.5 * np.sin(np.pi * (t[m3] - to - 0.1) / (stride_s - 0.43))
        ics.append((tic, to))
        tic += stride_s * (1 + 0.02 * rng.standard_normal())
    a += 0.03 * rng.standard_normal(a.shape)
    return t, a * G0, np.array(ics)


