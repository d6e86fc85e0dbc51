"""Sample sources for virtual sensors: the runner simulator (``SimulatorStream``)."""
from __future__ import annotations

import numpy as np

__all__ = ["make_source"]


def make_source(site: str, sampling_rate_hz: float, *, profile=None, segments=None, seed: int = 0,
                clock_drift_ppm: float = 0.0, range_g: float = 16.0, gyro: bool = True, tick_hz: int = 32768):
    """``read(n) -> (acc_ms2, gyr_dps|None, time_s, sensor_tick)`` from the runner simulator.

    ``time_s`` is true time since streaming started; ``sensor_tick`` counts a ``tick_hz`` clock that
    runs ``clock_drift_ppm`` fast (the simulator's drifting sensor clock).
    """
    from ..simulator import SimulatorStream

    stream = SimulatorStream(profile, site, sampling_rate_hz=sampling_rate_hz, seed=seed, segments=segments,
                             range_g=max(float(range_g), 1.5), gyro=gyro, clock_drift_ppm=clock_drift_ppm,
                             tick_hz=float(tick_hz))

    def read(n: int):
        acc, gyr, time_s, tick = stream.read(n)
        return (np.asarray(acc, dtype=np.float64), None if (gyr is None or not gyro) else np.asarray(gyr),
                np.asarray(time_s, dtype=np.float64), np.asarray(tick, dtype=np.int64))

    return read
