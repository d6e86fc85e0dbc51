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
    if emulator_missing_reason() is None:
        assert "virtual BLE sensors" in out
    else:
        assert "using the simulator" in out
    summary = json.loads(out.split("runform demo: summary ", 1)[1].splitlines()[0])
    assert set(summary) == {"maya", "leo"}
    for name, s in summary.items():
        assert s["steps_stored"] > 0 and s["steps_stored"] == s["steps_detected"], (name, s)
    assert (tmp_path / "demo" / "sessions.db").exists()
