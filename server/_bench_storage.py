"""Storage benchmark: durable ingest rate and query time for a 1 h session.

``run(quick=False) -> dict``:

- ``store_ingest_samples_per_s``: ``append_raw_blocks`` of 6-axis 500 Hz blocks (25 samples, one BLE-sized
  packet each), 200 blocks per committed (fsynced, ``synchronous=FULL``) transaction -- the ingestor's pattern;
- ``mqtt_ingest_samples_per_s``: end to end through Mosquitto: QoS 1 raw blocks -> :class:`Ingestor` (decode,
  store, commit, then PUBACK), measured from the first publish to the last commit (skipped without Mosquitto);
- ``query_1h_s`` / ``query_60s_window_s``: ``read_raw`` of the whole hour of one sensor / of one minute in it;
- ``bytes_per_sample`` and ``compression_ratio`` of the raw chunks.

Samples are int16 counts x scale (what real sensors deliver) of a running-like signal plus noise, so the
compression figures are realistic; ``quick`` uses 10 minutes instead of an hour.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from runform.server.mqtt import RawBlock
from runform.server.storage import open_store

FS_HZ = 500.0
PER_BLOCK = 25


def _signal(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS_HZ
    phase = 2 * np.pi * (170 / 120) * t
    acc = np.stack([9.81 + 12 * np.maximum(0, np.sin(phase)) ** 8, 3 * np.sin(phase / 2), 2 * np.cos(phase)], 1)
    acc = acc + rng.normal(0, 0.3, (n, 3))
    gyr = np.stack([200 * np.sin(phase / 2), 80 * np.cos(phase), 40 * np.sin(phase)], 1) + rng.normal(0, 2, (n, 3))
    sa, sg = 16 * 9.80665 / 32768, 2000 / 32768
    return t, np.rint(acc / sa) * sa, np.rint(gyr / sg) * sg


def _blocks(n_samples: int, t0: float = 1000.0, sensor: str = "S1", site: str = "sacrum", seed: int = 0):
    t, acc, gyr = _signal(n_samples, seed)
    t = t + t0
    out = []
    for j, i in enumerate(range(0, n_samples, PER_BLOCK)):
        out.append(RawBlock(sensor, site, j, i * 64, 32768.0, FS_HZ, int(t[min(i + PER_BLOCK, n_samples) - 1] * 1e9)
                            + 8_000_000, t[i:i + PER_BLOCK], acc[i:i + PER_BLOCK], gyr[i:i + PER_BLOCK], None, False))
    return out


def _bench_store(tmp: Path, duration_s: float) -> dict:
    n = int(duration_s * FS_HZ)
    blocks = _blocks(n)
    store = open_store(tmp / "bench.db")
    sid = store.create_session("bench", {"sensors": [{"sensor_id": "S1", "site": "sacrum", "sampling_rate_hz": FS_HZ}]})
    t0 = time.perf_counter()
    for k in range(0, len(blocks), 200):
        store.append_raw_blocks(sid, blocks[k:k + 200])
    dt = time.perf_counter() - t0
    t1 = time.perf_counter()
    r = store.read_raw(sid, "S1")
    q_all = time.perf_counter() - t1
    assert len(r["time_s"]) == n
    mid = 1000.0 + duration_s / 2
    t1 = time.perf_counter()
    w = store.read_raw(sid, "S1", mid, mid + 60)
    q_win = time.perf_counter() - t1
    assert len(w["time_s"]) == int(60 * FS_HZ)
    info = store.raw_sensors(sid)[0]
    store.close()
    return {"store_ingest_samples_per_s": n / dt, "store_ingest_s": dt, "query_duration_s": duration_s,
            "query_1h_s" if duration_s >= 3600 else "query_full_s": q_all, "query_60s_window_s": q_win,
            "bytes_per_sample": info["stored_bytes"] / n, "compression_ratio": info["uncompressed_bytes"] / info["stored_bytes"],
            "db_file_mb": os.path.getsize(tmp / "bench.db") / 1e6}


def _bench_mqtt(tmp: Path, n_blocks: int) -> dict:
    from runform.server.broker import AccessSpec, MosquittoBroker, mosquitto_available
    from runform.server.ingest import Ingestor
    from runform.server.mqtt import encode_raw, raw_topic
    if not mosquitto_available():
        return {"mqtt_ingest": "skipped: mosquitto not installed"}
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    spec = AccessSpec.from_dict({"users": [{"name": "svc", "password": "bench-pw", "role": "service"}]})
    broker = MosquittoBroker(tmp / "broker", spec, max_queued_messages=10 * n_blocks).start()
    store = open_store(tmp / "mqtt.db")
    ing = Ingestor(store, port=broker.port, username="svc", password="bench-pw", client_id="rf-bench-ingest")
    try:
        ing.start()
        ing.wait_connected(10)
        time.sleep(0.3)
        payloads = [(raw_topic("bench", "sacrum"), encode_raw(b)) for b in _blocks(n_blocks * PER_BLOCK, seed=1)]
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="rf-bench-pub", protocol=mqtt.MQTTv5)
        pub.username_pw_set("svc", "bench-pw")
        pub.max_inflight_messages_set(1000)
        pub.max_queued_messages_set(0)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        t0 = time.perf_counter()
        for t, p in payloads:
            pub.publish(t, p, qos=1)
        n = n_blocks * PER_BLOCK
        deadline = time.monotonic() + 300
        while ing.counters_["raw_samples_stored"] < n and time.monotonic() < deadline:
            time.sleep(0.01)
        dt = time.perf_counter() - t0
        pub.disconnect()
        pub.loop_stop()
        ok = ing.counters_["raw_samples_stored"] == n
        time.sleep(0.3)  # the acks of the last commit
        return {"mqtt_ingest_samples_per_s": n / dt, "mqtt_ingest_messages_per_s": n_blocks / dt,
                "mqtt_ingest_complete": ok, "mqtt_blocks": n_blocks,
                "mqtt_acked": ing.counters_["acked"], "mqtt_committed": ing.counters_["committed"]}
    finally:
        ing.stop()
        store.close()
        broker.stop()


def run(quick: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="rf-bench-storage-") as d:
        tmp = Path(d)
        res = {"quick": quick, "sampling_rate_hz": FS_HZ, "samples_per_block": PER_BLOCK, "synchronous": "FULL"}
        res.update(_bench_store(tmp, 600.0 if quick else 3600.0))
        res.update(_bench_mqtt(tmp, 4000 if quick else 20000))
    return res


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
