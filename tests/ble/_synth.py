"""Sample sources for the BLE tests: the runner simulator when present, else a deterministic signal."""
from __future__ import annotations

import numpy as np


def synthetic_source(site, sampling_rate_hz, *, clock_drift_ppm=0.0, tick_hz=32768, gyro=True, seed=0, **_):
    """Running-like periodic signal (2.8 Hz impacts) on a drifting tick clock; truth is exact."""
    state = {"n": 0}
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 1)

    def read(n):
        k = state["n"] + np.arange(n)
        state["n"] += n
        t = k / sampling_rate_hz
        p = (t * 2.8 + phase) % 1.0
        vert = 9.81 + 25.0 * np.exp(-((p - 0.1) / 0.02) ** 2) - 9.0 * np.sin(np.pi * p) ** 2
        acc = np.stack([3.0 * np.sin(2 * np.pi * 2.8 * t), 1.0 * np.cos(2 * np.pi * 1.4 * t), vert], axis=1)
        gyr = np.stack([200 * np.sin(2 * np.pi * 1.4 * t), 50 * np.cos(2 * np.pi * 1.4 * t),
                        20 * np.sin(2 * np.pi * 2.8 * t)], axis=1) if gyro else None
        tick = np.floor(t * tick_hz * (1.0 + clock_drift_ppm * 1e-6)).astype(np.int64)
        return acc, gyr, t, tick

    return read


def default_source():
    """None (= the VirtualSensor default, the runner simulator) when it is importable."""
    try:
        import runform.firmware_bridge.simulator  # noqa: F401
        return None
    except ImportError:
        return synthetic_source
