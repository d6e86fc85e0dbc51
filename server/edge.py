"""The edge process: sources -> raw journal -> streaming DSP -> rolling metrics -> cues -> MQTT, per runner.

::

    SampleSource (simulator | journal replay | BLE bridge)
        │ SourceItem(block: SampleBlock, raw: bytes | None)
        ▼
    reader task ── JournalWriter.append(raw)   (local disk FIRST: lossless while the broker is down)
        │ bounded asyncio.Queue (full -> block skipped by the DSP, counted; the journal still has it)
        ▼
    RunnerPipeline.process(block)
        GaitEventDetector.update -> steps ──> .../{sensor}/steps        (QoS1)
        RollingMetrics (every 1 s stream time) ──> .../metrics          (QoS0, newest wins)
        ProgramRunner (intervals) + CueEngine ──> .../cues              (QoS0 + message expiry)
        raw (only when enabled) ──> .../{sensor}/raw                    (QoS0, shed first)
        control/+ in ──> commands ──> .../control/reply                 (QoS1)
        status (retained, last will "offline")

One :class:`~runform.server.mqtt.MqttLink` (= one MQTT connection with its own will) per runner, so a runner's
status turns "offline" by itself when the edge dies, and one runner's backlog cannot starve another's cues.
All queues are bounded; what is dropped under overload is counted in the status ``counters``.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, Protocol, runtime_checkable

import numpy as np

from runform.dsp import ACTIVITY_RUNNING, STEP_DTYPE, empty_steps

from .broker import AccessSpec
from .cues import Cue, CueConfig, CueEngine
from .metrics import RollingMetrics
from .mqtt import (CLASS_CONTROL, CLASS_CUE, CLASS_METRICS, CLASS_RAW, CLASS_STEPS, MAX_CONTROL_BYTES,
                   RAW_CONTENT_TYPE, SCHEMA_CONTROL, MqttLink, MqttSettings, PayloadError, TopicError,
                   control_filter, cue_payload, cues_topic, decode_json, encode_json, encode_raw, make_client_id,
                   metrics_topic, parse_topic, raw_topic, reply_payload, reply_topic, roles_for, status_payload,
                   status_topic, steps_payload, steps_topic)
from .programs import Program, ProgramRunner

__all__ = ["SensorInfo", "SourceItem", "SampleSource", "SimulatorSource", "JournalReplaySource", "BleSource",
           "RunnerConfig", "RunnerPipeline", "Edge", "default_detector_factory"]

log = logging.getLogger("runform.edge")


# ------------------------------------------------------------------------------------------------ sources
@dataclass(frozen=True, slots=True)
class SensorInfo:
    sensor_id: str
    site: str
    sampling_rate_hz: float
    meta: dict = field(default_factory=dict)  # protocol metadata for the journal header


@dataclass(frozen=True, slots=True)
class SourceItem:
    """One block from a source; ``raw`` is the packet as received (journaled), None if already on disk."""

    block: Any  # runform.firmware_bridge.SampleBlock (or a RawBlock: same field names)
    raw: bytes | None = None


@runtime_checkable
class SampleSource(Protocol):
    """What the edge reads: an async iterator of :class:`SourceItem` for ONE runner.

    ``sensors`` lists what will appear (journal headers are written before the first block), ``aclose()``
    stops it. A live source must never block on the consumer (the edge reads it promptly and journals first).
    """

    runner: str
    sensors: list[SensorInfo]

    def __aiter__(self) -> AsyncIterator[SourceItem]: ...

    async def aclose(self) -> None: ...


class SimulatorSource:
    """Simulated sensors, real-time paced, through the real sensor protocol (runform v1 packets).

    Each packet of ``packet_samples`` samples is encoded with ``runform_v1.encode_data_packet`` (int16 counts at
    ``range_g``), decoded by ``RunformV1`` and timestamped by ``ClockSync`` exactly like a BLE notification,
    so the journal holds real protocol bytes. ``speed`` > 1 or 0 (as fast as possible) is for tests and
    benchmarks; then times come straight from the simulated sensor clock.
    """

    def __init__(self, runner: str, *, profile=None, sites: Iterable[str] = ("sacrum",), segments=None,
                 sampling_rate_hz: float = 500.0, packet_samples: int = 20, duration_s: float | None = None,
                 speed: float = 1.0, seed: int = 0, range_g: float = 16.0, gyro: bool = True) -> None:
        from runform.firmware_bridge.journal import sensor_metadata
        from runform.firmware_bridge.protocols import runform_v1 as v1
        from runform.firmware_bridge.simulator import RunnerProfile, SimulatorStream
        self.runner = runner
        self._v1 = v1
        self.speed = float(speed)
        self.duration_s = duration_s
        self.packet_samples = int(packet_samples)
        self.sampling_rate_hz = float(sampling_rate_hz)
        profile = profile if profile is not None else RunnerProfile()
        self._streams = {}
        self._protocols = {}
        self.sensors = []
        for k, site in enumerate(sites):
            stream = SimulatorStream(profile, site, sampling_rate_hz=sampling_rate_hz, seed=seed,  # one runner: every site shares the step sequence
                                     segments=segments, range_g=range_g, gyro=gyro)
            cfg = self._make_config(v1, sampling_rate_hz, range_g, gyro, site, stream)
            proto = v1.RunformV1(cfg)
            sid = f"sim-{runner}-{site}"
            self._streams[sid] = (site, stream)
            self._protocols[sid] = proto
            self.sensors.append(SensorInfo(sid, site, sampling_rate_hz,
                                           sensor_metadata(proto, sensor_id=sid, site=site, runner=runner,
                                                           address="simulator")))
        self._closed = False
        self.packets_ = 0

    @staticmethod
    def _make_config(v1, fs, range_g, gyro, site, stream):
        tick_hz = int(round(getattr(stream, "tick_hz", None) or 32768))
        rng = int(round(range_g))
        return v1.SensorConfig(sampling_rate_hz=float(fs), acc_range_g=rng, acc_scale_g_per_lsb=rng / 32768.0,
                               gyro_enabled=bool(gyro), tick_hz=tick_hz,
                               site=site if site in v1.SITE_CODES else "unknown", serial="sim")

    async def aclose(self) -> None:
        self._closed = True

    async def __aiter__(self):
        from runform.firmware_bridge import SampleBlock
        from runform.firmware_bridge.timestamping import SensorDecoder
        v1 = self._v1
        n = self.packet_samples
        dt = n / self.sampling_rate_hz
        decoders = {sid: SensorDecoder(self._protocols[sid], sensor_id=sid, site=site)
                    for sid, (site, _) in self._streams.items()}
        t0_host = time.monotonic()
        k = 0
        seq = {sid: 0 for sid in self._streams}
        while not self._closed:
            if self.duration_s is not None and k * dt >= self.duration_s:
                return
            if self.speed > 0:
                delay = t0_host + (k + 1) * dt / self.speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif k % 10 == 0:
                await asyncio.sleep(0)
            for sid, (site, stream) in self._streams.items():
                proto = self._protocols[sid]
                acc_ms2, gyr_dps, t_true, tick = stream.read(n)
                acc_raw = np.clip(np.rint(acc_ms2 / proto._acc_k), -32768, 32767).astype(np.int16)
                gyr_raw = None
                if gyr_dps is not None and proto.has_gyro:
                    gyr_raw = np.clip(np.rint(gyr_dps / proto._gyr_k), -32768, 32767).astype(np.int16)
                raw = v1.encode_data_packet(seq[sid], int(tick[0]), acc_raw, gyr_raw)
                arrival_ns = time.monotonic_ns()
                if self.speed == 1.0:  # paced like a sensor: the live decode + clock-sync path
                    for block in decoders[sid].feed(raw, arrival_ns):
                        yield SourceItem(block, raw)
                else:  # not paced like a sensor: times from the simulated clock itself
                    pkt = proto.decode(raw, arrival_ns)[0]
                    block = SampleBlock(sensor_id=sid, site=site, seq=seq[sid], first_tick=int(tick[0]),
                                        tick_hz=float(proto.tick_hz), sampling_rate_hz=self.sampling_rate_hz,
                                        acc_ms2=pkt.acc_ms2, gyr_dps=pkt.gyr_dps, arrival_ns=arrival_ns,
                                        time_s=t0_host + np.asarray(t_true, np.float64), arrival_stamped=False,
                                        clipped=pkt.clipped)
                    yield SourceItem(block, raw)
                seq[sid] += 1
                self.packets_ += 1
            k += 1


class JournalReplaySource:
    """Replays a raw journal (``runform.firmware_bridge.journal.JournalReader``) at ``speed`` x real time.

    Nothing is re-journaled (``raw=None``): the file is the record.
    """

    def __init__(self, path: str | os.PathLike, runner: str, *, speed: float = 1.0) -> None:
        from runform.firmware_bridge.journal import JournalReader
        self.runner = runner
        self.speed = float(speed)
        self._reader = JournalReader(path)
        meta = dict(self._reader.sensor_)
        self.sensors = [SensorInfo(str(meta.get("sensor_id") or Path(path).stem), str(meta.get("site") or "sacrum"),
                                   float(meta.get("sampling_rate_hz") or float("nan")), meta)]
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True

    async def __aiter__(self):
        t0_host = None
        t0_data = None
        for block in self._reader.blocks():
            if self._closed:
                return
            if not hasattr(block, "acc_ms2"):  # MetricsBlock of a coarse sensor: nothing for the DSP
                continue
            if self.speed > 0 and len(block.time_s):
                t_last = float(block.time_s[-1])
                if t0_host is None:
                    t0_host, t0_data = time.monotonic(), t_last
                delay = t0_host + (t_last - t0_data) / self.speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            yield SourceItem(block, None)


class BleSource:
    """Adapter over ``runform.firmware_bridge.ble.Bridge`` (async iterator of SampleBlocks) for one runner.

    Raw packets are journaled by the bridge's raw hook when it offers one (``on_raw``); otherwise the edge
    journals the re-encoded block.
    """

    def __init__(self, bridge, runner: str, sensors: list[SensorInfo]) -> None:
        self.bridge = bridge
        self.runner = runner
        self.sensors = sensors
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        stop = getattr(self.bridge, "stop", None)
        if stop is not None:
            await stop()

    async def __aiter__(self):
        async for block in self.bridge:
            if self._closed:
                return
            raw = getattr(block, "raw", None)
            yield SourceItem(block, raw)


# ------------------------------------------------------------------------------------------------ pipeline
def default_detector_factory(site: str, sampling_rate_hz: float, **kw):
    from runform.dsp import GaitEventDetector
    return GaitEventDetector(site, sampling_rate_hz, **kw)


@dataclass
class RunnerConfig:
    runner: str
    mqtt: MqttSettings | None = None  # None: no MQTT (offline journaling + cues to a callback)
    journal_dir: Path | None = None
    cue: CueConfig = field(default_factory=CueConfig)
    program: Program | None = None
    program_stage: int = 0
    publish_raw: bool = False
    metrics_period_s: float = 1.0
    metrics_window_s: float = 10.0
    access: AccessSpec | None = None  # second authorisation check of control issuers (None: trust the ACL)
    mass_kg: float | None = None
    dsp_queue_blocks: int = 512


class RunnerPipeline:
    """All per-runner state; :meth:`process` is called with each block (in the edge's event loop)."""

    def __init__(self, cfg: RunnerConfig, sensors: list[SensorInfo], *,
                 detector_factory: Callable[..., Any] = default_detector_factory,
                 on_cue: Callable[[Cue], None] | None = None) -> None:
        self.cfg = cfg
        self.runner = cfg.runner
        self.sensors = {s.sensor_id: s for s in sensors}
        self.detectors: dict[str, Any] = {}
        self._detector_factory = detector_factory
        self.metrics = RollingMetrics(window_s=cfg.metrics_window_s)
        primary = sensors[0].site if sensors else "sacrum"
        self.cues = CueEngine(cfg.cue, site=primary)
        self.program = ProgramRunner(cfg.program, cfg.program_stage) if cfg.program is not None else None
        self.raw_enabled = bool(cfg.publish_raw)
        self.paused = False
        self._on_cue = on_cue
        self._next_metrics_s = math.nan
        self._cue_id = 0
        self._last_time_s = math.nan
        self.counters = {"blocks": 0, "samples": 0, "steps": 0, "cues": 0, "control_ok": 0, "control_rejected": 0,
                         "control_malformed": 0, "control_unauthorised": 0, "control_overflow": 0,
                         "dsp_skipped_blocks": 0, "dsp_errors": 0, "cues_stale_at_birth": 0, "journal_errors": 0, "journaled_packets": 0}
        self.rejections: list[tuple[str, str]] = []  # last (issuer, reason), bounded
        self.journals: dict[str, Any] = {}
        self.edge_id = make_client_id("edge", self.runner)
        self.link: MqttLink | None = None
        self._control_q: asyncio.Queue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.cues_sent: list[Cue] = []  # last cues (bounded, for tests / the CLI)

    # ---- lifecycle -------------------------------------------------------------------------------------
    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._control_q = asyncio.Queue(maxsize=64)
        if self.cfg.journal_dir is not None:
            self._open_journals()
        if self.cfg.mqtt is not None:
            will = (status_topic(self.runner), encode_json(status_payload(
                self.runner, "offline", self.edge_id, reason="edge connection lost (last will)")))
            self.link = MqttLink(self.cfg.mqtt, self.edge_id, will=will, birth=self._birth,
                                 subscriptions=[(control_filter(self.runner), 1)], on_message=self._on_mqtt_message)
            self.link.set_waker(lambda: loop.call_soon_threadsafe(self._pump))
            self.link.start()

    def _open_journals(self) -> None:
        from runform.firmware_bridge.journal import JournalWriter
        d = Path(self.cfg.journal_dir) / self.runner
        d.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for sid, info in self.sensors.items():
            meta = dict(info.meta) or {"sensor_id": sid, "site": info.site,
                                       "sampling_rate_hz": info.sampling_rate_hz}
            meta.setdefault("runner", self.runner)
            self.journals[sid] = JournalWriter(d / f"{stamp}_{sid}.rfj", meta)

    def close(self, reason: str = "edge stopped") -> None:
        for j in self.journals.values():
            try:
                j.close()
            except Exception:  # a journal error must not hide the others
                log.exception("closing journal")
        if self.link is not None:
            self._pump()
            self.link.stop(final=(status_topic(self.runner), encode_json(self._status("offline", reason))))

    # ---- status ----------------------------------------------------------------------------------------
    def _status(self, state: str | None = None, reason: str | None = None) -> dict:
        st = state or ("paused" if self.paused else "online")
        now = self._last_time_s
        iv = self.program.state(now) if (self.program is not None and math.isfinite(now)) else None
        return status_payload(self.runner, st, self.edge_id, reason=reason, sensors=sorted(self.sensors),
                              raw_enabled=self.raw_enabled, interval=iv.to_payload() if iv else None,
                              target_cadence_spm=self.cues.config.target_cadence_spm,
                              counters=self.stats())

    def _birth(self) -> tuple[str, bytes]:
        return status_topic(self.runner), encode_json(self._status())

    def publish_status(self) -> None:
        if self.link is not None:
            self.link.enqueue(CLASS_CONTROL, status_topic(self.runner), encode_json(self._status()), retain=True)
            self._pump()

    def stats(self) -> dict:
        d = dict(self.counters)
        if self.link is not None:
            s = self.link.stats()
            d.update(mqtt_connected=s["connected"], mqtt_dropped=s["dropped_overflow"],
                     mqtt_stale_cues=s["dropped_stale_cues"], mqtt_queue_max=s["queue_max_depth"])
        return d

    def _pump(self) -> None:
        if self.link is not None:
            self.link.pump()

    # ---- data path -------------------------------------------------------------------------------------
    def journal(self, item: SourceItem) -> None:
        """Called by the reader task BEFORE the DSP queue: the raw record hits the disk first."""
        if item.raw is None or not self.journals:
            return
        j = self.journals.get(item.block.sensor_id)
        if j is None:
            return
        try:
            j.append(item.raw, int(item.block.arrival_ns))
            self.counters["journaled_packets"] += 1
        except Exception as exc:  # disk full etc.: report, keep running
            self.counters["journal_errors"] += 1
            log.error("journal append failed for %s: %s", item.block.sensor_id, exc)

    def _detector(self, block):
        det = self.detectors.get(block.sensor_id)
        if det is None:
            kw = {"mass_kg": self.cfg.mass_kg} if self.cfg.mass_kg is not None else {}
            det = self._detector_factory(block.site, float(block.sampling_rate_hz), **kw)
            self.detectors[block.sensor_id] = det
        return det

    def process(self, block) -> list[Cue]:
        """DSP + metrics + cues + publishing for one block; returns the cues emitted."""
        self.counters["blocks"] += 1
        n = int(block.acc_ms2.shape[0])
        self.counters["samples"] += n
        if n == 0:
            return []
        now = float(block.time_s[-1])
        self._last_time_s = now
        try:
            steps = self._detector(block).update(np.asarray(block.acc_ms2, np.float64),
                                                 np.asarray(block.time_s, np.float64),
                                                 None if block.gyr_dps is None else np.asarray(block.gyr_dps,
                                                                                               np.float64))
        except Exception as exc:  # bad block: counted, reported, pipeline keeps running
            self.counters["dsp_errors"] += 1
            log.error("%s/%s: detector rejected a block: %s", self.runner, block.sensor_id, exc)
            steps = empty_steps(0)
        link = self.link
        if link is not None and self.raw_enabled:
            link.enqueue(CLASS_RAW, raw_topic(self.runner, block.site), encode_raw(block),
                         content_type=RAW_CONTENT_TYPE)
        return self.handle_steps(steps, now, sensor=block.sensor_id, site=block.site,
                                 trigger_arrival_ns=int(block.arrival_ns))

    def handle_steps(self, steps: np.ndarray, now_s: float, *, sensor: str = "sensor", site: str = "sacrum",
                     trigger_arrival_ns: int | None = None) -> list[Cue]:
        """Steps (STEP_DTYPE) -> metrics, program, cues, MQTT. Public so other step producers can feed it."""
        self._last_time_s = now_s
        link = self.link
        if len(steps):
            self.counters["steps"] += len(steps)
            det = self.detectors.get(sensor)
            self.metrics.update(steps, activity=getattr(det, "activity_", None))
            if link is not None:
                link.enqueue(CLASS_STEPS, steps_topic(self.runner, site),
                             encode_json(steps_payload(self.runner, sensor, site, steps), check=False))
        changes = []
        if self.program is not None and not self.paused:
            changes = self.program.update(now_s)
        tick = False
        if not math.isfinite(self._next_metrics_s):
            self._next_metrics_s = now_s + self.cfg.metrics_period_s
        elif now_s >= self._next_metrics_s:
            tick = True
            self._next_metrics_s += self.cfg.metrics_period_s * max(1, math.floor(
                (now_s - self._next_metrics_s) / self.cfg.metrics_period_s) + 1)
        cues: list[Cue] = []
        if len(steps) or tick or changes:
            snap = self.metrics.snapshot(now_s)
            interval = self.program.state(now_s) if self.program is not None else None
            if not self.paused:
                cues = self.cues.update(steps, snap, now_s, interval=interval, changes=changes,
                                        trigger_arrival_ns=trigger_arrival_ns)
            if tick and link is not None:
                extra = {"cadence_target_spm": self.cues.config.target_cadence_spm, "paused": self.paused,
                         "interval": interval.to_payload() if interval else None}
                link.enqueue(CLASS_METRICS, metrics_topic(self.runner),
                             encode_json(snap.to_payload(self.runner, **extra)))
            if changes and link is not None:
                self.publish_status()
        for c in cues:
            self._emit_cue(c)
        self._pump()
        return cues

    def _emit_cue(self, cue: Cue) -> None:
        self._cue_id += 1
        self.counters["cues"] += 1
        self.cues_sent.append(cue)
        if len(self.cues_sent) > 256:
            del self.cues_sent[:128]
        if self._on_cue is not None:
            self._on_cue(cue)
        if self.link is not None:
            ttl = cue.ttl_s
            if cue.trigger_arrival_ns:  # the lifetime counts from the packet that caused it, not from now
                ttl -= (time.monotonic_ns() - cue.trigger_arrival_ns) / 1e9
            if ttl <= 0:
                self.counters["cues_stale_at_birth"] += 1  # the pipeline lags more than the cue's lifetime
                return
            self.link.enqueue(CLASS_CUE, cues_topic(self.runner),
                              encode_json(cue_payload(self.runner, dataclasses.replace(cue, ttl_s=ttl), self._cue_id),
                                          check=False), ttl_s=ttl)

    # ---- control ---------------------------------------------------------------------------------------
    def _on_mqtt_message(self, topic: str, payload: bytes, props) -> None:  # paho thread
        loop, q = self._loop, self._control_q
        if loop is None or q is None:
            return

        def put():
            try:
                q.put_nowait((topic, payload))
            except asyncio.QueueFull:
                self.counters["control_overflow"] += 1
        loop.call_soon_threadsafe(put)

    async def control_task(self) -> None:
        assert self._control_q is not None
        while True:
            topic, payload = await self._control_q.get()
            self.handle_control(topic, payload)

    def _reject(self, kind: str, issuer, request_id, command, reason: str) -> dict:
        self.counters["control_rejected"] += 1
        self.counters[kind] += 1
        self.rejections.append((str(issuer), reason))
        del self.rejections[:-32]
        log.warning("%s: control rejected (%s from %s): %s", self.runner, kind, issuer, reason)
        return reply_payload(self.runner, ok=False, request_id=request_id, command=command, issuer=issuer,
                             reason=reason, state=self._control_state())

    def _control_state(self) -> dict:
        now = self._last_time_s
        iv = self.program.state(now) if (self.program is not None and math.isfinite(now)) else None
        c = self.cues.config
        return {"paused": self.paused, "raw_enabled": self.raw_enabled, "target_cadence_spm": c.target_cadence_spm,
                "tolerance_spm": c.tolerance_spm, "metronome": c.metronome,
                "interval": iv.to_payload() if iv else None}

    def handle_control(self, topic: str, payload: bytes) -> dict | None:
        """Validate, authorise and apply one command; the reply (also returned) goes to ``control/reply``."""
        try:
            parts = parse_topic(topic)
        except TopicError as exc:
            self.counters["control_malformed"] += 1
            log.warning("control on unexpected topic: %s", exc)
            return None
        if parts.kind != "control" or parts.runner != self.runner:
            return None  # our own replies (control/reply) come back on the subscription
        issuer = parts.issuer
        request_id = command = None
        try:
            msg = decode_json(payload, SCHEMA_CONTROL, max_bytes=MAX_CONTROL_BYTES)
            request_id, command = msg["request_id"], msg["command"]
        except PayloadError as exc:
            # salvage request_id for the reply when the JSON itself was readable
            try:
                import json
                raw = json.loads(payload)
                if isinstance(raw, dict):
                    rid = raw.get("request_id")
                    request_id = rid if isinstance(rid, str) and len(rid) <= 64 else None
                    cmd = raw.get("command")
                    command = cmd if isinstance(cmd, str) and len(cmd) <= 64 else None
            except (ValueError, UnicodeDecodeError, RecursionError):
                pass
            reply = self._reject("control_malformed", issuer, request_id, command, f"malformed: {exc}")
            return self._send_reply(reply)
        role = None
        if self.cfg.access is not None:
            user = self.cfg.access.user(issuer)
            if user is None or not self.cfg.access.may_control(issuer, self.runner):
                return self._send_reply(self._reject("control_unauthorised", issuer, request_id, command,
                                                     f"unauthorised: {issuer!r} may not control {self.runner!r}"))
            role = user.role
            if role not in roles_for(command):
                return self._send_reply(self._reject(
                    "control_unauthorised", issuer, request_id, command,
                    f"unauthorised: role {role!r} may not {command} (needs {sorted(roles_for(command))})"))
        try:
            self._apply(command, msg.get("args", {}))
        except ValueError as exc:
            return self._send_reply(self._reject("control_malformed", issuer, request_id, command, str(exc)))
        self.counters["control_ok"] += 1
        log.info("%s: %s by %s (%s)", self.runner, command, issuer, role or "acl")
        return self._send_reply(reply_payload(self.runner, ok=True, request_id=request_id, command=command,
                                              issuer=issuer, state=self._control_state()))

    def _apply(self, command: str, args: dict) -> None:
        now = self._last_time_s if math.isfinite(self._last_time_s) else 0.0
        if command == "set_target_cadence":
            self.cues.set_target(args["cadence_spm"], args.get("tolerance_spm"))
        elif command == "set_limits":
            self.cues.set_limits(**args)
        elif command == "pause":
            self.paused = True
            if self.program is not None:
                self.program.pause(now)
        elif command == "resume":
            self.paused = False
            if self.program is not None:
                self.program.resume(now)
        elif command == "advance_interval":
            if self.program is None:
                raise ValueError("no program running: nothing to advance")
            changes = self.program.advance(now)
            snap = self.metrics.snapshot(now)
            interval = self.program.state(now)
            for c in self.cues.update(empty_steps(0), snap, now, interval=interval, changes=changes):
                self._emit_cue(c)
        elif command == "raw_on":
            self.raw_enabled = True
        elif command == "raw_off":
            self.raw_enabled = False
        elif command in ("metronome_on", "metronome_off"):
            self.cues.config = dataclasses.replace(self.cues.config, metronome=command == "metronome_on")
        elif command == "report_pain":
            if self.program is None:
                raise ValueError("no program running: pain is recorded per program session")
            setattr(self.program, "pain_before_" if args["when"] == "before" else "pain_after_", args["pain_0_10"])
        elif command == "status":
            pass
        if command != "status":
            self.publish_status()

    def _send_reply(self, reply: dict) -> dict:
        if self.link is not None:
            self.link.enqueue(CLASS_CONTROL, reply_topic(self.runner), encode_json(reply))
            self._pump()
        return reply


# ------------------------------------------------------------------------------------------------ edge
class Edge:
    """Runs one :class:`RunnerPipeline` per source; ``await edge.run()`` until the sources end or ``stop()``."""

    def __init__(self, sources: list[SampleSource], configs: dict[str, RunnerConfig], *,
                 detector_factory: Callable[..., Any] = default_detector_factory) -> None:
        self.sources = sources
        self.pipelines: dict[str, RunnerPipeline] = {}
        for src in sources:
            cfg = configs.get(src.runner) or RunnerConfig(src.runner)
            self.pipelines[src.runner] = RunnerPipeline(cfg, list(src.sensors), detector_factory=detector_factory)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._warm = detector_factory is not default_detector_factory  # test doubles need no compilation

    def stop(self) -> None:
        self._stop.set()

    async def run(self, duration_s: float | None = None) -> dict:
        loop = asyncio.get_running_loop()
        if not self._warm:
            # compile / load the numba kernels before any sensor streams, so the first packets are not late
            from runform.dsp import warmup
            await loop.run_in_executor(None, warmup)
            self._warm = True
        for p in self.pipelines.values():
            p.open(loop)
        try:
            work = []
            for src in self.sources:
                p = self.pipelines[src.runner]
                q: asyncio.Queue = asyncio.Queue(maxsize=p.cfg.dsp_queue_blocks)
                work.append(asyncio.create_task(self._reader(src, p, q)))
                work.append(asyncio.create_task(self._dsp(p, q)))
                self._tasks.append(asyncio.create_task(p.control_task()))
                self._tasks.append(asyncio.create_task(self._ticker(p)))
            readers = work[0::2]
            waiter = asyncio.create_task(self._stop.wait())
            timeout = asyncio.create_task(asyncio.sleep(duration_s)) if duration_s else None
            pending = set(readers) | {waiter} | ({timeout} if timeout else set())
            while True:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if waiter in done or (timeout is not None and timeout in done) or all(r.done() for r in readers):
                    break
            for src in self.sources:
                await src.aclose()
            for t in readers:
                t.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            for t in work[1::2]:  # let the DSP drain what was read
                t.cancel()
            await asyncio.gather(*work[1::2], return_exceptions=True)
            for t in list(pending) + self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, *pending, return_exceptions=True)
        finally:
            for p in self.pipelines.values():
                p.close()
        return {r: p.stats() for r, p in self.pipelines.items()}

    async def _reader(self, src: SampleSource, p: RunnerPipeline, q: asyncio.Queue) -> None:
        async for item in src:
            p.journal(item)  # disk first
            try:
                q.put_nowait(item.block)
            except asyncio.QueueFull:
                p.counters["dsp_skipped_blocks"] += 1
        await q.put(None)

    async def _dsp(self, p: RunnerPipeline, q: asyncio.Queue) -> None:
        while True:
            block = await q.get()
            if block is None:
                return
            p.process(block)

    async def _ticker(self, p: RunnerPipeline) -> None:
        """Pump the link (acks, reconnects) and refresh the retained status every 10 s."""
        k = 0
        while True:
            await asyncio.sleep(0.05)
            p._pump()
            k += 1
            if k % 200 == 0:
                p.publish_status()
