"""Discovery: which sensors are advertising nearby."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from ._errors import SensorNotFoundError
from ._profiles import BATTERY_LEVEL_UUID, battery_from_advert, kind_from_advert, scan_service_uuids
from ._types import FoundSensor

__all__ = ["scan", "find_device"]
log = logging.getLogger(__name__)


def _bluez_args(adapter: str | None) -> dict[str, Any]:
    return {"bluez": {"adapter": adapter}} if adapter else {}


async def scan(timeout_s: float = 3.0, adapter: str | None = None, *, service_uuids: list[str] | None = None,
               all_devices: bool = False, read_battery: bool = False, backend: type | None = None,
               lock: asyncio.Lock | None = None) -> list[FoundSensor]:
    """Scan for ``timeout_s`` and return the sensors seen, strongest signal first.

    Parameters
    ----------
    timeout_s
        Scan duration.
    adapter
        BlueZ adapter (``"hci0"``); None = the system default.
    service_uuids
        Only devices advertising one of these services. Default: every sensor protocol runform
        speaks (`scan_service_uuids`: runform v1, RSC, and what Polar devices advertise) and only
        devices whose kind is known (e.g. a non-Polar heart-rate strap is left out);
        ``all_devices=True`` lists everything.
    read_battery
        Connect to sensors whose advertisement carries no battery level (Polar, RSC pods) and read
        the Battery Service (slower: one connection per sensor, serialized).
    backend
        A bleak scanner backend class (tests).
    lock
        Serializes scanning/connecting with other users of the adapter (a `Bridge` passes its own).
    """
    known_only = service_uuids is None and not all_devices
    if known_only:
        service_uuids = scan_service_uuids()
    seen: dict[str, tuple[BLEDevice, AdvertisementData]] = {}

    def on_advert(device: BLEDevice, adv: AdvertisementData) -> None:
        seen[device.address] = (device, adv)

    kw: dict[str, Any] = dict(_bluez_args(adapter))
    if backend is not None:
        kw["backend"] = backend
    lock = lock or asyncio.Lock()
    async with lock:
        async with BleakScanner(on_advert, service_uuids=service_uuids, **kw):
            await asyncio.sleep(timeout_s)
    found = []
    for addr, (dev, adv) in seen.items():
        uuids = tuple(u.lower() for u in adv.service_uuids)
        battery = battery_from_advert(adv)
        name = adv.local_name or dev.name
        kind = kind_from_advert(uuids, name, adv.manufacturer_data)
        if known_only and kind is None:
            continue
        found.append(FoundSensor(address=addr, name=name, kind=kind, rssi_dbm=adv.rssi, battery_pct=battery,
                                 service_uuids=uuids, adapter=adapter))
    if read_battery:
        out = []
        for fs in found:
            if fs.battery_pct is None:
                async with lock:
                    fs = FoundSensor(**{**fs.__dict__, "battery_pct": await _read_battery(seen[fs.address][0], adapter, backend)})
            out.append(fs)
        found = out
    found.sort(key=lambda f: -(f.rssi_dbm if f.rssi_dbm is not None else -999))
    return found


async def _read_battery(device: BLEDevice, adapter: str | None, backend: type | None) -> int | None:
    kw: dict[str, Any] = dict(_bluez_args(adapter))
    if backend is not None:
        kw["backend"] = backend
    try:
        async with BleakClient(device, timeout=5.0, **kw) as client:
            return int((await client.read_gatt_char(BATTERY_LEVEL_UUID))[0])
    except Exception as exc:  # battery is optional information
        log.info("battery of %s not readable: %s", device.address, exc)
        return None


async def find_device(identifier: str, *, timeout_s: float = 10.0, adapter: str | None = None,
                      backend: type | None = None) -> tuple[BLEDevice, AdvertisementData]:
    """Wait for the advertisement of one sensor, by address (``XX:..``) or advertised name.

    Uses the scanner's constructor callback, which sees the very first advertisement
    (bleak's ``find_device_by_*`` helpers can miss it on BlueZ).
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()
    ident = identifier.upper()
    by_address = len(ident) == 17 and ident.count(":") == 5

    def on_advert(device: BLEDevice, adv: AdvertisementData) -> None:
        if fut.done():
            return
        if (by_address and device.address.upper() == ident) or (
                not by_address and identifier in (adv.local_name, device.name)):
            fut.set_result((device, adv))

    kw: dict[str, Any] = dict(_bluez_args(adapter))
    if backend is not None:
        kw["backend"] = backend
    async with BleakScanner(on_advert, **kw):
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            raise SensorNotFoundError(identifier, timeout_s, adapter) from None
