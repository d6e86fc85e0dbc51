"""A virtual runform v1 IMU on the emulated BLE stack (dbus-fast GATT server + advertisement)."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import numpy as np

from .._types import STANDARD_GRAVITY_MS2
from ..protocols import runform_v1 as rf
from ._peripheral import VirtualPeripheral
from ._engine import SensorBehavior, StreamEngine
from ._gatt import GattApplication, GattError
from ._source import make_source

__all__ = ["VirtualSensor"]
log = logging.getLogger(__name__)

_SITE_CODE_OK = set(rf.SITE_CODES.values())


class VirtualSensor(VirtualPeripheral):
    """A runform v1 sensor worn by a simulated runner, served on one emulated adapter.

    It advertises the runform v1 service (name ``RF-<serial>``, battery in the manufacturer
    data), serves CONFIG, the control point (START/STOP/rate/range/gyro with indicated
    responses), Battery and Device Information, and streams DATA notifications from the
    runner simulator with the timing of `SensorBehavior` (connection-interval bursts, loss,
    drift, scripted link drops, clock reset, battery drain). Notifications flow only while
    the central is subscribed (after StartNotify) and streaming was started.

    Parameters
    ----------
    site
        Where the sensor is worn (``foot_left``, ``sacrum``...): picks the simulated signal.
    sampling_rate_hz, acc_range_g, gyro
        Initial settings (the central can change them through the control point).
    profile, segments, seed
        Runner simulation (`runform.firmware_bridge.simulator.RunnerProfile`, activity segments).
    behavior
        `SensorBehavior`.
    source_factory
        ``f(site, sampling_rate_hz, *, profile, segments, seed, clock_drift_ppm, range_g, gyro, tick_hz)``
        returning ``read(n) -> (acc_ms2, gyr_dps, time_s, sensor_tick)``; default: the runner simulator.
    auto_start
        Start streaming on the first subscription even without a START command (firmware that
        streams whenever notifications are on).
    protocol_version
        Version byte of CONFIG and DATA (a firmware of a future protocol version: 2).

    Attributes
    ----------
    address_ : str
        Bluetooth address (after `start`).
    engine_ : StreamEngine
        Counters (``packets_sent_``, ``packets_lost_air_``...) and the true sample times.
    host_offset_s_ : float
        Host monotonic time of simulator time 0 (true time of a sample = host_offset_s_ + time_s).
    """

    def __init__(self, site: str = "foot_left", *, sampling_rate_hz: float = 1000.0, acc_range_g: int = 16,
                 gyro: bool = True, samples_per_packet: int | None = None, profile=None, segments=None,
                 seed: int = 0, behavior: SensorBehavior | None = None, serial: str | None = None,
                 name: str | None = None, auto_start: bool = False, tick_hz: int = 32768,
                 source_factory=None, protocol_version: int = rf.PROTOCOL_VERSION):
        self.serial = serial or f"{seed:04d}"
        super().__init__(behavior, name or f"RF-{self.serial}", seed)
        self.site = site if site in _SITE_CODE_OK else "unknown"
        self.profile = profile
        self.segments = segments
        self.seed = seed
        self.auto_start = auto_start
        self.source_factory = source_factory or make_source
        self._samples_per_packet = samples_per_packet
        self.config = rf.SensorConfig(
            sampling_rate_hz=float(sampling_rate_hz), acc_range_g=int(acc_range_g),
            acc_scale_g_per_lsb=int(acc_range_g) / 32768.0, gyro_enabled=bool(gyro), gyr_range_dps=2000,
            gyr_scale_dps_per_lsb=2000.0 / 32768.0, tick_hz=int(tick_hz), firmware_version=(1, 0, 0),
            site=self.site, serial=self.serial[:16], streaming=False, protocol_version=int(protocol_version))
        self.engine_: StreamEngine | None = None
        self.host_offset_s_ = 0.0
        self._sim_time_s = 0.0
        self.commands_ = []  # (opcode, result) as answered

    # -- setup ------------------------------------------------------------------------------------
    def _build_app(self, adapter: str) -> GattApplication:
        root = f"/runform/sensor_{adapter}"
        app = GattApplication(adapter, root, self.name, [rf.SERVICE_UUID],
                              _manufacturer_data(self.behavior.battery_start_pct))
        mtu = self.behavior.mtu
        svc = app.add_service(rf.SERVICE_UUID)
        self.data_char = app.add_characteristic(svc, rf.DATA_UUID, ["notify"], mtu=mtu,
                                                on_notify_change=self._on_data_notify)
        self.control_char = app.add_characteristic(svc, rf.CONTROL_UUID, ["write", "write-without-response",
                                                                          "indicate"],
                                                   on_write=self._on_control, mtu=mtu)
        self.config_char = app.add_characteristic(svc, rf.CONFIG_UUID, ["read"], on_read=lambda: rf.encode_config(
            self.config), mtu=mtu)
        bsvc = app.add_service(rf.BATTERY_SERVICE_UUID)
        self.battery_char = app.add_characteristic(bsvc, rf.BATTERY_LEVEL_UUID, ["read", "notify"],
                                                   on_read=lambda: rf.encode_battery_level(self.battery_pct()))
        dsvc = app.add_service(rf.DEVICE_INFORMATION_SERVICE_UUID)
        for uuid, text in ((rf.MANUFACTURER_NAME_UUID, "runform"), (rf.MODEL_NUMBER_UUID, "RF-IMU virtual"),
                           (rf.SERIAL_NUMBER_UUID, self.serial), (rf.FIRMWARE_REVISION_UUID, "1.0.0"),
                           (rf.HARDWARE_REVISION_UUID, "emulated")):
            app.add_characteristic(dsvc, uuid, ["read"], value=text.encode())
        return app

    # stop / drop_link / battery_pct: VirtualPeripheral

    async def start(self, adapter: str, address: str | None = None):
        """Power on (again) on ``adapter``: not streaming, sequence counter and sensor clock from scratch (after
        `stop`, this is a power cycle: the central sees a restarted sensor)."""
        self.config = replace(self.config, streaming=False)
        self.engine_ = None
        self.streaming_since_s_ = None
        self.stopped_ = False
        return await super().start(adapter, address)

    @property
    def samples_per_packet(self) -> int:
        return self._samples_per_packet or rf.max_samples_per_packet(self.behavior.mtu, self.config.gyro_enabled)

    def _new_engine(self) -> StreamEngine:
        cfg = self.config
        source = self.source_factory(self.site if self.site != "unknown" else "sacrum", cfg.sampling_rate_hz,
                             profile=self.profile, segments=self.segments, seed=self.seed,
                             clock_drift_ppm=self.behavior.clock_drift_ppm, range_g=cfg.acc_range_g,
                             gyro=cfg.gyro_enabled, tick_hz=cfg.tick_hz)
        acc_k = 1.0 / (STANDARD_GRAVITY_MS2 * cfg.acc_scale_g_per_lsb)
        gyr_k = 1.0 / cfg.gyr_scale_dps_per_lsb
        state = {"mark": True}

        def encode(seq, first_tick, acc, gyr):
            acc_raw = np.clip(np.rint(acc * acc_k), -32768, 32767).astype(np.int16)
            gyr_raw = None if (gyr is None or not cfg.gyro_enabled) else np.clip(
                np.rint(gyr * gyr_k), -32768, 32767).astype(np.int16)
            mark, state["mark"] = state["mark"], False
            return rf.encode_data_packet(seq, first_tick, acc_raw, gyr_raw, config_mark=mark,
                                         version=cfg.protocol_version)

        return StreamEngine(source, encode, self.samples_per_packet, self.behavior, tick_hz=cfg.tick_hz)

    def _start_streaming(self) -> None:
        if self.config.streaming:
            return
        self.engine_ = self._new_engine()
        self.host_offset_s_ = time.monotonic()
        self.streaming_since_s_ = self.host_offset_s_
        self.config = replace(self.config, streaming=True)

    def _stop_streaming(self) -> None:
        self.config = replace(self.config, streaming=False)

    def _on_data_notify(self, on: bool) -> None:
        if not on and self.engine_ is not None:
            self.engine_.resume()  # a hung firmware (SensorBehavior.stall_at_s) recovers when the link closes
        if on and self.auto_start:
            self._start_streaming()

    def _on_control(self, value: bytes, with_response: bool) -> None:
        try:
            req = rf.decode_control_request(value)
        except Exception:
            op = value[0] if value else 0
            self._respond(op, rf.ResultCode.INVALID_PARAMETER)
            return
        op, R = req.opcode, rf.ResultCode
        cfg = self.config
        if op == rf.OpCode.START_STREAMING:
            self._start_streaming()
            self._respond(op, R.SUCCESS)
        elif op == rf.OpCode.STOP_STREAMING:
            self._stop_streaming()
            self._respond(op, R.SUCCESS)
        elif op == rf.OpCode.REQUEST_CONFIG:
            self._respond(op, R.SUCCESS, settings=rf.StreamSettings(cfg.sampling_rate_hz, cfg.acc_range_g,
                                                                    cfg.gyro_enabled))
        elif op in (rf.OpCode.SET_SAMPLING_RATE, rf.OpCode.SET_ACC_RANGE, rf.OpCode.SET_GYRO):
            if cfg.streaming:
                self._respond(op, R.BUSY)
            elif op == rf.OpCode.SET_SAMPLING_RATE:
                if req.value not in (100, 200, 400, 500, 800, 1000, 1600):
                    self._respond(op, R.INVALID_PARAMETER)
                else:
                    self.config = replace(cfg, sampling_rate_hz=float(req.value))
                    self._respond(op, R.SUCCESS)
            elif op == rf.OpCode.SET_ACC_RANGE:
                if req.value not in (2, 4, 8, 16, 32, 64, 100, 200):
                    self._respond(op, R.INVALID_PARAMETER)
                else:
                    self.config = replace(cfg, acc_range_g=int(req.value), acc_scale_g_per_lsb=req.value / 32768.0)
                    self._respond(op, R.SUCCESS)
            else:
                self.config = replace(cfg, gyro_enabled=bool(req.value))
                self._respond(op, R.SUCCESS)
        else:
            self._respond(op, R.OP_CODE_NOT_SUPPORTED)

    def _respond(self, op: int, result: int, settings=None) -> None:
        self.commands_.append((op, int(result)))
        data = rf.encode_control_response(op, result, settings=settings)
        # answer after the write returned, as an indication
        asyncio.get_running_loop().call_soon(self.control_char.notify, data)

    async def _radio_loop(self) -> None:
        b = self.behavior
        last_batt = None
        while True:
            eng = self.engine_
            interval = eng.next_interval_s() if eng else b.connection_interval_ms / 1000.0
            await asyncio.sleep(interval)
            now = time.monotonic()
            since_boot = now - self._t_boot
            if b.stop_at_s is not None and self.streaming_since_s_ is not None and \
                    now - self.streaming_since_s_ >= b.stop_at_s:
                asyncio.get_running_loop().create_task(self.stop())
                return
            if self._next_disconnect and self.streaming_since_s_ is not None and \
                    now - self.streaming_since_s_ >= self._next_disconnect[0]:
                self._next_disconnect.pop(0)
                await self.drop_link()
            if self.config.streaming and self.engine_ is not None:
                for pkt in self.engine_.connection_event(now - self.host_offset_s_, self.data_char.notifying):
                    self.data_char.notify(pkt.data)
            batt = self.battery_pct()
            if batt != last_batt and since_boot > 0:
                last_batt = batt
                self.battery_char.notify(rf.encode_battery_level(batt))

    # -- truth ---------------------------------------------------------------------------------------
    def true_time_s(self, seq: int) -> np.ndarray | None:
        """True host-monotonic times of the samples of packet ``seq`` (seq counted from the last START)."""
        if self.engine_ is None:
            return None
        t = self.engine_.true_times(seq)
        return None if t is None else t + self.host_offset_s_

    def stats(self) -> dict:
        e = self.engine_
        return {"name": self.name, "address": self.address_, "site": self.site, "streaming": self.config.streaming,
                "packets_sent": e.packets_sent_ if e else 0, "packets_lost_air": e.packets_lost_air_ if e else 0,
                "packets_unsent": e.packets_unsent_ if e else 0, "packets_overflow": e.packets_overflow_ if e else 0,
                "packets_malformed": e.packets_malformed_ if e else 0, "link_drops": self.link_drops_,
                "battery_pct": self.battery_pct()}


def _manufacturer_data(battery_pct: float) -> dict[int, bytes]:
    from ..ble._profiles import advert_manufacturer_data
    return advert_manufacturer_data(int(battery_pct))
