"""``runform broker`` (start the configured MQTT broker) and ``runform run`` (the edge pipeline)."""
from __future__ import annotations

import argparse
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
                              description="Run the edge for one or more runners.")
    r.add_argument("--source", choices=("sim", "replay"), default="sim",
                   help="sim: simulated runners in real time; replay: a recorded journal at real speed")
    r.add_argument("--journal", type=Path, action="append", default=[], help="journal file(s) to replay")
    r.add_argument("--runners", type=int, default=1, help="number of simulated runners (sim)")
    r.add_argument("--runner-prefix", default="runner")
    r.add_argument("--site", action="append", default=None, help="sensor site(s) (sim; default sacrum)")
    r.add_argument("--cadence", type=float, default=170.0, help="simulated cadence, steps/min")
    r.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl+C / end of replay)")
    r.add_argument("--speed", type=float, default=1.0, help="1 = real time, 0 = as fast as possible")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=1883)
    r.add_argument("--user", default="edge")
    r.add_argument("--password", default="runform")
    r.add_argument("--start-broker", action="store_true", help="start a broker for this run (demo users)")
    r.add_argument("--no-mqtt", action="store_true", help="journal + cues on stdout only")
    r.add_argument("--journal-dir", type=Path, default=Path("journal"), help="where raw journals go (sim)")
    r.add_argument("--program", default=None, help="return-to-run program file or example name")
    r.add_argument("--stage", type=int, default=1, help="program stage (1-based)")
    r.add_argument("--target-cadence", type=float, default=170.0)
    r.add_argument("--raw", action="store_true", help="publish raw blocks from the start")
    r.add_argument("-v", "--verbose", action="store_true")
    r.set_defaults(func=_cmd_run)


def _cmd_broker(args) -> int:
    from .broker import AccessSpec, BrokerError, start_broker
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    access = AccessSpec.from_json(args.users) if args.users else AccessSpec.demo()
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


def _cmd_run(args) -> int:
    from .broker import AccessSpec, MosquittoBroker, start_broker
    from .cues import Cue, CueConfig
    from .edge import Edge, JournalReplaySource, RunnerConfig, SimulatorSource
    from .mqtt import MqttSettings
    from .programs import load_program

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sources = []
    if args.source == "sim":
        from runform.firmware_bridge.simulator import RunnerProfile
        names = [f"{args.runner_prefix}{i + 1}" for i in range(args.runners)]
        for i, name in enumerate(names):
            prof = RunnerProfile(cadence_spm=args.cadence)
            sources.append(SimulatorSource(name, profile=prof, sites=tuple(args.site or ("sacrum",)),
                                           duration_s=args.duration, speed=args.speed, seed=i))
    else:
        if not args.journal:
            print("runform run --source replay needs --journal FILE", file=sys.stderr)
            return 2
        names = []
        for i, path in enumerate(args.journal):
            name = f"{args.runner_prefix}{i + 1}"
            names.append(name)
            sources.append(JournalReplaySource(path, name, speed=args.speed))
    broker = None
    port = args.port
    if args.start_broker and not args.no_mqtt:
        broker = start_broker(Path(tempfile.mkdtemp(prefix="runform-broker-")), AccessSpec.demo(names),
                              port=None)
        port = broker.port
        print(f"started {broker.kind} on 127.0.0.1:{port} (users edge/pt/{names[0]}..., password 'runform')")
    program = load_program(args.program) if args.program else None
    configs = {}
    for name in names:
        configs[name] = RunnerConfig(
            name, mqtt=None if args.no_mqtt else MqttSettings(args.host, port, args.user, args.password),
            journal_dir=args.journal_dir if args.source == "sim" else None,
            cue=CueConfig(target_cadence_spm=args.target_cadence), program=program,
            program_stage=max(0, args.stage - 1), publish_raw=args.raw)
    edge = Edge(sources, configs)
    for name, p in edge.pipelines.items():
        p._on_cue = (lambda n: (lambda c: print(f"[{n}] t={c.time_s:9.2f} {c.kind:9s} {c.code:16s} "
                                                f"{c.text or ''}{'' if c.bpm is None else f' ({c.bpm:.0f} bpm)'}",
                                                flush=True)))(name)

    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, edge.stop)
        return await edge.run(args.duration + 2.0 if args.duration else None)

    try:
        stats = asyncio.run(main())
    finally:
        if broker is not None:
            broker.stop()
    print(json.dumps(stats, indent=1, default=str))
    return 0
