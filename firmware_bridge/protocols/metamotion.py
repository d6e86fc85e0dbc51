"""MbientLab MetaMotion / MetaWear accelerometer stream (BMI160 / BMI270).

Notify ``326A9006-…``: ``03 04`` + 3 × s16 (one sample) or packed ``03 1C`` (BMI160) / ``03 05`` (BMI270) +
3 samples × 3 × s16 (20 bytes). Scale 16384/8192/4096/2048 LSB per g at ±2/4/8/16 g. No timestamp and no
counter in the stream: samples are arrival-stamped (host jitter 0 to hundreds of ms) and loss is invisible.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import MalformedPacketError
from .._types import STANDARD_GRAVITY_MS2, SamplePacket
from ._base import SensorProtocol, register

__all__ = ["SERVICE_UUID", "COMMAND_UUID", "NOTIFY_UUID", "LSB_PER_G", "encode_acc", "decode_acc", "MetaMotion"]

KIND = "metamotion"
SERVICE_UUID = "326a9000-85cb-9195-d9dd-464cfbbae75a"
COMMAND_UUID = "326a9001-85cb-9195-d9dd-464cfbbae75a"
NOTIFY_UUID = "326a9006-85cb-9195-d9dd-464cfbbae75a"
LSB_PER_G = {2: 16384.0, 4: 8192.0, 8: 4096.0, 16: 2048.0}
_SINGLE, _PACKED_160, _PACKED_270 = 0x04, 0x1C, 0x05


def encode_acc(raw, packed_register: int | None = None) -> bytes:
    """raw (1, 3) -> ``03 04 …``; raw (3, 3) -> packed with ``packed_register`` (0x1C BMI160, 0x05 BMI270)."""
    r = np.asarray(raw).astype("<i2")
    if r.shape == (1, 3):
        return bytes([3, _SINGLE]) + r.tobytes()
    if r.shape == (3, 3):
        return bytes([3, packed_register or _PACKED_160]) + r.tobytes()
    raise ValueError("raw must have shape (1, 3) or (3, 3)")


def decode_acc(data: bytes | bytearray | memoryview) -> np.ndarray:
    """-> raw counts (n, 3) int16, n = 1 or 3."""
    data = bytes(data)
    if len(data) < 2 or data[0] != 3:
        raise MalformedPacketError("not an accelerometer (module 0x03) notification", protocol=KIND, data=data)
    reg = data[1]
    if reg == _SINGLE:
        need = 8
    elif reg in (_PACKED_160, _PACKED_270):
        need = 20
    else:
        raise MalformedPacketError(f"accelerometer register 0x{reg:02x} is not a data register", protocol=KIND,
                                   data=data)
    if len(data) != need:
        raise MalformedPacketError(f"register 0x{reg:02x} notifications are {need} bytes, got {len(data)}",
                                   protocol=KIND, data=data)
    return np.frombuffer(data, "<i2", offset=2).reshape(-1, 3)


@register
class MetaMotion(SensorProtocol):
    kind = KIND
    service_uuids = (SERVICE_UUID,)
    data_uuid = NOTIFY_UUID

    def __init__(self, sampling_rate_hz: float = 100.0, range_g: int = 16) -> None:
        if int(range_g) not in LSB_PER_G:
            raise ValueError(f"range_g must be one of {sorted(LSB_PER_G)}")
        self.sampling_rate_hz = float(sampling_rate_hz)
        self.range_g = int(range_g)
        self.tick_hz = None
        self._k = STANDARD_GRAVITY_MS2 / LSB_PER_G[self.range_g]

    def decode(self, data, arrival_ns: int = 0) -> list[SamplePacket]:
        raw = decode_acc(data).astype(np.int32)
        clipped = ((raw >= 32767) | (raw <= -32768)).any(axis=1)
        return [SamplePacket(acc_ms2=raw * self._k, clipped=clipped)]

    def to_metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "sampling_rate_hz": self.sampling_rate_hz, "range_g": self.range_g}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> "MetaMotion":
        return cls(meta.get("sampling_rate_hz", 100.0), meta.get("range_g", 16))
