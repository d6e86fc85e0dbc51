"""Several sensors (of one or several runners) -> ONE bounded queue of SampleBlocks."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ._link import SensorLink
from ._types import SensorSpec, SensorStats

__all__ = ["Bridge"]
log = logging.getLogger(__name__)


class Bridge:
    """Connect to many sensors at once and merge their samples into one queue.

    Scanning and connecting are serialized through one `asyncio.Lock` (BlueZ handles one
    scan/connect at a time reliably); once connected, all sensors notify concurrently. Each
    notification is written to the raw journal first (when ``journal_dir`` is set), then
    decoded and timestamped, and the resulting `SampleBlock` is put on `queue` (bounded, size
    ``queue_size``). If the consumer falls behind and the queue is full, the block is NOT put
    and the loss is counted per sensor (``SensorStats.blocks_dropped_queue_full``) and logged;
    the journal still holds it. Use ``queue_size=0`` when nothing consumes live blocks (pure
    recording).

    Parameters
    ----------
    sensors
        `SensorSpec` list (see `load_bridge_config`, `parse_sensor_option`).
    adapter
        BlueZ adapter, e.g. ``"hci0"``.
    queue_size
        Capacity of the live queue (blocks, about one per notification).
    journal_dir
        Directory for one raw journal per sensor (``<sensor_id>.rfj``); None = no journal.
    on_block
        Optional synchronous callback per block, called before the block is queued.
    link_options
        Passed to every `SensorLink` (``reconnect``, ``backoff_initial_s``, ``backoff_max_s``,
        ``find_timeout_s``, ``backend``, ``scanner_backend``...).

    Attributes
    ----------
    queue : asyncio.Queue
        The SampleBlocks of all sensors, in arrival order.
    links : dict[str, SensorLink]
        By ``sensor_id``.
    blocks_dropped_ : int
        Total blocks not queued because the consumer was slow.
    """

    def __init__(self, sensors: Iterable[SensorSpec], *, adapter: str | None = None, queue_size: int = 2048,
                 journal_dir: str | Path | None = None, on_block: Callable[[Any], None] | None = None,
                 **link_options: Any):
        self.specs = list(sensors)
        if not self.specs:
            raise ValueError("a Bridge needs at least one sensor")
        ids = [s.sensor_id for s in self.specs]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate sensor ids {dup}: each runner/site pair once")
        self.adapter = adapter
        self.queue_size = int(queue_size)
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max(1, self.queue_size))
        self.journal_dir = Path(journal_dir) if journal_dir is not None else None
        self.on_block = on_block
        self.lock = asyncio.Lock()
        self.links: dict[str, SensorLink] = {}
        self.journals: dict[str, Any] = {}
        self.blocks_dropped_ = 0
        self._dropped_logged = 0
        self._tasks: list[asyncio.Task] = []
        self._link_options = link_options
        self.started_at_s: float | None = None
        for spec in self.specs:
            link = SensorLink(spec, adapter=adapter, lock=self.lock, on_block=self._on_block,
                              on_raw=self._on_raw if self.journal_dir is not None else None,
                              on_connected=self._on_connected, **link_options)
            self.links[spec.sensor_id] = link

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> "Bridge":
        if self.journal_dir is not None:
            self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.started_at_s = time.monotonic()
        for sid, link in self.links.items():
            self._tasks.append(asyncio.create_task(link.run(), name=f"sensor-link-{sid}"))
        return self

    async def stop(self) -> None:
        for link in self.links.values():
            await link.stop()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=10.0)
            for t in pending:
                t.cancel()
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    log.error("sensor link task failed: %r", t.exception())
        self._tasks.clear()
        for sid, journal in list(self.journals.items()):
            try:
                journal.close()
            except Exception as exc:
                log.error("%s: closing journal failed: %s", sid, exc)
        self.journals.clear()

    async def __aenter__(self) -> "Bridge":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self.queue.get()

    # -- status ----------------------------------------------------------------------------------------
    def stats(self) -> dict[str, SensorStats]:
        """Per-sensor statistics (snapshots), by sensor_id."""
        return {sid: link.stats() for sid, link in self.links.items()}

    def all_streaming(self) -> bool:
        return all(link.is_streaming for link in self.links.values())

    async def wait_streaming(self, timeout_s: float = 15.0, sensor_ids: Iterable[str] | None = None) -> bool:
        """Wait until the given (default: all) sensors stream; returns False on timeout."""
        ids = list(sensor_ids) if sensor_ids is not None else list(self.links)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.links[i].is_streaming for i in ids):
                return True
            await asyncio.sleep(0.02)
        return False

    def runner_of(self, sensor_id: str) -> str:
        return self.links[sensor_id].spec.runner

    async def control(self, sensor_id: str, command: str, **params: Any) -> Any:
        """Send a control-point command to one sensor (see `SensorLink.control`)."""
        return await self.links[sensor_id].control(command, **params)

    # -- callbacks (hot path) -------------------------------------------------------------------------------
    def _on_connected(self, link: SensorLink) -> None:
        if self.journal_dir is None:
            return
        journal = self.journals.get(link.sensor_id)
        if journal is None:
            from ._compat import open_journal
            self.journals[link.sensor_id] = open_journal(self.journal_dir / f"{link.sensor_id}.rfj", link)
        else:  # a reconnect: note it (and the configuration read again) in the journal
            journal.append_event("reconnected", protocol=link.protocol_.to_metadata())

    def _on_raw(self, link: SensorLink, raw: bytes, arrival_ns: int) -> None:
        journal = self.journals.get(link.sensor_id)
        if journal is not None:
            journal.append(raw, arrival_ns)

    def _on_block(self, block) -> None:
        if self.on_block is not None:
            self.on_block(block)
        if self.queue_size <= 0:
            return
        try:
            self.queue.put_nowait(block)
        except asyncio.QueueFull:
            self.blocks_dropped_ += 1
            link = self.links.get(block.sensor_id)
            if link is not None:
                link._stats.blocks_dropped_queue_full += 1
            if self._dropped_logged < 10 or self.blocks_dropped_ % 1000 == 0:
                self._dropped_logged += 1
                log.warning("live queue full (%d blocks): consumer too slow, %d blocks not queued so far "
                            "(raw journal keeps them)", self.queue_size, self.blocks_dropped_)
