"""MQTT benchmark: sensor packet in -> cue received by a separate subscriber process.

For 1, 10 and 100 simulated runners (500 Hz, 20-sample packets, real-time paced, real detector, raw journal on
a temp dir) the edge runs in this process against a fresh Mosquitto; a separate Python process subscribes to
``runform/v1/+/cues`` and ``+/+/steps`` and stamps every message with ``time.monotonic_ns()`` (CLOCK_MONOTONIC
is machine-wide on Linux, so it compares with the ``trigger_arrival_ns`` the cue carries: the arrival of the
packet whose step triggered the cue). The cue engine is set to remind every second so there are cues to time.

``run(quick=False) -> dict`` (the lead wires it into ``make bench``); ``python -m runform.server._bench_mqtt``.
"""
from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_SUBSCRIBER = r"""
import json, sys, time, threading
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, out = int(sys.argv[1]), sys.argv[2]
rows, n = [], [0]
def on_message(c, u, msg):
    t = time.monotonic_ns()
    n[0] += 1
    if msg.topic.endswith("/cues"):
        d = json.loads(msg.payload)
        rows.append((t, d.get("trigger_arrival_ns")))
def on_connect(c, u, f, rc, p):
    c.subscribe("runform/v1/+/cues", qos=0); c.subscribe("runform/v1/+/+/steps", qos=1)
    c.subscribe("runform/v1/+/metrics", qos=0)
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub", protocol=mqtt.MQTTv5)
c.username_pw_set("edge", "runform")
c.on_message, c.on_connect = on_message, on_connect
c.connect("127.0.0.1", port); c.loop_start()
print("ready", flush=True)
sys.stdin.readline()
c.disconnect(); c.loop_stop()
ru = __import__("resource").getrusage(__import__("resource").RUSAGE_SELF)
json.dump({"cues": rows, "messages": n[0], "cpu_s": ru.ru_utime + ru.ru_stime}, open(out, "w"))
"""


def _one(n_runners: int, duration_s: float, tmp: Path) -> dict:
    from runform.server.broker import AccessSpec, MosquittoBroker
    from runform.server.cues import CueConfig
    from runform.server.edge import Edge, RunnerConfig, SimulatorSource
    from runform.server.mqtt import MqttSettings

    names = [f"r{i}" for i in range(n_runners)]
    broker = MosquittoBroker(tmp / f"broker{n_runners}", AccessSpec.demo(names)).start()
    out = tmp / f"sub{n_runners}.json"
    sub = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, str(broker.port), str(out)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert sub.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
        srcs = [SimulatorSource(n, duration_s=duration_s, speed=1.0, seed=i) for i, n in enumerate(names)]
        cue = CueConfig(target_cadence_spm=185, confirm_s=0.5, min_spoken_interval_s=1.0, reminder_interval_s=1.0,
                        imbalance_limit_pct=None)
        cfgs = {n: RunnerConfig(n, mqtt=MqttSettings(port=broker.port, username="edge", password="runform"),
                                journal_dir=tmp / "journal", cue=cue) for n in names}
        edge = Edge(srcs, cfgs)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        stats = asyncio.run(edge.run())
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(0.5)
        sub.stdin.write(b"\n")
        sub.stdin.flush()
        sub.wait(30)
        res = json.loads(out.read_text())
    finally:
        if sub.poll() is None:
            sub.kill()
        broker.stop()
    lat = np.array([(t - a) / 1e6 for t, a in res["cues"] if a], float)
    packets = sum(s.packets_ for s in srcs)
    return {
        "runners": n_runners, "duration_s": round(wall, 2), "packets_in": packets,
        "samples_per_s": round(packets * 20 / wall),
        "cues_received": int(lat.size),
        "cue_latency_p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
        "cue_latency_p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
        "cue_latency_max_ms": round(float(lat.max()), 2) if lat.size else None,
        "messages_received": res["messages"], "messages_per_s": round(res["messages"] / wall, 1),
        "edge_cpu_pct": round(100 * ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)) / wall, 1),
        "subscriber_cpu_s": round(res["cpu_s"], 2),
        "dsp_skipped_blocks": sum(s["dsp_skipped_blocks"] for s in stats.values()),
        "stale_cues_dropped": sum(s.get("mqtt_stale_cues", 0) + s["cues_stale_at_birth"] for s in stats.values()),
    }


def run(quick: bool = False) -> dict:
    """p50/p99 packet->cue latency, messages/s and CPU for 1, 10, 100 runners at 500 Hz."""
    from runform.dsp import warmup
    warmup()
    duration = 6.0 if quick else 20.0
    with tempfile.TemporaryDirectory() as d:
        rows = [_one(n, duration, Path(d)) for n in (1, 10, 100)]
    return {"name": "mqtt_packet_to_cue", "sampling_rate_hz": 500.0, "packet_samples": 20, "cpu_count": os.cpu_count(),
            "results": rows}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
