"""Bad sensors end to end through bleak's real BlueZ backend and bluezoo: a device that is not a supported sensor,
a firmware of another protocol version, a sensor that hangs with the link up, a sensor that is switched off and on
again; connecting by advertised name. Each is counted and reported while the other sensors stream on."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from runform.firmware_bridge.ble import Bridge, SensorSpec, scan
from runform.firmware_bridge.virtual import SensorBehavior, VirtualHeartRateStrap

pytestmark = pytest.mark.asyncio(loop_scope="session")
HCI0 = "hci0"
FAST = dict(backoff_initial_s=0.1, backoff_max_s=1.0, find_timeout_s=5.0)


async def _until(cond, bridge, blocks, timeout_s=30.0):
    """Drain the bridge's queue into ``blocks`` until ``cond()`` holds (generous timeout: slow machines)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        while not bridge.queue.empty():
            blocks.append(bridge.queue.get_nowait())
        if cond():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_by_name_unknown_device_and_future_firmware(sensors):
    by_name = await sensors("sacrum", samples_per_packet=20)
    strap = await sensors("sacrum", cls=VirtualHeartRateStrap)
    future = await sensors("foot_left", samples_per_packet=20, protocol_version=2)
    listed = {f.address for f in await scan(1.2, adapter=HCI0)}
    assert by_name.address_ in listed and strap.address_ not in listed  # a plain HR strap is no sensor of ours
    assert strap.address_ in {f.address for f in await scan(1.2, adapter=HCI0, all_devices=True)}
    specs = [SensorSpec(site="sacrum", name=by_name.name, runner="ann"),
             SensorSpec(site="sacrum", address=strap.address_, runner="bob"),
             SensorSpec(site="foot_left", address=future.address_, runner="bob")]
    blocks = []
    async with Bridge(specs, adapter=HCI0, backoff_initial_s=0.1, backoff_max_s=20.0, find_timeout_s=5.0) as bridge:
        ok = await _until(lambda: bridge.stats()["bob.sacrum"].setup_failures >= 1
                          and bridge.stats()["bob.foot_left"].setup_failures >= 1
                          and sum(b.sensor_id == "ann.sacrum" for b in blocks) > 50, bridge, blocks)
        stats = bridge.stats()
    assert ok, {sid: (s.state, s.last_error) for sid, s in stats.items()}
    good = stats["ann.sacrum"]
    assert good.address == by_name.address_ and good.setup_failures == 0 and good.connect_failures == 0
    mine = [b for b in blocks if b.sensor_id == "ann.sacrum"]
    assert good.packets_lost == sum(1 for s in by_name.engine_.lost_seqs_ if s < mine[-1].seq)
    assert len(mine) == mine[-1].seq + 1 - good.packets_lost
    unknown, fut = stats["bob.sacrum"], stats["bob.foot_left"]
    assert unknown.setup_failures == 1 and "no supported sensor service" in unknown.last_error
    assert "0000180d" in unknown.last_error and unknown.packets_received == 0
    assert fut.setup_failures == 1 and "CONFIG declares protocol version 2" in fut.last_error
    assert fut.packets_received == 0 and not future.config.streaming  # never started a stream it cannot read
    assert {b.sensor_id for b in blocks} == {"ann.sacrum"}


async def test_sensor_hangs_with_link_up_is_reconnected_same_session(sensors):
    hung = await sensors("foot_left", samples_per_packet=20, behavior=SensorBehavior(stall_at_s=0.8, seed=21))
    other = await sensors("foot_right", samples_per_packet=20)
    specs = [SensorSpec(site="foot_left", address=hung.address_), SensorSpec(site="foot_right", address=other.address_)]
    blocks = []
    async with Bridge(specs, adapter=HCI0, stall_timeout_s=0.6, **FAST) as bridge:
        assert await bridge.wait_streaming(10)
        link = bridge.links["runner1.foot_left"]
        mark = {}

        def streams_again():  # reconnected, then 30 more packets
            st = link.stats()
            if st.reconnects >= 1:
                mark.setdefault("n", st.packets_received)
                return st.packets_received > mark["n"] + 30
            return False
        ok = await _until(streams_again, bridge, blocks)
        stats = bridge.stats()
    st = stats["runner1.foot_left"]
    assert ok, (st.state, st.last_error, st.stalls)
    assert hung.engine_.packets_stalled_ > 0 and hung.link_drops_ == 0  # the sensor itself never dropped the link
    assert st.stalls == 1 and st.reconnects == 1 and st.last_error.startswith("stalled")
    seqs = [b.seq for b in blocks if b.sensor_id == "runner1.foot_left"]
    assert seqs == sorted(set(seqs))
    assert st.packets_lost == sum(1 for s in hung.engine_.lost_seqs_ if s < seqs[-1])  # the hang: counted lost
    assert stats["runner1.foot_right"].stalls == 0 and stats["runner1.foot_right"].packets_lost == 0


async def test_sensor_switched_off_and_on_continues_the_session(sensors):
    """Power cycle: the sensor's sequence counter and clock restart from scratch (its clock goes BACK by the
    time it had streamed). Same sensor_id, published seq keeps increasing, a new clock segment, host time keeps
    going forward and matches the simulator's truth after the restart too."""
    vs = await sensors("sacrum", samples_per_packet=20, behavior=SensorBehavior(clock_drift_ppm=30.0, seed=22))
    blocks = []
    async with Bridge([SensorSpec(site="sacrum", address=vs.address_)], adapter=HCI0, **FAST) as bridge:
        assert await bridge.wait_streaming(10)
        link = bridge.links["runner1.sacrum"]
        assert await _until(lambda: len(blocks) > 60, bridge, blocks)
        before = len(blocks)
        adapter, address = vs.adapter_, vs.address_
        await vs.stop()
        assert await _until(lambda: not link.is_streaming, bridge, blocks)
        await vs.start(adapter, address)
        ok = await _until(lambda: link.stats().reconnects == 1 and len(blocks) > before + 120, bridge, blocks)
        st = link.stats()
    assert ok, (st.state, st.last_error)
    assert {b.sensor_id for b in blocks} == {"runner1.sacrum"}
    seqs = [b.seq for b in blocks]
    assert all(b > a for a, b in zip(seqs, seqs[1:]))
    segs = np.array([b.segment for b in blocks])
    assert segs[0] == 0 and segs[-1] == 1 and np.all(np.diff(segs) >= 0)
    assert st.clock_segments == 2 and st.extra["restarts"] == 1
    t = np.concatenate([b.time_s for b in blocks])
    assert np.all(np.diff(t) > -0.05)
    after = [b for b in blocks if b.segment == 1]
    first_engine_seq = min(s for s in range(1000) if s not in set(vs.engine_.lost_seqs_))
    offset = after[0].seq - first_engine_seq  # host numbering of the restarted counter
    late = after[len(after) // 2:]
    err = np.concatenate([b.time_s - vs.true_time_s(b.seq - offset) for b in late])
    assert np.mean(np.abs(err)) < 25e-3
