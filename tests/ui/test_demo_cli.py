"""`runform demo --headless --duration 20`: the whole system from the command line (BLE path when bluezoo and
dbus-daemon are installed, else the simulator fallback, which it must say)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from runform.server.broker import iotcore_available, mosquitto_available

pytestmark = pytest.mark.timeout(180)


def test_demo_headless_runs_and_data_flows(tmp_path):
    if not (mosquitto_available() or iotcore_available()):
        pytest.skip("no MQTT broker: apt-get install mosquitto (or pip install iotcore)")
    proc = subprocess.run([sys.executable, "-m", "runform.server.cli", "demo", "--headless", "--duration", "20",
                           "--port", "0", "--dir", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=170)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    m = re.search(r"mosquitto_sub -h (\S+) -p (\d+) -u (\S+) -P (\S+) -t 'runform/v1/#' -v", out)
    assert m, out
    assert m.group(1) == "127.0.0.1" and m.group(3) == "pt"
    for page in ("therapist", "runner", "lab"):
        assert re.search(rf"http://127\.0\.0\.1:\d+/dashboards/{page}/", out), out
    from runform.firmware_bridge.virtual import emulator_missing_reason
    from runform.server._cmd_demo import DEFAULT_RUNNERS
    ble = emulator_missing_reason() is None
    if ble:
        assert "virtual BLE sensors" in out
    else:
        assert "using the simulator" in out
    summary = json.loads(out.split("runform demo: summary ", 1)[1].splitlines()[0])
    assert set(summary) == {"maya", "leo"}
    for name, s in summary.items():
        assert s["steps_stored"] > 0 and s["steps_stored"] == s["steps_detected"], (name, s)
    # the sensor links as the retained status carried them (the edge's BleHub: one bridge for both runners)
    for r in DEFAULT_RUNNERS:
        links = {ln["sensor_id"]: ln for ln in summary[r.name]["links"]}
        assert all(ln["packets_received"] > 0 for ln in links.values()), links
        if not ble:
            assert [ln["kind"] for ln in links.values()] == ["sim"] and all(
                ln["battery_pct"] is None and ln["packets_lost"] == 0 for ln in links.values()), links
            continue
        main = links[f"{r.name}.{r.site}"]
        assert main["kind"] == "runform_v1" and main["battery_pct"] == int(r.battery_pct), main
        rx, lost = main["packets_received"], main["packets_lost"]
        assert main["loss_pct"] == round(100 * lost / (rx + lost), 3)
        if r.loss_pct >= 1.0:  # enough loss to see in 20 s (about 500 packets)
            assert 0 < main["loss_pct"] < 4 * r.loss_pct, main
        if r.pod_site:  # the foot pod's MetricsBlocks reach the edge through the hub (the old demux dropped them)
            assert links[f"{r.name}.{r.pod_site}"]["kind"] == "rsc", links
    assert (tmp_path / "demo" / "sessions.db").exists()
