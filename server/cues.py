"""Cue engine: step events + rolling metrics (+ the program's current interval) -> cues for the runner.

Design (all times are stream seconds, so a replayed session cues exactly like the live one):

- **Cadence band with hysteresis.** Target ``T`` and tolerance ``tol``: the state goes *low* when the rolling
  cadence drops below ``T - tol`` and returns to *ok* only above ``T - tol + hysteresis`` (mirror for *high*).
  A new state must persist ``confirm_s`` before it is announced (one odd window does not trigger a cue).
- **Spoken cues** ("a little quicker", "a little slower", "nice, hold this cadence") are spaced at least
  ``min_spoken_interval_s`` apart (all spoken cues share the gap: the runner hears one thing at a time). A cue
  that cannot be spoken yet stays pending and is dropped if the state changes meanwhile. While a state lasts, a
  reminder repeats every ``reminder_interval_s``.
- **Metronome cue** (``kind="metronome"``, ``bpm``): on entering low/high the metronome starts at the target;
  ``bpm=None`` (code ``metronome_off``) when back in band. Not spoken, not spaced.
- **Activity gate.** Cadence and form cues only while the activity is *running*, unless the program's current
  interval is a walk (then walking cadence is cued against the walk target). Standing never cues.
- **Form alerts** (running only, each code at most every ``form_min_interval_s``):
  ``gct_high`` rolling GCT above ``gct_limit_ms``; ``impact_high`` rolling mean per-step peak above
  ``impact_limit_g`` (the interval's limit overrides); ``imbalance`` |GCT_L - GCT_R| / mean above
  ``imbalance_limit_pct`` (needs both sides in the window); ``overstride`` (foot/shank sites only): cadence
  below 95 % of target while the loading-rate proxy is ``overstride_loading_ratio`` x above the runner's own
  baseline (median of the first ``baseline_steps`` running steps) -- the heel-strike transient sharpens when the
  foot lands ahead of the body; sacrum sensors do not see it, so no overstride cue there.
- **Interval announcements** from the program (``kind="interval"``) bypass the spacing but reset it.
- Priorities when several cues compete in one update: interval 2 > impact 2 > form 1 = cadence 1; one spoken
  cue per update, the rest wait (they are re-evaluated next time).

Every cue carries ``ttl_s``: the MQTT message expiry and ``expires_unix_s`` make a late cue disappear.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Iterable

import numpy as np

from runform.dsp import ACTIVITY_RUNNING, ACTIVITY_WALKING

from .metrics import MetricsSnapshot
from .programs import IntervalChange, IntervalState, announcement

__all__ = ["Cue", "CueConfig", "CueEngine", "CUE_KINDS"]

CUE_KINDS = ("cadence", "metronome", "form", "interval", "program", "info")

TEXT = {
    "cadence_low": "A little quicker.",
    "cadence_high": "A little slower.",
    "cadence_ok": "Nice, hold this cadence.",
    "gct_high": "Quicker, lighter steps.",
    "impact_high": "Land softer.",
    "imbalance_left": "Even out your steps: more time on the left foot.",
    "imbalance_right": "Even out your steps: more time on the right foot.",
    "overstride": "Shorter steps, land under your hips.",
}


@dataclass(frozen=True, slots=True)
class Cue:
    kind: str
    code: str
    time_s: float
    priority: int = 1
    text: str | None = None
    bpm: float | None = None
    ttl_s: float = 2.0
    trigger_arrival_ns: int | None = None

    @property
    def spoken(self) -> bool:
        return self.text is not None


@dataclass(frozen=True, slots=True)
class CueConfig:
    target_cadence_spm: float = 170.0
    tolerance_spm: float = 5.0
    hysteresis_spm: float = 2.0
    walk_target_cadence_spm: float | None = None
    confirm_s: float = 3.0
    min_spoken_interval_s: float = 8.0
    reminder_interval_s: float = 30.0
    metronome: bool = True
    gct_limit_ms: float | None = None
    impact_limit_g: float | None = None
    imbalance_limit_pct: float | None = 10.0
    overstride: bool = True
    overstride_loading_ratio: float = 1.2
    baseline_steps: int = 60
    form_min_interval_s: float = 60.0
    min_steps_in_window: int = 6
    ttl_s: float = 2.0
    interval_ttl_s: float = 5.0
    walking_cues: bool = False

    def __post_init__(self) -> None:
        if self.tolerance_spm <= 0 or not 0 <= self.hysteresis_spm < self.tolerance_spm:
            raise ValueError(f"need tolerance_spm > 0 and 0 <= hysteresis_spm < tolerance_spm, got "
                             f"{self.tolerance_spm}, {self.hysteresis_spm}")
        if not 40 <= self.target_cadence_spm <= 260:
            raise ValueError(f"target_cadence_spm {self.target_cadence_spm} outside 40..260")


class CueEngine:
    """Stateful cue generator; ``update`` returns the cues to send now (a list of frozen :class:`Cue`)."""

    def __init__(self, config: CueConfig = CueConfig(), *, site: str = "sacrum") -> None:
        self.config = config
        self.site = site
        self.state_ = "unknown"  # cadence state: unknown | ok | low | high
        self._candidate: str | None = None
        self._candidate_since = math.nan
        self._state_since = math.nan
        self._last_spoken_s = -math.inf
        self._last_state_cue_s = -math.inf
        self._pending: Cue | None = None
        self._form_last: dict[str, float] = {}
        self._form_since: dict[str, float] = {}
        self.metronome_bpm_: float | None = None
        self._baseline: list[float] = []
        self.baseline_loading_rate_gps_: float = math.nan
        self._override = False
        self.counters_ = {"cues": 0, "spoken": 0, "suppressed_spacing": 0, "suppressed_activity": 0}

    # --- live changes (therapist control) ---------------------------------------------------------------
    def set_target(self, cadence_spm: float, tolerance_spm: float | None = None) -> None:
        tol = self.config.tolerance_spm if tolerance_spm is None else tolerance_spm
        self.config = replace(self.config, target_cadence_spm=float(cadence_spm), tolerance_spm=float(tol),
                              hysteresis_spm=min(self.config.hysteresis_spm, 0.5 * float(tol)))
        self._override = True  # wins over the program's run-interval targets for the rest of the session
        self.state_ = "unknown"  # re-evaluate against the new band
        self._candidate = None
        self._pending = None

    def set_limits(self, **limits: float) -> None:
        self.config = replace(self.config, **{k: float(v) for k, v in limits.items()})

    # --- main entry -------------------------------------------------------------------------------------
    def update(self, steps: np.ndarray, metrics: MetricsSnapshot, now_s: float, *,
               interval: IntervalState | None = None, changes: Iterable[IntervalChange] = (),
               trigger_arrival_ns: int | None = None) -> list[Cue]:
        cfg = self.config
        out: list[Cue] = []
        spoken: list[Cue] = []

        def mk(kind, code, priority, text=None, bpm=None, ttl=cfg.ttl_s):
            return Cue(kind, code, float(now_s), priority, text, bpm, ttl, trigger_arrival_ns)

        # program interval announcements: always spoken, reset the spacing
        for ch in changes:
            code = "session_end" if ch.finished else f"interval_{ch.state.kind}"
            out.append(mk("interval", code, 2, announcement(ch), ttl=cfg.interval_ttl_s))
            self._last_spoken_s = now_s
            self._pending = None
            self.state_ = "unknown"  # new targets: re-evaluate
            self._candidate = None
        if len(steps):
            self._learn_baseline(steps)

        target, tol, walk_ok = cfg.target_cadence_spm, cfg.tolerance_spm, cfg.walking_cues
        impact_limit = cfg.impact_limit_g
        if interval is not None:
            if interval.kind == "walk":
                walk_ok = True
                target = interval.target_cadence_spm or cfg.walk_target_cadence_spm or target
            elif interval.kind == "run" and interval.target_cadence_spm and not self._override:
                target = interval.target_cadence_spm
            if interval.tolerance_spm:
                tol = interval.tolerance_spm
            if interval.impact_limit_g:
                impact_limit = interval.impact_limit_g
            if interval.kind == "rest":
                walk_ok = False
        act = metrics.activity
        active = act == ACTIVITY_RUNNING or (walk_ok and act == ACTIVITY_WALKING)
        if interval is not None and interval.kind == "walk" and act == ACTIVITY_RUNNING:
            active = False  # running during a walk interval: the interval cue already said "walk"
        if not active or metrics.steps_in_window < cfg.min_steps_in_window or not math.isfinite(metrics.cadence_spm):
            if self.state_ != "unknown" or self._pending is not None:
                self.counters_["suppressed_activity"] += 1
            self.state_, self._candidate, self._pending = "unknown", None, None
            if self.metronome_bpm_ is not None:
                self.metronome_bpm_ = None
                out.append(mk("metronome", "metronome_off", 0))
            return self._finish(out)

        # --- cadence state machine with hysteresis -----------------------------------------------------
        c = metrics.cadence_spm
        hyst = min(cfg.hysteresis_spm, 0.5 * tol)
        s = self.state_
        if s in ("unknown", "ok"):
            new = "low" if c < target - tol else "high" if c > target + tol else "ok"
        elif s == "low":
            new = "ok" if c >= target - tol + hyst else "low"
            if c > target + tol:
                new = "high"
        else:  # high
            new = "ok" if c <= target + tol - hyst else "high"
            if c < target - tol:
                new = "low"
        if new != s:
            if self._candidate != new:
                self._candidate, self._candidate_since = new, now_s
            if s == "unknown" or now_s - self._candidate_since >= cfg.confirm_s:
                prev, self.state_ = s, new
                self._state_since = now_s
                self._candidate = None
                self._pending = None
                if new in ("low", "high"):
                    self._pending = mk("cadence", f"cadence_{new}", 1, TEXT[f"cadence_{new}"])
                    if cfg.metronome:
                        self.metronome_bpm_ = float(target)
                        out.append(mk("metronome", "metronome_on", 0, bpm=float(target)))
                elif prev in ("low", "high"):
                    self._pending = mk("cadence", "cadence_ok", 1, TEXT["cadence_ok"])
                    if self.metronome_bpm_ is not None:
                        self.metronome_bpm_ = None
                        out.append(mk("metronome", "metronome_off", 0))
        else:
            self._candidate = None
            if s in ("low", "high"):
                if self.metronome_bpm_ is not None and cfg.metronome and self.metronome_bpm_ != float(target):
                    self.metronome_bpm_ = float(target)
                    out.append(mk("metronome", "metronome_on", 0, bpm=float(target)))
                if self._pending is None and now_s - self._last_state_cue_s >= cfg.reminder_interval_s:
                    self._pending = mk("cadence", f"cadence_{s}", 1, TEXT[f"cadence_{s}"])
        if self._pending is not None:
            spoken.append(replace(self._pending, time_s=float(now_s), trigger_arrival_ns=trigger_arrival_ns))

        # --- form alerts (running only) -----------------------------------------------------------------
        if act == ACTIVITY_RUNNING:
            spoken += self._form(metrics, now_s, target, impact_limit, mk)

        if spoken:
            spoken.sort(key=lambda q: -q.priority)
            best = spoken[0]
            if now_s - self._last_spoken_s >= cfg.min_spoken_interval_s:
                out.append(best)
                self._last_spoken_s = now_s
                if best.kind == "cadence":
                    self._pending = None
                    self._last_state_cue_s = now_s
                else:
                    self._form_last[best.code] = now_s
            else:
                self.counters_["suppressed_spacing"] += 1
        return self._finish(out)

    def _finish(self, out: list[Cue]) -> list[Cue]:
        self.counters_["cues"] += len(out)
        self.counters_["spoken"] += sum(1 for q in out if q.text)
        return out

    def _learn_baseline(self, steps: np.ndarray) -> None:
        if len(self._baseline) >= self.config.baseline_steps:
            return
        lr = steps["loading_rate_gps"][(steps["activity"] == ACTIVITY_RUNNING) & np.isfinite(steps["loading_rate_gps"])]
        self._baseline.extend(lr.tolist()[: self.config.baseline_steps - len(self._baseline)])
        if len(self._baseline) >= self.config.baseline_steps:
            self.baseline_loading_rate_gps_ = float(np.median(self._baseline))

    def _form(self, m: MetricsSnapshot, now_s: float, target: float, impact_limit, mk) -> list[Cue]:
        cfg = self.config
        conds: dict[str, tuple[bool, int]] = {}
        if cfg.gct_limit_ms is not None and math.isfinite(m.gct_ms):
            conds["gct_high"] = (m.gct_ms > cfg.gct_limit_ms, 1)
        if impact_limit is not None and math.isfinite(m.impact_peak_g):
            conds["impact_high"] = (m.impact_peak_g > impact_limit, 2)
        if cfg.imbalance_limit_pct is not None and math.isfinite(m.imbalance_pct):
            bad = m.imbalance_pct > cfg.imbalance_limit_pct
            # the side with the SHORTER contact is being spared: ask for more time on it
            side = "left" if m.gct_left_ms < m.gct_right_ms else "right"
            conds[f"imbalance_{side}"] = (bad, 1)
            conds[f"imbalance_{'right' if side == 'left' else 'left'}"] = (False, 1)
        site = self.site.split("_")[0]
        if cfg.overstride and site in ("foot", "shank") and math.isfinite(self.baseline_loading_rate_gps_) \
                and math.isfinite(m.loading_rate_gps):
            conds["overstride"] = (m.cadence_spm < 0.95 * target and
                                   m.loading_rate_gps > cfg.overstride_loading_ratio * self.baseline_loading_rate_gps_,
                                   1)
        out = []
        for code, (bad, prio) in conds.items():
            if not bad:
                self._form_since.pop(code, None)
                continue
            since = self._form_since.setdefault(code, now_s)
            if now_s - since >= cfg.confirm_s and now_s - self._form_last.get(code, -math.inf) >= cfg.form_min_interval_s:
                out.append(mk("form", code, prio, TEXT[code]))
        return out
