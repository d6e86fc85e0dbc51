"""A virtual Running Speed and Cadence (RSC, 0x1814) foot pod: speed and cadence only, no raw samples."""
from __future__ import annotations

import collections
import time

import numpy as np

from ..protocols import rsc
from ._engine import SensorBehavior
from ._gatt import GattApplication
from ._peripheral import VirtualPeripheral, add_device_information
from ._source import make_metrics_source

__all__ = ["VirtualRscPod"]


class VirtualRscPod(VirtualPeripheral):
    """A foot pod (Stryd / Polar Stride-like) worn by a simulated runner, on one emulated adapter.

    GATT: RSC service (Measurement 0x2A53 notify, Feature 0x2A54 read, Sensor Location 0x2A5D read), Battery,
    Device Information; advertised as ``RSC-<serial>`` with the RSC service UUID. Measuring starts when the
    central enables notifications on 0x2A53 (RSC has no start command) and stops when it disables them or the
    link ends. Every ``interval_s`` (± jitter) it notifies speed, cadence, stride length and total distance
    computed from the runner simulator's true steps (`make_metrics_source`); ``behavior.loss_pct`` loses
    notifications on air, ``disconnect_at_s``/``stop_at_s`` script link drops.

    Parameters
    ----------
    cadence_convention : {"strides", "steps"}
        What the pod puts in the 1/min cadence field: strides (one foot, ~85 when running; many pods do) or steps.

    Attributes
    ----------
    sent_ : deque of (host monotonic s, speed_ms, cadence_spm (true, both feet), raw cadence, running)
        What was notified (bounded).
    notifications_lost_ : int
    """

    def __init__(self, site: str = "foot_left", *, profile=None, segments=None, seed: int = 0,
                 behavior: SensorBehavior | None = None, interval_s: float = 1.0, cadence_convention: str = "strides",
                 serial: str | None = None, name: str | None = None, metrics_source=None):
        if cadence_convention not in ("strides", "steps"):
            raise ValueError(f"cadence_convention must be strides or steps, got {cadence_convention!r}")
        self.serial = serial or f"{seed:04d}"
        super().__init__(behavior, name or f"RSC-{self.serial}", seed)
        self.site = site
        self.interval_s = float(interval_s)
        self.cadence_convention = cadence_convention
        self.metrics = metrics_source or make_metrics_source(site if site.startswith("foot") else "foot_left",
                                                             profile=profile, segments=segments, seed=seed)
        self.measuring = False
        self.sent_: collections.deque = collections.deque(maxlen=10_000)
        self.notifications_lost_ = 0
        self.total_distance_m_ = 0.0
        self._t0: float | None = None
        self._last_t: float | None = None
        self._next_at = 0.0
        self._rng = np.random.default_rng(self.behavior.seed)

    def _build_app(self, adapter: str) -> GattApplication:
        app = GattApplication(adapter, f"/runform/rsc_{adapter}", self.name, [rsc.SERVICE_UUID])
        svc = app.add_service(rsc.SERVICE_UUID)
        self.meas_char = app.add_characteristic(svc, rsc.MEASUREMENT_UUID, ["notify"],
                                                on_notify_change=self._on_notify)
        app.add_characteristic(svc, rsc.FEATURE_UUID, ["read"], value=rsc.encode_feature(
            rsc.Feature.STRIDE_LENGTH | rsc.Feature.TOTAL_DISTANCE | rsc.Feature.WALKING_RUNNING_STATUS))
        app.add_characteristic(svc, rsc.SENSOR_LOCATION_UUID, ["read"], value=bytes([1]))  # top of shoe
        self._add_battery(app)
        add_device_information(app, manufacturer="runform", model="RSC pod (virtual)", serial=self.serial,
                               firmware="1.0.0")
        return app

    def _on_notify(self, on: bool) -> None:
        self.measuring = on
        if on:
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            if self.streaming_since_s_ is None:
                self.streaming_since_s_ = now
            self._next_at = now + self.interval_s

    def _on_event(self, now_s: float) -> None:
        if self._t0 is None:
            return
        t = now_s - self._t0
        speed, cadence, running = self.metrics(t)
        if self._last_t is not None:
            self.total_distance_m_ += speed * (t - self._last_t)
        self._last_t = t
        if not self.measuring or now_s < self._next_at:
            return
        jitter = self.behavior.interval_jitter_ms / 1000.0
        self._next_at = now_s + self.interval_s + (self._rng.uniform(-jitter, jitter) if jitter else 0.0)
        raw = int(round(cadence / 2.0)) if self.cadence_convention == "strides" else int(round(cadence))
        raw = min(raw, 255)
        stride_m = 120.0 * speed / cadence if cadence > 0 else 0.0
        if self.behavior.loss_pct and self._rng.random() * 100.0 < self.behavior.loss_pct:
            self.notifications_lost_ += 1
            return
        data = rsc.encode_measurement(min(speed, 255.0), raw, stride_length_m=stride_m,
                                      total_distance_m=self.total_distance_m_, running=running)
        if self.meas_char.notify(data):
            self.sent_.append((now_s, speed, cadence, raw, running))

    def stats(self) -> dict:
        return {"name": self.name, "address": self.address_, "site": self.site, "kind": "rsc",
                "measuring": self.measuring, "notifications_sent": len(self.sent_),
                "notifications_lost": self.notifications_lost_, "link_drops": self.link_drops_,
                "battery_pct": self.battery_pct()}
