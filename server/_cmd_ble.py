"""``runform scan | record | sensor-sim``: BLE sensors from the command line."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

EPILOG_ENV = ("On a machine without Bluetooth, start `runform sensor-sim` first and export the "
              "DBUS_SYSTEM_BUS_ADDRESS it prints: scan/record then talk to the emulated sensors.")


def register(sub) -> None:
    p = sub.add_parser("scan", help="list advertising sensors (kind, name, address, RSSI, battery)",
                       description="Scan for BLE sensors runform can read and print them as a table.",
                       epilog=EPILOG_ENV)
    p.add_argument("--timeout", type=float, default=4.0, metavar="S", help="scan duration in seconds (default 4)")
    p.add_argument("--adapter", default=None, help="BlueZ adapter, e.g. hci0 (default: system default)")
    p.add_argument("--all", action="store_true", help="list every BLE device, not only known sensor services")
    p.add_argument("--battery", action="store_true", default=True,
                   help="connect to sensors that do not advertise their battery (Polar, RSC pods) and read it "
                        "(default)")
    p.add_argument("--no-battery", dest="battery", action="store_false",
                   help="only what the advertisements say (faster: no connections)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_scan)

    p = sub.add_parser("record", help="lossless raw recording of sensors straight to disk (no broker needed)",
                       description="Connect to the sensors and write every notification to a crash-safe raw "
                                   "journal per sensor (<out>/<runner>.<site>.rfj) before anything else. "
                                   "Reconnects automatically. Ctrl-C / SIGTERM stops cleanly; files stay "
                                   "complete and readable (runform.firmware_bridge.journal.JournalReader).",
                       epilog="example: runform record --sensor F0:52:46:00:00:01=foot_left "
                              "--sensor F0:52:46:00:00:02=sacrum --runner alice --out rec/ --duration 600\n"
                              + EPILOG_ENV)
    p.add_argument("--sensor", action="append", default=[], metavar="ADDRESS=site",
                   help="sensor and where it is worn (repeat; name:NAME=site connects by name; "
                        "ADDRESS=site@runner overrides --runner)")
    p.add_argument("--config", type=Path, help="TOML file with [[sensor]] tables (address, runner, site, ...)")
    p.add_argument("--runner", default="runner1", help="runner name for --sensor entries (default runner1)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--adapter", default=None, help="BlueZ adapter, e.g. hci0")
    p.add_argument("--rate", type=float, default=None, metavar="HZ", help="request this sampling rate")
    p.add_argument("--range-g", type=float, default=None, help="request this accelerometer range (g)")
    p.add_argument("--no-gyro", action="store_true", help="switch the gyroscope off")
    p.add_argument("--status-every", type=float, default=5.0, metavar="S", help="status line interval")
    p.set_defaults(func=_record)

    p = sub.add_parser("sensor-sim", help="emulated BLE stack + virtual sensors worn by simulated runners",
                       description="Start a private D-Bus bus with bluezoo (BlueZ emulator, GPL-2.0 test tool, "
                                   "`pip install bluezoo==1.0.2`) and virtual sensors (runform v1 IMUs, Polar H10 "
                                   "PMD accelerometers, RSC foot pods) fed by the runner simulator. Prints the bus address and the sensors it serves; runs "
                                   "until Ctrl-C / SIGTERM or --duration.")
    p.add_argument("--runners", type=int, default=1, help="number of simulated runners (default 1)")
    p.add_argument("--kind", nargs="+", choices=sorted(_SIM_KINDS), default=["runform"],
                   help="sensor kinds per runner: runform (runform v1 IMU), polar (Polar H10, PMD ACC), "
                        "rsc (Running Speed and Cadence foot pod); default runform")
    p.add_argument("--sites", nargs="+", default=None,
                   help="sensor sites per runner and kind (default: runform foot_left foot_right sacrum, "
                        "polar sacrum, rsc foot_left)")
    p.add_argument("--rate", type=float, default=None, metavar="HZ",
                   help="sampling rate (default: runform 1000, polar 200; rsc pods send metrics once a second)")
    p.add_argument("--loss-pct", type=float, default=0.0, help="packets lost on air, percent")
    p.add_argument("--interval-ms", type=float, default=15.0, help="BLE connection interval (default 15 ms)")
    p.add_argument("--drift-ppm", type=float, default=20.0, help="sensor clock drift (default 20 ppm)")
    p.add_argument("--cadence", type=float, default=170.0, help="runner cadence, steps/min")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--json", action="store_true", help="print one JSON line per sensor")
    p.set_defaults(func=_sensor_sim)


def _stop_event(loop) -> asyncio.Event:
    ev = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, ev.set)
        except (NotImplementedError, RuntimeError):
            pass
    return ev


def _ble_error_hint(exc: Exception) -> str:
    msg = str(exc)
    if "org.bluez" in msg or "system bus" in msg.lower() or isinstance(exc, (FileNotFoundError, ConnectionError)):
        return (f"{msg}\nBluetooth (BlueZ over D-Bus) is not reachable. On a machine without a radio, run "
                "`runform sensor-sim` and export the DBUS_SYSTEM_BUS_ADDRESS it prints.")
    return msg


# ------------------------------------------------------------------------------------------------ scan
def _scan(args) -> int:
    from runform.firmware_bridge.ble import scan
    try:
        found = asyncio.run(scan(args.timeout, args.adapter, all_devices=args.all, read_battery=args.battery))
    except Exception as exc:
        print(f"error: {_ble_error_hint(exc)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(f) for f in found], indent=1))
        return 0
    if not found:
        print("no sensors found" + ("" if args.all else " (try --all to list every BLE device)"))
        return 0
    print(f"{'ADDRESS':<18} {'NAME':<22} {'KIND':<11} {'RSSI':>5} {'BATT':>5}")
    for f in found:
        rssi = "" if f.rssi_dbm is None else str(f.rssi_dbm)
        batt = "" if f.battery_pct is None else f"{f.battery_pct}%"
        print(f"{f.address:<18} {(f.name or '-')[:22]:<22} {(f.kind or '?'):<11} {rssi:>5} {batt:>5}")
    return 0


# ------------------------------------------------------------------------------------------------ record
def _record(args) -> int:
    from runform.firmware_bridge.ble import BridgeConfigError, load_bridge_config, parse_sensor_option
    kw = {}
    if args.rate:
        kw["sampling_rate_hz"] = args.rate
    if args.range_g:
        kw["range_g"] = args.range_g
    if args.no_gyro:
        kw["gyro"] = False
    try:
        specs = [parse_sensor_option(s, runner=args.runner, **kw) for s in args.sensor]
        adapter = args.adapter
        if args.config:
            more, opts = load_bridge_config(args.config)
            specs += more
            adapter = adapter or opts.get("adapter")
    except BridgeConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not specs:
        print("error: give at least one --sensor ADDRESS=site (or --config FILE)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    return asyncio.run(_record_async(specs, adapter, args))


async def _record_async(specs, adapter, args) -> int:
    from runform.firmware_bridge.ble import Bridge
    try:
        bridge = Bridge(specs, adapter=adapter, queue_size=0, journal_dir=args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = _stop_event(asyncio.get_running_loop())
    t0 = time.monotonic()
    print(f"recording {len(specs)} sensor(s) to {args.out}/ (Ctrl-C to stop)", flush=True)
    await bridge.start()
    try:
        while not stop.is_set():
            timeout = args.status_every
            if args.duration is not None:
                timeout = min(timeout, max(0.0, t0 + args.duration - time.monotonic()))
            try:
                await asyncio.wait_for(stop.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            _print_status(bridge, time.monotonic() - t0)
            if args.duration is not None and time.monotonic() - t0 >= args.duration:
                break
    finally:
        stats = bridge.stats()
        await bridge.stop()  # closes (flushes, fsyncs) every journal
    summary = {sid: asdict(s) for sid, s in stats.items()}
    (Path(args.out) / "record_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"stopped after {time.monotonic() - t0:.1f} s; journals and record_summary.json in {args.out}/")
    return 0 if any(s.packets_received for s in stats.values()) else 1


def _print_status(bridge, elapsed_s: float) -> None:
    parts = []
    for sid, s in bridge.stats().items():
        rate = f"{s.measured_rate_hz:.0f}Hz" if s.measured_rate_hz else "-"
        why = f" [{s.last_error}]" if s.state != "streaming" and s.last_error else ""
        parts.append(f"{sid}: {s.state} pkts={s.packets_received} lost={s.packets_lost} bad={s.packets_malformed} "
                     f"rc={s.reconnects} {rate} batt={s.battery_pct if s.battery_pct is not None else '-'}{why}")
    print(f"[{elapsed_s:7.1f} s] " + " | ".join(parts), flush=True)


# ------------------------------------------------------------------------------------------------ sensor-sim
_SIM_KINDS = {"runform": ("foot_left", "foot_right", "sacrum"), "polar": ("sacrum",), "rsc": ("foot_left",)}


def _sim_plan(args) -> list[tuple[str, str]]:
    """(kind, site) per runner."""
    kinds = list(dict.fromkeys(args.kind))
    return [(k, site) for k in kinds for site in (args.sites or _SIM_KINDS[k])]


def _sensor_sim(args) -> int:
    from runform.firmware_bridge.virtual import BluezooEmulator, EmulatorUnavailableError
    n = args.runners * len(_sim_plan(args))
    if n < 1:
        print("error: nothing to simulate", file=sys.stderr)
        return 2
    try:
        emu = BluezooEmulator(n, set_environ=True)
        emu.start()
    except EmulatorUnavailableError as exc:
        print(f"error: cannot start the BLE emulator: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_sensor_sim_async(emu, args))
    finally:
        emu.stop()


async def _sensor_sim_async(emu, args) -> int:
    from runform.firmware_bridge.virtual import SensorBehavior, VirtualPolarSensor, VirtualRscPod, VirtualSensor
    profile = None
    try:
        from runform.firmware_bridge.simulator import RunnerProfile
        profile_cls = RunnerProfile
    except ImportError:
        profile_cls = None
    sensors = []
    print(f"export DBUS_SYSTEM_BUS_ADDRESS={emu.bus_address_}", flush=True)
    for r in range(args.runners):
        if profile_cls is not None:
            profile = profile_cls(cadence_spm=args.cadence + 4 * r)
        for kind, site in _sim_plan(args):
            name, addr = emu.take_adapter()
            seed = 100 * r + len(sensors)
            beh = SensorBehavior(connection_interval_ms=args.interval_ms, loss_pct=args.loss_pct,
                                 clock_drift_ppm=args.drift_ppm * (1 if seed % 2 else -1), seed=seed)
            if kind == "polar":
                vs = VirtualPolarSensor(site, sampling_rate_hz=args.rate or 200.0, profile=profile, seed=seed,
                                        behavior=beh)
            elif kind == "rsc":
                vs = VirtualRscPod(site, profile=profile, seed=seed, behavior=beh)
            else:
                vs = VirtualSensor(site, sampling_rate_hz=args.rate or 1000.0, profile=profile, seed=seed,
                                   behavior=beh)
            await vs.start(name, addr)
            sensors.append((f"runner{r + 1}", vs))
            kind_name = {"runform": "runform_v1", "polar": "polar_pmd", "rsc": "rsc"}[kind]
            if args.json:
                print(json.dumps({"runner": f"runner{r + 1}", "kind": kind_name, "site": site, "address": addr,
                                  "name": vs.name, "adapter": name}), flush=True)
            else:
                print(f"runner{r + 1:<3} {kind_name:<11} {site:<12} {addr}  {vs.name}  ({name})", flush=True)
    print("serving; central adapter hci0. Record with e.g.: runform record --adapter hci0 " +
          " ".join(f"--sensor {vs.address_}={vs.site}@{runner}" for runner, vs in sensors[:3]) + " --out rec/",
          flush=True)
    stop = _stop_event(asyncio.get_running_loop())
    try:
        await asyncio.wait_for(stop.wait(), args.duration)
    except asyncio.TimeoutError:
        pass
    for _, vs in sensors:
        await vs.stop()
    return 0
