"""Small per-sample kernels: motion spread (activity), jerk (impact trigger), row norms."""
from __future__ import annotations

import numpy as np

from ._numba_config import jit


@jit
def motion_kernel(norm_g, alpha, state):
    """``state`` = [mean, variance]; a NaN mean starts from the first sample. Returns the new state."""
    st = state.copy()
    for i in range(norm_g.shape[0]):
        x = norm_g[i]
        if st[0] != st[0]:
            st[0] = x
            st[1] = 0.0
            continue
        d = x - st[0]
        st[0] += alpha * d
        st[1] = (1.0 - alpha) * (st[1] + alpha * d * d)
    return st


@jit
def jerk_kernel(acc, prev, scale):
    """|acc[i] - acc[i-1]| * scale for each row (prev = the last row of the previous chunk).

    Returns (jerk, new_prev)."""
    n = acc.shape[0]
    out = np.empty(n)
    px = prev[0]
    py = prev[1]
    pz = prev[2]
    for i in range(n):
        dx = acc[i, 0] - px
        dy = acc[i, 1] - py
        dz = acc[i, 2] - pz
        out[i] = np.sqrt(dx * dx + dy * dy + dz * dz) * scale
        px = acc[i, 0]
        py = acc[i, 1]
        pz = acc[i, 2]
    last = np.empty(3)
    last[0] = px
    last[1] = py
    last[2] = pz
    return out, last


@jit
def row_norm_kernel(x):
    """Euclidean norm of each row of an (n, 3) array."""
    n = x.shape[0]
    out = np.empty(n)
    for i in range(n):
        out[i] = np.sqrt(x[i, 0] * x[i, 0] + x[i, 1] * x[i, 1] + x[i, 2] * x[i, 2])
    return out
