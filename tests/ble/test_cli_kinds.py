"""`runform sensor-sim --kind runform polar rsc` + `runform scan` as real subprocesses on their own emulator."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest

from runform.firmware_bridge.virtual import emulator_missing_reason

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_sensor_sim_all_kinds_and_scan_lists_them():
    reason = emulator_missing_reason()
    if reason:
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runform.server.cli", "sensor-sim", "--kind", "runform", "polar", "rsc",
        "--sites", "sacrum", "--json", "--duration", "60", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        served = []
        bus = None
        while len(served) < 3:
            line = (await asyncio.wait_for(sim.stdout.readline(), 30)).decode()
            assert line, (await sim.stderr.read()).decode()
            if line.startswith("export DBUS_SYSTEM_BUS_ADDRESS="):
                bus = line.strip().split("=", 1)[1]
            elif line.startswith("{"):
                served.append(json.loads(line))
        assert bus and {s["kind"] for s in served} == {"runform_v1", "polar_pmd", "rsc"}
        scan = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "runform.server.cli", "scan", "--adapter", "hci0", "--timeout", "1.5", "--json",
            env={**env, "DBUS_SYSTEM_BUS_ADDRESS": bus}, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(scan.communicate(), 60)
        assert scan.returncode == 0, err.decode()
        found = {f["address"]: f for f in json.loads(out)}
        for s in served:
            f = found[s["address"]]
            assert (f["kind"], f["name"]) == (s["kind"], s["name"])
            assert f["rssi_dbm"] < 0 and 0 < f["battery_pct"] <= 100   # Polar / RSC: read over a connection
    finally:
        if sim.returncode is None:
            sim.send_signal(signal.SIGTERM)
        await asyncio.wait_for(sim.communicate(), 20)
    assert sim.returncode == 0
