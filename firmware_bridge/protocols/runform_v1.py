"""runform open sensor protocol, version 1: a high-rate (100–1600 Hz) IMU for shoe, shin or hip.

The byte-level specification is docs/sensor-protocol.md; this module is its reference encoder and decoder
(sensor side and host side). Everything little-endian.

Service ``84750001-3498-45d0-baaa-0d7f472598f5`` with three characteristics (same base, 16-bit alias in
bytes 2–3):

* DATA ``…0002`` (notify): ``u8 version | u8 flags | u16 seq | u32 tick of first sample | n × sample``;
  a sample is ``3 × s16`` acceleration, followed by ``3 × s16`` angular rate when flags bit 0 is set;
  ``n = (len − 8) / sample size``.
* CONTROL POINT ``…0003`` (write + indicate): ``u8 opcode | params`` -> ``0x80 | u8 opcode | u8 result | params``.
* CONFIG ``…0004`` (read): version, rate, ranges and scales, tick rate, firmware version, site, serial.
"""
from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import ControlPointError, MalformedPacketError, UnsupportedVersionError
from .._types import STANDARD_GRAVITY_MS2, SamplePacket
from ._base import SensorProtocol, register, sig_uuid

__all__ = [
    "PROTOCOL_VERSION", "SUPPORTED_VERSIONS", "BASE_UUID", "SERVICE_UUID", "DATA_UUID", "CONTROL_UUID",
    "CONFIG_UUID", "BATTERY_SERVICE_UUID", "BATTERY_LEVEL_UUID", "DEVICE_INFORMATION_SERVICE_UUID",
    "MANUFACTURER_NAME_UUID", "MODEL_NUMBER_UUID", "SERIAL_NUMBER_UUID", "FIRMWARE_REVISION_UUID",
    "HARDWARE_REVISION_UUID", "HEADER_SIZE", "MAX_ATT_VALUE_SIZE", "MAX_ACC_RANGE_G",
    "Flags", "ConfigFlags", "OpCode", "ResultCode", "SITE_CODES",
    "DataPacket", "SensorConfig", "ControlRequest", "ControlResponse", "StreamSettings",
    "encode_data_packet", "decode_data_packet", "max_samples_per_packet", "packetize",
    "encode_config", "decode_config",
    "encode_control_request", "decode_control_request", "encode_control_response", "decode_control_response",
    "start_streaming", "stop_streaming", "set_sampling_rate", "set_acc_range", "set_gyro", "request_config",
    "encode_battery_level", "decode_battery_level",
    "RunformV1",
]

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
KIND = "runform_v1"

#: Fixed random base (uuid4 drawn once for runform); the 16-bit alias goes in place of ``xxxx``.
BASE_UUID = "8475xxxx-3498-45d0-baaa-0d7f472598f5"


def _uuid(alias: int) -> str:
    return BASE_UUID.replace("xxxx", f"{alias:04x}")


SERVICE_UUID = _uuid(0x0001)
DATA_UUID = _uuid(0x0002)
CONTROL_UUID = _uuid(0x0003)
CONFIG_UUID = _uuid(0x0004)
BATTERY_SERVICE_UUID = sig_uuid(0x180F)
BATTERY_LEVEL_UUID = sig_uuid(0x2A19)
DEVICE_INFORMATION_SERVICE_UUID = sig_uuid(0x180A)
MANUFACTURER_NAME_UUID = sig_uuid(0x2A29)
MODEL_NUMBER_UUID = sig_uuid(0x2A24)
SERIAL_NUMBER_UUID = sig_uuid(0x2A25)
HARDWARE_REVISION_UUID = sig_uuid(0x2A27)
FIRMWARE_REVISION_UUID = sig_uuid(0x2A26)

HEADER_SIZE = 8
MAX_ATT_VALUE_SIZE = 512          # Core spec: an attribute value is at most 512 bytes
MAX_ACC_RANGE_G = 200
MAX_SERIAL_LEN = 16
CONFIG_FIXED_SIZE = 28
_HEADER = struct.Struct("<BBHI")
_CONFIG = struct.Struct("<BBIHfHfIBBHBB")   # 28 bytes, serial follows
assert _CONFIG.size == CONFIG_FIXED_SIZE


class Flags(enum.IntFlag):
    """DATA packet flags (byte 1). Bits 4–7 are reserved: sent as 0, ignored by version-1 receivers."""

    GYRO_PRESENT = 0x01     # each sample carries 3 × s16 angular rate after the acceleration
    ACC_SATURATED = 0x02    # at least one acceleration axis of this packet hit the range
    GYR_SATURATED = 0x04    # at least one angular-rate axis of this packet hit the range
    CONFIG_MARK = 0x08      # first packet after START or a configuration (rate/range/gyro) change; seq restarts


class ConfigFlags(enum.IntFlag):
    """CONFIG byte 1. Bits 2–7 reserved."""

    GYRO_ENABLED = 0x01
    STREAMING = 0x02


class OpCode(enum.IntEnum):
    START_STREAMING = 0x01
    STOP_STREAMING = 0x02
    SET_SAMPLING_RATE = 0x03     # u16 Hz
    SET_ACC_RANGE = 0x04         # u16 g (1..200)
    SET_GYRO = 0x05              # u8 0 = off, 1 = on
    REQUEST_CONFIG = 0x06        # response params: u32 rate mHz, u16 acc range g, u8 gyro enabled
    RESPONSE = 0x80


class ResultCode(enum.IntEnum):
    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_PARAMETER = 0x03
    BUSY = 0x04                  # e.g. a configuration change while streaming: STOP first


#: CONFIG byte 26: where the sensor is worn (stored in the sensor by the fitting app).
SITE_CODES = {0: "unknown", 1: "foot_left", 2: "foot_right", 3: "shank_left", 4: "shank_right", 5: "sacrum",
              6: "foot", 7: "shank"}
_SITE_TO_CODE = {v: k for k, v in SITE_CODES.items()}


def _malformed(reason: str, data: bytes | None = None) -> MalformedPacketError:
    return MalformedPacketError(reason, protocol=KIND, data=data)


# --------------------------------------------------------------------------------------------- DATA
@dataclass(frozen=True, slots=True, eq=False)
class DataPacket:
    """A DATA notification at the integer level (as the firmware sent it)."""

    seq: int
    first_tick: int
    acc_raw: np.ndarray                 # (n, 3) int16
    gyr_raw: np.ndarray | None = None   # (n, 3) int16
    flags: int = 0
    version: int = PROTOCOL_VERSION

    @property
    def n_samples(self) -> int:
        return int(self.acc_raw.shape[0])

    @property
    def acc_saturated(self) -> bool:
        return bool(self.flags & Flags.ACC_SATURATED)

    @property
    def gyr_saturated(self) -> bool:
        return bool(self.flags & Flags.GYR_SATURATED)

    @property
    def config_mark(self) -> bool:
        return bool(self.flags & Flags.CONFIG_MARK)


def max_samples_per_packet(mtu: int, gyro: bool) -> int:
    """Samples that fit one DATA notification at ATT MTU ``mtu`` (payload = MTU − 3, at most 512 bytes).

    >>> max_samples_per_packet(23, gyro=False), max_samples_per_packet(23, gyro=True)
    (2, 1)
    >>> max_samples_per_packet(247, gyro=False), max_samples_per_packet(247, gyro=True)
    (39, 19)
    """
    if mtu < 23:
        raise ValueError(f"ATT MTU is at least 23, got {mtu}")
    payload = min(int(mtu) - 3, MAX_ATT_VALUE_SIZE)
    return (payload - HEADER_SIZE) // (12 if gyro else 6)


def _as_int16(name: str, arr) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n, 3), got {a.shape}")
    if a.size and (a.min() < -32768 or a.max() > 32767):
        raise ValueError(f"{name} outside int16")
    return a.astype("<i2", copy=False)


def encode_data_packet(seq: int, first_tick: int, acc_raw, gyr_raw=None, *, acc_saturated: bool | None = None,
                       gyr_saturated: bool | None = None, config_mark: bool = False,
                       version: int = PROTOCOL_VERSION) -> bytes:
    """Encode one DATA notification.

    ``seq`` and ``first_tick`` are reduced modulo 2**16 / 2**32 (pass running counters). The saturation
    flags default to "any axis at the int16 extremes" (firmware must encode saturated axes as −32768/32767).
    """
    acc = _as_int16("acc_raw", acc_raw)
    n = acc.shape[0]
    if n < 1:
        raise ValueError("a DATA packet carries at least one sample")
    flags = 0
    if gyr_raw is not None:
        gyr = _as_int16("gyr_raw", gyr_raw)
        if gyr.shape[0] != n:
            raise ValueError(f"gyr_raw has {gyr.shape[0]} samples, acc_raw {n}")
        flags |= Flags.GYRO_PRESENT
        body = np.concatenate([acc, gyr], axis=1)
    else:
        gyr = None
        body = acc
    if HEADER_SIZE + body.nbytes > MAX_ATT_VALUE_SIZE:
        raise ValueError(f"{n} samples need {HEADER_SIZE + body.nbytes} bytes, more than the ATT maximum 512")
    if acc_saturated is None:
        acc_saturated = bool(((acc == 32767) | (acc == -32768)).any())
    if gyr_saturated is None:
        gyr_saturated = gyr is not None and bool(((gyr == 32767) | (gyr == -32768)).any())
    flags |= Flags.ACC_SATURATED if acc_saturated else 0
    flags |= Flags.GYR_SATURATED if gyr_saturated else 0
    flags |= Flags.CONFIG_MARK if config_mark else 0
    return _HEADER.pack(version, int(flags), int(seq) & 0xFFFF, int(first_tick) & 0xFFFFFFFF) + body.tobytes()


def decode_data_packet(data: bytes | bytearray | memoryview) -> DataPacket:
    """Decode one DATA notification to integers. Raises ``MalformedPacketError`` / ``UnsupportedVersionError``."""
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise _malformed(f"truncated: {len(data)} bytes, the header alone is {HEADER_SIZE}", data)
    version, flags, seq, tick = _HEADER.unpack_from(data)
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(version, SUPPORTED_VERSIONS, protocol=KIND, data=data, what="DATA packet")
    if len(data) > MAX_ATT_VALUE_SIZE:
        raise _malformed(f"oversized: {len(data)} bytes, an ATT value is at most {MAX_ATT_VALUE_SIZE}", data)
    gyro = bool(flags & Flags.GYRO_PRESENT)
    size = 12 if gyro else 6
    body = len(data) - HEADER_SIZE
    if body == 0:
        raise _malformed("no samples after the header", data)
    if body % size:
        raise _malformed(f"{body} sample bytes is not a multiple of the {size}-byte "
                         f"{'accelerometer+gyroscope' if gyro else 'accelerometer'} sample", data)
    raw = np.frombuffer(data, dtype="<i2", offset=HEADER_SIZE).reshape(-1, size // 2)
    acc = raw[:, :3]
    gyr = raw[:, 3:] if gyro else None
    return DataPacket(seq=seq, first_tick=tick, acc_raw=acc, gyr_raw=gyr, flags=flags & 0x0F, version=version)


def packetize(acc_raw, gyr_raw=None, *, seq0: int, tick0: int, ticks_per_sample: float, mtu: int = 247,
              config_mark_first: bool = False) -> list[bytes]:
    """Split a run of consecutive samples into DATA packets sized for ``mtu`` (for emulated sensors/tests).

    Sample ``k`` is at tick ``tick0 + round(k * ticks_per_sample)``; packets get seq ``seq0, seq0+1, ...``.
    """
    acc = np.asarray(acc_raw)
    per = max_samples_per_packet(mtu, gyr_raw is not None)
    out = []
    for j, start in enumerate(range(0, acc.shape[0], per)):
        stop = min(start + per, acc.shape[0])
        out.append(encode_data_packet(
            seq0 + j, tick0 + int(round(start * ticks_per_sample)), acc[start:stop],
            None if gyr_raw is None else np.asarray(gyr_raw)[start:stop],
            config_mark=config_mark_first and j == 0))
    return out


# --------------------------------------------------------------------------------------------- CONFIG
@dataclass(frozen=True, slots=True)
class SensorConfig:
    """Content of the CONFIG characteristic (and the decoder's settings)."""

    sampling_rate_hz: float = 1000.0
    acc_range_g: int = 200
    acc_scale_g_per_lsb: float = 200.0 / 32768.0
    gyro_enabled: bool = True
    gyr_range_dps: int = 2000
    gyr_scale_dps_per_lsb: float = 2000.0 / 32768.0
    tick_hz: int = 32768
    firmware_version: tuple[int, int, int] = (1, 0, 0)
    site: str = "unknown"
    serial: str = ""
    streaming: bool = False
    protocol_version: int = PROTOCOL_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"sampling_rate_hz": self.sampling_rate_hz, "acc_range_g": self.acc_range_g,
                "acc_scale_g_per_lsb": self.acc_scale_g_per_lsb, "gyro_enabled": self.gyro_enabled,
                "gyr_range_dps": self.gyr_range_dps, "gyr_scale_dps_per_lsb": self.gyr_scale_dps_per_lsb,
                "tick_hz": self.tick_hz, "firmware_version": list(self.firmware_version), "site": self.site,
                "serial": self.serial, "streaming": self.streaming, "protocol_version": self.protocol_version}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SensorConfig":
        d = dict(d)
        d["firmware_version"] = tuple(d.get("firmware_version", (1, 0, 0)))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def encode_config(cfg: SensorConfig) -> bytes:
    serial = cfg.serial.encode("ascii")
    if len(serial) > MAX_SERIAL_LEN:
        raise ValueError(f"serial is at most {MAX_SERIAL_LEN} ASCII characters, got {len(serial)}")
    if cfg.site not in _SITE_TO_CODE:
        raise ValueError(f"site must be one of {sorted(_SITE_TO_CODE)}, got {cfg.site!r}")
    rate_mhz = int(round(cfg.sampling_rate_hz * 1000))
    if not 0 < rate_mhz <= 0xFFFFFFFF:
        raise ValueError(f"sampling rate out of range: {cfg.sampling_rate_hz}")
    flags = (ConfigFlags.GYRO_ENABLED if cfg.gyro_enabled else 0) | (ConfigFlags.STREAMING if cfg.streaming else 0)
    major, minor, patch = cfg.firmware_version
    return _CONFIG.pack(cfg.protocol_version, int(flags), rate_mhz, cfg.acc_range_g, cfg.acc_scale_g_per_lsb,
                        cfg.gyr_range_dps, cfg.gyr_scale_dps_per_lsb, cfg.tick_hz, major, minor, patch,
                        _SITE_TO_CODE[cfg.site], len(serial)) + serial


def decode_config(data: bytes | bytearray | memoryview) -> SensorConfig:
    data = bytes(data)
    if len(data) < 1:
        raise _malformed("empty CONFIG value", data)
    if data[0] not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(data[0], SUPPORTED_VERSIONS, protocol=KIND, data=data, what="CONFIG")
    if len(data) < CONFIG_FIXED_SIZE:
        raise _malformed(f"truncated CONFIG: {len(data)} bytes, at least {CONFIG_FIXED_SIZE} expected", data)
    (version, flags, rate_mhz, acc_range, acc_scale, gyr_range, gyr_scale, tick_hz, major, minor, patch,
     site, n_serial) = _CONFIG.unpack_from(data)
    if n_serial > MAX_SERIAL_LEN:
        raise _malformed(f"serial length {n_serial} > {MAX_SERIAL_LEN}", data)
    if len(data) != CONFIG_FIXED_SIZE + n_serial:
        raise _malformed(f"CONFIG is {len(data)} bytes, {CONFIG_FIXED_SIZE + n_serial} expected "
                         f"for a {n_serial}-character serial", data)
    if rate_mhz == 0 or tick_hz == 0 or acc_range == 0:
        raise _malformed("CONFIG has a zero sampling rate, tick rate or accelerometer range", data)
    if not (math.isfinite(acc_scale) and acc_scale > 0):
        raise _malformed(f"CONFIG accelerometer scale {acc_scale!r} is not a positive number", data)
    if not (math.isfinite(gyr_scale) and gyr_scale >= 0):
        raise _malformed(f"CONFIG gyroscope scale {gyr_scale!r} is not a non-negative number", data)
    try:
        serial = data[CONFIG_FIXED_SIZE:].decode("ascii")
    except UnicodeDecodeError:
        raise _malformed("serial is not ASCII", data) from None
    return SensorConfig(sampling_rate_hz=rate_mhz / 1000.0, acc_range_g=acc_range, acc_scale_g_per_lsb=acc_scale,
                        gyro_enabled=bool(flags & ConfigFlags.GYRO_ENABLED), gyr_range_dps=gyr_range,
                        gyr_scale_dps_per_lsb=gyr_scale, tick_hz=tick_hz, firmware_version=(major, minor, patch),
                        site=SITE_CODES.get(site, "unknown"), serial=serial,
                        streaming=bool(flags & ConfigFlags.STREAMING), protocol_version=version)


# --------------------------------------------------------------------------------------------- CONTROL POINT
@dataclass(frozen=True, slots=True)
class ControlRequest:
    opcode: int
    value: int | None = None      # rate Hz / range g / gyro 0-1, None for ops without parameter


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Parameters of a REQUEST_CONFIG response."""

    sampling_rate_hz: float
    acc_range_g: int
    gyro_enabled: bool


@dataclass(frozen=True, slots=True)
class ControlResponse:
    opcode: int
    result: int
    params: bytes = b""

    @property
    def ok(self) -> bool:
        return self.result == ResultCode.SUCCESS

    @property
    def settings(self) -> StreamSettings | None:
        if self.opcode != OpCode.REQUEST_CONFIG or not self.ok:
            return None
        rate_mhz, rng, gyro = struct.unpack("<IHB", self.params)
        return StreamSettings(rate_mhz / 1000.0, rng, bool(gyro))

    def raise_for_result(self) -> "ControlResponse":
        if not self.ok:
            try:
                code: int = ResultCode(self.result)
                name = code.name
            except ValueError:
                code, name = self.result, f"unknown result 0x{self.result:02x}"
            try:
                op = OpCode(self.opcode).name
            except ValueError:
                op = f"0x{self.opcode:02x}"
            raise ControlPointError(f"runform_v1 control point: {op} failed with {name}",
                                    opcode=self.opcode, code=code, protocol=KIND)
        return self


_PARAM_FORMAT = {OpCode.START_STREAMING: "", OpCode.STOP_STREAMING: "", OpCode.SET_SAMPLING_RATE: "<H",
                 OpCode.SET_ACC_RANGE: "<H", OpCode.SET_GYRO: "<B", OpCode.REQUEST_CONFIG: ""}


def encode_control_request(opcode: int, value: int | None = None) -> bytes:
    fmt = _PARAM_FORMAT.get(OpCode(opcode))
    if fmt:
        if value is None:
            raise ValueError(f"{OpCode(opcode).name} needs a parameter")
        return bytes([opcode]) + struct.pack(fmt, value)
    return bytes([opcode])


def decode_control_request(data: bytes | bytearray | memoryview) -> ControlRequest:
    """Sensor side. Unknown op codes decode fine (the sensor answers OP_CODE_NOT_SUPPORTED); a wrong
    parameter length raises ``MalformedPacketError`` (answer INVALID_PARAMETER)."""
    data = bytes(data)
    if not data:
        raise _malformed("empty control point write", data)
    op = data[0]
    try:
        fmt = _PARAM_FORMAT[OpCode(op)]
    except (ValueError, KeyError):
        return ControlRequest(op, None)
    size = struct.calcsize(fmt) if fmt else 0
    if len(data) != 1 + size:
        raise _malformed(f"op code 0x{op:02x} takes {size} parameter bytes, got {len(data) - 1}", data)
    return ControlRequest(op, struct.unpack(fmt, data[1:])[0] if fmt else None)


def encode_control_response(opcode: int, result: int, params: bytes = b"",
                            settings: StreamSettings | None = None) -> bytes:
    if settings is not None:
        params = struct.pack("<IHB", int(round(settings.sampling_rate_hz * 1000)), settings.acc_range_g,
                             int(settings.gyro_enabled))
    return bytes([OpCode.RESPONSE, opcode & 0xFF, result & 0xFF]) + bytes(params)


def decode_control_response(data: bytes | bytearray | memoryview) -> ControlResponse:
    data = bytes(data)
    if len(data) < 3:
        raise _malformed(f"control point response truncated: {len(data)} bytes, at least 3", data)
    if data[0] != OpCode.RESPONSE:
        raise _malformed(f"control point response must start with 0x80, got 0x{data[0]:02x}", data)
    if data[1] == OpCode.REQUEST_CONFIG and data[2] == ResultCode.SUCCESS and len(data) != 10:
        raise _malformed(f"REQUEST_CONFIG response must be 10 bytes, got {len(data)}", data)
    return ControlResponse(data[1], data[2], data[3:])


def start_streaming() -> bytes:
    return encode_control_request(OpCode.START_STREAMING)


def stop_streaming() -> bytes:
    return encode_control_request(OpCode.STOP_STREAMING)


def set_sampling_rate(rate_hz: int) -> bytes:
    return encode_control_request(OpCode.SET_SAMPLING_RATE, int(rate_hz))


def set_acc_range(range_g: int) -> bytes:
    return encode_control_request(OpCode.SET_ACC_RANGE, int(range_g))


def set_gyro(enabled: bool) -> bytes:
    return encode_control_request(OpCode.SET_GYRO, int(bool(enabled)))


def request_config() -> bytes:
    return encode_control_request(OpCode.REQUEST_CONFIG)


def encode_battery_level(percent: int) -> bytes:
    """Battery Level 0x2A19: u8 percent 0–100."""
    if not 0 <= percent <= 100:
        raise ValueError(f"battery level is 0..100 %, got {percent}")
    return bytes([int(percent)])


def decode_battery_level(data: bytes) -> int:
    if len(data) != 1 or data[0] > 100:
        raise MalformedPacketError("battery level must be one byte 0..100", protocol="battery", data=bytes(data))
    return data[0]


# --------------------------------------------------------------------------------------------- SensorProtocol
@register
class RunformV1(SensorProtocol):
    """Host-side decoder of runform v1 DATA notifications into SI units.

    Parameters
    ----------
    config : SensorConfig
        As read from the CONFIG characteristic (``decode_config``).
    """

    kind = KIND
    service_uuids = (SERVICE_UUID,)
    data_uuid = DATA_UUID
    seq_bits = 16
    tick_bits = 32

    def __init__(self, config: SensorConfig | None = None) -> None:
        self.config = config or SensorConfig()
        self.sampling_rate_hz = float(self.config.sampling_rate_hz)
        self.tick_hz = float(self.config.tick_hz)
        self.has_gyro = bool(self.config.gyro_enabled)
        self.range_g = float(self.config.acc_range_g)
        self._acc_k = self.config.acc_scale_g_per_lsb * STANDARD_GRAVITY_MS2
        self._gyr_k = self.config.gyr_scale_dps_per_lsb
        # an axis is clipped at the int16 extremes or at |value| >= range (sensors with < 16-bit codes)
        self._clip_code = max(1, min(32767, int(round(self.range_g / self.config.acc_scale_g_per_lsb))))

    def decode(self, data, arrival_ns: int = 0) -> list[SamplePacket]:
        pkt = decode_data_packet(data)
        if pkt.gyr_raw is not None and self._gyr_k <= 0:
            raise _malformed("packet carries gyroscope samples but CONFIG gives no gyroscope scale", bytes(data))
        acc_raw = pkt.acc_raw.astype(np.int32)
        clipped = (np.abs(acc_raw) >= self._clip_code).any(axis=1) | (acc_raw == -32768).any(axis=1)
        if pkt.acc_saturated and not clipped.any():
            clipped[:] = True      # firmware says saturated but codes do not show where: be conservative
        gyr = None if pkt.gyr_raw is None else pkt.gyr_raw * self._gyr_k
        return [SamplePacket(acc_ms2=acc_raw * self._acc_k, gyr_dps=gyr, clipped=clipped, seq=pkt.seq,
                             tick=pkt.first_tick, tick_is_last=False, restart=pkt.config_mark)]

    def to_metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "config_hex": encode_config(self.config).hex(), "config": self.config.to_dict()}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> "RunformV1":
        if "config_hex" in meta:
            return cls(decode_config(bytes.fromhex(meta["config_hex"])))
        return cls(SensorConfig.from_dict(meta.get("config", {})))
