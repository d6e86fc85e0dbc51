"""Cue engine, rolling metrics and return-to-run program logic (pure, no broker)."""
import math

import numpy as np
import pytest

from runform.dsp import ACTIVITY_RUNNING, ACTIVITY_STANDING, ACTIVITY_WALKING, empty_steps
from runform.server.cues import CueConfig, CueEngine
from runform.server.metrics import RollingMetrics
from runform.server.programs import (Program, ProgramError, ProgramRunner, SessionRecord, decide_next,
                                     decide_progression, example_programs, load_program, merge_pain, parse_program,
                                     resolve_program)

from .conftest import synthetic_steps


def run_engine(engine, segments, t0=0.0, step_dt_s=0.5):
    """Feed (duration_s, cadence, activity, kwargs) segments in chunks of ``step_dt_s``; returns cues."""
    rm = RollingMetrics(window_s=6.0)
    cues, t = [], t0
    for dur, cad, act, kw in segments:
        end = t + dur
        nxt = t
        while t < end:
            t_new = t + step_dt_s
            dt = 60.0 / cad
            n = int(np.floor((t_new - nxt) / dt)) + 1 if t_new >= nxt else 0
            st = synthetic_steps(nxt, n, cad, activity=act, **kw) if n else empty_steps(0)
            nxt += n * dt
            rm.update(st)
            cues += engine.update(st, rm.snapshot(t_new), t_new)
            t = t_new
    return cues


def codes(cues):
    return [c.code for c in cues]


def test_cadence_low_then_ok_with_metronome():
    eng = CueEngine(CueConfig(target_cadence_spm=170, tolerance_spm=5, min_spoken_interval_s=5,
                              reminder_interval_s=1000, imbalance_limit_pct=None))
    cues = run_engine(eng, [(20, 158, ACTIVITY_RUNNING, {}), (20, 171, ACTIVITY_RUNNING, {})])
    c = codes(cues)
    assert c.index("cadence_low") < c.index("cadence_ok")
    assert "metronome_on" in c and "metronome_off" in c
    assert [q.bpm for q in cues if q.code == "metronome_on"] == [170.0]
    assert c.count("cadence_low") == 1  # no reminder within reminder_interval_s


def test_hysteresis_no_flapping_at_the_band_edge():
    eng = CueEngine(CueConfig(target_cadence_spm=170, tolerance_spm=5, hysteresis_spm=2, confirm_s=0.0,
                              min_spoken_interval_s=0.0, reminder_interval_s=1000, imbalance_limit_pct=None))
    # low at 160, then hovering just above the lower edge (166 > 165 but < 167 = edge + hysteresis)
    cues = run_engine(eng, [(10, 160, ACTIVITY_RUNNING, {}), (20, 166, ACTIVITY_RUNNING, {}),
                            (10, 168, ACTIVITY_RUNNING, {})])
    spoken = [(c.code, c.time_s) for c in cues if c.text]
    assert [c for c, _ in spoken] == ["cadence_low", "cadence_ok"]  # no flapping while at 166
    assert spoken[1][1] > 30.0  # ok only once above the edge + hysteresis (168)


def test_min_spacing_between_spoken_cues():
    eng = CueEngine(CueConfig(target_cadence_spm=170, tolerance_spm=3, hysteresis_spm=1, confirm_s=0.5,
                              min_spoken_interval_s=10.0, reminder_interval_s=1000, imbalance_limit_pct=None))
    segs = [(4, 150, ACTIVITY_RUNNING, {}), (4, 170, ACTIVITY_RUNNING, {})] * 6
    cues = run_engine(eng, segs)
    spoken_t = [c.time_s for c in cues if c.text]
    assert len(spoken_t) >= 2
    assert np.all(np.diff(spoken_t) >= 10.0 - 1e-9)
    assert eng.counters_["suppressed_spacing"] > 0


@pytest.mark.parametrize("activity", [ACTIVITY_WALKING, ACTIVITY_STANDING])
def test_no_cadence_cues_while_walking_or_standing(activity):
    eng = CueEngine(CueConfig(target_cadence_spm=170, min_spoken_interval_s=0, confirm_s=0))
    cues = run_engine(eng, [(30, 110, activity, {})])
    assert [c for c in cues if c.kind in ("cadence", "form")] == []


def test_walking_cues_when_the_program_asks_for_walking():
    from runform.server.programs import IntervalState
    eng = CueEngine(CueConfig(target_cadence_spm=170, min_spoken_interval_s=0, confirm_s=0,
                              imbalance_limit_pct=None))
    walk = IntervalState(0, "walk", 0, 60, 120.0, None, 5.0, 0, "p")
    rm = RollingMetrics(window_s=6)
    st = synthetic_steps(0, 20, 105.0, activity=ACTIVITY_WALKING)
    rm.update(st)
    cues = eng.update(st, rm.snapshot(float(st["ic_s"][-1])), float(st["ic_s"][-1]), interval=walk)
    assert "cadence_low" in codes(cues)
    assert [c.bpm for c in cues if c.code == "metronome_on"] == [120.0]


def test_form_alerts_impact_and_imbalance_and_spacing():
    eng = CueEngine(CueConfig(target_cadence_spm=170, impact_limit_g=4.0, imbalance_limit_pct=8.0,
                              min_spoken_interval_s=2.0, form_min_interval_s=30.0))
    cues = run_engine(eng, [(40, 170, ACTIVITY_RUNNING, dict(peak_g=5.0, gct_left_ms=230, gct_right_ms=270))])
    c = codes(cues)
    assert "impact_high" in c
    # left contact shorter -> the left is spared: ask for more time on the left
    assert "imbalance_left" in c and "imbalance_right" not in c
    t_imp = [q.time_s for q in cues if q.code == "impact_high"]
    assert len(t_imp) == 2 and t_imp[1] - t_imp[0] >= 30.0  # 40 s with a 30 s per-code gap


def test_form_alert_long_ground_contact():
    eng = CueEngine(CueConfig(target_cadence_spm=170, gct_limit_ms=300, imbalance_limit_pct=None,
                              min_spoken_interval_s=2.0, form_min_interval_s=30.0, confirm_s=3.0))
    cues = run_engine(eng, [(10, 170, ACTIVITY_RUNNING, dict(gct_left_ms=280, gct_right_ms=290)),
                            (40, 170, ACTIVITY_RUNNING, dict(gct_left_ms=330, gct_right_ms=340))])
    gct = [q for q in cues if q.code == "gct_high"]
    assert [q.text for q in gct] == ["Quicker, lighter steps."] * 2 and all(q.kind == "form" for q in gct)
    assert gct[0].time_s >= 10.0 + 3.0  # the long contacts had to last confirm_s
    assert gct[1].time_s - gct[0].time_s >= 30.0
    # walking with long contacts: no form alert (form alerts are for running only)
    walk = CueEngine(CueConfig(target_cadence_spm=170, gct_limit_ms=300, imbalance_limit_pct=None,
                               walking_cues=True, min_spoken_interval_s=0, confirm_s=0))
    assert [q for q in run_engine(walk, [(30, 120, ACTIVITY_WALKING, dict(gct_left_ms=600, gct_right_ms=600))])
            if q.kind == "form"] == []


def test_no_form_alert_below_limits():
    eng = CueEngine(CueConfig(target_cadence_spm=170, impact_limit_g=6.0, imbalance_limit_pct=8.0,
                              gct_limit_ms=300))
    cues = run_engine(eng, [(30, 170, ACTIVITY_RUNNING, dict(peak_g=5.0, gct_left_ms=245, gct_right_ms=255))])
    assert [c for c in cues if c.kind == "form"] == []


def test_overstride_proxy_only_on_foot_or_shank():
    base = dict(target_cadence_spm=170, tolerance_spm=5, baseline_steps=20, imbalance_limit_pct=None,
                min_spoken_interval_s=1.0)
    segs = [(15, 170, ACTIVITY_RUNNING, dict(loading_rate_gps=100.0)),
            (30, 155, ACTIVITY_RUNNING, dict(loading_rate_gps=150.0))]
    foot = run_engine(CueEngine(CueConfig(**base), site="foot_left"), segs)
    sacrum = run_engine(CueEngine(CueConfig(**base), site="sacrum"), segs)
    assert "overstride" in codes(foot)
    assert "overstride" not in codes(sacrum)


def test_set_target_override_beats_program():
    from runform.server.programs import IntervalState
    eng = CueEngine(CueConfig(confirm_s=0, min_spoken_interval_s=0, imbalance_limit_pct=None))
    run = IntervalState(1, "run", 0, 60, 170.0, None, 5.0, 0, "p")
    eng.set_target(180.0)
    rm = RollingMetrics(window_s=6)
    st = synthetic_steps(0, 20, 170.0)
    rm.update(st)
    cues = eng.update(st, rm.snapshot(float(st["ic_s"][-1])), float(st["ic_s"][-1]), interval=run)
    assert "cadence_low" in codes(cues)


# --------------------------------------------------------------------------- rolling metrics
def test_rolling_metrics_against_numpy_on_window():
    rng = np.random.default_rng(3)
    rm = RollingMetrics(window_s=5.0, capacity_steps=64)
    allst = []
    t = 0.0
    for k in range(40):
        n = int(rng.integers(0, 4))
        st = synthetic_steps(t, n, 170.0, first_side=k % 2)
        st["gct_ms"] = rng.uniform(200, 300, n)
        st["peak_accel_g"] = rng.uniform(2, 5, n)
        st["cadence_spm"] = rng.uniform(160, 180, n)
        t += max(n, 1) * 60 / 170
        rm.update(st)
        allst.append(st)
        all_ = np.concatenate(allst)
        snap = rm.snapshot(t)
        w = all_[(all_["ic_s"] > t - 5.0) & (all_["ic_s"] <= t)]
        assert snap.steps_in_window == len(w)
        if len(w):
            assert snap.cadence_spm == pytest.approx(np.median(w["cadence_spm"]))
            assert snap.impact_peak_g == pytest.approx(w["peak_accel_g"].mean())
        L, R = w[w["side"] == 0], w[w["side"] == 1]
        if len(L) >= 3 and len(R) >= 3:
            gl, gr = L["gct_ms"].mean(), R["gct_ms"].mean()
            assert snap.balance_left_pct == pytest.approx(gl / (gl + gr) * 100)
        else:
            assert math.isnan(snap.balance_left_pct)
        assert snap.steps_total == len(all_)
        assert snap.impact_sum_g == pytest.approx(all_["peak_accel_g"].sum())


def test_rolling_metrics_standing_after_silence():
    rm = RollingMetrics(window_s=5)
    rm.update(synthetic_steps(0, 10, 170))
    assert rm.snapshot(3.4).activity == ACTIVITY_RUNNING
    assert rm.snapshot(20.0).activity == ACTIVITY_STANDING


# --------------------------------------------------------------------------- programs
def test_example_programs_load():
    names = example_programs()
    assert "walk-run-beginner" in names
    p = load_program("walk-run-beginner")
    assert len(p.stages) == 8
    assert p.stages[0].run_time_s == 5 * 60 and p.stages[-1].run_time_s == 1800


@pytest.mark.parametrize("bad", [
    {"stage": [{"intervals": [{"kind": "run", "duration_s": 60}]}]},
    {"program": {"name": "x"}, "stage": []},
    {"program": {"name": "x"}, "stage": [{"intervals": [{"kind": "jog", "duration_s": 60}]}]},
    {"program": {"name": "x"}, "stage": [{"intervals": [{"kind": "run", "duration_s": -1}]}]},
    {"program": {"name": "x"}, "stage": [{"intervals": [{"kind": "run", "duration_s": 9,
                                                         "target_cadence_spm": 999}]}]},
])
def test_program_validation(bad):
    with pytest.raises(ProgramError):
        parse_program(bad)


def _prog(n_stages=3, adv=2):
    return parse_program({"program": {"name": "t", "sessions_to_advance": adv},
                          "stage": [{"intervals": [{"kind": "run", "duration_s": 60}]}] * n_stages})


@pytest.mark.parametrize("pain_after, pain_now, action, stage", [
    (6, 1, "regress", 0), (1, 5, "regress", 0), (3, 1, "hold", 1), (1, 4, "hold", 1), (2, 2, "hold", 1),
])
def test_progression_pain_rules(pain_after, pain_now, action, stage):
    hist = [SessionRecord(1, 1, 1), SessionRecord(1, 1, pain_after)]
    d = decide_progression(_prog(), hist, pain_now)
    assert (d.action, d.next_stage) == (action, stage), d.reason


def test_progression_advances_after_consecutive_tolerated():
    p = _prog(adv=2)
    assert decide_progression(p, [SessionRecord(0, 0, 1)], 0).action == "hold"  # 1 of 2
    d = decide_progression(p, [SessionRecord(0, 0, 1), SessionRecord(0, 0, 2)], 0)
    assert (d.action, d.next_stage) == ("advance", 1)
    # a painful next day between them breaks the run
    d = decide_progression(p, [SessionRecord(0, 0, 1), SessionRecord(0, 3, 2)], 2)
    assert d.action == "hold"
    # last stage: complete, holds
    d = decide_progression(p, [SessionRecord(2, 0, 0), SessionRecord(2, 0, 0)], 0)
    assert (d.action, d.next_stage) == ("hold", 2) and "complete" in d.reason


def test_progression_incomplete_session_and_load_spike_hold():
    p = _prog(adv=1)
    assert decide_progression(p, [SessionRecord(0, 0, 0, completed_fraction=0.5)], 0).action == "hold"
    hist = [SessionRecord(0, 0, 0, impact_sum_g=1000), SessionRecord(0, 0, 0, impact_sum_g=1400)]
    d = decide_progression(p, hist, 0)
    assert d.action == "hold" and "load spike" in d.reason
    hist = [SessionRecord(0, 0, 0, impact_sum_g=1000), SessionRecord(0, 0, 0, impact_sum_g=1200)]
    assert decide_progression(p, hist, 0).action == "advance"


def test_progression_rejects_bad_pain():
    with pytest.raises(ValueError):
        decide_progression(_prog(), [SessionRecord(0, 0, 0)], 11)


def test_progression_unreported_pain_never_counts_as_tolerated():
    p = _prog(adv=1)
    d = decide_progression(p, [SessionRecord(0, 0, None)], 0)
    assert (d.action, d.next_stage) == ("hold", 0) and "after the last session not reported" in d.reason
    d = decide_progression(p, [SessionRecord(0, None, 0)], 0)
    assert d.action == "hold" and "before" in d.reason
    assert decide_progression(p, [SessionRecord(0, 0, None)], 6).action == "regress"  # pain now still counts
    p2 = _prog(adv=2)  # an earlier session without pain scores breaks the run of tolerated sessions
    assert decide_progression(p2, [SessionRecord(0, 0, None), SessionRecord(0, 0, 0)], 0).action == "hold"
    assert decide_progression(p2, [SessionRecord(0, 0, 0), SessionRecord(0, 0, 0)], 0).action == "advance"


def _rec(key, start, stage=1, pb=None, pa=None, *, end=None, final=True, program="t", frac=1.0):
    return {"session_key": key, "program": program, "stage": stage, "pain_before": pb, "pain_after": pa,
            "completed_fraction": frac, "run_steps": 100, "impact_sum_g": 300.0, "start_unix_s": start,
            "end_unix_s": start + 1800 if end is None else end, "final": final}


def test_merge_pain_fills_scores_the_edge_did_not_get():
    day = 86400.0
    recs = [_rec("b", 2 * day, pb=None, pa=None), _rec("a", 1 * day, pb=1, pa=None)]
    reports = [{"pain_0_10": 3, "when": "before", "time_unix_s": 0.5 * day},  # before session a (edge had 1)
               {"pain_0_10": 2, "when": "after", "time_unix_s": 1 * day + 2000},  # after a
               {"pain_0_10": 1, "when": "before", "time_unix_s": 2 * day - 60},  # the next morning, before b
               {"pain_0_10": 0, "when": "before", "time_unix_s": 2 * day + 10},  # corrected, b has started
               {"pain_0_10": 4, "when": "after", "time_unix_s": 2 * day + 1900}]  # after b
    merged = merge_pain(recs, reports)
    assert [r["session_key"] for r in merged] == ["a", "b"]
    assert (merged[0]["pain_before"], merged[0]["pain_after"]) == (1, 2)  # the edge's score wins
    assert (merged[1]["pain_before"], merged[1]["pain_after"]) == (0, 4)  # the latest before b's end
    assert recs[0]["pain_before"] is None  # copies


def test_decide_next_uses_finished_sessions_since_the_therapists_change():
    p = _prog(adv=2)
    now = 10 * 86400.0
    recs = [_rec("old1", 1000.0, pb=0, pa=0), _rec("old2", 5000.0, pb=0, pa=0),
            _rec("new1", 20000.0, pb=0, pa=0),
            _rec("running", now - 100, pb=0, pa=None, end=now - 5, final=False)]  # in progress: left out
    d = decide_next(p, recs, 0, current_stage=0, since_unix_s=10000.0, now_unix_s=now)
    assert (d.action, d.next_stage) == ("hold", 0) and "tolerated 1 of 2" in d.reason
    d = decide_next(p, recs, 0, current_stage=0, since_unix_s=None, now_unix_s=now)
    assert (d.action, d.next_stage) == ("advance", 1)
    # a crashed edge never sent final: counted once it has been silent for active_s
    d = decide_next(p, recs, 0, current_stage=0, since_unix_s=10000.0, now_unix_s=now + 700)
    assert d.action == "hold" and "after the last session not reported" in d.reason
    # nothing finished yet at the therapist's stage: it holds (or steps back on high pain)
    d = decide_next(p, [], 1, current_stage=2)
    assert (d.action, d.next_stage) == ("hold", 2) and "no finished session at stage 3" in d.reason
    assert decide_next(p, [], 7, current_stage=2).next_stage == 1
    assert decide_next(p, [_rec("x", 1.0, program="other", pb=0, pa=0)], 0, current_stage=1).action == "hold"


def test_resolve_program_by_name_only(tmp_path):
    assert resolve_program("demo-short").name == "demo-short"
    (tmp_path / "mine.toml").write_text('[program]\nname = "mine"\n[[stage]]\nintervals = [{kind = "run", '
                                        'duration_s = 10}]\n')
    assert resolve_program("mine", tmp_path).stages[0].run_time_s == 10.0
    assert resolve_program("demo-short", tmp_path).name == "demo-short"  # the examples as fallback
    (tmp_path / "liar.toml").write_text('[program]\nname = "other"\n[[stage]]\nintervals = [{kind = "run", '
                                        'duration_s = 10}]\n')
    for bad, msg in [("../programs/demo-short", "invalid"), ("/etc/passwd", "invalid"), ("nope", "no program"),
                     ("liar", "declares program 'other'")]:
        with pytest.raises(ProgramError, match=msg):
            resolve_program(bad, tmp_path)


def test_program_runner_intervals_pause_advance():
    p = load_program("demo-short")  # stage 1: (walk 20, run 30) x 2
    r = ProgramRunner(p, 0)
    ch = r.update(100.0)
    assert ch[0].state.kind == "walk" and ch[0].reason == "start"
    assert r.update(110.0) == []
    ch = r.update(120.5)
    assert [c.state.kind for c in ch] == ["run"]
    r.pause(125.0)
    assert r.update(200.0) == []  # paused: time stands still
    r.resume(200.0)
    st = r.state(200.0)
    assert st.kind == "run" and st.elapsed_s == pytest.approx(5.0)
    ch = r.advance(201.0)
    assert ch[0].state.kind == "walk" and ch[0].reason == "advanced"
    ch = r.update(201.0 + 20 + 30 + 1)
    assert ch[-1].finished
    assert r.completed_fraction == pytest.approx((6 + 30) / 60, abs=0.05)


def test_interval_changes_become_spoken_interval_cues():
    p = load_program("demo-short")
    r = ProgramRunner(p, 0)
    eng = CueEngine(CueConfig(min_spoken_interval_s=100))
    rm = RollingMetrics()
    out = []
    for t in np.arange(0, 60, 0.5):
        ch = r.update(t)
        out += eng.update(empty_steps(0), rm.snapshot(t), t, interval=r.state(t), changes=ch)
    iv = [c for c in out if c.kind == "interval"]
    assert [c.code for c in iv] == ["interval_walk", "interval_run", "interval_walk"]
    assert "Run for 30 seconds at 170 steps per minute." == iv[1].text
