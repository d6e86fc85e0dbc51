"""Clock resets that go backwards by less than the link-latency bound (the defect: a sensor rebooting < 5 s after
it started streaming kept its old clock segment) and things that must NOT look like resets."""
import numpy as np
import pytest

from runform.firmware_bridge import ClockSync, SensorDecoder
from runform.firmware_bridge._bench import simulate_link
from runform.firmware_bridge.protocols import PolarPmd, RunformV1, polar_pmd, runform_v1 as rf

TICK_HZ = 32768.0
JUMPS_S = [0.1, 1.0, 4.0, 60.0]


def _two_parts(jump_s, *, before_s=3.0, after_s=8.0, gap_s=0.05, fs=1000.0, spp=19, tick_hz=TICK_HZ,
               tick_bits=32, seq_restart=False, seed=0, t0_s=100.0, tick0=37 * 32768):
    """A stream that runs ``before_s``; then the sensor restarts: its first sample after ``gap_s`` carries a tick
    ``jump_s`` BEHIND the last sample it had delivered; optionally the sequence counter restarts at 0."""
    drift_ppm = 30.0
    a = simulate_link(before_s, sampling_rate_hz=fs, samples_per_packet=spp, tick_hz=tick_hz, tick_bits=tick_bits,
                      drift_ppm=drift_ppm, loss=0.0, seed=seed, t0_s=t0_s, tick0=tick0)
    t0_b = t0_s + before_s + gap_s
    last_delivered = int(a.first_tick[-1]) + (spp - 1) * tick_hz / fs
    tick_b = last_delivered - jump_s * tick_hz
    seq0 = 0 if seq_restart else int(a.seq[-1]) + 1
    b = simulate_link(after_s, sampling_rate_hz=fs, samples_per_packet=spp, tick_hz=tick_hz, tick_bits=tick_bits,
                      drift_ppm=drift_ppm, loss=0.0, seed=seed + 1, t0_s=t0_b, tick0=int(round(tick_b)), seq0=seq0)
    return a, b


@pytest.mark.parametrize("jump_s", JUMPS_S)
def test_clocksync_backwards_jump_is_a_new_segment(jump_s):
    a, b = _two_parts(jump_s)
    clock = ClockSync(TICK_HZ, 1000.0)
    for i in range(len(a.seq)):
        clock.update(int(a.first_tick[i]), 19, int(a.arrival_ns[i]))
    assert clock.segment_ == 0
    last_a = clock.map_ticks([clock.last_first_tick_])[0]
    est = np.array([clock.update(int(b.first_tick[i]), 19, int(b.arrival_ns[i])) for i in range(len(b.seq))])
    assert clock.segment_ == 1 and clock.resets_backwards_ == 1
    assert est[0, 0] > last_a  # host time keeps going forward across the reset
    sel = b.true_time_s[:, 0] > b.true_time_s[0, 0] + 2.0
    assert np.abs(est[sel] - b.true_time_s[sel]).mean() < 1.5e-3


@pytest.mark.parametrize("jump_s", JUMPS_S)
@pytest.mark.parametrize("seq_restart", [False, True], ids=["seq_continues", "seq_restarts"])
def test_decoder_runform_reboot_soon_after_start(jump_s, seq_restart):
    """Reboot 0.5 s after streaming started: the restarted seq (0 after ~26) lies inside the reorder window, so
    without the tick it would be taken for a duplicate of packet 0 and dropped."""
    a, b = _two_parts(jump_s, before_s=0.5, seq_restart=seq_restart, seed=3)
    dec = SensorDecoder(RunformV1(rf.SensorConfig(sampling_rate_hz=1000.0, gyro_enabled=False)), sensor_id="s")
    z = np.zeros((19, 3), np.int16)
    blocks, truth = [], []
    for sim in (a, b):
        for i in range(len(sim.seq)):
            pkt = rf.encode_data_packet(int(sim.seq[i]), int(sim.first_tick[i]), z, None)
            out = dec.feed(pkt, int(sim.arrival_ns[i]))
            assert len(out) == 1
            blocks += out
            truth.append(sim.true_time_s[i])
    s = dec.stats()
    assert s.received == len(a.seq) + len(b.seq) and s.duplicates == 0 and s.lost == 0
    assert s.restarts == int(seq_restart) and s.clock_segments == 2
    segs = np.array([blk.segment for blk in blocks])
    assert (segs[:len(a.seq)] == 0).all() and (segs[len(a.seq):] == 1).all()
    useq = [blk.seq for blk in blocks]
    assert all(y > x for x, y in zip(useq, useq[1:]))  # published numbering keeps increasing
    t = np.array([blk.time_s for blk in blocks])
    tt = np.array(truth)
    sel = tt[:, 0] > b.true_time_s[0, 0] + 2.0
    assert np.abs(t[sel] - tt[sel]).mean() < 1.5e-3


@pytest.mark.parametrize("jump_s", JUMPS_S)
def test_decoder_polar_backwards_jump(jump_s):
    """Polar frames: no seq, u64 ns tick of the LAST sample; a backwards step of the clock is a reset."""
    fs, n = 200.0, 36
    a, b = _two_parts(jump_s, before_s=3.0, after_s=25.0, fs=fs, spp=n, tick_hz=1e9, tick_bits=64, seed=5,
                      tick0=700_000_000 * 10**9)
    dec = SensorDecoder(PolarPmd(fs, range_g=8), sensor_id="h10")
    z = np.zeros((n, 3), np.int64)
    last_tick = round((n - 1) * 1e9 / fs)
    segs, errs = [], []
    for part, sim in enumerate((a, b)):
        for i in range(len(sim.seq)):
            (blk,) = dec.feed(polar_pmd.encode_frame(z, int(sim.first_tick[i]) + last_tick, compressed=True),
                              int(sim.arrival_ns[i]))
            segs.append(blk.segment)
            if part == 1 and sim.true_time_s[i, 0] > sim.true_time_s[0, 0] + 10.0:
                errs.append(np.abs(blk.time_s - sim.true_time_s[i]))
    s = dec.stats()
    assert s.clock_segments == 2 and segs.count(0) == len(a.seq)
    assert s.lost == 0 and s.samples_lost == 0 and s.duplicates == 0
    assert np.mean(errs) < 2e-3


def test_polar_step_back_hidden_from_ticks_found_from_arrival_delays():
    """Frames of 36 samples (180 ms): a clock set back by 0.1 s 0.3 s after the last frame leaves the next tick
    AHEAD of the last delivered one. Only the arrival delays, 0.1 s longer for good, show it."""
    fs, n, tick_hz = 200.0, 36, 1e9
    a = simulate_link(20.0, sampling_rate_hz=fs, samples_per_packet=n, tick_hz=tick_hz, tick_bits=64,
                      drift_ppm=30.0, loss=0.0, seed=21, t0_s=100.0, tick0=700_000_000 * 10**9, conn_interval_s=0.011)
    t0_b = 100.0 + 20.0 + 0.3
    tick_b = int(a.first_tick[-1]) + (n - 1) * 5e6 + 0.3e9 - 0.1e9
    b = simulate_link(20.0, sampling_rate_hz=fs, samples_per_packet=n, tick_hz=tick_hz, tick_bits=64,
                      drift_ppm=30.0, loss=0.0, seed=22, t0_s=t0_b, tick0=int(tick_b), conn_interval_s=0.011)
    dec = SensorDecoder(PolarPmd(fs), sensor_id="h10")
    z = np.zeros((n, 3), np.int64)
    last = round((n - 1) * 1e9 / fs)
    errs = []
    for part, sim in enumerate((a, b)):
        for i in range(len(sim.seq)):
            (blk,) = dec.feed(polar_pmd.encode_frame(z, int(sim.first_tick[i]) + last), int(sim.arrival_ns[i]))
            if part == 1 and sim.true_time_s[i, 0] > t0_b + 12.0:
                errs.append(np.abs(blk.time_s - sim.true_time_s[i]))
    assert dec.clock.resets_delay_step_ == 1 and dec.stats().clock_segments == 2
    assert np.mean(errs) < 3e-3
    assert abs(dec.clock.drift_ppm_) < 100.0   # the step did not leak into the drift (it did: 2000 ppm, clipped)


def test_reordered_packet_is_not_a_reset():
    sim = simulate_link(5.0, loss=0.0, seed=7)
    dec = SensorDecoder(RunformV1(rf.SensorConfig(sampling_rate_hz=1000.0, gyro_enabled=False)), sensor_id="s")
    z = np.zeros((19, 3), np.int16)
    order = list(range(len(sim.seq)))
    order[100], order[101] = order[101], order[100]   # one packet overtakes another
    for i in order:
        dec.feed(rf.encode_data_packet(int(sim.seq[i]), int(sim.first_tick[i]), z, None), int(sim.arrival_ns[i]))
    s = dec.stats()
    assert s.clock_segments == 1 and s.reordered == 1 and s.lost == 0 and s.restarts == 0
    assert dec.clock.resets_backwards_ == 0


def test_clock_without_seq_repeated_frame_is_a_duplicate_not_a_reset():
    fs, n = 200.0, 36
    dec = SensorDecoder(PolarPmd(fs), sensor_id="h10")
    z = np.zeros((n, 3), np.int64)
    t_ns = 700_000_000 * 10**9
    period = round(1e9 / fs)
    for k in range(20):
        frame = polar_pmd.encode_frame(z, t_ns + (k * n + n - 1) * period)
        assert len(dec.feed(frame, 10**12 + k * 180_000_000 + 5_000_000)) == 1
        if k == 10:
            assert dec.feed(frame, 10**12 + k * 180_000_000 + 9_000_000) == []   # sent twice
    s = dec.stats()
    assert s.duplicates == 1 and s.clock_segments == 1 and s.received == 20


def test_backwards_by_less_than_tolerance_stays_in_segment():
    clock = ClockSync(TICK_HZ, 1000.0, backwards_tolerance_samples=3.0)
    spp_ticks = 19 * TICK_HZ / 1000.0
    for k in range(50):
        clock.update(int(k * spp_ticks), 19, 10**12 + k * 19_000_000 + 2_000_000)
    clock.update(int(49 * spp_ticks - 2 * TICK_HZ / 1000.0), 19, 10**12 + 50 * 19_000_000)  # 2 periods back
    assert clock.segment_ == 0
    clock.update(int(49 * spp_ticks - 5 * TICK_HZ / 1000.0), 19, 10**12 + 51 * 19_000_000)  # 5 periods back
    assert clock.segment_ == 1 and clock.resets_backwards_ == 1
