"""The MQTT latency benchmark (`make bench` -> `runform.server._bench_mqtt`) at a tiny size: the machinery runs
against the real broker and a separate subscriber process, and every figure it reports is there and sane.
No speed is asserted (the figures are in docs/mqtt.md and docs/benchmarks.md)."""
import math

import pytest

from .conftest import _need_mosquitto

pytestmark = pytest.mark.timeout(180)


def test_bench_two_runners_reports_latency_throughput_and_cpu(tmp_path):
    _need_mosquitto()
    pytest.importorskip("runform.firmware_bridge.simulator")
    from runform.server._bench_mqtt import _one
    r = _one(2, 5.0, tmp_path)
    assert r["runners"] == 2 and r["workers"] == 1
    # every packet was journaled and processed; the subscriber got cues whose trigger packet it can time
    assert r["journaled_packets"] == r["packets_in"] >= 2 * 5.0 * 25
    assert r["dsp_skipped_blocks"] == 0
    assert r["cues_received"] > 0 and r["messages_received"] > r["cues_received"]
    lat = [r[k] for k in ("cue_latency_p50_ms", "cue_latency_p90_ms", "cue_latency_p99_ms", "cue_latency_max_ms")]
    assert all(isinstance(x, float) and math.isfinite(x) and x > 0 for x in lat), r
    assert lat == sorted(lat)
    assert r["messages_per_s"] > 0 and r["edge_cpu_pct"] > 0 and r["edge_cpu_us_per_packet"] > 0
    assert r["packet_pickup_lag_p50_ms"] <= r["packet_pickup_lag_p99_ms"]
