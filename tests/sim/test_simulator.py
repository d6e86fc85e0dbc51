"""Simulator: ground truth consistency, physics, sensor options, streaming equivalence, CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest

from runform.firmware_bridge.simulator import (
    SIM_EVENT_DTYPE, SITES, RunnerProfile, Segment, SimulatorStream, simulate,
)

G0 = 9.80665
SCHEDULE = [Segment("stand", 3.0), Segment("run", 30.0, {"cadence_spm": 165}), Segment("walk", 15.0),
            Segment("stand", 4.0)]


@pytest.fixture(scope="module")
def rec():
    return simulate(RunnerProfile(), sites=SITES, segments=SCHEDULE, sampling_rate_hz=500.0, seed=5,
                    noise_g=0.0, orientation="aligned", range_g=64.0)


def _steady(ev, act):
    """Steps of one activity away from bout borders and activity transitions."""
    sel = ev["activity"] == act
    idx = np.flatnonzero(sel)
    return ev[idx[3:-3]]


# ----------------------------------------------------------------------------------------- truth
def test_events_dtype_and_order(rec):
    ev = rec.events
    assert ev.dtype == SIM_EVENT_DTYPE
    assert len(ev) > 60
    assert np.all(np.diff(ev["ic_s"]) > 0)
    assert np.all(ev["tc_s"] > ev["ic_s"])
    assert np.all(ev["tc_s"] <= rec.duration_s)
    np.testing.assert_allclose(ev["gct_ms"], (ev["tc_s"] - ev["ic_s"]) * 1000.0, rtol=0, atol=1e-9)
    # sides alternate inside a bout
    assert np.all(np.diff(ev["side"].astype(int)) != 0)


def test_no_steps_while_standing(rec):
    ev = rec.events
    assert ev["ic_s"].min() > 3.0
    assert ev["tc_s"].max() < 48.0 + 0.01


def test_cadence_and_step_times(rec):
    ev = rec.events
    run = _steady(ev, 2)
    cad = 60.0 / np.median(np.diff(run["ic_s"]))
    assert abs(cad - 165.0) < 165.0 * 0.03
    walk = _steady(ev, 1)
    cadw = 60.0 / np.median(np.diff(walk["ic_s"]))
    assert abs(cadw - 115.0) < 115.0 * 0.03
    # step_time_ms is previous IC -> this IC, cadence its inverse
    st = ev["step_time_ms"][1:]
    ok = np.isfinite(st)
    np.testing.assert_allclose(st[ok], (np.diff(ev["ic_s"]) * 1000.0)[ok], atol=1e-9)
    np.testing.assert_allclose(ev["cadence_spm"][1:][ok], 60000.0 / st[ok])
    # variability is there but bounded (default step_cv 2 %)
    cv = np.std(np.diff(run["ic_s"])) / np.mean(np.diff(run["ic_s"]))
    assert 0.005 < cv < 0.05


def test_flight_running_double_support_walking(rec):
    ev = rec.events
    run = ev[ev["activity"] == 2]
    walk = ev[ev["activity"] == 1]
    f = run["flight_ms"][np.isfinite(run["flight_ms"])]
    assert len(f) > 50 and np.all(f >= 0) and np.median(f) > 50
    nxt = run["next_step_time_ms"]
    ok = np.isfinite(nxt)
    np.testing.assert_allclose(run["flight_ms"][ok], nxt[ok] - run["gct_ms"][ok], atol=1e-9)
    ds = walk["double_support_ms"][np.isfinite(walk["double_support_ms"])]
    assert len(ds) > 10 and np.all(ds > 0)
    assert np.all(np.isnan(walk["flight_ms"]))
    # the next IC really is ic + next_step_time
    i = np.flatnonzero(np.isfinite(ev["next_step_time_ms"]))[:-1]
    np.testing.assert_allclose(ev["ic_s"][i + 1], ev["ic_s"][i] + ev["next_step_time_ms"][i] / 1000.0, atol=1e-9)


def test_gct_derived_and_explicit():
    r1 = simulate(RunnerProfile(speed_ms=2.5), duration_s=20, seed=1)
    r2 = simulate(RunnerProfile(speed_ms=4.5), duration_s=20, seed=1)
    assert np.median(r1.events["gct_ms"]) > np.median(r2.events["gct_ms"]) + 30  # faster -> shorter contact
    r3 = simulate(RunnerProfile(gct_ms=240.0, gct_cv=0.0, asymmetry_pct=0.0), duration_s=20, seed=1)
    np.testing.assert_allclose(r3.events["gct_ms"], 240.0, rtol=1e-9)


def test_asymmetry():
    r = simulate(RunnerProfile(gct_ms=250.0, gct_cv=0.0, impact_cv=0.0, asymmetry_pct=10.0), duration_s=20, seed=2)
    ev = r.events
    left, right = ev[ev["side"] == 0], ev[ev["side"] == 1]
    np.testing.assert_allclose(left["gct_ms"], 250.0 * 1.05)
    np.testing.assert_allclose(right["gct_ms"], 250.0 * 0.95)
    assert left["impact_peak_g"].mean() > right["impact_peak_g"].mean() * 1.15


def test_impact_scales_with_speed_and_strike():
    peaks = {}
    for strike in ("rearfoot", "forefoot"):
        for v in (2.5, 4.0):
            r = simulate(RunnerProfile(speed_ms=v, foot_strike=strike), sites=("shank_left",), duration_s=15,
                         seed=3, noise_g=0.0, range_g=64.0, orientation="aligned")
            peaks[strike, v] = np.median(r.events["peak_accel_g_shank"])
    assert peaks["rearfoot", 4.0] > peaks["rearfoot", 2.5] * 1.2
    assert peaks["rearfoot", 2.5] > peaks["forefoot", 2.5] * 1.2
    r = simulate(RunnerProfile(impact_peak_g=12.0, impact_cv=0.0), duration_s=10, seed=1)
    np.testing.assert_allclose(r.events["impact_peak_g"], 12.0)


def test_true_peak_matches_signal():
    r = simulate(RunnerProfile(), sites=("shank_left", "sacrum"), duration_s=12, sampling_rate_hz=2000.0, seed=4,
                 noise_g=0.0, range_g=64.0, orientation="random", gyro=False)
    sig = r.signals["shank_left"]
    ev = r.events[r.events["side"] == 0]
    norm = np.linalg.norm(sig.acc_ms2, axis=1) / G0
    for e in ev[2:-2]:
        m = (sig.time_s >= e["ic_s"]) & (sig.time_s < e["ic_s"] + 0.12)
        assert norm[m].max() == pytest.approx(e["peak_accel_g_shank"], rel=0.03, abs=0.05)
    s = r.signals["sacrum"]
    norm = np.linalg.norm(s.acc_ms2, axis=1) / G0
    for e in r.events[2:-2]:
        m = (s.time_s >= e["ic_s"]) & (s.time_s < e["ic_s"] + 0.12)
        assert norm[m].max() == pytest.approx(e["peak_accel_g_sacrum"], rel=0.03, abs=0.05)


# ----------------------------------------------------------------------------------------- physics
@pytest.mark.parametrize("act", [2, 1])
def test_sacrum_vertical_mean_is_one_g_over_strides(rec, act):
    sig = rec.signals["sacrum"]
    ev = _steady(rec.events, act)
    a = ev["ic_s"][0]
    n = (len(ev) - 1) // 2 * 2  # whole strides
    b = ev["ic_s"][n]
    m = (sig.time_s >= a) & (sig.time_s < b)
    z = sig.acc_ms2[m, 2] / G0
    assert z.mean() == pytest.approx(1.0, abs=0.02)
    if act == 2:  # running: about 0 g in flight, 2-4 g peaks in stance
        assert z.min() < 0.05
        assert 2.0 < np.percentile(z, 99) < 4.5
    # horizontal: no net acceleration over whole strides at constant speed
    assert abs(sig.acc_ms2[m, 0].mean() / G0) < 0.03
    assert abs(sig.acc_ms2[m, 1].mean() / G0) < 0.02


def test_sacrum_ml_sign_convention(rec):
    """Left stance: medial GRF points to the right (-y); right stance: to the left (+y)."""
    sig = rec.signals["sacrum"]
    ev = _steady(rec.events, 2)
    y = sig.acc_ms2[:, 1] / G0
    means = {0: [], 1: []}
    for e in ev:
        m = (sig.time_s >= e["ic_s"]) & (sig.time_s < e["tc_s"])
        means[int(e["side"])].append(y[m].mean())
    assert np.all(np.array(means[0]) < -0.02)
    assert np.all(np.array(means[1]) > 0.02)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_standing_norm_is_one_g_any_orientation(seed):
    r = simulate(RunnerProfile(), sites=SITES, segments=[Segment("stand", 5.0)], seed=seed, noise_g=0.0,
                 orientation="random")
    for site, sig in r.signals.items():
        norm = np.linalg.norm(sig.acc_ms2, axis=1) / G0
        assert norm.mean() == pytest.approx(1.0, abs=0.01), site
        assert np.abs(sig.gyr_dps).max() < 5.0
        assert not np.allclose(sig.orientation, np.eye(3))
    assert len(r.events) == 0


def test_orientation_is_a_rotation_of_the_body_frame():
    kw = dict(sites=("foot_right", "sacrum"), duration_s=8, seed=9, noise_g=0.0, noise_dps=0.0, range_g=200.0)
    al = simulate(RunnerProfile(), orientation="aligned", **kw)
    rd = simulate(RunnerProfile(), orientation="random", **kw)
    for site in kw["sites"]:
        a, b = al.signals[site], rd.signals[site]
        R = b.orientation
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(b.acc_ms2, a.acc_ms2 @ R.T, atol=1e-9)
        np.testing.assert_allclose(b.gyr_dps, a.gyr_dps @ R.T, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(b.acc_ms2, axis=1), np.linalg.norm(a.acc_ms2, axis=1), atol=1e-9)
    # explicit matrix
    R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    ex = simulate(RunnerProfile(), orientation=R, **kw)
    np.testing.assert_allclose(ex.signals["sacrum"].acc_ms2, al.signals["sacrum"].acc_ms2 @ R.T, atol=1e-9)
    with pytest.raises(ValueError, match="rotation"):
        simulate(RunnerProfile(), orientation=np.diag([1.0, 1.0, -1.0]), **kw)


def test_gyro_only_where_requested():
    r = simulate(RunnerProfile(), sites=("sacrum", "shank_left", "foot_left"), duration_s=3, gyro=("shank_left",))
    assert r.signals["shank_left"].gyr_dps is not None
    assert r.signals["sacrum"].gyr_dps is None and r.signals["foot_left"].gyr_dps is None
    r = simulate(RunnerProfile(), sites=("sacrum",), duration_s=3, gyro=False)
    assert r.signals["sacrum"].gyr_dps is None
    st = SimulatorStream(RunnerProfile(), "sacrum", gyro=False)
    assert st.read(10)[1] is None


def test_shank_gyro_swing_peak_and_foot_flat_stance(rec):
    sig = rec.signals["shank_left"]
    ev = _steady(rec.events, 2)
    ev = ev[ev["side"] == 0]
    m = (sig.time_s >= ev["ic_s"][0]) & (sig.time_s < ev["ic_s"][-1])
    gy = sig.gyr_dps[m, 1]
    assert 350 < -gy.min() < 900  # swing: bottom of the shank swings forward (negative about +y left)
    foot = rec.signals["foot_left"]
    for e in ev:
        # running foot-flat is short: between the impact ringing and heel rise (30-40 % of stance)
        mid = (foot.time_s >= e["ic_s"] + 0.30 * e["gct_ms"] / 1e3) & (foot.time_s < e["ic_s"] + 0.40 * e["gct_ms"] / 1e3)
        a = foot.acc_ms2[mid] / G0
        assert np.abs(np.linalg.norm(a, axis=1) - 1.0).max() < 0.3  # flat foot: about gravity only
        assert np.abs(foot.gyr_dps[mid, 1]).max() < 70
        # while in swing the foot moves a lot
        sw = (foot.time_s >= e["tc_s"]) & (foot.time_s < e["tc_s"] + 0.2)
        assert np.abs(foot.gyr_dps[sw, 1]).max() > 300


# ----------------------------------------------------------------------------------------- sensor options
def test_clipping():
    r = simulate(RunnerProfile(impact_peak_g=14.0), sites=("shank_left",), duration_s=10, seed=1, range_g=8.0,
                 orientation="aligned", noise_g=0.0)
    sig = r.signals["shank_left"]
    assert sig.clipped.any()
    assert np.abs(sig.acc_ms2).max() <= 8.0 * G0 + 1e-9
    np.testing.assert_array_equal(sig.clipped, np.any(np.abs(sig.acc_ms2) >= 8.0 * G0 - 1e-9, axis=1))
    wide = simulate(RunnerProfile(impact_peak_g=14.0), sites=("shank_left",), duration_s=10, seed=1, range_g=64.0,
                    orientation="aligned", noise_g=0.0)
    assert not wide.signals["shank_left"].clipped.any()
    assert np.abs(wide.signals["shank_left"].acc_ms2).max() > 8.0 * G0


def test_noise_level():
    quiet = simulate(RunnerProfile(), segments=[Segment("stand", 10.0)], noise_g=0.0, seed=3, orientation="aligned")
    noisy = simulate(RunnerProfile(), segments=[Segment("stand", 10.0)], noise_g=0.05, seed=3, orientation="aligned")
    d = (noisy.signals["sacrum"].acc_ms2 - quiet.signals["sacrum"].acc_ms2) / G0
    assert d.std(axis=0) == pytest.approx([0.05] * 3, rel=0.05)
    assert abs(d.mean()) < 0.005


def test_rate_error_and_clock_drift():
    fs, ppm_rate, ppm_clk = 200.0, -40.0, 50.0
    r = simulate(RunnerProfile(), duration_s=60, sampling_rate_hz=fs, rate_error_ppm=ppm_rate,
                 clock_drift_ppm=ppm_clk, tick_hz=32768.0, gyro=False)
    sig = r.signals["sacrum"]
    np.testing.assert_allclose(np.diff(sig.time_s), 1.0 / (fs * (1 + ppm_rate * 1e-6)), rtol=1e-9)
    slope = np.polyfit(sig.time_s, sig.sensor_tick.astype(float), 1)[0]
    assert slope == pytest.approx(32768.0 * (1 + ppm_clk * 1e-6), rel=2e-7)
    assert sig.sensor_tick.dtype == np.int64 and np.all(np.diff(sig.sensor_tick) > 0)
    # default: tick = sample counter
    r0 = simulate(RunnerProfile(), duration_s=5, sampling_rate_hz=fs, gyro=False)
    np.testing.assert_array_equal(r0.signals["sacrum"].sensor_tick, np.arange(1000))


# ----------------------------------------------------------------------------------------- streaming
def test_stream_chunking_equals_simulate():
    kw = dict(sampling_rate_hz=250.0, seed=11, noise_g=0.01, orientation="random", range_g=8.0,
              rate_error_ppm=20.0, clock_drift_ppm=-30.0, tick_hz=32768.0)
    segs = [Segment("stand", 2.0), Segment("walk", 6.0), Segment("run", 12.0, {"cadence_spm": 180}),
            Segment("stand", 3.0)]
    whole = simulate(RunnerProfile(), sites=("shank_right",), segments=segs, **kw)
    sig = whole.signals["shank_right"]
    n = len(sig.time_s)
    st = SimulatorStream(RunnerProfile(), "shank_right", segments=segs, **kw)
    rng = np.random.default_rng(0)
    parts, done = [], 0
    while done < n:
        k = int(min(rng.choice([1, 3, 17, 250, 1111, 4100]), n - done))
        parts.append(st.read(k))
        done += k
    acc = np.concatenate([p[0] for p in parts])
    gyr = np.concatenate([p[1] for p in parts])
    t = np.concatenate([p[2] for p in parts])
    tick = np.concatenate([p[3] for p in parts])
    np.testing.assert_array_equal(acc, sig.acc_ms2)
    np.testing.assert_array_equal(gyr, sig.gyr_dps)
    np.testing.assert_array_equal(t, sig.time_s)
    np.testing.assert_array_equal(tick, sig.sensor_tick)
    ev = st.events_until(whole.duration_s)
    np.testing.assert_array_equal(ev["ic_s"], whole.events["ic_s"])
    np.testing.assert_array_equal(ev["peak_accel_g_shank"], whole.events["peak_accel_g_shank"])


def test_stream_bounded_memory_and_drain():
    st = SimulatorStream(RunnerProfile(), "sacrum", sampling_rate_hz=100.0, seed=1, max_history_steps=500)
    total = 0
    for _ in range(60):  # 20 minutes of running
        st.read(2000)
        assert len(st._steps) < 80
        total += len(st.drain_events())
    assert len(st._history) <= 500
    assert 1200 * 170 / 60 * 0.9 < total < 1200 * 170 / 60 * 1.1
    assert st.time_s_ == pytest.approx(1200.0)


def test_deterministic_and_seed_dependent():
    a = simulate(RunnerProfile(), duration_s=5, seed=1)
    b = simulate(RunnerProfile(), duration_s=5, seed=1)
    c = simulate(RunnerProfile(), duration_s=5, seed=2)
    np.testing.assert_array_equal(a.signals["sacrum"].acc_ms2, b.signals["sacrum"].acc_ms2)
    assert not np.array_equal(a.events["ic_s"], c.events["ic_s"])


def test_steps_for_site_matches_dsp_dtype(rec):
    from runform.dsp import STEP_DTYPE
    s = rec.steps_for_site("shank_left")
    assert s.dtype == STEP_DTYPE
    assert np.all(s["side"] == 0)
    np.testing.assert_array_equal(s["ic_s"], rec.events["ic_s"][rec.events["side"] == 0])


# ----------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("call, match", [
    (lambda: RunnerProfile(foot_strike="heel"), "foot_strike"),
    (lambda: RunnerProfile(gct_ms=500.0, cadence_spm=170), "gct_ms"),
    (lambda: Segment("sprint", 5.0), "activity"),
    (lambda: Segment("run", 5.0, {"cadense_spm": 170}), "unknown Segment override"),
    (lambda: simulate(RunnerProfile(), sites=("knee",), duration_s=1), "unknown site"),
    (lambda: simulate(RunnerProfile()), "duration_s"),
    (lambda: simulate(RunnerProfile(), duration_s=1, range_g=0.5), "range_g"),
])
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------------------- CLI
def test_cli_writes_csv_that_loads_back(tmp_path):
    from runform.server.cli import main
    out = tmp_path / "sim.csv"
    rc = main(["simulate", "--site", "foot_right", "--segments", "stand:2,run:8@175,stand:2", "--out", str(out),
               "--rate", "200", "--seed", "4", "--clock-drift-ppm", "40", "--tick-hz", "32768"])
    assert rc == 0
    data = np.genfromtxt(out, delimiter=",", names=True)
    assert set(("time_s", "sensor_tick", "acc_x_g", "acc_y_g", "acc_z_g", "gyr_x_dps", "clipped")) <= set(data.dtype.names)
    assert len(data) == 2400
    norm = np.sqrt(data["acc_x_g"] ** 2 + data["acc_y_g"] ** 2 + data["acc_z_g"] ** 2)
    assert norm[:300].mean() == pytest.approx(1.0, abs=0.02)
    ref = np.genfromtxt(tmp_path / "sim_ref.csv", delimiter=",", names=True, dtype=None, encoding="utf-8")
    assert {"ic_s", "tc_s", "side"} <= set(ref.dtype.names)
    assert len(ref) > 15 and set(ref["side"]) == {"L", "R"}
    assert np.all(ref["tc_s"] > ref["ic_s"])
    assert main(["simulate", "--out", str(tmp_path / "x.csv"), "--segments", "jog:5"]) == 2
