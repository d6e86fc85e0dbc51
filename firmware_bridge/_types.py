"""Data types shared by the protocols, the clock mapping, the journal and the BLE bridge.

Two levels:

* ``SamplePacket`` / ``MetricsPacket``: what a protocol decoder returns for ONE notification, in SI units,
  with the raw (still wrapped) sequence number and sensor tick. No host timing yet.
* ``SampleBlock`` / ``MetricsBlock``: what the bridge hands to the DSP: the same samples with the sequence
  number and tick unwrapped to 64 bit and every sample mapped to host monotonic seconds (``time_s``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SamplePacket", "MetricsPacket", "SampleBlock", "MetricsBlock", "STANDARD_GRAVITY_MS2"]

#: m/s² per g (CGPM 1901 standard gravity); used for every g <-> m/s² conversion in the bridge.
STANDARD_GRAVITY_MS2 = 9.80665


@dataclass(frozen=True, slots=True, eq=False)
class SamplePacket:
    """Samples decoded from one notification of a raw-IMU protocol.

    Attributes
    ----------
    acc_ms2 : ndarray, shape (n, 3), float64
        Acceleration in the sensor frame, m/s², gravity included.
    gyr_dps : ndarray (n, 3) float64 or None
    clipped : ndarray (n,) bool or None
        True where any accelerometer axis hit the measuring range (None: protocol cannot tell).
    seq : int or None
        Packet sequence number as sent (wrapped, ``seq_bits`` of the protocol), None if the protocol has none.
    tick : int or None
        Sensor clock tick as sent (wrapped, ``tick_bits`` of the protocol); of the first sample unless
        ``tick_is_last``. None for protocols without a sensor clock (arrival-stamped).
    tick_is_last : bool
        The tick belongs to the LAST sample of the packet (Polar PMD) instead of the first.
    restart : bool
        The sensor marks this packet as the first after a (re)start of streaming or a configuration change:
        the sequence number restarts here and is not a gap.
    """

    acc_ms2: np.ndarray
    gyr_dps: np.ndarray | None = None
    clipped: np.ndarray | None = None
    seq: int | None = None
    tick: int | None = None
    tick_is_last: bool = False
    restart: bool = False

    @property
    def n_samples(self) -> int:
        return int(self.acc_ms2.shape[0])


@dataclass(frozen=True, slots=True)
class MetricsPacket:
    """One measurement of a coarse sensor (no raw samples), e.g. an RSC foot pod.

    ``cadence_spm`` is steps per minute of BOTH feet (the protocol layer resolves per-leg conventions);
    ``cadence_raw_per_min`` is the value as sent.
    """

    speed_ms: float
    cadence_spm: float
    cadence_raw_per_min: int
    stride_length_m: float | None = None
    total_distance_m: float | None = None
    is_running: bool | None = None


@dataclass(frozen=True, slots=True, eq=False)
class SampleBlock:
    """A packet's samples, timestamped on the host monotonic clock. Produced by ``SensorDecoder``.

    Attributes
    ----------
    sensor_id, site : str
    seq : int
        Unwrapped (64-bit) packet sequence number; for protocols without one, a running packet counter.
    first_tick : int
        Unwrapped sensor tick of the first sample (0 .. for arrival-stamped sensors: -1).
    tick_hz : float
        Sensor tick rate (NaN for arrival-stamped sensors).
    sampling_rate_hz : float
        Nominal sampling rate.
    acc_ms2 : ndarray (n, 3) float64
    gyr_dps : ndarray (n, 3) float64 or None
    arrival_ns : int
        ``time.monotonic_ns()`` taken first thing in the notification callback.
    time_s : ndarray (n,) float64
        Host monotonic seconds of each sample after clock-drift correction (or arrival-based when
        ``arrival_stamped``).
    arrival_stamped : bool
        True when the sensor carries no clock and ``time_s`` derives from arrival times (jitter of tens of ms).
    clipped : ndarray (n,) bool or None
    segment : int
        Clock segment (incremented when the sensor clock reset or jumped, e.g. after a reconnect).
    """

    sensor_id: str
    site: str
    seq: int
    first_tick: int
    tick_hz: float
    sampling_rate_hz: float
    acc_ms2: np.ndarray
    gyr_dps: np.ndarray | None
    arrival_ns: int
    time_s: np.ndarray
    arrival_stamped: bool
    clipped: np.ndarray | None = None
    segment: int = 0

    @property
    def n_samples(self) -> int:
        return int(self.acc_ms2.shape[0])


@dataclass(frozen=True, slots=True)
class MetricsBlock:
    """Coarse metrics from a sensor without raw samples (RSC foot pod): always ``coarse=True``.

    ``time_s`` is the host monotonic arrival time (RSC carries no timestamp).
    """

    sensor_id: str
    site: str
    arrival_ns: int
    time_s: float
    cadence_spm: float
    speed_ms: float
    stride_length_m: float | None = None
    total_distance_m: float | None = None
    is_running: bool | None = None
    cadence_raw_per_min: int | None = None
    coarse: bool = field(default=True)
    arrival_stamped: bool = field(default=True)
