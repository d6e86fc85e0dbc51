"""What every virtual peripheral shares: registration on an emulated adapter, the radio loop (one tick per
connection event), scripted link drops / death, battery drain. Protocol-specific sensors subclass it."""
from __future__ import annotations

import asyncio
import logging
import time

from dbus_fast import Message

from ._bluezoo import CENTRAL_ADDRESS
from ._engine import SensorBehavior
from ._gatt import GattApplication

__all__ = ["VirtualPeripheral", "add_device_information"]
log = logging.getLogger(__name__)

BATTERY_SERVICE_UUID = "0000180f-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL_UUID = "00002a19-0000-1000-8000-00805f9b34fb"
DEVICE_INFORMATION_UUID = "0000180a-0000-1000-8000-00805f9b34fb"
_DIS_CHARS = {"manufacturer": "00002a29-0000-1000-8000-00805f9b34fb", "model": "00002a24-0000-1000-8000-00805f9b34fb",
              "serial": "00002a25-0000-1000-8000-00805f9b34fb", "firmware": "00002a26-0000-1000-8000-00805f9b34fb",
              "hardware": "00002a27-0000-1000-8000-00805f9b34fb"}


def add_device_information(app: GattApplication, **texts: str) -> None:
    """Device Information service (0x180A) with the given strings (manufacturer, model, serial, firmware...)."""
    svc = app.add_service(DEVICE_INFORMATION_UUID)
    for key, text in texts.items():
        app.add_characteristic(svc, _DIS_CHARS[key], ["read"], value=str(text).encode())


class VirtualPeripheral:
    """Base of the virtual sensors: subclasses implement ``_build_app(adapter)`` and ``_on_event(now_s)``.

    ``streaming_since_s_`` (host monotonic) is the reference of the scripted faults of `SensorBehavior`
    (``disconnect_at_s``, ``stop_at_s``): set it when the sensor starts measuring.
    """

    def __init__(self, behavior: SensorBehavior | None, name: str, seed: int = 0):
        self.behavior = behavior or SensorBehavior(seed=seed)
        self.name = name
        self.app: GattApplication | None = None
        self.address_: str | None = None
        self.adapter_: str | None = None
        self.streaming_since_s_: float | None = None
        self.link_drops_ = 0
        self.stopped_ = False
        self._task: asyncio.Task | None = None
        self._t_boot = time.monotonic()
        self._next_disconnect = sorted(self.behavior.disconnect_at_s)
        self.battery_char = None

    # -- to implement -------------------------------------------------------------------------------
    def _build_app(self, adapter: str) -> GattApplication:
        raise NotImplementedError

    def _on_event(self, now_s: float) -> None:
        """One connection event at host monotonic ``now_s``."""

    def _next_interval_s(self) -> float:
        return self.behavior.connection_interval_ms / 1000.0

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self, adapter: str, address: str | None = None):
        """Register on ``adapter`` (``"hci1"``...) and start advertising."""
        self.adapter_ = adapter
        self.address_ = address
        self.app = self._build_app(adapter)
        await self.app.register()
        self._t_boot = time.monotonic()
        self._task = asyncio.create_task(self._radio_loop(), name=f"virtual-{type(self).__name__}-{adapter}")
        return self

    async def stop(self) -> None:
        """Power off: drop the link, stop advertising, leave the bus."""
        self.stopped_ = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._task = None
        if self.app is not None and self.app.bus is not None:
            await self.drop_link()
            await self.app.unregister()

    async def drop_link(self) -> None:
        """The sensor ends the connection (as on a radio link loss)."""
        if self.app is None or self.app.bus is None:
            return
        path = f"/org/bluez/{self.adapter_}/dev_{CENTRAL_ADDRESS.replace(':', '_')}"
        try:
            await self.app.bus.call(Message(destination="org.bluez", path=path, interface="org.bluez.Device1",
                                            member="Disconnect"))
            self.link_drops_ += 1
        except Exception as exc:
            log.debug("drop_link: %s", exc)

    def battery_pct(self) -> int:
        b = self.behavior
        hours = (time.monotonic() - self._t_boot) / 3600.0
        return int(round(max(0.0, min(100.0, b.battery_start_pct - b.battery_drain_pct_per_h * hours))))

    def _add_battery(self, app: GattApplication) -> None:
        svc = app.add_service(BATTERY_SERVICE_UUID)
        self.battery_char = app.add_characteristic(svc, BATTERY_LEVEL_UUID, ["read", "notify"],
                                                   on_read=lambda: bytes([self.battery_pct()]))

    async def _radio_loop(self) -> None:
        b = self.behavior
        last_batt = None
        while True:
            await asyncio.sleep(self._next_interval_s())
            now = time.monotonic()
            since = None if self.streaming_since_s_ is None else now - self.streaming_since_s_
            if b.stop_at_s is not None and since is not None and since >= b.stop_at_s:
                asyncio.get_running_loop().create_task(self.stop())
                return
            if self._next_disconnect and since is not None and since >= self._next_disconnect[0]:
                self._next_disconnect.pop(0)
                await self.drop_link()
            try:
                self._on_event(now)
            except Exception:  # a bug in a virtual sensor must not kill the emulation silently
                log.exception("%s: connection event failed", self.name)
            batt = self.battery_pct()
            if batt != last_batt and self.battery_char is not None:
                last_batt = batt
                self.battery_char.notify(bytes([batt]))
