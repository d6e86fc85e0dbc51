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


def make_metrics_source(site: str = "foot_left", *, profile=None, segments=None, seed: int = 0,
                        window_s: float = 4.0):
    """``metrics(t_s) -> (speed_ms, cadence_spm, running)`` from the runner simulator's TRUE steps: cadence
    (steps/min, both feet) and mean speed of the steps whose initial contact lies in the last ``window_s``
    seconds of true time ``t_s`` (0 when standing). What a foot pod computes from its own IMU, minus its errors.
    Memory is bounded (the simulator is advanced at 10 Hz and keeps a short step history).
    """
    from ..simulator import SimulatorStream

    fs = 10.0
    stream = SimulatorStream(profile, site, sampling_rate_hz=fs, seed=seed, segments=segments, gyro=False,
                             max_history_steps=64)
    state = {"t": 0.0}

    def metrics(t_s: float):
        n = int((t_s - state["t"]) * fs)
        if n > 0:
            stream.read(n)
            state["t"] += n / fs
        ev = stream.events_until(t_s)
        ev = ev[(ev["ic_s"] > t_s - window_s) & (ev["ic_s"] <= t_s)]
        if len(ev) < 2:
            return 0.0, 0.0, False
        span = float(ev["ic_s"][-1] - ev["ic_s"][0])
        cadence = 60.0 * (len(ev) - 1) / span if span > 0 else 0.0
        speed = float(np.mean(ev["speed_ms"]))
        running = bool(ev["activity"][-1] == 2)
        return speed, cadence, running

    return metrics
