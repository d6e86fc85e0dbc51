"""Per-protocol GATT procedures: what to read, write and subscribe for each sensor kind.

The byte formats live in `runform.firmware_bridge.protocols` (one module per protocol);
this module only knows which characteristic carries what and in which order to talk to it.
"""
from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable
from typing import Any

from bleak import BleakClient
from bleak.backends.scanner import AdvertisementData

from ._compat import protocols, runform_v1
from ._errors import BleError, SensorSetupError

__all__ = ["Profile", "RunformV1Profile", "profile_for", "register_profile", "supported_kinds", "kind_from_uuids",
           "kind_from_advert", "known_service_uuids", "scan_service_uuids", "battery_from_advert",
           "BATTERY_LEVEL_UUID", "RUNFORM_COMPANY_ID", "POLAR_COMPANY_ID", "advert_manufacturer_data"]
log = logging.getLogger(__name__)

BATTERY_LEVEL_UUID = "00002a19-0000-1000-8000-00805f9b34fb"
#: Bluetooth SIG company id 0xFFFF ("no company, for testing") carries runform's advert payload:
#: ``b"RF" | u8 protocol version | u8 battery %``.
RUNFORM_COMPANY_ID = 0xFFFF
#: Bluetooth SIG company id of Polar Electro Oy (manufacturer data of Polar adverts).
POLAR_COMPANY_ID = 0x006B
#: Polar devices advertise Heart Rate (0x180D) and Polar's 16-bit UUID (0xFEEE), not the 128-bit PMD UUID
#: (it does not fit the advertisement); scans must ask for these to see them.
_POLAR_ADVERT_UUIDS = ("0000180d-0000-1000-8000-00805f9b34fb", "0000feee-0000-1000-8000-00805f9b34fb")
_POLAR_PMD_NAMES = ("Polar H10", "Polar Sense", "Polar Verity", "Polar OH1")


def advert_manufacturer_data(battery_pct: int, version: int = 1) -> dict[int, bytes]:
    return {RUNFORM_COMPANY_ID: b"RF" + bytes([version & 0xFF, max(0, min(100, int(battery_pct)))])}


def battery_from_advert(adv: AdvertisementData) -> int | None:
    payload = adv.manufacturer_data.get(RUNFORM_COMPANY_ID)
    if payload and len(payload) >= 4 and payload[:2] == b"RF" and payload[3] <= 100:
        return int(payload[3])
    return None


def known_service_uuids() -> list[str]:
    """Service UUIDs of every registered sensor protocol."""
    out: list[str] = []
    for cls in protocols.registered_protocols().values():
        out.extend(protocols.normalize_uuid(u) for u in cls.service_uuids)
    return sorted(set(out))


def scan_service_uuids() -> list[str]:
    """What a sensor scan filters on: every protocol's service UUIDs plus what Polar devices advertise."""
    return sorted(set(known_service_uuids()) | set(_POLAR_ADVERT_UUIDS))


def kind_from_uuids(uuids) -> str | None:
    try:
        return protocols.protocol_for_services(uuids).kind
    except Exception:
        return None


def kind_from_advert(uuids, name: str | None = None, manufacturer_data: dict | None = None) -> str | None:
    """Protocol kind of an advertising device: from its service UUIDs, else from Polar's advert (company id
    0x006B or a ``Polar H10 …`` / ``Polar Sense …`` name: models with PMD accelerometer streaming)."""
    kind = kind_from_uuids(uuids)
    if kind is not None:
        return kind
    if name and name.startswith(_POLAR_PMD_NAMES):
        return "polar_pmd"
    if manufacturer_data and POLAR_COMPANY_ID in manufacturer_data and name and name.startswith("Polar"):
        return "polar_pmd"
    return None


class Profile:
    """GATT procedure of one protocol kind, bound to one connection."""

    kind = ""

    def __init__(self, spec):
        self.spec = spec
        self.battery_pct: int | None = None
        self.mtu: int | None = None

    async def setup(self, link, client: BleakClient):
        raise NotImplementedError

    async def start_streaming(self, link, client: BleakClient, on_data: Callable) -> None:
        raise NotImplementedError

    async def stop_streaming(self, link, client: BleakClient) -> None:
        pass

    async def command(self, link, command: str, **params: Any) -> Any:
        raise BleError(f"{link.sensor_id}: {self.kind} has no command {command!r}")

    # helpers
    async def _read_battery(self, link, client: BleakClient) -> None:
        if client.services.get_characteristic(BATTERY_LEVEL_UUID) is None:
            return
        try:
            self.battery_pct = int((await client.read_gatt_char(BATTERY_LEVEL_UUID))[0])
            link._stats.battery_pct = self.battery_pct

            def on_battery(_c, data: bytearray) -> None:
                if data:
                    self.battery_pct = int(data[0])
                    link._stats.battery_pct = self.battery_pct
            await client.start_notify(BATTERY_LEVEL_UUID, on_battery)
        except Exception as exc:
            log.info("%s: battery not readable: %s", link.sensor_id, exc)

    async def _acquire_mtu(self, link, client: BleakClient) -> None:
        backend = getattr(client, "_backend", None)
        try:
            if hasattr(backend, "_acquire_mtu"):
                await backend._acquire_mtu()  # BlueZ reports 23 until asked
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.mtu = int(client.mtu_size)
        except Exception as exc:
            log.debug("%s: MTU not available: %s", link.sensor_id, exc)
        link._stats.mtu = self.mtu


class RunformV1Profile(Profile):
    """runform v1: CONFIG read, control point (write + indicate, one response per command), DATA notify."""

    kind = "runform_v1"

    def __init__(self, spec):
        super().__init__(spec)
        self.config = None
        self._responses: asyncio.Queue = asyncio.Queue(maxsize=16)
        self._cmd_lock = asyncio.Lock()
        self._client: BleakClient | None = None

    def _on_response(self, _c, data: bytearray) -> None:
        try:
            resp = runform_v1.decode_control_response(bytes(data))
        except Exception as exc:
            log.warning("runform_v1: bad control-point response %s: %s", bytes(data).hex(), exc)
            return
        try:
            self._responses.put_nowait(resp)
        except asyncio.QueueFull:
            log.warning("runform_v1: control-point response dropped (nobody waiting)")

    async def _request(self, link, payload: bytes, timeout_s: float | None = None):
        from ._errors import ControlPointTimeoutError
        client = self._client
        assert client is not None
        async with self._cmd_lock:
            while not self._responses.empty():
                self._responses.get_nowait()
            op = payload[0]
            await client.write_gatt_char(runform_v1.CONTROL_UUID, payload, response=True)
            deadline = asyncio.get_running_loop().time() + (timeout_s or link.command_timeout_s)
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                try:
                    resp = await asyncio.wait_for(self._responses.get(), max(0.0, remaining))
                except asyncio.TimeoutError:
                    raise ControlPointTimeoutError(link.sensor_id, runform_v1.OpCode(op).name,
                                                   timeout_s or link.command_timeout_s) from None
                if resp.opcode == op:
                    return resp.raise_for_result()

    async def _read_config(self, client: BleakClient):
        return runform_v1.decode_config(await client.read_gatt_char(runform_v1.CONFIG_UUID))

    async def setup(self, link, client: BleakClient):
        self._client = client
        for uuid in (runform_v1.DATA_UUID, runform_v1.CONTROL_UUID, runform_v1.CONFIG_UUID):
            if client.services.get_characteristic(uuid) is None:
                raise SensorSetupError(link.sensor_id, f"runform_v1 characteristic {uuid} missing")
        await self._acquire_mtu(link, client)
        cfg = await self._read_config(client)
        await client.start_notify(runform_v1.CONTROL_UUID, self._on_response)
        spec = self.spec
        changes = []
        if spec.sampling_rate_hz is not None and abs(cfg.sampling_rate_hz - spec.sampling_rate_hz) > 1e-6:
            changes.append(runform_v1.set_sampling_rate(int(round(spec.sampling_rate_hz))))
        if spec.range_g is not None and cfg.acc_range_g != int(spec.range_g):
            changes.append(runform_v1.set_acc_range(int(spec.range_g)))
        if spec.gyro is not None and cfg.gyro_enabled != bool(spec.gyro):
            changes.append(runform_v1.set_gyro(bool(spec.gyro)))
        if changes:
            if cfg.streaming:
                await self._request(link, runform_v1.stop_streaming())
            for payload in changes:
                await self._request(link, payload)
            cfg = await self._read_config(client)
        self.config = cfg
        await self._read_battery(link, client)
        return runform_v1.RunformV1(cfg)

    async def start_streaming(self, link, client: BleakClient, on_data: Callable) -> None:
        await client.start_notify(runform_v1.DATA_UUID, on_data)
        if not self.config.streaming:
            await self._request(link, runform_v1.start_streaming())

    async def stop_streaming(self, link, client: BleakClient) -> None:
        await self._request(link, runform_v1.stop_streaming())
        await client.stop_notify(runform_v1.DATA_UUID)

    async def command(self, link, command: str, **params: Any) -> Any:
        builders = {
            "start": lambda: runform_v1.start_streaming(),
            "stop": lambda: runform_v1.stop_streaming(),
            "set_rate": lambda: runform_v1.set_sampling_rate(int(params["rate_hz"])),
            "set_range": lambda: runform_v1.set_acc_range(int(params["range_g"])),
            "set_gyro": lambda: runform_v1.set_gyro(bool(params["enabled"])),
            "request_config": lambda: runform_v1.request_config(),
        }
        if command not in builders:
            raise BleError(f"{link.sensor_id}: unknown command {command!r}; known: {sorted(builders)}")
        resp = await self._request(link, builders[command]())
        return resp.settings if command == "request_config" else resp


_PROFILES: dict[str, type[Profile]] = {"runform_v1": RunformV1Profile}


def register_profile(cls: type[Profile]) -> type[Profile]:
    """Make a connection profile available for its protocol ``kind``."""
    _PROFILES[cls.kind] = cls
    return cls


def supported_kinds() -> list[str]:
    """Protocol kinds runform can connect to (a BLE connection profile exists)."""
    return sorted(_PROFILES)


def profile_for(client: BleakClient, spec) -> Profile:
    """Pick the profile from the sensor's GATT services (or ``spec.kind``)."""
    kind = spec.kind
    if kind is None:
        uuids = [s.uuid for s in client.services]
        kind = kind_from_uuids(uuids)
        if kind is None:
            raise SensorSetupError(spec.sensor_id, f"no supported sensor service among {sorted(uuids)}")
    try:
        return _PROFILES[kind](spec)
    except KeyError:
        raise SensorSetupError(spec.sensor_id, f"protocol {kind!r} is decodable but has no BLE connection "
                                               f"profile yet (supported: {sorted(_PROFILES)})") from None
