"""Shard runners over worker processes: one edge (event loop, journal thread, MQTT links) per process.

One Python process runs one core's worth of Python (the GIL); the per-runner work (decode, clock sync, DSP, cue
engine, JSON, MQTT) is independent between runners, so N runners are split into disjoint groups and each group
runs in its own process. Every runner keeps its own MQTT connection and last will, so a worker that dies takes
exactly its runners "offline" on the broker and nobody else's.

:func:`run_sharded` starts the workers with the ``spawn`` method (no inherited threads, sockets or event loops),
forwards SIGINT/SIGTERM to them (each worker stops its edge cleanly: final status, journals closed) and
collects one result dict per worker. A worker that dies without a result is reported as
``{"worker": i, "error": ...}``; the others keep running.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
from typing import Callable, Sequence

__all__ = ["run_sharded", "shard"]


def shard(items: Sequence, n_workers: int) -> list[list]:
    """Round-robin split into at most ``n_workers`` non-empty, disjoint groups (order kept within a group)."""
    n = max(1, min(int(n_workers), len(items)))
    return [list(items[i::n]) for i in range(n)]


def _child(target: Callable[..., dict], index: int, group: list, common: dict, out) -> None:
    try:
        result = target(group, worker_index=index, **common)
        out.put((index, {"worker": index, "pid": os.getpid(), **(result or {})}))
    except BaseException as exc:  # reported to the parent, never silent
        out.put((index, {"worker": index, "pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc()}))


def run_sharded(target: Callable[..., dict], groups: Sequence[list], common: dict | None = None, *,
                timeout_s: float | None = None) -> list[dict]:
    """Run ``target(group, worker_index=i, **common) -> dict`` in one spawned process per group.

    ``target`` must be a module-level function (it is pickled by name). Returns the results in group order.
    ``timeout_s``: after this long the workers are sent SIGTERM (they stop cleanly), then killed 15 s later.
    """
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(target, i, list(g), dict(common or {}), out), name=f"runform-w{i}",
                         daemon=False) for i, g in enumerate(groups)]
    stopping = []

    def forward(signum, frame):
        stopping.append(signum)
        for p in procs:
            if p.is_alive() and p.pid:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    results: dict[int, dict] = {}
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout_s if timeout_s else None
        killed_at = None
        while len(results) < len(procs):
            try:
                i, r = out.get(timeout=0.2)
                results[i] = r
                continue
            except queue.Empty:
                pass
            now = time.monotonic()
            if deadline is not None and now > deadline and not stopping:
                forward(signal.SIGTERM, None)
                killed_at = now + 15.0
            if killed_at is not None and now > killed_at:
                for p in procs:
                    if p.is_alive():
                        p.kill()
            for i, p in enumerate(procs):  # a worker that died without a result
                if i not in results and not p.is_alive() and p.exitcode is not None:
                    try:  # its result may still be in the pipe
                        j, r = out.get(timeout=0.5)
                        results[j] = r
                    except queue.Empty:
                        results[i] = {"worker": i, "pid": p.pid,
                                      "error": f"worker exited with code {p.exitcode} without a result"}
        for p in procs:
            p.join(5)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for p in procs:
            if p.is_alive():
                p.kill()
    return [results[i] for i in range(len(procs))]
