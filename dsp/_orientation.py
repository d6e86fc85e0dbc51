"""Orientation-independent body-frame components from a sensor-frame accelerometer.

Frames: the sensor may be strapped on any way. We estimate, causally:
- ``up``: direction of gravity from an exponential moving average of the
  acceleration (time constant ``gravity_tau_s``); while the runner moves, the
  mean proper acceleration of a body segment is the gravity reaction, so the
  average points up;
- ``ap`` (antero-posterior, forward): the horizontal direction of largest
  variance (exponentially weighted covariance, one power-iteration step per
  sample), its sign fixed so that braking coincides with rising vertical load
  (AP negative while vertical acceleration increases at initial contact);
- ``ml`` (medio-lateral, +left) = up x ap, so (ap, ml, up) is right-handed like
  the body frame x forward, y left, z up.

Outputs are in g. The kernel state is a flat float64 array (see ``_S_*``).
"""
from __future__ import annotations

import numpy as np

from ._events import G0
from ._numba_config import jit

# state layout
_S_INIT = 0
_S_G = 1  # 3: gravity EMA (m/s^2)
_S_C = 4  # 9: horizontal covariance EMA
_S_AP = 13  # 3: AP axis iterate (unit)
_S_SIGN = 16  # EMA of (h . ap) * d(a_v)
_S_PREV_AV = 17
ORIENT_STATE_SIZE = 18


@jit(inline="always")
def _norm_and_max_g(x, y, z):
    """|acc| and the largest |axis| of one sample, in g."""
    m = abs(x)
    if abs(y) > m:
        m = abs(y)
    if abs(z) > m:
        m = abs(z)
    return np.sqrt(x * x + y * y + z * z) / G0, m / G0


def orientation_init() -> np.ndarray:
    return np.zeros(ORIENT_STATE_SIZE)


@jit
def orientation_kernel(acc_ms2, alpha_g, alpha_c, state):
    """Project sensor-frame acc (n, 3) onto the estimated body frame.

    Returns ``(out, new_state)`` with ``out`` of shape (n, 5):
    vertical (up, incl. gravity), ap, ml, norm, max |axis| — all in g.
    """
    st = state.copy()
    n = acc_ms2.shape[0]
    out = np.empty((n, 5))
    for i in range(n):
        ax = acc_ms2[i, 0]
        ay = acc_ms2[i, 1]
        az = acc_ms2[i, 2]
        if st[_S_INIT] == 0.0:
            st[_S_INIT] = 1.0
            st[_S_G] = ax
            st[_S_G + 1] = ay
            st[_S_G + 2] = az
            # initial AP guess: the sensor axis least aligned with gravity, made horizontal
            gx, gy, gz = abs(ax), abs(ay), abs(az)
            ex, ey, ez = 0.0, 0.0, 0.0
            if gx <= gy and gx <= gz:
                ex = 1.0
            elif gy <= gz:
                ey = 1.0
            else:
                ez = 1.0
            st[_S_AP] = ex
            st[_S_AP + 1] = ey
            st[_S_AP + 2] = ez
            st[_S_PREV_AV] = np.sqrt(ax * ax + ay * ay + az * az)
        # gravity EMA
        st[_S_G] += alpha_g * (ax - st[_S_G])
        st[_S_G + 1] += alpha_g * (ay - st[_S_G + 1])
        st[_S_G + 2] += alpha_g * (az - st[_S_G + 2])
        gn = np.sqrt(st[_S_G] ** 2 + st[_S_G + 1] ** 2 + st[_S_G + 2] ** 2)
        if gn < 1e-9:
            ux, uy, uz = 0.0, 0.0, 1.0
        else:
            ux = st[_S_G] / gn
            uy = st[_S_G + 1] / gn
            uz = st[_S_G + 2] / gn
        av = ax * ux + ay * uy + az * uz
        hx = ax - av * ux
        hy = ay - av * uy
        hz = az - av * uz
        # horizontal covariance EMA (row-major 3x3)
        h0 = hx
        h1 = hy
        h2 = hz
        st[_S_C + 0] += alpha_c * (h0 * h0 - st[_S_C + 0])
        st[_S_C + 1] += alpha_c * (h0 * h1 - st[_S_C + 1])
        st[_S_C + 2] += alpha_c * (h0 * h2 - st[_S_C + 2])
        st[_S_C + 4] += alpha_c * (h1 * h1 - st[_S_C + 4])
        st[_S_C + 5] += alpha_c * (h1 * h2 - st[_S_C + 5])
        st[_S_C + 8] += alpha_c * (h2 * h2 - st[_S_C + 8])
        st[_S_C + 3] = st[_S_C + 1]
        st[_S_C + 6] = st[_S_C + 2]
        st[_S_C + 7] = st[_S_C + 5]
        # one power-iteration step, kept horizontal
        px = st[_S_AP]
        py = st[_S_AP + 1]
        pz = st[_S_AP + 2]
        vx = st[_S_C + 0] * px + st[_S_C + 1] * py + st[_S_C + 2] * pz
        vy = st[_S_C + 3] * px + st[_S_C + 4] * py + st[_S_C + 5] * pz
        vz = st[_S_C + 6] * px + st[_S_C + 7] * py + st[_S_C + 8] * pz
        d = vx * ux + vy * uy + vz * uz
        vx -= d * ux
        vy -= d * uy
        vz -= d * uz
        vn = np.sqrt(vx * vx + vy * vy + vz * vz)
        if vn > 1e-12:
            px = vx / vn
            py = vy / vn
            pz = vz / vn
        else:  # no horizontal motion yet: keep the previous axis, re-orthogonalised
            d = px * ux + py * uy + pz * uz
            px -= d * ux
            py -= d * uy
            pz -= d * uz
            pn = np.sqrt(px * px + py * py + pz * pz)
            if pn > 1e-12:
                px /= pn
                py /= pn
                pz /= pn
        st[_S_AP] = px
        st[_S_AP + 1] = py
        st[_S_AP + 2] = pz
        hap = hx * px + hy * py + hz * pz
        st[_S_SIGN] += alpha_c * (hap * (av - st[_S_PREV_AV]) - st[_S_SIGN])
        st[_S_PREV_AV] = av
        sgn = -1.0 if st[_S_SIGN] > 0.0 else 1.0
        fx = sgn * px
        fy = sgn * py
        fz = sgn * pz
        # ml = up x forward
        mx = uy * fz - uz * fy
        my = uz * fx - ux * fz
        mz = ux * fy - uy * fx
        out[i, 0] = av / G0
        out[i, 1] = (hx * fx + hy * fy + hz * fz) / G0
        out[i, 2] = (hx * mx + hy * my + hz * mz) / G0
        out[i, 3], out[i, 4] = _norm_and_max_g(ax, ay, az)
    return out, st


@jit
def body_frame_kernel(acc_ms2):
    """Pass-through for samples already in the body frame (columns v, ap, ml)."""
    n = acc_ms2.shape[0]
    out = np.empty((n, 5))
    for i in range(n):
        v = acc_ms2[i, 0]
        a = acc_ms2[i, 1]
        m = acc_ms2[i, 2]
        out[i, 0] = v / G0
        out[i, 1] = a / G0
        out[i, 2] = m / G0
        out[i, 3], out[i, 4] = _norm_and_max_g(v, a, m)
    return out
