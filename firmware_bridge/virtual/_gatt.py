"""A minimal BlueZ GATT-server application and LE advertisement on dbus-fast.

This is what a peripheral registers with (emulated) BlueZ on its adapter: an object tree
of ``org.bluez.GattService1`` / ``org.bluez.GattCharacteristic1`` objects and one
``org.bluez.LEAdvertisement1``. bluezoo mirrors the tree to the central on connect and
forwards reads, writes and StartNotify/StopNotify; notifications are PropertiesChanged
signals on ``Value``.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from dbus_fast import BusType, DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method

__all__ = ["GattApplication", "GattCharacteristic", "GattService", "Advertisement"]

BLUEZ = "org.bluez"


def full_uuid(uuid: str | int) -> str:
    """16-bit SIG UUID (int or 'xxxx') -> 128-bit string; 128-bit strings pass through lowercased."""
    if isinstance(uuid, int):
        return f"{uuid:08x}-0000-1000-8000-00805f9b34fb"
    uuid = uuid.lower()
    if len(uuid) == 4:
        return f"0000{uuid}-0000-1000-8000-00805f9b34fb"
    return uuid


class GattService(ServiceInterface):
    def __init__(self, path: str, uuid: str, primary: bool = True):
        super().__init__("org.bluez.GattService1")
        self.path = path
        self._uuid = full_uuid(uuid)
        self._primary = primary
        self.characteristics: list[GattCharacteristic] = []

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":  # noqa: F821
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> "b":  # noqa: F821
        return self._primary


ReadHandler = Callable[[], bytes]
WriteHandler = Callable[[bytes, bool], None]  # (value, with_response)


class GattCharacteristic(ServiceInterface):
    """One characteristic. ``on_write`` may raise `GattError` to reject a write."""

    def __init__(self, service: GattService, index: int, uuid: str, flags: list[str], *,
                 value: bytes = b"", on_read: ReadHandler | None = None,
                 on_write: WriteHandler | None = None,
                 on_notify_change: Callable[[bool], None] | None = None, mtu: int = 247):
        super().__init__("org.bluez.GattCharacteristic1")
        self.path = f"{service.path}/char{index:04d}"
        self.service = service
        self._uuid = full_uuid(uuid)
        self._flags = list(flags)
        self.value = bytes(value)
        self.notifying = False
        self.on_read = on_read
        self.on_write = on_write
        self.on_notify_change = on_notify_change
        self.mtu = mtu
        self.notifications_sent = 0
        service.characteristics.append(self)

    @property
    def uuid(self) -> str:
        return self._uuid

    def notify(self, data: bytes) -> bool:
        """Send one notification (if the central subscribed); returns whether it was sent."""
        self.value = data
        if not self.notifying:
            return False
        self.emit_properties_changed({"Value": data})
        self.notifications_sent += 1
        return True

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":  # noqa: F821
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> "o":  # noqa: F821
        return self.service.path

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> "as":  # noqa: F821
        return self._flags

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> "ay":  # noqa: F821
        return self.value

    @dbus_property(access=PropertyAccess.READ)
    def Notifying(self) -> "b":  # noqa: F821
        return self.notifying

    @method()
    def ReadValue(self, options: "a{sv}") -> "ay":  # noqa: F821
        if self.on_read is not None:
            self.value = bytes(self.on_read())
        return self.value

    @method()
    def WriteValue(self, value: "ay", options: "a{sv}"):  # noqa: F821
        with_response = True
        opt = options.get("type") if options else None
        if opt is not None and getattr(opt, "value", opt) == "command":
            with_response = False
        if self.on_write is None:
            raise DBusError("org.bluez.Error.NotPermitted", "characteristic is not writable")
        try:
            self.on_write(bytes(value), with_response)
        except GattError as exc:
            raise DBusError(exc.dbus_name, str(exc)) from None

    @method()
    def StartNotify(self):
        if not self.notifying:
            self.notifying = True
            self.emit_properties_changed({"Notifying": True})
            if self.on_notify_change:
                self.on_notify_change(True)

    @method()
    def StopNotify(self):
        if self.notifying:
            self.notifying = False
            self.emit_properties_changed({"Notifying": False})
            if self.on_notify_change:
                self.on_notify_change(False)

    @method()
    def Confirm(self):  # bluezoo calls this after every value change
        pass

    @method()
    def AcquireWrite(self, options: "a{sv}") -> "hq":  # noqa: F821
        # Only used by bleak to learn the MTU; a real link would stream writes over the fd.
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fd = os.dup(a.fileno())
        a.close()
        b.close()
        return [fd, self.mtu]


class GattError(Exception):
    """Raised by a write handler to reject a write with a BlueZ error."""

    def __init__(self, message: str, dbus_name: str = "org.bluez.Error.Failed"):
        super().__init__(message)
        self.dbus_name = dbus_name


class Advertisement(ServiceInterface):
    def __init__(self, path: str, local_name: str, service_uuids: list[str],
                 manufacturer_data: dict[int, bytes] | None = None):
        super().__init__("org.bluez.LEAdvertisement1")
        self.path = path
        self._local_name = local_name
        self._uuids = [full_uuid(u) for u in service_uuids]
        self._mfr = dict(manufacturer_data or {})

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> "s":  # noqa: F821
        return "peripheral"

    @dbus_property(access=PropertyAccess.READ)
    def ServiceUUIDs(self) -> "as":  # noqa: F821
        return self._uuids

    @dbus_property(access=PropertyAccess.READ)
    def LocalName(self) -> "s":  # noqa: F821
        return self._local_name

    @dbus_property(access=PropertyAccess.READ)
    def ManufacturerData(self) -> "a{qv}":  # noqa: F821
        return {k: Variant("ay", v) for k, v in self._mfr.items()}

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> "b":  # noqa: F821
        return True

    @method()
    def Release(self):
        pass


class GattApplication:
    """Services + one advertisement, registered on one (emulated) adapter."""

    def __init__(self, adapter: str, root: str, local_name: str, advertised_uuids: list[str],
                 manufacturer_data: dict[int, bytes] | None = None):
        self.adapter = adapter
        self.root = root
        self.services: list[GattService] = []
        self.advertisement = Advertisement(f"{root}/adv0", local_name, advertised_uuids, manufacturer_data)
        self.bus: MessageBus | None = None
        self._n_chars = 0

    def add_service(self, uuid: str) -> GattService:
        svc = GattService(f"{self.root}/service{len(self.services):02d}", uuid)
        self.services.append(svc)
        return svc

    def add_characteristic(self, service: GattService, uuid: str, flags: list[str], **kw: Any) -> GattCharacteristic:
        self._n_chars += 1
        return GattCharacteristic(service, self._n_chars, uuid, flags, **kw)

    async def _call(self, path: str, interface: str, member: str, signature: str, body: list) -> Message:
        assert self.bus is not None
        reply = await self.bus.call(Message(destination=BLUEZ, path=path, interface=interface,
                                            member=member, signature=signature, body=body))
        if reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"{interface}.{member} on {path} failed: {reply.error_name}: {reply.body}")
        return reply

    async def register(self) -> None:
        self.bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
        for svc in self.services:
            self.bus.export(svc.path, svc)
            for ch in svc.characteristics:
                self.bus.export(ch.path, ch)
        self.bus.export(self.advertisement.path, self.advertisement)
        path = f"/org/bluez/{self.adapter}"
        await self._call(path, "org.bluez.GattManager1", "RegisterApplication", "oa{sv}", [self.root, {}])
        await self._call(path, "org.bluez.LEAdvertisingManager1", "RegisterAdvertisement", "oa{sv}",
                         [self.advertisement.path, {}])

    async def unregister(self) -> None:
        """Leave the bus: bluezoo drops the app and the advertisement (the link ends too)."""
        if self.bus is None:
            return
        path = f"/org/bluez/{self.adapter}"
        for iface, member, obj in (("org.bluez.LEAdvertisingManager1", "UnregisterAdvertisement",
                                    self.advertisement.path),
                                   ("org.bluez.GattManager1", "UnregisterApplication", self.root)):
            try:
                await self._call(path, iface, member, "o", [obj])
            except Exception:
                pass
        self.bus.disconnect()
        try:
            await self.bus.wait_for_disconnect()
        except Exception:
            pass
        self.bus = None
