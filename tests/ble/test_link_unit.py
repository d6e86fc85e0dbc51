"""Unit tests of reconnect/backoff, accounting and the live queue, on the in-process fake backend."""
from __future__ import annotations

import asyncio

import pytest

from runform.firmware_bridge.ble import Bridge, SensorLink, SensorSpec, scan
from runform.firmware_bridge.virtual import SensorBehavior

from .fake_backend import FakeAir, FakeClient, FakePeripheral, FakeScanner

pytestmark = pytest.mark.asyncio(loop_scope="session")
FAKE = dict(backend=FakeClient, scanner_backend=FakeScanner)
A1, A2 = "AA:00:00:00:00:01", "AA:00:00:00:00:02"


async def test_scan_lists_fake_sensors():
    FakeAir.reset(FakePeripheral(A1, "RF-1"), FakePeripheral(A2, "RF-2"))
    found = await scan(0.15, backend=FakeScanner)
    assert {f.address for f in found} == {A1, A2}
    assert all(f.kind == "runform_v1" for f in found)


async def test_backoff_doubles_until_connect_succeeds():
    p = FakePeripheral(A1, "RF-1", fail_connects=3)
    FakeAir.reset(p)
    blocks = []
    link = SensorLink(SensorSpec(site="foot_left", address=A1), on_block=blocks.append, backoff_initial_s=0.02,
                      backoff_max_s=1.0, find_timeout_s=1.0, **FAKE)
    task = asyncio.create_task(link.run())
    for _ in range(200):
        if blocks:
            break
        await asyncio.sleep(0.01)
    await link.stop()
    await task
    assert p.connect_attempts == 4
    d = link.backoff_delays_s[:3]
    assert len(d) == 3
    # attempt k waits initial * 2**k (±20 % jitter)
    for k, delay in enumerate(d, start=1):
        assert 0.8 * 0.02 * 2 ** k <= delay <= 1.2 * 0.02 * 2 ** k
    st = link.stats()
    assert st.connect_failures == 3 and st.reconnects == 0 and st.packets_received > 0


async def test_gives_up_after_max_attempts():
    FakeAir.reset(FakePeripheral(A1, "RF-1", fail_connects=100))
    link = SensorLink(SensorSpec(site="sacrum", address=A1), backoff_initial_s=0.001, max_connect_attempts=3,
                      find_timeout_s=0.5, **FAKE)
    await asyncio.wait_for(link.run(), 5)
    assert link.state in ("failed", "stopped")
    assert link.stats().connect_failures == 3


async def test_link_loss_reconnects_and_counts_gap_as_loss():
    p = FakePeripheral(A1, "RF-1", behavior=SensorBehavior(connection_interval_ms=7.5, loss_pct=10, seed=3))
    FakeAir.reset(p)
    blocks = []
    link = SensorLink(SensorSpec(site="foot_left", address=A1, runner="bob"), on_block=blocks.append,
                      backoff_initial_s=0.05, **FAKE)
    task = asyncio.create_task(link.run())
    for _ in range(3):
        while not link.is_streaming:
            await asyncio.sleep(0.005)
        # stream until this connection has lost at least one more packet on air (the draws are random, the
        # number of packets per connection event depends on the machine's timing), then drop the link
        lost_before = p.engine.packets_lost_air_
        for _ in range(1000):
            if p.engine.packets_lost_air_ > lost_before:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        p.drop_link()
        await asyncio.sleep(0.01)
    while not link.is_streaming:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.2)
    await link.stop()
    await task
    st = link.stats()
    assert st.reconnects == 3
    assert {b.sensor_id for b in blocks} == {"bob.foot_left"}
    seqs = [b.seq for b in blocks]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # one session, seq keeps unwrapping
    last = seqs[-1]
    expected_lost = sum(1 for s in p.engine.lost_seqs_ if s < last)
    assert st.packets_lost == expected_lost > 0
    assert p.engine.packets_unsent_ > 0 and p.engine.packets_lost_air_ >= 3
    assert st.packets_received == len(blocks) == last + 1 - expected_lost


async def test_slow_consumer_is_counted_not_silent():
    FakeAir.reset(FakePeripheral(A1, "RF-1"), FakePeripheral(A2, "RF-2"))
    specs = [SensorSpec(site="foot_left", address=A1), SensorSpec(site="foot_right", address=A2)]
    async with Bridge(specs, queue_size=5, **FAKE) as bridge:
        assert await bridge.wait_streaming(5)
        await asyncio.sleep(0.3)  # nobody consumes
        # read everything at one instant (no await in between): packets keep arriving until the exit
        stats = bridge.stats()
        total_dropped = bridge.blocks_dropped_
        queued = bridge.queue.qsize()
    dropped = sum(s.blocks_dropped_queue_full for s in stats.values())
    received = sum(s.packets_received for s in stats.values())
    assert dropped == total_dropped > 0
    assert queued == 5
    assert received == dropped + 5


async def test_stalled_sensor_is_reconnected_in_the_same_session():
    """The firmware hangs with the link up (no disconnect to see): the silence is detected, counted, the link is
    closed and opened again, and the stream continues in the same session with the gap counted as lost."""
    p = FakePeripheral(A1, "RF-1", behavior=SensorBehavior(connection_interval_ms=7.5, stall_at_s=0.4, seed=4))
    other = FakePeripheral(A2, "RF-2")
    FakeAir.reset(p, other)
    specs = [SensorSpec(site="foot_left", address=A1), SensorSpec(site="sacrum", address=A2)]
    blocks = []
    async with Bridge(specs, stall_timeout_s=0.3, backoff_initial_s=0.02, **FAKE) as bridge:
        assert await bridge.wait_streaming(5)
        link = bridge.links["runner1.foot_left"]
        for _ in range(1000):  # until it stalled, was reconnected and streams again
            if link.stats().reconnects >= 1 and link.is_streaming and p.engine.packets_sent_ > 0 \
                    and blocks and blocks[-1].sensor_id == "runner1.foot_left" and blocks[-1].seq > 100:
                break
            while not bridge.queue.empty():
                blocks.append(bridge.queue.get_nowait())
            await asyncio.sleep(0.01)
        while not bridge.queue.empty():
            blocks.append(bridge.queue.get_nowait())
        stats = bridge.stats()
    st = stats["runner1.foot_left"]
    assert p.engine.packets_stalled_ > 0
    assert st.stalls == 1 and st.reconnects == 1 and "stalled" in st.last_error
    mine = [b.seq for b in blocks if b.sensor_id == "runner1.foot_left"]
    assert mine == sorted(set(mine)) and max(mine) > 100
    assert st.packets_lost == sum(1 for s in p.engine.lost_seqs_ if s < mine[-1]) >= p.engine.packets_stalled_
    assert stats["runner1.sacrum"].stalls == 0 and stats["runner1.sacrum"].reconnects == 0


async def test_stopped_on_purpose_is_not_a_stall():
    FakeAir.reset(FakePeripheral(A1, "RF-1"))
    link = SensorLink(SensorSpec(site="sacrum", address=A1), stall_timeout_s=0.2, **FAKE)
    task = asyncio.create_task(link.run())
    try:
        while not link.is_streaming:
            await asyncio.sleep(0.005)
        await link.control("stop")
        n0 = link.stats().packets_received
        await asyncio.sleep(0.8)  # four stall timeouts of silence
        assert link.is_streaming and link.stats().stalls == 0 and link.stats().reconnects == 0
        await link.control("start")
        for _ in range(500):
            if link.stats().packets_received > n0 + 5:
                break
            await asyncio.sleep(0.01)
        assert link.stats().packets_received > n0 + 5
    finally:
        await link.stop()
        await task


async def test_scan_and_connect_are_serialized_on_the_adapter():
    peripherals = [FakePeripheral(f"AA:00:00:00:00:0{i}", f"RF-{i}", fail_connects=1) for i in range(1, 5)]
    FakeAir.reset(*peripherals)
    sites = ["foot_left", "foot_right", "shank_left", "sacrum"]
    specs = [SensorSpec(site=s, address=p.address, runner="ann") for s, p in zip(sites, peripherals)]
    async with Bridge(specs, backoff_initial_s=0.01, **FAKE) as bridge:
        assert await bridge.wait_streaming(10)
        while not all(s.packets_received for s in bridge.stats().values()):  # notifications of all flow together
            await asyncio.sleep(0.01)
    assert all(p.connect_attempts == 2 for p in peripherals)
    assert FakeAir.max_radio_ops == 1  # never two scans/connects at once
    # the check can fail: without the bridge's lock the four links scan and connect at the same time
    FakeAir.reset(*[FakePeripheral(p.address, p.name) for p in peripherals])
    links = [SensorLink(s, **FAKE) for s in specs]  # each its own lock
    tasks = [asyncio.create_task(link.run()) for link in links]
    while not all(link.is_streaming for link in links):
        await asyncio.sleep(0.01)
    for link in links:
        await link.stop()
    await asyncio.gather(*tasks)
    assert FakeAir.max_radio_ops > 1


async def test_bad_packets_counted_by_reason_others_unaffected_journal_keeps_them(tmp_path):
    from runform.firmware_bridge.journal import JournalReader
    from runform.firmware_bridge.protocols import runform_v1 as rf

    bad_one, good_one = FakePeripheral(A1, "RF-1"), FakePeripheral(A2, "RF-2")
    FakeAir.reset(bad_one, good_one)
    specs = [SensorSpec(site="foot_left", address=A1), SensorSpec(site="foot_right", address=A2)]
    sample = rf.encode_data_packet(0, 0, [[1, 2, 3]])
    bad = {"version": rf.encode_data_packet(0, 0, [[1, 2, 3]], version=2),
           "oversized": sample[:8] + bytes(6 * 90),
           "truncated": sample[:5],
           "multiple": sample + b"\x00"}
    async with Bridge(specs, journal_dir=tmp_path, queue_size=0, **FAKE) as bridge:
        assert await bridge.wait_streaming(5)
        for raw in bad.values():
            assert bad_one.inject(raw)
        n = bridge.stats()["runner1.foot_left"].packets_received
        for _ in range(500):  # the link keeps streaming after them
            if bridge.stats()["runner1.foot_left"].packets_received > n + 5:
                break
            await asyncio.sleep(0.01)
        stats = bridge.stats()
        assert bridge.links["runner1.foot_left"].is_streaming
    st = stats["runner1.foot_left"]
    assert st.packets_received > n + 5
    assert st.packets_malformed == len(bad)
    reasons = st.extra["malformed_reasons"]
    assert sum(reasons.values()) == len(bad)
    for word in bad:
        assert any(word in r for r in reasons), (word, reasons)
    assert "version 2" in next(r for r in reasons if "version" in r)
    g = stats["runner1.foot_right"]
    assert g.packets_malformed == 0 and g.packets_lost == 0 and g.packets_received > 0
    raws = [raw for _, raw in JournalReader(tmp_path / "runner1.foot_left.rfj").packets()]
    assert all(raw in raws for raw in bad.values())  # accepted data is never lost: the raw bytes are on disk


async def test_unknown_device_and_future_firmware_are_setup_failures_retried_slowly():
    hrm = FakePeripheral(A1, "HRM-1", heart_rate_only=True)
    future = FakePeripheral(A2, "RF-2", protocol_version=2)
    fine = FakePeripheral("AA:00:00:00:00:03", "RF-3")
    FakeAir.reset(hrm, future, fine)
    specs = [SensorSpec(site="sacrum", address=A1), SensorSpec(site="foot_left", address=A2),
             SensorSpec(site="foot_right", address=fine.address)]
    async with Bridge(specs, backoff_initial_s=0.01, backoff_max_s=30.0, **FAKE) as bridge:
        for _ in range(500):
            st = bridge.stats()
            if st["runner1.sacrum"].setup_failures and st["runner1.foot_left"].setup_failures \
                    and st["runner1.foot_right"].packets_received > 20:
                break
            await asyncio.sleep(0.01)
        st = bridge.stats()
        delays = {sid: list(link.backoff_delays_s) for sid, link in bridge.links.items()}
    u, f = st["runner1.sacrum"], st["runner1.foot_left"]
    assert u.setup_failures == 1 and u.state == "backoff"
    assert "no supported sensor service" in u.last_error and "180d" in u.last_error
    assert f.setup_failures == 1 and "version 2" in f.last_error and "supports version 1" in f.last_error
    for sid in ("runner1.sacrum", "runner1.foot_left"):  # not hammered: the next try only after backoff_max_s
        assert delays[sid] and min(delays[sid]) >= 0.8 * 30.0
    assert st["runner1.foot_right"].packets_received > 20 and st["runner1.foot_right"].setup_failures == 0
