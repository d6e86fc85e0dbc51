"""Polar Measurement Data (PMD) accelerometer streaming: Polar H10 (chest) and Verity Sense (upper arm).

Facts from the Polar BLE SDK and its PMD specification (see /work/shared/reference/sensor_protocols.md §3):

* Control point ``FB005C81`` (write, responses by indication): ``[op, type, TLV settings…]``, response
  ``[0xF0, op, type, status, more, params…]``; a READ returns the feature map ``0x0F, bitmask…``.
* Data ``FB005C82`` (notify): ``u8 measurement type | u64 timestamp | u8 frame type | samples``. The timestamp
  (ns since 2000-01-01 on the sensor clock) belongs to the LAST sample of the frame.
* Frame type bits 0–6 = sample format (ACC: 0 = 3×s8, 1 = 3×s16, 2 = 3×s24, unit mG × factor); bit 7 = delta
  compressed: reference sample, then blocks ``u8 delta_bits, u8 count, LSB-first packed signed deltas``.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import ControlPointError, MalformedPacketError
from .._types import STANDARD_GRAVITY_MS2, SamplePacket
from ._base import SensorProtocol, register

__all__ = [
    "SERVICE_UUID", "CONTROL_UUID", "DATA_UUID", "POLAR_EPOCH_UNIX_S", "MeasurementType", "OpCode", "SettingType",
    "Status", "PmdFrame", "PmdControlRequest", "PmdControlResponse",
    "encode_settings", "decode_settings", "encode_control_request", "decode_control_request",
    "encode_control_response", "decode_control_response", "encode_features", "decode_features",
    "start_acc", "stop_acc", "get_acc_settings",
    "encode_frame", "decode_frame", "encode_delta_samples", "decode_delta_samples", "polar_ns_to_unix_s",
    "PolarPmd",
]

KIND = "polar_pmd"
SERVICE_UUID = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
CONTROL_UUID = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
DATA_UUID = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"
POLAR_EPOCH_UNIX_S = 946_684_800          # 2000-01-01T00:00:00Z
_HEADER = struct.Struct("<BQB")            # 10 bytes
MAX_FRAME_SIZE = 512


class MeasurementType(enum.IntEnum):
    ECG = 0
    PPG = 1
    ACC = 2
    PPI = 3
    GYRO = 5
    MAG = 6
    SDK_MODE = 9
    LOCATION = 10
    PRESSURE = 11
    TEMPERATURE = 12


class OpCode(enum.IntEnum):
    GET_SETTINGS = 1
    START = 2
    STOP = 3
    GET_SDK_MODE_SETTINGS = 4
    GET_STATUS = 5


class SettingType(enum.IntEnum):
    SAMPLE_RATE = 0      # u16 Hz
    RESOLUTION = 1       # u16 bits
    RANGE = 2            # u16 g
    RANGE_MILLIUNIT = 3  # u32
    CHANNELS = 4         # u8
    FACTOR = 5           # f32
    SECURITY = 6         # 16 bytes


_SETTING_FMT = {SettingType.SAMPLE_RATE: "<H", SettingType.RESOLUTION: "<H", SettingType.RANGE: "<H",
                SettingType.RANGE_MILLIUNIT: "<I", SettingType.CHANNELS: "<B", SettingType.FACTOR: "<f",
                SettingType.SECURITY: "16s"}


class Status(enum.IntEnum):
    SUCCESS = 0
    INVALID_OP_CODE = 1
    INVALID_MEASUREMENT_TYPE = 2
    NOT_SUPPORTED = 3
    INVALID_LENGTH = 4
    INVALID_PARAMETER = 5
    ALREADY_IN_STATE = 6
    INVALID_RESOLUTION = 7
    INVALID_SAMPLE_RATE = 8
    INVALID_RANGE = 9
    INVALID_MTU = 10
    INVALID_NUMBER_OF_CHANNELS = 11
    INVALID_STATE = 12
    DEVICE_IN_CHARGER = 13
    DISK_FULL = 14


RESPONSE_CODE = 0xF0
FEATURES_CODE = 0x0F
STOPPED_CODE = 0x01   # device-initiated "online measurement stopped"


def _malformed(reason: str, data: bytes | None = None) -> MalformedPacketError:
    return MalformedPacketError(reason, protocol=KIND, data=data)


def polar_ns_to_unix_s(ts_ns: int) -> float:
    """PMD timestamp (ns since 2000-01-01, sensor clock) -> Unix seconds."""
    return ts_ns / 1e9 + POLAR_EPOCH_UNIX_S


# --------------------------------------------------------------------------------------------- settings / CP
def encode_settings(settings: dict[int, Any]) -> bytes:
    """TLV ``[type, count, values…]``; a value may be a scalar or a sequence (count > 1, settings lists)."""
    out = bytearray()
    for st, val in settings.items():
        st = SettingType(st)
        vals = list(val) if isinstance(val, (list, tuple)) else [val]
        out += bytes([st, len(vals)])
        for v in vals:
            out += struct.pack(_SETTING_FMT[st], v)
    return bytes(out)


def decode_settings(data: bytes) -> dict[SettingType, tuple]:
    """Parse TLV settings into ``{SettingType: (value, …)}``; raises ``MalformedPacketError``."""
    data = bytes(data)
    out: dict[SettingType, tuple] = {}
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise _malformed(f"settings truncated at byte {i}", data)
        try:
            st = SettingType(data[i])
        except ValueError:
            raise _malformed(f"unknown setting type {data[i]} at byte {i}", data) from None
        count = data[i + 1]
        size = struct.calcsize(_SETTING_FMT[st])
        end = i + 2 + count * size
        if end > len(data):
            raise _malformed(f"setting {st.name} with {count} values needs {end} bytes, got {len(data)}", data)
        out[st] = tuple(struct.unpack_from(_SETTING_FMT[st], data, i + 2 + k * size)[0] for k in range(count))
        i = end
    return out


@dataclass(frozen=True, slots=True)
class PmdControlRequest:
    opcode: int
    measurement_type: int
    recording: bool = False
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PmdControlResponse:
    opcode: int
    measurement_type: int
    status: int
    more: bool = False
    params: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status == Status.SUCCESS

    @property
    def settings(self) -> dict[SettingType, tuple]:
        """Settings carried by GET_SETTINGS (available values) and START (e.g. the FACTOR) responses."""
        return decode_settings(self.params) if self.params and self.opcode in (OpCode.GET_SETTINGS, OpCode.START,
                                                                               OpCode.GET_SDK_MODE_SETTINGS) else {}

    def raise_for_status(self) -> "PmdControlResponse":
        if not self.ok:
            try:
                name = Status(self.status).name
            except ValueError:
                name = f"unknown status {self.status}"
            raise ControlPointError(f"polar_pmd control point op {self.opcode} type {self.measurement_type}: {name}",
                                    opcode=self.opcode, code=self.status, protocol=KIND)
        return self


def encode_control_request(opcode: int, measurement_type: int, settings: dict | None = None,
                           recording: bool = False) -> bytes:
    return bytes([opcode, (measurement_type & 0x3F) | (0x80 if recording else 0)]) + encode_settings(settings or {})


def decode_control_request(data: bytes) -> PmdControlRequest:
    data = bytes(data)
    if len(data) < 2:
        raise _malformed(f"control point write needs at least 2 bytes, got {len(data)}", data)
    return PmdControlRequest(data[0], data[1] & 0x3F, bool(data[1] & 0x80), decode_settings(data[2:]))


def encode_control_response(opcode: int, measurement_type: int, status: int, params: bytes = b"",
                            more: bool = False) -> bytes:
    return bytes([RESPONSE_CODE, opcode, measurement_type, status, int(more)]) + bytes(params)


def decode_control_response(data: bytes) -> PmdControlResponse:
    data = bytes(data)
    if len(data) < 4 or data[0] != RESPONSE_CODE:
        raise _malformed("not a PMD control point response (expects 0xF0, op, type, status[, more, params])", data)
    more = bool(data[4]) if len(data) > 4 else False
    return PmdControlResponse(data[1], data[2], data[3], more, data[5:])


def get_acc_settings() -> bytes:
    return encode_control_request(OpCode.GET_SETTINGS, MeasurementType.ACC)


def start_acc(sample_rate_hz: int, range_g: int, resolution_bits: int = 16, channels: int | None = None) -> bytes:
    """Start ACC streaming, e.g. H10 200 Hz ±8 g: ``02 02 00 01 C8 00 01 01 10 00 02 01 08 00``."""
    s: dict = {SettingType.SAMPLE_RATE: sample_rate_hz, SettingType.RESOLUTION: resolution_bits,
               SettingType.RANGE: range_g}
    if channels is not None:
        s[SettingType.CHANNELS] = channels
    return encode_control_request(OpCode.START, MeasurementType.ACC, s)


def stop_acc() -> bytes:
    return encode_control_request(OpCode.STOP, MeasurementType.ACC)


def encode_features(types) -> bytes:
    """Feature map (value of a CP READ): ``0x0F`` + bitmask of supported measurement types."""
    mask = 0
    for t in types:
        mask |= 1 << int(t)
    return bytes([FEATURES_CODE]) + mask.to_bytes(2, "little")


def decode_features(data: bytes) -> set[int]:
    data = bytes(data)
    if len(data) < 2 or data[0] != FEATURES_CODE:
        raise _malformed("not a PMD feature map (expects 0x0F + bitmask)", data)
    mask = int.from_bytes(data[1:], "little")
    return {b for b in range(8 * (len(data) - 1)) if mask >> b & 1}


# --------------------------------------------------------------------------------------------- frames
@dataclass(frozen=True, slots=True, eq=False)
class PmdFrame:
    measurement_type: int
    timestamp_ns: int            # sensor clock, ns since 2000-01-01, of the LAST sample
    frame_type: int              # bits 0-6
    compressed: bool
    samples: np.ndarray          # (n, channels) int64, device units (mG for ACC) before the factor


_RAW_BYTES = {0: 1, 1: 2, 2: 3}


def _signed_width(v: np.ndarray) -> int:
    """Smallest two's-complement width holding every value of ``v`` (at least 1 bit)."""
    if v.size == 0:
        return 1
    lo, hi = int(v.min()), int(v.max())
    need = max(hi.bit_length() + 1 if hi > 0 else 1, (-lo - 1).bit_length() + 1 if lo < 0 else 1)
    return need


def _pack_signed(v: np.ndarray, bits: int) -> bytes:
    """LSB-first bit packing of signed ints, ``bits`` each (vectorised)."""
    u = v.astype(np.int64) & ((1 << bits) - 1)
    b = ((u[:, None] >> np.arange(bits, dtype=np.int64)) & 1).astype(np.uint8).ravel()
    return np.packbits(b, bitorder="little").tobytes()


def _unpack_signed(buf: bytes, count: int, bits: int) -> np.ndarray:
    b = np.unpackbits(np.frombuffer(buf, np.uint8), bitorder="little")[: count * bits].reshape(count, bits)
    v = b.astype(np.int64) @ (np.int64(1) << np.arange(bits, dtype=np.int64))
    return np.where(v >= (1 << (bits - 1)), v - (1 << bits), v)


def encode_delta_samples(samples, resolution_bits: int = 16, block_samples: int = 32) -> bytes:
    """Delta-compress ``samples`` (n, channels): reference sample, then blocks of at most ``block_samples``
    (≤ 255) deltas, each block with the smallest bit width that holds its deltas."""
    s = np.asarray(samples, dtype=np.int64)
    if s.ndim != 2 or s.shape[0] < 1:
        raise ValueError("samples must have shape (n >= 1, channels)")
    if not 1 <= block_samples <= 255:
        raise ValueError("block_samples must be 1..255")
    nbytes = -(-resolution_bits // 8)
    lim = 1 << (8 * nbytes - 1)
    if s[0].min() < -lim or s[0].max() >= lim:
        raise ValueError(f"reference sample does not fit {8 * nbytes} bits")
    out = bytearray()
    for v in s[0]:
        out += int(v).to_bytes(nbytes, "little", signed=True)
    d = np.diff(s, axis=0)
    for start in range(0, d.shape[0], block_samples):
        blk = d[start:start + block_samples]
        bits = _signed_width(blk)
        if bits > 32:
            raise ValueError("delta wider than 32 bits")
        out += bytes([bits, blk.shape[0]]) + _pack_signed(blk.ravel(), bits)
    return bytes(out)


def decode_delta_samples(body: bytes, channels: int = 3, resolution_bits: int = 16, data: bytes | None = None
                         ) -> np.ndarray:
    """Inverse of ``encode_delta_samples``: returns (n, channels) int64. Raises ``MalformedPacketError``."""
    nbytes = -(-resolution_bits // 8)
    ref_size = channels * nbytes
    if len(body) < ref_size:
        raise _malformed(f"delta frame shorter than its {ref_size}-byte reference sample", data)
    ref = np.array([int.from_bytes(body[k * nbytes:(k + 1) * nbytes], "little", signed=True)
                    for k in range(channels)], dtype=np.int64)
    blocks = []
    i = ref_size
    while i < len(body):
        if i + 2 > len(body):
            raise _malformed(f"delta block header truncated at byte {i}", data)
        bits, count = body[i], body[i + 1]
        if not 1 <= bits <= 32:
            raise _malformed(f"delta width {bits} bits at byte {i} (1..32 allowed)", data)
        if count == 0:
            raise _malformed(f"empty delta block at byte {i}", data)
        size = -(-(bits * channels * count) // 8)
        if i + 2 + size > len(body):
            raise _malformed(f"delta block at byte {i} needs {size} bytes, {len(body) - i - 2} left", data)
        blocks.append(_unpack_signed(body[i + 2:i + 2 + size], count * channels, bits).reshape(count, channels))
        i += 2 + size
    if not blocks:
        return ref[None, :]
    d = np.concatenate(blocks)
    return np.vstack([ref[None, :], ref + np.cumsum(d, axis=0)])


def encode_frame(samples, timestamp_ns: int, *, measurement_type: int = MeasurementType.ACC, frame_type: int = 1,
                 compressed: bool = False, resolution_bits: int = 16, block_samples: int = 32) -> bytes:
    """Encode a PMD data frame. ``timestamp_ns`` is that of the LAST sample (sensor clock, since 2000)."""
    s = np.asarray(samples, dtype=np.int64)
    if s.ndim != 2 or s.shape[0] < 1:
        raise ValueError("samples must have shape (n >= 1, channels)")
    head = _HEADER.pack(measurement_type, int(timestamp_ns), (frame_type & 0x7F) | (0x80 if compressed else 0))
    if compressed:
        return head + encode_delta_samples(s, resolution_bits, block_samples)
    nb = _RAW_BYTES[frame_type]
    lim = 1 << (8 * nb - 1)
    if s.min() < -lim or s.max() >= lim:
        raise ValueError(f"samples do not fit frame type {frame_type} ({8 * nb}-bit)")
    if nb == 1:
        body = s.astype("i1").tobytes()
    elif nb == 2:
        body = s.astype("<i2").tobytes()
    else:
        u = (s.ravel() & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3]
        body = u.tobytes()
    return head + body


def decode_frame(data: bytes | bytearray | memoryview, *, channels: int = 3, resolution_bits: int = 16) -> PmdFrame:
    data = bytes(data)
    if len(data) < _HEADER.size + 1:
        raise _malformed(f"truncated: {len(data)} bytes, a PMD frame has a 10-byte header and samples", data)
    if len(data) > MAX_FRAME_SIZE:
        raise _malformed(f"oversized: {len(data)} bytes > {MAX_FRAME_SIZE}", data)
    mtype, ts, ftype = _HEADER.unpack_from(data)
    mtype &= 0x3F
    compressed = bool(ftype & 0x80)
    ftype &= 0x7F
    body = data[_HEADER.size:]
    if compressed:
        samples = decode_delta_samples(body, channels, resolution_bits, data)
    else:
        if ftype not in _RAW_BYTES:
            raise _malformed(f"unsupported raw frame type {ftype} (0, 1, 2 = 8/16/24-bit)", data)
        nb = _RAW_BYTES[ftype]
        if len(body) % (nb * channels):
            raise _malformed(f"{len(body)} sample bytes is not a multiple of {nb * channels} "
                             f"(frame type {ftype}, {channels} channels)", data)
        if nb == 1:
            samples = np.frombuffer(body, "i1").astype(np.int64)
        elif nb == 2:
            samples = np.frombuffer(body, "<i2").astype(np.int64)
        else:
            b = np.frombuffer(body, np.uint8).reshape(-1, 3).astype(np.int64)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            samples = np.where(v >= 1 << 23, v - (1 << 24), v)
        samples = samples.reshape(-1, channels)
    return PmdFrame(mtype, ts, ftype, compressed, samples)


# --------------------------------------------------------------------------------------------- SensorProtocol
@register
class PolarPmd(SensorProtocol):
    """Host-side decoder of Polar PMD ACC frames into m/s².

    Parameters
    ----------
    sampling_rate_hz : float
        The rate requested in the START command (H10: 25/50/100/200; Verity: 52 or 26–416 in SDK mode).
    range_g : float
        Requested range (H10 ±2/4/8 g), used to flag clipped samples.
    resolution_bits : int
        Requested resolution; sets the reference-sample width of delta frames (16 for ACC).
    factor : float
        FACTOR setting of the START response (multiply into samples), 1.0 when absent.
    model : str
        Free text ("H10", "Verity Sense"), recorded in the journal.
    """

    kind = KIND
    service_uuids = (SERVICE_UUID,)
    data_uuid = DATA_UUID
    seq_bits = None
    tick_bits = 64
    _NS_PER_S = 1_000_000_000

    def __init__(self, sampling_rate_hz: float = 200.0, range_g: float = 8.0, resolution_bits: int = 16,
                 factor: float = 1.0, model: str = "H10") -> None:
        self.sampling_rate_hz = float(sampling_rate_hz)
        self.range_g = float(range_g)
        self.resolution_bits = int(resolution_bits)
        self.factor = float(factor)
        self.model = model
        self.tick_hz = 1e9
        self.has_gyro = False
        self._k = self.factor * STANDARD_GRAVITY_MS2 / 1000.0    # mG -> m/s²
        self._clip_mg = 0.999 * self.range_g * 1000.0 / self.factor

    def decode(self, data, arrival_ns: int = 0) -> list[SamplePacket]:
        frame = decode_frame(data, channels=3, resolution_bits=self.resolution_bits)
        if frame.measurement_type != MeasurementType.ACC:
            raise _malformed(f"measurement type {frame.measurement_type} is not ACC (2); this decoder handles ACC",
                             bytes(data))
        clipped = (np.abs(frame.samples) >= self._clip_mg).any(axis=1)
        return [SamplePacket(acc_ms2=frame.samples * self._k, clipped=clipped, seq=None, tick=frame.timestamp_ns,
                             tick_is_last=True)]

    def to_metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "sampling_rate_hz": self.sampling_rate_hz, "range_g": self.range_g,
                "resolution_bits": self.resolution_bits, "factor": self.factor, "model": self.model}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> "PolarPmd":
        return cls(**{k: meta[k] for k in ("sampling_rate_hz", "range_g", "resolution_bits", "factor", "model")
                      if k in meta})
