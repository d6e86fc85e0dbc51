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
