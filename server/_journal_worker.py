"""Raw journals written and fsynced on ONE background thread, so the edge's event loop never waits for the disk.

``JournalWriter.append`` flushes (``write`` + ``fsync``) from inside ``append`` when its flush interval is due; an
fsync on a busy disk takes from a millisecond to hundreds of them, and in the event loop that is latency for
every runner's cues. :class:`JournalWorker` owns the writers instead: the loop appends ``(writer, raw,
arrival_ns)`` to a list (a list append, no lock, no wake-up), and the thread takes the whole list every
``batch_s``, appends the records to their writers, which flush on their own interval, and fsyncs every writer
with pending data every ``sweep_s``. ``os.write``/``os.fsync`` release the GIL; taking records in batches keeps
the thread from contending for the GIL on every packet (each hand-off of the GIL costs the loop up to the
switch interval).

Bounded: at most ``max_records`` records wait (about 40 s of 100 sensors at 25 packets/s);
beyond that a record is refused, ``dropped`` counts it and the caller reports it (the disk cannot keep up:
nothing else could be done without unbounded memory). Write errors (disk full) are counted per writer in
``errors`` with the last message; the writer itself keeps and retries what it could not write.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

__all__ = ["JournalWorker"]

log = logging.getLogger("runform.edge.journal")

_STOP = object()


class JournalWorker:
    def __init__(self, *, max_records: int = 100_000, batch_s: float = 0.05, sweep_s: float = 1.0) -> None:
        self.max_records = int(max_records)
        self.batch_s = float(batch_s)
        self.sweep_s = float(sweep_s)
        self._ops: queue.SimpleQueue = queue.SimpleQueue()  # open / event / close / stop, in order
        self._buf: list = []  # records from the loop; swapped out whole by the worker
        self._writers: dict[int, Any] = {}
        self.appended = 0
        self.dropped = 0
        self.errors: dict[str, int] = {}
        self.last_error: str | None = None
        self.max_depth = 0
        self._thread = threading.Thread(target=self._run, name="runform-journal", daemon=True)
        self._thread.start()

    # ---- caller (event loop) side ------------------------------------------------------------------
    def open(self, writer_factory) -> Any:
        """Create a writer with ``writer_factory()`` on the worker thread (the header is fsynced there too)
        and return it; blocks the caller until done (once per sensor at start-up / first connection)."""
        done = threading.Event()
        box: list = []
        self._ops.put(("open", writer_factory, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def append(self, writer, raw: bytes, arrival_ns: int) -> bool:
        buf = self._buf
        if len(buf) >= self.max_records:
            self.dropped += 1
            return False
        buf.append((writer, raw, arrival_ns))
        if len(buf) > self.max_depth:
            self.max_depth = len(buf)
        return True

    def event(self, writer, event: str, **fields) -> None:
        self._ops.put(("event", writer, event, fields))

    def close_writer(self, writer) -> None:
        self._ops.put(("close", writer, None, None))

    def close(self, timeout_s: float = 30.0) -> None:
        """Append everything queued, flush and close every writer, stop the thread."""
        self._ops.put(_STOP)
        self._thread.join(timeout_s)

    # ---- worker thread --------------------------------------------------------------------------------
    def _error(self, writer, exc: BaseException) -> None:
        path = str(getattr(writer, "path", "?"))
        self.errors[path] = self.errors.get(path, 0) + 1
        self.last_error = str(exc)
        if self.errors[path] <= 3 or self.errors[path] % 1000 == 0:
            log.error("journal %s: %s", path, exc)

    def _drain(self) -> None:
        buf, self._buf = self._buf, []  # appends racing with the swap land in one list or the other
        for writer, raw, arrival_ns in buf:
            try:
                writer.append(raw, arrival_ns)  # flushes + fsyncs here when the writer's interval is due
                self.appended += 1
            except Exception as exc:
                self._error(writer, exc)

    def _flush_all(self) -> None:
        for w in list(self._writers.values()):
            if getattr(w, "pending_records_", 0) and not w.closed:
                try:
                    w.flush()
                except Exception as exc:
                    self._error(w, exc)

    def _run(self) -> None:
        last_sweep = time.monotonic()
        while True:
            try:
                op = self._ops.get(timeout=self.batch_s)
            except queue.Empty:
                op = None
            self._drain()  # records appended before an op was queued are written before it
            if op is _STOP:
                break
            if op is not None:
                self._op(op)
            now = time.monotonic()
            if now - last_sweep >= self.sweep_s:  # writers whose sensor went quiet get flushed too
                self._flush_all()
                last_sweep = now
        self._drain()
        for w in list(self._writers.values()):
            try:
                w.close()
            except Exception as exc:
                self._error(w, exc)
        self._writers.clear()

    def _op(self, op) -> None:
        kind = op[0]
        if kind == "open":
            try:
                w = op[1]()
                self._writers[id(w)] = w
            except BaseException as exc:  # reported to the caller
                w = exc
            op[2].append(w)
            op[3].set()
        elif kind == "event":
            try:
                op[1].append_event(op[2], **op[3])
            except Exception as exc:
                self._error(op[1], exc)
        elif kind == "close":
            w = op[1]
            self._writers.pop(id(w), None)
            try:
                w.close()
            except Exception as exc:
                self._error(w, exc)
