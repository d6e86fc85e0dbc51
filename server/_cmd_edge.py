"""``runform broker`` (start the configured MQTT broker) and ``runform run`` (the edge pipeline)."""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path


def register(subparsers) -> None:
    b = subparsers.add_parser("broker", help="start the MQTT broker (Mosquitto, or the embedded fallback)",
                              description="Generate a config (loopback listeners, users/ACL) and run the broker "
                                          "until Ctrl+C.")
    b.add_argument("--dir", type=Path, default=None, help="working directory (default: a temp dir)")
    b.add_argument("--port", type=int, default=1883)
    b.add_argument("--websockets", action="store_true", help="also listen for MQTT over websockets (loopback)")
    b.add_argument("--ws-port", type=int, default=None)
    b.add_argument("--persistence", action="store_true", help="keep retained messages/sessions across restarts")
    b.add_argument("--users", type=Path, default=None,
                   help='JSON {"users": [{"name", "password", "role", "runners"}]} (default: demo users, '
                        'password "runform")')
    b.add_argument("--embedded", action="store_true", help="use the embedded broker even if Mosquitto exists")
    b.set_defaults(func=_cmd_broker)

    r = subparsers.add_parser("run", help="edge pipeline: sources -> journal -> DSP -> cues -> MQTT",
                              description="Run the edge for one or more runners: simulated, replayed from raw "
                                          "journals, or live from BLE sensors. --workers N shards simulated/"
                                          "replayed runners over N processes (one core each).")
    r.add_argument("--source", choices=("sim", "replay", "ble"), default="sim",
                   help="sim: simulated runners in real time; replay: recorded journals at real speed; "
                        "ble: live sensors through the BLE bridge (--sensor / --bridge-config)")
    r.add_argument("--journal", type=Path, action="append", default=[], help="journal file(s) to replay")
    r.add_argument("--runners", type=int, default=1, help="number of simulated runners (sim)")
    r.add_argument("--runner-prefix", default="runner")
    r.add_argument("--site", action="append", default=None, help="sensor site(s) (sim; default sacrum)")
    r.add_argument("--cadence", type=float, default=170.0, help="simulated cadence, steps/min")
    r.add_argument("--sensor", action="append", default=[], metavar="ADDRESS=site@runner",
                   help="ble: a sensor, e.g. F0:52:46:00:00:01=foot_left@alice or name:RF-0001=sacrum@bob "
                        "(without @runner: --runner-prefix + 1); repeat per sensor")
    r.add_argument("--bridge-config", type=Path, default=None,
                   help="ble: TOML file with [[sensor]] tables (address/name, runner, site, rate...; docs/ble.md)")
    r.add_argument("--adapter", default=None, help="ble: BlueZ adapter (default: the config's or BlueZ's)")
    r.add_argument("--workers", type=int, default=1,
                   help="sim/replay: shard the runners over N worker processes (each owns a disjoint set of "
                        "runners, one MQTT connection per runner); 0 = one per CPU")
    r.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl+C / end of replay)")
    r.add_argument("--speed", type=float, default=1.0, help="1 = real time, 0 = as fast as possible")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=1883)
    r.add_argument("--user", default="edge")
    r.add_argument("--password", default="runform")
    r.add_argument("--start-broker", action="store_true", help="start a broker for this run (demo users)")
    r.add_argument("--no-mqtt", action="store_true", help="journal + cues on stdout only")
    r.add_argument("--users-db", type=Path, default=None,
                   help="user store of `runform server`/`runform user`: the edge re-checks every control "
                        "command's issuer and role against it (default: trust the broker's ACL)")
    r.add_argument("--journal-dir", type=Path, default=Path("journal"), help="where raw journals go (sim, ble)")
    r.add_argument("--program", default=None,
                   help="return-to-run program file or name; given explicitly it overrides the server's plan "
                        "(plans then change only targets/limits). Without it the edge follows each runner's "
                        "retained plan (runform/v1/{runner}/plan) set by the therapist")
    r.add_argument("--stage", type=int, default=None, help="program stage (1-based, default 1; with --program)")
    r.add_argument("--programs-dir", type=Path, default=None,
                   help="folder of program TOML files (NAME.toml) for plans and --program NAME "
                        "(then the built-in examples)")
    r.add_argument("--no-plan", action="store_true", help="ignore the server's plans (do not subscribe)")
    r.add_argument("--target-cadence", type=float, default=170.0)
    r.add_argument("--raw", action="store_true", help="publish raw blocks from the start")
    r.add_argument("--quiet", action="store_true", help="do not print every cue")
    r.add_argument("-v", "--verbose", action="store_true")
    r.set_defaults(func=_cmd_run)


def _cmd_broker(args) -> int:
    from .broker import AccessSpec, AccessSpecError, BrokerError, start_broker
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        access = AccessSpec.from_json(args.users) if args.users else AccessSpec.demo()
    except (AccessSpecError, OSError) as exc:
        print(f"runform broker: --users {args.users}: {exc}", file=sys.stderr)
        return 2
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="runform-broker-"))
    try:
        broker = start_broker(workdir, access, prefer="embedded" if args.embedded else "auto", port=args.port,
                              **({} if args.embedded else {"websockets": args.websockets, "ws_port": args.ws_port,
                                                           "persistence": args.persistence}))
    except BrokerError as exc:
        print(f"runform broker: {exc}", file=sys.stderr)
        return 1
    print(f"{broker.kind} listening on 127.0.0.1:{broker.port}"
          + (f", websockets 127.0.0.1:{broker.ws_port}" if getattr(broker, "ws_port", None) else "")
          + f"; config and log in {workdir}; users: {', '.join(u.name for u in access.users)}", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    try:
        while not stop and broker.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    rc = broker.stop()
    return 0 if rc in (0, None, -15) else 1


def _ble_specs(args):
    """``--sensor`` options and/or ``--bridge-config`` -> (SensorSpecs, bridge options)."""
    from runform.firmware_bridge.ble import BridgeConfigError, load_bridge_config, parse_sensor_option
    specs, options = [], {}
    if args.bridge_config is not None:
        specs, options = load_bridge_config(args.bridge_config)
    default_runner = f"{args.runner_prefix}1"
    specs += [parse_sensor_option(text, runner=default_runner) for text in args.sensor]
    if not specs:
        raise BridgeConfigError("--source ble needs --sensor ADDRESS=site[@runner] or --bridge-config FILE",
                                source="runform run")
    ids = [s.sensor_id for s in specs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise BridgeConfigError(f"sensor {dup} given twice (same runner and site)", source="runform run")
    return specs, options


def _runner_names(args) -> list[str]:
    if args.source == "sim":
        return [f"{args.runner_prefix}{i + 1}" for i in range(args.runners)]
    if args.source == "replay":
        return [f"{args.runner_prefix}{i + 1}" for i in range(len(args.journal))]
    specs, _ = _ble_specs(args)
    return list(dict.fromkeys(s.runner for s in specs))


def _configs(args, names, port):
    from .cues import CueConfig
    from .edge import RunnerConfig
    from .mqtt import MqttSettings
    from .programs import load_program
    program = None
    if args.program:
        pdir = getattr(args, "programs_dir", None)
        named = pdir / f"{args.program}.toml" if pdir is not None else None
        program = load_program(named if named is not None and named.is_file() else args.program)
    stage = args.stage if args.stage is not None else 1
    if program is not None and not 1 <= stage <= len(program.stages):
        raise SystemExit(f"runform run: --stage {stage} out of range ({program.name} has {len(program.stages)} "
                         "stages)")
    access = None
    if getattr(args, "users_db", None):
        from .auth import open_user_store
        from .auth._mqtt import access_spec_from_store
        access = access_spec_from_store(open_user_store(args.users_db))
    return {name: RunnerConfig(
        name, access=access, mqtt=None if args.no_mqtt else MqttSettings(args.host, port, args.user, args.password),
        journal_dir=args.journal_dir if args.source in ("sim", "ble") else None,
        cue=CueConfig(target_cadence_spm=args.target_cadence), program=program,
        program_stage=max(0, stage - 1), publish_raw=args.raw, follow_plan=not getattr(args, "no_plan", False),
        programs_dir=getattr(args, "programs_dir", None)) for name in names}


def _sources(args, indexed_names):
    """Sources for ``[(global_index, runner)]`` (the index seeds the simulated runner: shards stay distinct)."""
    from .edge import BleHub, JournalReplaySource, SimulatorSource
    if args.source == "sim":
        from runform.firmware_bridge.simulator import RunnerProfile
        prof = RunnerProfile(cadence_spm=args.cadence)
        return [SimulatorSource(name, profile=prof, sites=tuple(args.site or ("sacrum",)),
                                duration_s=args.duration, speed=args.speed, seed=i) for i, name in indexed_names]
    if args.source == "replay":
        return [JournalReplaySource(args.journal[i], name, speed=args.speed) for i, name in indexed_names]
    specs, options = _ble_specs(args)
    adapter = args.adapter or options.get("adapter")
    hub = BleHub(specs, adapter=adapter, queue_blocks=int(options.get("queue_size", 512)))
    return [hub.sources[name] for _, name in indexed_names]


def _edge_main(indexed_names, args, port: int, *, worker_index: int | None = None) -> dict:
    """Run one edge over ``indexed_names`` until the sources end, --duration, SIGINT or SIGTERM."""
    from .edge import Edge
    sources = _sources(args, indexed_names)
    configs = _configs(args, [n for _, n in indexed_names], port)
    edge = Edge(sources, configs)
    tag = "" if worker_index is None else f"w{worker_index} "
    if not args.quiet:
        for name, p in edge.pipelines.items():
            p._on_cue = (lambda n: (lambda c: print(
                f"{tag}[{n}] t={c.time_s:9.2f} {c.kind:9s} {c.code:16s} "
                f"{c.text or ''}{'' if c.bpm is None else f' ({c.bpm:.0f} bpm)'}", flush=True)))(name)

    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, edge.stop)
        return await edge.run(args.duration + 2.0 if args.duration else None)

    stats = asyncio.run(main())
    for src in sources:
        hub = getattr(src, "hub", None)
        if hub is not None:  # BLE link statistics next to the pipeline's
            for sid, st in hub.stats().items():
                stats.setdefault(st["runner"], {}).setdefault("ble", {})[sid] = st
            break
    return {"stats": stats}


def _worker(indexed_names, *, worker_index: int, args, port: int) -> dict:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=f"%(asctime)s w{worker_index} %(levelname)s %(name)s: %(message)s")
    return _edge_main(indexed_names, args, port, worker_index=worker_index)


def _cmd_run(args) -> int:
    import os

    from .broker import AccessSpec, start_broker
    from ._workers import run_sharded, shard

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        names = _runner_names(args)
    except Exception as exc:  # BridgeConfigError and friends: a clear message, not a traceback
        print(f"runform run: {exc}", file=sys.stderr)
        return 2
    if args.source == "replay" and not args.journal:
        print("runform run --source replay needs --journal FILE", file=sys.stderr)
        return 2
    if not names:
        print("runform run: no runners", file=sys.stderr)
        return 2
    workers = args.workers if args.workers > 0 else (os.cpu_count() or 1)
    if workers > 1 and args.source == "ble":
        print("runform run: --workers applies to --source sim|replay; BLE sensors share one adapter and its "
              "connect lock, so they run in one process", file=sys.stderr)
        return 2
    broker = None
    port = args.port
    if args.start_broker and not args.no_mqtt:
        broker = start_broker(Path(tempfile.mkdtemp(prefix="runform-broker-")), AccessSpec.demo(names), port=None)
        port = broker.port
        print(f"started {broker.kind} on 127.0.0.1:{port} (users edge/pt/{names[0]}..., password 'runform')")
    indexed = list(enumerate(names))
    try:
        if workers <= 1:
            results = [_edge_main(indexed, args, port)]
        else:
            groups = shard(indexed, workers)
            print(f"{len(groups)} workers: " + "; ".join(f"w{i}: {len(g)} runners" for i, g in enumerate(groups)),
                  flush=True)
            results = run_sharded(_worker, groups, {"args": args, "port": port})
    finally:
        if broker is not None:
            broker.stop()
    stats, failed = {}, []
    for r in results:
        if "error" in r:
            failed.append(r)
            print(f"runform run: worker {r.get('worker')} failed: {r['error']}", file=sys.stderr)
        else:
            stats.update(r["stats"])
    print(json.dumps(stats, indent=1, default=str))
    return 1 if failed else 0
