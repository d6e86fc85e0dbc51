"""Return-to-run programs: walk-run interval sessions, progression across sessions, tolerance rules.

A program is a TOML file (examples in ``server/programs/``)::

    [program]
    name = "walk-run-beginner"
    title = "..."
    sessions_to_advance = 2          # consecutive tolerated sessions before the next stage
    walk_cadence_spm = 115           # default target for walk intervals
    impact_limit_g = 6.0             # default limit for run intervals (per-step peak, g)

    [[stage]]
    name = "R1/W4 x5"
    warmup_walk_s = 300
    cooldown_walk_s = 300
    repeats = 5
    intervals = [
      { kind = "run",  duration_s = 60,  target_cadence_spm = 168, impact_limit_g = 5.5 },
      { kind = "walk", duration_s = 240 },
    ]

Progression rules (:func:`decide_progression`; pain is 0-10 on a numeric rating scale):

1. Pain >= 5 after the last session or now (about 24 h later, reported as ``pain_before`` of this session)
   -> **regress** one stage (never below the first).
2. Pain 3-4 after the last session or now -> **hold** (repeat the stage).
3. Pain now higher than before the last session (pain increased over 24 h) -> **hold**.
4. Last session less than 90 % of its planned run time completed -> **hold**.
5. Load spike: the last session's impact sum (sum of per-step peaks, g) above 1.3 x the previous session at
   the same stage -> **hold**.
6. Otherwise the session was *tolerated*; after ``sessions_to_advance`` consecutive tolerated sessions at the
   stage -> **advance** one stage (the last stage holds: program completed), else **hold**.

These follow the common clinical walk-run progressions (pain-monitoring model: <= 2/10 acceptable, symptoms must
settle by the next morning); the thresholds are parameters of :class:`ProgressionRules`.

Across sessions (docs/mqtt.md "Plans, program sessions and progression"): the server keeps the runner's plan,
the edge's program session records (``runform.program_session.v1``, stage 1-based) and pain reports;
:func:`merge_pain` fills in scores the edge did not get, :func:`decide_next` decides from the finished sessions
since the therapist's last change, :func:`resolve_program` loads a plan's program by NAME only.
"""
from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

__all__ = [
    "ProgramError", "Interval", "Stage", "Program", "load_program", "example_programs",
    "ProgressionRules", "SessionRecord", "Decision", "decide_progression",
    "IntervalState", "IntervalChange", "ProgramRunner",
    "resolve_program", "check_program_name", "merge_pain", "history_from_records", "decide_next",
]

PROGRAM_DIR = Path(__file__).with_name("programs")


class ProgramError(ValueError):
    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


@dataclass(frozen=True, slots=True)
class Interval:
    kind: str  # "walk" | "run" | "rest"
    duration_s: float
    target_cadence_spm: float | None = None
    impact_limit_g: float | None = None
    tolerance_spm: float | None = None


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    intervals: tuple[Interval, ...]  # the full schedule (warm-up, repeats, cool-down expanded)

    @property
    def run_time_s(self) -> float:
        return sum(i.duration_s for i in self.intervals if i.kind == "run")

    @property
    def duration_s(self) -> float:
        return sum(i.duration_s for i in self.intervals)


@dataclass(frozen=True, slots=True)
class Program:
    name: str
    title: str
    stages: tuple[Stage, ...]
    sessions_to_advance: int = 2
    description: str = ""


def _num(d: dict, key: str, where: str, lo: float, hi: float, default=None):
    v = d.get(key, default)
    if v is None:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not (lo <= v <= hi):
        raise ProgramError(f"{where}.{key} must be a number in [{lo}, {hi}], got {v!r}")
    return float(v)


def parse_program(data: dict, *, source: str | None = None) -> Program:
    """Build a :class:`Program` from parsed TOML (validated; errors name the field)."""
    try:
        p = data.get("program")
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise ProgramError("missing [program] table with a name")
        walk_cad = _num(p, "walk_cadence_spm", "program", 60, 160)
        impact_default = _num(p, "impact_limit_g", "program", 1, 30)
        stages_in = data.get("stage")
        if not isinstance(stages_in, list) or not stages_in:
            raise ProgramError("needs at least one [[stage]]")
        stages = []
        for si, s in enumerate(stages_in):
            where = f"stage[{si}]"
            ivs_in = s.get("intervals")
            if not isinstance(ivs_in, list) or not ivs_in:
                raise ProgramError(f"{where}.intervals must be a non-empty list")
            block = []
            for ii, iv in enumerate(ivs_in):
                w = f"{where}.intervals[{ii}]"
                kind = iv.get("kind")
                if kind not in ("walk", "run", "rest"):
                    raise ProgramError(f"{w}.kind must be walk, run or rest, got {kind!r}")
                dur = _num(iv, "duration_s", w, 1, 24 * 3600)
                if dur is None:
                    raise ProgramError(f"{w}.duration_s is required")
                cad = _num(iv, "target_cadence_spm", w, 60, 240, walk_cad if kind == "walk" else None)
                imp = _num(iv, "impact_limit_g", w, 1, 30, impact_default if kind == "run" else None)
                tol = _num(iv, "tolerance_spm", w, 1, 30)
                block.append(Interval(kind, dur, cad, imp, tol))
            repeats = int(s.get("repeats", 1))
            if not 1 <= repeats <= 100:
                raise ProgramError(f"{where}.repeats must be 1..100, got {repeats}")
            sched: list[Interval] = []
            wu = _num(s, "warmup_walk_s", where, 0, 3600, 0)
            cd = _num(s, "cooldown_walk_s", where, 0, 3600, 0)
            if wu:
                sched.append(Interval("walk", wu, walk_cad))
            sched += block * repeats
            if cd:
                sched.append(Interval("walk", cd, walk_cad))
            stages.append(Stage(str(s.get("name", f"stage {si + 1}")), tuple(sched)))
        n_adv = int(p.get("sessions_to_advance", 2))
        if not 1 <= n_adv <= 10:
            raise ProgramError(f"program.sessions_to_advance must be 1..10, got {n_adv}")
        return Program(p["name"], str(p.get("title", p["name"])), tuple(stages), n_adv, str(p.get("description", "")))
    except ProgramError as exc:
        if source and exc.path is None:
            raise ProgramError(str(exc), path=source) from None
        raise


def load_program(path_or_name: str | Path) -> Program:
    """Load a TOML program file, or an example by name (``walk-run-beginner``)."""
    p = Path(path_or_name)
    if not p.exists():
        cand = PROGRAM_DIR / f"{path_or_name}.toml"
        if not cand.exists():
            raise ProgramError(f"no program file {str(path_or_name)!r} (examples: {', '.join(example_programs())})")
        p = cand
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProgramError(f"invalid TOML: {exc}", path=str(p)) from None
    return parse_program(data, source=str(p))


def example_programs(programs_dir: str | Path | None = None) -> list[str]:
    """Program names available in ``programs_dir`` (default: the examples in ``server/programs/``)."""
    d = Path(programs_dir) if programs_dir is not None else PROGRAM_DIR
    return sorted(f.stem for f in d.glob("*.toml"))


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_program_name(name) -> str:
    """A program NAME as carried by a plan (no paths: 1-64 of A-Z a-z 0-9 _ . -, no '..')."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ProgramError(f"program name {name!r} invalid (1-64 of A-Z a-z 0-9 _ . -, no path)")
    return name


def resolve_program(name: str, programs_dir: str | Path | None = None) -> Program:
    """Load the program called ``name`` from ``programs_dir`` (``{name}.toml``), falling back to the examples.

    Only names are accepted (a plan comes over the network: never a path)."""
    check_program_name(name)
    dirs = ([Path(programs_dir)] if programs_dir is not None else []) + [PROGRAM_DIR]
    for d in dirs:
        f = d / f"{name}.toml"
        if f.is_file():
            prog = load_program(f)
            if prog.name != name:
                raise ProgramError(f"file {f.name} declares program {prog.name!r}, not {name!r}", path=str(f))
            return prog
    avail = sorted({n for d in dirs for n in example_programs(d)})
    raise ProgramError(f"no program {name!r} (available: {', '.join(avail) or 'none'})")


# ----------------------------------------------------------------------------------------- progression rules
@dataclass(frozen=True, slots=True)
class ProgressionRules:
    pain_ok_max: int = 2
    pain_hold_max: int = 4  # 3..4 -> hold, >= 5 -> regress
    min_completed_fraction: float = 0.9
    load_spike_ratio: float = 1.3


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One session's tolerance data. ``completed_fraction`` = run time done / planned run time; ``stage`` is
    0-based here (1-based on the wire); a pain of None was not reported (the session cannot count as tolerated)."""

    stage: int
    pain_before: int | None
    pain_after: int | None
    completed_fraction: float = 1.0
    run_steps: int = 0
    impact_sum_g: float = 0.0
    start_unix_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # "advance" | "hold" | "regress"
    next_stage: int
    reason: str
    tolerated: bool


def _check_pain(v, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 10:
        raise ValueError(f"{what} must be an integer 0..10, got {v!r}")
    return v


def decide_progression(program: Program, history: Sequence[SessionRecord], pain_now: int,
                       rules: ProgressionRules = ProgressionRules()) -> Decision:
    """Stage for the next session from the session history and today's pain (the 24 h-later rating)."""
    _check_pain(pain_now, "pain_now")
    if not history:
        return Decision("hold", 0, "first session: start at stage 1", False)
    last = history[-1]
    for v, what in ((last.pain_before, "pain_before"), (last.pain_after, "pain_after")):
        if v is not None:  # None: not reported (the session cannot count as tolerated)
            _check_pain(v, what)
    n_stages = len(program.stages)
    stage = min(max(int(last.stage), 0), n_stages - 1)
    worst = max(last.pain_after if last.pain_after is not None else 0, pain_now)
    if worst > rules.pain_hold_max:
        nxt = max(stage - 1, 0)
        return Decision("regress", nxt, f"pain {worst}/10 >= {rules.pain_hold_max + 1}: step back to stage {nxt + 1}",
                        False)
    if worst > rules.pain_ok_max:
        return Decision("hold", stage, f"pain {worst}/10 in {rules.pain_ok_max + 1}-{rules.pain_hold_max}: repeat stage",
                        False)
    if last.pain_after is None or last.pain_before is None:
        missing = " and ".join(w for w, v in (("before", last.pain_before), ("after", last.pain_after)) if v is None)
        return Decision("hold", stage, f"pain {missing} the last session not reported: repeat stage", False)
    if pain_now > last.pain_before:
        return Decision("hold", stage, f"pain rose over 24 h ({last.pain_before} -> {pain_now}): repeat stage", False)
    if last.completed_fraction < rules.min_completed_fraction:
        return Decision("hold", stage, f"only {last.completed_fraction:.0%} of the planned run time done", False)
    prev_same = [h for h in history[:-1] if h.stage == last.stage]
    if prev_same and prev_same[-1].impact_sum_g > 0 and \
            last.impact_sum_g > rules.load_spike_ratio * prev_same[-1].impact_sum_g:
        return Decision("hold", stage, f"load spike: impact sum {last.impact_sum_g:.0f} g > "
                                       f"{rules.load_spike_ratio} x previous {prev_same[-1].impact_sum_g:.0f} g", False)
    # consecutive tolerated sessions at this stage (the last one is tolerated by the checks above)
    run = 1
    for prev, cur in zip(reversed(history[:-1]), reversed(history[1:])):
        if prev.stage != last.stage or not _tolerated(prev, cur.pain_before, rules):
            break
        run += 1
    if run >= program.sessions_to_advance:
        if stage + 1 >= n_stages:
            return Decision("hold", stage, "tolerated the last stage: program complete", True)
        return Decision("advance", stage + 1, f"{run} tolerated session(s) at stage {stage + 1}: advance", True)
    return Decision("hold", stage, f"tolerated {run} of {program.sessions_to_advance} sessions needed", True)


def _tolerated(rec: SessionRecord, pain_next: int | None, rules: ProgressionRules) -> bool:
    if rec.pain_before is None or rec.pain_after is None or pain_next is None:
        return False
    return (max(rec.pain_after, pain_next) <= rules.pain_ok_max and pain_next <= rec.pain_before
            and rec.completed_fraction >= rules.min_completed_fraction)


def merge_pain(records: Iterable[dict], pain_reports: Iterable[dict] = ()) -> list[dict]:
    """Program session records (``runform.program_session.v1`` dicts) oldest first, with pain scores the edge
    did not get filled in from the reports kept by the server (``{pain_0_10, when, time_unix_s}``):

    * ``pain_before`` <- the latest ``before`` report after the previous session's end and up to this
      session's end (the runner rated before starting, perhaps with no edge running yet);
    * ``pain_after`` <- the latest ``after`` report from this session's start until the next session's start
      (rated after the edge stopped).

    A score the edge recorded wins. Returns copies."""
    recs = sorted((dict(r) for r in records), key=lambda r: (r.get("start_unix_s") or 0.0, r.get("session_key", "")))
    reps = sorted((r for r in pain_reports if r.get("time_unix_s") is not None), key=lambda r: r["time_unix_s"])
    for i, r in enumerate(recs):
        start = r.get("start_unix_s") or 0.0
        end = max(r.get("end_unix_s") or start, start)
        prev_end = (recs[i - 1].get("end_unix_s") or recs[i - 1].get("start_unix_s") or 0.0) if i else -math.inf
        next_start = (recs[i + 1].get("start_unix_s") or math.inf) if i + 1 < len(recs) else math.inf
        if r.get("pain_before") is None:
            c = [p for p in reps if p["when"] == "before" and prev_end < p["time_unix_s"] <= end]
            if c:
                r["pain_before"] = int(c[-1]["pain_0_10"])
        if r.get("pain_after") is None:
            c = [p for p in reps if p["when"] == "after" and start <= p["time_unix_s"] < next_start]
            if c:
                r["pain_after"] = int(c[-1]["pain_0_10"])
    return recs


def history_from_records(records: Iterable[dict], *, program: str | None = None,
                         since_unix_s: float | None = None) -> list[SessionRecord]:
    """Wire records (merged, oldest first) -> :class:`SessionRecord` s of ``program`` started at or after
    ``since_unix_s`` (the therapist's last change of the plan: earlier sessions do not count towards it)."""
    out = []
    for r in records:
        if program is not None and r.get("program") != program:
            continue
        if since_unix_s is not None and (r.get("start_unix_s") or 0.0) < since_unix_s:
            continue
        out.append(SessionRecord(int(r["stage"]) - 1, r.get("pain_before"), r.get("pain_after"),
                                 float(r.get("completed_fraction") or 0.0), int(r.get("run_steps") or 0),
                                 float(r.get("impact_sum_g") or 0.0), float(r.get("start_unix_s") or 0.0)))
    return out


def decide_next(program: Program, records: Sequence[dict], pain_now: int, *, current_stage: int,
                since_unix_s: float | None = None, now_unix_s: float | None = None, active_s: float = 600.0,
                rules: ProgressionRules = ProgressionRules()) -> Decision:
    """The decision for the next session of ``program`` from the stored (merged) records and today's pain.

    ``current_stage`` (0-based) is the plan's stage. Sessions still running (not ``final`` and updated within
    ``active_s``) and sessions before ``since_unix_s`` are left out; without a finished session the plan's
    stage holds."""
    import time as _time
    now = _time.time() if now_unix_s is None else now_unix_s
    done = [r for r in records if r.get("final") or (r.get("end_unix_s") or 0.0) < now - active_s]
    hist = history_from_records(done, program=program.name, since_unix_s=since_unix_s)
    hist = [h for h in hist if 0 <= h.stage < len(program.stages)]
    if not hist:
        _check_pain(pain_now, "pain_now")
        if pain_now > rules.pain_hold_max and current_stage > 0:
            nxt = current_stage - 1
            return Decision("regress", nxt, f"pain {pain_now}/10 >= {rules.pain_hold_max + 1} before the first "
                                            f"session at this stage: step back to stage {nxt + 1}", False)
        return Decision("hold", current_stage, f"no finished session at stage {current_stage + 1} yet: "
                                               f"start stage {current_stage + 1}", False)
    return decide_progression(program, hist, pain_now, rules)


# ----------------------------------------------------------------------------------------- live session
@dataclass(frozen=True, slots=True)
class IntervalState:
    index: int
    kind: str
    elapsed_s: float
    remaining_s: float
    target_cadence_spm: float | None
    impact_limit_g: float | None
    tolerance_spm: float | None
    stage: int
    program: str

    def to_payload(self) -> dict:
        return {"index": self.index, "kind": self.kind, "elapsed_s": round(self.elapsed_s, 3),
                "remaining_s": round(self.remaining_s, 3), "target_cadence_spm": self.target_cadence_spm,
                "impact_limit_g": self.impact_limit_g, "stage": self.stage, "program": self.program}


@dataclass(frozen=True, slots=True)
class IntervalChange:
    """Emitted when an interval starts (``state``) or the session ends (``state`` None, ``finished``)."""

    time_s: float
    state: IntervalState | None
    finished: bool = False
    reason: str = "schedule"  # "schedule" | "advanced" | "start"


def _fmt_duration(s: float) -> str:
    if s >= 90:
        m = s / 60
        return f"{m:.0f} minutes" if abs(m - round(m)) < 0.05 else f"{m:.1f} minutes"
    return f"{s:.0f} seconds"


def announcement(change: IntervalChange) -> str:
    if change.finished or change.state is None:
        return "Session complete. Well done, time to cool down and stretch."
    st = change.state
    verb = {"run": "Run", "walk": "Walk", "rest": "Rest"}[st.kind]
    text = f"{verb} for {_fmt_duration(st.remaining_s)}"
    if st.kind == "run" and st.target_cadence_spm:
        text += f" at {st.target_cadence_spm:.0f} steps per minute"
    return text + "."


class ProgramRunner:
    """Runs one stage of a program in stream time; pause/resume/advance; accumulates session load.

    ``update(now_s)`` returns the :class:`IntervalChange` events since the previous call (the first call starts
    the session at ``now_s``).
    """

    def __init__(self, program: Program, stage: int = 0) -> None:
        if not 0 <= stage < len(program.stages):
            raise ProgramError(f"stage {stage} out of range (program has {len(program.stages)})")
        self.program = program
        self.stage_index = stage
        self.stage = program.stages[stage]
        self._ends = []
        t = 0.0
        for iv in self.stage.intervals:
            t += iv.duration_s
            self._ends.append(t)
        self.started_s_: float | None = None
        self._elapsed_before_pause = 0.0
        self._run_since: float | None = None
        self.paused_ = False
        self._index = -1
        self._skip_offset = 0.0
        self._skipped_run_s = 0.0
        self.finished_ = False
        self.run_time_done_s_ = 0.0
        self.pain_before_: int | None = None
        self.pain_after_: int | None = None

    def _elapsed(self, now_s: float) -> float:
        e = self._elapsed_before_pause
        if not self.paused_ and self._run_since is not None:
            e += max(0.0, now_s - self._run_since)
        return e + self._skip_offset

    def _index_at(self, elapsed: float) -> int:
        import bisect
        return bisect.bisect_right(self._ends, elapsed)

    def state(self, now_s: float) -> IntervalState | None:
        if self.started_s_ is None or self.finished_:
            return None
        e = self._elapsed(now_s)
        i = self._index_at(e)
        if i >= len(self._ends):
            return None
        iv = self.stage.intervals[i]
        start = self._ends[i] - iv.duration_s
        return IntervalState(i, iv.kind, e - start, self._ends[i] - e, iv.target_cadence_spm, iv.impact_limit_g,
                             iv.tolerance_spm, self.stage_index, self.program.name)

    def update(self, now_s: float) -> list[IntervalChange]:
        out: list[IntervalChange] = []
        if self.finished_:
            return out
        if self.started_s_ is None:
            self.started_s_ = now_s
            self._run_since = now_s
        e = self._elapsed(now_s)
        i = min(self._index_at(e), len(self._ends))
        while self._index < i:
            prev = self._index
            self._index += 1
            if self._index >= len(self._ends):
                self.finished_ = True
                out.append(IntervalChange(now_s, None, finished=True))
                break
            if self._index == i:  # report only the interval we are in (skipped ones were too short)
                out.append(IntervalChange(now_s, self.state(now_s), reason="start" if prev < 0 else "schedule"))
        self.run_time_done_s_ = max(0.0, self._run_time_until(min(e, self._ends[-1])) - self._skipped_run_s)
        return out

    def _run_time_until(self, e: float) -> float:
        done, start = 0.0, 0.0
        for iv, end in zip(self.stage.intervals, self._ends):
            if iv.kind == "run":
                done += max(0.0, min(e, end) - start)
            start = end
        return done

    def pause(self, now_s: float) -> None:
        if not self.paused_ and self._run_since is not None:
            self._elapsed_before_pause += max(0.0, now_s - self._run_since)
        self.paused_ = True

    def resume(self, now_s: float) -> None:
        if self.paused_:
            self.paused_ = False
            self._run_since = now_s

    def advance(self, now_s: float) -> list[IntervalChange]:
        """Skip the rest of the current interval (therapist command); returns the resulting change(s)."""
        st = self.state(now_s)
        if st is None:
            return []
        if st.kind == "run":
            self._skipped_run_s += st.remaining_s  # skipped running does not count as done
        self._skip_offset += st.remaining_s + 1e-9
        changes = self.update(now_s)
        return [replace(c, reason="advanced") for c in changes]

    @property
    def completed_fraction(self) -> float:
        planned = self.stage.run_time_s
        return 1.0 if planned <= 0 else min(1.0, self.run_time_done_s_ / planned)

    def session_record(self, run_steps: int, impact_sum_g: float) -> SessionRecord:
        if self.pain_before_ is None or self.pain_after_ is None:
            raise ValueError("pain before and after must be reported before a session record is made")
        return SessionRecord(self.stage_index, self.pain_before_, self.pain_after_, self.completed_fraction,
                             int(run_steps), float(impact_sum_g))
