"""A virtual Polar H10 / Verity Sense streaming accelerometer data over PMD (Polar Measurement Data)."""
from __future__ import annotations

import asyncio
import bisect
import collections
import logging
import time

import numpy as np

from .._types import STANDARD_GRAVITY_MS2
from ..protocols import polar_pmd as pmd
from ._engine import SensorBehavior, StreamEngine
from ._gatt import GattApplication
from ._peripheral import VirtualPeripheral, add_device_information
from ._source import make_source

__all__ = ["VirtualPolarSensor", "POLAR_COMPANY_ID", "POLAR_MODELS"]
log = logging.getLogger(__name__)

#: Bluetooth SIG company identifier of Polar Electro Oy.
POLAR_COMPANY_ID = 0x006B
HEART_RATE_SERVICE = "0000180d-0000-1000-8000-00805f9b34fb"
POLAR_SERVICE_16 = "0000feee-0000-1000-8000-00805f9b34fb"
#: Polar's file-transfer service (PSFTP); its MTU characteristic is write-without-response (BlueZ AcquireWrite).
PSFTP_SERVICE = "fb005c50-02e7-f387-1cad-8acd2d8df0c8"
PSFTP_MTU_CHAR = "fb005c51-02e7-f387-1cad-8acd2d8df0c8"

#: What each model offers for online ACC (see /work/shared/reference/sensor_protocols.md §3).
POLAR_MODELS = {
    "H10": dict(name="Polar H10", model="H10", rates=(25, 50, 100, 200), ranges=(2, 4, 8), compressed=False,
                min_mtu=232),
    "Verity Sense": dict(name="Polar Sense", model="Polar Verity Sense", rates=(26, 52, 104, 208, 416),
                         ranges=(2, 4, 8, 16), compressed=True, min_mtu=70),
}
_EPOCH_2000_S = pmd.POLAR_EPOCH_UNIX_S


def _frame_samples(mtu: int, compressed: bool, range_g: int) -> int:
    """Samples per ACC frame that always fit one notification (ATT payload = MTU - 3)."""
    room = mtu - 3 - 10
    if not compressed:
        return max(1, room // 6)
    # worst case: every delta as wide as the full range allows, 32 deltas per block (2-byte block header)
    bits = (2 * int(range_g) * 1000).bit_length() + 1
    n = 1
    while True:
        d = n  # deltas in a frame of n + 1 samples
        size = 6 + 2 * -(-d // 32) + -(-(d * 3 * bits) // 8)
        if size > room:
            return n
        n += 1


class VirtualPolarSensor(VirtualPeripheral):
    """A Polar H10 (chest strap) or Verity Sense (arm band) streaming ACC over PMD on one emulated adapter.

    GATT: PMD service (control point: read = feature map, write = commands, responses as indications; data:
    notifications), Polar's PSFTP service (its write-without-response characteristic gives BlueZ the MTU),
    Battery and Device Information; advertised as ``Polar H10 <id>`` / ``Polar Sense <id>`` with the Heart Rate
    and Polar 16-bit service UUIDs and Polar's company id in the manufacturer data (no PMD UUID: it does not fit
    the 31-byte advertisement, as on the real devices).

    Control point: GET_SETTINGS ACC (rates, resolution 16, ranges of the model), START ACC with rate / resolution /
    range (checked: INVALID_SAMPLE_RATE, INVALID_RANGE, INVALID_RESOLUTION, INVALID_MTU below the model's minimum,
    ALREADY_IN_STATE), STOP ACC. The START response carries a FACTOR setting (1.0). Streaming ends with the link
    (the central starts it again after reconnecting); what the sensor sampled meanwhile never reaches the host
    (a gap in the timestamps).

    Frames: ``u8 type | u64 ns since 2000 of the LAST sample | frame type | samples`` in mG, raw 16-bit (H10)
    or delta-compressed (Verity Sense, or ``compressed=True``), ``samples_per_frame`` samples (default: what
    always fits the MTU), released in connection-interval bursts by the shared `StreamEngine` (loss, drift,
    link drops, clock steps via `SensorBehavior`). The sensor clock is an RTC set to wall time
    (``rtc_error_s`` off) that drifts by ``behavior.clock_drift_ppm``.

    Attributes
    ----------
    engine_ : StreamEngine | None        counters and true sample times
    host_offset_s_ : float               host monotonic time of simulator time 0
    commands_ : list[tuple[int, int, int]]   (opcode, measurement type, status) as answered
    """

    def __init__(self, site: str = "sacrum", *, model: str = "H10", sampling_rate_hz: float | None = None,
                 range_g: int | None = None, compressed: bool | None = None, samples_per_frame: int | None = None,
                 profile=None, segments=None, seed: int = 0, behavior: SensorBehavior | None = None,
                 serial: str | None = None, name: str | None = None, rtc_error_s: float = 1.5,
                 source_factory=None):
        if model not in POLAR_MODELS:
            raise ValueError(f"model must be one of {sorted(POLAR_MODELS)}, got {model!r}")
        self.spec = POLAR_MODELS[model]
        self.model = model
        self.serial = serial or f"{0x0A100000 + seed:08X}"
        super().__init__(behavior, name or f"{self.spec['name']} {self.serial}", seed)
        self.site = site
        self.profile, self.segments, self.seed = profile, segments, seed
        self.source_factory = source_factory or make_source
        self.compressed = self.spec["compressed"] if compressed is None else bool(compressed)
        self._samples_per_frame = samples_per_frame
        self.sampling_rate_hz = float(sampling_rate_hz or self.spec["rates"][-1])
        self.range_g = int(range_g or 8)
        self.rtc_offset_ns = int(round((time.time() - _EPOCH_2000_S + rtc_error_s) * 1e9))
        self.streaming = False
        self.engine_: StreamEngine | None = None
        self.host_offset_s_ = 0.0
        self.commands_: list[tuple[int, int, int]] = []
        self._engine_settings = None
        self._first_ticks: collections.deque = collections.deque(maxlen=200_000)  # (first tick ns, seq)

    # -- GATT ------------------------------------------------------------------------------------------
    def _build_app(self, adapter: str) -> GattApplication:
        app = GattApplication(adapter, f"/runform/polar_{adapter}", self.name, [HEART_RATE_SERVICE, POLAR_SERVICE_16],
                              {POLAR_COMPANY_ID: bytes([0x3F, 0x00, 0x00])})
        mtu = self.behavior.mtu
        svc = app.add_service(pmd.SERVICE_UUID)
        self.cp_char = app.add_characteristic(svc, pmd.CONTROL_UUID, ["read", "write", "indicate"], mtu=mtu,
                                              on_read=lambda: pmd.encode_features([pmd.MeasurementType.ACC]),
                                              on_write=self._on_control)
        self.data_char = app.add_characteristic(svc, pmd.DATA_UUID, ["notify"], mtu=mtu,
                                                on_notify_change=self._on_data_notify)
        ftp = app.add_service(PSFTP_SERVICE)
        app.add_characteristic(ftp, PSFTP_MTU_CHAR, ["write", "write-without-response", "notify"], mtu=mtu,
                               on_write=lambda value, with_response: None)
        self._add_battery(app)
        add_device_information(app, manufacturer="Polar Electro Oy", model=self.spec["model"], serial=self.serial,
                               firmware="3.3.0 (virtual)")
        return app

    @property
    def samples_per_frame(self) -> int:
        return self._samples_per_frame or _frame_samples(self.behavior.mtu, self.compressed, self.range_g)

    # -- control point ---------------------------------------------------------------------------------
    def _on_control(self, value: bytes, with_response: bool) -> None:
        S = pmd.Status
        try:
            req = pmd.decode_control_request(value)
        except Exception:
            op = value[0] if value else 0
            mtype = value[1] & 0x3F if len(value) > 1 else 0
            self._respond(op, mtype, S.INVALID_LENGTH)
            return
        op, mtype = req.opcode, req.measurement_type
        if op not in (pmd.OpCode.GET_SETTINGS, pmd.OpCode.START, pmd.OpCode.STOP):
            self._respond(op, mtype, S.INVALID_OP_CODE if op > 5 else S.NOT_SUPPORTED)
            return
        if mtype != pmd.MeasurementType.ACC:
            self._respond(op, mtype, S.NOT_SUPPORTED)
            return
        if op == pmd.OpCode.GET_SETTINGS:
            params = pmd.encode_settings({pmd.SettingType.SAMPLE_RATE: list(self.spec["rates"]),
                                          pmd.SettingType.RESOLUTION: [16],
                                          pmd.SettingType.RANGE: list(self.spec["ranges"])})
            self._respond(op, mtype, S.SUCCESS, params)
        elif op == pmd.OpCode.STOP:
            if not self.streaming:
                self._respond(op, mtype, S.ALREADY_IN_STATE)
            else:
                self.streaming = False
                self._respond(op, mtype, S.SUCCESS)
        else:
            self._start(req)

    def _start(self, req) -> None:
        S, T = pmd.Status, pmd.SettingType
        st = req.settings
        rate = st.get(T.SAMPLE_RATE, (None,))[0]
        rng = st.get(T.RANGE, (None,))[0]
        res = st.get(T.RESOLUTION, (16,))[0]
        op, mtype = pmd.OpCode.START, pmd.MeasurementType.ACC
        if self.streaming:
            return self._respond(op, mtype, S.ALREADY_IN_STATE)
        if self.behavior.mtu < self.spec["min_mtu"]:
            return self._respond(op, mtype, S.INVALID_MTU)
        if rate not in self.spec["rates"]:
            return self._respond(op, mtype, S.INVALID_SAMPLE_RATE)
        if rng not in self.spec["ranges"]:
            return self._respond(op, mtype, S.INVALID_RANGE)
        if res != 16:
            return self._respond(op, mtype, S.INVALID_RESOLUTION)
        self.sampling_rate_hz, self.range_g = float(rate), int(rng)
        settings = (self.sampling_rate_hz, self.range_g)
        if self.engine_ is None or settings != self._engine_settings:
            self.engine_ = self._new_engine()
            self._engine_settings = settings
            self.host_offset_s_ = time.monotonic()
            self._first_ticks.clear()
        if self.streaming_since_s_ is None:
            self.streaming_since_s_ = time.monotonic()
        self.streaming = True
        self._respond(op, mtype, S.SUCCESS, pmd.encode_settings({T.FACTOR: 1.0}))

    def _respond(self, op: int, mtype: int, status: int, params: bytes = b"") -> None:
        self.commands_.append((int(op), int(mtype), int(status)))
        asyncio.get_running_loop().call_soon(self.cp_char.notify,
                                             pmd.encode_control_response(op, mtype, status, params))

    def _on_data_notify(self, on: bool) -> None:
        if not on:
            self.streaming = False  # the online stream ends with the subscription / the link

    # -- samples -----------------------------------------------------------------------------------------
    def _new_engine(self) -> StreamEngine:
        source = self.source_factory(self.site, self.sampling_rate_hz, profile=self.profile, segments=self.segments,
                                     seed=self.seed, clock_drift_ppm=self.behavior.clock_drift_ppm,
                                     range_g=self.range_g, gyro=False, tick_hz=1_000_000_000)
        k = 1000.0 / STANDARD_GRAVITY_MS2
        lim = self.range_g * 1000
        n = self.samples_per_frame

        def encode_frame(seq, ticks, acc, gyr):
            mg = np.clip(np.rint(acc * k), -lim, lim).astype(np.int64)
            self._first_ticks.append((self.rtc_offset_ns + int(ticks[0]), seq))
            return pmd.encode_frame(mg, self.rtc_offset_ns + int(ticks[-1]), compressed=self.compressed,
                                    frame_type=1)

        return StreamEngine(source, encode_frame, n, self.behavior, tick_hz=1e9, encoder_ticks=True)

    def _next_interval_s(self) -> float:
        return self.engine_.next_interval_s() if self.engine_ else super()._next_interval_s()

    def _on_event(self, now_s: float) -> None:
        eng = self.engine_
        if eng is None:
            return
        # while not streaming the sensor does not measure for the host: the engine runs on unsubscribed
        for pkt in eng.connection_event(now_s - self.host_offset_s_, self.streaming and self.data_char.notifying):
            self.data_char.notify(pkt.data)

    # -- truth -------------------------------------------------------------------------------------------
    def true_time_s(self, seq: int) -> np.ndarray | None:
        """True host-monotonic times of the samples of frame ``seq`` (frames counted by the sensor)."""
        t = None if self.engine_ is None else self.engine_.true_times(seq)
        return None if t is None else t + self.host_offset_s_

    def seq_for_tick(self, first_tick_ns: int, tolerance_ns: int | None = None) -> int | None:
        """The frame whose first sample carries (about) this sensor tick (ns since 2000), e.g. a SampleBlock's
        ``first_tick``; None if none within ``tolerance_ns`` (default: half a sample period)."""
        tol = tolerance_ns if tolerance_ns is not None else int(0.5e9 / self.sampling_rate_hz)
        ticks = [t for t, _ in self._first_ticks]
        i = bisect.bisect_left(ticks, first_tick_ns)
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(ticks) and abs(ticks[j] - first_tick_ns) <= tol:
                if best is None or abs(ticks[j] - first_tick_ns) < abs(ticks[best] - first_tick_ns):
                    best = j
        return None if best is None else self._first_ticks[best][1]

    def stats(self) -> dict:
        e = self.engine_
        return {"name": self.name, "address": self.address_, "site": self.site, "kind": "polar_pmd",
                "model": self.model, "streaming": self.streaming, "sampling_rate_hz": self.sampling_rate_hz,
                "range_g": self.range_g, "samples_per_frame": self.samples_per_frame,
                "packets_sent": e.packets_sent_ if e else 0, "packets_lost_air": e.packets_lost_air_ if e else 0,
                "packets_unsent": e.packets_unsent_ if e else 0, "link_drops": self.link_drops_,
                "battery_pct": self.battery_pct()}
