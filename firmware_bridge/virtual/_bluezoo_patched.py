"""Start bluezoo (BlueZ D-Bus emulator) with the fixes runform's tests need.

Run as its own process (``python -m runform.firmware_bridge.virtual._bluezoo_patched``);
bluezoo is GPL-2.0-only and is only *imported here*, in a separate process used at
test/development time, never by the runform package itself.

The fixes (see docs/ble.md, "BLE emulator") for bluezoo 1.0.2 with bleak 3.1:

1. ``Device1.ManufacturerData`` is declared ``a{sv}``; BlueZ uses ``a{qv}``.
2. Advertisements are reported once per bluezoo lifetime; toggle RSSI on every scan
   tick so each new scanner sees the peripherals again.
3. After a disconnect the mirrored GATT objects stay exported (reconnect fails with
   EEXIST) and a peripheral-side disconnect never reaches the central; tie both link
   ends together and tear the mirrored GATT tree down on disconnect.
4. bleak picks a random powered "central" adapter; only hci0 advertises the central role.

On top of those, the process prints ``READY <adapter paths>`` on stdout once every
adapter is powered, so the parent needs no D-Bus polling.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys


def apply_fixes() -> None:
    import bluezoo.adapter
    import bluezoo.device

    D = bluezoo.device.Device

    # Fix 1: manufacturer data signature.
    D.ManufacturerData.property_signature = "a{qv}"

    # Fix 2: re-announce adverts on every scan tick.
    D.RSSI.setter_private(lambda self, v: setattr(self, "rssi", v))
    _sync = D.properties_sync

    async def properties_sync(self, other):
        await _sync(self, other)
        await self.RSSI.set_async(-60 if self.rssi != -60 else -61)

    D.properties_sync = properties_sync

    # Fix 3: both link ends tied together; GATT mirror removed on disconnect.
    _conn, _disc = D.connect, D.disconnect

    async def connect(self, uuid=None):
        await _conn(self, uuid)
        self.peer.peer = self

    async def disconnect(self, uuid=None):
        await _disc(self, uuid)
        peers = [self] + ([self.peer] if self.peer is not None else [])
        for dev in peers:
            for link in reversed(list(dev.services.values())):
                if hasattr(link, "client_props_changed_subscription"):
                    link.client_props_changed_subscription.unsubscribe()
                    try:
                        if link.client.Notifying.get(False):
                            await link.client.StopNotify()
                    except Exception:  # the app may be gone already
                        pass
                try:
                    dev.peer_adapter.mock.remove_object(link)
                except KeyError:
                    pass
            dev.services.clear()
            if dev.services_resolved:
                await dev.ServicesResolved.set_async(False)

    D.connect, D.disconnect = connect, disconnect

    # Fix 4: only hci0 is a central.
    bluezoo.adapter.Adapter.Roles.property_getter = (
        lambda self: ["central", "peripheral", "central-peripheral"] if self.id == 0 else ["peripheral"]
    )
    # Initial RSSI of a freshly discovered device: a plausible value instead of 0.
    _init = D.__init__

    def __init__(self, peer_adapter, **kwargs):
        _init(self, peer_adapter, **kwargs)
        self.rssi = -60

    D.__init__ = __init__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bluezoo 1.0.2 with runform's fixes")
    parser.add_argument("--scan-interval", type=int, default=1)
    parser.add_argument("-a", "--adapter", dest="adapters", action="append", default=[])
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose, stream=sys.stderr)

    import bluezoo.bluezoo as bz
    from bluezoo.utils import BluetoothAddress

    apply_fixes()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(
        bz.startup(
            bus="system",
            adapters=[BluetoothAddress(a) for a in args.adapters],
            auto_enable=True,
            scan_interval=args.scan_interval,
        )
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    paths = " ".join(f"/org/bluez/hci{i}" for i in range(len(args.adapters)))
    sys.stdout.write(f"READY {paths}\n")
    sys.stdout.flush()
    loop.run_until_complete(stop.wait())
    return 0


if __name__ == "__main__":
    sys.exit(main())
