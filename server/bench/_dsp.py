"""DSP throughput: the full streaming detector (chunked and whole-array), per-chunk latency, the bare numba
kernels on big arrays, and where the time goes at BLE-sized chunks.

The bare kernels are found without hard-coding their signatures: :class:`KernelSpy` wraps every numba
dispatcher the detector module calls (its globals and the kernel modules it reaches through attributes),
records the arguments of each call during a whole-array run, then replays each kernel once on the
concatenation of its per-sample arguments (state and parameters from the first call). If the lead changes a
kernel's arguments the bench follows automatically.
"""
from __future__ import annotations

import cProfile
import io
import math
import pstats
import statistics
import sys
import time
import types
from collections import defaultdict

import numpy as np

from runform.dsp import GaitEventDetector

CHUNK_SAMPLES = 20  # samples per update(), as one BLE notification batch delivers them


def _is_dispatcher(obj) -> bool:
    try:
        from numba.core.dispatcher import Dispatcher
    except Exception:  # pragma: no cover - numba always present in the runform venv
        return False
    return isinstance(obj, Dispatcher)


class _ModuleProxy:
    """Stands in for a kernel module inside ``_detector`` so ``K.kernel(...)`` calls can be timed without
    touching the real module (whose jitted functions must keep seeing the real globals)."""

    def __init__(self, module, wrap):
        self._module = module
        self._wrap = wrap
        self._cache: dict = {}

    def __getattr__(self, name):
        obj = getattr(self._module, name)
        if _is_dispatcher(obj):
            if name not in self._cache:
                self._cache[name] = self._wrap(name, obj)
            return self._cache[name]
        return obj


class KernelSpy:
    """Context manager: time (and optionally record) every numba kernel call made by the detector wrapper."""

    def __init__(self, record: bool = False):
        self.record = record
        self.ns: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self.records: dict[tuple[str, int], list[tuple]] = defaultdict(list)
        self.originals: dict[str, object] = {}
        self._occ: dict[str, int] = defaultdict(int)
        self._patched: list[tuple[object, str, object]] = []
        self._block_n = -1

    def _wrap(self, name, fn):
        self.originals[name] = fn
        ns, calls, records, occ = self.ns, self.calls, self.records, self._occ
        record = self.record
        perf = time.perf_counter_ns

        def timed(*args, **kwargs):
            t0 = perf()
            out = fn(*args, **kwargs)
            ns[name] += perf() - t0
            calls[name] += 1
            if record:
                k = occ[name]
                occ[name] = k + 1
                records[(name, k)].append((self._block_n,
                                           tuple(_snapshot(a) if isinstance(a, np.ndarray) else a for a in args)))
            return out

        return timed

    def __enter__(self):
        from runform.dsp import _detector as D

        for name, obj in list(vars(D).items()):
            if _is_dispatcher(obj):
                self._patched.append((D, name, obj))
                setattr(D, name, self._wrap(name, obj))
            elif isinstance(obj, types.ModuleType) and obj.__name__.startswith("runform.dsp."):
                if any(_is_dispatcher(v) for v in vars(obj).values()):
                    self._patched.append((D, name, obj))
                    setattr(D, name, _ModuleProxy(obj, self._wrap))
        # block boundaries: reset the per-block occurrence counters so the k-th call of a kernel
        # within each block is grouped with the k-th call of the other blocks
        cls = D.GaitEventDetector
        meth_name = "_update" if "_update" in vars(cls) else "update"
        meth = vars(cls)[meth_name]
        occ = self._occ

        spy = self

        def block(self_det, *a, **kw):
            occ.clear()
            first = a[0] if a else next(iter(kw.values()), None)
            spy._block_n = int(first.shape[0]) if isinstance(first, np.ndarray) and first.ndim >= 1 else -1
            return meth(self_det, *a, **kw)

        self._patched.append((cls, meth_name, meth))
        setattr(cls, meth_name, block)
        return self

    def __exit__(self, *exc):
        for owner, name, obj in reversed(self._patched):
            setattr(owner, name, obj)
        self._patched.clear()
        return False

    @property
    def total_ns(self) -> int:
        return int(sum(self.ns.values()))


def _pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if a.size else math.nan


def _chunks(acc: np.ndarray, t: np.ndarray, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Separate contiguous arrays per chunk, as packets arrive (slicing cost not timed)."""
    return [(np.ascontiguousarray(acc[i:i + size]), np.ascontiguousarray(t[i:i + size]))
            for i in range(0, acc.shape[0], size)]


def run_chunked(site, fs, body_frame, chunks, latencies_ns=None) -> tuple[float, float, int]:
    """Feed the chunks to a fresh detector; returns (wall s inside update, process CPU s, steps)."""
    det = GaitEventDetector(site, fs, body_frame=body_frame)
    n_steps = 0
    perf = time.perf_counter_ns
    upd = det.update
    if latencies_ns is None:
        c0 = time.process_time()
        t0 = time.perf_counter()
        for a, tt in chunks:
            n_steps += len(upd(a, tt))
        return time.perf_counter() - t0, time.process_time() - c0, n_steps
    total = 0
    c0 = time.process_time()
    for i, (a, tt) in enumerate(chunks):
        t0 = perf()
        s = upd(a, tt)
        dt = perf() - t0
        latencies_ns[i] = dt
        total += dt
        n_steps += len(s)
    return total * 1e-9, time.process_time() - c0, n_steps


def measure_detector(sig, body_frame: bool, repeats: int, chunk: int = CHUNK_SAMPLES) -> dict:
    """Full detector throughput on one signal: whole array and ``chunk``-sample updates."""
    acc = sig.acc_body_ms2 if body_frame else sig.acc_sensor_ms2
    t = sig.time_s
    fs = sig.sampling_rate_hz
    n = sig.n_samples
    # untimed priming run: loads every kernel specialisation this path reaches (runform.dsp.warmup() does not
    # reach the per-step kernels; their first load must not land in a timed repeat)
    prime = min(n, int(10 * fs))
    GaitEventDetector(sig.site, fs, body_frame=body_frame).update(acc[:prime], t[:prime])
    whole, whole_cpu, steps_whole = [], [], None
    for _ in range(repeats):
        det = GaitEventDetector(sig.site, fs, body_frame=body_frame)
        c0 = time.process_time()
        t0 = time.perf_counter()
        s = det.update(acc, t)
        whole.append(time.perf_counter() - t0)
        whole_cpu.append(time.process_time() - c0)
        steps_whole = len(s)
    chunks = _chunks(acc, t, chunk)
    lat = np.empty((repeats, len(chunks)), np.int64)
    chunked, chunked_cpu, steps_chunked = [], [], None
    for r in range(repeats):
        dt, cpu, steps_chunked = run_chunked(sig.site, fs, body_frame, chunks, lat[r])
        chunked.append(dt)
        chunked_cpu.append(cpu)
    lat_us = lat.ravel() / 1000.0
    w, c = statistics.median(whole), statistics.median(chunked)
    wc, cc = statistics.median(whole_cpu), statistics.median(chunked_cpu)
    return {
        "source": sig.source, "site": sig.site, "path": "body_frame" if body_frame else "sensor_frame",
        "description": sig.description, "sampling_rate_hz": fs, "n_samples": n,
        "duration_s": n / fs, "repeats": repeats, "chunk_samples": chunk, "n_chunks": len(chunks),
        "steps_whole": int(steps_whole), "steps_chunked": int(steps_chunked),
        # per core = per second of this process's CPU time (robust when other processes share the cores);
        # the wall-clock rates are kept beside them
        "whole_cpu_s": wc, "whole_samples_per_s": n / wc, "whole_wall_s": w, "whole_samples_per_wall_s": n / w,
        "whole_samples_per_s_min": n / max(max(whole_cpu), 1e-9), "whole_samples_per_s_max": n / max(min(whole_cpu), 1e-9),
        "chunked_cpu_s": cc, "chunked_samples_per_s": n / cc, "chunked_wall_s": c,
        "chunked_samples_per_wall_s": n / c,
        "chunk_us_mean": float(lat_us.mean()), "chunk_us_p50": _pct(lat_us, 50), "chunk_us_p90": _pct(lat_us, 90),
        "chunk_us_p99": _pct(lat_us, 99), "chunk_us_p999": _pct(lat_us, 99.9), "chunk_us_max": float(lat_us.max()),
        "realtime_factor_chunked": (n / fs) / cc,
    }


def chunk_split(sig, body_frame: bool, chunk: int = CHUNK_SAMPLES, max_samples: int | None = None) -> dict:
    """Time inside kernels vs in the Python wrapper when fed ``chunk``-sample updates (instrumented run)."""
    acc = sig.acc_body_ms2 if body_frame else sig.acc_sensor_ms2
    n = sig.n_samples if max_samples is None else min(sig.n_samples, max_samples)
    chunks = _chunks(acc[:n], sig.time_s[:n], chunk)
    # update() cost: CPU time, best of 3 (robust to other processes); kernel time: wall time of each call
    # (a few µs each, rarely preempted), from one instrumented run
    plain = min(run_chunked(sig.site, sig.sampling_rate_hz, body_frame, chunks)[1] for _ in range(3))
    with KernelSpy() as spy:
        _, instr, _ = run_chunked(sig.site, sig.sampling_rate_hz, body_frame, chunks)
    k_s = spy.total_ns * 1e-9
    per_kernel = {k: {"calls": spy.calls[k], "calls_per_chunk": spy.calls[k] / len(chunks),
                      "us_per_call": spy.ns[k] / 1000.0 / max(spy.calls[k], 1),
                      "share_of_update": spy.ns[k] * 1e-9 / plain} for k in sorted(spy.ns)}
    return {"n_samples": n, "n_chunks": len(chunks), "update_us_per_chunk": plain / len(chunks) * 1e6,
            "instrumented_us_per_chunk": instr / len(chunks) * 1e6,
            "kernel_us_per_chunk": k_s / len(chunks) * 1e6,
            "kernel_share": min(1.0, k_s / plain), "wrapper_share": max(0.0, 1.0 - k_s / plain),
            "kernels": per_kernel}


def _snapshot(a: np.ndarray) -> np.ndarray:
    """A copy that keeps the array's memory layout (a strided column view stays a strided view), so the replay
    calls the same compiled specialisation the detector called."""
    if a.flags.c_contiguous or a.ndim != 1 or a.strides[0] % a.itemsize:
        return a.copy()
    return _strided_like(a, a)


def _strided_like(template: np.ndarray, data: np.ndarray) -> np.ndarray:
    step = template.strides[0] // template.itemsize
    base = np.empty(data.shape[0] * step, dtype=template.dtype)
    view = base[::step]
    view[:] = data
    return view


def _concat_like(template: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    data = np.concatenate(parts)
    if template.flags.c_contiguous or template.ndim != 1:
        return np.ascontiguousarray(data)
    return _strided_like(template, data)


def _timed_median(fn, repeats: int) -> tuple[float, float]:
    """(median process-CPU seconds, best wall seconds) of ``repeats`` calls after one warm call."""
    fn()  # warm: same types as recorded, nothing to compile
    cpu, wall = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(cpu), min(wall)


def _replay_group(fn, calls: list[tuple[int, tuple]], repeats: int) -> dict:
    """calls: (block samples, args) per recorded call of one kernel (the k-th call of each block).

    Per-sample kernels (an argument as long as the block in every call) are called once on the concatenation
    of those arguments, with the other arguments (parameters, state) of the first call. Per-event kernels
    (e.g. per-step bookkeeping) are replayed call by call; their cost is still normalised per signal sample.
    """
    first_args = calls[0][1]
    per_sample = [i for i, a in enumerate(first_args)
                  if isinstance(a, np.ndarray) and a.ndim >= 1
                  and all(isinstance(c[i], np.ndarray) and c[i].ndim >= 1 and c[i].shape[0] == bn for bn, c in calls)]
    if per_sample:
        big = list(first_args)
        for i in per_sample:
            big[i] = _concat_like(first_args[i], [c[i] for _, c in calls])
        n_items = int(big[per_sample[0]].shape[0])
        med, best = _timed_median(lambda: fn(*big), repeats)
        kind = "per_sample"
    else:
        arg_lists = [c for _, c in calls]

        def all_calls():
            for c in arg_lists:
                fn(*c)

        med, best = _timed_median(all_calls, repeats)
        n_items = sum(max((a.shape[0] for a in c if isinstance(a, np.ndarray) and a.ndim >= 1), default=1)
                      for c in arg_lists)
        kind = "per_event"
    return {"kind": kind, "n_items": n_items, "calls_concatenated": len(calls), "repeats": repeats,
            "cpu_median_s": max(med, 1e-9), "wall_best_s": max(best, 1e-9)}


def measure_kernels(sig, body_frame: bool, repeats: int) -> dict:
    """Bare kernels on big arrays: each kernel the detector calls, replayed once on the whole signal."""
    acc = sig.acc_body_ms2 if body_frame else sig.acc_sensor_ms2
    det = GaitEventDetector(sig.site, sig.sampling_rate_hz, body_frame=body_frame)
    with KernelSpy(record=True) as spy:
        det.update(acc, sig.time_s)
    out: dict = {"source": sig.source, "site": sig.site, "path": "body_frame" if body_frame else "sensor_frame",
                 "n_samples": sig.n_samples, "kernels": {}}
    total = best = 0.0
    for (name, k), calls in sorted(spy.records.items()):
        label = name if k == 0 else f"{name}#{k + 1}"
        try:
            res = _replay_group(spy.originals[name], calls, repeats)
        except Exception as exc:
            out["kernels"][label] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        n = sig.n_samples
        # per core: samples per second of process CPU time (median); best wall-clock repeat beside it
        res.update(signal_samples=n, samples_per_s=n / res["cpu_median_s"],
                   ns_per_sample=res["cpu_median_s"] / n * 1e9, best_samples_per_s=n / res["wall_best_s"])
        out["kernels"][label] = res
        total += res["cpu_median_s"]
        best += res["wall_best_s"]
    if not out["kernels"]:
        out["error"] = "no numba kernel calls observed (NUMBA_DISABLE_JIT set, or the detector changed)"
    out["chain_cpu_s"] = total
    out["chain_samples_per_s"] = sig.n_samples / total if total > 0 else math.nan
    out["chain_ns_per_sample"] = total / sig.n_samples * 1e9 if total > 0 else math.nan
    out["chain_best_samples_per_s"] = sig.n_samples / best if best > 0 else math.nan
    return out


def profile_chunked(sig, body_frame: bool, max_samples: int, top: int = 12, chunk: int = CHUNK_SAMPLES) -> dict:
    """cProfile of ``chunk``-sample updates: the functions with the most own time."""
    acc = sig.acc_body_ms2 if body_frame else sig.acc_sensor_ms2
    n = min(sig.n_samples, max_samples)
    chunks = _chunks(acc[:n], sig.time_s[:n], chunk)
    prof = cProfile.Profile()
    prof.enable()
    run_chunked(sig.site, sig.sampling_rate_hz, body_frame, chunks)
    prof.disable()
    st = pstats.Stats(prof, stream=io.StringIO())
    total = sum(v[2] for v in st.stats.values())
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _callers) in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]:
        where = func if file == "~" else f"{file.rsplit('/', 1)[-1]}:{line}({func})"
        rows.append({"function": where, "ncalls": int(nc), "tottime_s": tt, "cumtime_s": ct,
                     "share": tt / total if total else math.nan, "us_per_chunk": tt / len(chunks) * 1e6})
    return {"source": sig.source, "site": sig.site, "path": "body_frame" if body_frame else "sensor_frame",
            "n_samples": n, "n_chunks": len(chunks), "profiled_total_s": total, "top": rows,
            "python": sys.version.split()[0]}
