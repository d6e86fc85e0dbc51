"""``GaitEventDetector``: the streaming step detector for one sensor.

Composes the kernels (orientation -> low-pass -> site detector), keeps a
bounded ring of recent sample times to place fractional events in time, and
turns kernel event rows into ``STEP_DTYPE`` records with per-step metrics.
"""
from __future__ import annotations

import math

import numpy as np

from . import _detect as K
from ._events import (
    ACTIVITY_RUNNING,
    ACTIVITY_STANDING,
    ACTIVITY_UNKNOWN,
    ACTIVITY_WALKING,
    SIDE_LEFT,
    SIDE_RIGHT,
    SIDE_UNKNOWN,
    STEP_DTYPE,
    G0,
    empty_steps,
)
from ._filters import (butter_lowpass_sos, fir_kernel, fir_state, gaussian_derivative_taps, sos_steady_state,
                       sosfilt_bank_kernel, sosfilt_kernel)
from ._motion import jerk_kernel, motion_kernel, row_norm_kernel
from ._orientation import body_frame_kernel, orientation_init, orientation_kernel
from ._params import LimbParams, SacrumParams, params_for
from ._steps import ST_ACTIVITY, ST_LAST_STEP, step_metrics_kernel, step_state_init

SITE_ALIASES = {
    "sacrum": ("sacrum", SIDE_UNKNOWN),
    "hip": ("sacrum", SIDE_UNKNOWN),
    "lower_back": ("sacrum", SIDE_UNKNOWN),
    "shank": ("shank", SIDE_UNKNOWN),
    "shank_left": ("shank", SIDE_LEFT),
    "shank_right": ("shank", SIDE_RIGHT),
    "foot": ("foot", SIDE_UNKNOWN),
    "foot_left": ("foot", SIDE_LEFT),
    "foot_right": ("foot", SIDE_RIGHT),
}

#: minimum sampling rate per site: the impact transient needs ~100 Hz at least
MIN_SAMPLING_RATE_HZ = {"sacrum": 50.0, "shank": 100.0, "foot": 100.0}

_STANDING_STD_G = 0.05  # below this |acc| spread over ~1 s the runner stands still


class DetectorInputError(ValueError):
    """The samples handed to the detector are unusable (shape, rate, non-finite)."""


def parse_site(site: str) -> tuple[str, int]:
    try:
        return SITE_ALIASES[site]
    except KeyError:
        raise DetectorInputError(
            f"unknown sensor site {site!r}; expected one of {sorted(SITE_ALIASES)}"
        ) from None


class GaitEventDetector:
    """Streaming initial/terminal contact detection for one body-worn accelerometer.

    Parameters
    ----------
    site : str
        ``sacrum`` (also ``hip``, ``lower_back``), ``shank[_left|_right]`` or
        ``foot[_left|_right]``. A side-specific limb site labels every step
        with that side; from one sacral sensor the side is inferred.
    sampling_rate_hz : float
        Nominal sampling rate of the samples passed to :meth:`update`.
    mass_kg : float, optional
        Body mass; with it, steps carry the peak vertical force in newtons too.
    range_g : float, optional
        Accelerometer full-scale range; samples at 98 % of it mark a step ``clipped``.
    params : SacrumParams | LimbParams, optional
        Override the site's tuned defaults.
    use_gyro : bool, optional
        Foot: take toe-off from the gyroscope (peak rotation rate of the
        push-off) instead of the accelerometer. ``None`` (default) decides on the
        first chunk: gyro mode for a foot sensor if ``gyr_dps`` is given (the
        shank keeps its accelerometer feature: its largest rotation is mid-swing).
    body_frame : bool
        ``False`` (default): the sensor may be strapped on any way; the vertical
        is found from gravity and the AP axis from the horizontal variance.
        ``True``: the three columns already are (vertical up, AP forward, ML
        left), e.g. a file with ``acc_v``/``acc_ap``/``acc_ml`` columns.

    Attributes
    ----------
    activity_ : int
        Current ``ACTIVITY_*`` code (running / walking / standing / unknown).
    look_ahead_ms : float
        Longest delay between a contact and the emission of its step.
    n_samples_ : int
        Samples consumed so far.
    n_steps_ : int
        Steps emitted so far.
    """

    def __init__(
        self,
        site: str,
        sampling_rate_hz: float,
        mass_kg: float | None = None,
        range_g: float | None = None,
        params: SacrumParams | LimbParams | None = None,
        body_frame: bool = False,
        use_gyro: bool | None = None,
    ) -> None:
        self.body_frame = bool(body_frame)
        self.use_gyro = use_gyro
        self.site, self.fixed_side = parse_site(site)
        if not (isinstance(sampling_rate_hz, (int, float)) and math.isfinite(sampling_rate_hz)):
            raise DetectorInputError(f"sampling_rate_hz must be a finite number, got {sampling_rate_hz!r}")
        min_fs = MIN_SAMPLING_RATE_HZ[self.site]
        if sampling_rate_hz < min_fs:
            raise DetectorInputError(
                f"sampling rate {sampling_rate_hz:g} Hz is too low for a {self.site} sensor "
                f"(at least {min_fs:g} Hz is needed to resolve contact events)"
            )
        self.sampling_rate_hz = float(sampling_rate_hz)
        self.mass_kg = mass_kg
        self.range_g = range_g
        self.params = params if params is not None else params_for(self.site)
        fs = self.sampling_rate_hz
        p = self.params
        self._alpha_g = 1.0 / (p.orientation.gravity_tau_s * fs)
        self._alpha_c = 1.0 / (p.orientation.axes_tau_s * fs)
        clip_g = 0.98 * range_g if range_g else np.inf
        nyq = 0.45 * fs
        if isinstance(p, SacrumParams):
            self._sos = butter_lowpass_sos(min(p.lowpass_hz, nyq), fs)
            self._kparams = np.array(
                [p.ic_threshold_g, p.tc_threshold_g, p.min_gct_ms * fs / 1000, p.max_gct_ms * fs / 1000,
                 clip_g, p.impact_window_ms * fs / 1000]
            )
            self._kstate = K.sacrum_init()
            self.look_ahead_ms = p.max_gct_ms + 1000.0 / fs
            self._sos_ml = butter_lowpass_sos(min(p.lowpass_hz, nyq), fs)
            self._sos_vf = butter_lowpass_sos(min(p.vgrf_lowpass_hz, nyq), fs)
            # the three sacral low-passes run as one bank: rows v (events), v (vGRF), ml (side)
            self._sos_bank = np.stack([self._sos, self._sos_vf, self._sos_ml])
            self._bank_rows = np.array([0, 0, 2], dtype=np.int64)  # rows of the orientation output
            if p.walking_ics:
                self._walk_taps = gaussian_derivative_taps(p.walk_sigma_ms / 1000.0, fs)
                delay_n = (self._walk_taps.shape[0] - 1) // 2
                self._wparams = np.array(
                    [delay_n, p.walk_confirm_ms * fs / 1000, p.walk_min_step_ms * fs / 1000,
                     p.walk_max_step_ms * fs / 1000, p.walk_refractory_frac, p.walk_threshold_min_gps,
                     p.walk_threshold_frac, p.walk_ema, 0.5 ** (1.0 / (p.walk_level_half_life_s * fs)),
                     p.walk_flight_window_ms * fs / 1000]
                )
                self._wstate = K.walk_init()
                self._mstate = np.zeros(3)  # walk/run merge: last IC, its kind, dropped duplicates
                self._fir_hist = None
                #: walking: longest delay between an IC and its step (FIR delay + confirmation + the
                #: half-sample parabolic refinement)
                self.walk_look_ahead_ms = (delay_n + math.ceil(p.walk_confirm_ms * fs / 1000) + 0.5) * 1000.0 / fs
                self.look_ahead_ms = max(self.look_ahead_ms, self.walk_look_ahead_ms)
        else:
            self._sos = butter_lowpass_sos(min(p.tc_lowpass_hz, nyq), fs)
            self._kparams = np.array(
                [p.trigger_min_gpms, p.trigger_frac, p.refractory_frac, p.refractory_min_ms * fs / 1000,
                 p.ic_window_ms * fs / 1000, p.tc_min_frac, p.tc_max_frac, p.stride0_ms * fs / 1000,
                 p.stride_max_ms * fs / 1000, clip_g, p.stride_ema,
                 0.5 ** (1.0 / (p.impact_level_half_life_s * fs)), p.rest_tolerance_g, p.rest_min_ms * fs / 1000,
                 p.swing_min_ms * fs / 1000]
            )
            self._kparams_gyro = self._kparams.copy()
            self._kparams_gyro[K.LP_TC_MIN_FRAC] = p.gyro_tc_min_frac
            self._kparams_gyro[K.LP_TC_MAX_FRAC] = p.gyro_tc_max_frac
            self._kstate = K.limb_init(self._kparams)
            self.look_ahead_ms = p.ic_window_ms + max(p.tc_max_frac, p.gyro_tc_max_frac) * p.stride_max_ms
            self._sos_ml = None
        self._ostate = orientation_init()
        self._zi = None
        self._zi_g = None
        self._last_acc = None
        # bounded ring of sample times: long enough to reach back over the look-ahead
        # (at least 2^16 samples, so whole arrays are processed in few large blocks)
        self._ring_n = max(1 << 16, int(2 ** math.ceil(math.log2(fs * (self.look_ahead_ms / 1000 + 4.0)))))
        self._t_ring = np.full(self._ring_n, np.nan)
        self.n_samples_ = 0
        self.n_steps_ = 0
        self.activity_ = ACTIVITY_UNKNOWN
        # per-step history (a small state array: bounded)
        self._sstate = step_state_init()
        self._last_step_s = math.nan
        self._motion = np.array([np.nan, 0.0])  # EMA of |acc| (g) and of its squared deviation
        self._alpha_motion = 1.0 / fs  # ~1 s time constant

    # -------------------------------------------------------------- helpers
    def _time_at(self, frac_index: np.ndarray) -> np.ndarray:
        """Linear interpolation of the stream time at fractional sample indices."""
        out = np.full(frac_index.shape, np.nan)
        ok = np.isfinite(frac_index)
        fi = frac_index[ok]
        i0 = np.floor(fi).astype(np.int64)
        lo = self.n_samples_ - self._ring_n
        # (np.clip costs ~18 µs per call on small arrays in NumPy 2, minimum/maximum ~5: same integers)
        i0 = np.minimum(np.maximum(i0, max(lo, 0)), self.n_samples_ - 1)
        i1 = np.minimum(i0 + 1, self.n_samples_ - 1)
        t0 = self._t_ring[i0 % self._ring_n]
        t1 = self._t_ring[i1 % self._ring_n]
        w = fi - i0
        out[ok] = t0 + (t1 - t0) * w
        # extrapolate by the nominal period where the next sample is not known yet
        same = ok.copy()
        same[ok] = i1 == i0
        out[same] = t0[i1 == i0] + w[i1 == i0] / self.sampling_rate_hz
        return out

    # ----------------------------------------------------------------- API
    def update(self, acc_ms2: np.ndarray, time_s: np.ndarray, gyr_dps: np.ndarray | None = None) -> np.ndarray:
        """Feed a chunk of samples; return the steps completed within it (``STEP_DTYPE``)."""
        acc = np.asarray(acc_ms2, dtype=np.float64)
        t = np.asarray(time_s, dtype=np.float64)
        if acc.ndim != 2 or acc.shape[1] != 3:
            raise DetectorInputError(f"acc_ms2 must have shape (n, 3), got {acc.shape}")
        if t.shape != (acc.shape[0],):
            raise DetectorInputError(f"time_s must have shape ({acc.shape[0]},), got {t.shape}")
        n = acc.shape[0]
        if n == 0:
            return empty_steps(0)
        if not np.isfinite(acc).all():
            raise DetectorInputError("acc_ms2 contains NaN or inf; fill or drop gaps before the detector")
        block = self._ring_n // 2  # events reach back at most the look-ahead: half the time ring
        gyr = None
        if gyr_dps is not None:
            gyr = np.ascontiguousarray(gyr_dps, dtype=np.float64)
            if gyr.shape != acc.shape:
                raise DetectorInputError(f"gyr_dps must have the shape of acc_ms2 {acc.shape}, got {gyr.shape}")
            if not np.isfinite(gyr).all():
                raise DetectorInputError("gyr_dps contains NaN or inf")
        if self.use_gyro and gyr is None:
            raise DetectorInputError("this detector runs in gyroscope mode: gyr_dps is required")
        if self.use_gyro is None:
            # the push-off rotation peak marks toe-off on the FOOT; on the shank the largest rotation rate
            # is mid-swing, so the shank keeps the accelerometer feature unless told otherwise
            self.use_gyro = gyr is not None and self.site == "foot"
        if n > block:
            return np.concatenate([
                self._update(np.ascontiguousarray(acc[s:s + block]), t[s:s + block],
                             None if gyr is None else gyr[s:s + block])
                for s in range(0, n, block)])
        return self._update(np.ascontiguousarray(acc), t, gyr)

    def _update(self, acc: np.ndarray, t: np.ndarray, gyr: np.ndarray | None = None) -> np.ndarray:
        n = acc.shape[0]
        # store times in the ring (n <= half the ring: at most one wrap-around)
        pos = self.n_samples_ % self._ring_n
        first = min(n, self._ring_n - pos)
        self._t_ring[pos:pos + first] = t[:first]
        if first < n:
            self._t_ring[:n - first] = t[first:]

        if self.body_frame:
            comps = body_frame_kernel(acc)
        else:
            comps, self._ostate = orientation_kernel(acc, self._alpha_g, self._alpha_c, self._ostate)
        v, ap, ml, norm, maxabs = comps  # contiguous rows: no copies
        self._motion = motion_kernel(norm, self._alpha_motion, self._motion)
        if isinstance(self.params, SacrumParams):
            if self._zi is None:
                self._zi = np.stack([sos_steady_state(self._sos, v[0]), sos_steady_state(self._sos_vf, v[0]),
                                     sos_steady_state(self._sos_ml, ml[0])])
            lp, self._zi = sosfilt_bank_kernel(self._sos_bank, comps, self._bank_rows, self._zi)
            v_lp, vf_lp, ml_lp = lp[0], lp[1], lp[2]  # contiguous rows
            self._kstate, ev = K.sacrum_kernel(self._kparams, v_lp, vf_lp, ml_lp, norm, maxabs, self._kstate)
            walking = None
            if self.params.walking_ics:
                if self._fir_hist is None:
                    self._fir_hist = fir_state(self._walk_taps, v[0])
                d_gps, self._fir_hist = fir_kernel(self._walk_taps, v, self._fir_hist)
                flight = (v_lp < self.params.tc_threshold_g).astype(np.float64)
                self._wstate, wev = K.walk_kernel(self._wparams, d_gps, flight, self._wstate)
                if ev.shape[0] or wev.shape[0]:
                    ev, walking, self._mstate = K.merge_walk_run_kernel(
                        ev, wev, self._wparams[K.WP_MIN_STEP_N], self._mstate)
        else:
            if self._zi is None:
                self._zi = sos_steady_state(self._sos, ap[0])
            ap_lp, self._zi = sosfilt_kernel(self._sos, ap, self._zi)
            jerk = self._jerk(acc)
            if self.use_gyro:
                rate = row_norm_kernel(gyr)
                if self._zi_g is None:
                    self._zi_g = sos_steady_state(self._sos, rate[0])
                rate_lp, self._zi_g = sosfilt_kernel(self._sos, rate, self._zi_g)
                tc_sig = -rate_lp
                kp = self._kparams_gyro
            else:
                tc_sig = ap_lp
                kp = self._kparams
            self._kstate, ev = K.limb_kernel(kp, norm, jerk, tc_sig, maxabs, self._kstate)
            walking = None
        self.n_samples_ += n
        steps = self._to_steps(ev, walking)
        self._update_activity(float(t[-1]))
        return steps

    def _jerk(self, acc: np.ndarray) -> np.ndarray:
        """|d acc / dt| in g/ms, continuous across chunks (0 for the very first sample)."""
        if self._last_acc is None:
            self._last_acc = acc[0].copy()
        jerk, self._last_acc = jerk_kernel(acc, self._last_acc, self.sampling_rate_hz / (G0 * 1000.0))
        return jerk

    def _to_steps(self, ev: np.ndarray, walking: np.ndarray | None = None) -> np.ndarray:
        m = ev.shape[0]
        if m == 0:
            return np.empty(0, dtype=STEP_DTYPE)
        steps = empty_steps(m)
        p = self.params
        fs = self.sampling_rate_hz
        if walking is None:
            walking = np.zeros(m)
            ic_bias_ms = p.ic_bias_ms
        else:  # sacrum: walking ICs have their own offset (a different feature)
            ic_bias_ms = np.where(walking > 0.5, p.walk_ic_bias_ms, p.ic_bias_ms)
        ic_s = self._time_at(ev[:, K.EV_IC]) - ic_bias_ms / 1000.0
        tc_bias_ms = p.gyro_tc_bias_ms if (self.use_gyro and not isinstance(p, SacrumParams)) else p.tc_bias_ms
        tc_s = self._time_at(ev[:, K.EV_TC]) - tc_bias_ms / 1000.0
        steps["ic_index"] = ev[:, K.EV_IC] - ic_bias_ms * fs / 1000.0
        steps["tc_index"] = ev[:, K.EV_TC] - tc_bias_ms * fs / 1000.0
        steps["ic_s"] = ic_s
        steps["tc_s"] = tc_s
        steps["gct_ms"] = (tc_s - ic_s) * 1000.0
        steps["peak_accel_g"] = ev[:, K.EV_PEAK_NORM]
        steps["clipped"] = ev[:, K.EV_CLIPPED] > 0.5
        steps["loading_rate_gps"] = ev[:, K.EV_SLOPE] * fs
        steps["emitted_index"] = ev[:, K.EV_EMITTED].astype(np.int64)
        sacrum = isinstance(p, SacrumParams)
        if sacrum:
            steps["peak_vgrf_bw"] = p.vgrf_scale * ev[:, K.EV_PEAK_V]
        flight, step_ms, cad, cad_s, duty, side, activity, self._sstate = step_metrics_kernel(
            ic_s, tc_s, np.ascontiguousarray(ev[:, K.EV_ML_MEAN]), sacrum, self.fixed_side, walking, self._sstate)
        steps["flight_ms"] = flight
        steps["step_time_ms"] = step_ms
        steps["cadence_spm"] = cad
        steps["cadence_smoothed_spm"] = cad_s
        steps["duty_factor"] = duty
        steps["side"] = side
        steps["activity"] = activity
        if self._sstate[ST_ACTIVITY] >= 0:
            self.activity_ = int(self._sstate[ST_ACTIVITY])
        self._last_step_s = float(self._sstate[ST_LAST_STEP])
        self.n_steps_ += m
        return steps

    def _update_activity(self, now_s: float) -> None:
        idle_s = now_s - self._last_step_s if self._last_step_s == self._last_step_s else math.inf
        if idle_s > 2.0:
            if math.sqrt(self._motion[1]) < _STANDING_STD_G:
                self.activity_ = ACTIVITY_STANDING
            elif self.site == "sacrum":
                self.activity_ = ACTIVITY_WALKING  # moving without flight phases
            else:
                self.activity_ = ACTIVITY_UNKNOWN
