"""An in-process bleak backend (scanner + client) for fast unit tests of the link logic.

It behaves like the emulated stack: advertisements, GATT (runform v1 CONFIG / control point /
DATA / battery), notifications released in connection-interval bursts by the same
`StreamEngine` the virtual sensors use (so loss, drift and clock resets match), connect
failures on demand and link loss through bleak's disconnected callback. ``FakeAir.max_radio_ops`` is the
largest number of scans/connects that were ever in progress at once (BlueZ wants one at a time).
"""
from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError

from runform.firmware_bridge._types import STANDARD_GRAVITY_MS2
from runform.firmware_bridge.protocols import runform_v1 as rf
from runform.firmware_bridge.virtual import SensorBehavior, StreamEngine

from ._synth import synthetic_source

BATTERY = "00002a19-0000-1000-8000-00805f9b34fb"
HEART_RATE = "0000180d-0000-1000-8000-00805f9b34fb"


class FakePeripheral:
    def __init__(self, address, name, *, behavior=None, spp=20, rate_hz=1000.0, fail_connects=0,
                 heart_rate_only=False, protocol_version=rf.PROTOCOL_VERSION):
        self.address = address
        self.name = name
        self.behavior = behavior or SensorBehavior(connection_interval_ms=7.5)
        self.spp = spp
        self.config = rf.SensorConfig(sampling_rate_hz=rate_hz, acc_range_g=16, acc_scale_g_per_lsb=16 / 32768,
                                      tick_hz=32768, site="foot_left", protocol_version=protocol_version)
        self.heart_rate_only = heart_rate_only  # a plain heart-rate strap: no runform service
        self.fail_connects = fail_connects
        self.advertising = True
        self.client: FakeClient | None = None
        self.connect_attempts = 0
        self.engine: StreamEngine | None = None

    def start_engine(self):
        cfg = self.config
        src = synthetic_source("foot_left", cfg.sampling_rate_hz, clock_drift_ppm=self.behavior.clock_drift_ppm)
        k = 1.0 / (STANDARD_GRAVITY_MS2 * cfg.acc_scale_g_per_lsb)

        def enc(seq, tick, acc, gyr):
            return rf.encode_data_packet(seq, tick, np.clip(np.rint(acc * k), -32768, 32767).astype(np.int16),
                                         np.clip(np.rint(gyr / cfg.gyr_scale_dps_per_lsb), -32768, 32767)
                                         .astype(np.int16))
        self.engine = StreamEngine(src, enc, self.spp, self.behavior)
        self.t0 = asyncio.get_running_loop().time()

    def drop_link(self):
        if self.client is not None:
            self.client._lost()

    def inject(self, raw: bytes) -> bool:
        """Notify ``raw`` on DATA now (a packet the firmware got wrong); False if nobody is subscribed."""
        cb = self.client._notify.get(rf.DATA_UUID) if self.client is not None else None
        if cb is None:
            return False
        cb(bytearray(raw))
        return True


class FakeAir:
    """The set of fake peripherals in range."""
    peripherals: dict[str, FakePeripheral] = {}
    radio_ops = 0  #: scans + connects in progress now
    max_radio_ops = 0

    @classmethod
    def reset(cls, *peripherals):
        cls.peripherals = {p.address: p for p in peripherals}
        cls.radio_ops = cls.max_radio_ops = 0

    @classmethod
    def op_begin(cls):
        cls.radio_ops += 1
        cls.max_radio_ops = max(cls.max_radio_ops, cls.radio_ops)

    @classmethod
    def op_end(cls):
        cls.radio_ops -= 1


class FakeScanner(BaseBleakScanner):
    def __init__(self, detection_callback, service_uuids, scanning_mode="active", **kw):
        super().__init__(detection_callback, service_uuids)
        self._task = None

    async def start(self):
        self.seen_devices = {}
        FakeAir.op_begin()

        async def adverts():
            while True:
                for p in list(FakeAir.peripherals.values()):
                    if not p.advertising or p.client is not None:
                        continue
                    adv = AdvertisementData(local_name=p.name, manufacturer_data={}, service_data={},
                                            service_uuids=[HEART_RATE if p.heart_rate_only else rf.SERVICE_UUID],
                                            tx_power=None, rssi=-55,
                                            platform_data=())
                    if self.is_allowed_uuid(adv.service_uuids):
                        d = self.create_or_update_device(p.address, p.address, p.name, None, adv)
                        self.call_detection_callbacks(d, adv)
                await asyncio.sleep(0.05)
        self._task = asyncio.create_task(adverts())

    async def stop(self):
        if self._task:
            self._task.cancel()
            self._task = None
            FakeAir.op_end()

    def set_scanning_filter(self, **kw):
        pass


class FakeClient(BaseBleakClient):
    def __init__(self, address_or_ble_device, **kw):
        super().__init__(address_or_ble_device, **kw)
        self._connected = False
        self._notify = {}
        self._task = None
        self.p: FakePeripheral | None = None

    @property
    def mtu_size(self):
        return 247

    async def connect(self, pair=False, **kw):
        p = FakeAir.peripherals.get(self.address)
        if p is None or not p.advertising:
            raise BleakDeviceNotFoundError(self.address)
        p.connect_attempts += 1
        FakeAir.op_begin()
        try:
            await asyncio.sleep(0.01)  # connecting takes a while: overlapping radio operations would show
            if p.fail_connects > 0:
                p.fail_connects -= 1
                raise BleakError(f"fake: connection to {self.address} failed (le-connection-abort-by-local)")
        finally:
            FakeAir.op_end()
        self.p, p.client, self._connected = p, self, True
        sc = BleakGATTServiceCollection()
        if p.heart_rate_only:
            sc.add_service(BleakGATTService(None, 1, HEART_RATE))
            self.services = sc
            return
        svc = BleakGATTService(None, 1, rf.SERVICE_UUID)
        sc.add_service(svc)
        for h, (uuid, props) in enumerate([(rf.DATA_UUID, ["notify"]), (rf.CONTROL_UUID, ["write", "indicate"]),
                                           (rf.CONFIG_UUID, ["read"])], start=2):
            sc.add_characteristic(BleakGATTCharacteristic(None, h, uuid, props, lambda: 244, svc))
        bsvc = BleakGATTService(None, 10, rf.BATTERY_SERVICE_UUID)
        sc.add_service(bsvc)
        sc.add_characteristic(BleakGATTCharacteristic(None, 11, BATTERY, ["read", "notify"], lambda: 244, bsvc))
        self.services = sc

    def _lost(self):
        if self._connected:
            self._teardown()
            self._disconnected_callback()

    def _teardown(self):
        self._connected = False
        if self._task:
            self._task.cancel()
        if self.p is not None:
            self.p.client = None
            if self.p.engine is not None:
                self.p.engine.resume()  # a hung firmware (SensorBehavior.stall_at_s) recovers when the link ends

    async def disconnect(self):
        self._teardown()
        return True

    async def pair(self, *a, **k):
        pass

    async def unpair(self):
        pass

    @property
    def is_connected(self):
        return self._connected

    async def read_gatt_char(self, char, **kw):
        if char.uuid == rf.CONFIG_UUID:
            return bytearray(rf.encode_config(self.p.config))
        if char.uuid == BATTERY:
            return bytearray([77])
        raise BleakError("not readable")

    async def read_gatt_descriptor(self, desc, **kw):
        raise BleakError("no descriptors")

    async def write_gatt_char(self, char, data, response):
        p = self.p
        req = rf.decode_control_request(bytes(data))
        if req.opcode == rf.OpCode.START_STREAMING and not p.config.streaming:
            p.config = replace(p.config, streaming=True)
            p.start_engine()
            self._task = asyncio.create_task(self._radio())
        elif req.opcode == rf.OpCode.STOP_STREAMING:
            p.config = replace(p.config, streaming=False)
        cb = self._notify.get(rf.CONTROL_UUID)
        if cb:
            asyncio.get_running_loop().call_soon(cb, bytearray(rf.encode_control_response(req.opcode, 1)))

    async def write_gatt_descriptor(self, desc, data):
        raise BleakError("no descriptors")

    async def start_notify(self, char, callback, **kw):
        self._notify[char.uuid] = callback
        if char.uuid == rf.DATA_UUID and self.p.config.streaming and self._task is None:
            # what the sensor sampled while nobody listened is gone (as on the real stack)
            self.p.engine.connection_event(asyncio.get_running_loop().time() - self.p.t0, False)
            self._task = asyncio.create_task(self._radio())

    async def stop_notify(self, char):
        self._notify.pop(char.uuid, None)

    async def _radio(self):
        p = self.p
        loop = asyncio.get_running_loop()
        t0 = p.t0
        while self._connected:
            await asyncio.sleep(p.engine.next_interval_s())
            cb = self._notify.get(rf.DATA_UUID)
            for pkt in p.engine.connection_event(loop.time() - t0, cb is not None):
                cb(bytearray(pkt.data))
