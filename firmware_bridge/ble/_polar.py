"""Polar PMD connection profile: Polar H10 / Verity Sense accelerometer streaming."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from bleak import BleakClient

from ._compat import MalformedPacketError, polar_pmd as pmd
from ._errors import BleError, ControlPointTimeoutError, SensorSetupError
from ._profiles import Profile, register_profile

__all__ = ["PolarPmdProfile", "POLAR_MODELS_PMD"]
log = logging.getLogger(__name__)

MODEL_NUMBER_UUID = "00002a24-0000-1000-8000-00805f9b34fb"
#: Advertised-name prefixes of Polar devices with PMD accelerometer streaming.
POLAR_MODELS_PMD = ("Polar H10", "Polar Sense", "Polar Verity", "Polar OH1")


class PolarPmdProfile(Profile):
    """Polar Measurement Data, ACC stream.

    Setup (as the Polar SDK does it): enable indications on the control point and notifications on the data
    characteristic before any command; READ the control point (feature map: is ACC there?); GET_SETTINGS ACC
    (the rates / ranges / resolutions this device offers); START ACC with the requested rate and range (default:
    the highest of each), resolution 16. Every command waits for its indicated response (``[F0, op, type,
    status, more, params]``; ``more`` continuations are joined); a failure raises `SensorSetupError` naming the
    PMD status (INVALID_SAMPLE_RATE, INVALID_MTU...). ALREADY_IN_STATE on START (an H10 keeps streaming when a
    previous app did not stop it) -> STOP, then START with our settings. The FACTOR of the START response goes
    into the decoder. A device-initiated "measurement stopped" indication (``01 ...``) is counted and the stream
    is started again; if that fails, the link is dropped and reconnected.

    Requested rates the device does not offer are an error (no silent substitution), listing what it offers.
    """

    kind = "polar_pmd"

    def __init__(self, spec):
        super().__init__(spec)
        self._responses: asyncio.Queue = asyncio.Queue(maxsize=16)
        self._cmd_lock = asyncio.Lock()
        self._client: BleakClient | None = None
        self._link = None
        self._forward: Callable | None = None
        self.features_: set[int] = set()
        self.available_: dict = {}
        self.settings_: dict | None = None
        self.factor_ = 1.0
        self.model_: str | None = None
        self.stream_stops_ = 0
        self.frames_before_start_ = 0
        self._restart_task: asyncio.Task | None = None

    # -- notifications ---------------------------------------------------------------------------------
    def _on_cp(self, _c, data: bytearray) -> None:
        data = bytes(data)
        if data[:1] == bytes([pmd.STOPPED_CODE]):
            self.stream_stops_ += 1
            link = self._link
            if link is not None:
                link._stats.extra["stream_stops"] = self.stream_stops_
                log.warning("%s: the sensor stopped the measurement (%s); starting it again", link.sensor_id,
                            data.hex())
                self._restart_task = asyncio.get_running_loop().create_task(self._restart(link))
            return
        try:
            resp = pmd.decode_control_response(data)
        except MalformedPacketError as exc:
            log.warning("polar_pmd: unexpected control-point indication %s: %s", data.hex(), exc.reason)
            return
        try:
            self._responses.put_nowait((resp, data))
        except asyncio.QueueFull:
            log.warning("polar_pmd: control-point response dropped (nobody waiting)")

    def _on_data(self, char, data: bytearray) -> None:
        if self._forward is None:
            self.frames_before_start_ += 1
            return
        self._forward(char, data)

    # -- commands --------------------------------------------------------------------------------------
    async def _request(self, link, payload: bytes) -> pmd.PmdControlResponse:
        """Write one command, wait for its response (joined over ``more`` continuations); no status check."""
        client = self._client
        assert client is not None
        op, mtype = payload[0], payload[1] & 0x3F
        timeout_s = link.command_timeout_s
        name = f"{pmd.OpCode(op).name if op in pmd.OpCode._value2member_map_ else op} type {mtype}"
        async with self._cmd_lock:
            while not self._responses.empty():
                self._responses.get_nowait()
            await client.write_gatt_char(pmd.CONTROL_UUID, payload, response=True)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            first = None
            params = b""
            while True:
                try:
                    resp, _raw = await asyncio.wait_for(self._responses.get(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    raise ControlPointTimeoutError(link.sensor_id, f"polar_pmd {name}", timeout_s) from None
                if first is None:
                    if resp.opcode != op or resp.measurement_type != mtype:
                        continue  # a late answer to something else
                    first = resp
                params += resp.params
                if not resp.more:
                    break
            return pmd.PmdControlResponse(first.opcode, first.measurement_type, first.status, False, params)

    def _fail(self, link, what: str, resp: pmd.PmdControlResponse) -> SensorSetupError:
        try:
            status = pmd.Status(resp.status).name
        except ValueError:
            status = f"status {resp.status}"
        hint = ""
        if resp.status == pmd.Status.INVALID_MTU:
            hint = f" (ATT MTU {self.mtu}; the H10 needs at least 232)"
        elif resp.status == pmd.Status.DEVICE_IN_CHARGER:
            hint = " (take it off the charger)"
        err = SensorSetupError(link.sensor_id, f"Polar {what} failed: {status}{hint}")
        err.status = resp.status
        return err

    def _start_payload(self) -> bytes:
        s = self.settings_
        return pmd.start_acc(int(s["sampling_rate_hz"]), int(s["range_g"]), int(s["resolution_bits"]))

    async def _start(self, link) -> None:
        resp = await self._request(link, self._start_payload())
        if resp.status == pmd.Status.ALREADY_IN_STATE:  # still streaming for someone before us: restart with ours
            await self._request(link, pmd.stop_acc())
            resp = await self._request(link, self._start_payload())
        if not resp.ok:
            raise self._fail(link, f"START ACC {self.settings_}", resp)
        factor = resp.settings.get(pmd.SettingType.FACTOR) if resp.params else None
        self.factor_ = float(factor[0]) if factor else 1.0

    async def _restart(self, link) -> None:
        try:
            await self._start(link)
        except Exception as exc:
            log.warning("%s: restarting the Polar stream failed (%s); reconnecting", link.sensor_id, exc)
            link._lost.set()

    # -- profile -----------------------------------------------------------------------------------------
    async def setup(self, link, client: BleakClient):
        self._client, self._link = client, link
        for uuid in (pmd.CONTROL_UUID, pmd.DATA_UUID):
            if client.services.get_characteristic(uuid) is None:
                raise SensorSetupError(link.sensor_id, f"Polar PMD characteristic {uuid} missing")
        if any("write-without-response" in c.properties for c in client.services.characteristics.values()):
            await self._acquire_mtu(link, client)   # never AcquireNotify: it would take the notifications away
        if client.services.get_characteristic(MODEL_NUMBER_UUID) is not None:
            try:
                self.model_ = bytes(await client.read_gatt_char(MODEL_NUMBER_UUID)).decode(errors="replace").strip()
            except Exception as exc:
                log.debug("%s: model number not readable: %s", link.sensor_id, exc)
        await client.start_notify(pmd.CONTROL_UUID, self._on_cp)
        await client.start_notify(pmd.DATA_UUID, self._on_data)
        try:
            self.features_ = pmd.decode_features(await client.read_gatt_char(pmd.CONTROL_UUID))
        except MalformedPacketError as exc:
            raise SensorSetupError(link.sensor_id, f"Polar PMD feature map unreadable: {exc.reason}") from None
        if pmd.MeasurementType.ACC not in self.features_:
            names = sorted(pmd.MeasurementType(t).name for t in self.features_ if t in pmd.MeasurementType._value2member_map_)
            raise SensorSetupError(link.sensor_id, f"this Polar device has no accelerometer stream (offers {names})")
        resp = await self._request(link, pmd.get_acc_settings())
        if not resp.ok:
            raise self._fail(link, "GET_SETTINGS ACC", resp)
        T = pmd.SettingType
        self.available_ = av = resp.settings
        rates = sorted(av.get(T.SAMPLE_RATE, ()))
        ranges = sorted(av.get(T.RANGE, ()))
        resolutions = sorted(av.get(T.RESOLUTION, (16,)))
        spec = self.spec
        rate = rates[-1] if spec.sampling_rate_hz is None else spec.sampling_rate_hz
        if not rates or int(round(rate)) not in rates:
            raise SensorSetupError(link.sensor_id, f"Polar ACC at {rate:g} Hz is not offered; available: {rates} Hz")
        rng = ranges[-1] if spec.range_g is None else spec.range_g
        if not ranges or int(round(rng)) not in ranges:
            raise SensorSetupError(link.sensor_id, f"Polar ACC range ±{rng:g} g is not offered; available: {ranges} g")
        if spec.gyro:
            log.warning("%s: gyro requested, but the Polar profile streams ACC only", link.sensor_id)
        self.settings_ = {"sampling_rate_hz": int(round(rate)), "range_g": int(round(rng)),
                          "resolution_bits": 16 if 16 in resolutions else resolutions[-1]}
        await self._start(link)
        await self._read_battery(link, client)
        link._stats.extra["polar_model"] = self.model_
        return pmd.PolarPmd(self.settings_["sampling_rate_hz"], self.settings_["range_g"],
                            self.settings_["resolution_bits"], self.factor_, self.model_ or "Polar")

    async def start_streaming(self, link, client: BleakClient, on_data: Callable) -> None:
        self._forward = on_data   # subscribed and started in setup (the SDK's order)

    async def stop_streaming(self, link, client: BleakClient) -> None:
        self._forward = None
        await self._request(link, pmd.stop_acc())
        await client.stop_notify(pmd.DATA_UUID)

    async def command(self, link, command: str, **params: Any) -> Any:
        """``"start"``, ``"stop"`` (ACC stream), ``"get_settings"`` / ``"request_config"`` (what the device
        offers: ``{SettingType: values}``), ``"features"`` (measurement types)."""
        if command == "start":
            return await self._start(link)
        if command == "stop":
            resp = await self._request(link, pmd.stop_acc())
            return resp.raise_for_status()
        if command in ("get_settings", "request_config"):
            return (await self._request(link, pmd.get_acc_settings())).raise_for_status().settings
        if command == "features":
            return set(self.features_)
        raise BleError(f"{link.sensor_id}: unknown Polar command {command!r}; known: "
                       "['features', 'get_settings', 'request_config', 'start', 'stop']")


register_profile(PolarPmdProfile)
