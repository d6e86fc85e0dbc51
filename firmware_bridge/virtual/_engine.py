"""Timing model of a BLE IMU sensor, independent of any transport.

`StreamEngine` turns a sample source (the runner simulator) into notifications the way a
real sensor firmware does:

* samples are taken on the sensor's own (drifting) clock and packed ``samples_per_packet``
  at a time; a packet is ready once its last sample has been taken;
* the radio sends only at connection events, every ``connection_interval_ms`` (with a little
  jitter), at most ``max_packets_per_event`` per event; packets that do not fit wait in a
  bounded firmware queue (overflow = lost, counted);
* packets can be lost on air (``loss_pct``) or corrupted (``malformed_pct``), the sensor clock
  can reset (``tick_jump_at_s``), the firmware can hang while the link stays up (``stall_at_s``: no
  notifications until the central closes the link), the battery drains.

The same engine feeds the D-Bus peripheral (`VirtualSensor`) and the in-process fake bleak
backend used by the unit tests, so both behave alike. Everything it did is counted in
attributes ending in ``_`` and the true sample times are kept (bounded) for accuracy checks.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SensorBehavior", "StreamEngine", "OutgoingPacket"]


@dataclass
class SensorBehavior:
    """Knobs of the emulated link and firmware (times in seconds since streaming started)."""

    connection_interval_ms: float = 15.0
    interval_jitter_ms: float = 0.5
    max_packets_per_event: int = 6
    firmware_queue_packets: int = 128
    mtu: int = 247
    loss_pct: float = 0.0
    malformed_pct: float = 0.0
    clock_drift_ppm: float = 0.0
    battery_start_pct: float = 92.0
    battery_drain_pct_per_h: float = 6.0
    disconnect_at_s: tuple[float, ...] = ()  #: the sensor drops the link (peripheral side) at these times
    stop_at_s: float | None = None  #: the sensor dies (drops the link, stops advertising)
    stall_at_s: float | None = None  #: the firmware hangs: link up, no DATA notifications until the link closes
    tick_jump_at_s: float | None = None  #: the sensor clock restarts (e.g. a brown-out reset)...
    tick_jump_to_s: float = 0.0  #: ...reading this many seconds right after the jump (0 = from scratch)
    powered_on_for_s: float = 37.0  #: sensor clock reading (s) when streaming starts (it runs since power-on)
    seed: int = 0


@dataclass(frozen=True)
class OutgoingPacket:
    seq: int  #: unwrapped sequence number (the encoder wraps it)
    data: bytes
    n_samples: int
    malformed: bool = False


@dataclass
class _Truth:
    max_packets: int = 200_000
    by_seq: OrderedDict = field(default_factory=OrderedDict)

    def add(self, seq: int, time_s: np.ndarray) -> None:
        self.by_seq[seq] = time_s
        while len(self.by_seq) > self.max_packets:
            self.by_seq.popitem(last=False)


SampleSource = Callable[[int], tuple]  # n -> (acc_ms2 (n,3), gyr_dps (n,3)|None, time_s (n,), sensor_tick (n,))
Encoder = Callable[[int, int, np.ndarray, "np.ndarray | None"], bytes]  # (seq, first_tick, acc, gyr) -> bytes


class StreamEngine:
    """Packetizes a sample source and releases packets per connection event.

    Parameters
    ----------
    source
        ``read(n) -> (acc_ms2, gyr_dps|None, time_s, sensor_tick)``, time_s in true seconds since start.
    encoder
        ``(seq, first_tick, acc_ms2, gyr_dps) -> bytes``; with ``encoder_ticks=True`` it gets the packet's
        whole tick array instead of the first tick (protocols that stamp the LAST sample, e.g. Polar PMD).
    samples_per_packet
        Samples per notification.
    behavior
        `SensorBehavior`.
    """

    def __init__(self, source: SampleSource, encoder: Encoder, samples_per_packet: int, behavior: SensorBehavior,
                 tick_hz: float = 32768.0, encoder_ticks: bool = False):
        if samples_per_packet < 1:
            raise ValueError(f"samples_per_packet must be >= 1, got {samples_per_packet}")
        self.source = source
        self.encoder = encoder
        self.samples_per_packet = int(samples_per_packet)
        self.behavior = behavior
        self.encoder_ticks = bool(encoder_ticks)
        self.tick_hz = float(tick_hz)
        self._rng = np.random.default_rng(behavior.seed)  # connection-interval jitter
        # air loss and corruption are drawn from their own stream, once per packet MADE (sent or not), so whether
        # packet ``seq`` is lost depends only on (seed, seq), never on how the host's timing interleaved the draws
        self._fate_rng = np.random.default_rng([behavior.seed, 0x5EC])
        self._pending: tuple | None = None  # one packet's samples read ahead
        self._buf: tuple | None = None
        self.read_chunk = max(int(samples_per_packet), 64)
        self._queue: deque[OutgoingPacket] = deque()
        self._seq = 0
        self._tick_offset = int(round(behavior.powered_on_for_s * tick_hz))
        self._tick_jumped = False
        self.truth = _Truth()
        # counters
        self.packets_made_ = 0
        self.packets_sent_ = 0
        self.packets_lost_air_ = 0  #: dropped on purpose (loss_pct)
        self.packets_overflow_ = 0  #: firmware queue full
        self.packets_unsent_ = 0  #: made while nobody was subscribed
        self.packets_malformed_ = 0
        self.packets_stalled_ = 0  #: made while the firmware hung (``stall_at_s``), never sent
        self.stalled_ = False  #: hanging now (until `resume`)
        self._stall_done = False
        self.lost_seqs_: list[int] = []  #: bounded list of seqs never delivered (air loss / overflow / unsent)
        self.events_ = 0

    def next_interval_s(self) -> float:
        b = self.behavior
        jitter = self._rng.uniform(-b.interval_jitter_ms, b.interval_jitter_ms) if b.interval_jitter_ms else 0.0
        return max(0.001, (b.connection_interval_ms + jitter) / 1000.0)

    def _note_lost(self, seq: int) -> None:
        if len(self.lost_seqs_) < 100_000:
            self.lost_seqs_.append(seq)

    def _take(self, n: int) -> tuple:
        """Next n samples; the source is read in chunks of at least ``read_chunk`` samples."""
        buf = self._buf
        if buf is None or buf[2].shape[0] < n:
            new = self.source(max(n, self.read_chunk))
            if buf is not None and buf[2].shape[0]:
                new = tuple(None if (a is None or b is None) else np.concatenate([a, b]) for a, b in zip(buf, new))
            buf = new
        out = tuple(None if a is None else a[:n] for a in buf)
        self._buf = tuple(None if a is None else a[n:] for a in buf)
        return out

    def _make_packets(self, now_s: float, subscribed: bool) -> None:
        spp = self.samples_per_packet
        b = self.behavior
        while True:
            if self._pending is None:
                self._pending = self._take(spp)
            acc, gyr, time_s, tick = self._pending
            if time_s[-1] > now_s:
                return
            self._pending = None
            if b.tick_jump_at_s is not None and not self._tick_jumped and time_s[0] >= b.tick_jump_at_s:
                self._tick_jumped = True
                self._tick_offset = int(round(b.tick_jump_to_s * self.tick_hz)) - int(tick[0])
            seq = self._seq
            self._seq += 1
            self.packets_made_ += 1
            lost_draw, malformed_draw = self._fate_rng.random(2) * 100.0
            first_tick = int(tick[0]) + self._tick_offset
            self.truth.add(seq, np.asarray(time_s, dtype=np.float64))
            if b.stall_at_s is not None and not self._stall_done and time_s[0] >= b.stall_at_s:
                self._stall_done = True
                self.stalled_ = True
            if not subscribed:
                self.packets_unsent_ += 1
                self._note_lost(seq)
                continue
            if self.stalled_:
                self.packets_stalled_ += 1
                self._note_lost(seq)
                continue
            if b.loss_pct and lost_draw < b.loss_pct:
                self.packets_lost_air_ += 1
                self._note_lost(seq)
                continue
            if self.encoder_ticks:
                data = self.encoder(seq, np.asarray(tick, dtype=np.int64) + self._tick_offset, acc, gyr)
            else:
                data = self.encoder(seq, first_tick, acc, gyr)
            malformed = False
            if b.malformed_pct and malformed_draw < b.malformed_pct:
                malformed = True
                data = data[: max(1, len(data) // 3)]  # truncated on air / firmware bug
                self.packets_malformed_ += 1
            if len(self._queue) >= b.firmware_queue_packets:
                self.packets_overflow_ += 1
                self._note_lost(seq)
                continue
            self._queue.append(OutgoingPacket(seq, data, int(acc.shape[0]), malformed))

    def connection_event(self, now_s: float, subscribed: bool) -> list[OutgoingPacket]:
        """Advance to ``now_s`` (true seconds since start); return the packets sent in this event."""
        self.events_ += 1
        self._make_packets(now_s, subscribed)
        if not subscribed:
            while self._queue:
                self.packets_unsent_ += 1
                self._note_lost(self._queue.popleft().seq)
            return []
        out = []
        for _ in range(min(len(self._queue), self.behavior.max_packets_per_event)):
            out.append(self._queue.popleft())
        self.packets_sent_ += len(out)
        return out

    def resume(self) -> None:
        """End a hang (``stall_at_s``): the firmware's watchdog restarts the streaming task when the link closes."""
        self.stalled_ = False

    def battery_pct(self, now_s: float) -> int:
        b = self.behavior
        return int(max(0.0, min(100.0, b.battery_start_pct - b.battery_drain_pct_per_h * now_s / 3600.0)))

    def true_times(self, seq: int) -> np.ndarray | None:
        """True (simulator) times of the samples of packet ``seq`` (seconds since start)."""
        return self.truth.by_seq.get(seq)
