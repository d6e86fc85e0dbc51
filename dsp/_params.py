"""Per-site parameter sets (one per sensor site, tuned on whole folders; see docs/accuracy.md).

Units are in the names. ``*_bias_ms`` are the constant offsets between the
IMU feature and force-plate contact (feature time − force-plate event time),
measured on the tuning folder and subtracted from every event; they are
reported in docs/accuracy.md, never hidden.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class OrientationParams:
    gravity_tau_s: float = 2.0  # time constant of the gravity (up) estimate
    axes_tau_s: float = 4.0  # time constant of the horizontal covariance (AP axis)


@dataclass(frozen=True)
class SacrumParams:
    """Sacrum / hip / lower back: stance from vertical proper acceleration (≈ vGRF in BW)."""

    orientation: OrientationParams = OrientationParams()
    lowpass_hz: float = 20.0  # 2nd-order Butterworth on the vertical component
    ic_threshold_g: float = 0.6  # stance starts when vertical acc rises through this
    tc_threshold_g: float = 0.12  # ... and ends when it falls through this
    min_gct_ms: float = 100.0
    max_gct_ms: float = 450.0  # longer "stance" = no flight phase: not running
    impact_window_ms: float = 60.0  # window after IC for peak |acc| and loading rate
    ic_bias_ms: float = 0.0
    tc_bias_ms: float = 0.0
    vgrf_lowpass_hz: float = 20.0  # smoothing of the vertical signal used for peak vGRF
    vgrf_scale: float = 1.0  # peak vGRF (BW) = scale × peak vertical proper acc (g)
    # walking (no flight phase): IC = steepest rise of the vertical acceleration (see docs/accuracy.md)
    walking_ics: bool = True  # emit walking steps (IC only); False = running steps only, as before
    walk_sigma_ms: float = 40.0  # σ of the Gaussian-derivative FIR (delay 3σ)
    walk_confirm_ms: float = 150.0  # a candidate must stay the largest slope this long
    walk_min_step_ms: float = 300.0  # refractory floor (200 spm)
    walk_max_step_ms: float = 1500.0  # longer intervals are pauses, not steps
    walk_refractory_frac: float = 0.5  # ... refractory = this fraction of the recent step time
    walk_threshold_min_gps: float = 1.0  # slope (g/s) a walking IC must reach at least ...
    walk_threshold_frac: float = 0.4  # ... and this fraction of the recent IC slopes
    walk_ema: float = 0.3  # smoothing of the IC slope level and the step time
    walk_level_half_life_s: float = 1.0  # learnt slope level fades this fast once ICs stop
    walk_flight_window_ms: float = 1000.0  # a flight phase this recently = running: walking IC suppressed
    walk_ic_bias_ms: float = -15.8  # calibrated on the mobgap lower-back walking folder (in-sample)


@dataclass(frozen=True)
class LimbParams:
    """Foot (instep) and shank: impact peak for IC, antero-posterior minimum for TC."""

    orientation: OrientationParams = OrientationParams()
    trigger_min_gpms: float = 0.15  # jerk |d acc/dt| (g/ms) must exceed this to start an IC search ...
    trigger_frac: float = 0.6  # ... and this fraction of the recent impact jerks
    refractory_frac: float = 0.75  # no new IC within this fraction of the recent stride
    refractory_min_ms: float = 350.0
    ic_window_ms: float = 90.0  # the impact peak is searched this long after the trigger
    tc_min_frac: float = 0.15  # TC search window, fractions of the recent stride after IC
    tc_max_frac: float = 0.65
    stride0_ms: float = 750.0  # stride assumed before the first two contacts
    stride_max_ms: float = 1800.0  # longer gaps are pauses, not strides
    stride_ema: float = 0.3  # smoothing of the stride and impact-peak estimates
    impact_level_half_life_s: float = 0.5  # learned impact level fades this fast once contacts stop
    tc_lowpass_hz: float = 15.0  # low-pass of the AP component before its TC minimum
    ic_bias_ms: float = 0.0
    tc_bias_ms: float = 0.0
    # with a gyroscope: TC = peak of the smoothed rotation rate |w| (push-off) in this window
    gyro_tc_min_frac: float = 0.2
    gyro_tc_max_frac: float = 0.75
    gyro_tc_bias_ms: float = 0.0
    # rest check (the foot; 0 = off): after an impact the foot rests (|acc| within rest_tolerance_g of
    # 1 g for rest_min_ms), then pushes off and swings; see docs/architecture.md
    rest_tolerance_g: float = 0.0
    rest_min_ms: float = 80.0
    swing_min_ms: float = 350.0  # a trigger this long after the rest ended is the next contact


# Defaults tuned on the shared folders (whole folders at once: see tools/tune_params.py)
SITE_DEFAULTS: dict[str, SacrumParams | LimbParams] = {
    "sacrum": SacrumParams(
        lowpass_hz=20.0, ic_threshold_g=0.7, tc_threshold_g=0.15, ic_bias_ms=23.7, tc_bias_ms=22.2,
        vgrf_lowpass_hz=8.0, vgrf_scale=0.939,
    ),
    "shank": LimbParams(trigger_frac=0.5, ic_window_ms=90.0, ic_bias_ms=31.0, tc_bias_ms=-34.0),
    # foot: the only foot-IMU folder with references is gaitmap's walking example (mocap events);
    # biases calibrated there, detection parameters shared with the shank (plus the rest check: a foot rests in stance)
    "foot": LimbParams(trigger_frac=0.5, ic_window_ms=90.0, ic_bias_ms=28.8, gyro_tc_bias_ms=-6.2,
                       rest_tolerance_g=0.1),
}


def params_for(site: str, **overrides) -> SacrumParams | LimbParams:
    base = SITE_DEFAULTS[site]
    return replace(base, **overrides) if overrides else base
