"""Accuracy on the real recordings (force plates / motion capture), streaming path, targets of issue #3.

These are the numbers docs/accuracy.md reports; the test fails if a change makes them worse than the targets.
"""
import pytest

from runform.server import validation as V


@pytest.fixture(scope="module")
def report(shared_data):
    return V.full_report(shared_data)


def test_sacrum_targets(report):
    a = report["sacrum"]["all"]
    assert a["recall"] >= 0.98 and a["precision"] >= 0.98
    assert a["gct"]["rmse"] <= 20.0
    assert a["cadence_abs_err_pct_mean"] <= 0.5
    assert a["vgrf"]["rmse"] <= 0.2  # body weights; literature ≈ 0.15


def test_shank_running_targets(report):
    a = report["shank"]["running"]
    assert a["recall"] >= 0.98 and a["precision"] >= 0.98
    assert a["ic"]["sd"] <= 8.0
    assert a["cadence_abs_err_pct_mean"] <= 0.5


def test_bias_calibration_transfers_across_subjects(report):
    """Offsets learnt without a subject still give that subject precise IC (leave-one-subject-out)."""
    for group, r in report["shank"]["running_leave_one_subject_out"].items():
        assert abs(r["ic"]["bias"]) < 10.0, group
        assert r["ic"]["sd"] < 8.0, group


def test_gyro_improves_foot_toe_off_on_real_data(report):
    f = report["foot"]
    assert f["gyro"]["tc"]["sd"] < f["acc_only"]["tc"]["sd"]
    assert f["gyro"]["recall"] >= 0.75  # turns in the 2 x 20 m walk are not all found


def test_every_running_target_met(report):
    """Issue #3's targets are for running. The report also scores shank WALKING against the same detection targets
    (walking recall 97.6 % misses 98 % and is shown as missed there); that row is checked to exist, not to pass."""
    running = [t for t in report["targets"] if "walking" not in t["what"]]
    assert len(running) >= 8
    missed = [t for t in running if not t["met"]]
    assert not missed, missed
    assert any("walking" in t["what"] for t in report["targets"])


def test_sacrum_walking_on_real_lower_back_data(report):
    """Walking ICs from a lower-back IMU against INDIP (mobgap example, 3 participants, streaming, as worn).

    Measured (defaults of dsp/_params.py): recall 0.735, precision 0.858, F1 0.79, IC SD 51.7 ms, straight-walking
    (Test5) recall 0.89, bout cadence error 1.3 % mean; leave-one-subject-out IC bias within ±3.1 ms. Thresholds a
    little looser than that.
    """
    w = report.get("sacrum_walking")
    if w is None:
        pytest.skip("walking_lowerback_mobgap_example (or SciPy, to read its .mat files) is missing")
    a = w["all"]
    assert a["n_ref"] >= 200
    assert a["recall"] >= 0.70 and a["precision"] >= 0.80 and a["f1"] >= 0.75
    assert abs(a["ic"]["bias"]) < 5.0 and a["ic"]["sd"] <= 55.0
    straight = w["by_test"]["Test5"]
    assert straight["recall"] >= 0.85 and straight["cadence_abs_err_pct_mean"] <= 3.0
    for r in w["leave_one_subject_out"].values():  # the calibrated offset transfers to a held-out participant
        assert abs(r["ic"]["bias"]) < 15.0


# ------------------------------------------------------------------ overground running (Grouvel 2023 subset)
import math  # noqa: E402

import numpy as np  # noqa: E402


def _synthetic_foot(ics, gct_s=0.25, stride_s=0.7, fs=100.0, duration_s=2.2, lag_s=0.04):
    """Heel, forefoot and toe (mm, z up) and knee angle of a rearfoot striker with known contacts: in swing the
    markers follow an arc and move forward at up to ~5 m/s; each lands with a downward velocity (an impact), the
    forefoot ``lag_s`` after the heel; the knee is most extended at toe-off."""
    t = np.arange(int(duration_s * fs)) / fs
    heel = np.zeros((t.size, 3))
    fore = np.zeros((t.size, 3))
    knee = np.full(t.size, 140.0)
    ics = np.asarray(ics)
    tcs = ics + gct_s
    for i, tt in enumerate(t):
        # latest contact at or before tt (contacts repeat every stride_s, also before the first listed one)
        k = math.floor((tt - ics[0]) / stride_s)
        ic = ics[0] + k * stride_s
        tc = ic + gct_s
        sw = stride_s - gct_s
        if tt < tc:  # stance: foot flat, heel then forefoot down
            heel[i, 2] = 50.0
            fore[i, 2] = 40.0 if tt >= ic + lag_s else 40.0 + 30.0 * (ic + lag_s - tt) / lag_s
            heel[i, 0] = fore[i, 0] = 2000.0 * k
        else:
            ph = (tt - tc) / sw
            heel[i, 2] = 50.0 + 300.0 * math.sin(math.pi * ph)
            fore[i, 2] = 40.0 + 30.0 + 200.0 * math.sin(math.pi * ph) if ph > 0.05 else 40.0 + 600.0 * ph
            heel[i, 0] = fore[i, 0] = 2000.0 * k + 2000.0 * (ph - math.sin(2 * math.pi * ph) / (2 * math.pi))
        knee[i] = 150.0 + 20.0 * math.cos(2 * math.pi * (tt - tc) / stride_s)
    fore[:, 0] += 150.0
    toe = fore + np.array([40.0, 0.0, 5.0])
    truth = np.column_stack([ics, tcs])
    return heel, fore, toe, knee, truth


def test_marker_contacts_find_known_contacts_on_a_synthetic_foot():
    """Complete contacts are found within one frame (10 ms) of the truth; contacts cut by the trial's ends are
    left out and counted, not guessed."""
    heel, fore, toe, knee, truth = _synthetic_foot([0.505, 1.205, 1.905], duration_s=2.3)
    got, left_out = V.marker_contacts(heel, fore, toe, knee, 100.0)
    assert got.shape == (3, 2)
    assert np.abs(got[:, 0] - truth[:, 0]).max() <= 0.0105  # IC: impact of the landing heel
    assert np.abs(got[:, 1] - truth[:, 1]).max() <= 0.0105  # TC: peak knee extension
    assert left_out == 1  # the stance under way at t = 0 (contact from -0.195 s) is cut by the start
    # a trial that ends mid-stance: that contact is left out, the complete ones stay
    n_cut = int(2.0 * 100)
    got2, left2 = V.marker_contacts(heel[:n_cut], fore[:n_cut], toe[:n_cut], knee[:n_cut], 100.0)
    assert got2.shape[0] == 2 and left2 == left_out + 1


def test_imu_clock_check_tells_a_synchronous_stream_from_a_time_squeezed_one():
    fs = 100.0
    t = np.arange(160) / fs
    rng = np.random.default_rng(3)
    rate = lambda tt: 400 * np.sin(2 * np.pi * tt / 0.72) + 150 * np.sin(2 * np.pi * tt / 0.24 + 0.5)
    ref = rate(t) + 10 * rng.standard_normal(t.size)
    same = rate(t + 0.03) + 10 * rng.standard_normal(t.size)  # 30 ms offset: same clock
    ok = V.imu_clock_check(ref, same, fs)
    assert ok["r_nominal"] >= V.SYNC_MIN_R and abs(ok["time_scale"] - 1.0) <= 0.15
    squeezed = rate(0.2 + t * 5.0) + 10 * rng.standard_normal(t.size)  # 5x the real time in the same rows
    bad = V.imu_clock_check(ref, squeezed, fs)
    assert bad["r_nominal"] < V.SYNC_MIN_R
    assert abs(bad["time_scale"] - 5.0) <= 0.3 and bad["r_best"] >= V.SYNC_MIN_R


@pytest.fixture(scope="module")
def overground(shared_data):
    o = V.evaluate_overground(shared_data)
    if o is None:
        pytest.skip(f"{V.OVERGROUND} is missing")
    return o


def test_overground_marker_reference_is_plausible_running(overground, shared_data):
    """Every trial (1.1-2.1 s of running) yields complete contacts that alternate L/R without overlap, with
    running contact times; and the marker events agree with the force plates to within two 100 Hz frames."""
    for f in sorted((shared_data / V.OVERGROUND / "synchronised").glob("*.csv")):
        tr = V.load_overground_trial(f)
        ref, _ = V.overground_reference(tr)
        assert 2 <= ref.shape[0] <= 6, f.stem  # one to two strides in the capture volume
        assert np.all(np.diff(ref[:, 2]) != 0), f.stem  # L and R alternate
        assert np.all(ref[1:, 0] > ref[:-1, 1]), f.stem  # a flight between contacts: running
        gct = (ref[:, 1] - ref[:, 0]) * 1000
        assert np.all((gct > 120) & (gct < 400)), (f.stem, gct)
    fp = overground["force_plates"]
    assert fp["n_plate_contacts"] >= 3 and fp["n_matched"] == fp["n_plate_contacts"]
    for c in fp["contacts"]:
        assert abs(c["ic_err_ms"]) <= 20.0 and abs(c["tc_err_ms"]) <= 20.0, c


def test_read_c3d_matches_the_csv_markers_and_has_1khz_plates(shared_data):
    folder = shared_data / V.OVERGROUND
    paths = sorted((folder / "mocap_c3d").glob("*.c3d"))
    if not paths:
        pytest.skip("no .c3d trials")
    c = V.read_c3d(paths[0])
    assert c.point_rate_hz == 100.0 and c.analog_rate_hz == 1000.0
    assert c.analog.shape[0] == 10 * c.points.shape[0]
    tr = V.load_overground_trial(folder / "synchronised" / f"{paths[0].stem}.csv")
    j = c.point_labels.index("LHEE")
    np.testing.assert_allclose(c.points[:, j, :], tr["markers"]["L"]["HEE"], atol=1e-3)
    contacts = V.force_plate_contacts(c)
    assert contacts.shape[0] >= 1 and np.all(contacts[:, 2] > 500.0)  # a running contact loads > 500 N


def test_overground_imu_is_only_evaluated_on_the_markers_clock(overground):
    """The IMU columns of this folder are not on the markers' clock (a time-squeezed stretch of recording):
    the clock check must refuse them rather than report accuracy numbers computed on unaligned data."""
    for t in overground["per_trial"]:
        assert t["imu_in_sync"] == (t["imu_r_nominal"] >= V.SYNC_MIN_R)
    if overground["n_trials_in_sync"] == 0:
        assert overground["imu"] is None
    else:
        assert set(overground["imu"]) >= {"sacrum", "foot", "foot + gyro", "shank", "shank + gyro"}
