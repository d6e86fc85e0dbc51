"""Sensor clock -> host clock mapping, packet accounting, and the per-sensor decoding pipeline.

Method (see /work/shared/reference/timestamping.md):

1. ``time.monotonic_ns()`` is taken first thing in the notification callback (``arrival_ns``).
2. Sequence numbers and sensor ticks are unwrapped to 64 bit (the tick unwrap is guided by the arrival
   time, so several wraps during a long disconnect resolve correctly).
3. ``host ≈ offset + rate × sensor_time`` per clock *segment*:
   * the drift ``rate − 1`` comes from recursive least squares with a forgetting factor (time constant
     minutes) over the per-bin minima of ``arrival − sensor_time``;
   * the offset comes from the LOWER envelope (sliding-window minimum) of ``arrival − rate × sensor_time``
     over the packets' LAST samples: the least delayed packets carry the offset plus the minimal link latency.
4. Every sample's time = offset + rate × its own sensor time (spacing = the sample period measured on the
   sensor clock, which absorbs IMU output-data-rate errors).
5. Clock resets start a new segment (the drift estimate carries over: same oscillator):
   * a tick that goes BACKWARDS relative to the newest packet of the sensor by more than
     ``backwards_tolerance_samples`` sample periods, however small the jump (a sensor that reboots 0.1 s after it
     started streaming); a packet the sequence numbers identify as reordered (its tick fits its older sequence
     number) is not a reset, and a sequence number that restarts while the tick goes backwards corroborates it;
   * a tick inconsistent with the arrival time: ahead of it by more than ``jump_tolerance_s`` (forward jump) or
     behind it by more than ``max_latency_s``;
   * a step back hidden from the ticks (the new tick is still ahead of the last delivered one, e.g. long Polar
     frames): the per-bin minimum delay stays more than ``step_detect_s`` above the envelope for
     ``step_detect_bins`` bins in a row (queueing delays some packets of a bin, never all of them).
Sensors without a clock are arrival-stamped (``arrival_stamped=True``): last sample at arrival − latency.

Limits: the envelope includes the minimal link latency (about 0.2 ms in the simulation). If the packet period is
an exact multiple of the connection interval AND the sample clock is the radio clock, the packets' phase against
the connection events is locked and the envelope only reaches the true offset slowly (error bounded by one
connection interval); real IMU output-data rates differ from the radio clock, which unlocks the phase.

All per-packet work is O(1) Python plus numpy over the packet's samples; there are no per-sample loops.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np

from ._errors import MalformedPacketError
from ._types import MetricsBlock, MetricsPacket, SampleBlock, SamplePacket

__all__ = ["ClockSync", "PacketAccounting", "AccountingSnapshot", "SensorDecoder"]

_NS = 1_000_000_000


class ClockSync:
    """Per-sensor mapping of sensor ticks onto host monotonic seconds.

    Parameters
    ----------
    tick_hz : float or None
        Sensor clock rate; None for sensors without a clock (arrival stamping).
    sampling_rate_hz : float
        Nominal sampling rate (initial sample spacing; refined from the ticks).
    tick_bits : int or None
        Width of the transmitted tick (32 for runform v1 / Movesense, 64 for Polar). None = no wrap.
    window_s : float
        Length of the sliding window for the lower-envelope offset (sensor seconds); at least 8 bins.
    bin_s : float
        Bin width: the minimum of each bin feeds the drift estimator. Widened to 8 packet durations for
        sensors with long packets (Polar: 36 samples at 200 Hz -> 1.44 s).
    drift_time_constant_s : float
        Memory of the drift estimator (forgetting factor ``1 − bin_s / drift_time_constant_s``).
    max_latency_s : float
        A packet arriving more than this after its mapped last-sample time, or more than ``jump_tolerance_s``
        before it, means the sensor clock jumped: a new segment starts.
    backwards_tolerance_samples : float
        A packet whose tick is more than this many sample periods BEHIND the newest packet's tick is a clock
        reset (new segment) unless ``update_packet(..., reordered=True)`` says it is an older packet arriving
        late. Smaller steps back (at most a few periods) are treated as overlap / duplicates.
    step_detect_s, step_detect_bins : float, int
        A clock step back that leaves the tick AHEAD of the last delivered one (sparse packets) shows only in the
        arrival times: when the least delayed packet of ``step_detect_bins`` consecutive bins lies more than
        ``step_detect_s`` above the envelope, a new segment starts (those bins are kept out of the fit).
        ``step_detect_s=0`` disables this.
    min_latency_s : float
        Known minimal link latency subtracted from the envelope (0: the envelope itself is the best estimate).

    Attributes
    ----------
    drift_ppm_ : float          (rate − 1) × 1e6: a sensor clock running 50 ppm fast gives about −50
    rate_ : float               host seconds per sensor second
    offset_s_ : float           host time (s) of sensor tick 0 of the current segment's unwrapped tick axis
    segment_ : int              current clock segment (0, 1, ...)
    period_s_ : float           measured sample period on the sensor clock (seconds of sensor time)
    measured_rate_hz_ : float   sampling rate in host seconds (1 / (period × rate))
    last_first_tick_ : int      unwrapped tick of the first sample of the last packet
    last_gap_samples_ : int     samples missing between the previous and the last packet (tick continuity)
    resets_backwards_ : int     segments started because the tick went backwards
    resets_inconsistent_ : int  segments started because the tick disagreed with the arrival time
    resets_forced_ : int        segments started on request (``reset=True``)
    resets_delay_step_ : int    segments started because the arrival delays stepped up for good (see step_detect_s)
    """

    def __init__(self, tick_hz: float | None, sampling_rate_hz: float, *, tick_bits: int | None = 32,
                 window_s: float = 20.0, bin_s: float = 0.5, drift_time_constant_s: float = 300.0,
                 max_latency_s: float = 5.0, jump_tolerance_s: float = 0.5, min_latency_s: float = 0.0,
                 backwards_tolerance_samples: float = 3.0, step_detect_s: float = 0.05,
                 step_detect_bins: int = 3) -> None:
        if not sampling_rate_hz > 0:
            raise ValueError(f"sampling_rate_hz must be positive, got {sampling_rate_hz}")
        if tick_hz is not None and not tick_hz > 0:
            raise ValueError(f"tick_hz must be positive or None, got {tick_hz}")
        self.tick_hz = None if tick_hz is None else float(tick_hz)
        self.sampling_rate_hz = float(sampling_rate_hz)
        self.tick_bits = tick_bits
        self.window_s = float(window_s)
        self.bin_s = float(bin_s)
        self.drift_time_constant_s = float(drift_time_constant_s)
        self.max_latency_s = float(max_latency_s)
        self.jump_tolerance_s = float(jump_tolerance_s)
        self.min_latency_s = float(min_latency_s)
        if not backwards_tolerance_samples >= 0:
            raise ValueError(f"backwards_tolerance_samples must be >= 0, got {backwards_tolerance_samples}")
        self.backwards_tolerance_samples = float(backwards_tolerance_samples)
        self.step_detect_s = float(step_detect_s)
        self.step_detect_bins = int(step_detect_bins)
        self.resets_backwards_ = self.resets_inconsistent_ = self.resets_forced_ = self.resets_delay_step_ = 0
        self._set_bins(self.bin_s)
        self.segment_ = -1
        self._d = 0.0                                        # drift (rate - 1)
        self._P_dd = 1.0                                     # drift variance (relative units, see _rls)
        self._last_raw: int | None = None
        self._last_u: int = 0                                # unwrapped tick of the newest packet (max)
        self._last_arrival_ns = 0
        self.last_first_tick_ = -1
        self.last_gap_samples_ = 0
        self.packets_ = 0
        self._prev_last_x: float | None = None
        self.period_s_ = 1.0 / self.sampling_rate_hz
        self._nominal_period_s = self.period_s_
        self._per_sum = 0.0
        self._per_n = 0.0

    # ------------------------------------------------------------------------------------------ public
    @property
    def arrival_stamped(self) -> bool:
        return self.tick_hz is None

    @property
    def rate_(self) -> float:
        return 1.0 + self._d

    @property
    def drift_ppm_(self) -> float:
        return self._d * 1e6

    @property
    def measured_rate_hz_(self) -> float:
        return 1.0 / (self.period_s_ * (1.0 + self._d))

    @property
    def offset_s_(self) -> float:
        if self.tick_hz is None or self.segment_ < 0:
            return float("nan")
        return self._a0 + self._offset_rel() - (1.0 + self._d) * self._tick0 / self.tick_hz

    def update(self, tick: int | None, n: int, arrival_ns: int, tick_is_last: bool = False) -> np.ndarray:
        """Times (host monotonic seconds, shape (n,)) of a packet's samples. ``tick`` is the raw tick of the
        first sample (of the last one if ``tick_is_last``); None -> arrival stamping."""
        return self.update_packet(tick, n, arrival_ns, tick_is_last)[0]

    def peek_step_samples(self, tick: int | None, n: int, arrival_ns: int, tick_is_last: bool = False
                          ) -> tuple[float, float] | None:
        """Where a packet would lie relative to the newest one, without changing any state: ``(first, last)`` =
        positions of its first and last sample minus that of the newest packet's last sample, in sample periods.
        A directly following packet of n samples gives about ``(1, n)``, a repeated one ``(1 - n, 0)``, an older
        one less. None before the first packet and for arrival-stamped sensors."""
        if self.tick_hz is None or tick is None or self.segment_ < 0:
            return None
        pt = self.period_s_ * self.tick_hz
        u = self._unwrap(int(tick), arrival_ns)
        u_first = u - (n - 1) * pt if tick_is_last else u
        return (u_first - self._last_end) / pt, (u_first + (n - 1) * pt - self._last_end) / pt

    def _is_backwards(self, u: int, n: int, tick_is_last: bool) -> bool:
        pt = self.period_s_ * self.tick_hz
        u_first = u - (n - 1) * pt if tick_is_last else u
        tol = self.backwards_tolerance_samples
        # before the newest packet's end by more than the tolerance, and not simply the same packet again
        return (u_first - self._last_end) / pt < -tol and abs(u_first + (n - 1) * pt - self._last_end) / pt > tol

    def update_packet(self, tick: int | None, n: int, arrival_ns: int, tick_is_last: bool = False, *,
                      reordered: bool = False, reset: bool = False) -> tuple[np.ndarray, int, int]:
        """Like ``update`` and also returns ``(time_s, unwrapped first tick, segment)``.

        ``reordered=True``: the caller knows (sequence numbers) that this is an older packet arriving late, so a
        tick behind the newest one is not a clock reset. ``reset=True``: start a new segment with this packet
        (the caller detected a sensor restart)."""
        n = int(n)
        self.packets_ += 1
        if self.tick_hz is None or tick is None:
            self.last_gap_samples_ = 0
            t_last = arrival_ns / _NS - self.min_latency_s
            self.segment_ = max(self.segment_, 0)
            return t_last - np.arange(n - 1, -1, -1, dtype=np.float64) * self._nominal_period_s, -1, self.segment_
        raw = int(tick)
        u = self._unwrap(raw, arrival_ns)
        if self.segment_ < 0:
            self._new_segment(u, raw, arrival_ns, n, tick_is_last)
        elif reset:
            self.resets_forced_ += 1
            self._new_segment(u, raw, arrival_ns, n, tick_is_last)
        elif self._step_pending and not reordered:
            self.resets_delay_step_ += 1
            self._new_segment(u, raw, arrival_ns, n, tick_is_last)
        elif not reordered and self._is_backwards(u, n, tick_is_last):
            # the sensor clock went backwards: it restarted (reboot, brown-out, clock set), however small the jump
            self.resets_backwards_ += 1
            self._new_segment(u, raw, arrival_ns, n, tick_is_last)
        x_first, x_last = self._packet_x(u, n, tick_is_last)
        a_rel = (arrival_ns - self._a0_ns) / _NS
        # consistency of the tick with the arrival time -> same segment, else the sensor clock jumped
        c = self._offset_rel()
        if math.isfinite(c) and not reordered:
            delay = a_rel - (c + (1.0 + self._d) * x_last)
            if delay < -self.jump_tolerance_s or delay > self.max_latency_s:
                self.resets_inconsistent_ += 1
                self._new_segment(u, raw, arrival_ns, n, tick_is_last)
                x_first, x_last = self._packet_x(u, n, tick_is_last)
                a_rel = 0.0
        if u >= self._last_u:
            self._accept(u, raw, arrival_ns)
            self._last_end = u + ((n - 1) * self.period_s_ * self.tick_hz if not tick_is_last else 0.0)
        # tick continuity: sample-period refinement and gap detection
        self.last_gap_samples_ = 0
        if self._prev_last_x is not None:
            k = (x_first - self._prev_last_x) / self.period_s_    # 1.0 when contiguous
            if abs(k - 1.0) < 0.02 * max(1, n):
                self._per_sum = self._per_sum * 0.999 + (x_last - self._prev_last_x)
                self._per_n = self._per_n * 0.999 + n
                if self._per_n > 50:
                    est = self._per_sum / self._per_n
                    if abs(est / self._nominal_period_s - 1.0) < 0.05:
                        self.period_s_ = est
            elif k >= 1.5:
                self.last_gap_samples_ = int(round(k)) - 1
        if self._prev_last_x is None or x_last > self._prev_last_x:
            self._prev_last_x = x_last
        self._observe(x_last, a_rel - x_last)
        x = x_first + np.arange(n, dtype=np.float64) * self.period_s_
        first_u = self._tick0 + int(round(x_first * self.tick_hz))
        self.last_first_tick_ = first_u
        return self._a0 + self._map_rel(x), first_u, self.segment_

    def _packet_x(self, u: int, n: int, tick_is_last: bool) -> tuple[float, float]:
        """Sensor seconds (since the segment's tick0) of the packet's first and last sample."""
        x = (u - self._tick0) / self.tick_hz
        span = (n - 1) * self.period_s_
        return (x - span, x) if tick_is_last else (x, x + span)

    def map_ticks(self, ticks_unwrapped) -> np.ndarray:
        """Host seconds of arbitrary unwrapped ticks of the CURRENT segment with the current model."""
        x = (np.asarray(ticks_unwrapped, dtype=np.float64) - self._tick0) / self.tick_hz
        return self._a0 + self._map_rel(x)

    # ------------------------------------------------------------------------------------------ internals
    def _unwrap(self, raw: int, arrival_ns: int) -> int:
        if self._last_raw is None or self.tick_bits is None or self.tick_bits >= 63:
            return raw
        m = 1 << self.tick_bits
        delta = (raw - self._last_raw) % m
        # progress expected from the host clock; take the wrap count that comes closest to it
        expected = (arrival_ns - self._last_arrival_ns) / _NS / (1.0 + self._d) * self.tick_hz
        k = round((expected - delta) / m)
        return self._last_u + delta + k * m

    def _accept(self, u: int, raw: int, arrival_ns: int) -> None:
        self._last_u, self._last_raw, self._last_arrival_ns = u, raw, int(arrival_ns)

    def _set_bins(self, bin_s: float) -> None:
        self._bin_s = bin_s
        self._lambda = 1.0 - bin_s / self.drift_time_constant_s
        self._nbins = max(8, int(math.ceil(self.window_s / bin_s)))

    def _new_segment(self, u: int, raw: int, arrival_ns: int, n: int, tick_is_last: bool) -> None:
        self.segment_ += 1
        # a bin must hold several packets for its minimum to reach the envelope (sparse, long packets)
        self._set_bins(max(self.bin_s, 8.0 * n / self.sampling_rate_hz))
        self._accept(u, raw, arrival_ns)
        self._last_end = u + ((n - 1) * self.period_s_ * self.tick_hz if not tick_is_last else 0.0)
        self._tick0 = u - (int(round((n - 1) * self.period_s_ * self.tick_hz)) if tick_is_last else 0)
        self._a0_ns = int(arrival_ns)
        self._a0 = arrival_ns / _NS
        self._prev_last_x = None
        # RLS on (c, d) for y = c + d x; the drift carries over from the previous segment (same oscillator)
        self._theta = np.array([0.0, self._d])
        self._P = np.array([[1e6, 0.0], [0.0, self._P_dd]])
        self._bins: collections.deque = collections.deque(maxlen=self._nbins)   # (x, y) bin minima
        self._bin_idx: int | None = None
        self._bin_x = 0.0
        self._bin_y = math.inf
        self._env_min = math.inf   # min over the closed bins of the window of y - d x
        self._high_bins = 0
        self._step_pending = False
        self._nrls = 0

    def _observe(self, x: float, y: float) -> None:
        """One packet observation: x = sensor seconds of its last sample, y = arrival_rel − x."""
        b = int(x // self._bin_s)
        if self._bin_idx is None:
            self._bin_idx = b
        if b != self._bin_idx:
            if math.isfinite(self._bin_y):
                self._close_bin(self._bin_x, self._bin_y)
            self._bin_idx = b
            self._bin_y = math.inf
        if y < self._bin_y:
            self._bin_y, self._bin_x = y, x

    def _close_bin(self, x: float, y: float) -> None:
        if math.isfinite(self._env_min) and self.step_detect_s > 0:
            # the least delayed packet of a whole bin far above the envelope: not queueing (some packet of a bin
            # gets through quickly) but the sensor clock stepped back without the tick showing it (the step
            # stayed ahead of the last delivered tick). Kept out of the fit; several in a row -> new segment.
            if y - self._d * x - self._env_min > self.step_detect_s:
                self._high_bins += 1
                if self._high_bins >= self.step_detect_bins:
                    self._step_pending = True
                return
            self._high_bins = 0
        self._bins.append((x, y))
        # robust RLS step (residuals far above the line are queueing outliers: down-weighted)
        phi = np.array([1.0, x])
        r = y - phi @ self._theta
        w = 1.0
        if self._nrls >= 10 and r > 0.002:
            w = 0.002 / r
        lam = self._lambda
        Pphi = self._P @ phi
        g = Pphi / (lam / w + phi @ Pphi)
        self._theta = self._theta + g * r
        self._P = (self._P - np.outer(g, Pphi)) / lam
        self._nrls += 1
        if self._nrls >= 4:
            self._d = float(np.clip(self._theta[1], -2e-3, 2e-3))
            self._P_dd = float(max(self._P[1, 1], 1e-6))
        arr = np.asarray(self._bins)
        self._env_min = float(np.min(arr[:, 1] - self._d * arr[:, 0]))

    def _offset_rel(self) -> float:
        c = self._env_min
        if math.isfinite(self._bin_y):
            c = min(c, self._bin_y - self._d * self._bin_x)
        return c - self.min_latency_s

    def _map_rel(self, x):
        """Host seconds relative to the segment's first arrival for sensor seconds ``x`` of this segment."""
        return self._offset_rel() + (1.0 + self._d) * x


# ================================================================================================ accounting
@dataclass(frozen=True, slots=True)
class AccountingSnapshot:
    """Per-sensor link statistics (what the bridge reports and publishes)."""

    received: int
    lost: int
    duplicates: int
    reordered: int
    malformed: int
    restarts: int
    samples: int
    samples_lost: int
    loss_pct: float
    nominal_rate_hz: float
    measured_rate_hz: float
    drift_ppm: float
    clock_segments: int
    last_seen_ns: int
    last_malformed_reason: str | None
    no_data: int = 0  # well-formed packets that carry no samples (command results, status frames)


class PacketAccounting:
    """Sequence-number bookkeeping: unwrap to 64 bit, count lost / duplicate / reordered / malformed packets.

    Parameters
    ----------
    sampling_rate_hz : float   nominal rate (reported next to the measured one)
    seq_bits : int or None     width of the sequence number (None: protocol has none)
    reorder_window : int       a packet up to this many behind the newest is "reordered" (recovers a loss);
                               further behind means the sensor restarted its counter.
    """

    def __init__(self, sampling_rate_hz: float = float("nan"), seq_bits: int | None = 16,
                 reorder_window: int = 64) -> None:
        self.sampling_rate_hz = float(sampling_rate_hz)
        self.seq_bits = seq_bits
        self.reorder_window = int(reorder_window)
        self.received_ = self.lost_ = self.duplicates_ = self.reordered_ = self.malformed_ = self.restarts_ = 0
        self.no_data_ = 0
        self.samples_ = 0
        self.samples_lost_ = 0
        self.first_seen_ns_ = 0
        self.last_seen_ns_ = 0
        self.last_malformed_reason_: str | None = None
        self.malformed_reasons_: collections.Counter = collections.Counter()
        self.drift_ppm_ = float("nan")
        self.clock_segments_ = 0
        self._hi: int | None = None          # newest unwrapped seq (published numbering)
        self._hi_raw = 0                     # its raw value
        self._seen: collections.OrderedDict = collections.OrderedDict()
        self._counter = 0

    def on_packet(self, seq: int | None, n_samples: int, arrival_ns: int, restart: bool = False
                  ) -> tuple[int, str]:
        """Account one decoded packet. Returns ``(unwrapped seq, status)`` with status ``"new"``,
        ``"reordered"``, ``"restart"`` or ``"duplicate"`` (the caller drops duplicates)."""
        if not self.first_seen_ns_:
            self.first_seen_ns_ = int(arrival_ns)
        self.last_seen_ns_ = max(self.last_seen_ns_, int(arrival_ns))
        if seq is None or self.seq_bits is None:
            self._counter += 1
            self._count(n_samples)
            return self._counter - 1, "new"
        seq = int(seq)
        if self._hi is None:
            self._hi, self._hi_raw = seq, seq
            self._remember(seq)
            self._count(n_samples)
            return seq, "new"
        m = 1 << self.seq_bits
        delta = (seq - self._hi_raw) % m
        if delta >= m // 2:
            delta -= m
        if restart or delta < -self.reorder_window:
            if self._hi is not None and not (restart and delta == 1):
                self.restarts_ += 1
            u = self._hi + 1
            self._hi, self._hi_raw = u, seq
            self._remember(u)
            self._count(n_samples)
            return u, "restart"
        u = self._hi + delta
        if delta > 0:
            self.lost_ += delta - 1
            self.samples_lost_ += (delta - 1) * self._mean_n(n_samples)
            self._hi, self._hi_raw = u, seq
            self._remember(u)
            self._count(n_samples)
            return u, "new"
        if u in self._seen:
            self.duplicates_ += 1
            return u, "duplicate"
        self.reordered_ += 1
        self.lost_ = max(0, self.lost_ - 1)
        self.samples_lost_ = max(0, self.samples_lost_ - n_samples)
        self._remember(u)
        self._count(n_samples)
        return u, "reordered"

    def peek_delta(self, seq: int | None) -> int | None:
        """Signed distance (packets) of ``seq`` from the newest sequence number, wrap-aware, without changing
        state: 1 = the next packet, <= 0 = older or repeated. None without sequence numbers or before the first."""
        if seq is None or self.seq_bits is None or self._hi is None:
            return None
        m = 1 << self.seq_bits
        delta = (int(seq) - self._hi_raw) % m
        return delta - m if delta >= m // 2 else delta

    def on_duplicate(self) -> None:
        """A repeated packet recognised by other means (the sensor tick, for protocols without a seq)."""
        self.duplicates_ += 1

    def on_samples_lost(self, n: int) -> None:
        """Samples missing according to the sensor clock (protocols without a sequence number): for those,
        ``lost_`` grows by the number of packets the gap amounts to (at least one)."""
        if n > 0:
            self.samples_lost_ += int(n)
            if self.seq_bits is None:
                per = self.samples_ / self.received_ if self.received_ else float(n)
                self.lost_ += max(1, int(round(n / per))) if per > 0 else 1

    def on_no_data(self) -> None:
        """A well-formed packet without samples (a command result on the data characteristic, ...)."""
        self.no_data_ += 1

    def on_malformed(self, err: MalformedPacketError | str) -> None:
        reason = err.reason if isinstance(err, MalformedPacketError) else str(err)
        self.malformed_ += 1
        self.last_malformed_reason_ = reason
        key = reason.split(":")[0][:60]
        if key in self.malformed_reasons_ or len(self.malformed_reasons_) < 32:
            self.malformed_reasons_[key] += 1

    @property
    def measured_rate_hz_(self) -> float:
        """Samples per host second (received + lost) over the arrival span."""
        span = (self.last_seen_ns_ - self.first_seen_ns_) / _NS
        if span <= 0 or self.received_ < 2:
            return float("nan")
        return (self.samples_ + self.samples_lost_ - self._first_n) / span

    @property
    def loss_pct_(self) -> float:
        if self.seq_bits is None:
            tot = self.samples_ + self.samples_lost_
            return 100.0 * self.samples_lost_ / tot if tot else 0.0
        tot = self.received_ + self.lost_
        return 100.0 * self.lost_ / tot if tot else 0.0

    def snapshot(self) -> AccountingSnapshot:
        return AccountingSnapshot(self.received_, self.lost_, self.duplicates_, self.reordered_, self.malformed_,
                                  self.restarts_, self.samples_, self.samples_lost_, self.loss_pct_,
                                  self.sampling_rate_hz, self.measured_rate_hz_, self.drift_ppm_,
                                  self.clock_segments_, self.last_seen_ns_, self.last_malformed_reason_,
                                  self.no_data_)

    def _count(self, n: int) -> None:
        if self.received_ == 0:
            self._first_n = n
        self.received_ += 1
        self.samples_ += int(n)

    def _mean_n(self, n: int) -> int:
        return int(round(self.samples_ / self.received_)) if self.received_ else int(n)

    def _remember(self, u: int) -> None:
        self._seen[u] = None
        while len(self._seen) > 4 * self.reorder_window:
            self._seen.popitem(last=False)


# ================================================================================================ pipeline
class SensorDecoder:
    """Protocol + ``PacketAccounting`` + ``ClockSync`` for one sensor: raw notifications in, blocks out.

    ``feed`` never raises for bad packets: a ``MalformedPacketError`` is counted (``accounting``) and kept as
    ``last_error_``; duplicates are counted and dropped. Used live by the BLE bridge and offline by
    ``JournalReader`` (same code, so a journal re-decodes to what was streamed).
    """

    def __init__(self, protocol, *, sensor_id: str = "", site: str = "", clock: ClockSync | None = None,
                 accounting: PacketAccounting | None = None) -> None:
        self.protocol = protocol
        self.sensor_id = sensor_id
        self.site = site
        rate = protocol.sampling_rate_hz if math.isfinite(protocol.sampling_rate_hz) else 1.0
        self.clock = clock or ClockSync(protocol.tick_hz if protocol.tick_bits else None, rate,
                                        tick_bits=protocol.tick_bits)
        self.accounting = accounting or PacketAccounting(protocol.sampling_rate_hz, protocol.seq_bits)
        self.last_error_: MalformedPacketError | None = None

    def feed(self, data: bytes | bytearray | memoryview, arrival_ns: int) -> list[SampleBlock | MetricsBlock]:
        try:
            packets = self.protocol.decode(data, arrival_ns)
        except MalformedPacketError as e:
            self.accounting.on_malformed(e)
            self.last_error_ = e
            return []
        if not packets:
            self.accounting.on_no_data()
            return []
        out: list[SampleBlock | MetricsBlock] = []
        acc = self.accounting
        for pkt in packets:
            if isinstance(pkt, MetricsPacket):
                acc.on_packet(None, 0, arrival_ns)
                out.append(MetricsBlock(self.sensor_id, self.site, int(arrival_ns), arrival_ns / _NS,
                                        pkt.cadence_spm, pkt.speed_ms, pkt.stride_length_m, pkt.total_distance_m,
                                        pkt.is_running, pkt.cadence_raw_per_min))
                continue
            restart, reset = pkt.restart, False
            step = self.clock.peek_step_samples(pkt.tick, pkt.n_samples, arrival_ns, pkt.tick_is_last)
            if step is not None:
                tol = self.clock.backwards_tolerance_samples
                first, last = step
                d = acc.peek_delta(pkt.seq)
                if d is None:                       # no sequence number: the tick alone tells
                    if abs(last) <= tol:            # ends where the newest packet ended: sent twice
                        acc.on_duplicate()
                        continue
                    reset = first < -tol            # the clock went back: the sensor restarted
                elif d <= 0 or first < -tol:
                    expected = (d - 1) * pkt.n_samples + 1   # where an older packet would start
                    if abs(first - expected) > tol + 0.02 * abs(expected):
                        restart = restart or d <= 0  # seq went back but not with the tick: the counter restarted
                        reset = first < -tol         # ...and the clock restarted too (corroborated or alone)
            useq, status = acc.on_packet(pkt.seq, pkt.n_samples, arrival_ns, restart)
            if status == "duplicate":
                continue
            time_s, first_tick, seg = self.clock.update_packet(pkt.tick, pkt.n_samples, arrival_ns, pkt.tick_is_last,
                                                               reordered=status == "reordered", reset=reset)
            if pkt.seq is None and self.clock.last_gap_samples_:
                acc.on_samples_lost(self.clock.last_gap_samples_)
            acc.drift_ppm_ = self.clock.drift_ppm_
            acc.clock_segments_ = self.clock.segment_ + 1
            out.append(SampleBlock(
                sensor_id=self.sensor_id, site=self.site, seq=useq, first_tick=first_tick,
                tick_hz=float("nan") if self.clock.arrival_stamped else self.clock.tick_hz,
                sampling_rate_hz=self.protocol.sampling_rate_hz, acc_ms2=pkt.acc_ms2, gyr_dps=pkt.gyr_dps,
                arrival_ns=int(arrival_ns), time_s=time_s, arrival_stamped=self.clock.arrival_stamped,
                clipped=pkt.clipped, segment=seg))
        return out

    def stats(self) -> AccountingSnapshot:
        return self.accounting.snapshot()
