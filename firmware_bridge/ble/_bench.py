"""BLE benchmark: N virtual sensors at 1 kHz through the emulated stack (bluezoo + bleak's BlueZ backend).

``run(quick=False) -> dict``: for each sensor count, the virtual sensors run in a separate
``runform sensor-sim`` process (they stand in for the real devices) with ``loss_pct`` of the
packets lost on air (default 1 %), this process runs the `Bridge` (bleak, decoding,
timestamping) for a few seconds, and the result reports packets received/lost (the loss the
bridge counted against the loss injected) and the CPU use of the central side (this process)
and of the emulator (sensor-sim + bluezoo + dbus-daemon), both in % of one core. ``sensors_fit_2_cores`` is how
many 1 kHz sensors the bridge side could take on 2 cores at 80 % load, extrapolated from the
measured per-sensor cost. Needs dbus-daemon and bluezoo (``status: skipped`` otherwise).
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

__all__ = ["run"]

_CLK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / _CLK
    except (OSError, IndexError):
        return 0.0


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


async def _one(n_sensors: int, seconds: float, rate_hz: float, loss_pct: float = 0.0) -> dict:
    from . import Bridge, SensorSpec
    sites = ["foot_left", "foot_right", "sacrum", "shank_left", "shank_right"]
    runners = (n_sensors + len(sites) - 1) // len(sites)
    per = [min(len(sites), n_sensors - r * len(sites)) for r in range(runners)]
    proc = subprocess.Popen([sys.executable, "-m", "runform.server.cli", "sensor-sim", "--json", "--rate",
                             str(rate_hz), "--runners", "1", "--sites", *sites[:per[0]], "--drift-ppm", "20",
                             "--loss-pct", str(loss_pct)]
                            if runners == 1 else
                            [sys.executable, "-m", "runform.server.cli", "sensor-sim", "--json", "--rate",
                             str(rate_hz), "--runners", str(runners), "--sites", *sites, "--loss-pct", str(loss_pct)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        env_line = proc.stdout.readline().strip()
        if not env_line.startswith("export DBUS_SYSTEM_BUS_ADDRESS="):
            return {"n_sensors": n_sensors, "status": "failed", "detail": env_line or "sensor-sim did not start"}
        bus = env_line.split("=", 1)[1]
        infos = []
        while len(infos) < sum(per) if runners > 1 else len(infos) < per[0]:
            infos.append(json.loads(proc.stdout.readline()))
        infos = infos[:n_sensors]
        old = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bus
        try:
            specs = [SensorSpec(site=i["site"], address=i["address"], runner=i["runner"]) for i in infos]
            n_blocks = 0

            def count(_b):
                nonlocal n_blocks
                n_blocks += 1
            async with Bridge(specs, adapter="hci0", queue_size=0, on_block=count,
                              backoff_initial_s=0.2) as bridge:
                ok = await bridge.wait_streaming(20)
                await asyncio.sleep(0.5)
                c0, e0, t0 = time.process_time(), sum(_proc_cpu_s(p) for p in _tree(proc.pid)), time.monotonic()
                s0 = bridge.stats()
                await asyncio.sleep(seconds)
                s1 = bridge.stats()
                dt = time.monotonic() - t0
                central = 100 * (time.process_time() - c0) / dt
                emulator = 100 * (sum(_proc_cpu_s(p) for p in _tree(proc.pid)) - e0) / dt
        finally:
            if old is None:
                os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
            else:
                os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = old
        rec = sum(s1[k].packets_received - s0[k].packets_received for k in s1)
        lost = sum(s1[k].packets_lost - s0[k].packets_lost for k in s1)
        samples = sum(s1[k].samples_received - s0[k].samples_received for k in s1)
        return {"n_sensors": n_sensors, "status": "ok" if ok else "not all streaming", "seconds": round(dt, 2),
                "packets_received": rec, "packets_lost": lost,
                "loss_pct": round(100 * lost / max(1, rec + lost), 3),
                "samples_per_s": round(samples / dt, 1), "central_cpu_pct": round(central, 1),
                "emulator_cpu_pct": round(emulator, 1)}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def run(quick: bool = False, *, counts: tuple[int, ...] | None = None, seconds: float | None = None,
        loss_pct: float = 1.0) -> dict:
    """Measure; returns ``{"status", "rate_hz", "loss_injected_pct", "runs": [...], "central_cpu_pct_per_sensor",
    "sensors_fit_2_cores"}``. ``counts``: sensor counts to run (default 1, 3, 6; quick 1, 3)."""
    from ..virtual import emulator_missing_reason
    reason = emulator_missing_reason()
    if reason:
        return {"status": "skipped", "reason": reason}
    counts = counts or ((1, 3) if quick else (1, 3, 6))
    seconds = seconds or (2.0 if quick else 4.0)
    runs = [asyncio.run(_one(n, seconds, 1000.0, loss_pct)) for n in counts]
    ok = [r for r in runs if r.get("status") == "ok"]
    per = None
    if ok:
        per = max(r["central_cpu_pct"] / r["n_sensors"] for r in ok)
    return {"status": "ok" if ok else "failed", "rate_hz": 1000.0, "loss_injected_pct": loss_pct, "runs": runs,
            "central_cpu_pct_per_sensor": None if per is None else round(per, 2),
            "sensors_fit_2_cores": None if not per else int(160.0 / per),
            "note": "central = bleak + decode + timestamping in this process; emulator = virtual sensors, "
                    "bluezoo and dbus-daemon (stand-ins for the radio and the devices)"}


if __name__ == "__main__":  # python -m runform.firmware_bridge.ble._bench [--quick]
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
