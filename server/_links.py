"""Sensor link health for the retained status: one :class:`LinkStatus` per sensor of a runner.

Sources report what they know (``source.link_stats() -> list[LinkStatus]``): a BLE source (:class:`BleSource`)
from the bridge's per-link ``SensorStats`` (battery, RSSI, loss, reconnects, measured rate, clock drift), the
simulator and replay sources from their own packet accounting. :class:`LinkWindow` keeps the last seconds of
the packet counters (sampled once a second by the edge's ticker), so the status carries the loss of the whole
session (``loss_pct``) AND of the last ~10 s (``loss_recent_pct``): a link that is bad NOW shows up even after
an hour of good streaming.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, replace

__all__ = ["LinkStatus", "LinkWindow", "link_from_sensor_stats", "link_from_accounting", "loss_pct"]

#: the most links one runner's status lists (the schema's maxItems)
MAX_LINKS = 16


def loss_pct(received: int, lost: int) -> float | None:
    """lost / (received + lost) in %, None before the first packet."""
    total = received + lost
    return round(100.0 * lost / total, 3) if total > 0 else None


def _num(v, digits: int) -> float | None:
    return round(float(v), digits) if v is not None and math.isfinite(v) else None


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """One sensor link of a runner, as published in ``runform.status.v1`` ``links`` (docs/mqtt.md)."""

    sensor_id: str
    site: str
    kind: str  #: protocol: runform_v1 | polar_pmd | rsc | sim | replay | unknown (BLE, before the first connect)
    connected: bool
    battery_pct: int | None = None
    packets_received: int = 0
    packets_lost: int = 0
    packets_malformed: int = 0
    reconnects: int = 0
    sampling_rate_hz_measured: float | None = None
    clock_drift_ppm: float | None = None
    rssi_dbm: int | None = None
    last_seen_unix_s: float | None = None
    arrival_stamped: bool = False
    loss_recent_pct: float | None = None  #: filled by :class:`LinkWindow`

    @property
    def loss_pct(self) -> float | None:
        return loss_pct(self.packets_received, self.packets_lost)

    def to_payload(self) -> dict:
        return {"sensor_id": self.sensor_id, "site": self.site, "kind": self.kind, "connected": self.connected,
                "battery_pct": self.battery_pct, "packets_received": self.packets_received,
                "packets_lost": self.packets_lost, "loss_pct": self.loss_pct,
                "loss_recent_pct": self.loss_recent_pct, "packets_malformed": self.packets_malformed,
                "reconnects": self.reconnects, "sampling_rate_hz_measured": self.sampling_rate_hz_measured,
                "clock_drift_ppm": self.clock_drift_ppm, "rssi_dbm": self.rssi_dbm,
                "last_seen_unix_s": self.last_seen_unix_s, "arrival_stamped": self.arrival_stamped}


def _unix_from_monotonic_s(mono_s: float | None) -> float | None:
    if mono_s is None:
        return None
    return round(time.time() - (time.monotonic() - mono_s), 3)


def link_from_sensor_stats(st, kind: str | None = None) -> LinkStatus:
    """A BLE link's ``runform.firmware_bridge.ble.SensorStats`` -> :class:`LinkStatus`."""
    return LinkStatus(
        sensor_id=st.sensor_id, site=st.site, kind=str(st.extra.get("kind") or kind or "unknown"),
        connected=st.state == "streaming",
        battery_pct=int(st.battery_pct) if st.battery_pct is not None and 0 <= st.battery_pct <= 100 else None,
        packets_received=int(st.packets_received), packets_lost=int(st.packets_lost),
        packets_malformed=int(st.packets_malformed), reconnects=int(st.reconnects),
        sampling_rate_hz_measured=_num(st.measured_rate_hz, 2), clock_drift_ppm=_num(st.drift_ppm, 1),
        rssi_dbm=None if st.rssi_dbm is None else int(st.rssi_dbm),
        last_seen_unix_s=_unix_from_monotonic_s(st.last_seen_s), arrival_stamped=bool(st.arrival_stamped))


def link_from_accounting(sensor_id: str, site: str, kind: str, connected: bool, snap=None, *,
                         received: int = 0, last_seen_ns: int = 0, arrival_stamped: bool = False) -> LinkStatus:
    """A simulated / replayed sensor: ``snap`` is a ``timestamping.AccountingSnapshot`` (None: only
    ``received`` and ``last_seen_ns`` (monotonic ns) are known)."""
    if snap is not None:
        received, last_seen_ns = int(snap.received), int(snap.last_seen_ns)
    return LinkStatus(
        sensor_id=sensor_id, site=site, kind=kind, connected=bool(connected), battery_pct=None,
        packets_received=received, packets_lost=int(snap.lost) if snap is not None else 0,
        packets_malformed=int(snap.malformed) if snap is not None else 0,
        sampling_rate_hz_measured=_num(snap.measured_rate_hz, 2) if snap is not None else None,
        clock_drift_ppm=_num(snap.drift_ppm, 1) if snap is not None else None,
        last_seen_unix_s=_unix_from_monotonic_s(last_seen_ns / 1e9) if last_seen_ns else None,
        arrival_stamped=bool(arrival_stamped))


class LinkWindow:
    """Packet counters of a runner's links over the last ``window_s`` (bounded: a few samples per sensor).

    ``sample(links)`` once a second (the edge's ticker); ``fill(links)`` sets ``loss_recent_pct`` from the newest
    sample at least ``window_s`` old (so the window is ``window_s`` to ``window_s`` + 1 sampling period). While
    the history is younger than the window, the whole session is the recent window (its counters start at 0).
    """

    def __init__(self, window_s: float = 10.0, max_samples: int = 64) -> None:
        self.window_s = float(window_s)
        self.max_samples = int(max_samples)
        self._hist: dict[str, deque] = {}

    def sample(self, links: list[LinkStatus], now_s: float | None = None) -> None:
        now = time.monotonic() if now_s is None else now_s
        for ln in links:
            h = self._hist.get(ln.sensor_id)
            if h is None:
                if len(self._hist) >= 4 * MAX_LINKS:
                    continue
                h = self._hist[ln.sensor_id] = deque(maxlen=self.max_samples)
            h.append((now, ln.packets_received, ln.packets_lost))
            # keep exactly one sample older than the window (the baseline); drop what is older still
            while len(h) >= 2 and h[1][0] <= now - self.window_s:
                h.popleft()

    def recent_pct(self, ln: LinkStatus, now_s: float | None = None) -> float | None:
        now = time.monotonic() if now_s is None else now_s
        h = self._hist.get(ln.sensor_id)
        base_rx = base_lost = 0
        if h:
            for t, rx, lost in reversed(h):
                if t <= now - self.window_s:
                    base_rx, base_lost = rx, lost
                    break
        d_rx, d_lost = ln.packets_received - base_rx, ln.packets_lost - base_lost
        if d_rx < 0 or d_lost < 0:  # the counters started again (a new source): nothing to compare with
            return None
        return loss_pct(d_rx, d_lost)

    def fill(self, links: list[LinkStatus], now_s: float | None = None) -> list[LinkStatus]:
        return [replace(ln, loss_recent_pct=self.recent_pct(ln, now_s)) for ln in links]
