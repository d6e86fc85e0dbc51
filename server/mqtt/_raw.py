"""Binary payload of ``runform/v1/{runner}/{sensor}/raw`` (content type ``application/vnd.runform.raw.v1``).

Why binary and not JSON: one 500 Hz 6-axis sensor is 3000 numbers/s; as JSON that is ~60 kB/s and a
float parse per number on every subscriber; this layout is ~13 kB/s and decodes with three ``np.frombuffer``
calls. Times are float64 (host monotonic seconds: float32 would have ~0.06 s resolution after 10 days of
uptime); samples are float32 (7 significant digits, far below the ~5 mg LSB of a ±16 g int16 sensor) or,
with flag ``INT16``, the sensor's raw counts with a scale per channel group so that counts round-trip exactly.

Layout, little-endian, no padding::

    offset  size  field
    0       4     magic b"RFR1"
    4       1     version = 1
    5       1     flags: bit0 GYRO present, bit1 INT16 samples, bit2 CLIPPED bitmap present,
                         bit3 ARRIVAL_STAMPED (times derive from arrival, jitter of tens of ms)
    6       2     n = number of samples (uint16, <= 65535)
    8       8     seq (uint64, unwrapped packet sequence number of the block)
    16      8     first_tick (int64, unwrapped sensor tick of the first sample, -1 if none)
    24      8     tick_hz (float64, NaN if none)
    32      8     sampling_rate_hz (float64, nominal)
    40      8     arrival_ns (int64, host monotonic ns when the packet arrived)
    48      8     acc_scale_ms2 (float64, m/s² per count; 1.0 for float32 samples)
    56      8     gyr_scale_dps (float64, deg/s per count; 1.0 for float32 samples)
    64      1     len_id, then len_id bytes sensor_id (UTF-8)
    .       1     len_site, then len_site bytes site (UTF-8)
    .       8n    time_s float64[n]
    .       12n   acc float32[n,3]  (6n bytes int16[n,3] with INT16)
    .       12n   gyr float32[n,3]  (6n with INT16), only with GYRO
    .       ceil(n/8) clipped bitmap (np.packbits, MSB first), only with CLIPPED
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ._errors import PayloadError

RAW_CONTENT_TYPE = "application/vnd.runform.raw.v1"
MAGIC = b"RFR1"
VERSION = 1
FLAG_GYRO, FLAG_INT16, FLAG_CLIPPED, FLAG_ARRIVAL_STAMPED = 1, 2, 4, 8
_HEADER = struct.Struct("<4sBBHQqddqdd")  # 64 bytes


@dataclass(frozen=True, slots=True, eq=False)
class RawBlock:
    """A decoded raw block (same field names as ``runform.firmware_bridge.SampleBlock``)."""

    sensor_id: str
    site: str
    seq: int
    first_tick: int
    tick_hz: float
    sampling_rate_hz: float
    arrival_ns: int
    time_s: np.ndarray
    acc_ms2: np.ndarray
    gyr_dps: np.ndarray | None
    clipped: np.ndarray | None
    arrival_stamped: bool

    @property
    def n_samples(self) -> int:
        return int(self.time_s.shape[0])


def encode_raw(block, *, int16_scale: tuple[float, float] | None = None) -> bytes:
    """Encode a SampleBlock-like object (``time_s``, ``acc_ms2``, ``gyr_dps``, ``clipped``, ids, ticks).

    ``int16_scale=(acc_scale_ms2, gyr_scale_dps)`` stores rounded counts (exact for data that came from int16
    counts with that scale); otherwise float32.
    """
    acc = np.asarray(block.acc_ms2, dtype=np.float64)
    n = acc.shape[0]
    if acc.ndim != 2 or acc.shape[1] != 3:
        raise ValueError(f"acc_ms2 must have shape (n, 3), got {acc.shape}")
    if n > 0xFFFF:
        raise ValueError(f"a raw block holds at most 65535 samples, got {n}")
    t = np.ascontiguousarray(block.time_s, dtype="<f8")
    if t.shape != (n,):
        raise ValueError(f"time_s must have shape ({n},), got {t.shape}")
    gyr = getattr(block, "gyr_dps", None)
    clipped = getattr(block, "clipped", None)
    flags = 0
    if gyr is not None:
        flags |= FLAG_GYRO
    if clipped is not None:
        flags |= FLAG_CLIPPED
    if getattr(block, "arrival_stamped", False):
        flags |= FLAG_ARRIVAL_STAMPED
    if int16_scale is not None:
        flags |= FLAG_INT16
        sa, sg = float(int16_scale[0]), float(int16_scale[1])

        def pack(x, s):
            return np.clip(np.rint(np.asarray(x, np.float64) / s), -32768, 32767).astype("<i2").tobytes()
        acc_b = pack(acc, sa)
        gyr_b = pack(gyr, sg) if gyr is not None else b""
    else:
        sa = sg = 1.0
        acc_b = acc.astype("<f4").tobytes()
        gyr_b = np.asarray(gyr, np.float64).astype("<f4").tobytes() if gyr is not None else b""
    sid = str(block.sensor_id).encode()[:255]
    site = str(block.site).encode()[:255]
    header = _HEADER.pack(MAGIC, VERSION, flags, n, int(block.seq) & 0xFFFFFFFFFFFFFFFF, int(block.first_tick),
                          float(block.tick_hz), float(block.sampling_rate_hz), int(block.arrival_ns), sa, sg)
    parts = [header, bytes([len(sid)]), sid, bytes([len(site)]), site, t.tobytes(), acc_b, gyr_b]
    if clipped is not None:
        parts.append(np.packbits(np.asarray(clipped, bool)).tobytes())
    return b"".join(parts)


def decode_raw(payload: bytes) -> RawBlock:
    """Inverse of :func:`encode_raw`; raises :class:`PayloadError` on any inconsistency."""
    mv = memoryview(payload)
    if len(mv) < _HEADER.size + 2:
        raise PayloadError(f"raw payload of {len(mv)} bytes is shorter than the header", schema=RAW_CONTENT_TYPE)
    magic, ver, flags, n, seq, first_tick, tick_hz, fs, arrival_ns, sa, sg = _HEADER.unpack_from(mv, 0)
    if magic != MAGIC:
        raise PayloadError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}", schema=RAW_CONTENT_TYPE)
    if ver != VERSION:
        raise PayloadError(f"unsupported raw version {ver}", schema=RAW_CONTENT_TYPE)
    off = _HEADER.size
    strings = []
    for _ in range(2):
        if off >= len(mv):
            raise PayloadError("raw payload truncated in the id strings", schema=RAW_CONTENT_TYPE)
        ln = mv[off]
        s = bytes(mv[off + 1: off + 1 + ln])
        if len(s) != ln:
            raise PayloadError("raw payload truncated in the id strings", schema=RAW_CONTENT_TYPE)
        try:
            strings.append(s.decode())
        except UnicodeDecodeError:
            raise PayloadError("sensor id/site is not UTF-8", schema=RAW_CONTENT_TYPE) from None
        off += 1 + ln
    i16 = bool(flags & FLAG_INT16)
    item = 6 if i16 else 12
    need = off + 8 * n + item * n * (2 if flags & FLAG_GYRO else 1) + ((n + 7) // 8 if flags & FLAG_CLIPPED else 0)
    if len(mv) != need:
        raise PayloadError(f"raw payload has {len(mv)} bytes, layout for n={n} needs {need}", schema=RAW_CONTENT_TYPE)
    t = np.frombuffer(mv, "<f8", n, off).astype(np.float64)
    off += 8 * n

    def arr(off, scale):
        if i16:
            return np.frombuffer(mv, "<i2", 3 * n, off).reshape(n, 3).astype(np.float64) * scale
        return np.frombuffer(mv, "<f4", 3 * n, off).reshape(n, 3).astype(np.float64)
    acc = arr(off, sa)
    off += item * n
    gyr = None
    if flags & FLAG_GYRO:
        gyr = arr(off, sg)
        off += item * n
    clipped = None
    if flags & FLAG_CLIPPED:
        clipped = np.unpackbits(np.frombuffer(mv, np.uint8, (n + 7) // 8, off))[:n].astype(bool)
    return RawBlock(strings[0], strings[1], seq, first_tick, tick_hz, fs, arrival_ns, t, acc, gyr, clipped,
                    bool(flags & FLAG_ARRIVAL_STAMPED))
