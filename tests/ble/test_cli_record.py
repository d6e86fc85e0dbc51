"""`runform record` as a real subprocess against virtual sensors: Ctrl-C (SIGINT) or SIGTERM stops it cleanly, the
files are complete (every packet up to the stop, no torn tail, the clean-close record)."""
from __future__ import annotations

import asyncio
import json
import signal
import sys

import pytest

from runform.firmware_bridge.journal import JournalReader

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
async def test_record_stopped_by_signal_leaves_complete_journals(sensors, tmp_path, sig):
    a = await sensors("foot_left", samples_per_packet=20)
    b = await sensors("sacrum", samples_per_packet=20)
    out = tmp_path / "rec"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runform.server.cli", "record", "--adapter", "hci0",
        "--sensor", f"{a.address_}=foot_left", "--sensor", f"{b.address_}=sacrum@bob", "--runner", "alice",
        "--out", str(out), "--status-every", "0.5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    lines = []
    while True:  # wait until both stream
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        lines.append(line)
        if line.count("streaming") == 2 and "pkts=0 " not in line:
            break
    await asyncio.sleep(1.0)
    proc.send_signal(sig)
    rest, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    summary = json.loads((out / "record_summary.json").read_text())
    assert set(summary) == {"alice.foot_left", "bob.sacrum"}
    for sid, vs in (("alice.foot_left", a), ("bob.sacrum", b)):
        reader = JournalReader(out / f"{sid}.rfj")
        packets = list(reader.packets())
        st = summary[sid]
        assert st["packets_received"] > 20
        assert len(packets) >= st["packets_received"] + st["packets_malformed"]
        assert len(packets) <= vs.engine_.packets_sent_
        blocks = list(reader.blocks())
        assert sum(blk.n_samples for blk in blocks) == 20 * len(packets)
        assert reader.torn_tail_bytes_ == 0
        records = list(reader.records())
        closed = records[-1].event  # the clean-close record comes last and counts everything before it
        assert closed is not None and closed["event"] == "closed", closed
        assert closed["records"] == len(records) - 1 and closed["dropped_records"] == 0
