"""MQTT benchmark: sensor packet in -> cue received by a separate subscriber process.

For 1, 10 and 100 simulated runners (500 Hz, 20-sample runform v1 packets = 25 packets/s per runner, real
time) the edge (decode + clock sync, raw journal on disk, the real detector, metrics, cue engine, one MQTT
connection per runner) runs against a fresh Mosquitto; a separate Python process subscribes to every runner's
cues, steps and metrics and stamps each message with ``time.monotonic_ns()`` (CLOCK_MONOTONIC is machine-wide
on Linux, so it compares with the ``trigger_arrival_ns`` a cue carries: the arrival of the packet whose
processing produced the cue). The cue engine reminds every 0.5 s, so there are cues to time.

What is and is not timed:

- The sensor signals are simulated BEFORE the run (:func:`~runform.server.edge.simulated_packets`; the simulator
  synthesises body motion per sample and costs ~20x more CPU than the edge's work on the packets) and replayed
  in real time by :class:`~runform.server.edge.PacketReplaySource` (one shared 2 ms
  :class:`~runform.server.edge.ReplayPacer` per process: a timer per packet of every runner would cost more CPU
  than the edge's work on the packet; a BLE adapter delivers in connection-event bursts too). Each packet's
  ``arrival_ns`` is the time it was DUE, so the pacer's wait and a busy event loop that picks a packet up late
  count against the latency (``packet_pickup_lag_*``: how late the loop picked packets up, the share of the
  latency spent waiting for the CPU before any work on the packet started). Runners' packets are spread over
  the 40 ms packet period (real sensors are not phase-locked); four distinct recordings are shared by the
  runners with different start offsets.
- The latency excludes the DSP's own confirmation delay by construction: the trigger is the packet that
  completed the step, not the step's initial contact.
- 100 runners run as ``workers`` processes (:func:`runform.server._workers.run_sharded`), default
  ``max(2, os.cpu_count())``; CPU is the sum of the edge processes' user+system time over the run, in % of one
  core, measured from 2 s after the start (connections, journal headers, kernel loading excluded) to the end.

``run(quick=False) -> dict`` (``runform bench`` / ``make bench``); ``python -m runform.server._bench_mqtt [--quick]``.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_SUBSCRIBER = r"""
import json, sys, time, threading, resource
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, out = int(sys.argv[1]), sys.argv[2]
rows, n = [], [0]
def on_message(c, u, msg):
    t = time.monotonic_ns()
    n[0] += 1
    if msg.topic.endswith("/cues"):
        d = json.loads(msg.payload)
        rows.append((t, d.get("trigger_arrival_ns"), d.get("runner")))
def on_connect(c, u, f, rc, p):
    c.subscribe("runform/v1/+/cues", qos=0); c.subscribe("runform/v1/+/+/steps", qos=1)
    c.subscribe("runform/v1/+/metrics", qos=0)
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub", protocol=mqtt.MQTTv5)
c.username_pw_set("edge", "runform")
c.on_message, c.on_connect = on_message, on_connect
import socket
c.on_socket_open = lambda c, u, s: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.connect("127.0.0.1", port); c.loop_start()
print("ready", flush=True)
sys.stdin.readline()
c.disconnect(); c.loop_stop()
ru = resource.getrusage(resource.RUSAGE_SELF)
json.dump({"cues": rows, "messages": n[0], "cpu_s": ru.ru_utime + ru.ru_stime}, open(out, "w"))
"""

N_RECORDINGS = 4
START_STEP_PACKETS = 3  # runners sharing a recording start 3 packets (120 ms) apart
GOLDEN = (math.sqrt(5) - 1) / 2


def _recordings(path: Path, n_runners: int, duration_s: float) -> None:
    from runform.firmware_bridge.simulator import RunnerProfile
    from runform.server.edge import simulated_packets
    extra_s = (max(0, n_runners - 1) // N_RECORDINGS) * START_STEP_PACKETS * 0.04 + 1.0
    recs = [simulated_packets(RunnerProfile(cadence_spm=170 + 2 * k), site="sacrum", duration_s=duration_s + extra_s,
                              seed=k) for k in range(min(N_RECORDINGS, n_runners))]
    path.write_bytes(pickle.dumps(recs))


def _sources(indices: list[int], rec_path: str, duration_s: float, slot_s: float = 0.002):
    from runform.server.edge import PacketReplaySource, ReplayPacer
    recs = pickle.loads(Path(rec_path).read_bytes())
    period = 0.04
    pacer = ReplayPacer(slot_s) if slot_s > 0 else None
    out = []
    for i in indices:
        proto, packets = recs[i % len(recs)]
        out.append(PacketReplaySource(f"r{i}", [("sacrum", proto, packets)], duration_s=duration_s,
                                      phase_s=0.3 + ((i * GOLDEN) % 1.0) * period,
                                      start_packet=(i // len(recs)) * START_STEP_PACKETS, pacer=pacer))
    return out


def _edge_worker(indices: list[int], *, worker_index: int = 0, port: int, rec_path: str, duration_s: float,
                 journal_dir: str) -> dict:
    """One edge process: the runners ``r{i}`` for ``i in indices``."""
    from runform.dsp import warmup
    from runform.server.cues import CueConfig
    from runform.server.edge import Edge, RunnerConfig
    from runform.server.mqtt import MqttSettings
    warmup()
    srcs = _sources(indices, rec_path, duration_s)
    cue = CueConfig(target_cadence_spm=185, confirm_s=0.5, min_spoken_interval_s=0.5, reminder_interval_s=0.5,
                    imbalance_limit_pct=None)
    cfgs = {s.runner: RunnerConfig(s.runner, mqtt=MqttSettings(port=port, username="edge", password="runform"),
                                   journal_dir=Path(journal_dir), cue=cue) for s in srcs}
    edge = Edge(srcs, cfgs)
    mark = {}

    def cpu():
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    async def main():
        async def steady():  # start-up (connects, journal headers, kernel loading) is not the steady state
            await asyncio.sleep(2.0)
            mark.update(t=time.monotonic(), cpu=cpu(), packets=sum(s.packets_ for s in srcs))
        t = asyncio.create_task(steady())
        stats = await edge.run()
        t.cancel()
        return stats

    t0 = time.monotonic()
    stats = asyncio.run(main())
    t1, c1 = time.monotonic(), cpu()
    packets = sum(s.packets_ for s in srcs)
    return {"wall_s": t1 - t0, "steady_s": t1 - mark["t"], "cpu_s": c1 - mark["cpu"],
            "steady_packets": packets - mark["packets"], "packets_in": packets, "stats": stats,
            "pickup_lag_ms": np.concatenate([s.pickup_lag_ns_[:s.packets_] for s in srcs]).astype(float) / 1e6}


def _one(n_runners: int, duration_s: float, tmp: Path, *, workers: int = 1) -> dict:
    from runform.server._workers import run_sharded, shard
    from runform.server.broker import AccessSpec, MosquittoBroker

    names = [f"r{i}" for i in range(n_runners)]
    rec_path = tmp / f"recordings{n_runners}.pkl"
    _recordings(rec_path, n_runners, duration_s)
    broker = MosquittoBroker(tmp / f"broker{n_runners}", AccessSpec.demo(names)).start()
    out = tmp / f"sub{n_runners}.json"
    sub = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, str(broker.port), str(out)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert sub.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
        common = dict(port=broker.port, rec_path=str(rec_path), duration_s=duration_s,
                      journal_dir=str(tmp / f"journal{n_runners}"))
        if workers <= 1:
            results = [_edge_worker(list(range(n_runners)), **common)]
        else:
            results = run_sharded(_edge_worker, shard(list(range(n_runners)), workers), common)
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise RuntimeError(f"edge worker failed: {errors[0]}")
        time.sleep(0.5)
        sub.stdin.write(b"\n")
        sub.stdin.flush()
        sub.wait(30)
        res = json.loads(out.read_text())
    finally:
        if sub.poll() is None:
            sub.kill()
        broker.stop()
    wall = max(r["wall_s"] for r in results)
    stats = {k: v for r in results for k, v in r["stats"].items()}
    lat = np.array([(t - a) / 1e6 for t, a, _ in res["cues"] if a], float)
    packets = sum(r["packets_in"] for r in results)
    cpu_s = sum(r["cpu_s"] for r in results)
    steady_s = min(r["steady_s"] for r in results)
    steady_packets = sum(r["steady_packets"] for r in results)
    pct = (lambda q: round(float(np.percentile(lat, q)), 2) if lat.size else None)
    lag = np.concatenate([r["pickup_lag_ms"] for r in results])
    return {
        "runners": n_runners, "workers": max(1, min(workers, n_runners)), "duration_s": round(wall, 2),
        "packets_in": packets, "samples_per_s": round(packets * 20 / wall),
        "cues_received": int(lat.size),
        "cue_latency_p50_ms": pct(50), "cue_latency_p90_ms": pct(90), "cue_latency_p99_ms": pct(99),
        "cue_latency_max_ms": round(float(lat.max()), 2) if lat.size else None,
        "packet_pickup_lag_p50_ms": round(float(np.percentile(lag, 50)), 2),
        "packet_pickup_lag_p99_ms": round(float(np.percentile(lag, 99)), 2),
        "messages_received": res["messages"], "messages_per_s": round(res["messages"] / wall, 1),
        "edge_cpu_pct": round(100 * cpu_s / steady_s, 1),
        "edge_cpu_us_per_packet": round(1e6 * cpu_s / max(1, steady_packets), 1),
        "subscriber_cpu_s": round(res["cpu_s"], 2),
        "dsp_skipped_blocks": sum(s["dsp_skipped_blocks"] for s in stats.values()),
        "stale_cues_dropped": sum(s.get("mqtt_stale_cues", 0) + s["cues_stale_at_birth"] for s in stats.values()),
        "journaled_packets": sum(s["journaled_packets"] for s in stats.values()),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def run(quick: bool = False, *, workers_100: int | None = None) -> dict:
    """p50/p99 packet->cue latency, messages/s and CPU for 1, 10 and 100 runners at 500 Hz."""
    duration = 8.0 if quick else 20.0
    w100 = workers_100 or max(2, os.cpu_count() or 2)
    with tempfile.TemporaryDirectory() as d:
        rows = [_one(1, duration, Path(d)), _one(10, duration, Path(d)), _one(100, duration, Path(d), workers=w100)]
    return {"name": "mqtt_packet_to_cue", "sampling_rate_hz": 500.0, "packet_samples": 20,
            "cpu_count": os.cpu_count(), "quick": quick, "results": rows,
            "note": "latency = cue received by a separate subscriber minus the DUE time of the packet whose "
                    "processing produced it (excludes the DSP's confirmation delay); sensor simulation not "
                    "timed; load_avg_1min shows how busy the machine was"}


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0].isdigit():  # python -m runform.server._bench_mqtt N [DURATION] [WORKERS]
        n = int(args[0])
        dur = float(args[1]) if len(args) > 1 else 10.0
        w = int(args[2]) if len(args) > 2 else 1
        from runform.dsp import warmup
        warmup()
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(_one(n, dur, Path(d), workers=w), indent=1))
    else:
        print(json.dumps(run(quick="--quick" in args), indent=1))
