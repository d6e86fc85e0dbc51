"""`runform analyze`: the JSON contract, and clear errors (never a traceback) on bad input."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.dsp.conftest import synthetic_limb, synthetic_running

G0 = 9.80665


def analyze(path, *args):
    proc = subprocess.run([sys.executable, "-m", "runform.server.cli", "analyze", str(path), *args, "--json"],
                          capture_output=True, text=True, timeout=120)
    return proc


def write_csv(path, header, rows):
    with open(path, "w") as fh:
        fh.write(",".join(header) + "\n")
        for r in rows:
            fh.write(",".join("" if (isinstance(v, float) and np.isnan(v)) else repr(float(v)) for v in r) + "\n")
    return path


@pytest.fixture
def running_csv(tmp_path):
    t, acc, truth = synthetic_running(duration_s=20.0, fs=500.0)
    return write_csv(tmp_path / "run.csv", ["time_s", "acc_x_g", "acc_y_g", "acc_z_g"],
                     np.column_stack([t + 100.0, acc / G0])), truth


def test_contract_on_synthetic_sacrum(running_csv):
    path, truth = running_csv
    proc = analyze(path, "--site", "sacrum", "--mass-kg", "70")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # exactly one JSON object
    assert set(out) >= {"site", "sampling_rate_hz", "steps", "summary", "warnings"}
    assert out["site"] == "sacrum" and abs(out["sampling_rate_hz"] - 500.0) < 1e-6
    steps = out["steps"]
    assert len(steps) >= len(truth) - 3
    for key in ("ic_s", "tc_s", "side", "gct_ms", "flight_ms", "peak_accel_g", "clipped", "cadence_spm",
                "loading_rate_gps", "peak_vgrf_bw", "peak_vgrf_n"):
        assert key in steps[5], key
    # times are on the file's own clock (the file starts at 100 s)
    ics = np.array([s["ic_s"] for s in steps])
    assert ics.min() > 100.0
    nearest = np.array([np.min(np.abs(truth[:, 0] + 100.0 - ic)) for ic in ics])
    assert np.median(nearest) < 0.04
    assert out["summary"]["cadence_spm"] == pytest.approx(170.0, rel=0.03)
    sides = [s["side"] for s in steps[4:]]
    assert set(sides) <= {"L", "R"} and all(a != b for a, b in zip(sides, sides[1:]))


def test_real_sacrum_file_with_named_body_axes(shared_data):
    proc = analyze(shared_data / "sacrum_treadmill_alcantara2022/trial02.csv", "--site", "sacrum")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["axes"]["frame"] == "body"
    assert 12 <= len(out["steps"]) <= 16
    assert any("only 2 acceleration axes" in w for w in out["warnings"])


def test_clipping_is_reported(shared_data):
    out = json.loads(analyze(shared_data / "shank_treadmill_bach2022/trial01.csv", "--site", "shank").stdout)
    assert any("clipped" in w for w in out["warnings"])
    assert sum(s["clipped"] for s in out["steps"]) > 10


OPTION_CASES = {  # case -> extra arguments (the file itself is fine)
    "mass_nan": ["--mass-kg", "nan"], "mass_inf": ["--mass-kg", "inf"], "mass_negative": ["--mass-kg", "-70"],
    "mass_zero": ["--mass-kg", "0"], "mass_text": ["--mass-kg", "seventy"],
    "range_negative": ["--range-g", "-1"], "range_too_small": ["--range-g", "0.5"], "range_nan": ["--range-g", "nan"],
    "axes_twice": ["--axes", "v=acc_x_g,v=acc_y_g"], "axes_same_column": ["--axes", "v=acc_x_g,ap=acc_x_g"],
}


BAD_INPUT_CASES = [
    ("missing_time", "no 'time_s' column"),
    ("no_acc", "no acceleration columns"),
    ("backwards", "time goes backwards"),
    ("duplicate", "duplicated time"),
    ("long_nan_gap", "consecutive samples without acceleration"),
    ("low_rate", "too low"),
    ("not_csv", "malformed CSV"),
    ("not_a_number", "malformed CSV"),
    ("empty", "empty"),
    ("header_only", "only 0 samples"),
    ("directory", "is a directory"),
    ("mass_nan", "body mass must be a positive finite number"),
    ("mass_inf", "body mass must be a positive finite number"),
    ("mass_negative", "body mass must be a positive finite number"),
    ("mass_zero", "body mass must be a positive finite number"),
    ("mass_text", "is not a number"),
    ("range_negative", "accelerometer range must be"),
    ("range_too_small", "accelerometer range must be"),
    ("range_nan", "accelerometer range must be"),
    ("axes_twice", "--axes names 'v' twice"),
    ("axes_same_column", "for two axes"),
]


def make_case_file(tmp_path, case):
    """The input file of one bad-input case (the options cases get a good file)."""
    t = np.arange(2000) / 500.0
    acc = np.tile([0.0, 0.0, 1.0], (2000, 1))
    p = tmp_path / f"{case}.csv"
    if case in OPTION_CASES:
        write_csv(p, ["time_s", "acc_x_g", "acc_y_g", "acc_z_g"], np.column_stack([t, acc]))
    elif case == "header_only":
        p.write_text("time_s,acc_x_g,acc_y_g,acc_z_g\n")
    elif case == "directory":
        p = tmp_path / "a_folder"
        p.mkdir()
    elif case == "missing_time":
        write_csv(p, ["t", "acc_x_g", "acc_y_g", "acc_z_g"], np.column_stack([t, acc]))
    elif case == "no_acc":
        write_csv(p, ["time_s", "force_n"], np.column_stack([t, t]))
    elif case == "backwards":
        tt = t.copy(); tt[500] = tt[400]  # noqa: E702
        write_csv(p, ["time_s", "acc_x_g", "acc_y_g", "acc_z_g"], np.column_stack([tt, acc]))
    elif case == "duplicate":
        tt = t.copy(); tt[501] = tt[500]  # noqa: E702
        write_csv(p, ["time_s", "acc_x_g", "acc_y_g", "acc_z_g"], np.column_stack([tt, acc]))
    elif case == "long_nan_gap":
        a = acc.copy(); a[300:600] = np.nan  # noqa: E702
        write_csv(p, ["time_s", "acc_x_g", "acc_y_g", "acc_z_g"], np.column_stack([t, a]))
    elif case == "low_rate":
        write_csv(p, ["time_s", "acc_x_g", "acc_y_g", "acc_z_g"], np.column_stack([np.arange(2000) / 40.0, acc]))
    elif case == "not_csv":
        p.write_text("time_s,acc_x_g,acc_y_g,acc_z_g\n0,1,2\nhello,world\n")
    elif case == "not_a_number":
        p.write_text("time_s,acc_x_g,acc_y_g,acc_z_g\n0,1,2,3\n0.002,1,two,3\n")
    elif case == "empty":
        p.write_text("")
    return p


@pytest.mark.parametrize("case,message", BAD_INPUT_CASES)
def test_bad_input_gives_clear_error(tmp_path, case, message):
    p = make_case_file(tmp_path, case)
    proc = analyze(p, "--site", "shank", *OPTION_CASES.get(case, []))
    assert proc.returncode == 2
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("reader", ["pyarrow", "numpy"])
@pytest.mark.parametrize("case,message", [c for c in BAD_INPUT_CASES if c[0] not in OPTION_CASES and c[0] != "low_rate"])
def test_both_csv_readers_refuse_bad_files_alike(tmp_path, case, message, reader):
    """`runform analyze` reads with pyarrow; NumPy's reader is the fallback without it: same errors."""
    from runform.firmware_bridge.files import InputFileError, load_csv

    with pytest.raises(InputFileError, match=re.escape(message)):
        load_csv(make_case_file(tmp_path, case), reader=reader)


def test_both_csv_readers_give_the_same_recording(tmp_path, shared_data):
    """Values (NaN gaps, blank cells, 'nan', BOM, CRLF, padded numbers), warnings and the detected clipping range
    are identical whichever reader parses the file."""
    from runform.firmware_bridge.files import load_csv

    t, acc, _ = synthetic_limb(duration_s=10.0)
    a = acc / G0
    a[1000:1005] = np.nan
    p = write_csv(tmp_path / "gaps.csv", ["time_s", "acc_x_g", "acc_y_g", "acc_z_g"], np.column_stack([t, a]))
    odd = tmp_path / "odd.csv"
    lines = p.read_text().splitlines()
    lines[7] = lines[7].replace(",", ", ", 1)  # a padded number
    lines[9] = ",".join(v if k != 2 else "nan" for k, v in enumerate(lines[9].split(",")))
    odd.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    files = [p, odd, shared_data / "shank_treadmill_bach2022/trial01.csv",
             shared_data / "sacrum_treadmill_alcantara2022/trial02.csv"]
    for f in files:
        fast, slow = load_csv(f, reader="pyarrow"), load_csv(f, reader="numpy")
        np.testing.assert_array_equal(fast.time_s, slow.time_s)
        np.testing.assert_array_equal(fast.acc_ms2, slow.acc_ms2)
        assert fast.warnings == slow.warnings and fast.range_g_detected == slow.range_g_detected
        assert fast.acc_columns == slow.acc_columns and fast.body_frame == slow.body_frame


def test_excel_bom_header_is_read(tmp_path):
    t, acc, _ = synthetic_limb(duration_s=10.0)
    p = write_csv(tmp_path / "plain.csv", ["time_s", "acc_x_g", "acc_y_g", "acc_z_g"], np.column_stack([t, acc / G0]))
    bom = tmp_path / "excel.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    plain, excel = analyze(p, "--site", "shank"), analyze(bom, "--site", "shank")
    assert excel.returncode == 0, excel.stderr
    a, b = json.loads(plain.stdout), json.loads(excel.stdout)
    assert b["steps"] and b["steps"] == a["steps"] and b["axes"] == a["axes"]


def test_sacrum_without_ml_axis_warns_that_sides_are_unknown(tmp_path):
    t, acc, _ = synthetic_running(duration_s=20.0, fs=500.0, tilt=False)  # columns (ap, ml, v)
    a = acc / G0
    two = write_csv(tmp_path / "two_axes.csv", ["time_s", "acc_v_g", "acc_ap_g"],
                    np.column_stack([t, a[:, 2], a[:, 0]]))
    out = json.loads(analyze(two, "--site", "sacrum").stdout)
    assert out["steps"] and all(s["side"] is None for s in out["steps"])
    assert any("medio-lateral" in w for w in out["warnings"])
    three = write_csv(tmp_path / "three_axes.csv", ["time_s", "acc_v_g", "acc_ap_g", "acc_ml_g"],
                      np.column_stack([t, a[:, 2], a[:, 0], a[:, 1]]))
    full = json.loads(analyze(three, "--site", "sacrum").stdout)  # with the ML axis: sides, no such warning
    assert not any("medio-lateral" in w for w in full["warnings"])
    assert {s["side"] for s in full["steps"][4:]} == {"L", "R"}
    # vertical + ML without AP: the ML column keeps its place (it is not taken as AP), sides are found
    v_ml = write_csv(tmp_path / "v_ml.csv", ["time_s", "acc_v_g", "acc_ml_g"], np.column_stack([t, a[:, 2], a[:, 1]]))
    out = json.loads(analyze(v_ml, "--site", "sacrum").stdout)
    assert not any("medio-lateral" in w for w in out["warnings"])
    assert {s["side"] for s in out["steps"][4:]} == {"L", "R"}


def test_short_nan_gap_is_interpolated_with_warning(tmp_path):
    t, acc, _ = synthetic_limb(duration_s=10.0)
    a = acc / G0
    a[1000:1005] = np.nan
    p = write_csv(tmp_path / "gap.csv", ["time_s", "acc_x_g", "acc_y_g", "acc_z_g"], np.column_stack([t, a]))
    proc = analyze(p, "--site", "shank_right")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert any("interpolated" in w for w in out["warnings"])
    assert out["steps"] and all(s["side"] == "R" for s in out["steps"])


def test_not_running_is_a_warning_not_a_crash(tmp_path):
    t = np.arange(5000) / 500.0
    rng = np.random.default_rng(0)
    acc = np.tile([0.1, 0.2, 0.97], (5000, 1)) + 0.005 * rng.standard_normal((5000, 3))
    p = write_csv(tmp_path / "still.csv", ["time_s", "ax_g", "ay_g", "az_g"], np.column_stack([t, acc]))
    proc = analyze(p, "--site", "sacrum")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["steps"] == [] and any("no steps found" in w for w in out["warnings"])


def test_axes_option(tmp_path, shared_data):
    proc = analyze(shared_data / "sacrum_treadmill_alcantara2022/trial02.csv", "--site", "sacrum",
                   "--axes", "v=acc_v_g,ap=acc_ap_g")
    assert proc.returncode == 0
    proc = analyze(shared_data / "sacrum_treadmill_alcantara2022/trial02.csv", "--site", "sacrum",
                   "--axes", "v=nope")
    assert proc.returncode == 2 and "missing column" in proc.stderr


def test_every_subcommand_has_help():
    from runform.server.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"analyze", "warmup", "demo", "validate"} <= set(sub.choices)
    for name in sub.choices:
        proc = subprocess.run([sys.executable, "-m", "runform.server.cli", name, "--help"], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0 and "usage:" in proc.stdout, name


def _tc_errors_ms(steps, truth_ic_s, truth_tc_s):
    """TC error (detected - true, ms) of every detected step whose IC is within 60 ms of a true IC."""
    err = []
    for s in steps:
        k = int(np.argmin(np.abs(truth_ic_s - s["ic_s"])))
        if abs(truth_ic_s[k] - s["ic_s"]) < 0.06 and s["tc_s"] is not None:
            err.append((s["tc_s"] - truth_tc_s[k]) * 1000.0)
    return np.array(err)


def test_foot_gyroscope_columns_are_used_for_toe_off(tmp_path):
    """The same simulated foot recording with and without its gyr_*_dps columns: the CLI passes the gyroscope
    to the detector, which then takes toe-off from the push-off rotation -> much tighter toe-off times."""
    from dataclasses import replace

    from runform.firmware_bridge.simulator import RunnerProfile, simulate
    from runform.server._cmd_simulate import write_recording_csv

    rec = simulate(RunnerProfile(), sites=("foot_left",), duration_s=20.0, sampling_rate_hz=200.0, seed=3)
    sig = rec.signals["foot_left"]
    assert sig.gyr_dps is not None
    with_gyro, without = tmp_path / "foot_gyro.csv", tmp_path / "foot_nogyro.csv"
    write_recording_csv(str(with_gyro), sig)
    write_recording_csv(str(without), replace(sig, gyr_dps=None))
    assert "gyr_x_dps" in with_gyro.read_text().split("\n", 1)[0]
    truth = rec.events[rec.events["side"] == 0]  # the sensor is on the left foot

    results = {}
    for name, path in (("gyro", with_gyro), ("acc", without)):
        proc = analyze(path, "--site", "foot_left")
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["gyro"] is (name == "gyro")
        assert len(out["steps"]) >= len(truth) - 3 and all(s["side"] == "L" for s in out["steps"])
        err = _tc_errors_ms(out["steps"], truth["ic_s"], truth["tc_s"])
        assert err.size >= len(truth) - 4, (name, err.size, len(truth))
        results[name] = err
    sd_gyro, sd_acc = float(results["gyro"].std(ddof=1)), float(results["acc"].std(ddof=1))
    assert sd_gyro < 15.0, sd_gyro
    assert sd_gyro < 0.5 * sd_acc, (sd_gyro, sd_acc)


def test_gyroscope_column_problems_are_warnings(tmp_path):
    from runform.firmware_bridge.simulator import RunnerProfile, simulate
    from runform.server._cmd_simulate import write_recording_csv

    rec = simulate(RunnerProfile(), sites=("foot_left",), duration_s=10.0, sampling_rate_hz=200.0, seed=4)
    src = tmp_path / "foot.csv"
    write_recording_csv(str(src), rec.signals["foot_left"])
    lines = src.read_text().splitlines()
    header = lines[0].split(",")
    gz = header.index("gyr_z_dps")
    # two gyroscope columns only: analysed without the gyroscope, with a warning
    two = tmp_path / "two_gyro.csv"
    two.write_text("\n".join(",".join(c for k, c in enumerate(line.split(",")) if k != gz) for line in lines) + "\n")
    out = json.loads(analyze(two, "--site", "foot_left").stdout)
    assert out["gyro"] is False and out["steps"]
    assert any("gyroscope column" in w and "instead of three" in w for w in out["warnings"])
    # a short gap (5 samples = 25 ms) in the gyroscope is interpolated like one in the acceleration
    gap = tmp_path / "gyro_gap.csv"
    rows = [line.split(",") for line in lines[1:]]
    for r in rows[700:705]:
        r[gz] = ""
    gap.write_text(lines[0] + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    proc = analyze(gap, "--site", "foot_left")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["gyro"] is True and out["steps"]
    assert any("5 sample(s) with missing rotation rate were interpolated" in w for w in out["warnings"])
    # a long gap (200 ms) drops the optional gyroscope instead of refusing the file
    for r in rows[700:740]:
        r[gz] = ""
    gap.write_text(lines[0] + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    out = json.loads(analyze(gap, "--site", "foot_left").stdout)
    assert out["gyro"] is False and out["steps"]
    assert any("without rotation rate" in w and "gyroscope not used" in w for w in out["warnings"])
