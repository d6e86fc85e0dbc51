"""``runform run --workers N``: runners sharded over worker processes, stopped cleanly by SIGTERM."""
import json
import signal
import subprocess
import sys
import time

import pytest

from runform.server._workers import shard

from .conftest import _need_mosquitto


def test_shard_is_disjoint_and_complete():
    items = list(range(10))
    groups = shard(items, 3)
    assert [len(g) for g in groups] == [4, 3, 3]
    assert sorted(x for g in groups for x in g) == items
    assert shard(items[:2], 4) == [[0], [1]]  # never an empty worker
    assert shard(items, 0) == [items]


def test_run_workers_sigterm_stops_every_worker_cleanly(tmp_path):
    _need_mosquitto()
    pytest.importorskip("runform.firmware_bridge.simulator")
    from runform.firmware_bridge.journal import JournalReader
    cmd = [sys.executable, "-m", "runform.server.cli", "run", "--runners", "3", "--workers", "2", "--start-broker",
           "--quiet", "--journal-dir", str(tmp_path / "j")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until every runner's journal has data
            files = list((tmp_path / "j").glob("*/*.rfj"))
            if len(files) == 3 and all(f.stat().st_size > 4000 for f in files):
                break
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "2 workers: w0: 2 runners; w1: 1 runners" in out
    stats = json.loads(out[out.index("\n{") + 1:])
    assert set(stats) == {"runner1", "runner2", "runner3"}
    for name, st in stats.items():
        assert st["blocks"] > 25 and st["journal_errors"] == 0 and st["dsp_skipped_blocks"] == 0
        files = list((tmp_path / "j" / name).glob("*.rfj"))
        assert len(files) == 1
        records = list(JournalReader(files[0]).records())
        assert sum(1 for r in records if r.event is None) == st["journaled_packets"]
        assert records[-1].event["event"] == "closed"  # the worker closed its journals on SIGTERM
