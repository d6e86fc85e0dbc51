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
import functools
import gc
import logging
import math
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, Protocol, runtime_checkable

import numpy as np

from runform.dsp import ACTIVITY_RUNNING, STEP_DTYPE, empty_steps

from ._journal_worker import JournalWorker
from ._links import LinkStatus, LinkWindow, link_from_accounting, link_from_sensor_stats
from .broker import AccessSpec
from .cues import Cue, CueConfig, CueEngine
from .metrics import RollingMetrics
from .mqtt import (CLASS_CONTROL, CLASS_CUE, CLASS_METRICS, CLASS_RAW, CLASS_STEPS, MAX_CONTROL_BYTES,
                   RAW_CONTENT_TYPE, SCHEMA_CONTROL, SCHEMA_PLAN, MqttLink, MqttSettings, PayloadError, TopicError,
                   plan_topic, program_session_payload, program_topic,
                   control_filter, cue_payload, cues_topic, decode_json, encode_json, encode_raw, make_client_id,
                   metrics_topic, parse_topic, raw_topic, reply_payload, reply_topic, roles_for, status_payload,
                   status_topic, steps_payload, steps_topic)
from .programs import Program, ProgramError, ProgramRunner, resolve_program

__all__ = ["SensorInfo", "SourceItem", "SampleSource", "SimulatorSource", "PacketReplaySource", "ReplayPacer",
           "simulated_packets", "JournalReplaySource", "BleHub", "BleSource", "RunnerConfig", "RunnerPipeline", "Edge",
           "default_detector_factory"]

log = logging.getLogger("runform.edge")


# ------------------------------------------------------------------------------------------------ sources
@dataclass(frozen=True, slots=True)
class SensorInfo:
    sensor_id: str
    site: str
    sampling_rate_hz: float
    meta: dict = field(default_factory=dict)  # protocol metadata for the journal header
    journal_on_connect: bool = False  # BLE: the journal opens when the link knows the protocol (first connect)


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


SIM_READAHEAD_S = 1.0  # simulator samples generated per call (SimulatorSource): paced per packet all the same


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
            # one runner: every site shares the step sequence (same seed)
            stream = SimulatorStream(profile, site, sampling_rate_hz=sampling_rate_hz, seed=seed,
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
        self._decoders: dict = {}
        self.streaming_ = False

    def link_stats(self) -> list[LinkStatus]:
        """Per sensor: packets from the decoder's accounting; ``connected`` while the simulation streams."""
        on = self.streaming_ and not self._closed
        return [link_from_accounting(s.sensor_id, s.site, "sim", on,
                                     self._decoders[s.sensor_id].stats() if s.sensor_id in self._decoders else None)
                for s in self.sensors]

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
        self._decoders = decoders
        self.streaming_ = True
        t0_host = time.monotonic()
        k = 0
        seq = {sid: 0 for sid in self._streams}
        # The simulator's cost is per call, not per sample (~7 ms a call whatever its length, measured with 10
        # runners in one process): read SIM_READAHEAD_S at a time and cut packets from it. The stream is
        # chunking-invariant (tests/sim), so every packet is identical to reading it alone.
        ahead = max(1, int(round(SIM_READAHEAD_S / dt)))
        buf: dict = {}
        while not self._closed:
            if self.duration_s is not None and k * dt >= self.duration_s:
                self.streaming_ = False
                return
            if self.speed > 0:
                delay = t0_host + (k + 1) * dt / self.speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif k % 10 == 0:
                await asyncio.sleep(0)
            for sid, (site, stream) in self._streams.items():
                proto = self._protocols[sid]
                j = (k % ahead) * n
                if j == 0:
                    buf[sid] = stream.read(n * ahead)
                acc_ms2, gyr_dps, t_true, tick = (None if a is None else a[j:j + n] for a in buf[sid])
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
                    decoders[sid].accounting.on_packet(seq[sid], n, arrival_ns)
                    block = SampleBlock(sensor_id=sid, site=site, seq=seq[sid], first_tick=int(tick[0]),
                                        tick_hz=float(proto.tick_hz), sampling_rate_hz=self.sampling_rate_hz,
                                        acc_ms2=pkt.acc_ms2, gyr_dps=pkt.gyr_dps, arrival_ns=arrival_ns,
                                        time_s=t0_host + np.asarray(t_true, np.float64), arrival_stamped=False,
                                        clipped=pkt.clipped)
                    yield SourceItem(block, raw)
                seq[sid] += 1
                self.packets_ += 1
            k += 1


def simulated_packets(profile=None, *, site: str = "sacrum", duration_s: float, sampling_rate_hz: float = 500.0,
                      packet_samples: int = 20, seed: int = 0, range_g: float = 16.0, gyro: bool = True):
    """Generate a simulated sensor's runform v1 packets ahead of time: ``(protocol, packets: list[bytes])``.

    The simulator costs far more CPU than the edge's per-packet work (it synthesises body motion per sample), so
    latency benchmarks generate first and replay the bytes with :class:`PacketReplaySource`: what is timed is
    then what a real edge does with a sensor's packets (decode, clock sync, journal, DSP, cues, MQTT).
    """
    from runform.firmware_bridge.protocols import runform_v1 as v1
    from runform.firmware_bridge.simulator import RunnerProfile, SimulatorStream
    profile = profile if profile is not None else RunnerProfile()
    stream = SimulatorStream(profile, site, sampling_rate_hz=sampling_rate_hz, seed=seed, range_g=range_g, gyro=gyro)
    proto = v1.RunformV1(SimulatorSource._make_config(v1, sampling_rate_hz, range_g, gyro, site, stream))
    n_packets = int(math.ceil(duration_s * sampling_rate_hz / packet_samples))
    packets = []
    for seq in range(n_packets):
        acc_ms2, gyr_dps, _, tick = stream.read(packet_samples)
        acc_raw = np.clip(np.rint(acc_ms2 / proto._acc_k), -32768, 32767).astype(np.int16)
        gyr_raw = None
        if gyr_dps is not None and proto.has_gyro:
            gyr_raw = np.clip(np.rint(gyr_dps / proto._gyr_k), -32768, 32767).astype(np.int16)
        packets.append(v1.encode_data_packet(seq, int(tick[0]), acc_raw, gyr_raw))
    return proto, packets


class ReplayPacer:
    """Shared wake-ups for many :class:`PacketReplaySource` s in one loop: packets due within the same ``slot_s``
    are released together by ONE timer (a timer and an epoll wake-up per packet of every runner cost more CPU
    than the edge's work on a packet). A real BLE adapter delivers in bursts too (one per connection event,
    7.5-15 ms). Packets keep their exact due time as ``arrival_ns``: the slot wait counts as latency."""

    def __init__(self, slot_s: float = 0.002) -> None:
        self.slot_ns = int(slot_s * 1e9)
        self._slots: dict[int, asyncio.Future] = {}

    async def wait(self, due_ns: int) -> None:
        slot = -(-due_ns // self.slot_ns)  # the first slot boundary at or after due
        fut = self._slots.get(slot)
        if fut is None:
            loop = asyncio.get_running_loop()
            delay = (slot * self.slot_ns - time.monotonic_ns()) / 1e9
            if delay <= 0:
                return
            fut = self._slots[slot] = loop.create_future()
            loop.call_later(delay, self._fire, slot)
        await fut

    def _fire(self, slot: int) -> None:
        fut = self._slots.pop(slot, None)
        if fut is not None and not fut.done():
            fut.set_result(None)


class PacketReplaySource:
    """Replays pre-encoded sensor packets in real time through the live decode + clock-sync path.

    ``sensors``: ``[(site, protocol, packets)]`` (:func:`simulated_packets`). Packet ``k`` is due at
    ``t0 + phase_s + k * period`` (real sensors' packets are not in phase with each other; ``phase_s`` spreads
    them) and is stamped with its DUE time as ``arrival_ns``, so a late event loop counts against every latency
    measured from it. ``start_packet`` starts part-way into the lists (several runners can share one recording;
    sequence numbers and ticks are re-based once, here, so each source looks like a sensor that just started).
    """

    def __init__(self, runner: str, sensors, *, duration_s: float | None = None, phase_s: float = 0.0,
                 start_packet: int = 0, pacer: ReplayPacer | None = None) -> None:
        from runform.firmware_bridge.journal import sensor_metadata
        from runform.firmware_bridge.protocols import runform_v1 as v1
        self.runner = runner
        self.pacer = pacer
        self.sensors = []
        self._streams = []
        start = int(start_packet)
        for site, proto, packets in sensors:
            sid = f"sim-{runner}-{site}"
            self.sensors.append(SensorInfo(sid, site, float(proto.sampling_rate_hz),
                                           sensor_metadata(proto, sensor_id=sid, site=site, runner=runner,
                                                           address="replay")))
            if start:
                tick0 = v1.decode_data_packet(packets[start]).first_tick
                rebased = []
                for seq, raw in enumerate(packets[start:]):
                    pkt = v1.decode_data_packet(raw)
                    rebased.append(v1.encode_data_packet(seq, pkt.first_tick - tick0, pkt.acc_raw, pkt.gyr_raw))
                packets = rebased
            self._streams.append((sid, site, proto, packets))
        _, _, proto0, packets0 = self._streams[0]
        self.period_s = v1.decode_data_packet(packets0[0]).n_samples / float(proto0.sampling_rate_hz)
        n = min(len(p) for *_, p in self._streams)
        if duration_s is not None:
            n = min(n, int(math.ceil(duration_s / self.period_s - 1e-9)))
        self.n_packets = n
        self.phase_s = float(phase_s)
        self._closed = False
        self.packets_ = 0
        self.pickup_lag_ns_ = np.zeros(n, np.int64)  # per packet: picked up minus due (how late the loop was)
        self._decoders: list = []
        self.streaming_ = False

    def link_stats(self) -> list[LinkStatus]:
        on = self.streaming_ and not self._closed
        return [link_from_accounting(s.sensor_id, s.site, "replay", on,
                                     self._decoders[i].stats() if i < len(self._decoders) else None)
                for i, s in enumerate(self.sensors)]

    async def aclose(self) -> None:
        self._closed = True

    async def __aiter__(self):
        from runform.firmware_bridge.timestamping import SensorDecoder
        streams = [(SensorDecoder(proto, sensor_id=sid, site=site), packets)
                   for sid, site, proto, packets in self._streams]
        self._decoders = [dec for dec, _ in streams]
        self.streaming_ = True
        t0 = time.monotonic_ns() + int(self.phase_s * 1e9)
        period_ns = int(round(self.period_s * 1e9))
        for k in range(self.n_packets):
            if self._closed:
                return
            due_ns = t0 + k * period_ns
            if self.pacer is not None:
                await self.pacer.wait(due_ns)
            else:
                delay = (due_ns - time.monotonic_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
            self.pickup_lag_ns_[k] = time.monotonic_ns() - due_ns
            for dec, packets in streams:
                raw = packets[k]
                for block in dec.feed(raw, due_ns):
                    yield SourceItem(block, raw)
                self.packets_ += 1
        self.streaming_ = False


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
        self.streaming_ = False

    def link_stats(self) -> list[LinkStatus]:
        """The journal's packet accounting so far (lost = gaps recorded in the file)."""
        dec = self._reader.decoder_
        s = self.sensors[0]
        return [link_from_accounting(s.sensor_id, s.site, "replay", self.streaming_ and not self._closed,
                                     dec.stats() if dec is not None else None,
                                     arrival_stamped=bool(dec is not None and dec.clock.arrival_stamped))]

    async def aclose(self) -> None:
        self._closed = True

    async def __aiter__(self):
        t0_host = None
        t0_data = None
        self.streaming_ = True
        for block in self._reader.blocks():
            if self._closed:
                return
            coarse = getattr(block, "coarse", False)  # MetricsBlock (RSC pod): the pipeline keeps it out of the DSP
            if self.speed > 0 and (coarse or len(block.time_s)):
                t_last = float(block.time_s) if coarse else float(block.time_s[-1])
                if t0_host is None:
                    t0_host, t0_data = time.monotonic(), t_last
                delay = t0_host + (t_last - t0_data) / self.speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            yield SourceItem(block, None)
        self.streaming_ = False


class BleHub:
    """One ``runform.firmware_bridge.ble.Bridge`` (one adapter, its connect lock) shared by several runners.

    ``hub.sources`` holds one :class:`BleSource` per runner (from ``SensorSpec.runner``). The bridge's per-block
    callback hands each block straight to its runner's bounded queue (``queue_blocks``; full -> counted in
    ``dropped_``, the journal still has the packet). Every notification is journaled by the edge first, through
    the links' raw hook (``SensorLink.on_raw``), into the runner's journal, which opens at the sensor's first
    connection (the protocol and its configuration are known then) and notes every reconnection.

    ``bridge_options`` go to ``Bridge`` / ``SensorLink`` (``backoff_initial_s``, ``find_timeout_s`` ...).
    """

    def __init__(self, specs, *, adapter: str | None = None, queue_blocks: int = 512, **bridge_options) -> None:
        from runform.firmware_bridge.ble import Bridge
        self.specs = list(specs)
        self.bridge = Bridge(self.specs, adapter=adapter, queue_size=0, journal_dir=None, on_block=self._on_block,
                             **bridge_options)
        self._pipelines: dict[str, RunnerPipeline] = {}
        self.sources: dict[str, BleSource] = {}
        for spec in self.specs:
            src = self.sources.get(spec.runner)
            if src is None:
                src = self.sources[spec.runner] = BleSource(self, spec.runner, queue_blocks=queue_blocks)
            src.sensors.append(SensorInfo(spec.sensor_id, spec.site, float(spec.sampling_rate_hz or math.nan),
                                          {}, journal_on_connect=True))
        for link in self.bridge.links.values():
            link.on_raw = self._on_raw
            link.on_connected = self._on_connected
            link.on_state = self._on_state
        self._started = False
        self._stopped = False
        self._open = set(self.sources)
        self.dropped_ = 0

    def bind(self, runner: str, pipeline: "RunnerPipeline") -> None:
        self._pipelines[runner] = pipeline

    async def ensure_started(self) -> None:
        if not self._started:
            self._started = True
            await self.bridge.start()

    async def release(self, runner: str) -> None:
        """A runner's source closed; the bridge stops with the last one."""
        self._open.discard(runner)
        if not self._open and not self._stopped:
            self._stopped = True
            if self._started:
                await self.bridge.stop()

    def stats(self) -> dict:
        return {sid: dataclasses.asdict(st) for sid, st in self.bridge.stats().items()}

    def link_stats(self, runner: str) -> list[LinkStatus]:
        """The runner's links (battery, RSSI, loss, reconnects ... from the bridge's ``SensorStats``)."""
        return [link_from_sensor_stats(link.stats(), link.spec.kind) for link in self.bridge.links.values()
                if link.spec.runner == runner]

    def _on_state(self, link, old: str, new: str) -> None:
        if "streaming" in (old, new):  # connected or lost: the runner's status says so now
            p = self._pipelines.get(link.spec.runner)
            if p is not None:
                p.links_changed()

    # hot path (bleak's notification callback, in the event loop) ------------------------------------
    def _on_raw(self, link, raw: bytes, arrival_ns: int) -> None:
        p = self._pipelines.get(link.spec.runner)
        if p is not None:
            p.journal_raw(link.sensor_id, raw, arrival_ns)

    def _on_connected(self, link) -> None:
        p = self._pipelines.get(link.spec.runner)
        if p is None:
            return
        from runform.firmware_bridge.journal import sensor_metadata
        meta = sensor_metadata(link.protocol_, sensor_id=link.sensor_id, site=link.spec.site,
                               runner=link.spec.runner, address=link.spec.address or link.spec.name or "")
        p.sensor_connected(link.sensor_id, meta)

    def _on_block(self, block) -> None:
        runner = self.bridge.runner_of(block.sensor_id)
        src = self.sources.get(runner)
        if src is None or src._closed:
            return
        try:
            src._q.put_nowait(block)
        except asyncio.QueueFull:
            self.dropped_ += 1
            src.dropped_ += 1


class BleSource:
    """One runner's sensors of a :class:`BleHub` (build the hub, then use ``hub.sources[runner]``).

    Blocks come without ``raw``: the hub journaled each notification already (``bind`` connects the hub to the
    runner's pipeline; the edge calls it). ``MetricsBlock``s of RSC foot pods pass through as they are; the
    pipeline keeps them out of the DSP and publishes them as coarse metrics.
    """

    def __init__(self, hub: BleHub, runner: str, *, queue_blocks: int = 512) -> None:
        self.hub = hub
        self.runner = runner
        self.sensors: list[SensorInfo] = []
        self._q: asyncio.Queue = asyncio.Queue(maxsize=queue_blocks)
        self._closed = False
        self.dropped_ = 0

    def bind(self, pipeline: "RunnerPipeline") -> None:
        self.hub.bind(self.runner, pipeline)

    def link_stats(self) -> list[LinkStatus]:
        return self.hub.link_stats(self.runner)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put_nowait(None) if not self._q.full() else None
        await self.hub.release(self.runner)

    async def __aiter__(self):
        await self.hub.ensure_started()
        while not self._closed:
            block = await self._q.get()
            if block is None:
                return
            yield SourceItem(block, None)


# ------------------------------------------------------------------------------------------------ pipeline
def _finite_or_none(v):
    return float(v) if v is not None and math.isfinite(v) else None


def default_detector_factory(site: str, sampling_rate_hz: float, **kw):
    from runform.dsp import GaitEventDetector
    return GaitEventDetector(site, sampling_rate_hz, **kw)


@dataclass
class RunnerConfig:
    runner: str
    mqtt: MqttSettings | None = None  # None: no MQTT (offline journaling + cues to a callback)
    journal_dir: Path | None = None
    cue: CueConfig = field(default_factory=CueConfig)
    program: Program | None = None  # given explicitly (command line): pinned, plans do not change it
    program_stage: int = 0
    follow_plan: bool = True  # subscribe to runform/v1/{runner}/plan (the server's retained plan)
    programs_dir: Path | None = None  # where plans' program names are looked up (then server/programs/)
    publish_raw: bool = False
    metrics_period_s: float = 1.0
    metrics_window_s: float = 10.0
    access: AccessSpec | None = None  # second authorisation check of control issuers (None: trust the ACL)
    mass_kg: float | None = None
    dsp_queue_blocks: int = 512
    journal_flush_interval_ms: float = 500.0  # the most a crash (power loss) can cost the raw journal
    link_recent_window_s: float = 10.0  # status links[].loss_recent_pct: packet loss over this many seconds


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
                         "dsp_skipped_blocks": 0, "dsp_errors": 0, "cues_stale_at_birth": 0, "journal_errors": 0,
                         "journaled_packets": 0, "journal_dropped": 0, "coarse_blocks": 0}
        self.rejections: list[tuple[str, str]] = []  # last (issuer, reason), bounded
        # return-to-run plan (server -> edge) and program session records (edge -> server)
        self.counters.update(plans_applied=0, plans_rejected=0, program_records=0)
        self.program_source: str | None = "cli" if self.program is not None else None
        self.plan: dict | None = None  # the last plan applied
        self._program_seq = 0  # program runs in this edge session (session_key suffix from the second on)
        self._prog_start_unix_s: float | None = None
        self._prog_run_steps = 0
        self._prog_impact_sum_g = 0.0
        self._announce: str | None = None  # program announcement waiting for the stream clock
        self.program_records: list[dict] = []  # last records published (bounded, for tests / the CLI)
        self.journals: dict[str, Any] = {}
        self._journal_worker: JournalWorker | None = None
        self._own_worker = False
        self.coarse: dict[str, dict] = {}  # latest MetricsBlock per coarse sensor (RSC foot pods)
        # metrics ticks spread over the period by runner (deterministic): a hundred runners do not all compute
        # and publish metrics (and reminder cues) in the same loop iteration
        self._metrics_phase = (zlib.crc32(self.runner.encode()) % 1000) / 1000.0
        self.edge_id = make_client_id("edge", self.runner)
        self.link: MqttLink | None = None
        self._control_q: asyncio.Queue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.cues_sent: list[Cue] = []  # last cues (bounded, for tests / the CLI)
        self._dsp_busy = False  # the DSP task holds blocks: the reader must queue behind them (order)
        self._cue_lat_ms = np.full(256, np.nan)  # packet arrival -> cue handed to the socket, last 256 cues
        # sensor link health (status ``links``): the source's ``link_stats`` (the edge sets it), the recent window
        self.link_source: Callable[[], list[LinkStatus]] | None = None
        self.link_window = LinkWindow(cfg.link_recent_window_s)
        self._links_published_s = -math.inf
        self._links_pending: asyncio.TimerHandle | None = None
        self._links_error_logged = False

    # ---- lifecycle -------------------------------------------------------------------------------------
    def open(self, loop: asyncio.AbstractEventLoop, journal_worker: JournalWorker | None = None) -> None:
        """Open journals (on ``journal_worker``'s thread; a private one if None) and the MQTT link, driven by
        ``loop`` (no network thread)."""
        self._loop = loop
        self._control_q = asyncio.Queue(maxsize=64)
        if self.cfg.journal_dir is not None:
            if journal_worker is None:
                journal_worker, self._own_worker = JournalWorker(), True
            self._journal_worker = journal_worker
            self._stamp = time.strftime("%Y%m%dT%H%M%S")
            for sid, info in self.sensors.items():
                if not info.journal_on_connect:
                    meta = dict(info.meta) or {"sensor_id": sid, "site": info.site,
                                               "sampling_rate_hz": info.sampling_rate_hz}
                    self.journals[sid] = journal_worker.open(self._writer_factory(sid, meta))
        if self.cfg.mqtt is not None:
            will = (status_topic(self.runner), encode_json(status_payload(
                self.runner, "offline", self.edge_id, reason="edge connection lost (last will)")))
            subs = [(control_filter(self.runner), 1)] + ([(plan_topic(self.runner), 1)] if self.cfg.follow_plan else [])
            self.link = MqttLink(self.cfg.mqtt, self.edge_id, will=will, birth=self._birth,
                                 subscriptions=subs, on_message=self._on_mqtt_message)
            self.link.set_waker(lambda: loop.call_soon_threadsafe(self._pump))
            self.link.start(loop)

    def _writer_factory(self, sid: str, meta: dict):
        from runform.firmware_bridge.journal import JournalWriter
        d = Path(self.cfg.journal_dir) / self.runner
        meta = dict(meta)
        meta.setdefault("runner", self.runner)
        path = d / f"{self._stamp}_{sid}.rfj"
        interval = self.cfg.journal_flush_interval_ms

        def make():
            d.mkdir(parents=True, exist_ok=True)
            return JournalWriter(path, meta, flush_interval_ms=interval)
        return make

    def sensor_connected(self, sensor_id: str, meta: dict) -> None:
        """A BLE sensor (re)connected: open its journal with the protocol read from it, or note the reconnect."""
        w = self._journal_worker
        if w is None:
            return
        j = self.journals.get(sensor_id)
        if j is None:
            self.journals[sensor_id] = w.open(self._writer_factory(sensor_id, meta))
        else:
            w.event(j, "reconnected", protocol=meta.get("protocol"))

    def close(self, reason: str = "edge stopped") -> None:
        self.publish_program_session(final=True)
        w = self._journal_worker
        if w is not None:
            for j in self.journals.values():
                w.close_writer(j)
            if self._own_worker:
                w.close()
            self._update_journal_counters()
        if self._links_pending is not None:
            self._links_pending.cancel()
            self._links_pending = None
        if self.link is not None:
            self._pump()
            self.link.stop(final=(status_topic(self.runner), encode_json(self._status("offline", reason))))

    def _update_journal_counters(self) -> None:
        w = self._journal_worker
        if w is not None and self.journals:
            self.counters["journal_errors"] = sum(w.errors.get(str(j.path), 0) for j in self.journals.values())

    # ---- status ----------------------------------------------------------------------------------------
    def _status(self, state: str | None = None, reason: str | None = None) -> dict:
        st = state or ("paused" if self.paused else "online")
        now = self._last_time_s
        iv = self.program.state(now) if (self.program is not None and math.isfinite(now)) else None
        return status_payload(self.runner, st, self.edge_id, reason=reason, sensors=sorted(self.sensors),
                              raw_enabled=self.raw_enabled, interval=iv.to_payload() if iv else None,
                              target_cadence_spm=self.cues.config.target_cadence_spm,
                              program=self._program_state(),
                              counters=self.stats(), links=[ln.to_payload() for ln in self.link_window.fill(
                                  self.links())])

    def links(self) -> list[LinkStatus]:
        """The sensor links now (empty without a link source); a failing source is logged once, never raised."""
        if self.link_source is None:
            return []
        try:
            return list(self.link_source())[:16]
        except Exception as exc:
            if not self._links_error_logged:
                self._links_error_logged = True
                log.error("%s: link stats unavailable: %r", self.runner, exc)
            return []

    def sample_links(self) -> None:
        """Once a second (the edge's ticker): the packet counters for ``loss_recent_pct``."""
        if self.link_source is not None:
            self.link_window.sample(self.links())

    def links_changed(self) -> None:
        """A link connected or was lost: publish the status now, at most once a second (later ones coalesce)."""
        if self.link is None or self._loop is None:
            return
        wait = self._links_published_s + 1.0 - time.monotonic()
        if wait <= 0:
            self._links_flush()
        elif self._links_pending is None:
            self._links_pending = self._loop.call_later(wait, self._links_flush)

    def _links_flush(self) -> None:
        self._links_pending = None
        self._links_published_s = time.monotonic()
        self.publish_status()

    def _birth(self) -> tuple[str, bytes]:
        return status_topic(self.runner), encode_json(self._status())

    def publish_status(self) -> None:
        if self.link is not None:
            self.link.enqueue(CLASS_CONTROL, status_topic(self.runner), encode_json(self._status()), retain=True)
            self._pump()

    def stats(self) -> dict:
        self._update_journal_counters()
        d = dict(self.counters)
        lat = self._cue_lat_ms[np.isfinite(self._cue_lat_ms)]
        if lat.size:  # inside this process: packet arrival -> cue written to the broker socket
            d["cue_latency_ms"] = {"p50": round(float(np.percentile(lat, 50)), 2),
                                   "p99": round(float(np.percentile(lat, 99)), 2), "max": round(float(lat.max()), 2),
                                   "n": int(lat.size)}
        if self.link is not None:
            s = self.link.stats()
            d.update(mqtt_connected=s["connected"], mqtt_dropped=s["dropped_overflow"],
                     mqtt_stale_cues=s["dropped_stale_cues"], mqtt_queue_max=s["queue_max_depth"],
                     mqtt_stalls=s["stalls"])
        return d

    def _pump(self) -> None:
        if self.link is not None:
            self.link.pump()

    # ---- data path -------------------------------------------------------------------------------------
    def journal(self, item: SourceItem) -> None:
        """Called by the reader task BEFORE the DSP queue: the raw record goes to the journal thread first."""
        if item.raw is not None:
            self.journal_raw(item.block.sensor_id, item.raw, int(item.block.arrival_ns))

    def journal_raw(self, sensor_id: str, raw: bytes, arrival_ns: int) -> None:
        j = self.journals.get(sensor_id)
        if j is None:
            return
        if self._journal_worker.append(j, raw, arrival_ns):
            self.counters["journaled_packets"] += 1
        else:  # the disk has not kept up for ~30 s: counted and reported, never silent
            self.counters["journal_dropped"] += 1
            if self.counters["journal_dropped"] in (1, 10, 100) or self.counters["journal_dropped"] % 1000 == 0:
                log.error("%s: journal queue full, %d packets not journaled (disk too slow?)", sensor_id,
                          self.counters["journal_dropped"])

    def _detector(self, block):
        det = self.detectors.get(block.sensor_id)
        if det is None:
            kw = {"mass_kg": self.cfg.mass_kg} if self.cfg.mass_kg is not None else {}
            det = self._detector_factory(block.site, float(block.sampling_rate_hz), **kw)
            self.detectors[block.sensor_id] = det
        return det

    def process(self, block) -> list[Cue]:
        """DSP + metrics + cues + publishing for one block; returns the cues emitted."""
        if getattr(block, "coarse", False):
            return self.process_coarse(block)
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

    def process_coarse(self, block) -> list[Cue]:
        """A ``MetricsBlock`` (RSC foot pod: cadence, speed, stride length; no samples): kept out of the DSP,
        published with the next metrics message under ``coarse_sensors``. A runner with only coarse sensors still
        gets its metrics ticks from them."""
        self.counters["coarse_blocks"] += 1
        self.coarse[block.sensor_id] = {
            "sensor": block.sensor_id, "site": block.site, "time_s": float(block.time_s),
            "cadence_spm": _finite_or_none(block.cadence_spm), "speed_ms": _finite_or_none(block.speed_ms),
            "stride_length_m": _finite_or_none(block.stride_length_m),
            "total_distance_m": _finite_or_none(block.total_distance_m),
            "is_running": block.is_running}
        if not self.detectors:
            return self.handle_steps(empty_steps(0), float(block.time_s), sensor=block.sensor_id, site=block.site,
                                     trigger_arrival_ns=int(block.arrival_ns))
        return []

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
            self._program_load(steps, changes)
        tick = False
        if not math.isfinite(self._next_metrics_s):
            self._next_metrics_s = now_s + self.cfg.metrics_period_s * (1.0 + self._metrics_phase)
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
                if self.coarse:
                    extra["coarse_sensors"] = [c for c in self.coarse.values() if now_s - c["time_s"] < 5.0]
                link.enqueue(CLASS_METRICS, metrics_topic(self.runner),
                             encode_json(snap.to_payload(self.runner, **extra), check=False))
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
            if cue.trigger_arrival_ns:
                self.link.pump()  # a cue goes out now, not at the end of the block
                self._cue_lat_ms[self._cue_id % 256] = (time.monotonic_ns() - cue.trigger_arrival_ns) / 1e6

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
        if parts.kind == "plan" and parts.runner == self.runner:
            return self.handle_plan(payload)
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
            self.publish_program_session(final=False)
        elif command == "status":
            pass
        if command != "status":
            self.publish_status()

    def _send_reply(self, reply: dict) -> dict:
        if self.link is not None:
            self.link.enqueue(CLASS_CONTROL, reply_topic(self.runner), encode_json(reply))
            self._pump()
        return reply

    # ---- return-to-run plan and program session records ----------------------------------------------
    def handle_plan(self, payload: bytes) -> dict | None:
        """Apply the server's plan (``runform.plan.v1``): targets/limits to the cue engine, and the program at
        its stage unless the command line pinned one. An invalid plan changes nothing: it is rejected with the
        reason on ``control/reply`` (command ``plan``) and counted (``plans_rejected``)."""
        if not payload:
            return None  # the retained plan was cleared: keep what runs
        issuer = None
        try:
            plan = decode_json(payload, SCHEMA_PLAN, max_bytes=MAX_CONTROL_BYTES)
            issuer = plan.get("set_by")
            if plan["runner"] != self.runner:
                raise ValueError(f"plan is for runner {plan['runner']!r}, not {self.runner!r}")
            new_prog = None
            if plan["program"] is not None and self.program_source != "cli":
                if plan["stage"] is None:
                    raise ValueError(f"program {plan['program']!r} without a stage")
                new_prog = resolve_program(plan["program"], self.cfg.programs_dir)
                n = len(new_prog.stages)
                if not 1 <= plan["stage"] <= n:
                    raise ValueError(f"stage {plan['stage']} out of range: {new_prog.name} has {n} stages")
                if plan.get("n_stages") is not None and plan["n_stages"] != n:
                    raise ValueError(f"program {new_prog.name} has {n} stages here, the plan says {plan['n_stages']}"
                                     " (different program files on server and edge)")
            cfg = self.cues.config
            t, lim = plan["targets"], plan["limits"]
            target = cfg.target_cadence_spm if t.get("cadence_spm") is None else float(t["cadence_spm"])
            tol = cfg.tolerance_spm if t.get("tolerance_spm") is None else float(t["tolerance_spm"])
            new_cfg = dataclasses.replace(cfg, target_cadence_spm=target, tolerance_spm=tol,
                                          hysteresis_spm=min(cfg.hysteresis_spm, 0.5 * tol),
                                          **{k: float(v) for k, v in lim.items() if v is not None})
        except (PayloadError, ProgramError, ValueError, TypeError) as exc:
            self.counters["plans_rejected"] += 1
            reason = f"plan rejected: {exc}"
            if isinstance(issuer, str) and len(issuer) > 64:
                issuer = None
            return self._send_reply(self._reject("control_malformed", issuer, None, "plan", reason))
        if (new_cfg.target_cadence_spm, new_cfg.tolerance_spm) != (cfg.target_cadence_spm, cfg.tolerance_spm):
            self.cues.state_, self.cues._candidate, self.cues._pending = "unknown", None, None
        self.cues.config = new_cfg  # the base targets: a program's run intervals and live commands still win
        note = None
        if self.program_source == "cli":
            note = "program pinned by the command line: plan program/stage ignored"
        elif new_prog is None and self.program is not None:
            self.publish_program_session(final=True)  # the therapist took the program off
            self.program, self.program_source = None, None
        elif new_prog is not None and (self.program is None or self.program.program.name != new_prog.name
                                       or self.program.stage_index != plan["stage"] - 1):
            self._load_program(new_prog, plan["stage"] - 1)
        self.plan = plan
        self.counters["plans_applied"] += 1
        log.info("%s: plan applied (program %s stage %s, set by %s)%s", self.runner, plan["program"], plan["stage"],
                 issuer, f"; {note}" if note else "")
        self.publish_status()
        return self._send_reply(reply_payload(self.runner, ok=True, request_id=None, command="plan", issuer=issuer,
                                              reason=note, state=self._control_state()))

    def _load_program(self, program: Program, stage_index: int) -> None:
        old, carry = self.program, None
        if old is not None:
            if old.run_time_done_s_ > 0 or old.pain_after_ is not None or old.finished_:
                self.publish_program_session(final=True)  # a run happened: its record is complete
                self._program_seq += 1
            else:  # nothing run yet: same record (new stage), the pain before still holds
                carry = old.pain_before_
        self.program = ProgramRunner(program, stage_index)
        self.program.pain_before_ = carry
        self.program_source = "plan"
        self._prog_start_unix_s, self._prog_run_steps, self._prog_impact_sum_g = None, 0, 0.0
        stage = program.stages[stage_index]
        self._announce = (f"{program.title}. Stage {stage_index + 1} of {len(program.stages)}: {stage.name}.")
        if math.isfinite(self._last_time_s):
            self._emit_announcement(self._last_time_s)

    def _emit_announcement(self, now_s: float) -> None:
        text, self._announce = self._announce, None
        if text is None:
            return
        self.cues._last_spoken_s = now_s  # like an interval announcement: the next spoken cue waits its gap
        self._emit_cue(Cue("program", "program_stage", float(now_s), 2, text, None, self.cues.config.interval_ttl_s))

    def _program_load(self, steps: np.ndarray, changes) -> None:
        """After ``program.update``: session start time, running load (steps and impact sum of running steps),
        the record when the stage completes."""
        p = self.program
        if self._announce is not None:
            self._emit_announcement(self._last_time_s)
        if p.started_s_ is not None and self._prog_start_unix_s is None:
            self._prog_start_unix_s = time.time()
        if len(steps) and p.started_s_ is not None and not p.finished_:
            run = steps["activity"] == ACTIVITY_RUNNING
            if run.any():
                self._prog_run_steps += int(run.sum())
                peaks = steps["peak_accel_g"][run]
                self._prog_impact_sum_g += float(np.sum(peaks[np.isfinite(peaks)]))
        if any(c.finished for c in changes):
            self.publish_program_session(final=False)

    def _program_key(self) -> str:
        return self.edge_id if self._program_seq == 0 else f"{self.edge_id}.{self._program_seq + 1}"

    def _program_state(self) -> dict | None:
        p = self.program
        if p is None:
            return None
        return {"name": p.program.name, "title": p.program.title, "stage": p.stage_index + 1,
                "n_stages": len(p.program.stages), "stage_name": p.stage.name, "source": self.program_source or "cli",
                "session_key": self._program_key(), "finished": bool(p.finished_)}

    def publish_program_session(self, *, final: bool) -> dict | None:
        """The program session record (``runform.program_session.v1``, QoS 1) on ``.../program``; nothing
        before the program started or a pain was reported. Returns the payload."""
        p = self.program
        if p is None or (p.started_s_ is None and p.pain_before_ is None and p.pain_after_ is None):
            return None
        now = time.time()
        rec = program_session_payload(
            self.runner, self._program_key(), program=p.program.name, stage=p.stage_index + 1,
            pain_before=p.pain_before_, pain_after=p.pain_after_, completed_fraction=p.completed_fraction,
            run_time_s=p.run_time_done_s_, planned_run_time_s=p.stage.run_time_s, run_steps=self._prog_run_steps,
            impact_sum_g=self._prog_impact_sum_g, start_unix_s=self._prog_start_unix_s or now, end_unix_s=now,
            final=final)
        self.counters["program_records"] += 1
        self.program_records.append(rec)
        del self.program_records[:-64]
        if self.link is not None:
            try:
                data = encode_json(rec)
            except PayloadError as exc:  # never lose the shutdown to a bad number: logged, kept in memory
                log.error("%s: program session record not publishable: %s", self.runner, exc)
                return rec
            self.link.enqueue(CLASS_CONTROL, program_topic(self.runner), data)
            self._pump()
        return rec


# ------------------------------------------------------------------------------------------------ edge
class Edge:
    """Runs one :class:`RunnerPipeline` per source; ``await edge.run()`` until the sources end or ``stop()``.

    Per runner: a reader task (source -> journal thread -> bounded DSP queue) and a DSP task; per edge: one
    journal thread (:class:`~runform.server._journal_worker.JournalWorker`), one ticker (links, status every
    4.5 s) and the MQTT links' sockets on this loop. Several processes: ``runform run --workers N`` /
    :func:`runform.server._workers.run_sharded` (each worker an Edge over a disjoint set of runners).
    """

    def __init__(self, sources: list[SampleSource], configs: dict[str, RunnerConfig], *,
                 detector_factory: Callable[..., Any] = default_detector_factory) -> None:
        self.sources = sources
        self.pipelines: dict[str, RunnerPipeline] = {}
        for src in sources:
            cfg = configs.get(src.runner) or RunnerConfig(src.runner)
            if src.runner in self.pipelines:
                raise ValueError(f"runner {src.runner!r} has two sources; give each runner one source")
            self.pipelines[src.runner] = RunnerPipeline(cfg, list(src.sensors), detector_factory=detector_factory)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._warm = detector_factory is not default_detector_factory  # test doubles need no compilation
        self.journal_worker: JournalWorker | None = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self, duration_s: float | None = None) -> dict:
        loop = asyncio.get_running_loop()
        if not self._warm:
            # compile / load the numba kernels of the configured sensor sites before any sensor streams, so the
            # first packets are not late (live sensors: the sensor-frame path)
            from runform.dsp import warmup
            sites = sorted({s.site for src in self.sources for s in getattr(src, "sensors", ())})
            await loop.run_in_executor(None, functools.partial(warmup, sites or None, body_frame=False,
                                                               skip_blas_probe=True))
            self._warm = True
        if any(p.cfg.journal_dir is not None for p in self.pipelines.values()):
            self.journal_worker = JournalWorker()
        for src in self.sources:
            bind = getattr(src, "bind", None)
            if bind is not None:
                bind(self.pipelines[src.runner])
            self.pipelines[src.runner].link_source = getattr(src, "link_stats", None)
        for p in self.pipelines.values():
            p.open(loop, self.journal_worker)
        # Everything allocated so far (modules, numba, detector state) lives for the whole run: move it out of
        # the collector's reach, so a full collection (tens of ms with numba loaded) never stalls the cues.
        gc.collect()
        gc.freeze()
        # the journal thread, the connect executor: a background thread holding the GIL delays the loop by up to
        # the switch interval (5 ms by default); 1 ms bounds that hand-off
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, 0.001))
        try:
            work = []
            for src in self.sources:
                p = self.pipelines[src.runner]
                q: asyncio.Queue = asyncio.Queue(maxsize=p.cfg.dsp_queue_blocks)
                work.append(asyncio.create_task(self._reader(src, p, q)))
                work.append(asyncio.create_task(self._dsp(p, q)))
                self._tasks.append(asyncio.create_task(p.control_task()))
            self._tasks.append(asyncio.create_task(self._ticker()))
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
            gc.unfreeze()
            sys.setswitchinterval(switch)
            for p in self.pipelines.values():
                p.close()
            if self.journal_worker is not None:
                self.journal_worker.close()
                for p in self.pipelines.values():
                    p._update_journal_counters()
        return {r: p.stats() for r, p in self.pipelines.items()}

    async def _reader(self, src: SampleSource, p: RunnerPipeline, q: asyncio.Queue) -> None:
        # A source that is behind (a simulator catching up with the wall clock on a loaded machine, a burst of
        # queued BLE notifications) hands out items without awaiting anything: without the sleep(0) below, one
        # reader would hold the event loop until it caught up, starving every other runner, the MQTT pump and,
        # in `runform demo`, the HTTP API sharing the loop (measured: the loop blocked 11-16 s, page loads timing
        # out, with two CPU-bound processes beside the demo). One item per task step keeps the loop fair.
        async for item in src:
            p.journal(item)  # disk first
            if q.empty() and not p._dsp_busy:
                p.process(item.block)  # no backlog: process now (saves a queue hop and a task switch)
            else:
                try:
                    q.put_nowait(item.block)
                except asyncio.QueueFull:
                    p.counters["dsp_skipped_blocks"] += 1
            await asyncio.sleep(0)
        await q.put(None)

    async def _dsp(self, p: RunnerPipeline, q: asyncio.Queue) -> None:
        """Drains the backlog when the reader had to queue (a burst of packets arriving together), one block per
        task step (``q.get()`` does not yield while the queue holds items)."""
        while True:
            block = await q.get()
            if block is None:
                return
            p._dsp_busy = True
            try:
                p.process(block)
            finally:
                p._dsp_busy = q.qsize() > 0
            await asyncio.sleep(0)

    async def _ticker(self, period_s: float = 0.1, status_every_s: float = 4.5, links_every_s: float = 1.0) -> None:
        """One task for all runners: pump the links (expire stale cues, hand over what acks made room for),
        sample each runner's sensor-link counters every ``links_every_s`` (recent loss) and refresh its retained
        status every ``status_every_s`` (by the clock, so a late loop never stretches it past 5 s), both
        spread over their period by runner."""
        pipes = list(self.pipelines.values())
        n = max(1, len(pipes))
        t0 = time.monotonic()
        next_status = [t0 + status_every_s * i / n for i in range(len(pipes))]
        next_links = [t0 + links_every_s * i / n for i in range(len(pipes))]
        while True:
            await asyncio.sleep(period_s)
            now = time.monotonic()
            for i, p in enumerate(pipes):
                p._pump()
                if now >= next_links[i]:
                    next_links[i] = max(next_links[i] + links_every_s, now)
                    p.sample_links()
                if now >= next_status[i]:
                    next_status[i] = max(next_status[i] + status_every_s, now)
                    p.publish_status()
