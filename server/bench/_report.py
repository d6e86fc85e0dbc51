"""docs/benchmarks.md from the result of :func:`runform.server.bench.run_bench`.

Everything is generated except the Methods section between the ``methods:begin``/``methods:end`` markers:
if the existing file has it, it is kept verbatim (hand edits survive a re-run); otherwise the default text
below is written.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ._hooks import NOT_AVAILABLE, flatten

METHODS_BEGIN = "<!-- methods:begin (hand-written; kept by `runform bench`) -->"
METHODS_END = "<!-- methods:end -->"

DEFAULT_METHODS = """\
## Methods

**One run, one machine.** Every number in this file comes from a single `runform bench` run (`make bench`)
on the machine described at the top. The machine has 2 cores that other processes may share (look at the load
average). Throughputs are **per core**: samples per second of the measuring process's CPU time
(`time.process_time`, all its threads), so time spent waiting for a core taken by another process does not
count; runform's DSP is single-threaded. Wall-clock rates are kept in `docs/benchmarks.json` (`*_per_wall_s`).
Latencies are wall-clock: `time.perf_counter_ns` around each `update()`.

**Signals.** Each detector configuration is fed a long recording (default 10 min at 500 Hz = 300 000 samples):
- *sim*: `runform.firmware_bridge.simulator.simulate` — a runner at 170 spm / 3.3 m/s, sensor strapped on at a
  random (seeded) orientation;
- *real*: the shared recordings concatenated and tiled to the same length — sacrum: all alcantara2022 trials
  (native 500 Hz, body-frame v/ap columns; the sensor-frame input is the same data turned by a fixed random
  rotation); shank: all bach2022 trials (142.857 Hz, linearly resampled to 500 Hz); foot: gaitmap's walking
  example, left then right foot (204.8 Hz, resampled to 500 Hz).

Two input paths are timed on the same motion: *sensor-frame* (`body_frame=False`, the default: the orientation
kernel estimates vertical/AP/ML sample by sample) and *body-frame* (`body_frame=True`: columns already v/ap/ml;
for sensor-frame sources these are produced once, offline, by the same orientation kernel).

**Full detector.** `GaitEventDetector.update` timed (a) on the whole array in one call (the wrapper cuts it into
blocks internally) and (b) in 20-sample chunks, as BLE notifications deliver them; chunks are pre-cut into
separate arrays so slicing is not timed. Throughput = samples ÷ median time over the repeats; latency
percentiles are over every chunk of every repeat. Steps found by both feeds are listed as a sanity check
(they should be equal: the detector is chunking-invariant). The whole-array spread in the Goals table is the
min–max over the repeats.

**Bare kernels.** The numba kernels the detector calls are found at run time (every numba dispatcher the
detector module reaches), their arguments recorded during a whole-array run, and each kernel is then called
once on the concatenation of its per-sample arguments (state and parameters from the first call; strided
inputs stay strided, so the same compiled specialisation runs): the kernel cost without the Python wrapper, on
big arrays. Kernels that work per detected step (no per-sample argument) are replayed call by call. Every
kernel's cost is expressed per signal sample; *chain* = the sum of the kernels one detector calls. Each replay
is repeated; tables show the median CPU-time rate (the verdict against 10 M samples/s uses it) and, in
parentheses, the best wall-clock repeat.

**Where the time goes.** The 20-sample run is repeated with each kernel call timed (the kernel share includes
numba's per-call dispatch, which dominates at 20 samples); the rest of `update()` is the Python/NumPy wrapper.
cProfile (own time per function) on the sensor-frame path shows which wrapper lines cost most; cProfile
inflates Python-level costs, so read its shares as a ranking.

**Goals.** The table at the top lists the goals of issue 18 this bench measures, each with its median and the
min–max over every repeat (and site) behind it: the whole-array detector rate of the slowest 500 Hz site/path (every
row of §1 must reach it), the `runform analyze`/mobgap process ratio (§4b), the time to the first step with an empty
and with a warm numba cache (§4). A goal with no measurement in a run says so; nothing is filled in.

**Cold start.** Fresh `python` subprocesses with `NUMBA_CACHE_DIR` set to a new empty temporary folder: the
first process compiles every kernel it meets (and writes the cache), the second, same folder, loads it, the
third does the same after calling `runform.dsp.warmup()` as a live session does. Each feeds 6 s of simulated
running per site/path in 20-sample chunks, in the order listed (the first case pays for the shared kernels),
and reports the first `update()`, the first `update()` that emits a step (per-step kernels are only reached
then) and a steady-state `update()`. `runform warmup` is timed the same way (process wall time, and the time it
reports for the kernels).

**Time to the first step** (§4, second table). A fresh process per measurement, as a live edge starts: import,
`warmup([site], body_frame=False)` for its one configured site (what `runform run` calls), then 6 s of simulated
running of that site in 20-sample packets, fed as fast as the detector takes them; the time runs from before the
interpreter starts to the first step the detector returns. Empty cache: a new numba cache folder; warm: the same
folder right after. With an empty cache `warmup` compiles half of the kernels in a helper process when the 1-minute
load leaves a core idle (on a busy machine it compiles serially). Three repeats per site, empty and warm alternating.

**`runform analyze` vs mobgap** (§4b). A 10-minute 500 Hz lower-back recording from the simulator (walking, running,
walking; sensor aligned with the body and written as `acc_v_g, acc_ap_g, acc_ml_g`, which both read) is analysed by
`runform analyze` and by `tools/peers/mobgap_analyze.py` (pandas reads the CSV, mobgap's `IcdIonescu` detects the
initial contacts) as whole processes: interpreter start, imports, reading, detection, output. One untimed run of each
first (warm numba cache, file in the OS cache), then five repeats, interleaved, so both see the same load; ratio =
mobgap wall ÷ runform wall per pair of back-to-back runs. runform also analyses the same motion in sensor axes
(random mounting, the orientation estimate runs), which mobgap cannot take.

**Peers.** gaitmap (+ gaitmap-mad for `RamppEventDetection`/`BarthDtw`) and mobgap are installed from PyPI into
a separate venv `.venv-peers` (pinned in `tools/peers/requirements.txt`) and never imported by runform; their
code is not copied. `tools/peers/peer_timings.py` runs under that venv in a subprocess and prints JSON.
- gaitmap, foot IMUs, gaitmap's example walking recording (2 feet × 7 928 samples at 204.8 Hz, converted to
  gaitmap's foot body frame by `convert_to_fbf`): `BarthDtw` stride segmentation + `RamppEventDetection` (the
  full pipeline from raw data, like runform), and `RamppEventDetection` / `HerzerEventDetection` given the
  hand-labelled stride borders (event detection alone — the cheapest possible use).
- mobgap, lower-back IMU, the three longest recordings of mobgap's example data (Test11, 100 Hz, acc in m/s²,
  body frame via `to_body_frame`): `IcdShinImproved` and `IcdIonescu`.
- *Offline*: one call per whole recording; cold = first call, warm = median of the repeats.
- *Rates*: everything once at the recordings' native rates and once resampled to 500 Hz (linear interpolation on a
  uniform grid from the first sample, the same rule in the peer script and in runform's bench; stride borders given
  to the event-detection-only gaitmap variants scaled). mobgap's detectors resample to 40 Hz internally, so their
  cost per input sample falls as the rate rises while runform's per-sample work does not: the ratios differ by rate
  and both are reported.
- *Live*: these algorithms are offline (they need the whole signal), so a live system would re-run them on a
  sliding window: 5 s every 100 ms here. Live throughput = new samples per hop ÷ median call time, compared with
  runform streaming 20-sample chunks. A window in which a peer raises is still timed and counted.
runform processes the very same samples (no resampling: 204.8 Hz feet and the 100 Hz lower back are within its
rates). Ratio = runform samples/s ÷ peer samples/s (> 1: runform faster). runform's sacrum detector runs its
running-stance kernel and its walking-IC kernel on every sample (both are timed); the step counts listed here
are a sanity check, not an accuracy comparison (docs/accuracy.md compares both with mobgap's reference).

**Other areas.** `runform.firmware_bridge._bench.run`, `runform.firmware_bridge.ble._bench.run` and
`runform.server._bench_mqtt.run` are each run in their own subprocess with a timeout; an absent module is
reported as "not available in this build", a failure with its error, and the bench goes on.
"""


# ---------------------------------------------------------------------------------------------- format
def _num(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}".replace(",", " ")
    if isinstance(x, float):
        if not math.isfinite(x):
            return "–"
        if x == 0:
            return "0"
        if abs(x) >= 1000:  # 3 significant digits, thin-space thousands
            v = int(round(x, -int(math.floor(math.log10(abs(x)))) + digits - 1))
            return f"{v:,}".replace(",", " ")
        mag = math.floor(math.log10(abs(x)))
        dec = max(0, digits - 1 - mag)
        return f"{x:.{dec}f}"
    return str(x)


def _m(x) -> str:
    """samples/s -> M samples/s"""
    return _num(x / 1e6) if isinstance(x, (int, float)) and x == x else "–"


def _rng(pair, f=_m, unit: str = "") -> str:
    lo, hi = pair if pair else (None, None)
    if lo is None:
        return "–"
    return f"{f(lo)}{unit}" if f(lo) == f(hi) else f"{f(lo)}–{f(hi)}{unit}"


def _meets(x, target) -> str:
    if not isinstance(x, (int, float)) or x != x:
        return "–"
    return "yes" if x >= target else "no"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_cell(c) for c in r) + " |")
    return out


def _cell(c) -> str:
    s = c if isinstance(c, str) else _num(c)
    return s.replace("|", "\\|").replace("\n", " ")


def _pctf(x) -> str:
    return f"{_num(100 * x, 2)} %" if isinstance(x, (int, float)) and x == x else "–"


def _pct(x) -> str:
    return f"{100 * x:.0f} %" if isinstance(x, (int, float)) and x == x else "–"


# ---------------------------------------------------------------------------------------------- sections
def _machine(res: dict) -> list[str]:
    m = res["machine"]
    peers = res.get("peers", {}).get("peers", {}) if isinstance(res.get("peers"), dict) else {}
    pv = peers.get("versions") if isinstance(peers, dict) else None
    cpu = f"{m['cpu_model']}"
    if m.get("cpu_mhz"):
        cpu += f", {m['cpu_mhz']:.0f} MHz"
    if m.get("simd"):
        cpu += f" ({m['simd']})"
    load0 = m.get("load_average_1_5_15")
    load1 = m.get("load_average_at_end")
    rows = [
        ["Date", m["date_utc"]],
        ["CPU", cpu],
        ["Cores", f"{m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs; all runform timings use one"],
        ["Load average (1/5/15 min) at start → end",
         (" / ".join(f"{x:.2f}" for x in load0) if load0 else "–") + " → "
         + (" / ".join(f"{x:.2f}" for x in load1) if load1 else "–")],
        ["OS", f"{m['os']} {m['machine']}"],
        ["Python / NumPy / Numba / llvmlite", f"{m['python']} / {m['numpy']} / {m['numba']} / {m['llvmlite']}"],
        ["runform", f"{m.get('runform')} (commit {m.get('git_commit') or '–'})"],
        ["Peers (own venv)", ", ".join(f"{k} {v}" for k, v in pv.items() if v) if pv else "not run"],
        ["Bench", f"{'quick (--quick)' if res['config']['quick'] else 'full'}; {res['config']['duration_s']:g} s "
                  f"per long recording; total {res.get('total_s', float('nan')):.0f} s"],
    ]
    lines = ["## Machine and versions", ""] + _table(["", ""], rows)
    busy = max((x for x in (load0 or [])[:1] + (load1 or [])[:1]), default=0.0)
    if busy > (m.get("usable_cpus") or 1):  # the bench itself accounts for ~1
        lines += ["", f"**The machine was busy** (1-min load up to {busy:.1f} on {m.get('usable_cpus')} CPUs): other "
                      "processes took turns on the cores. Throughputs are per CPU-second, which discounts the waiting, "
                      "but shared caches still cost something; wall-clock latencies show it directly as ~4 ms "
                      "outliers (a scheduler time slice) in the upper percentiles."]
    return lines


_GOAL_ROWS = (
    ("whole_array_samples_per_s", "Whole array, every site and path at 500 Hz (detector, one call per recording)",
     "≥ {:.0f} M samples/s per core", lambda v: _m(v), "M samples/s"),
    ("analyze_vs_mobgap_ratio", "`runform analyze` vs mobgap's IC detector, each a whole process, 600 s at 500 Hz",
     "≥ {:g}× faster", lambda v: _num(v), "× (mobgap wall ÷ runform wall)"),
    ("first_step_empty_cache_s", "Cold start, empty numba cache: process start → first step (per configured site)",
     "≤ {:g} s", lambda v: _num(v), "s"),
    ("first_step_warm_cache_s", "Cold start, warm numba cache: process start → first step (per configured site)",
     "≤ {:g} s", lambda v: _num(v), "s"),
)


def _goals(res: dict) -> list[str]:
    g = res.get("summary", {}).get("goals", {})
    lines = ["## Goals of issue 18 measured here", "",
             "Measured value = the median over repeats (whole array: the slowest site/path, its median); spread = "
             "min–max over all repeats (and, for the whole array and the cold start, over all sites/paths). The "
             "edge goals (1,000 runners per core, the fused per-chunk call) have their own bench; the per-chunk cost "
             "of today's `update()` is in §1.", ""]
    rows = []
    for key, what, target, fmt, unit in _GOAL_ROWS:
        r = g.get(key)
        if not r:
            rows.append([what, target.format(_goal_target(key)), "not measured in this run", "–", "–"])
            continue
        tgt = r["goal"] / 1e6 if key == "whole_array_samples_per_s" else r["goal"]
        note = ""
        if "worst" in r:
            note = f" (worst: {r['worst']})"
        if "rows" in r:
            note += f"; {r['rows_met']}/{r['rows']} rows meet it"
        if "per_site" in r:
            note += "; " + ", ".join(f"{k} {_num(v)} s" for k, v in r["per_site"].items())
        rows.append([what, target.format(tgt), f"{fmt(r['value'])} {unit}{note}",
                     f"{fmt(r['min'])}–{fmt(r['max'])}", "**yes**" if r["met"] else "**no**"])
    return lines + _table(["Goal", "Target", "Measured (median)", "Spread (min–max)", "Met"], rows)


def _goal_target(key: str) -> float:
    from . import GOALS

    v = GOALS[key]
    return v / 1e6 if key == "whole_array_samples_per_s" else v


def _summary(res: dict) -> list[str]:
    s = res["summary"]
    t = s["target_samples_per_s"]
    cs = res.get("cold_start", {})
    lines = ["## Summary", "",
             f"Target from the brief: ≥ {_m(t)} M samples/s per core for the DSP. Ranges are over sources and sites."]

    def verdict(pair):
        lo, hi = pair
        if lo is None:
            return "not measured"
        if lo >= t:
            return "**meets it**"
        if hi >= t:
            return "**meets it only for some sites**"
        return "**below it**"

    lines += [
        "",
        f"- Bare numba kernels on big arrays (the detector's kernel chain, median of "
        f"{res['config']['kernel_repeats']} repeats): sensor-frame {_rng(s['kernel_chain_sensor_frame'])} M samples/s "
        f"({verdict(s['kernel_chain_sensor_frame'])}), body-frame {_rng(s['kernel_chain_body_frame'])} "
        f"M samples/s ({verdict(s['kernel_chain_body_frame'])}); best wall-clock repeats "
        f"{_rng(s['kernel_chain_best_sensor_frame'])} and {_rng(s['kernel_chain_best_body_frame'])} M samples/s. "
        + ("Per kernel (median): " + ", ".join(f"`{k}` {_rng(v)}" for k, v in s["per_kernel_samples_per_s"].items())
         + " M samples/s." if s["per_kernel_samples_per_s"] else "No kernel timings (numba JIT disabled?)."),
        f"- Full detector (Python wrapper + kernels), whole array in one call: sensor-frame "
        f"{_rng(s['detector_whole_sensor_frame'])}, body-frame {_rng(s['detector_whole_body_frame'])} M samples/s "
        f"({verdict(s['detector_whole_all'])}).",
        f"- Full detector in {res['chunk_samples']}-sample chunks (as BLE delivers): sensor-frame "
        f"{_rng(s['detector_chunked_sensor_frame'])}, body-frame {_rng(s['detector_chunked_body_frame'])} M samples/s; "
        f"per-chunk latency p50 {_rng(s['chunk_us_p50_sensor_frame'], _num)} µs, p99 "
        f"{_rng(s['chunk_us_p99_sensor_frame'], _num)} µs (sensor-frame). The Python wrapper takes "
        f"{_rng(s['wrapper_share_at_20_samples'], _pct)} of each update at this chunk size (see §3). "
        f"Live, one {res['config']['sampling_rate_hz']:g} Hz sensor costs "
        f"{_rng(s.get('cpu_share_per_sensor_live', (None, None)), _pctf)} of one core.",
    ]
    cc, wc = cs.get("cold_cache", {}), cs.get("warm_cache", {})
    if "first_updates_total_s" in cc and "first_updates_total_s" in wc:
        wu0, wu1 = cs.get("warmup_cold_cache", {}), cs.get("warmup_warm_cache", {})
        lines.append(
            f"- Cold start: first `update()` calls of a fresh process {_num(cc['first_updates_total_s'])} s with an "
            f"empty numba cache vs {_num(wc['first_updates_total_s'])} s with a warm one (all sites and paths); "
            f"`runform warmup` {_num(wu0.get('process_wall_s'))} s → {_num(wu1.get('process_wall_s'))} s (process wall).")
    aw = cs.get("warm_cache_after_warmup", {})
    gaps = []
    for case, first_step in (aw.get("first_step_update_s") or {}).items():
        steady = (aw.get("steady_update_s") or {}).get(case)
        first = (aw.get("first_update_s") or {}).get(case)
        for what, x in (("first update", first), ("first step", first_step)):
            if isinstance(x, (int, float)) and isinstance(steady, (int, float)) and x > max(20 * steady, 0.002):
                gaps.append(f"{case.replace('_', '-')} {what} {_ms(x)} ms vs {_ms(steady)} ms steady")
    if gaps:
        lines.append("- **`warmup()` leaves work for the live session** (warm cache, after `warmup()`): "
                     + "; ".join(gaps) + ". With an empty cache that work is a compilation (see §4).")
    elif aw.get("first_update_s"):
        lines.append("- After `warmup()` no first `update()` or first step costs more than 20× a steady one.")
    rat = res.get("peers", {}).get("ratios", []) if isinstance(res.get("peers"), dict) else []
    if rat:
        parts = []
        for rate in dict.fromkeys(r.get("rate", "native") for r in rat):
            rr = [r for r in rat if r.get("rate", "native") == rate]
            off = [r["ratio"] for r in rr if r["mode"].startswith("offline")]
            live = [r["ratio"] for r in rr if r["mode"].startswith("live")]
            name = "at the recordings' native rates (gaitmap 204.8 Hz, mobgap 100 Hz)" if rate == "native" else \
                f"at {rate}"
            parts.append(f"{name}: offline (whole recording) {_rng((min(off), max(off)), _num, '×') if off else '–'}, "
                         f"live (peers re-run on a sliding window) {_rng((min(live), max(live)), _num, '×') if live else '–'}")
        lines.append("- Peers on the same samples, runform samples/s ÷ peer samples/s (> 1: runform faster; per "
                     "algorithm in §5): " + "; ".join(parts) + ".")
    elif isinstance(res.get("peers"), dict):
        err = res["peers"].get("error") or res["peers"].get("peers", {}).get("error")
        if err:
            lines.append(f"- Peers: not measured — {err}")
    return lines


def _detector(res: dict) -> list[str]:
    rows = []
    for r in res["detector"]:
        rows.append([r["source"], r["site"], r["path"].replace("_", "-"), r["n_samples"],
                     f"{r['steps_whole']} / {r['steps_chunked']}", _m(r["whole_samples_per_s"]),
                     _m(r["chunked_samples_per_s"]), _num(r["realtime_factor_chunked"]), _num(r["chunk_us_p50"]),
                     _num(r["chunk_us_p99"]), _num(r["chunk_us_p999"]), _num(r["chunk_us_max"])])
    lines = ["## 1. DSP throughput: the full detector on one core", "",
             "`GaitEventDetector.update`, whole array in one call vs 20-sample chunks; latency of one 20-sample "
             "`update()` call. Signals: see *Signals* in Methods.", ""]
    lines += _table(["Source", "Site", "Path", "Samples", "Steps (whole / chunked)", "Whole array (M samples/s per core)",
                     "20-sample chunks (M samples/s per core)", "Chunked × real time", "p50 (µs/chunk)", "p99 (µs/chunk)",
                     "p99.9 (µs/chunk)", "max (µs/chunk)"], rows)
    sigs = res.get("signals", [])
    if sigs:
        lines += ["", "Signals: " + "; ".join(f"*{s['source']}/{s['site']}*: {s['description']}" for s in sigs) + "."]
    return lines


def _kernels(res: dict) -> list[str]:
    t = res["target_samples_per_s"]
    rows = []
    for k in res["kernels"]:
        ks = ", ".join(
            (f"`{n}` {_m(v['samples_per_s'])}" + (f" ({v['n_items']} steps, call by call)"
                                                   if v.get("kind") == "per_event" else ""))
            if "samples_per_s" in v else f"`{n}` error: {v.get('error')}"
            for n, v in k["kernels"].items())
        rows.append([k["source"], k["site"], k["path"].replace("_", "-"), ks or k.get("error", "–"),
                     f"{_m(k['chain_samples_per_s'])} ({_m(k.get('chain_best_samples_per_s'))})",
                     _num(k["chain_ns_per_sample"]),
                     _meets(k["chain_samples_per_s"], t)])
    return (["## 2. Bare kernels on big arrays", "",
             "Each numba kernel the detector calls, replayed once on the whole signal (no Python wrapper); "
             "per CPU-second, median of the repeats; best wall-clock repeat in parentheses. *Chain* = all kernels "
             "of one detector, one after the other.", ""]
            + _table(["Source", "Site", "Path", "Kernels (M samples/s per core each, median)", "Chain, median (best wall) (M samples/s per core)",
                      "Chain (ns/sample)", f"Chain ≥ {_m(t)} M/s"], rows))


def _split(res: dict) -> list[str]:
    rows = []
    for r in res["detector"]:
        sp = r.get("split")
        if not sp:
            continue
        per = ", ".join(f"`{k}` {_num(v['us_per_call'])} µs × {_num(v['calls'] / max(sp['n_chunks'], 1), 2)}"
                        for k, v in sp["kernels"].items())
        rows.append([r["source"], r["site"], r["path"].replace("_", "-"), _num(sp["update_us_per_chunk"]),
                     _num(sp["kernel_us_per_chunk"]), _pct(sp["wrapper_share"]), per])
    lines = ["## 3. Where the time goes at 20-sample chunks", "",
             "`update()` per chunk: CPU time, best of 3 runs over the first "
             f"{_num(res['config']['split_max_s'])} s of each signal. Kernel time per chunk: every kernel call timed "
             "(instrumented run); it includes numba's call dispatch (argument unboxing, result boxing), which "
             "dwarfs 20 samples of arithmetic. The rest of `update()` is the Python/NumPy wrapper.", ""]
    lines += _table(["Source", "Site", "Path", "update() (µs/chunk)", "in kernels (µs/chunk)", "wrapper share",
                     "per kernel call (µs × calls/chunk)"], rows)
    for p in res.get("profiles", []):
        lines += ["", f"cProfile, {p['source']}/{p['site']}/{p['path'].replace('_', '-')}, {p['n_chunks']} chunks "
                      f"(own time; profiling overhead inflates Python-level entries):", ""]
        lines += _table(["Function", "Calls", "Own time (µs/chunk)", "Share of profiled time"],
                        [[f"`{r['function']}`", r["ncalls"], _num(r["us_per_chunk"]), _pct(r["share"])]
                         for r in p["top"]])
    return lines


def _ms(x) -> str:
    return _num(1000.0 * x) if isinstance(x, (int, float)) and x == x else "–"


def _cold(res: dict) -> list[str]:
    cs = res.get("cold_start", {})
    if cs.get("skipped"):
        return ["## 4. Cold start", "", "Skipped in this run."]
    cols = [("cold_cache", "Empty cache"), ("warm_cache", "Warm cache"),
            ("warm_cache_after_warmup", "Warm cache, after `warmup()`")]
    runs = [cs.get(k, {}) for k, _ in cols]
    sig = next((r.get("signal") for r in runs if r.get("signal")), "–")
    lines = ["## 4. Cold start", "",
             "Fresh processes; `NUMBA_CACHE_DIR` = a new empty folder for the first, the same folder for the "
             f"others. Input: 6 s of running ({sig}) in 20-sample chunks per site and path, in the order listed "
             "(the first case pays for the kernels shared by all). Cells: first `update()` / first `update()` that "
             "emits a step / a steady-state `update()` (median), in ms.", ""]
    errs = [f"{k}: {v['error']}" for k, v in cs.items() if isinstance(v, dict) and "error" in v]
    rows = [["`import runform.dsp` (ms)"] + [_ms(r.get("import_s")) for r in runs]]
    if any("warmup_s" in r for r in runs):
        rows.append(["`runform.dsp.warmup()` in the process (ms)"] + [_ms(r.get("warmup_s")) for r in runs])
    for case in cs.get("cases", []):
        rows.append([f"{case.replace('_', '-')}: first / first step / steady (ms)"] + [
            f"{_ms(r.get('first_update_s', {}).get(case))} / {_ms(r.get('first_step_update_s', {}).get(case))} / "
            f"{_ms(r.get('steady_update_s', {}).get(case))}" for r in runs])
    rows.append(["first + first-step updates, all cases (s)"] + [_num(r.get("first_updates_total_s")) for r in runs])
    rows.append(["process wall time (s)"] + [_num(r.get("process_wall_s")) for r in runs])
    rows.append(["numba cache files after"] + [_num(r.get("cache_files_after")) for r in runs])
    lines += _table(["Measurement"] + [c for _, c in cols], rows)
    wu0, wu1 = cs.get("warmup_cold_cache", {}), cs.get("warmup_warm_cache", {})
    lines += ["", "`runform warmup` (its own fresh process and cache folder):", ""]
    lines += _table(["Measurement", "Empty cache", "Warm cache"], [
        ["process wall time (s)", wu0.get("process_wall_s"), wu1.get("process_wall_s")],
        ["kernel time it reports (s)", wu0.get("reported_s"), wu1.get("reported_s")]])
    if errs:
        lines += ["", "Errors: " + "; ".join(errs)]
    lines += ["", f"In the bench process itself `runform.dsp.warmup()` took {_num(res.get('warmup_in_process_s'))} s "
                  "(cache beside the sources)."]
    fs = cs.get("first_step", {})
    if fs.get("sites"):
        lines += ["", "### Time to the first step, as a live edge starts",
                  "",
                  f"A fresh process imports runform, calls `warmup([site], body_frame=False)` (what `runform run` does for "
                  f"its configured sensors), then 20-sample packets of simulated running are fed as fast as the "
                  f"detector takes them; time from before the interpreter starts to the first step out of the detector. "
                  f"Empty cache: a new numba cache folder each time; warm: the same folder again. "
                  f"{fs['repeats']} repeats per site, empty and warm alternating. Cells: median (min–max), s.", ""]
        rows = []
        for site, r in fs["sites"].items():
            e, w = r["empty_cache_s"], r["warm_cache_s"]
            pe = r["parts"][0]["empty"] if r.get("parts") else {}
            pw = r["parts"][0]["warm"] if r.get("parts") else {}
            rows.append([site, f"{_num(e['median'])} ({_num(e['min'])}–{_num(e['max'])})",
                         f"{_num(w['median'])} ({_num(w['min'])}–{_num(w['max'])})",
                         f"{_num(pe.get('import_s'))} / {_num(pe.get('warmup_s'))} / {_ms(pe.get('feed_s'))} ms",
                         f"{_num(pw.get('import_s'))} / {_num(pw.get('warmup_s'))} / {_ms(pw.get('feed_s'))} ms"])
        lines += _table(["Site (sensor frame)", "Empty cache (s)", "Warm cache (s)",
                         "Empty, first run: import / warm-up / feed", "Warm, first run: import / warm-up / feed"], rows)
    elif fs.get("error"):
        lines += ["", f"Time to the first step: **error** {fs['error']}"]
    return lines


def _analyze(res: dict) -> list[str]:
    an = res.get("analyze", {})
    lines = ["## 4b. `runform analyze` and mobgap's IC detector as processes", ""]
    if an.get("skipped"):
        return lines + ["Skipped in this run."]
    if "error" in an:
        return lines + [f"**Error**: {an['error']}"]
    lines += [f"One {an['duration_s']:g} s, {an['sampling_rate_hz']:g} Hz lower-back recording ({an.get('file_mb')} MB CSV; "
              "simulator: walking, running, walking), analysed by each command as a whole process (interpreter, "
              "imports, reading, detection, output), interleaved, after one untimed run of each (warm numba and file "
              f"caches). {an['repeats']} repeats; cells: median (min–max).", ""]
    rows = []
    for name, r in an.get("commands", {}).items():
        w, c = r["wall_s"], r["cpu_s"]
        rows.append([name, f"{_num(w['median'])} ({_num(w['min'])}–{_num(w['max'])})",
                     f"{_num(c['median'])} ({_num(c['min'])}–{_num(c['max'])})", f"{r['found']} {r['found_what']}"])
    lines += _table(["Command", "Wall (s)", "CPU (s)", "Found"], rows)
    if "ratio_wall" in an:
        rw, rc = an["ratio_wall"], an["ratio_cpu"]
        lines += ["", f"**mobgap ÷ runform** (per repeat, the two ran back to back): wall {_num(rw['median'])}× "
                      f"({_num(rw['min'])}–{_num(rw['max'])}), CPU {_num(rc['median'])}× ({_num(rc['min'])}–{_num(rc['max'])})."]
    if an.get("peer_error"):
        lines += ["", f"mobgap not run: {an['peer_error']}"]
    la, lb = an.get("load_average_at_start"), an.get("load_average_at_end")
    if la and lb:
        lines += ["", f"1-minute load average {la[0]:.2f} → {lb[0]:.2f} during these runs."]
    return lines


def _peers(res: dict) -> list[str]:
    pr = res.get("peers", {})
    lines = ["## 5. Peers on the same recordings", ""]
    if pr.get("skipped"):
        return lines + ["Skipped in this run (`--no-peers`)."]
    if "error" in pr and "peers" not in pr:
        return lines + [f"Not measured: {pr['error']}"]
    by_rate = pr.get("by_rate") or [{"rate_hz": None, "peers": pr.get("peers", {}), "runform": pr.get("runform", {}),
                                     "ratios": pr.get("ratios", [])}]
    lines += ["Each peer and runform process the very same samples: first at the recordings' native rates, then "
              "resampled to 500 Hz (the rate a running sensor streams at) by the same rule on both sides. Ratio = "
              "runform samples/s ÷ peer samples/s, both per CPU-second (> 1: runform faster).", ""]
    for b in by_rate:
        lines += _peers_at(b)
    return lines


def _peers_at(b: dict) -> list[str]:
    rate = b.get("rate_hz")
    peers, ours, rat = b.get("peers", {}), b.get("runform", {}), b.get("ratios", [])
    lines = [f"### {'Native rates: gaitmap 204.8 Hz, mobgap 100 Hz' if not rate else f'{rate:g} Hz (resampled)'}", ""]
    if "error" in peers:
        lines += [f"**The peers could not be run:** {peers['error']}", ""]
        if peers.get("install_log_tail"):
            lines += ["Tail of the peer install log:", "", "```", peers["install_log_tail"], "```", ""]
    else:
        pv = peers.get("versions", {})
        lines += ["Peer venv: " + ", ".join(f"{k} {v}" for k, v in pv.items() if v)
                  + f"; {peers.get('repeats')} repeats, {peers.get('n_windows')} sliding windows per algorithm.", ""]
        rows = []
        for lib in ("gaitmap", "mobgap"):
            p = peers.get(lib, {})
            if "error" in p:
                rows.append([lib, "error", p["error"]] + ["–"] * 8)
                continue
            for algo, r in p.items():
                if not isinstance(r, dict) or ("whole" not in r and "sliding" not in r):
                    continue
                wh, sl = r.get("whole", {}), r.get("sliding", {})
                found = r.get("n_strides_whole", r.get("n_ic_whole"))
                kind = "strides" if "n_strides_whole" in r else "ICs"
                rows.append([lib, algo, wh.get("n_samples", wh.get("error", "–")), _num(wh.get("cold_s")),
                             _num(wh.get("warm_median_s")), _m(wh.get("samples_per_s")),
                             _num(sl["call_median_s"] * 1000) if "call_median_s" in sl else sl.get("error", "–"),
                             _pct(sl.get("cpu_fraction_of_one_core")), _num(sl.get("live_samples_per_s")),
                             f"{sl.get('window_errors', '–')}/{sl.get('n_windows', '–')}",
                             f"{found} {kind}" if found is not None else "–"])
        lines += _table(["Peer", "Algorithm", "Samples", "Cold first call (s)", "Warm call, median (s)",
                         "Offline (M samples/s per core)", "5 s window call, median wall (ms)", "CPU of one core at 100 ms hop",
                         "Live (samples/s per core)", "Windows that raised", "Found (whole)"], rows)
        lines.append("")
    rows = []
    for lib, label in (("gaitmap", "gaitmap example, 2 feet"), ("mobgap", "mobgap example, lower back")):
        r = ours.get(lib, {})
        if "error" in r:
            rows.append([label, r["error"]] + ["–"] * 5)
            continue
        if not r:
            continue
        rows.append([f"{label}, {r['sampling_rate_hz']:g} Hz", r["n_samples"], f"{r['steps_whole']} / {r['steps_chunked']}",
                     _m(r["whole_samples_per_s"]), _m(r["chunked_samples_per_s"]),
                     _num(100 * r["chunked_cpu_fraction_of_one_core"], 2) + " %"])
    if rows:
        lines += ["runform on the same samples (sites: `foot_left`/`foot_right`, `sacrum`; sensor-frame path):", ""]
        lines += _table(["Recording", "Samples", "Steps (whole / chunked)", "Whole array (M samples/s per core)",
                         "20-sample chunks (M samples/s per core)", "CPU of one core, live (all sensors)"], rows)
        lines.append("")
    if rat:
        lines += ["**Ratios** (runform samples/s ÷ peer samples/s, both per CPU-second; > 1 = runform faster):", ""]
        lines += _table(["Peer", "Algorithm", "Mode", "Peer (samples/s per core)", "runform (samples/s per core)",
                         "Ratio (×)", "Same samples"],
                        [[r["peer"], r["algorithm"], r["mode"], _num(r["peer_samples_per_s"]),
                          _num(r["runform_samples_per_s"]), _num(r["ratio"]), r["same_samples"]] for r in rat])
        slower = [r for r in rat if r["ratio"] < 1.0]
        if slower:
            lines += ["", "runform is slower than the peer in: " + "; ".join(
                f"{r['peer']} {r['algorithm']} ({r['mode'].split(':')[0]}, {_num(r['ratio'])}×)" for r in slower)
                + "."]
        lines.append("")
    return lines


def _areas(res: dict) -> list[str]:
    lines = ["## 6. Other areas", ""]
    for mod, r in res.get("areas", {}).items():
        lines.append(f"### `{mod}` — {r.get('what', '')}")
        lines.append("")
        st = r.get("status")
        if st == "ok":
            rows = [[f"`{k}`", v if isinstance(v, str) else _num(v)] for k, v in flatten(r["result"])]
            lines += _table(["Quantity (unit in the name)", "Value"], rows)
            lines.append("")
            lines.append(f"({_num(r.get('wall_s'))} s including process start.)")
        elif st == "not_available":
            lines.append(NOT_AVAILABLE + ".")
        else:
            lines.append(f"**{st}**: {r.get('error')}")
            tail = (r.get("stderr_tail") or "").strip()
            if tail:
                lines += ["", "```", tail[-1200:], "```"]
        lines.append("")
    if not res.get("areas"):
        lines.append("No area hooks run.")
    return lines


def kept_methods(existing: str | None) -> str:
    if existing and METHODS_BEGIN in existing and METHODS_END in existing:
        m = re.search(re.escape(METHODS_BEGIN) + r"\n?(.*?)\n?" + re.escape(METHODS_END), existing, re.S)
        if m and m.group(1).strip():
            return m.group(1).strip("\n")
    return DEFAULT_METHODS.strip("\n")


def render(res: dict, existing: str | None = None) -> str:
    parts = [
        "# runform benchmarks", "",
        "_Generated by `runform bench` (`make bench`). Re-run to refresh; only the Methods section at the end is "
        "hand-written (the generator keeps it). Machine-readable results: `docs/benchmarks.json`._", "",
    ]
    for sec in (_machine, _goals, _summary, _detector, _kernels, _split, _cold, _analyze, _peers, _areas):
        parts += sec(res)
        parts.append("")
    if res.get("errors"):
        parts += ["## Errors during this run", ""] + [f"- {e}" for e in res["errors"]] + [""]
    parts += [METHODS_BEGIN, kept_methods(existing), METHODS_END, ""]
    return "\n".join(parts)


def write(res: dict, out_md: Path, out_json: Path | None) -> None:
    out_md = Path(out_md)
    existing = out_md.read_text() if out_md.exists() else None
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(render(res, existing))
    if out_json is not None:
        Path(out_json).write_text(json.dumps(sanitize(res), indent=1, default=_json_default, allow_nan=False) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def sanitize(x):
    """NaN/inf -> None so the JSON file is strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): sanitize(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [sanitize(v) for v in x]
    try:
        import numpy as np
        if isinstance(x, np.generic):
            return sanitize(x.item())
    except ImportError:  # pragma: no cover
        pass
    return x
