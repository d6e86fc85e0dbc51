"""Per-sensor decode chain for a link: the shared `timestamping.SensorDecoder`, kept across reconnects."""
from __future__ import annotations

import math

from ..timestamping import SensorDecoder as _SharedDecoder

__all__ = ["SensorDecoder"]


class SensorDecoder:
    """Protocol -> PacketAccounting -> ClockSync -> SampleBlock, one per sensor SESSION.

    After a reconnect the same instance continues (sequence numbers keep unwrapping, the gap
    counts as lost packets; the clock starts a new segment if the sensor clock restarted);
    only the protocol object (the sensor configuration read on connect) is swapped.
    """

    def __init__(self, protocol, *, sensor_id: str, site: str):
        self._dec = _SharedDecoder(protocol, sensor_id=sensor_id, site=site)

    @property
    def protocol(self):
        return self._dec.protocol

    def set_protocol(self, protocol) -> None:
        self._dec.protocol = protocol

    def feed(self, raw: bytes, arrival_ns: int):
        return self._dec.feed(raw, arrival_ns)

    @property
    def last_error_(self):
        return self._dec.last_error_

    def fill_stats(self, stats) -> None:
        s = self._dec.stats()
        stats.packets_received = s.received
        stats.packets_lost = s.lost
        stats.packets_malformed = s.malformed
        stats.packets_duplicate = s.duplicates
        stats.packets_no_data = s.no_data
        stats.samples_received = s.samples
        stats.clock_segments = s.clock_segments
        coarse = getattr(self.protocol, "coarse", False)
        stats.measured_rate_hz = s.measured_rate_hz if math.isfinite(s.measured_rate_hz) and not coarse else None
        stats.drift_ppm = s.drift_ppm if math.isfinite(s.drift_ppm) else None
        stats.arrival_stamped = bool(coarse or self._dec.clock.arrival_stamped)
        if s.last_malformed_reason:
            stats.extra["last_malformed_reason"] = s.last_malformed_reason
            #: malformed packets by reason (bounded: at most 32 reasons), e.g. truncated / oversized / version
            stats.extra["malformed_reasons"] = dict(self._dec.accounting.malformed_reasons_)
        stats.extra["reordered"] = s.reordered
        stats.extra["restarts"] = s.restarts
        stats.extra["samples_lost"] = s.samples_lost
