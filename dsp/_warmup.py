"""Compile (or load from the numba cache) every kernel before a sensor connects."""
from __future__ import annotations

import time

import numpy as np


def warmup() -> float:
    """Run each kernel once on a short synthetic signal; returns the seconds it took."""
    from ._detector import GaitEventDetector

    t0 = time.perf_counter()
    fs = 200.0
    n = 400
    t = np.arange(n) / fs
    acc = np.zeros((n, 3))
    acc[:, 2] = 9.80665 * (1.0 + 1.5 * np.maximum(np.sin(2 * np.pi * 1.4 * t), 0.0))
    for site in ("sacrum", "shank", "foot"):
        det = GaitEventDetector(site, fs)
        det.update(acc[:200], t[:200])
        det.update(acc[200:], t[200:])
    return time.perf_counter() - t0
