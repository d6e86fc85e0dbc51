"""Each export read back with its own ecosystem's reader: csv+json, pyarrow, h5py, the BIDS validator, the Garmin
FIT SDK, and a pylsl inlet."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from runform.dsp import STEP_DTYPE
from runform.server.exports import ExportError, export_session
from runform.server.storage import open_store


@pytest.fixture(scope="module")
def data(journal_session):
    db, sid, _, _ = journal_session
    store = open_store(db)
    d = {"store": store, "sid": sid, "session": store.get_session(sid), "raw": {
        x["sensor_id"]: store.read_raw(sid, x["sensor_id"]) for x in store.raw_sensors(sid)},
        "steps": store.read_steps(sid), "metrics": store.read_metrics(sid), "notes": store.read_notes(sid)}
    assert len(d["raw"]) == 2 and len(d["steps"]) > 40 and len(d["metrics"]) > 10
    yield d
    store.close()


def test_csv_roundtrip(data, tmp_path):
    files = export_session(data["store"], data["sid"], "csv", tmp_path / "csv")
    meta = json.loads((tmp_path / "csv" / "session.json").read_text())
    assert meta["id"] == data["sid"] and meta["runner"]["id"] == "alice" and meta["mass_kg"] == 68.0
    assert {s["site"] for s in meta["sensors"]} == {"sacrum", "foot_left"}
    assert meta["clock_monotonic_s"] == data["session"].clock_monotonic_s
    for sensor_id, ref in data["raw"].items():
        info = meta["files"][f"raw_{sensor_id}.csv"]
        units = {c["name"]: c["unit"] for c in info["columns"]}
        assert units["acc_x_ms2"] == "m/s^2" and units["gyr_z_dps"] == "deg/s" and units["time_s"] == "s"
        assert info["site"] == ref["site"][0] and info["rows"] == len(ref["time_s"])
        with open(tmp_path / "csv" / f"raw_{sensor_id}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        t = np.array([float(r["time_s"]) for r in rows])
        assert np.array_equal(t, ref["time_s"])  # exact float64 round trip
        assert np.array_equal(np.array([float(r["acc_y_ms2"]) for r in rows]), ref["acc_ms2"][:, 1])
        assert np.array_equal(np.array([float(r["gyr_x_dps"]) for r in rows]), ref["gyr_dps"][:, 0])
        assert np.array_equal(np.array([int(r["arrival_ns"]) for r in rows]), ref["arrival_ns"])
        utc = np.array([float(r["utc_unix_s"]) for r in rows])
        assert np.allclose(utc - t, data["session"].clock_utc_unix_s - data["session"].clock_monotonic_s)
    with open(tmp_path / "csv" / "steps.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(data["steps"]) and set(rows[0]) >= set(STEP_DTYPE.names)
    assert np.array_equal([float(r["gct_ms"]) for r in rows], data["steps"]["gct_ms"])
    assert {r["side"] for r in rows} <= {"L", "R", ""} and rows[5]["site"] in ("sacrum", "foot_left")
    assert sorted(p.name for p in files) == sorted(["session.json", "raw_RF-0.csv", "raw_RF-1.csv", "steps.csv",
                                                  "metrics.csv", "cues.csv", "notes.csv"])


def test_parquet_roundtrip(data, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    export_session(data["store"], data["sid"], "parquet", tmp_path / "pq")
    t = pq.read_table(tmp_path / "pq" / "raw.parquet")
    meta = json.loads(t.schema.metadata[b"runform.session"])
    assert meta["id"] == data["sid"] and meta["runner"]["mass_kg"] is None or meta["mass_kg"] == 68.0
    assert t.schema.field("acc_x_ms2").metadata[b"unit"] == b"m/s^2"
    assert t.schema.field("gyr_y_dps").metadata[b"unit"] == b"deg/s"
    d = t.to_pydict()
    sensors = np.array(d["sensor_id"])
    for sensor_id, ref in data["raw"].items():
        sel = sensors == sensor_id
        assert np.array_equal(np.array(d["time_s"])[sel], ref["time_s"])
        assert np.array_equal(np.array(d["acc_z_ms2"])[sel], ref["acc_ms2"][:, 2])
        assert set(np.array(d["site"])[sel]) == {ref["site"][0]}
    st = pq.read_table(tmp_path / "pq" / "steps.parquet")
    assert st.num_rows == len(data["steps"]) and st.schema.field("gct_ms").metadata[b"unit"] == b"ms"
    assert np.array_equal(st.column("ic_s").to_numpy(), data["steps"]["ic_s"])
    m = pq.read_table(tmp_path / "pq" / "metrics.parquet")
    assert np.allclose(m.column("cadence_spm").to_numpy(), data["metrics"]["cadence_spm"], equal_nan=True)
    n = pq.read_table(tmp_path / "pq" / "notes.parquet").to_pydict()
    assert "left calf tight" in n["text"]


def test_hdf5_roundtrip(data, tmp_path):
    h5py = pytest.importorskip("h5py")
    export_session(data["store"], data["sid"], "hdf5", tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5", "r") as f:
        meta = json.loads(f.attrs["runform_session"])
        assert meta["id"] == data["sid"] and f.attrs["runner_id"] == "alice"
        for sensor_id, ref in data["raw"].items():
            g = f["raw"][sensor_id]
            assert g.attrs["site"] == ref["site"][0] and g.attrs["sampling_rate_hz"] == 200.0
            assert np.array_equal(g["time_s"][:], ref["time_s"]) and g["time_s"].attrs["unit"] == "s"
            assert np.array_equal(g["acc_ms2"][:], ref["acc_ms2"]) and g["acc_ms2"].attrs["unit"] == "m/s^2"
            assert np.array_equal(g["gyr_dps"][:], ref["gyr_dps"]) and g["gyr_dps"].attrs["unit"] == "deg/s"
            assert np.array_equal(g["seq"][:], ref["seq"])
        steps = f["steps"][:]
        assert np.array_equal(steps["gct_ms"], data["steps"]["gct_ms"])
        assert json.loads(f["steps"].attrs["units"])["cadence_spm"] == "steps/min"
        assert set(steps["site"].astype(str)) == {"sacrum", "foot_left"}
        assert b"left calf tight" in f["notes"][:]["text"]


def _bids_validator():
    exe = shutil.which("bids-validator-deno") or str(Path(sys.executable).parent / "bids-validator-deno")
    return exe if Path(exe).exists() else None


def _validate(path) -> tuple[list, list]:
    exe = _bids_validator()
    p = subprocess.run([exe, str(path), "--format", "json"], capture_output=True, text=True, timeout=240)
    try:
        issues = json.loads(p.stdout)["issues"]["issues"]
    except (ValueError, KeyError):
        pytest.fail(f"BIDS validator gave no JSON (rc {p.returncode}): {p.stderr[-2000:]}")
    return ([i for i in issues if i.get("severity") == "error"], [i for i in issues if i.get("severity") == "warning"])


def test_motion_bids_valid_and_readable(data, tmp_path):
    export_session(data["store"], data["sid"], "bids", tmp_path / "bids")
    mdir = next((tmp_path / "bids").glob("sub-alice/ses-*/motion"))
    for sensor_id, ref in data["raw"].items():
        site = ref["site"][0].replace("_", "")
        motion = next(mdir.glob(f"*tracksys-{site}_motion.tsv"))
        chans = list(csv.DictReader(open(str(motion).replace("_motion.tsv", "_channels.tsv")), delimiter="\t"))
        sidecar = json.loads(Path(str(motion).replace(".tsv", ".json")).read_text())
        assert sidecar["SamplingFrequency"] == 200.0 and sidecar["runform"]["sensor_id"] == sensor_id
        assert [c["type"] for c in chans] == ["ACCEL"] * 3 + ["GYRO"] * 3 + ["LATENCY"]
        assert [c["units"] for c in chans] == ["m/s^2"] * 3 + ["deg/s"] * 3 + ["s"]
        x = np.loadtxt(motion, delimiter="\t")
        assert x.shape == (len(ref["time_s"]), 7)
        assert np.array_equal(x[:, 0:3], ref["acc_ms2"]) and np.array_equal(x[:, 3:6], ref["gyr_dps"])
        origin = sidecar["runform"]["time_origin_s"]
        assert np.allclose(x[:, 6] + origin, ref["time_s"], rtol=0, atol=1e-9)
    ev = list(csv.DictReader(open(next(mdir.glob("*_events.tsv"))), delimiter="\t"))
    steps = [e for e in ev if e["trial_type"].startswith("step_")]
    assert len(steps) == len(data["steps"])
    if _bids_validator() is None:
        pytest.skip("bids-validator-deno not installed (pip install bids-validator-deno): structure checked only")
    errors, warnings = _validate(tmp_path / "bids")
    assert errors == [], json.dumps(errors, indent=1)[:3000]
    # the validator does check motion data: a channels file that disagrees with the data is an error
    chan = next(mdir.glob("*tracksys-sacrum_channels.tsv"))
    lines = chan.read_text().splitlines()
    chan.write_text("\n".join(lines[:-2] + lines[-1:]) + "\n")  # drop one GYRO channel row
    errors, _ = _validate(tmp_path / "bids")
    assert errors, "the validator accepted a channels.tsv with a missing channel"


def test_fit_activity_read_by_garmin_sdk(data, tmp_path):
    pytest.importorskip("fit_tool")
    sdk = pytest.importorskip("garmin_fit_sdk")
    export_session(data["store"], data["sid"], "fit", tmp_path / "run.fit")
    check = sdk.Decoder(sdk.Stream.from_file(str(tmp_path / "run.fit")))
    assert check.is_fit() and check.check_integrity()  # header + CRC (consumes the stream)
    msgs, errors = sdk.Decoder(sdk.Stream.from_file(str(tmp_path / "run.fit"))).read()
    assert errors == []
    rec = msgs["record_mesgs"]
    m = data["metrics"]
    assert len(rec) == len(m)
    cad = np.array([r.get("cadence", np.nan) + r.get("fractional_cadence", 0.0) for r in rec], float)
    assert np.allclose(cad * 2, m["cadence_spm"], atol=2 / 128 + 1e-9, equal_nan=True)  # FIT stores 1/128 rpm
    st = np.array([r.get("stance_time", np.nan) for r in rec], float)
    assert np.allclose(st, m["gct_ms"], atol=0.1, equal_nan=True)
    bal = np.array([r.get("stance_time_balance", np.nan) for r in rec], float)
    assert np.allclose(bal, m["balance_left_pct"], atol=0.01, equal_nan=True)
    t = np.array([r["timestamp"].timestamp() for r in rec])
    utc = data["session"].to_utc(m["time_s"])
    assert np.all(np.abs(t - utc) <= 1.0)  # FIT timestamps are whole seconds
    (sess,) = msgs["session_mesgs"]
    assert sess["sport"] == "running" and sess["total_elapsed_time"] == pytest.approx(t[-1] - t[0], abs=1)
    assert len(msgs["lap_mesgs"]) == 1 and len(msgs["activity_mesgs"]) == 1


def test_lsl_outlet_to_inlet_on_loopback(data):
    from runform.server.exports import LslOutlet, lsl_available, replay_session
    why = lsl_available()
    if why:
        pytest.skip(f"liblsl cannot load: {why}")
    import pylsl
    # live outlet: timestamps = host monotonic time_s (== pylsl.local_clock on Linux)
    assert abs(pylsl.local_clock() - time.monotonic()) < 0.05
    out = LslOutlet("lsltest", {"session_id": "x"})
    ref = data["raw"]["RF-0"]
    out.push_raw("RF-0", "sacrum", ref["time_s"][:10], ref["acc_ms2"][:10], ref["gyr_dps"][:10], 200.0)
    (info,) = pylsl.resolve_byprop("name", "runform lsltest sacrum", timeout=5)
    inlet = pylsl.StreamInlet(info, recover=False)
    full = inlet.info(timeout=5)
    assert full.channel_count() == 6 and full.nominal_srate() == 200.0 and full.type() == "IMU"
    ch = full.desc().child("channels").child("channel")
    assert ch.child_value("label") == "acc_x" and ch.child_value("unit") == "m/s^2"
    assert full.desc().child("acquisition").child_value("site") == "sacrum"
    inlet.open_stream(timeout=5)
    assert out.outlets_["RF-0"].wait_for_consumers(5)  # the outlet serves the inlet: nothing pushed now is lost
    n = 200
    out.push_raw("RF-0", "sacrum", ref["time_s"][10:n], ref["acc_ms2"][10:n], ref["gyr_dps"][10:n], 200.0)
    got, ts = [], []
    deadline = time.monotonic() + 5
    while len(got) < n - 10 and time.monotonic() < deadline:
        x, t = inlet.pull_chunk(timeout=0.5)
        got += x
        ts += t
    got = np.array(got)
    assert got.shape == (n - 10, 6)
    assert np.array_equal(got[:, :3], ref["acc_ms2"][10:n]) and np.array_equal(got[:, 3:], ref["gyr_dps"][10:n])
    assert np.allclose(ts, ref["time_s"][10:n], atol=1e-6)
    out.close()
    # replay of the stored session: the steps stream carries every step
    res = {}
    th = threading.Thread(target=lambda: res.update(replay_session(data["store"], data["sid"], speed=50.0,
                                                                   wait_for_consumers_s=5.0)))
    th.start()
    (sinfo,) = pylsl.resolve_byprop("name", "runform alice steps", timeout=5)
    sin = pylsl.StreamInlet(sinfo)
    sin.open_stream(timeout=5)
    rows = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (th.is_alive() or len(rows) < len(data["steps"])):
        x, _ = sin.pull_chunk(timeout=0.2)
        rows += x
    th.join()
    assert res["steps"] == len(data["steps"]) and len(rows) == len(data["steps"])
    assert np.allclose(np.array(rows)[:, 1], data["steps"]["gct_ms"], equal_nan=True)


def test_export_errors_and_cli(data, tmp_path):
    with pytest.raises(ExportError):
        export_session(data["store"], "no-such-session", "csv", tmp_path / "x")
    with pytest.raises(ExportError):
        export_session(data["store"], data["sid"], "xlsx", tmp_path / "x")
    db = data["store"].path
    p = subprocess.run([sys.executable, "-m", "runform.server.cli", "export", data["sid"], "--db", db,
                        "--format", "hdf5", "--out", str(tmp_path / "cli.h5")], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "cli.h5").stat().st_size > 10000
    p = subprocess.run([sys.executable, "-m", "runform.server.cli", "export", "nope", "--db", db, "--format", "csv",
                        "--out", str(tmp_path / "n")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no session" in p.stderr
