"""Compressed raw-sample chunks: several packets of one sensor in one BLOB.

Layout (codec ``rfc1``): a 20-byte header ``<4sBBHII`` = magic ``b"RFC1"``, version 1, flags (bit0 GYRO,
bit1 CLIPPED, bit2 SENSOR_TICK), reserved u16, n samples (u32), n blocks (u32); then zlib (level 1) of the
columns, each byte-shuffled (byte 0 of every value, then byte 1, ...: the slowly varying high bytes of
float64 times and samples become long runs, which zlib compresses ~2-3x better than the plain array)::

    time_s f8[n] | acc_ms2 f8[n,3] | gyr_dps f8[n,3] (GYRO) | clipped packbits (CLIPPED) | sensor_tick i8[n]
    (SENSOR_TICK) | block_start i4[nb] | block_seq i8[nb] | block_first_tick i8[nb] | block_arrival_ns i8[nb]

Values are stored exactly as given (float64): nothing is rounded.
"""
from __future__ import annotations

import struct
import zlib
from typing import Any, Sequence

import numpy as np

CODEC = "rfc1"
_HDR = struct.Struct("<4sBBHII")
_MAGIC = b"RFC1"
FLAG_GYRO, FLAG_CLIPPED, FLAG_TICK = 1, 2, 4
ZLIB_LEVEL = 1


class ChunkError(ValueError):
    pass


def _shuffle(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a)
    it = a.dtype.itemsize
    if it == 1 or a.size == 0:
        return a.tobytes()
    return a.reshape(-1).view(np.uint8).reshape(-1, it).T.tobytes()


def _unshuffle(buf: memoryview, off: int, count: int, dtype: str) -> tuple[np.ndarray, int]:
    dt = np.dtype(dtype)
    nbytes = count * dt.itemsize
    if off + nbytes > len(buf):
        raise ChunkError("raw chunk truncated")
    raw = np.frombuffer(buf, np.uint8, nbytes, off)
    if dt.itemsize > 1 and count:
        raw = raw.reshape(dt.itemsize, count).T.copy()
    return raw.reshape(-1).view(dt).copy(), off + nbytes


def encode_chunk(blocks: Sequence[dict[str, Any]]) -> tuple[bytes, int, int]:
    """Blocks (dicts with time_s, acc_ms2, gyr_dps|None, clipped|None, sensor_tick|None, seq, first_tick,
    arrival_ns) -> (blob, n_samples, uncompressed_bytes)."""
    ns = np.array([len(b["time_s"]) for b in blocks], np.int64)
    n = int(ns.sum())
    nb = len(blocks)
    if n >= 2**32 or nb >= 2**32:
        raise ChunkError("chunk too large")
    starts = np.zeros(nb, np.int32)
    if nb > 1:
        starts[1:] = np.cumsum(ns[:-1])
    t = np.concatenate([np.asarray(b["time_s"], np.float64) for b in blocks])
    acc = np.concatenate([np.asarray(b["acc_ms2"], np.float64).reshape(-1, 3) for b in blocks])
    flags = 0
    cols = [_shuffle(t), _shuffle(acc)]
    if any(b.get("gyr_dps") is not None for b in blocks):
        flags |= FLAG_GYRO
        gyr = np.concatenate([np.asarray(b["gyr_dps"], np.float64).reshape(-1, 3) if b.get("gyr_dps") is not None
                              else np.full((len(b["time_s"]), 3), np.nan) for b in blocks])
        cols.append(_shuffle(gyr))
    if any(b.get("clipped") is not None for b in blocks):
        flags |= FLAG_CLIPPED
        cl = np.concatenate([np.asarray(b["clipped"], bool).reshape(-1) if b.get("clipped") is not None
                             else np.zeros(len(b["time_s"]), bool) for b in blocks])
        cols.append(np.packbits(cl).tobytes())
    if any(b.get("sensor_tick") is not None for b in blocks):
        flags |= FLAG_TICK
        tk = np.concatenate([np.asarray(b["sensor_tick"], np.int64).reshape(-1) if b.get("sensor_tick") is not None
                             else np.full(len(b["time_s"]), -1, np.int64) for b in blocks])
        cols.append(_shuffle(tk))
    cols.append(_shuffle(starts))
    for k in ("seq", "first_tick", "arrival_ns"):
        cols.append(_shuffle(np.array([int(b[k]) for b in blocks], np.int64)))
    payload = b"".join(cols)
    blob = _HDR.pack(_MAGIC, 1, flags, 0, n, nb) + zlib.compress(payload, ZLIB_LEVEL)
    return blob, n, len(payload)


def decode_chunk(blob: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_chunk`: per-sample arrays (block fields expanded to samples)."""
    if len(blob) < _HDR.size:
        raise ChunkError("raw chunk shorter than its header")
    magic, ver, flags, _, n, nb = _HDR.unpack_from(blob, 0)
    if magic != _MAGIC or ver != 1:
        raise ChunkError(f"not a raw chunk (magic {magic!r}, version {ver})")
    try:
        buf = memoryview(zlib.decompress(memoryview(blob)[_HDR.size:]))
    except zlib.error as exc:
        raise ChunkError(f"raw chunk does not decompress: {exc}") from None
    off = 0
    t, off = _unshuffle(buf, off, n, "<f8")
    acc, off = _unshuffle(buf, off, 3 * n, "<f8")
    gyr = None
    if flags & FLAG_GYRO:
        gyr, off = _unshuffle(buf, off, 3 * n, "<f8")
        gyr = gyr.reshape(n, 3)
    if flags & FLAG_CLIPPED:
        nbytes = (n + 7) // 8
        clipped = np.unpackbits(np.frombuffer(buf, np.uint8, nbytes, off))[:n].astype(bool)
        off += nbytes
    else:
        clipped = np.zeros(n, bool)
    if flags & FLAG_TICK:
        tick, off = _unshuffle(buf, off, n, "<i8")
    else:
        tick = np.full(n, -1, np.int64)
    starts, off = _unshuffle(buf, off, nb, "<i4")
    seq, off = _unshuffle(buf, off, nb, "<i8")
    first_tick, off = _unshuffle(buf, off, nb, "<i8")
    arrival, off = _unshuffle(buf, off, nb, "<i8")
    if off != len(buf):
        raise ChunkError(f"raw chunk has {len(buf) - off} unexpected trailing bytes")
    counts = np.diff(np.append(starts.astype(np.int64), n))
    return {"time_s": t, "acc_ms2": acc.reshape(n, 3), "gyr_dps": gyr, "clipped": clipped, "sensor_tick": tick,
            "seq": np.repeat(seq, counts), "first_tick": np.repeat(first_tick, counts),
            "arrival_ns": np.repeat(arrival, counts), "block": np.repeat(np.arange(nb, dtype=np.int64), counts)}
