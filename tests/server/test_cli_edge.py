"""The command line of the edge side: ``runform run --source replay`` (a recorded file at real speed, rolling
metrics every second) and ``runform broker`` (the configured broker, started and stopped)."""
import asyncio
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from runform.server import mqtt as m
from runform.server.broker import free_port, iotcore_available, mosquitto_available
from runform.server.edge import Edge, JournalReplaySource, RunnerConfig, simulated_packets

from .conftest import PASSWORD, publish_one

CLI = [sys.executable, "-m", "runform.server.cli"]


def test_replay_of_a_recorded_journal_at_real_speed_publishes_rolling_metrics_every_second(mosquitto, mqtt_sub,
                                                                                            tmp_path):
    pytest.importorskip("runform.firmware_bridge.simulator")
    from runform.firmware_bridge.journal import JournalWriter, sensor_metadata
    duration_s = 9.0
    # a recording as a sensor makes it: runform v1 packets arriving every 40 ms (20 samples at 500 Hz)
    proto, packets = simulated_packets(duration_s=duration_s, seed=11)
    journal = tmp_path / "rec.rfj"
    w = JournalWriter(journal, sensor_metadata(proto, sensor_id="rec-sacrum", site="sacrum", runner="rec"))
    t0_ns = time.monotonic_ns() - 3600 * 10**9  # recorded an hour ago
    for k, raw in enumerate(packets):
        w.append(raw, t0_ns + k * 40_000_000)
    w.close()
    fast = Edge([JournalReplaySource(journal, "rec", speed=0)], {"rec": RunnerConfig("rec")})
    asyncio.run(fast.run())
    recorded_steps = fast.pipelines["rec"].counters["steps"]
    sub = mqtt_sub(mosquitto.port, "edge", topics=[m.runner_filter("lab1")]).start()
    t0 = time.time()
    proc = subprocess.run(CLI + ["run", "--source", "replay", "--journal", str(journal), "--runner-prefix", "lab",
                                 "--port", str(mosquitto.port), "--user", "edge", "--password", PASSWORD,
                                 "--no-plan", "--quiet", "--journal-dir", str(tmp_path / "not-used")],
                          capture_output=True, text=True, timeout=120)
    wall_s = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.loads(proc.stdout[proc.stdout.index("{"):])["lab1"]
    # the file's samples, all of them, through the same DSP: the same steps as when it was recorded
    assert stats["samples"] == duration_s * 500 and stats["dsp_skipped_blocks"] == 0
    assert abs(stats["steps"] - recorded_steps) <= 1 and recorded_steps > 15
    assert stats["journaled_packets"] == 0 and not (tmp_path / "not-used").exists()  # the file is the record
    assert sub.wait_for(lambda x: x.topic.endswith("/status") and json.loads(x.payload)["state"] == "offline", 10)
    metrics = [(x, m.decode_json(x.payload, m.SCHEMA_METRICS)) for x in sub.on("lab1/metrics")]
    # real speed: the replay took the recording's duration, and no message left earlier than its stream time
    assert wall_s >= duration_s - 0.5
    (x0, d0), (x1, d1) = metrics[0], metrics[-1]
    assert x1.recv_unix_s - x0.recv_unix_s >= (d1["time_s"] - d0["time_s"]) - 0.3
    # rolling metrics every 1 s of stream time: cadence, GCT, L/R balance, impact
    t = np.array([d["time_s"] for _, d in metrics])
    assert len(t) >= duration_s - 3
    assert np.all(np.diff(t) > 0.95) and np.median(np.diff(t)) == pytest.approx(1.0, abs=0.05)
    running = [d for _, d in metrics if d["steps_in_window"] >= 10]
    assert len(running) >= 3
    for d in running:
        assert 150 < d["cadence_spm"] < 190 and 150 < d["gct_ms"] < 400
        assert 35 < d["balance_left_pct"] < 65 and 1 < d["impact_peak_g"] < 10
        assert d["window_s"] == 10.0 and d["runner"] == "lab1"
    assert 0 < d1["steps_total"] <= stats["steps"]
    # raw is published only when asked for (labs: --raw or the raw_on command); not asked here
    assert sub.on("/raw") == []
    assert [json.loads(x.payload)["state"] for x in sub.on("lab1/status")][-1] == "offline"


def _broker_cli(tmp_path, *extra):
    port = free_port()
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"users": [{"name": "edge", "password": PASSWORD, "role": "service"},
                                           {"name": "kim", "password": PASSWORD, "role": "runner"}]}))
    proc = subprocess.Popen(CLI + ["broker", "--port", str(port), "--dir", str(tmp_path / "b"), "--users",
                                   str(users), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, port


@pytest.mark.parametrize("embedded", [False, True], ids=["mosquitto", "embedded"])
def test_runform_broker_starts_the_configured_broker_and_stops_on_sigterm(tmp_path, mqtt_sub, embedded):
    if embedded and not iotcore_available():
        pytest.skip("embedded broker needs iotcore (pip install iotcore)")
    if not embedded and not mosquitto_available():
        pytest.skip("mosquitto not installed: apt-get install mosquitto (make sysdeps)")
    proc, port = _broker_cli(tmp_path, *(["--embedded"] if embedded else []))
    try:
        line = proc.stdout.readline()
        assert f"listening on 127.0.0.1:{port}" in line, (line, proc.poll())
        assert ("iotcore" if embedded else "mosquitto") in line and "users: edge, kim" in line
        sub = mqtt_sub(port, "kim", topics=[m.runner_filter("kim")]).start()
        assert publish_one(port, "edge", m.metrics_topic("kim"), b'{"x":1}') == "Success"
        assert sub.wait_for(lambda x: x.topic == m.metrics_topic("kim"), 10)
        if not embedded:  # the generated config: users and ACL enforced (the embedded fallback has neither)
            assert (tmp_path / "b" / "mosquitto.conf").is_file() and (tmp_path / "b" / "acl").is_file()
            anon = mqtt_sub(port, None).start(wait=False)
            assert publish_one(port, "kim", m.metrics_topic("other"), b"{}") == "Not authorized"
            deadline = time.monotonic() + 10
            while not anon.connack and time.monotonic() < deadline:
                time.sleep(0.05)
            assert anon.connack and anon.connack[0].value == 0x87 and not anon.connected.is_set()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_runform_broker_refuses_a_bad_user_spec(tmp_path):
    (tmp_path / "users.json").write_text('{"users": [{"name": "a b", "password": "x", "role": "runner"}]}')
    proc = subprocess.run(CLI + ["broker", "--port", str(free_port()), "--dir", str(tmp_path / "b"), "--users",
                                 str(tmp_path / "users.json")], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "a b" in proc.stderr and "Traceback" not in proc.stderr
