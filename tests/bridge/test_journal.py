"""Raw journal: lossless round trip, re-decoding, torn tail after a crash, corruption, disk full (ENOSPC)."""
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from runform.firmware_bridge import JournalError, JournalReader, JournalWriter, SampleBlock, SensorDecoder
from runform.firmware_bridge import journal as jmod
from runform.firmware_bridge._bench import simulate_link
from runform.firmware_bridge.journal import sensor_metadata
from runform.firmware_bridge.protocols import RunformV1, runform_v1 as rf


def _packets(n_seconds=20.0, seed=0):
    sim = simulate_link(n_seconds, samples_per_packet=19, seed=seed)
    rng = np.random.default_rng(seed)
    pk = [rf.encode_data_packet(int(sim.seq[i]), int(sim.first_tick[i]), rng.integers(-500, 500, (19, 3)),
                                rng.integers(-500, 500, (19, 3))) for i in range(len(sim.seq))]
    return pk, [int(a) for a in sim.arrival_ns]


def _meta():
    proto = RunformV1(rf.SensorConfig(sampling_rate_hz=1000.0, site="foot_left", serial="RF-1"))
    return proto, sensor_metadata(proto, sensor_id="RF-1", site="foot_left", runner="r01", address="AA:BB")


def _write(path, packets, arrivals, **kw):
    proto, meta = _meta()
    with JournalWriter(path, meta, **kw) as w:
        for p, a in zip(packets, arrivals):
            w.append(p, a)
    return w


def test_roundtrip_and_redecode_equals_live(tmp_path):
    packets, arrivals = _packets()
    path = tmp_path / "s.rfj"
    w = _write(path, packets, arrivals, flush_interval_ms=50)
    assert w.records_written_ == len(packets) + 1 and w.pending_records_ == 0   # + the "closed" event
    rd = JournalReader(path)
    got = list(rd.packets())
    assert [g[1] for g in got] == packets and [g[0] for g in got] == arrivals
    assert rd.torn_tail_bytes_ == 0 and rd.corrupt_regions_ == []
    h = rd.header_
    assert h["format_version"] == 1 and h["sensor"]["runner"] == "r01" and h["sensor"]["site"] == "foot_left"
    assert abs(h["host_clock"]["utc_ns"] / 1e9 - time.time()) < 600 and h["host_clock"]["monotonic_ns"] > 0
    assert rd.protocol().config.serial == "RF-1"                     # config bytes kept in the header
    assert [e["event"] for e in rd.events()] == ["closed"]
    # re-decoding through protocol + ClockSync gives exactly what the live pipeline produced
    proto, _ = _meta()
    live = SensorDecoder(proto, sensor_id="RF-1", site="foot_left")
    live_blocks = [b for p, a in zip(packets, arrivals) for b in live.feed(p, a)]
    replay = list(JournalReader(path).blocks())
    assert len(replay) == len(live_blocks)
    assert all(isinstance(b, SampleBlock) for b in replay)
    assert all(np.array_equal(a.time_s, b.time_s) and np.array_equal(a.acc_ms2, b.acc_ms2) and a.seq == b.seq
               for a, b in zip(live_blocks, replay))
    arr = JournalReader(path).read_arrays()
    assert arr["time_s"].shape == (19 * len(packets),) and arr["gyr_dps"].shape == (19 * len(packets), 3)
    assert np.all(np.diff(arr["seq"]) >= 0)


def test_refuses_to_overwrite_and_rejects_foreign_files(tmp_path):
    packets, arrivals = _packets(2.0)
    path = tmp_path / "a.rfj"
    _write(path, packets, arrivals)
    with pytest.raises(JournalError, match="exists"):
        JournalWriter(path, _meta()[1])
    (tmp_path / "x.rfj").write_bytes(b"hello world, not a journal")
    with pytest.raises(JournalError, match="magic"):
        JournalReader(tmp_path / "x.rfj")
    b = bytearray(path.read_bytes())
    b[8] = 9
    (tmp_path / "v9.rfj").write_bytes(bytes(b))
    with pytest.raises(JournalError, match="format version 9"):
        JournalReader(tmp_path / "v9.rfj")
    with pytest.raises(JournalError, match="JSON"):
        JournalWriter(tmp_path / "j.rfj", {"bad": object()})


@pytest.fixture(scope="module")
def journal_bytes(tmp_path_factory):
    packets, arrivals = _packets(3.0, seed=2)
    path = tmp_path_factory.mktemp("j") / "t.rfj"
    _write(path, packets[:60], arrivals[:60])
    rd = JournalReader(path)
    offsets = [r.offset for r in rd.records()]
    return path.read_bytes(), offsets, packets[:60]


@given(cut=st.integers(0, 10**6))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_torn_tail_is_tolerated_and_reported(journal_bytes, tmp_path, cut):
    data, offsets, packets = journal_bytes
    start = offsets[0]
    cut = start + cut % (len(data) - start)
    path = tmp_path / f"torn-{uuid.uuid4().hex}.rfj"
    path.write_bytes(data[:cut])
    rd = JournalReader(path)
    recs = list(rd.records())
    complete = [o for o in offsets[1:] + [len(data)] if o <= cut]       # record k complete if next starts <= cut
    assert len(recs) == len(complete)
    assert [r.data for r in recs] == (packets + [recs[-1].data] if len(recs) == 61 else packets[:len(recs)])
    assert rd.torn_tail_bytes_ == cut - rd.good_end_offset_
    assert rd.corrupt_regions_ == []
    # appending after the crash cuts the torn tail and continues cleanly
    with JournalWriter(path, {}, append=True) as w:
        assert w.truncated_tail_bytes_ == rd.torn_tail_bytes_
        w.append(b"\x01after", 42)
    rd2 = JournalReader(path)
    recs2 = list(rd2.records())
    assert rd2.torn_tail_bytes_ == 0 and rd2.corrupt_regions_ == []
    assert [r.data for r in recs2[:len(recs)]] == [r.data for r in recs]
    assert [r.data for r in recs2 if r.type == 1][-1] == b"\x01after"


def test_corrupt_record_in_the_middle_is_skipped_and_reported(journal_bytes, tmp_path):
    data, offsets, packets = journal_bytes
    b = bytearray(data)
    b[offsets[10] + 20] ^= 0xFF                                          # flip a body byte of record 10
    path = tmp_path / "c.rfj"
    path.write_bytes(bytes(b))
    rd = JournalReader(path)
    got = [r.data for r in rd.records() if r.type == 1]
    assert got == packets[:10] + packets[11:]
    assert rd.corrupt_regions_ == [(offsets[10], offsets[11] - offsets[10])] and rd.torn_tail_bytes_ == 0


CHILD = textwrap.dedent("""
    import sys, time
    from runform.firmware_bridge.journal import JournalWriter
    w = JournalWriter(sys.argv[1], {"sensor_id": "crash"}, flush_interval_ms=5)
    i = 0
    while True:
        w.append(i.to_bytes(4, "little") * 25, i)
        if i == 200:
            print("ready", flush=True)
        i += 1
        if i % 50 == 0:
            time.sleep(0.001)
""")


def test_crash_kill_minus_9_loses_at_most_the_unflushed_tail(tmp_path):
    path = tmp_path / "crash.rfj"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    rd = JournalReader(path)
    recs = [r for r in rd.records()]
    assert len(recs) > 200
    assert [r.arrival_ns for r in recs] == list(range(len(recs)))         # contiguous, nothing corrupt
    assert all(r.data == r.arrival_ns.to_bytes(4, "little") * 25 for r in recs)
    assert rd.corrupt_regions_ == []


class _FlakyWrite:
    """os.write that fails with ENOSPC after ``budget`` bytes (writing the part that fits, like a real disk)."""

    def __init__(self, budget):
        self.budget = budget
        self.real = os.write

    def __call__(self, fd, data):
        if self.budget <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self.real(fd, bytes(data[:self.budget]))
        self.budget -= n
        return n


def test_enospc_injected_keeps_disk_consistent_and_retries(tmp_path, monkeypatch):
    packets, arrivals = _packets(3.0, seed=3)
    path = tmp_path / "full.rfj"
    proto, meta = _meta()
    w = JournalWriter(path, meta, flush_interval_ms=0)
    for p, a in zip(packets[:20], arrivals[:20]):
        w.append(p, a)
    flaky = _FlakyWrite(budget=3 * len(packets[0]) + 17)                  # room for ~3 more records, then full
    monkeypatch.setattr(jmod.os, "write", flaky)
    errors = []
    for p, a in zip(packets[20:40], arrivals[20:40]):
        try:
            w.append(p, a)
        except JournalError as e:
            errors.append(e)
    assert errors and errors[0].errno == errno.ENOSPC and "disk full" in str(errors[0])
    assert w.pending_records_ > 0 and w.dropped_records_ == 0
    rd = JournalReader(path)
    on_disk = [r.data for r in rd.records()]
    assert rd.torn_tail_bytes_ == 0 and rd.corrupt_regions_ == []          # partial write rolled back
    assert on_disk == packets[:len(on_disk)] and len(on_disk) == w.records_written_
    monkeypatch.setattr(jmod.os, "write", flaky.real)                      # space freed
    w.flush()
    assert w.error_ is None and w.pending_records_ == 0
    w.close()
    assert [r for _, r in JournalReader(path).packets()] == packets[:40]


def _mount_tmpfs(mnt, size="64k"):
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    return r.returncode == 0


def test_enospc_on_a_real_full_filesystem(tmp_path):
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt):
        pytest.skip("cannot mount a 64 KiB tmpfs here (needs root/CAP_SYS_ADMIN); the injected-ENOSPC test covers it")
    try:
        packets, arrivals = _packets(10.0, seed=4)
        filler = mnt / "filler"
        path = mnt / "j.rfj"
        proto, meta = _meta()
        w = JournalWriter(path, meta, flush_interval_ms=0, max_pending_bytes=40_000)
        with open(filler, "wb") as f:                                       # leave ~6 KiB free
            try:
                f.write(b"\0" * (64 * 1024 - 6 * 1024 - os.path.getsize(path)))
            except OSError:
                pass
        err = None
        accepted = 0
        for p, a in zip(packets, arrivals):
            try:
                w.append(p, a)
            except JournalError as e:
                err = err or e
            accepted += 1
        assert err is not None and err.errno == errno.ENOSPC
        assert w.dropped_records_ > 0 and w._pending_bytes <= 40_000         # bounded memory, drops counted
        rd = JournalReader(path)
        recs = [r.data for r in rd.records()]
        assert rd.torn_tail_bytes_ == 0 and rd.corrupt_regions_ == []
        assert recs == packets[:len(recs)] and len(recs) == w.records_written_
        kept = w.pending_records_
        filler.unlink()                                                      # free space: retry succeeds
        w.flush()
        w.close()
        rd = JournalReader(path)
        pk = [d for _, d in rd.packets()]
        assert pk == packets[:len(pk)] and len(pk) == len(recs) + kept
        assert len(pk) + w.dropped_records_ == accepted
        ev = rd.events()
        assert ev[0]["event"] == "dropped" and ev[0]["records"] == w.dropped_records_
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
