"""The streaming detector against the simulator's exact truth (any mounting, activity changes, clipping)."""
import numpy as np
import pytest

from runform.dsp import (ACTIVITY_RUNNING, ACTIVITY_STANDING, ACTIVITY_WALKING, SIDE_LEFT, SIDE_RIGHT,
                         DetectorInputError, GaitEventDetector)
from runform.firmware_bridge.simulator import RunnerProfile, Segment, simulate

FS = 400.0


def stream(site, sig, det=None, chunk=20, **kw):
    det = det or GaitEventDetector(site, FS, **kw)
    out, acts = [], []
    for s in range(0, len(sig.time_s), chunk):
        g = None if sig.gyr_dps is None else sig.gyr_dps[s:s + chunk]
        out.append(det.update(sig.acc_ms2[s:s + chunk], sig.time_s[s:s + chunk], g))
        acts.append((sig.time_s[min(s + chunk, len(sig.time_s)) - 1], det.activity_))
    return np.concatenate(out), np.array(acts), det


def match(det_ic, true_ic, tol_s=0.06):
    err = np.array([det_ic[np.argmin(np.abs(det_ic - t))] - t for t in true_ic]) if det_ic.size else np.array([])
    return err[np.abs(err) <= tol_s] if err.size else err


@pytest.fixture(scope="module")
def session():
    segs = [Segment("stand", 5.0), Segment("run", 40.0), Segment("walk", 20.0), Segment("stand", 8.0)]
    return simulate(RunnerProfile(cadence_spm=172.0, speed_ms=3.4, asymmetry_pct=0.0), segments=segs,
                    sites=("sacrum", "shank_left", "foot_right"), sampling_rate_hz=FS, seed=11,
                    orientation="random", range_g=8.0)


def test_sacrum_running_steps_sides_and_cadence(session):
    sig = session.signals["sacrum"]
    truth = session.events[(session.events["ic_s"] > 7) & (session.events["ic_s"] < 44)]
    steps, acts, _ = stream("sacrum", sig)
    run = steps[(steps["ic_s"] > 7) & (steps["ic_s"] < 44)]
    err = match(run["ic_s"], truth["ic_s"])
    assert err.size >= 0.98 * truth.size
    assert abs(np.median(err)) < 0.015
    # left/right from one sacral sensor under a random mounting
    idx = [np.argmin(np.abs(truth["ic_s"] - t)) for t in run["ic_s"]]
    assert np.mean(truth["side"][idx] == run["side"]) >= 0.98
    cad = np.nanmedian(run["cadence_spm"])
    assert cad == pytest.approx(np.median(truth["cadence_spm"]), rel=0.02)
    assert (run["activity"] == ACTIVITY_RUNNING).all()
    assert np.isfinite(run["peak_vgrf_bw"]).all() and (run["peak_vgrf_bw"] > 1.5).all()
    # standing at the start and the end, walking (no flight phase) in between
    at = lambda t: acts[np.argmin(np.abs(acts[:, 0] - t)), 1]  # noqa: E731
    assert at(4.5) == ACTIVITY_STANDING and at(30) == ACTIVITY_RUNNING
    assert at(60) == ACTIVITY_WALKING and at(72) == ACTIVITY_STANDING


@pytest.mark.parametrize("site,side", [("shank_left", SIDE_LEFT), ("foot_right", SIDE_RIGHT)])
def test_limb_running_then_walking(session, site, side):
    sig = session.signals[site]
    ev = session.events[session.events["side"] == side]
    steps, _, _ = stream(site, sig, range_g=8.0)
    assert (steps["side"] == side).all()
    for lo, hi, activity in ((7, 44, ACTIVITY_RUNNING), (48, 64, ACTIVITY_WALKING)):
        truth = ev[(ev["ic_s"] > lo) & (ev["ic_s"] < hi)]
        got = steps[(steps["ic_s"] > lo) & (steps["ic_s"] < hi)]
        err = match(got["ic_s"], truth["ic_s"])
        assert err.size >= truth.size - 1, (lo, hi)
        assert abs(np.median(err)) < 0.02
        assert np.mean(got["activity"] == activity) > 0.85
    # 8 g range: running impacts clip and say so
    running = steps[(steps["ic_s"] > 7) & (steps["ic_s"] < 44)]
    assert running["clipped"].mean() > 0.5
    assert (running["peak_accel_g"] >= 7.0).mean() > 0.5


def test_gyro_toe_off_is_precise_on_simulated_running():
    rec = simulate(RunnerProfile(cadence_spm=168.0, speed_ms=3.2), sites=("foot_left",), duration_s=40.0,
                   sampling_rate_hz=FS, seed=5, orientation="random")
    sig = rec.signals["foot_left"]
    ev = rec.events[rec.events["side"] == SIDE_LEFT]
    steps, _, det = stream("foot_left", sig)
    assert det.use_gyro  # decided from the first chunk, which carried gyro samples
    e = []
    for s in steps:
        k = np.argmin(np.abs(ev["ic_s"] - s["ic_s"]))
        if abs(ev["ic_s"][k] - s["ic_s"]) < 0.06 and np.isfinite(s["tc_s"]):
            e.append(s["tc_s"] - ev["tc_s"][k])
    e = np.asarray(e)
    assert e.size > 40
    assert np.median(np.abs(e - np.median(e))) < 0.003
    assert np.mean(np.abs(e - np.median(e)) < 0.02) > 0.95


def test_gyro_mode_requires_gyro():
    det = GaitEventDetector("foot", FS, use_gyro=True)
    with pytest.raises(DetectorInputError, match="gyr_dps is required"):
        det.update(np.zeros((20, 3)), np.arange(20) / FS)


@pytest.mark.parametrize("kwargs,match_", [
    (dict(site="knee", sampling_rate_hz=500.0), "unknown sensor site"),
    (dict(site="shank", sampling_rate_hz=50.0), "too low"),
    (dict(site="sacrum", sampling_rate_hz=float("nan")), "finite"),
])
def test_constructor_errors(kwargs, match_):
    with pytest.raises(DetectorInputError, match=match_):
        GaitEventDetector(**kwargs)


def test_update_errors():
    det = GaitEventDetector("sacrum", FS)
    with pytest.raises(DetectorInputError, match="shape"):
        det.update(np.zeros((10, 2)), np.arange(10) / FS)
    with pytest.raises(DetectorInputError, match="NaN"):
        a = np.zeros((10, 3))
        a[3, 1] = np.nan
        det.update(a, np.arange(10) / FS)
    assert det.n_samples_ == 0  # rejected chunks change nothing


def test_sample_rate_error_and_drift_are_absorbed_by_timestamps():
    """The sensor runs 0.3 % fast: events follow the sample times given, not the nominal rate."""
    rec = simulate(RunnerProfile(cadence_spm=176.0), sites=("sacrum",), duration_s=30.0, sampling_rate_hz=FS,
                   seed=2, rate_error_ppm=3000.0, clock_drift_ppm=80.0, orientation="random")
    sig = rec.signals["sacrum"]
    steps, _, _ = stream("sacrum", sig)
    err = match(steps["ic_s"], rec.events["ic_s"])
    assert err.size >= 0.98 * rec.events.size - 2
    assert abs(np.median(err)) < 0.015


def test_sacrum_walking_steps_after_running(session):
    """The walk after the run: one sacral sensor gives walking ICs, walking cadence, no invented GCT/flight,
    and no contact is reported twice at the run -> walk handover."""
    sig = session.signals["sacrum"]
    steps, acts, det = stream("sacrum", sig)
    truth = session.events[(session.events["ic_s"] > 46.5) & (session.events["ic_s"] < 64.5)]
    walk = steps[(steps["ic_s"] > 46.5) & (steps["ic_s"] < 64.5)]
    assert (walk["activity"] == ACTIVITY_WALKING).all()
    err = match(walk["ic_s"], truth["ic_s"], tol_s=0.15)
    assert err.size >= 0.9 * truth.size
    assert abs(np.median(err)) < 0.03
    assert walk.size <= truth.size + 1  # at most one extra step
    cad = np.nanmedian(walk["cadence_spm"])
    assert cad == pytest.approx(np.median(truth["cadence_spm"]), rel=0.05)
    for name in ("gct_ms", "flight_ms", "tc_s", "duty_factor", "peak_vgrf_bw"):
        assert np.isnan(walk[name]).all(), name  # not measured in walking: NaN, never invented
    assert (walk["side"] == -1).all()
    # the emitted stream is strictly increasing in IC with no two contacts closer than a running step
    assert (np.diff(steps["ic_s"]) > 0.25).all()
    # look-ahead: each walking step is emitted within the stated delay after its (uncorrected) IC
    fs = FS
    delay_ms = (walk["emitted_index"] - (walk["ic_index"] + det.params.walk_ic_bias_ms * fs / 1000)) * 1000 / fs
    assert (delay_ms <= det.walk_look_ahead_ms + 1e-6).all() and det.walk_look_ahead_ms <= 300.0


def test_sacrum_walking_off_by_parameter(session):
    from runform.dsp import params_for

    sig = session.signals["sacrum"]
    steps, _, _ = stream("sacrum", sig, params=params_for("sacrum", walking_ics=False))
    assert (steps["activity"] == ACTIVITY_RUNNING).all()
    assert not ((steps["ic_s"] > 47) & (steps["ic_s"] < 64)).any()


# ------------------------------------------------------------------ limb sites: foot strikes, rates, pace changes
def limb_scores(steps, truth, lo_s, hi_s, tol_s=0.06):
    """Recall (true contacts with a detected IC within tol) and precision (detected ICs with a true contact)."""
    true_ic = truth["ic_s"][(truth["ic_s"] > lo_s) & (truth["ic_s"] < hi_s)]
    got = steps["ic_s"][(steps["ic_s"] > lo_s) & (steps["ic_s"] < hi_s)]
    # a contact just inside the interval may be detected a few ms outside it
    near = steps["ic_s"][(steps["ic_s"] > lo_s - tol_s) & (steps["ic_s"] < hi_s + tol_s)]
    recall = np.mean([np.abs(near - t).min() <= tol_s if near.size else False for t in true_ic])
    precision = np.mean([np.abs(truth["ic_s"] - t).min() <= tol_s for t in got]) if got.size else 0.0
    return recall, precision, true_ic.size


@pytest.mark.parametrize("fs", [200.0, 500.0, 1000.0])
@pytest.mark.parametrize("strike", ["rearfoot", "midfoot", "forefoot"])
@pytest.mark.parametrize("site", ["foot_left", "shank_left"])
def test_limb_running_every_foot_strike_and_rate(site, strike, fs):
    """Soft mid/forefoot impacts on an instep sensor are no sharper than the push-off: the detector must still
    take the impact (not the push-off 250 ms later), at every sampling rate; 200 spm at 200 Hz."""
    cadence = 200.0 if fs == 200.0 else 170.0
    rec = simulate(RunnerProfile(cadence_spm=cadence, foot_strike=strike, speed_ms=3.0), sites=(site,),
                   segments=[Segment("run", 20.0)], sampling_rate_hz=fs, seed=1, orientation="random", range_g=16.0)
    sig = rec.signals[site]
    det = GaitEventDetector(site, fs, range_g=16.0)
    steps = det.update(sig.acc_ms2, sig.time_s, sig.gyr_dps)  # whole array: chunking is tested elsewhere
    recall, precision, n_true = limb_scores(steps, rec.events[rec.events["side"] == SIDE_LEFT], 3.0, 20.0)
    assert n_true > 20
    assert recall >= 0.95 and precision >= 0.98, (recall, precision)


@pytest.fixture(scope="module")
def run_walk_run():
    segs = [Segment("run", 15.0), Segment("walk", 20.0), Segment("run", 20.0)]
    return simulate(RunnerProfile(cadence_spm=172.0), segments=segs, sites=("foot_left", "shank_left"),
                    sampling_rate_hz=FS, seed=1, orientation="random")


@pytest.mark.parametrize("site,gyro", [("foot_left", False), ("foot_left", True), ("shank_left", False)])
def test_limb_regains_running_after_walking(run_walk_run, site, gyro):
    """After 20 s of walking the learned stride is a walking one (longer than a running stride): the first
    running contacts fall inside the old toe-off window / refractory time and must still be found."""
    sig = run_walk_run.signals[site]
    det = GaitEventDetector(site, FS, use_gyro=gyro)
    steps = det.update(sig.acc_ms2, sig.time_s, sig.gyr_dps if gyro else None)
    truth = run_walk_run.events[run_walk_run.events["side"] == SIDE_LEFT]
    recall, precision, n_true = limb_scores(steps, truth, 36.0, 55.0)
    assert n_true > 20
    assert recall >= 0.95 and precision >= 0.98, (recall, precision)


@pytest.mark.parametrize("strike,gyro", [("forefoot", False), ("forefoot", True), ("rearfoot", True)])
def test_limb_kernel_rest_rules_match_twin(strike, gyro):
    """The foot's rest rules (a rested contact is kept; the next contact may end the toe-off window early)
    in the numba kernel and its plain twin, on input that exercises them (forefoot, run -> walk -> run)."""
    from runform.dsp import _detect as K
    from runform.dsp._filters import sosfilt_kernel, sos_steady_state
    from runform.dsp._motion import row_norm_kernel
    from runform.dsp._orientation import orientation_init, orientation_kernel
    from tests.dsp import naive

    fs = 200.0
    segs = [Segment("run", 8.0), Segment("walk", 10.0), Segment("run", 10.0)]
    rec = simulate(RunnerProfile(cadence_spm=172.0, foot_strike=strike), segments=segs, sites=("foot_left",),
                   sampling_rate_hz=fs, seed=2, orientation="random")
    sig = rec.signals["foot_left"]
    det = GaitEventDetector("foot_left", fs)
    acc = np.ascontiguousarray(sig.acc_ms2)
    comps, _ = orientation_kernel(acc, det._alpha_g, det._alpha_c, orientation_init())
    norm, maxabs = comps[3].copy(), comps[4].copy()
    jerk = det._jerk(acc)
    if gyro:
        rate = row_norm_kernel(np.ascontiguousarray(sig.gyr_dps))
        tc_sig = -sosfilt_kernel(det._sos, rate, sos_steady_state(det._sos, rate[0]))[0]
        kp = det._kparams_gyro
    else:
        tc_sig = sosfilt_kernel(det._sos, comps[1].copy(), sos_steady_state(det._sos, comps[1][0]))[0]
        kp = det._kparams
    _, ev = K.limb_kernel(kp, norm, jerk, tc_sig, maxabs, K.limb_init(kp))
    ref = naive.LimbTwin(kp).run(norm, jerk, tc_sig, maxabs)
    np.testing.assert_allclose(ev, ref, rtol=1e-9, atol=1e-9)
    # the rules are exercised: without them the same input gives other events
    off = kp.copy()
    off[K.LP_QUIET_G] = 0.0
    _, ev_off = K.limb_kernel(off, norm, jerk, tc_sig, maxabs, K.limb_init(off))
    assert ev.shape != ev_off.shape or not np.allclose(ev, ev_off, equal_nan=True)
    truth = rec.events[rec.events["side"] == SIDE_LEFT]
    assert ev.shape[0] >= 0.95 * truth.size - 2
