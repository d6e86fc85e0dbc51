"""``runform bench``: speed of the streaming DSP, its cold start, peers on the same data, and the other areas.

:func:`run_bench` runs everything in one process on one machine and returns a JSON-able dict;
:func:`runform.server.bench._report.render` turns it into ``docs/benchmarks.md``. Timings are reported,
never asserted: the tests check that the result is complete and finite, not how fast anything is.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import _analyze, _cold, _data, _dsp, _hooks, _machine, _peers

__all__ = ["BenchConfig", "run_bench", "FULL", "QUICK"]


@dataclass(frozen=True)
class BenchConfig:
    """What to run and how big. ``FULL`` is what ``make bench`` uses, ``QUICK`` is ``--quick``."""

    quick: bool = False
    duration_s: float = 600.0  # length of each long recording fed to the detector
    sampling_rate_hz: float = 500.0
    sources: tuple[str, ...] = ("sim", "real")
    sites: tuple[str, ...] = _data.SITES
    body_frame_paths: tuple[bool, ...] = (False, True)
    repeats: int = 3
    kernel_repeats: int = 9
    split_max_s: float = 60.0  # seconds of signal for the instrumented kernel/wrapper split
    profile_max_s: float = 60.0  # seconds of signal profiled with cProfile (sensor-frame path, first source)
    peers: bool = True
    peer_repeats: int = 5
    peer_timeout_s: float = 400.0
    cold_start: bool = True
    cold_timeout_s: float = 300.0
    live_repeats: int = 3  # fresh processes per site and cache state for the time to the first step
    analyze: bool = True  # `runform analyze` vs mobgap's IC detector, each as a process
    analyze_duration_s: float = 600.0
    analyze_repeats: int = 5
    hooks: dict[str, str] | None = None  # None: the standard area hooks
    hook_timeout_s: float = 300.0
    data: str | None = None
    peer_python: str | None = None
    peer_script: str | None = None
    extra: dict = field(default_factory=dict)


FULL = BenchConfig()
QUICK = BenchConfig(quick=True, duration_s=30.0, repeats=1, kernel_repeats=2, split_max_s=10.0, profile_max_s=10.0,
                    peer_repeats=2, hook_timeout_s=90.0, live_repeats=1, analyze_duration_s=60.0, analyze_repeats=2)

#: the goals of issue 18 this bench measures (the edge goals have their own bench, `runform bench edge`)
GOALS = {"whole_array_samples_per_s": 20e6, "analyze_vs_mobgap_ratio": 5.0, "first_step_empty_cache_s": 6.0,
         "first_step_warm_cache_s": 1.0}


def _summary(res: dict) -> dict:
    det = res.get("detector", [])
    ker = res.get("kernels", [])
    target = res["target_samples_per_s"]

    def rng(rows, key, **flt):
        vals = [r[key] for r in rows if key in r and all(r.get(k) == v for k, v in flt.items())
                and isinstance(r[key], (int, float)) and math.isfinite(r[key])]
        return (min(vals), max(vals)) if vals else (None, None)

    s = {"target_samples_per_s": target}
    for path in ("sensor_frame", "body_frame"):
        s[f"detector_whole_{path}"] = rng(det, "whole_samples_per_s", path=path)
        s[f"detector_chunked_{path}"] = rng(det, "chunked_samples_per_s", path=path)
        s[f"chunk_us_p50_{path}"] = rng(det, "chunk_us_p50", path=path)
        s[f"chunk_us_p99_{path}"] = rng(det, "chunk_us_p99", path=path)
        s[f"kernel_chain_{path}"] = rng(ker, "chain_samples_per_s", path=path)
        s[f"kernel_chain_best_{path}"] = rng(ker, "chain_best_samples_per_s", path=path)
    s["detector_whole_all"] = rng(det, "whole_samples_per_s")
    s["detector_chunked_all"] = rng(det, "chunked_samples_per_s")
    per_kernel: dict[str, list[float]] = {}
    for k in ker:
        for name, r in k.get("kernels", {}).items():
            if "samples_per_s" in r:
                per_kernel.setdefault(name.split("#")[0], []).append(r["samples_per_s"])
    s["per_kernel_samples_per_s"] = {k: (min(v), max(v)) for k, v in sorted(per_kernel.items())}
    s["goals"] = _goals(res)
    s["detector_meets_target_whole"] = bool(det) and all(r["whole_samples_per_s"] >= target for r in det)
    s["detector_meets_target_chunked"] = bool(det) and all(r["chunked_samples_per_s"] >= target for r in det)
    s["kernel_chain_meets_target"] = {p: bool(s[f"kernel_chain_{p}"][0] is not None
                                              and s[f"kernel_chain_{p}"][0] >= target)
                                      for p in ("sensor_frame", "body_frame")}
    live = [r["sampling_rate_hz"] / r["chunked_samples_per_s"] for r in det]
    s["cpu_share_per_sensor_live"] = (min(live), max(live)) if live else (None, None)
    splits = [x["split"]["wrapper_share"] for x in det if "split" in x]
    s["wrapper_share_at_20_samples"] = (min(splits), max(splits)) if splits else (None, None)
    return s


def _goals(res: dict) -> dict:
    """Each measured goal: its measured value (median), spread (min-max over repeats) and verdict."""
    out: dict = {}
    det = [r for r in res.get("detector", []) if r.get("sampling_rate_hz") == 500.0]
    if det:
        worst = min(det, key=lambda r: r["whole_samples_per_s"])
        out["whole_array_samples_per_s"] = {
            "goal": GOALS["whole_array_samples_per_s"], "value": worst["whole_samples_per_s"],
            "min": min(r.get("whole_samples_per_s_min", r["whole_samples_per_s"]) for r in det),
            "max": max(r.get("whole_samples_per_s_max", r["whole_samples_per_s"]) for r in det),
            "worst": f"{worst['source']}/{worst['site']}/{worst['path']}",
            "met": all(r["whole_samples_per_s"] >= GOALS["whole_array_samples_per_s"] for r in det),
            "rows_met": sum(r["whole_samples_per_s"] >= GOALS["whole_array_samples_per_s"] for r in det),
            "rows": len(det)}
    an = res.get("analyze", {})
    if isinstance(an, dict) and "ratio_wall" in an:
        rw = an["ratio_wall"]
        out["analyze_vs_mobgap_ratio"] = {"goal": GOALS["analyze_vs_mobgap_ratio"], "value": rw["median"],
                                          "min": rw["min"], "max": rw["max"],
                                          "met": rw["median"] >= GOALS["analyze_vs_mobgap_ratio"]}
    fs = res.get("cold_start", {}).get("first_step", {})
    for key, goal in (("empty_cache_s", "first_step_empty_cache_s"), ("warm_cache_s", "first_step_warm_cache_s")):
        sites = {k: v[key] for k, v in fs.get("sites", {}).items() if key in v}
        if sites:
            worst = max(sites, key=lambda k: sites[k]["median"])
            out[goal] = {"goal": GOALS[goal], "value": sites[worst]["median"], "worst": worst,
                         "min": min(v["min"] for v in sites.values()), "max": max(v["max"] for v in sites.values()),
                         "per_site": {k: v["median"] for k, v in sites.items()},
                         "met": all(v["median"] <= GOALS[goal] for v in sites.values())}
    return out


def run_bench(cfg: BenchConfig = FULL, progress: Callable[[str], None] | None = None) -> dict:
    """Run the whole benchmark; returns the machine-readable result (also what docs/benchmarks.json holds)."""
    say = progress or (lambda msg: None)
    t_start = time.perf_counter()
    root = _peers.repo_root()
    res: dict = {"config": {k: v for k, v in cfg.__dict__.items() if k != "extra"},
                 "machine": _machine.describe(root), "target_samples_per_s": 10e6,
                 "chunk_samples": _dsp.CHUNK_SAMPLES, "errors": []}
    try:
        data_root = _data.data_root(cfg.data)
    except _data.BenchDataError as exc:  # a data folder named but wrong: say so, bench the simulator only
        data_root = None
        res["errors"].append(f"data: {exc}")
        say(f"WARNING: {exc}; real-data signals and peers are skipped")
    res["data_root"] = str(data_root) if data_root else None

    from runform.dsp import warmup
    say("compiling / loading kernels")
    res["warmup_in_process_s"] = warmup()

    # 1. DSP throughput, latency, kernels, split -----------------------------------------------------
    res["detector"], res["kernels"], res["profiles"], res["signals"] = [], [], [], []
    for source in cfg.sources:
        for site in cfg.sites:
            try:
                sig = _data.build(source, site, cfg.duration_s, data_root, cfg.sampling_rate_hz)
            except Exception as exc:
                res["errors"].append(f"signal {source}/{site}: {type(exc).__name__}: {exc}")
                say(f"  skipped {source}/{site}: {exc}")
                continue
            res["signals"].append({"source": source, "site": site, "description": sig.description,
                                   "n_samples": sig.n_samples, "sampling_rate_hz": sig.sampling_rate_hz})
            for body in cfg.body_frame_paths:
                label = f"{source}/{site}/{'body' if body else 'sensor'}-frame"
                say(f"detector {label}: {sig.n_samples} samples")
                try:
                    row = _dsp.measure_detector(sig, body, cfg.repeats)
                    row["split"] = _dsp.chunk_split(sig, body, max_samples=int(cfg.split_max_s * sig.sampling_rate_hz))
                    res["detector"].append(row)
                    res["kernels"].append(_dsp.measure_kernels(sig, body, cfg.kernel_repeats))
                except Exception as exc:
                    res["errors"].append(f"detector {label}: {type(exc).__name__}: {exc}")
            if source == cfg.sources[0] and False in cfg.body_frame_paths:
                try:
                    res["profiles"].append(_dsp.profile_chunked(
                        sig, False, int(cfg.profile_max_s * sig.sampling_rate_hz)))
                except Exception as exc:
                    res["errors"].append(f"profile {source}/{site}: {type(exc).__name__}: {exc}")
            del sig

    # 2. cold start ----------------------------------------------------------------------------------
    if cfg.cold_start:
        say("cold start (fresh processes, fresh numba cache)")
        res["cold_start"] = _cold.run(cfg.cold_timeout_s, live_repeats=cfg.live_repeats)
    else:
        res["cold_start"] = {"skipped": True}

    # 2b. `runform analyze` vs mobgap, whole processes ------------------------------------------------
    if cfg.analyze:
        say(f"runform analyze vs mobgap IcdIonescu as processes ({cfg.analyze_duration_s:g} s file, "
            f"{cfg.analyze_repeats} repeats)")
        try:
            res["analyze"] = _analyze.run(cfg.analyze_repeats, cfg.peer_python, duration_s=cfg.analyze_duration_s)
        except Exception as exc:
            res["analyze"] = {"error": f"{type(exc).__name__}: {exc}"}
    else:
        res["analyze"] = {"skipped": True}

    # 3. peers ---------------------------------------------------------------------------------------
    if cfg.peers:
        say("peers (gaitmap, mobgap in .venv-peers) and runform on the same recordings")
        try:
            res["peers"] = _peers.run(data_root, cfg.quick, cfg.peer_repeats, cfg.peer_python, cfg.peer_script,
                                      cfg.peer_timeout_s)
        except Exception as exc:
            res["peers"] = {"error": f"{type(exc).__name__}: {exc}"}
    else:
        res["peers"] = {"skipped": True}

    # 4. other areas ---------------------------------------------------------------------------------
    hooks = _hooks.AREA_HOOKS if cfg.hooks is None else cfg.hooks
    if hooks:
        say("other areas: " + ", ".join(hooks))
    res["areas"] = _hooks.run(cfg.quick, cfg.hook_timeout_s, hooks)

    res["summary"] = _summary(res)
    res["machine"]["load_average_at_end"] = list(__import__("os").getloadavg())
    res["total_s"] = time.perf_counter() - t_start
    return res
