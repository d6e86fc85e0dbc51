"""A virtual heart-rate strap (Heart Rate service 0x180D only): a BLE device runform cannot read.

It is what a runner's ordinary chest strap looks like to the bridge: `runform scan` leaves it out (unless
``--all``) and connecting to it is a clear setup error (no supported sensor service), counted and retried
slowly, while the other sensors of the runner keep streaming.
"""
from __future__ import annotations

import time

from ._engine import SensorBehavior
from ._gatt import GattApplication
from ._peripheral import VirtualPeripheral, add_device_information

__all__ = ["VirtualHeartRateStrap", "HEART_RATE_SERVICE_UUID", "HEART_RATE_MEASUREMENT_UUID"]

HEART_RATE_SERVICE_UUID = "0000180d-0000-1000-8000-00805f9b34fb"
HEART_RATE_MEASUREMENT_UUID = "00002a37-0000-1000-8000-00805f9b34fb"


class VirtualHeartRateStrap(VirtualPeripheral):
    """A generic (non-Polar) heart-rate strap named ``HRM-<serial>``: Heart Rate Measurement (0x2A37, notify,
    ``u8 flags=0 | u8 bpm`` once a second while notifications are on), Battery, Device Information.

    Takes the same ``profile``/``segments``/``source_factory`` keywords as the other virtual sensors (ignored:
    it sends no motion data) so test fixtures can build any kind alike.
    """

    def __init__(self, site: str = "sacrum", *, seed: int = 0, behavior: SensorBehavior | None = None,
                 heart_rate_bpm: int = 150, serial: str | None = None, name: str | None = None,
                 profile=None, segments=None, source_factory=None):
        self.serial = serial or f"{seed:04d}"
        super().__init__(behavior, name or f"HRM-{self.serial}", seed)
        self.site = site
        self.heart_rate_bpm = int(heart_rate_bpm)
        self.measuring = False
        self.notifications_sent_ = 0
        self._next_at = 0.0

    def _build_app(self, adapter: str) -> GattApplication:
        app = GattApplication(adapter, f"/runform/hrm_{adapter}", self.name, [HEART_RATE_SERVICE_UUID])
        svc = app.add_service(HEART_RATE_SERVICE_UUID)
        self.hr_char = app.add_characteristic(svc, HEART_RATE_MEASUREMENT_UUID, ["notify"],
                                              on_notify_change=self._on_notify)
        self._add_battery(app)
        add_device_information(app, manufacturer="generic", model="HR strap (virtual)", serial=self.serial,
                               firmware="2.1.0")
        return app

    def _on_notify(self, on: bool) -> None:
        self.measuring = on
        if on:
            self._next_at = time.monotonic() + 1.0

    def _on_event(self, now_s: float) -> None:
        if self.measuring and now_s >= self._next_at:
            self._next_at = now_s + 1.0
            if self.hr_char.notify(bytes([0, max(0, min(255, self.heart_rate_bpm))])):
                self.notifications_sent_ += 1
