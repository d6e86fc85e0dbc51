"""`runform analyze`: the JSON contract, and clear errors (never a traceback) on bad input."""
import json
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


@pytest.mark.parametrize("case,message", [
    ("missing_time", "no 'time_s' column"),
    ("no_acc", "no acceleration columns"),
    ("backwards", "time goes backwards"),
    ("duplicate", "duplicated time"),
    ("long_nan_gap", "consecutive samples without acceleration"),
    ("low_rate", "too low"),
    ("not_csv", "malformed CSV"),
    ("empty", "empty"),
])
def test_bad_input_gives_clear_error(tmp_path, case, message):
    t = np.arange(2000) / 500.0
    acc = np.tile([0.0, 0.0, 1.0], (2000, 1))
    p = tmp_path / f"{case}.csv"
    if case == "missing_time":
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
    elif case == "empty":
        p.write_text("")
    proc = analyze(p, "--site", "shank")
    assert proc.returncode == 2
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


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
