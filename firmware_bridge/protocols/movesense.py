"""Movesense GATT SensorData Protocol (GSP) accelerometer stream (``gatt_sensordata_app`` firmware sample).

Write ``34800001-…`` (client -> sensor): ``00 ref`` HELLO, ``01 ref <ASCII path>`` SUBSCRIBE (e.g.
``/Meas/Acc/104``), ``02 ref`` UNSUBSCRIBE. Notify ``34800002-…``: ``u8 response type | u8 ref | payload``;
type 1 = command result (2-byte status), type 2 = data. ``/Meas/Acc/{rate}`` data payload: ``u32 timestamp (ms,
sensor clock) of the FIRST sample | n × (3 × f32 m/s²)``. No sequence number.
"""
from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import MalformedPacketError
from .._types import STANDARD_GRAVITY_MS2, SamplePacket
from ._base import SensorProtocol, register

__all__ = ["SERVICE_UUID", "WRITE_UUID", "NOTIFY_UUID", "CommandResult", "hello", "subscribe", "unsubscribe",
           "encode_acc_data", "decode_acc_data", "decode_command_result", "encode_command_result", "Movesense"]

KIND = "movesense"
SERVICE_UUID = "34802252-7185-4d5d-b431-630e7050e8f0"
WRITE_UUID = "34800001-7185-4d5d-b431-630e7050e8f0"
NOTIFY_UUID = "34800002-7185-4d5d-b431-630e7050e8f0"
RESP_COMMAND_RESULT = 1
RESP_DATA = 2
MAX_NOTIFICATION = 512


def _malformed(reason: str, data: bytes | None = None) -> MalformedPacketError:
    return MalformedPacketError(reason, protocol=KIND, data=data)


def hello(ref: int = 1) -> bytes:
    return bytes([0, ref])


def subscribe(ref: int, path: str) -> bytes:
    if not 1 <= ref <= 255:
        raise ValueError("subscription reference must be 1..255")
    return bytes([1, ref]) + path.encode("ascii")


def unsubscribe(ref: int) -> bytes:
    return bytes([2, ref])


@dataclass(frozen=True, slots=True)
class CommandResult:
    ref: int
    status: int       # HTTP-style (200 OK, 503 busy ...)


def encode_command_result(ref: int, status: int) -> bytes:
    return bytes([RESP_COMMAND_RESULT, ref]) + struct.pack(">H", status)


def decode_command_result(data: bytes) -> CommandResult:
    """Status is big-endian in the firmware sample (507 = ``01 FB``); some clients read little-endian, so a
    big-endian value outside 100..599 is read little-endian instead."""
    data = bytes(data)
    if len(data) != 4 or data[0] != RESP_COMMAND_RESULT:
        raise _malformed("not a GSP command result (01 ref status16)", data)
    be, le = struct.unpack(">H", data[2:])[0], struct.unpack("<H", data[2:])[0]
    return CommandResult(data[1], be if 100 <= be <= 599 or not 100 <= le <= 599 else le)


def encode_acc_data(ref: int, timestamp_ms: int, acc_ms2) -> bytes:
    a = np.asarray(acc_ms2, dtype="<f4")
    if a.ndim != 2 or a.shape[1] != 3 or a.shape[0] < 1:
        raise ValueError("acc_ms2 must have shape (n >= 1, 3)")
    return bytes([RESP_DATA, ref]) + struct.pack("<I", int(timestamp_ms) & 0xFFFFFFFF) + a.tobytes()


def decode_acc_data(data: bytes | bytearray | memoryview) -> tuple[int, int, np.ndarray]:
    """-> (ref, timestamp_ms of the first sample, acc (n, 3) float64 m/s²)."""
    data = bytes(data)
    if len(data) < 2:
        raise _malformed(f"truncated: {len(data)} bytes", data)
    if data[0] != RESP_DATA:
        raise _malformed(f"response type {data[0]} is not data (2)", data)
    if len(data) > MAX_NOTIFICATION:
        raise _malformed(f"oversized: {len(data)} bytes", data)
    body = len(data) - 6
    if body < 12 or body % 12:
        raise _malformed(f"acc data needs a 4-byte timestamp and whole 12-byte samples, got {len(data) - 2} bytes",
                         data)
    ts = struct.unpack_from("<I", data, 2)[0]
    acc = np.frombuffer(data, "<f4", offset=6).reshape(-1, 3).astype(np.float64)
    if not np.isfinite(acc).all():
        raise _malformed("non-finite acceleration value", data)
    return data[1], ts, acc


@register
class Movesense(SensorProtocol):
    """Decoder of GSP ``/Meas/Acc/{rate}`` notifications.

    Parameters
    ----------
    sampling_rate_hz : float   rate in the subscribed path
    range_g : float            ``/Meas/Acc/Config`` GRange (clipping flags)
    ref : int | None           subscription reference; data for another reference is rejected
    """

    kind = KIND
    service_uuids = (SERVICE_UUID,)
    data_uuid = NOTIFY_UUID
    tick_bits = 32

    def __init__(self, sampling_rate_hz: float = 104.0, range_g: float = 8.0, ref: int | None = None) -> None:
        self.sampling_rate_hz = float(sampling_rate_hz)
        self.range_g = float(range_g)
        self.ref = ref
        self.tick_hz = 1000.0
        self.has_gyro = False
        self._clip_ms2 = 0.999 * self.range_g * STANDARD_GRAVITY_MS2

    @classmethod
    def for_path(cls, path: str, **kw) -> "Movesense":
        m = re.fullmatch(r"/Meas/Acc/(\d+)", path)
        if not m:
            raise ValueError(f"not an accelerometer path: {path!r}")
        return cls(float(m.group(1)), **kw)

    def decode(self, data, arrival_ns: int = 0) -> list[SamplePacket]:
        data = bytes(data)
        if data[:1] == bytes([RESP_COMMAND_RESULT]):
            decode_command_result(data)     # validates; a result carries no samples
            return []
        ref, ts, acc = decode_acc_data(data)
        if self.ref is not None and ref != self.ref:
            raise _malformed(f"data for subscription reference {ref}, subscribed with {self.ref}", data)
        clipped = (np.abs(acc) >= self._clip_ms2).any(axis=1)
        return [SamplePacket(acc_ms2=acc, clipped=clipped, tick=ts)]

    def to_metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "sampling_rate_hz": self.sampling_rate_hz, "range_g": self.range_g, "ref": self.ref}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> "Movesense":
        return cls(meta.get("sampling_rate_hz", 104.0), meta.get("range_g", 8.0), meta.get("ref"))
