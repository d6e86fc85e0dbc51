"""Importing `runform record` journals: samples identical to the journal's own decoder, idempotent, CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from runform.firmware_bridge import JournalReader
from runform.server.ingest import import_journal_dir
from runform.server.storage import open_store

from .conftest import write_journal_dir


def test_import_equals_journal_reader_and_is_idempotent(journal_session, tmp_path):
    db, sid, sent, res = journal_session
    store = open_store(db)
    s = store.get_session(sid)
    assert s.runner_id == "alice" and s.source == "journal" and s.mass_kg == 68.0 and not s.is_open
    assert {(x.sensor_id, x.site) for x in s.sensors} == {("RF-0", "sacrum"), ("RF-1", "foot_left")}
    assert s.clock_monotonic_s is not None and "journal header" in s.clock_source
    for sensor_id in ("RF-0", "RF-1"):
        ref = JournalReader(res["files"][int(sensor_id[-1])]).read_arrays()
        got = store.read_raw(sid, sensor_id)
        # bit-identical to what the journal decodes to (same protocol + ClockSync)
        assert np.array_equal(got["time_s"], ref["time_s"])
        assert np.array_equal(got["acc_ms2"], ref["acc_ms2"]) and np.array_equal(got["gyr_dps"], ref["gyr_dps"])
        assert np.array_equal(got["seq"], ref["seq"])
        # arrival time of every packet kept
        arrivals = np.array([a for _, a in sent[sensor_id]])
        assert np.array_equal(np.unique(got["arrival_ns"]), np.sort(arrivals))
    steps = store.read_steps(sid)
    running = steps[steps["activity"] == 2]
    assert len(running) > 40  # ~21 s of running at 172 spm, two sensors
    assert 160 < np.median(running["cadence_spm"][np.isfinite(running["cadence_spm"])]) < 185
    stats = store.read_sensor_stats(sid)
    assert {x["sensor_id"] for x in stats} == {"RF-0", "RF-1"} and stats[0]["journal"]["torn_tail_bytes"] == 0
    n_raw, n_steps = len(store.read_raw(sid)["time_s"]), len(steps)
    again = import_journal_dir(store, res["files"][0].rsplit("/", 1)[0], mass_kg=68.0)
    assert again[0]["session_id"] == sid and again[0]["samples_stored"] == 0 and again[0]["steps_stored"] == 0
    assert len(store.read_raw(sid)["time_s"]) == n_raw and len(store.read_steps(sid)) == n_steps
    store.close()


def test_cli_import_journal_with_loss_and_torn_tail(tmp_path):
    rec = tmp_path / "rec"
    sent = write_journal_dir(rec, runner="bob", sites=("shank_left",), duration_s=8.0, loss_every=50)
    with open(rec / "RF-0.rfj", "ab") as f:  # a crash in the middle of a write
        f.write(b"\x10\x00\x00\x00\x01garbage")
    db = tmp_path / "cli.db"
    p = subprocess.run([sys.executable, "-m", "runform.server.cli", "import-journal", str(rec), "--db", str(db),
                        "--no-steps"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "runner bob" in p.stdout
    store = open_store(db)
    (s,) = store.list_sessions(["bob"])
    got = store.read_raw(s.id)
    kept = sent["RF-0"]
    assert len(np.unique(got["seq"])) == len(kept)  # every surviving packet, none twice
    stats = store.read_sensor_stats(s.id)[0]
    assert stats["link"]["lost"] > 0 and stats["journal"]["torn_tail_bytes"] > 0
    assert any(n["kind"] == "warning" and "torn tail" in n["text"] for n in store.read_notes(s.id))
    p = subprocess.run([sys.executable, "-m", "runform.server.cli", "sessions", "--db", str(db), "--id", s.id],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and json.loads(p.stdout)["summary"]["raw_samples"] == len(got["time_s"])
    p = subprocess.run([sys.executable, "-m", "runform.server.cli", "import-journal", str(tmp_path / "none"),
                        "--db", str(db)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no *.rfj" in p.stderr
    store.close()
