"""Rolling running metrics over the last few seconds of steps (published every second on ``.../metrics``).

:class:`RollingMetrics` keeps the most recent steps in a fixed-capacity ring (structured numpy array, bounded
memory), appends whole step arrays at once (no per-step Python loop), and computes a :class:`MetricsSnapshot`
for the window ``[now - window_s, now]``:

- ``cadence_spm``: median of the per-step cadences in the window (robust to one missed or split step);
- ``gct_ms`` / ``gct_left_ms`` / ``gct_right_ms``: means; ``balance_left_pct = L / (L + R) * 100`` (50 = even),
  needs ``min_steps_per_side`` steps on each side;
- ``impact_peak_g``: mean peak acceleration per step, ``impact_peak_max_g`` its maximum;
- session totals (never reset by the window): ``steps_total``, ``impact_sum_g`` (sum of per-step peaks, the
  load figure the return-to-run rules use), ``running_steps_total``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from runform.dsp import (ACTIVITY_NAMES, ACTIVITY_RUNNING, ACTIVITY_STANDING, ACTIVITY_UNKNOWN, SIDE_LEFT,
                         SIDE_RIGHT, STEP_DTYPE)

__all__ = ["RollingMetrics", "MetricsSnapshot"]

_RING_FIELDS = ("ic_s", "side", "gct_ms", "flight_ms", "cadence_spm", "duty_factor", "peak_accel_g",
                "loading_rate_gps", "activity")
_RING_DTYPE = np.dtype([(f, STEP_DTYPE[f]) for f in _RING_FIELDS])


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    time_s: float
    window_s: float
    activity: int
    cadence_spm: float
    gct_ms: float
    gct_left_ms: float
    gct_right_ms: float
    balance_left_pct: float
    flight_ms: float
    duty_factor: float
    impact_peak_g: float
    impact_peak_max_g: float
    loading_rate_gps: float
    steps_in_window: int
    steps_left_in_window: int
    steps_right_in_window: int
    steps_total: int
    running_steps_total: int
    impact_sum_g: float

    @property
    def activity_name(self) -> str:
        return ACTIVITY_NAMES.get(int(self.activity), "unknown")

    @property
    def imbalance_pct(self) -> float:
        """|GCT_L - GCT_R| / mean(GCT_L, GCT_R) * 100 (NaN when a side has too few steps)."""
        m = 0.5 * (self.gct_left_ms + self.gct_right_ms)
        return abs(self.gct_left_ms - self.gct_right_ms) / m * 100.0 if m > 0 else float("nan")

    def to_payload(self, runner: str, **extra) -> dict:
        d = asdict(self)
        d.pop("steps_left_in_window"), d.pop("steps_right_in_window"), d.pop("running_steps_total")
        d["activity"] = self.activity_name
        d.update(schema="runform.metrics.v1", runner=runner, time_unix_s=time.time(), **extra)
        return d


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


class RollingMetrics:
    """Rolling step metrics with a bounded ring.

    Parameters
    ----------
    window_s : length of the rolling window
    capacity_steps : ring size (must exceed the steps in one window: 10 s at 240 spm = 40)
    min_steps_per_side : minimum steps per side in the window before GCT L/R and balance are reported
    standing_after_s : without a step for this long the activity reads "standing"
    """

    def __init__(self, window_s: float = 10.0, capacity_steps: int = 256, min_steps_per_side: int = 3,
                 standing_after_s: float = 2.5) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = float(window_s)
        self.capacity_steps = int(capacity_steps)
        self.min_steps_per_side = int(min_steps_per_side)
        self.standing_after_s = float(standing_after_s)
        self._ring = np.zeros(self.capacity_steps, dtype=_RING_DTYPE)
        self._n = 0  # total appended
        self.steps_total_ = 0
        self.running_steps_total_ = 0
        self.impact_sum_g_ = 0.0
        self.activity_ = ACTIVITY_UNKNOWN
        self.last_step_s_ = float("nan")

    def update(self, steps: np.ndarray, activity: int | None = None) -> "RollingMetrics":
        """Append a STEP_DTYPE array (any length, in time order). ``activity`` overrides (detector's activity_)."""
        k = int(len(steps))
        if k:
            src = steps[-self.capacity_steps:]
            m = len(src)
            idx = (self._n + (k - m) + np.arange(m)) % self.capacity_steps
            for f in _RING_FIELDS:
                self._ring[f][idx] = src[f]
            self._n += k
            self.steps_total_ += k
            self.running_steps_total_ += int(np.count_nonzero(steps["activity"] == ACTIVITY_RUNNING))
            pk = steps["peak_accel_g"]
            self.impact_sum_g_ += float(pk[np.isfinite(pk)].sum())
            self.activity_ = int(steps["activity"][-1])
            self.last_step_s_ = float(steps["ic_s"][-1])
        if activity is not None:
            self.activity_ = int(activity)
        return self

    def _window(self, now_s: float) -> np.ndarray:
        n = min(self._n, self.capacity_steps)
        if n == 0:
            return self._ring[:0]
        ring = self._ring[:n]
        sel = (ring["ic_s"] > now_s - self.window_s) & (ring["ic_s"] <= now_s)
        w = ring[sel]
        return w[np.argsort(w["ic_s"], kind="stable")]

    def snapshot(self, now_s: float) -> MetricsSnapshot:
        w = self._window(now_s)
        activity = self.activity_
        if not (now_s - self.last_step_s_ < self.standing_after_s):  # also NaN -> standing if ever stepped
            activity = ACTIVITY_STANDING if self._n else activity
        left, right = w[w["side"] == SIDE_LEFT], w[w["side"] == SIDE_RIGHT]
        gl = _nanmean(left["gct_ms"]) if len(left) >= self.min_steps_per_side else float("nan")
        gr = _nanmean(right["gct_ms"]) if len(right) >= self.min_steps_per_side else float("nan")
        bal = gl / (gl + gr) * 100.0 if np.isfinite(gl) and np.isfinite(gr) and gl + gr > 0 else float("nan")
        cad = w["cadence_spm"][np.isfinite(w["cadence_spm"])]
        pk = w["peak_accel_g"][np.isfinite(w["peak_accel_g"])]
        return MetricsSnapshot(
            time_s=float(now_s), window_s=self.window_s, activity=int(activity),
            cadence_spm=float(np.median(cad)) if cad.size else float("nan"),
            gct_ms=_nanmean(w["gct_ms"]), gct_left_ms=gl, gct_right_ms=gr, balance_left_pct=bal,
            flight_ms=_nanmean(w["flight_ms"]), duty_factor=_nanmean(w["duty_factor"]),
            impact_peak_g=float(pk.mean()) if pk.size else float("nan"),
            impact_peak_max_g=float(pk.max()) if pk.size else float("nan"),
            loading_rate_gps=_nanmean(w["loading_rate_gps"]),
            steps_in_window=int(len(w)), steps_left_in_window=int(len(left)), steps_right_in_window=int(len(right)),
            steps_total=self.steps_total_, running_steps_total=self.running_steps_total_,
            impact_sum_g=self.impact_sum_g_)
