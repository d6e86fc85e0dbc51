"""Polar PMD and RSC foot pods end to end: virtual sensors on bluezoo, bleak's real BlueZ backend."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from runform.firmware_bridge import MetricsBlock
from runform.firmware_bridge.ble import Bridge, SensorLink, SensorSpec, scan
from runform.firmware_bridge.protocols import polar_pmd as pmd
from runform.firmware_bridge.simulator import RunnerProfile
from runform.firmware_bridge.virtual import SensorBehavior, VirtualPolarSensor, VirtualRscPod

from .test_e2e_bluezoo import FAST, HCI0, _collect, _report, _stats_now

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_polar_h10_scan_connect_stream_loss_reconnect(sensors):
    # 18.75 ms connection interval: not a divisor of the 180 ms frame period (no phase lock)
    beh = SensorBehavior(connection_interval_ms=18.75, loss_pct=6.0, clock_drift_ppm=40.0, disconnect_at_s=(2.5,),
                         seed=21)
    vs = await sensors("sacrum", cls=VirtualPolarSensor, model="H10", compressed=True, behavior=beh,
                       profile=RunnerProfile(cadence_spm=172))
    found = {f.address: f for f in await scan(1.2, adapter=HCI0, read_battery=True)}
    f = found[vs.address_]
    assert f.kind == "polar_pmd" and f.name == vs.name and f.name.startswith("Polar H10 ")
    assert f.rssi_dbm is not None and abs(f.battery_pct - vs.battery_pct()) <= 1
    spf = vs.samples_per_frame

    blocks = []
    spec = SensorSpec(site="sacrum", address=vs.address_, runner="pat", sampling_rate_hz=200, range_g=8)
    async with Bridge([spec], adapter=HCI0, **FAST) as bridge:
        assert await bridge.wait_streaming(10)
        link = bridge.links["pat.sacrum"]
        proto = link.protocol_
        assert (proto.kind, proto.sampling_rate_hz, proto.range_g, proto.factor) == ("polar_pmd", 200.0, 8.0, 1.0)
        assert await link.control("features") == {pmd.MeasurementType.ACC}
        await _collect(bridge, 5.5, blocks)
        st = _stats_now(bridge, blocks)["pat.sacrum"]
    ok = int(pmd.Status.SUCCESS)
    acc_cmds = [(op, status) for op, t, status in vs.commands_ if t == pmd.MeasurementType.ACC]
    assert acc_cmds[:2] == [(pmd.OpCode.GET_SETTINGS, ok), (pmd.OpCode.START, ok)]
    assert vs.link_drops_ == 1 and st.reconnects == 1
    assert acc_cmds.count((pmd.OpCode.START, ok)) == 2   # started again on the new connection
    assert acc_cmds[-1] == (pmd.OpCode.STOP, ok)         # clean stop on exit
    assert all(b.n_samples == spf and not b.arrival_stamped and b.segment == 0 for b in blocks)
    assert [b.seq for b in blocks] == sorted({b.seq for b in blocks})
    # samples: gravity on average, never beyond the range
    acc = np.concatenate([b.acc_ms2 for b in blocks])
    assert 7.0 < np.linalg.norm(acc.mean(axis=0)) < 12.5 and np.abs(acc).max() <= 8 * 9.80665 + 1e-6
    # every block matched to the frame the sensor sent (by its first tick) -> timestamp error vs the truth
    seqs = [vs.seq_for_tick(b.first_tick) for b in blocks]
    assert None not in seqs and seqs == sorted(set(seqs))
    first, last = seqs[0], seqs[-1]
    lost = [s for s in vs.engine_.lost_seqs_ if first < s < last]
    assert len(seqs) == last - first + 1 - len(lost)
    assert st.packets_lost == len(lost) > 0 and st.extra["samples_lost"] == len(lost) * spf
    errs = np.concatenate([b.time_s - vs.true_time_s(s) for b, s in zip(blocks, seqs)]) * 1e3
    settled = np.concatenate([b.time_s - vs.true_time_s(s) for b, s in zip(blocks, seqs)
                              if b.arrival_ns * 1e-9 > blocks[0].arrival_ns * 1e-9 + 1.5]) * 1e3
    _report("polar_h10_timestamp_error", mean_ms=float(np.mean(np.abs(settled))),
            p99_ms=float(np.percentile(np.abs(settled), 99)), max_all_ms=float(np.max(np.abs(errs))),
            frames=len(blocks), frames_lost=len(lost), lost_air=vs.engine_.packets_lost_air_,
            samples_per_frame=spf, drift_ppm_est=st.drift_ppm)
    assert np.mean(np.abs(settled)) < 25.0
    assert st.clock_segments == 1


async def test_polar_rejects_unsupported_rate_with_clear_error(sensors):
    vs = await sensors("sacrum", cls=VirtualPolarSensor, model="H10")
    link = SensorLink(SensorSpec(site="sacrum", address=vs.address_, sampling_rate_hz=500), adapter=HCI0,
                      reconnect=False, find_timeout_s=5.0)
    await asyncio.wait_for(link.run(), 20)
    st = link.stats()
    assert st.state == "failed" and st.connect_failures == 1
    assert "500 Hz is not offered" in st.last_error and "[25, 50, 100, 200]" in st.last_error
    assert not vs.streaming


async def test_rsc_pod_metrics_arrive_coarse(sensors):
    pod = await sensors("foot_left", cls=VirtualRscPod, interval_s=0.2, cadence_convention="strides",
                        profile=RunnerProfile(cadence_spm=170, speed_ms=3.3), behavior=SensorBehavior(seed=4))
    found = {f.address: f for f in await scan(1.2, adapter=HCI0, read_battery=True)}
    assert found[pod.address_].kind == "rsc" and found[pod.address_].battery_pct == pod.battery_pct()
    blocks = []
    async with Bridge([SensorSpec(site="foot_left", address=pod.address_)], adapter=HCI0, **FAST) as bridge:
        assert await bridge.wait_streaming(10)
        await _collect(bridge, 3.0, blocks)
        st = _stats_now(bridge, blocks)["runner1.foot_left"]
        proto = bridge.links["runner1.foot_left"].protocol_
    assert blocks and all(isinstance(b, MetricsBlock) and b.coarse and b.arrival_stamped for b in blocks)
    sent = list(pod.sent_)
    assert len(blocks) == st.packets_received and len(sent) - len(blocks) in (0, 1)  # the last may be in flight
    for b, (t_sent, speed, cadence, raw, running) in zip(blocks, sent):
        assert b.cadence_raw_per_min == raw and b.cadence_spm == 2 * raw      # strides -> steps per minute
        assert abs(b.cadence_spm - cadence) <= 1.0 and abs(b.speed_ms - speed) <= 1 / 256
        assert abs(b.time_s - t_sent) < 0.5 and b.is_running == running
    late = [b for b in blocks if b.time_s > blocks[0].time_s + 1.5]
    assert late and all(abs(b.cadence_spm - 170) <= 10 and abs(b.speed_ms - 3.3) < 0.2 for b in late)
    assert all(b.stride_length_m == pytest.approx(120 * b.speed_ms / b.cadence_spm, abs=0.03) for b in late)
    assert proto.convention_ == "strides"
    assert st.nominal_rate_hz is None and st.extra["coarse"] and st.extra["rsc_location"] == "top_of_shoe"
    _report("rsc_pod", notifications=len(blocks), cadence_spm_last=blocks[-1].cadence_spm,
            speed_ms_last=blocks[-1].speed_ms)
