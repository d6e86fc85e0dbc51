"""Event and sample layouts shared by every stage (structured numpy dtypes).

Conventions (see docs/architecture.md, "Units and frames"):
- acceleration in m/s^2 inside the pipeline; impact figures in g (``G0``);
- angular rate in deg/s;
- times in seconds (float64) on the stream's clock: for live data the
  sensor-clock-corrected host monotonic clock, for files the file's own clock;
- sample positions are *fractional* indices into the stream (0 = first sample
  ever fed to the detector), so events can be placed between samples.
"""
from __future__ import annotations

import numpy as np

G0 = 9.80665  # standard gravity, m/s^2

SIDE_UNKNOWN, SIDE_LEFT, SIDE_RIGHT = -1, 0, 1
SIDE_NAMES = {SIDE_UNKNOWN: None, SIDE_LEFT: "L", SIDE_RIGHT: "R"}

ACTIVITY_UNKNOWN, ACTIVITY_STANDING, ACTIVITY_WALKING, ACTIVITY_RUNNING = -1, 0, 1, 2
ACTIVITY_NAMES = {
    ACTIVITY_UNKNOWN: "unknown",
    ACTIVITY_STANDING: "standing",
    ACTIVITY_WALKING: "walking",
    ACTIVITY_RUNNING: "running",
}

#: One row per detected step (stance phase of one foot).
STEP_DTYPE = np.dtype(
    [
        ("ic_index", np.float64),  # fractional sample index of initial contact
        ("tc_index", np.float64),  # fractional sample index of terminal contact (toe-off)
        ("ic_s", np.float64),
        ("tc_s", np.float64),
        ("side", np.int8),  # SIDE_LEFT / SIDE_RIGHT / SIDE_UNKNOWN
        ("gct_ms", np.float64),  # ground contact time
        ("flight_ms", np.float64),  # from this step's TC to the next IC (NaN until known / walking)
        ("step_time_ms", np.float64),  # from the previous step's IC to this IC
        ("cadence_spm", np.float64),  # 60000 / step_time_ms (steps per minute, both feet)
        ("cadence_smoothed_spm", np.float64),  # exponentially smoothed cadence
        ("duty_factor", np.float64),  # gct / stride time
        ("peak_accel_g", np.float64),  # peak acceleration magnitude in the impact window
        ("clipped", np.bool_),  # the impact window touched the sensor's range
        ("loading_rate_gps", np.float64),  # impact slope proxy, g/s (relative trend only)
        ("peak_vgrf_bw", np.float64),  # sacrum: estimated peak vertical force, body weights
        ("activity", np.int8),  # ACTIVITY_* at the time of the step
        ("emitted_index", np.int64),  # stream index of the sample at which the step was emitted
    ]
)


def empty_steps(n: int = 0) -> np.ndarray:
    """A zero-filled step array (times NaN)."""
    out = np.zeros(n, dtype=STEP_DTYPE)
    for name in ("ic_s", "tc_s", "gct_ms", "flight_ms", "step_time_ms", "cadence_spm",
                 "cadence_smoothed_spm", "duty_factor", "peak_accel_g", "loading_rate_gps",
                 "peak_vgrf_bw"):
        out[name] = np.nan
    out["side"] = SIDE_UNKNOWN
    out["activity"] = ACTIVITY_UNKNOWN
    return out
