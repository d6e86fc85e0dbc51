"""Benchmarks of the bridge layer (``make bench``) and the BLE link simulation used to test timestamping.

``run(quick)`` returns a dict of measured numbers: packets decoded per second on one core for each protocol at
realistic packet sizes, the clock-mapping cost per packet, journal append throughput, and the timestamp
accuracy of ``ClockSync`` vs arrival stamping on a simulated link with known truth.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["LinkSimulation", "simulate_link", "timestamp_errors", "run"]


@dataclass(frozen=True)
class LinkSimulation:
    """Packets of a simulated sensor as the host sees them (in arrival order).

    ``first_tick`` raw (wrapped to ``tick_bits``), ``arrival_ns`` host monotonic, ``true_time_s`` (n_packets,
    samples_per_packet) host time at which each sample was really taken, ``seq`` raw 16-bit.
    """

    seq: np.ndarray
    first_tick: np.ndarray
    n_samples: np.ndarray
    arrival_ns: np.ndarray
    true_time_s: np.ndarray
    tick_hz: float
    sampling_rate_hz: float
    lost: int


def simulate_link(duration_s: float = 120.0, *, sampling_rate_hz: float = 1000.0, samples_per_packet: int = 19,
                  tick_hz: float = 32768.0, tick_bits: int = 32, drift_ppm: float = 50.0,
                  conn_interval_s: float = 0.010, burst_every_s: float = 3.0, burst_stall_s: tuple = (0.05, 0.25),
                  loss: float = 0.02, host_jitter_s: float = 0.0003, tick0: int = 0, seq0: int = 0,
                  t0_s: float = 1000.0, odr_error_ppm: float = 0.0, seed: int = 0) -> LinkSimulation:
    """Simulate a BLE notification stream with known truth (vectorised).

    The sensor clock runs ``drift_ppm`` fast against the host clock; samples are taken every
    ``tick_hz / sampling_rate_hz`` sensor ticks (the IMU's output data rate may be off by ``odr_error_ppm``
    against the sensor clock, as real MEMS ODRs are). A packet is ready when its last sample is taken and leaves at
    the next connection event (events every ``conn_interval_s``, with random phase); every ~``burst_every_s``
    the link stalls for ``burst_stall_s`` (retransmissions, scanning) and the queued packets arrive in one burst.
    Packets are lost with probability ``loss``; the host adds exponential scheduling jitter.
    """
    rng = np.random.default_rng(seed)
    n_pkt = int(duration_s * sampling_rate_hz / samples_per_packet)
    k = np.arange(n_pkt * samples_per_packet, dtype=np.float64)
    ticks_per_sample = tick_hz / (sampling_rate_hz * (1.0 + odr_error_ppm * 1e-6))
    sample_tick = tick0 + k * ticks_per_sample                       # exact sensor ticks
    host_t = t0_s + (sample_tick - tick0) / tick_hz / (1.0 + drift_ppm * 1e-6)
    true_t = host_t.reshape(n_pkt, samples_per_packet)
    ready = true_t[:, -1]
    phase = rng.uniform(0, conn_interval_s)
    depart = np.ceil((ready - phase) / conn_interval_s) * conn_interval_s + phase
    # stalls: during [s, s + d) nothing leaves; packets queue and go at the end of the stall
    n_b = int(duration_s / burst_every_s) + 1
    starts = t0_s + np.cumsum(rng.exponential(burst_every_s, n_b))
    lens = rng.uniform(*burst_stall_s, n_b)
    idx = np.searchsorted(starts, depart, side="right") - 1
    ok = idx >= 0
    inside = ok & (depart < starts[np.clip(idx, 0, None)] + lens[np.clip(idx, 0, None)])
    depart = np.where(inside, starts[np.clip(idx, 0, None)] + lens[np.clip(idx, 0, None)], depart)
    arrival = depart + 0.0002 + rng.exponential(host_jitter_s, n_pkt)
    arrival = np.maximum.accumulate(arrival)           # one link delivers in order
    keep = rng.random(n_pkt) >= loss
    first_tick = np.round(sample_tick.reshape(n_pkt, samples_per_packet)[:, 0]).astype(np.int64)
    m = (1 << tick_bits) - 1 if tick_bits < 64 else -1
    return LinkSimulation(seq=((seq0 + np.arange(n_pkt)) & 0xFFFF)[keep], first_tick=(first_tick & m)[keep],
                          n_samples=np.full(int(keep.sum()), samples_per_packet),
                          arrival_ns=np.round(arrival * 1e9).astype(np.int64)[keep], true_time_s=true_t[keep],
                          tick_hz=tick_hz, sampling_rate_hz=sampling_rate_hz, lost=int((~keep).sum()))


def timestamp_errors(sim: LinkSimulation, clock=None, skip_s: float = 30.0) -> dict:
    """Map ``sim`` through ``ClockSync`` and through arrival stamping; errors (ms) after ``skip_s``."""
    from .timestamping import ClockSync
    clock = clock or ClockSync(sim.tick_hz, sim.sampling_rate_hz, tick_bits=32)
    est = np.empty_like(sim.true_time_s)
    for i in range(len(sim.seq)):
        est[i] = clock.update(int(sim.first_tick[i]), int(sim.n_samples[i]), int(sim.arrival_ns[i]))
    n = sim.true_time_s.shape[1]
    arr = sim.arrival_ns[:, None] / 1e9 - np.arange(n - 1, -1, -1) / sim.sampling_rate_hz
    sel = sim.true_time_s[:, 0] >= sim.true_time_s[0, 0] + skip_s
    e_sync = np.abs(est[sel] - sim.true_time_s[sel]) * 1e3
    e_arr = np.abs(arr[sel] - sim.true_time_s[sel]) * 1e3
    return {"sync_mean_ms": float(e_sync.mean()), "sync_p99_ms": float(np.percentile(e_sync, 99)),
            "sync_max_ms": float(e_sync.max()),
            "arrival_mean_ms": float(e_arr.mean()), "arrival_p99_ms": float(np.percentile(e_arr, 99)),
            "drift_ppm_est": clock.drift_ppm_, "segments": clock.segment_ + 1, "packets": int(len(sim.seq))}


def _rate(fn, items, min_s: float) -> float:
    n = 0
    t0 = time.perf_counter()
    while True:
        for it in items:
            fn(it)
        n += len(items)
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return n / dt


def run(quick: bool = False) -> dict:
    """Measure decode throughput (packets/s on one core), ClockSync cost and journal throughput."""
    from .protocols import metamotion, movesense, polar_pmd, rsc, runform_v1
    from .timestamping import ClockSync, SensorDecoder
    from .journal import JournalWriter

    min_s = 0.15 if quick else 1.0
    rng = np.random.default_rng(1)
    out: dict = {"quick": quick, "decode_packets_per_s": {}, "packet_bytes": {}}

    def bench(name, proto, packets):
        out["decode_packets_per_s"][name] = _rate(lambda p: proto.decode(p, 0), packets, min_s)
        out["packet_bytes"][name] = int(np.mean([len(p) for p in packets]))

    acc = rng.integers(-4000, 4000, (19 * 64, 3))
    gyr = rng.integers(-2000, 2000, (19 * 64, 3))
    cfg = runform_v1.SensorConfig(sampling_rate_hz=1000.0, gyro_enabled=True)
    pk_6 = runform_v1.packetize(acc, gyr, seq0=0, tick0=0, ticks_per_sample=32.768, mtu=247)
    bench("runform_v1_mtu247_acc_gyr_19", runform_v1.RunformV1(cfg), pk_6)
    pk_23 = runform_v1.packetize(acc[:128], None, seq0=0, tick0=0, ticks_per_sample=32.768, mtu=23)
    bench("runform_v1_mtu23_acc_2", runform_v1.RunformV1(runform_v1.SensorConfig(gyro_enabled=False)), pk_23)
    walk = np.cumsum(rng.integers(-40, 40, (36 * 32, 3)), axis=0)
    polar_raw = [polar_pmd.encode_frame(walk[i:i + 36], 10**15 + i, frame_type=1) for i in range(0, len(walk), 36)]
    bench("polar_pmd_raw_36", polar_pmd.PolarPmd(200.0), polar_raw)
    walk2 = np.cumsum(rng.integers(-60, 60, (58 * 16, 3)), axis=0)
    polar_d = [polar_pmd.encode_frame(walk2[i:i + 58], 10**15 + i, compressed=True) for i in range(0, len(walk2), 58)]
    bench("polar_pmd_delta_58", polar_pmd.PolarPmd(52.0, model="Verity Sense"), polar_d)
    ms = [movesense.encode_acc_data(1, i * 80, rng.normal(0, 9.8, (8, 3))) for i in range(64)]
    bench("movesense_8", movesense.Movesense(104.0), ms)
    mm = [metamotion.encode_acc(rng.integers(-2000, 2000, (3, 3))) for _ in range(64)]
    bench("metamotion_packed_3", metamotion.MetaMotion(800.0), mm)
    rs = [rsc.encode_measurement(3.3, 86, 1.15, 1234.5, True) for _ in range(64)]
    bench("rsc", rsc.Rsc(), rs)

    sim = simulate_link(20.0 if quick else 60.0, seed=3)
    cs = ClockSync(sim.tick_hz, sim.sampling_rate_hz)
    items = list(zip(sim.first_tick.tolist(), sim.arrival_ns.tolist()))
    t0 = time.perf_counter()
    for tk, an in items:
        cs.update(tk, 19, an)
    out["clocksync_packets_per_s"] = len(items) / (time.perf_counter() - t0)

    dec = SensorDecoder(runform_v1.RunformV1(cfg), sensor_id="bench", site="foot_left")
    pk = runform_v1.packetize(np.tile(acc, (4, 1)), np.tile(gyr, (4, 1)), seq0=0, tick0=0,
                              ticks_per_sample=32.768, mtu=247)
    t0 = time.perf_counter()
    for i, p in enumerate(pk):
        dec.feed(p, 10**12 + i * 19_000_000)
    out["pipeline_packets_per_s_runform_v1"] = len(pk) / (time.perf_counter() - t0)

    with tempfile.TemporaryDirectory() as d:
        w = JournalWriter(os.path.join(d, "b.rfj"), {"sensor_id": "bench", "protocol": {"kind": "runform_v1"}},
                          flush_interval_ms=100)
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < min_s:
            for p in pk:
                w.append(p, n)
                n += 1
        w.close()
        dt = time.perf_counter() - t0
        out["journal_records_per_s"] = n / dt
        out["journal_mb_per_s"] = w.bytes_written_ / dt / 1e6

    acc_sim = simulate_link(120.0 if quick else 600.0, seed=7)
    out["timestamp_accuracy"] = timestamp_errors(acc_sim, skip_s=30.0)
    return out


if __name__ == "__main__":   # pragma: no cover
    import json
    import sys
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
