"""Orientation-independent body-frame components from a sensor-frame accelerometer.

Frames: the sensor may be strapped on any way. We estimate, causally:
- ``up``: direction of gravity from an exponential moving average of the
  acceleration (time constant ``gravity_tau_s``), every sample; while the
  runner moves, the mean proper acceleration of a body segment is the gravity
  reaction, so the average points up;
- ``ap`` (antero-posterior, forward): the horizontal direction of largest
  variance: an exponentially weighted covariance of the horizontal
  acceleration (time constant ``axes_tau_s``) and one power-iteration step on
  it, both once per block of ``ORIENT_BLOCK`` samples (block boundaries at
  fixed stream indices, so any chunking gives the same blocks); its sign is
  fixed so that braking coincides with rising vertical load (AP negative while
  vertical acceleration increases at initial contact), from an EMA updated
  once per block too;
- ``ml`` (medio-lateral, +left) = up x ap, so (ap, ml, up) is right-handed like
  the body frame x forward, y left, z up.

Why blocks: the axis changes with the 4 s covariance, far slower than a block
(32 ms at 500 Hz), but a per-sample power iteration is one long dependency
chain (multiply, project, square root, divide: ~50 ns per sample whatever the
processor's width). Per block, the per-sample work has no chain but the
gravity EMA and runs as a few short loops over tiles that the compiler
vectorises; the vertical component is the very arithmetic of the per-sample
estimate (bit-identical), only AP/ML see the once-per-block axis.

Outputs are in g, one row per component: ``out`` has shape (5, n) (rows
contiguous, so the consumers read them without strides). The kernel state is
a flat float64 array (see ``_S_*``).
"""
from __future__ import annotations

import numpy as np

from ._events import G0
from ._numba_config import jit

#: samples per update of the AP axis, its covariance and its sign
ORIENT_BLOCK = 16
_TILE = 256  # samples per pass of the tile loops (their buffers stay in L1)

# state layout
_S_INIT = 0
_S_G = 1  # 3: gravity EMA (m/s^2)
_S_C = 4  # 6: horizontal covariance EMA (xx, xy, xz, yy, yz, zz), once per block
_S_AP = 10  # 3: AP axis (unit, horizontal)
_S_SIGN = 13  # EMA of (h . ap) * d(a_v), once per block; > 0 means the axis points backwards
_S_PREV_AV = 14  # vertical acceleration of the previous sample (m/s^2)
_S_N = 15  # samples consumed (block position = _S_N mod ORIENT_BLOCK)
_S_SUM = 16  # 7: this block's sums of h h^T (6, same order as _S_C) and of (h . ap) * d(a_v)
ORIENT_STATE_SIZE = 23


def orientation_init() -> np.ndarray:
    return np.zeros(ORIENT_STATE_SIZE)


@jit
def orientation_kernel(acc_ms2, alpha_g, alpha_c, state):
    """Project sensor-frame acc (n, 3) onto the estimated body frame.

    Returns ``(out, new_state)`` with ``out`` of shape (5, n):
    vertical (up, incl. gravity), ap, ml, norm, max |axis| — all in g.
    ``alpha_g`` / ``alpha_c``: per-sample EMA weights of gravity and of the
    horizontal covariance (the covariance and the sign use the equivalent
    per-block weight ``1 - (1 - alpha_c) ** ORIENT_BLOCK``).
    """
    st = state.copy()
    n = acc_ms2.shape[0]
    out = np.empty((5, n))
    if n == 0:
        return out, st
    nb = ORIENT_BLOCK
    alpha_b = 1.0 - (1.0 - alpha_c) ** nb
    inv_nb = 1.0 / nb
    inv_g0 = 1.0 / G0  # AP/ML: a product (the divider is busy with the vertical, which stays exact)
    if st[_S_INIT] == 0.0:
        ax = acc_ms2[0, 0]
        ay = acc_ms2[0, 1]
        az = acc_ms2[0, 2]
        st[_S_INIT] = 1.0
        st[_S_G] = ax
        st[_S_G + 1] = ay
        st[_S_G + 2] = az
        # initial AP guess: the sensor axis least aligned with gravity, made horizontal
        an = np.sqrt(ax * ax + ay * ay + az * az)
        gx, gy, gz = abs(ax), abs(ay), abs(az)
        px, py, pz = 0.0, 0.0, 0.0
        if gx <= gy and gx <= gz:
            px = 1.0
        elif gy <= gz:
            py = 1.0
        else:
            pz = 1.0
        if an > 1e-9:
            d = (px * ax + py * ay + pz * az) / an
            px -= d * ax / an
            py -= d * ay / an
            pz -= d * az / an
            pn = np.sqrt(px * px + py * py + pz * pz)
            px /= pn
            py /= pn
            pz /= pn
        st[_S_AP] = px
        st[_S_AP + 1] = py
        st[_S_AP + 2] = pz
        st[_S_PREV_AV] = an
    gx = st[_S_G]
    gy = st[_S_G + 1]
    gz = st[_S_G + 2]
    px = st[_S_AP]
    py = st[_S_AP + 1]
    pz = st[_S_AP + 2]
    prev_av = st[_S_PREV_AV]
    pos = int(st[_S_N] % nb)
    s_xx = st[_S_SUM]
    s_xy = st[_S_SUM + 1]
    s_xz = st[_S_SUM + 2]
    s_yy = st[_S_SUM + 3]
    s_yz = st[_S_SUM + 4]
    s_zz = st[_S_SUM + 5]
    s_sign = st[_S_SUM + 6]
    rx = np.empty(_TILE)
    ry = np.empty(_TILE)
    rz = np.empty(_TILE)
    bx = np.empty(_TILE)
    by = np.empty(_TILE)
    bz = np.empty(_TILE)
    ux = np.empty(_TILE)
    uy = np.empty(_TILE)
    uz = np.empty(_TILE)
    hx = np.empty(_TILE)
    hy = np.empty(_TILE)
    hz = np.empty(_TILE)
    av = np.empty(_TILE)
    wx = np.empty(_TILE)
    wy = np.empty(_TILE)
    wz = np.empty(_TILE)
    for t0 in range(0, n, _TILE):
        m = min(_TILE, n - t0)
        # 1. gravity EMA: three independent recursions, nothing else in the loop (the tile is also copied to
        # one buffer per axis: the loops below then read contiguous memory and vectorise)
        for k in range(m):
            ax = acc_ms2[t0 + k, 0]
            ay = acc_ms2[t0 + k, 1]
            az = acc_ms2[t0 + k, 2]
            rx[k] = ax
            ry[k] = ay
            rz[k] = az
            gx += alpha_g * (ax - gx)
            gy += alpha_g * (ay - gy)
            gz += alpha_g * (az - gz)
            bx[k] = gx
            by[k] = gy
            bz[k] = gz
        # 2. sample by sample, independent: up, vertical, horizontal; |a| and max |axis| (vectorised: contiguous
        # 1-D buffers, and the zero-gravity case as a select after the division, not a branch around it)
        o_v = out[0, t0:t0 + m]
        o_n = out[3, t0:t0 + m]
        o_m = out[4, t0:t0 + m]
        for k in range(m):
            ax = rx[k]
            ay = ry[k]
            az = rz[k]
            gn = np.sqrt(bx[k] * bx[k] + by[k] * by[k] + bz[k] * bz[k])
            x = bx[k] / gn
            y = by[k] / gn
            z = bz[k] / gn
            ok = gn >= 1e-9
            x = x if ok else 0.0
            y = y if ok else 0.0
            z = z if ok else 1.0
            v = ax * x + ay * y + az * z
            ux[k] = x
            uy[k] = y
            uz[k] = z
            av[k] = v
            hx[k] = ax - v * x
            hy[k] = ay - v * y
            hz[k] = az - v * z
            o_v[k] = v / G0
            o_n[k] = np.sqrt(ax * ax + ay * ay + az * az) / G0
            mx = abs(ax)
            mx = abs(ay) if abs(ay) > mx else mx
            mx = abs(az) if abs(az) > mx else mx
            o_m[k] = mx / G0
        # 3. the block's sums (sequential: each adds to the last) and the axis update at each block end; the
        # forward axis of every sample goes to a buffer for the vectorised projections below
        k0 = 0
        while k0 < m:
            k1 = min(m, k0 + nb - pos)
            sgn = -1.0 if st[_S_SIGN] > 0.0 else 1.0
            fx = sgn * px
            fy = sgn * py
            fz = sgn * pz
            for k in range(k0, k1):
                x = hx[k]
                y = hy[k]
                z = hz[k]
                s_xx += x * x
                s_xy += x * y
                s_xz += x * z
                s_yy += y * y
                s_yz += y * z
                s_zz += z * z
                s_sign += (x * px + y * py + z * pz) * (av[k] - prev_av)
                prev_av = av[k]
                wx[k] = fx
                wy[k] = fy
                wz[k] = fz
            pos += k1 - k0
            k0 = k1
            if pos == nb:
                # block end: covariance and sign EMAs, one power-iteration step kept horizontal
                pos = 0
                st[_S_C] += alpha_b * (s_xx * inv_nb - st[_S_C])
                st[_S_C + 1] += alpha_b * (s_xy * inv_nb - st[_S_C + 1])
                st[_S_C + 2] += alpha_b * (s_xz * inv_nb - st[_S_C + 2])
                st[_S_C + 3] += alpha_b * (s_yy * inv_nb - st[_S_C + 3])
                st[_S_C + 4] += alpha_b * (s_yz * inv_nb - st[_S_C + 4])
                st[_S_C + 5] += alpha_b * (s_zz * inv_nb - st[_S_C + 5])
                st[_S_SIGN] += alpha_b * (s_sign * inv_nb - st[_S_SIGN])
                s_xx = s_xy = s_xz = s_yy = s_yz = s_zz = s_sign = 0.0
                x = ux[k1 - 1]
                y = uy[k1 - 1]
                z = uz[k1 - 1]
                vx = st[_S_C] * px + st[_S_C + 1] * py + st[_S_C + 2] * pz
                vy = st[_S_C + 1] * px + st[_S_C + 3] * py + st[_S_C + 4] * pz
                vz = st[_S_C + 2] * px + st[_S_C + 4] * py + st[_S_C + 5] * pz
                d = vx * x + vy * y + vz * z
                vx -= d * x
                vy -= d * y
                vz -= d * z
                vn = np.sqrt(vx * vx + vy * vy + vz * vz)
                if vn > 1e-12:
                    px = vx / vn
                    py = vy / vn
                    pz = vz / vn
                else:  # no horizontal motion yet: keep the previous axis, re-orthogonalised
                    d = px * x + py * y + pz * z
                    px -= d * x
                    py -= d * y
                    pz -= d * z
                    pn = np.sqrt(px * px + py * py + pz * pz)
                    if pn > 1e-12:
                        px /= pn
                        py /= pn
                        pz /= pn
        # 4. AP and ML (vectorised); ml = up x forward
        o_ap = out[1, t0:t0 + m]
        o_ml = out[2, t0:t0 + m]
        for k in range(m):
            mx = uy[k] * wz[k] - uz[k] * wy[k]
            my = uz[k] * wx[k] - ux[k] * wz[k]
            mz = ux[k] * wy[k] - uy[k] * wx[k]
            o_ap[k] = (hx[k] * wx[k] + hy[k] * wy[k] + hz[k] * wz[k]) * inv_g0
            o_ml[k] = (hx[k] * mx + hy[k] * my + hz[k] * mz) * inv_g0
    st[_S_G] = gx
    st[_S_G + 1] = gy
    st[_S_G + 2] = gz
    st[_S_AP] = px
    st[_S_AP + 1] = py
    st[_S_AP + 2] = pz
    st[_S_PREV_AV] = prev_av
    st[_S_N] += n
    st[_S_SUM] = s_xx
    st[_S_SUM + 1] = s_xy
    st[_S_SUM + 2] = s_xz
    st[_S_SUM + 3] = s_yy
    st[_S_SUM + 4] = s_yz
    st[_S_SUM + 5] = s_zz
    st[_S_SUM + 6] = s_sign
    return out, st


@jit
def body_frame_kernel(acc_ms2):
    """Pass-through for samples already in the body frame (columns v, ap, ml): ``out`` (5, n) as above."""
    n = acc_ms2.shape[0]
    out = np.empty((5, n))
    o_v = out[0]
    o_a = out[1]
    o_l = out[2]
    o_n = out[3]
    o_m = out[4]
    for i in range(n):  # the columns to rows (strided reads), then everything else on rows (vectorised)
        o_v[i] = acc_ms2[i, 0]
        o_a[i] = acc_ms2[i, 1]
        o_l[i] = acc_ms2[i, 2]
    for i in range(n):
        v = o_v[i]
        a = o_a[i]
        m = o_l[i]
        o_n[i] = np.sqrt(v * v + a * a + m * m) / G0
        mx = abs(v)
        mx = abs(a) if abs(a) > mx else mx
        mx = abs(m) if abs(m) > mx else mx
        o_m[i] = mx / G0
        o_v[i] = v / G0
        o_a[i] = a / G0
        o_l[i] = m / G0
    return out
