"""``runform demo``: the whole system on one machine, with two simulated runners wearing virtual BLE sensors.

::

    VirtualSensor x2 + VirtualRscPod (bluezoo, dbus-fast GATT)  <- runner simulator (one below target cadence,
        │ BLE notifications over the emulated BlueZ (private D-Bus)    one imbalanced, on a lossy link, low battery)
    BleHub: ONE Bridge (bleak, real BlueZ backend) for every runner's sensors, as `runform run --source ble`
        │ per runner: raw journal first, then SampleBlocks (DSP) / MetricsBlocks (pod: coarse metrics)
    Edge (DSP -> metrics -> cues; status with each sensor link's battery, loss, reconnects) ── MQTT ──> Mosquitto
                                                 │
                           ingest -> SQLite ─────┤
                           API + live WebSocket ─┴──> dashboards (therapist, runner, lab)

Without bluezoo or dbus-daemon the runners come from the simulator source instead (said on start).
:class:`DemoStack` is also what the UI tests start (with simulator sources and more runners).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("runform.demo")

DEMO_PASSWORD = "runform-demo"  # every demo login (printed on start; the demo listens on loopback only)
SERVER_MQTT_USER = "runform-server"
EDGE_MQTT_USER = "runform-edge"


@dataclass(frozen=True)
class DemoRunner:
    """One simulated runner: its true gait and the coaching target the edge cues against."""

    name: str
    cadence_spm: float = 170.0
    asymmetry_pct: float = 0.0
    target_cadence_spm: float = 170.0
    program: str | None = None  # example program name (server/programs), or None
    program_stage: int = 0
    site: str = "sacrum"
    seed: int = 0
    story: str = ""
    loss_pct: float = 0.0  # the virtual sensor's packet loss on air (BLE source)
    battery_pct: float = 92.0  # its battery at start
    pod_site: str | None = None  # also an RSC foot pod (coarse cadence + speed) at this site (BLE source)
    publish_raw: bool = True  # raw samples over MQTT (stored by the server; the therapist's live trace)


DEFAULT_RUNNERS = (
    DemoRunner("maya", cadence_spm=158.0, target_cadence_spm=172.0, program="demo-short", program_stage=1, seed=1,
               loss_pct=0.2, battery_pct=81.0, pod_site="foot_right",
               story="runs below her target cadence (158 vs 172 steps/min), on a walk/run program; "
                     "also wears a foot pod"),
    DemoRunner("leo", cadence_spm=170.0, asymmetry_pct=14.0, target_cadence_spm=170.0, seed=2,
               loss_pct=2.0, battery_pct=23.0,
               story="on target cadence but with a left/right imbalance (left contact ~14 % longer); "
                     "his sensor's link loses ~2 % of packets and its battery is low"),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ the stack
@dataclass
class DemoStack:
    """Broker + ingest/API server + edge + runners, all on loopback; ``await start()``, ``await stop()``.

    ``source``: "ble" (virtual sensors through bluezoo + bleak; falls back to "sim" with a message when the
    emulator is missing) or "sim" (the edge's simulator source). ``workdir`` holds the user store, the session
    database, the broker files and the journals.
    """

    workdir: Path
    runners: tuple[DemoRunner, ...] = DEFAULT_RUNNERS
    source: str = "ble"
    api_port: int | None = None
    sampling_rate_hz: float = 500.0
    password: str = DEMO_PASSWORD
    extra_therapists: tuple[str, ...] = ()  # therapists without runners (tests)
    prefer_broker: str = "auto"  # "auto" | "embedded"
    log: Any = print
    # filled by start()
    broker: Any = None
    broker_kind_: str = ""
    mqtt_port_: int = 0
    ws_port_: int | None = None
    source_used_: str = ""
    fallback_reason_: str | None = None
    edge: Any = None
    users: Any = None
    sessions: Any = None
    ingest: Any = None
    _tasks: list = field(default_factory=list)
    _server: Any = None
    _emulator: Any = None
    _virtual: list = field(default_factory=list)
    ble_hub: Any = None  # runform.server.edge.BleHub (BLE source)
    _edge_task: Any = None
    _service_pw: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def therapist_url(self) -> str:
        """The therapist page (live data, the live signal included, over the API's WebSocket)."""
        return f"{self.url}/dashboards/therapist/"

    # ---------------------------------------------------------------- users
    def _make_users(self):
        from runform.server.auth import UserStore
        users = UserStore(self.workdir / "users.db", mqtt_iterations=1000)
        names = [r.name for r in self.runners]
        for n in names:
            users.add_user(n, "runner", self.password)
        users.add_user("pt", "therapist", self.password)
        for n in names:
            users.assign("pt", n)
        for t in self.extra_therapists:
            users.add_user(t, "therapist", self.password)
        users.add_user("lab", "lab", self.password)
        users.add_study("pilot", "Cadence retraining pilot (demo)")
        for n in names:
            users.enroll("pilot", n, 0.0)  # every session of the demo runners belongs to the study
        users.grant_study("lab", "pilot")
        users.add_user("admin", "admin", self.password)
        for svc in (SERVER_MQTT_USER, EDGE_MQTT_USER):
            pw = secrets.token_urlsafe(18)
            users.add_user(svc, "service", pw)
            self._service_pw[svc] = pw
        for r in self.runners:
            users.set_runner_settings(r.name, targets={"cadence_spm": r.target_cadence_spm, "tolerance_spm": 5.0},
                                      program=r.program, set_by="demo")
        return users

    def _start_broker(self):
        from runform.server.broker import AccessSpec, BrokerUser, mosquitto_available, start_broker
        if self.prefer_broker != "embedded" and mosquitto_available():
            from runform.server.auth import StoreMosquittoBroker
            b = StoreMosquittoBroker(self.workdir / "mosquitto", self.users, websockets=True).start()
            return b, "mosquitto"
        names = tuple(r.name for r in self.runners)
        spec = AccessSpec(tuple([BrokerUser(n, self.password, "runner") for n in names]
                                + [BrokerUser("pt", self.password, "therapist", names)]
                                + [BrokerUser(s, pw, "service") for s, pw in self._service_pw.items()]))
        b = start_broker(self.workdir / "broker", spec, prefer="embedded")
        return b, "embedded (iotcore/rumqttd: no password/ACL enforcement)"

    # ---------------------------------------------------------------- sources
    def _sim_sources(self):
        from runform.firmware_bridge.simulator import RunnerProfile, Segment
        from runform.server.edge import SimulatorSource
        out = []
        for r in self.runners:
            prof = RunnerProfile(cadence_spm=r.cadence_spm, asymmetry_pct=r.asymmetry_pct)
            out.append(SimulatorSource(r.name, profile=prof, sites=(r.site,), segments=_segments(r, Segment),
                                       sampling_rate_hz=self.sampling_rate_hz, seed=r.seed))
        return out

    async def _ble_sources(self):
        """One virtual sensor per runner (plus its foot pod, if any) on bluezoo, all through ONE bridge (the
        edge's :class:`~runform.server.edge.BleHub`, exactly what ``runform run --source ble`` uses): each
        runner's raw journal, its DSP blocks, its pod's coarse metrics and its links in the retained status."""
        from runform.firmware_bridge.ble import SensorSpec
        from runform.firmware_bridge.simulator import RunnerProfile, Segment
        from runform.firmware_bridge.virtual import BluezooEmulator, SensorBehavior, VirtualRscPod, VirtualSensor
        from runform.server.edge import BleHub
        n = sum(1 + (r.pod_site is not None) for r in self.runners)
        emu = BluezooEmulator(n, set_environ=True)
        await asyncio.get_running_loop().run_in_executor(None, emu.start)
        self._emulator = emu
        specs = []
        for r in self.runners:
            prof = RunnerProfile(cadence_spm=r.cadence_spm, asymmetry_pct=r.asymmetry_pct)
            segs = _segments(r, Segment)
            name, addr = emu.take_adapter()
            beh = SensorBehavior(connection_interval_ms=15.0, loss_pct=r.loss_pct, clock_drift_ppm=20.0,
                                 battery_start_pct=r.battery_pct, seed=r.seed)
            vs = VirtualSensor(r.site, sampling_rate_hz=self.sampling_rate_hz, profile=prof, segments=segs,
                               seed=r.seed, behavior=beh)
            await vs.start(name, addr)
            self._virtual.append(vs)
            specs.append(SensorSpec(site=r.site, address=addr, runner=r.name, sampling_rate_hz=self.sampling_rate_hz))
            if r.pod_site is not None:
                name, addr = emu.take_adapter()
                pod = VirtualRscPod(r.pod_site, profile=prof, segments=segs, seed=r.seed + 100, interval_s=1.0,
                                    behavior=SensorBehavior(battery_start_pct=r.battery_pct, seed=r.seed + 100))
                await pod.start(name, addr)
                self._virtual.append(pod)
                specs.append(SensorSpec(site=r.pod_site, address=addr, runner=r.name, kind="rsc"))
        self.ble_hub = BleHub(specs, adapter="hci0", queue_blocks=4096)
        return [self.ble_hub.sources[r.name] for r in self.runners]

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> "DemoStack":
        from runform.server.cues import CueConfig
        from runform.server.edge import Edge, RunnerConfig
        from runform.server.ingest import Ingestor
        from runform.server.mqtt import MqttSettings, plan_payload
        from runform.server.programs import load_program
        from runform.server.storage import open_store

        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self.users = await loop.run_in_executor(None, self._make_users)
        self.broker, self.broker_kind_ = await loop.run_in_executor(None, self._start_broker)
        self.mqtt_port_ = int(self.broker.port)
        self.ws_port_ = getattr(self.broker, "ws_port", None)
        svc = MqttSettings(host="127.0.0.1", port=self.mqtt_port_, username=SERVER_MQTT_USER,
                           password=self._service_pw[SERVER_MQTT_USER])
        self.sessions = open_store(self.workdir / "sessions.db")
        # programs reach the edge the way a therapist's do: a stored plan the server publishes (retained) on
        # connecting, which the edge follows (no --program pin on the edge)
        for r in self.runners:
            if r.program:
                prog = load_program(r.program)
                self.sessions.put_plan(r.name, plan_payload(
                    r.name, program=prog.name, stage=r.program_stage + 1, n_stages=len(prog.stages),
                    targets={"cadence_spm": r.target_cadence_spm, "tolerance_spm": 5.0}, set_by="demo"))
        self.ingest = Ingestor(self.sessions, "127.0.0.1", self.mqtt_port_, username=SERVER_MQTT_USER,
                               password=self._service_pw[SERVER_MQTT_USER], client_id="rf-ingest-demo").start()
        await self._start_api(svc)

        # sources: the real BLE path when the emulator is there, else the simulator
        self.source_used_ = self.source
        if self.source == "ble":
            from runform.firmware_bridge.virtual import emulator_missing_reason
            reason = emulator_missing_reason()
            if reason:
                self.fallback_reason_ = reason
                self.source_used_ = "sim"
        sources = await self._ble_sources() if self.source_used_ == "ble" else self._sim_sources()
        edge_mqtt = MqttSettings(host="127.0.0.1", port=self.mqtt_port_, username=EDGE_MQTT_USER,
                                 password=self._service_pw[EDGE_MQTT_USER])
        configs = {}
        for r in self.runners:
            configs[r.name] = RunnerConfig(
                r.name, mqtt=edge_mqtt, journal_dir=self.workdir / "journal" / "edge",
                cue=CueConfig(target_cadence_spm=r.target_cadence_spm),
                publish_raw=r.publish_raw)
        self.edge = Edge(sources, configs)
        self._edge_task = asyncio.create_task(self.edge.run(), name="edge")
        return self

    async def _start_api(self, svc) -> None:
        import uvicorn

        from runform.server.api import ApiConfig, LiveHub, create_app
        hub = LiveHub(svc)
        app = create_app(self.users, self.sessions, config=ApiConfig(), hub=hub)
        self.api_port = self.api_port or _free_port()

        class _Server(uvicorn.Server):  # the demo handles Ctrl-C itself
            @contextlib.contextmanager
            def capture_signals(self):
                yield

        self._server = _Server(uvicorn.Config(app, host="127.0.0.1", port=self.api_port, log_level="warning",
                                              lifespan="on", ws="auto"))
        self._tasks.append(asyncio.create_task(self._server.serve(), name="api"))
        for _ in range(200):
            if self._server.started:
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"the API server did not start on port {self.api_port}")
        for _ in range(100):
            if hub.connected:
                break
            await asyncio.sleep(0.05)
        self.hub = hub

    async def stop(self) -> dict:
        stats: dict = {}
        if self.edge is not None:
            self.edge.stop()
            with contextlib.suppress(Exception):
                stats = await asyncio.wait_for(self._edge_task, 15.0)
        if self.ble_hub is not None:  # the edge stops the bridge with its last source; this is the safety net
            for src in self.ble_hub.sources.values():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(src.aclose(), 15.0)
        for vs in self._virtual:
            with contextlib.suppress(Exception):
                await vs.stop()
        if self._emulator is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._emulator.stop)
        await asyncio.sleep(0.5)  # last messages reach the ingest
        if self._server is not None:
            self._server.should_exit = True
            await asyncio.gather(*self._tasks, return_exceptions=True)
        loop = asyncio.get_running_loop()
        if self.ingest is not None:
            await loop.run_in_executor(None, self.ingest.stop)
        if self.broker is not None:
            await loop.run_in_executor(None, self.broker.stop)
        return stats

    def stored_summary(self) -> dict:
        """Per runner: sessions, steps and raw sensors in the session store (what flowed end to end)."""
        out = {}
        for r in self.runners:
            sess = self.sessions.list_sessions([r.name])
            steps = sum(len(self.sessions.read_steps(s.id, None, None, None)) for s in sess)
            out[r.name] = {"sessions": len(sess), "steps_stored": int(steps)}
        return out


def _segments(r: DemoRunner, Segment) -> list:
    """Stand, then (with a program) walk/run blocks matching its stage, else run; about 30 minutes."""
    segs = [Segment("stand", 2.0)]
    if r.program:
        for _ in range(15):
            segs += [Segment("walk", 10.0), Segment("run", 60.0, {"cadence_spm": r.cadence_spm})]
    else:
        segs.append(Segment("run", 1800.0, {"cadence_spm": r.cadence_spm}))
    return segs


# ------------------------------------------------------------------------------------------------ CLI
def register(subparsers) -> None:
    d = subparsers.add_parser(
        "demo", help="the whole system: broker, server, edge and two runners on virtual BLE sensors",
        description="Starts the MQTT broker (Mosquitto, else the embedded fallback), the server (ingest + API + "
                    "dashboards), the edge and two simulated runners whose virtual sensors stream through the "
                    "emulated BLE stack (bluezoo + bleak), then prints the dashboard URLs and logins. Ctrl-C stops.")
    d.add_argument("--headless", action="store_true", help="no interaction: run --duration seconds, print a summary")
    d.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    d.add_argument("--port", type=int, default=8080, help="API/dashboard port (0 = any free port)")
    d.add_argument("--source", choices=("ble", "sim"), default="ble",
                   help="ble: virtual sensors through the emulated BLE stack (default); sim: the simulator source")
    d.add_argument("--dir", type=Path, default=None, help="work directory (default: a new temporary directory)")
    d.add_argument("--rate", type=float, default=500.0, help="sensor sampling rate, Hz")
    d.add_argument("--embedded-broker", action="store_true", help="use the embedded broker even with Mosquitto")
    d.add_argument("-v", "--verbose", action="store_true")
    d.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # expected on the emulated stack: no bluetoothctl, the bus going away on stop
        logging.getLogger("bleak").setLevel(logging.ERROR)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="runform-demo-"))
    port = args.port
    if port and not _port_free(port):
        print(f"port {port} is busy; using a free one (set --port)", flush=True)
        port = 0
    stack = DemoStack(workdir, source=args.source, api_port=port or None, sampling_rate_hz=args.rate,
                      prefer_broker="embedded" if args.embedded_broker else "auto")
    try:
        return asyncio.run(_demo_main(stack, args))
    except KeyboardInterrupt:
        return 130


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _demo_main(stack: DemoStack, args) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    t0 = time.monotonic()
    print(f"runform demo: starting (work directory {stack.workdir})", flush=True)
    try:
        await stack.start()
    except BaseException:
        await stack.stop()
        raise
    _print_banner(stack)
    first_data = asyncio.create_task(_first_data(stack, t0))
    try:
        if args.duration:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
        else:
            await stop.wait()
    finally:
        first_data.cancel()
        print("runform demo: stopping ...", flush=True)
        edge_stats = await stack.stop()
    summary = await loop.run_in_executor(None, stack.stored_summary)
    for name, st in (edge_stats or {}).items():
        summary.setdefault(name, {}).update(steps_detected=st.get("steps", 0), cues=st.get("cues", 0),
                                            samples=st.get("samples", 0))
    for name, p in (stack.edge.pipelines.items() if stack.edge is not None else ()):
        # what the therapist saw in the retained status: each sensor link's battery, loss and reconnects
        summary.setdefault(name, {})["links"] = [
            {k: ln[k] for k in ("sensor_id", "kind", "battery_pct", "packets_received", "packets_lost", "loss_pct",
                                "reconnects")} for ln in (x.to_payload() for x in p.links())]
    print("runform demo: summary " + json.dumps(summary, sort_keys=True), flush=True)
    await loop.run_in_executor(None, stack.sessions.close)
    await loop.run_in_executor(None, stack.users.close)
    ok = all(v.get("steps_stored", 0) > 0 for v in summary.values())
    if args.headless and not ok:
        print("runform demo: no steps reached the session store for every runner", file=sys.stderr, flush=True)
        return 1
    return 0


async def _first_data(stack: DemoStack, t0: float) -> None:
    while True:
        await asyncio.sleep(0.2)
        if stack.edge is not None and all(p.counters.get("steps", 0) > 0 for p in stack.edge.pipelines.values()):
            print(f"runform demo: live data from every runner {time.monotonic() - t0:.1f} s after start",
                  flush=True)
            return


def _print_banner(stack: DemoStack) -> None:
    u = stack.url
    src = "virtual BLE sensors (bluezoo + bleak, real BlueZ D-Bus path)" if stack.source_used_ == "ble" else \
        "the simulator source"
    lines = [
        "",
        "runform demo is running",
        f"  broker     {stack.broker_kind_} on 127.0.0.1:{stack.mqtt_port_}"
        + (f" (MQTT over WebSockets on 127.0.0.1:{stack.ws_port_})" if stack.ws_port_ else ""),
        f"  server     {u}  (API {u}/api/v1, OpenAPI {u}/api/v1/openapi.json)",
        f"  runners    from {src}",
    ]
    if stack.fallback_reason_:
        lines.append(f"             (BLE emulator unavailable: {stack.fallback_reason_}; using the simulator)")
    for r in stack.runners:
        lines.append(f"             {r.name}: {r.story or f'{r.cadence_spm:.0f} steps/min'}")
    lines += [
        "  dashboards",
        f"    therapist  {stack.therapist_url}   login pt / {stack.password}",
        f"    runner     {u}/dashboards/runner/      login " + " or ".join(r.name for r in stack.runners)
        + f" / {stack.password}",
        f"    lab        {u}/dashboards/lab/         login lab / {stack.password}",
        "  watch the MQTT traffic as the therapist:",
        f"    mqtt host 127.0.0.1 port {stack.mqtt_port_} user pt password {stack.password}",
        f"    mosquitto_sub -h 127.0.0.1 -p {stack.mqtt_port_} -u pt -P {stack.password} -t 'runform/v1/#' -v",
        "  Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)
