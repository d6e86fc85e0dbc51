"""Bluetooth SIG Running Speed and Cadence (RSC, service 0x1814): foot pods (Stryd, Polar Stride, ...).

RSC Measurement 0x2A53 (notify): ``u8 flags | u16 speed (1/256 m/s) | u8 cadence (1/min) |
[u16 stride length (1/100 m), flags bit 0] | [u32 total distance (1/10 m), flags bit 1]``;
flags bit 2 = running (0 = walking), bits 3–7 RFU. No timestamp and no raw samples: decoded into coarse
``MetricsPacket``s, time-stamped on arrival.

Cadence: the specification only gives the unit "1/minute". Pods differ: some send steps of both feet per
minute (~180 when running), others strides = steps of one foot (~90). ``cadence_convention`` decides:
``"steps"`` (value used as is), ``"strides"`` (×2) or ``"auto"`` (default): per sensor, the first value seen
while the pod reports running or a speed ≥ 1.8 m/s fixes the convention (< 120 -> strides, as apps do);
before that a value below 120 while running is doubled.
"""
from __future__ import annotations

import enum
import struct
from typing import Any

from .._errors import MalformedPacketError
from .._types import MetricsPacket
from ._base import SensorProtocol, register, sig_uuid

__all__ = ["SERVICE_UUID", "MEASUREMENT_UUID", "FEATURE_UUID", "SENSOR_LOCATION_UUID", "CONTROL_POINT_UUID",
           "MeasurementFlags", "Feature", "SENSOR_LOCATIONS", "encode_measurement", "decode_measurement",
           "encode_feature", "decode_feature", "Rsc"]

KIND = "rsc"
SERVICE_UUID = sig_uuid(0x1814)
MEASUREMENT_UUID = sig_uuid(0x2A53)
FEATURE_UUID = sig_uuid(0x2A54)
SENSOR_LOCATION_UUID = sig_uuid(0x2A5D)
CONTROL_POINT_UUID = sig_uuid(0x2A55)

#: Sensor Location (0x2A5D) values relevant to running pods.
SENSOR_LOCATIONS = {0: "other", 1: "top_of_shoe", 2: "in_shoe", 3: "hip", 14: "chest"}

RUNNING_SPEED_MS = 1.8
STRIDE_THRESHOLD_PER_MIN = 120


class MeasurementFlags(enum.IntFlag):
    STRIDE_LENGTH_PRESENT = 0x01
    TOTAL_DISTANCE_PRESENT = 0x02
    RUNNING = 0x04


class Feature(enum.IntFlag):
    STRIDE_LENGTH = 0x01
    TOTAL_DISTANCE = 0x02
    WALKING_RUNNING_STATUS = 0x04
    CALIBRATION = 0x08
    MULTIPLE_SENSOR_LOCATIONS = 0x10


def _malformed(reason: str, data: bytes | None = None) -> MalformedPacketError:
    return MalformedPacketError(reason, protocol=KIND, data=data)


def encode_measurement(speed_ms: float, cadence_raw_per_min: int, stride_length_m: float | None = None,
                       total_distance_m: float | None = None, running: bool = False) -> bytes:
    """Encode RSC Measurement. ``cadence_raw_per_min`` is sent as is (the pod's convention)."""
    speed = int(round(speed_ms * 256))
    if not 0 <= speed <= 0xFFFF:
        raise ValueError(f"speed {speed_ms} m/s outside 0..255.99")
    if not 0 <= cadence_raw_per_min <= 255:
        raise ValueError(f"cadence {cadence_raw_per_min} outside u8")
    flags = MeasurementFlags.RUNNING if running else MeasurementFlags(0)
    tail = b""
    if stride_length_m is not None:
        flags |= MeasurementFlags.STRIDE_LENGTH_PRESENT
        tail += struct.pack("<H", int(round(stride_length_m * 100)))
    if total_distance_m is not None:
        flags |= MeasurementFlags.TOTAL_DISTANCE_PRESENT
        tail += struct.pack("<I", int(round(total_distance_m * 10)))
    return struct.pack("<BHB", int(flags), speed, int(cadence_raw_per_min)) + tail


def decode_measurement(data: bytes | bytearray | memoryview) -> tuple[int, float, int, float | None, float | None]:
    """-> (flags, speed_ms, cadence_raw_per_min, stride_length_m | None, total_distance_m | None)."""
    data = bytes(data)
    if len(data) < 4:
        raise _malformed(f"truncated: {len(data)} bytes, RSC Measurement has at least 4", data)
    flags, speed, cadence = struct.unpack_from("<BHB", data)
    need = 4 + (2 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
    if len(data) < need:
        raise _malformed(f"truncated: flags 0x{flags:02x} announce {need} bytes, got {len(data)}", data)
    if len(data) > need:
        raise _malformed(f"{len(data) - need} unexpected trailing bytes after the fields announced by flags "
                         f"0x{flags:02x}", data)
    i = 4
    stride = dist = None
    if flags & 0x01:
        stride = struct.unpack_from("<H", data, i)[0] / 100.0
        i += 2
    if flags & 0x02:
        dist = struct.unpack_from("<I", data, i)[0] / 10.0
    return flags, speed / 256.0, cadence, stride, dist


def encode_feature(features: int) -> bytes:
    return struct.pack("<H", int(features))


def decode_feature(data: bytes) -> Feature:
    if len(data) != 2:
        raise _malformed(f"RSC Feature is 2 bytes, got {len(data)}", bytes(data))
    return Feature(struct.unpack("<H", bytes(data))[0] & 0x1F)


@register
class Rsc(SensorProtocol):
    """Decoder of RSC Measurement notifications into ``MetricsPacket`` (coarse, arrival-stamped).

    Parameters
    ----------
    cadence_convention : {"auto", "steps", "strides"}
        How to read the 1/min cadence field (see module docstring). The decision of ``"auto"`` is exposed as
        ``convention_`` (None until decided).
    """

    kind = KIND
    service_uuids = (SERVICE_UUID,)
    data_uuid = MEASUREMENT_UUID
    coarse = True

    def __init__(self, cadence_convention: str = "auto") -> None:
        if cadence_convention not in ("auto", "steps", "strides"):
            raise ValueError(f"cadence_convention must be auto, steps or strides, got {cadence_convention!r}")
        self.cadence_convention = cadence_convention
        self.convention_: str | None = None if cadence_convention == "auto" else cadence_convention

    def decode(self, data, arrival_ns: int = 0) -> list[MetricsPacket]:
        flags, speed, cadence, stride, dist = decode_measurement(data)
        running = bool(flags & MeasurementFlags.RUNNING)
        conv = self.convention_
        if conv is None and cadence > 0 and (running or speed >= RUNNING_SPEED_MS):
            conv = self.convention_ = "strides" if cadence < STRIDE_THRESHOLD_PER_MIN else "steps"
        if conv is None:   # undecided: only double a low value that is labelled running
            factor = 2 if running and cadence < STRIDE_THRESHOLD_PER_MIN else 1
        else:
            factor = 2 if conv == "strides" else 1
        return [MetricsPacket(speed_ms=speed, cadence_spm=float(cadence * factor), cadence_raw_per_min=cadence,
                              stride_length_m=stride, total_distance_m=dist, is_running=running)]

    def to_metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "cadence_convention": self.cadence_convention}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> "Rsc":
        return cls(meta.get("cadence_convention", "auto"))
