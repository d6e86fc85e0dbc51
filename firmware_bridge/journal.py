"""Append-only, crash-safe, lossless raw journal: one file per sensor, every notification as received.

The journal keeps the raw bytes and the arrival time of each notification, so the sensor-clock mapping (and any
decoder fix) can be recomputed later: ``JournalReader.blocks()`` re-decodes through the same protocol +
``ClockSync`` as the live bridge.

File format (version 1, little-endian)::

    header   0   8 B   magic 89 52 46 4A 0D 0A 1A 0A  ("\\x89RFJ\\r\\n\\x1a\\n")
             8   u16   format version (1)
             10  u16   flags (0, reserved)
             12  u32   JSON length L
             16  L B   JSON metadata (UTF-8): sensor (id, protocol + config, site, runner, nominal rate),
                       host clock (monotonic_ns and UTC ns read together at creation, boot id), software
             16+L u32  CRC-32 of bytes 0 .. 16+L
    record   0   u32   body length B (≤ 65536)
             4   u8    type: 1 = notification (body = raw packet), 2 = event (body = JSON)
             5   u64   arrival_ns (host ``time.monotonic_ns()``)
             13  B B   body
             13+B u32  CRC-32 of bytes 0 .. 13+B of the record

Writes go through an in-memory buffer flushed every ``flush_interval_ms`` (``write`` + ``fsync``). A crash
loses at most the unflushed interval and may leave a torn last record, which the reader reports and skips.
On a write error (disk full) the file is truncated back to its last complete record, the records stay in a
bounded buffer and are retried; ``JournalError`` tells the caller.
"""
from __future__ import annotations

import collections
import errno as _errno
import json
import mmap
import os
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ._errors import JournalError

__all__ = ["MAGIC", "FORMAT_VERSION", "RECORD_PACKET", "RECORD_EVENT", "JournalWriter", "JournalReader",
           "JournalRecord", "sensor_metadata"]

MAGIC = b"\x89RFJ\r\n\x1a\n"
FORMAT_VERSION = 1
RECORD_PACKET = 1
RECORD_EVENT = 2
MAX_BODY = 65536
_HDR = struct.Struct("<8sHHI")
_REC = struct.Struct("<IBQ")
_CRC = struct.Struct("<I")
REC_OVERHEAD = _REC.size + _CRC.size


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _host_clock() -> dict[str, Any]:
    m1 = time.monotonic_ns()
    utc = time.time_ns()
    m2 = time.monotonic_ns()
    return {"monotonic_ns": (m1 + m2) // 2, "utc_ns": utc, "uncertainty_ns": m2 - m1, "boot_id": _boot_id(),
            "utc_iso": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(utc / 1e9)) + f".{utc % 10**9:09d}Z"}


def sensor_metadata(protocol, *, sensor_id: str, site: str = "", runner: str | None = None, address: str = "",
                    **extra) -> dict[str, Any]:
    """Metadata block for ``JournalWriter`` from a ``SensorProtocol`` instance."""
    meta = {"sensor_id": sensor_id, "site": site, "runner": runner, "address": address,
            "protocol": protocol.to_metadata(), "sampling_rate_hz": protocol.sampling_rate_hz,
            "tick_hz": protocol.tick_hz}
    meta.update(extra)
    return meta


def _encode_record(rtype: int, arrival_ns: int, body: bytes) -> bytes:
    if len(body) > MAX_BODY:
        raise ValueError(f"journal record body of {len(body)} bytes exceeds {MAX_BODY}")
    head = _REC.pack(len(body), rtype, int(arrival_ns) & 0xFFFFFFFFFFFFFFFF)
    return head + body + _CRC.pack(zlib.crc32(body, zlib.crc32(head)))


class JournalWriter:
    """Append-only writer of one sensor's raw journal.

    Parameters
    ----------
    path : str | os.PathLike
        File to create (must not exist unless ``append=True``).
    sensor_meta : dict
        JSON-serialisable metadata (``sensor_metadata(protocol, sensor_id=..., site=..., runner=...)``).
    flush_interval_ms : float
        Buffered records are written and fsynced when the oldest is this old (checked on ``append``) -- the most
        a crash can lose. 0 = write every record immediately.
    fsync : bool
        ``os.fsync`` after each flush (default True).
    max_pending_bytes : int
        Bound of the in-memory buffer while the disk refuses writes; records beyond it are dropped and counted.
    retry_interval_ms : float
        After a failed flush, ``append`` retries at most this often (``flush()`` always tries).
    append : bool
        Continue an existing journal: its torn tail (if any) is cut off, the header is kept.

    Attributes
    ----------
    records_written_, bytes_written_, pending_records_, dropped_records_, flushes_ : int
    error_ : JournalError | None   last write failure (None once a flush succeeded again)
    truncated_tail_bytes_ : int    torn bytes removed when appending to an existing journal
    """

    def __init__(self, path, sensor_meta: dict[str, Any], *, flush_interval_ms: float = 200.0, fsync: bool = True,
                 max_pending_bytes: int = 16 << 20, retry_interval_ms: float = 1000.0, append: bool = False,
                 _clock=time.monotonic_ns) -> None:
        self.path = os.fspath(path)
        self.flush_interval_ms = float(flush_interval_ms)
        self.fsync = bool(fsync)
        self.max_pending_bytes = int(max_pending_bytes)
        self.retry_interval_ms = float(retry_interval_ms)
        self._clock = _clock
        self.records_written_ = 0
        self.bytes_written_ = 0
        self.pending_records_ = 0
        self.dropped_records_ = 0
        self.flushes_ = 0
        self.truncated_tail_bytes_ = 0
        self.error_: JournalError | None = None
        self._pending: collections.deque[bytes] = collections.deque()
        self._pending_bytes = 0
        self._oldest_ns: int | None = None
        self._next_retry_ns = 0
        self._unreported_drops = 0
        self._fd: int | None = None
        if append and os.path.exists(self.path):
            rd = JournalReader(self.path)
            for _ in rd.records():
                pass
            self.header_ = rd.header_
            self._fd = os.open(self.path, os.O_WRONLY)
            end = rd.good_end_offset_
            self.truncated_tail_bytes_ = os.fstat(self._fd).st_size - end
            os.ftruncate(self._fd, end)
            os.lseek(self._fd, end, os.SEEK_SET)
            self._good_len = end
            self.append_event("reopened", truncated_tail_bytes=self.truncated_tail_bytes_, host_clock=_host_clock())
            return
        self.header_ = {"format": "runform-journal", "format_version": FORMAT_VERSION, "sensor": sensor_meta,
                        "host_clock": _host_clock(), "arrival_clock": "time.monotonic_ns",
                        "software": {"runform": _runform_version()}}
        try:
            js = json.dumps(self.header_, separators=(",", ":"), sort_keys=True).encode()
        except TypeError as e:
            raise JournalError(f"sensor metadata is not JSON-serialisable: {e}", path=self.path) from None
        head = _HDR.pack(MAGIC, FORMAT_VERSION, 0, len(js)) + js
        head += _CRC.pack(zlib.crc32(head))
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise JournalError(f"journal {self.path} exists (pass append=True to continue it)",
                               path=self.path, errno=_errno.EEXIST) from None
        except OSError as e:
            raise JournalError(f"cannot create journal {self.path}: {e.strerror}", path=self.path,
                               errno=e.errno) from None
        try:
            self._write_all(head)
            os.fsync(self._fd)
            self._fsync_dir()
        except OSError as e:
            os.close(self._fd)
            self._fd = None
            try:
                os.unlink(self.path)
            except OSError:
                pass
            raise JournalError(f"cannot write the journal header of {self.path}: {e.strerror}", path=self.path,
                               errno=e.errno) from None
        self._good_len = len(head)

    # ------------------------------------------------------------------------------------------------ API
    def append(self, raw_packet: bytes | bytearray | memoryview, arrival_ns: int) -> None:
        """Queue one notification; flushes when due. Raises ``JournalError`` when a due flush fails (the record
        is kept in the bounded buffer and retried)."""
        self._queue(_encode_record(RECORD_PACKET, arrival_ns, bytes(raw_packet)), arrival_ns)

    def append_event(self, event: str, arrival_ns: int | None = None, **fields: Any) -> None:
        """Queue an event record (connect, disconnect, config read, note ...) with JSON fields."""
        now = self._clock() if arrival_ns is None else arrival_ns
        body = json.dumps({"event": event, **fields}, separators=(",", ":"), default=str).encode()
        self._queue(_encode_record(RECORD_EVENT, now, body), now)

    def flush(self) -> int:
        """Write and fsync everything buffered. Returns bytes written; raises ``JournalError`` on failure."""
        if self._fd is None:
            raise JournalError(f"journal {self.path} is closed", path=self.path,
                               pending_records=self.pending_records_, dropped_records=self.dropped_records_)
        if self._unreported_drops:
            body = json.dumps({"event": "dropped", "records": self._unreported_drops}).encode()
            self._pending.append(_encode_record(RECORD_EVENT, self._clock(), body))   # drops were the newest
            self._pending_bytes += len(self._pending[-1])
            self.pending_records_ += 1
            self._unreported_drops = 0
        if not self._pending:
            return 0
        buf = b"".join(self._pending)
        n_rec = len(self._pending)
        try:
            self._write_all(buf)
            if self.fsync:
                os.fsync(self._fd)
        except OSError as e:
            self._rollback()
            self._next_retry_ns = self._clock() + int(self.retry_interval_ms * 1e6)
            what = "disk full" if e.errno == _errno.ENOSPC else (e.strerror or str(e))
            self.error_ = JournalError(
                f"journal {self.path}: write failed ({what}); {self.pending_records_} records kept in memory "
                f"({self._pending_bytes} of at most {self.max_pending_bytes} bytes) and retried, "
                f"{self.dropped_records_} dropped so far; everything already on disk is intact",
                path=self.path, errno=e.errno, pending_records=self.pending_records_,
                dropped_records=self.dropped_records_)
            raise self.error_ from None
        self._good_len += len(buf)
        self.bytes_written_ += len(buf)
        self.records_written_ += n_rec
        self.flushes_ += 1
        self._pending.clear()
        self._pending_bytes = 0
        self.pending_records_ = 0
        self._oldest_ns = None
        self.error_ = None
        return len(buf)

    def close(self) -> None:
        """Flush (raising ``JournalError`` if that fails, the file stays consistent) and close."""
        if self._fd is None:
            return
        try:
            self.append_event("closed", host_clock=_host_clock(), records=self.records_written_ + self.pending_records_,
                              dropped_records=self.dropped_records_)
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def closed(self) -> bool:
        return self._fd is None

    def __enter__(self) -> "JournalWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ internals
    def _queue(self, rec: bytes, arrival_ns: int) -> None:
        if self._fd is None:
            raise JournalError(f"journal {self.path} is closed", path=self.path)
        if self._pending_bytes + len(rec) > self.max_pending_bytes:
            self.dropped_records_ += 1
            self._unreported_drops += 1
        else:
            self._pending.append(rec)
            self._pending_bytes += len(rec)
            self.pending_records_ += 1
        now = self._clock()
        if self._oldest_ns is None:
            self._oldest_ns = now
        if self.error_ is not None:
            if now >= self._next_retry_ns:
                self.flush()
            return
        if (now - self._oldest_ns) >= self.flush_interval_ms * 1e6 or self._pending_bytes >= (4 << 20):
            self.flush()

    def _write_all(self, buf: bytes) -> None:
        view = memoryview(buf)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def _rollback(self) -> None:
        """Cut a partially written flush off, so the file ends at a record boundary."""
        try:
            os.ftruncate(self._fd, self._good_len)
            os.lseek(self._fd, self._good_len, os.SEEK_SET)
        except OSError:
            pass

    def _fsync_dir(self) -> None:
        try:
            dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass


def _runform_version() -> str:
    try:
        from importlib.metadata import version
        return version("runform")
    except Exception:
        return "unknown"


@dataclass(frozen=True, slots=True)
class JournalRecord:
    type: int
    arrival_ns: int
    data: bytes
    offset: int

    @property
    def event(self) -> dict | None:
        return json.loads(self.data) if self.type == RECORD_EVENT else None


class JournalReader:
    """Reads a journal, tolerating a torn last record (crash) and skipping corrupt regions (reported).

    Attributes (complete after a full iteration of ``records()``)
    ----------
    header_ : dict                 JSON metadata
    sensor_ : dict                 ``header_["sensor"]``
    records_read_ : int
    torn_tail_bytes_ : int         bytes of an incomplete last record (a crash during a write), 0 if clean
    corrupt_regions_ : list[tuple[int, int]]   (offset, length) of skipped corrupt bytes before the tail
    good_end_offset_ : int         end of the last valid record
    """

    def __init__(self, path) -> None:
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                head = f.read(_HDR.size)
                if len(head) < _HDR.size or head[:8] != MAGIC:
                    raise JournalError(f"{self.path} is not a runform journal (bad magic)", path=self.path)
                _, version, _flags, n = _HDR.unpack(head)
                if version != FORMAT_VERSION:
                    raise JournalError(f"{self.path}: journal format version {version}, this reader supports "
                                       f"{FORMAT_VERSION}", path=self.path)
                js = f.read(n)
                crc = f.read(4)
        except OSError as e:
            raise JournalError(f"cannot read journal {self.path}: {e.strerror}", path=self.path,
                               errno=e.errno) from None
        if len(js) < n or len(crc) < 4 or _CRC.unpack(crc)[0] != zlib.crc32(head + js):
            raise JournalError(f"{self.path}: journal header truncated or corrupt", path=self.path)
        self.header_ = json.loads(js)
        self.sensor_ = self.header_.get("sensor", {})
        self._data_start = _HDR.size + n + 4
        self.records_read_ = 0
        self.torn_tail_bytes_ = 0
        self.corrupt_regions_: list[tuple[int, int]] = []
        self.good_end_offset_ = self._data_start
        self.decoder_ = None

    def records(self) -> Iterator[JournalRecord]:
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= self._data_start:
                self.good_end_offset_ = min(size, self._data_start)
                return
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                yield from self._scan(mm, size)

    def _valid_at(self, mm, i: int, size: int) -> int | None:
        """Length of a valid record at ``i`` or None."""
        if i + REC_OVERHEAD > size:
            return None
        blen, rtype, _ = _REC.unpack_from(mm, i)
        if blen > MAX_BODY or rtype not in (RECORD_PACKET, RECORD_EVENT) or i + REC_OVERHEAD + blen > size:
            return None
        end = i + _REC.size + blen
        if _CRC.unpack_from(mm, end)[0] != zlib.crc32(mm[i:end]):
            return None
        return REC_OVERHEAD + blen

    def _scan(self, mm, size: int) -> Iterator[JournalRecord]:
        i = self._data_start
        self.records_read_ = 0
        self.corrupt_regions_ = []
        while i < size:
            n = self._valid_at(mm, i, size)
            if n is not None:
                blen, rtype, arrival = _REC.unpack_from(mm, i)
                self.records_read_ += 1
                self.good_end_offset_ = i + n
                yield JournalRecord(rtype, arrival, bytes(mm[i + _REC.size:i + _REC.size + blen]), i)
                i += n
                continue
            # not a valid record: torn tail (nothing valid follows) or a corrupt region (resync on the next one)
            j = i + 1
            while j < size and self._valid_at(mm, j, size) is None:
                j += 1
            if j >= size:
                self.torn_tail_bytes_ = size - i
                return
            self.corrupt_regions_.append((i, j - i))
            i = j

    def packets(self) -> Iterator[tuple[int, bytes]]:
        """(arrival_ns, raw packet) of every notification record."""
        for r in self.records():
            if r.type == RECORD_PACKET:
                yield r.arrival_ns, r.data

    def events(self) -> list[dict]:
        return [dict(r.event, arrival_ns=r.arrival_ns) for r in self.records() if r.type == RECORD_EVENT]

    def protocol(self):
        from .protocols import protocol_from_metadata
        return protocol_from_metadata(self.sensor_.get("protocol", {}))

    def blocks(self, protocol=None, clock=None) -> Iterator:
        """Re-decode every notification into ``SampleBlock``/``MetricsBlock`` through the protocol (rebuilt from
        the header unless given) and a fresh ``ClockSync`` (or ``clock``). Link statistics of the pass end up
        in ``decoder_.stats()``."""
        from .timestamping import SensorDecoder
        proto = protocol or self.protocol()
        self.decoder_ = SensorDecoder(proto, sensor_id=self.sensor_.get("sensor_id", ""),
                                      site=self.sensor_.get("site", ""), clock=clock)
        for arrival, data in self.packets():
            yield from self.decoder_.feed(data, arrival)

    def read_arrays(self, protocol=None, clock=None) -> dict[str, np.ndarray]:
        """All samples concatenated: ``time_s``, ``acc_ms2``, ``gyr_dps`` (or None), ``clipped``, ``seq``,
        ``segment``, ``arrival_stamped`` (per sample)."""
        from ._types import SampleBlock
        blocks = [b for b in self.blocks(protocol, clock) if isinstance(b, SampleBlock)]
        if not blocks:
            return {"time_s": np.zeros(0), "acc_ms2": np.zeros((0, 3)), "gyr_dps": None,
                    "clipped": np.zeros(0, bool), "seq": np.zeros(0, np.int64), "segment": np.zeros(0, np.int64)}
        rep = np.array([b.n_samples for b in blocks])
        return {
            "time_s": np.concatenate([b.time_s for b in blocks]),
            "acc_ms2": np.concatenate([b.acc_ms2 for b in blocks]),
            "gyr_dps": (np.concatenate([b.gyr_dps for b in blocks])
                        if all(b.gyr_dps is not None for b in blocks) else None),
            "clipped": np.concatenate([b.clipped if b.clipped is not None else np.zeros(b.n_samples, bool)
                                       for b in blocks]),
            "seq": np.repeat([b.seq for b in blocks], rep),
            "segment": np.repeat([b.segment for b in blocks], rep),
            "arrival_stamped": np.repeat([b.arrival_stamped for b in blocks], rep),
        }

    def report(self) -> dict[str, Any]:
        """Integrity summary (iterates the file if not done yet)."""
        for _ in self.records():
            pass
        return {"path": self.path, "records": self.records_read_, "torn_tail_bytes": self.torn_tail_bytes_,
                "corrupt_regions": list(self.corrupt_regions_), "good_end_offset": self.good_end_offset_}
