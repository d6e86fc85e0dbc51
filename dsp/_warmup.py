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
    gyr = np.zeros_like(acc)
    gyr[:, 1] = 300.0 * np.sin(2 * np.pi * 1.4 * t)
    # every path a live sensor can take: sensor or body frame, with or without a gyroscope
    for site in ("sacrum", "shank", "foot"):
        for body_frame in (False, True):
            for g in (None, gyr):
                det = GaitEventDetector(site, fs, body_frame=body_frame)
                det.update(acc[:200], t[:200], None if g is None else g[:200])
                det.update(acc[200:], t[200:], None if g is None else g[200:])
    # the per-step kernel only runs when a step completes: call it directly for both site kinds
    from ._detect import EV_N, merge_walk_run_kernel
    from ._steps import step_metrics_kernel, step_state_init

    ic = np.array([1.0, 1.35, 1.7])
    for sacrum, side in ((True, -1), (False, 0)):
        step_metrics_kernel(ic, ic + 0.25, np.array([-0.05, 0.05, -0.05]), sacrum, side, np.array([0.0, 1.0, 0.0]),
                            step_state_init())
    # ... and so does the walk/run merge of a sacral sensor
    rows = np.zeros((1, EV_N))
    merge_walk_run_kernel(rows, rows + 1.0, 30.0, np.zeros(3))
    return time.perf_counter() - t0
