"""Cold start: the first ``update()`` (and the first that emits a step) in a fresh process with an empty numba
cache vs a warm cache, the same after ``runform.dsp.warmup()``, and the wall time of ``runform warmup``. Each measurement is its own subprocess
with ``NUMBA_CACHE_DIR`` pointing at a fresh temporary folder (first run: empty, compiles and writes it;
second run: same folder, loads the machine code)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (site, body_frame) in the order a fresh process meets them; the first entry pays for the shared kernels
COLD_CASES = (("sacrum", False), ("sacrum", True), ("shank", False), ("shank", True), ("foot", False),
              ("foot", True))

_CHILD = r"""
import json, sys, time
cases, mode = json.loads(sys.argv[1]), sys.argv[2]
fs = 500.0
# running signals that produce steps (the simulator), so the first step's bookkeeping is timed too;
# a synthetic bump train if the simulator is not in this build
signals = {}
try:
    from runform.firmware_bridge.simulator import RunnerProfile, simulate
    sim_site = {"sacrum": "sacrum", "shank": "shank_left", "foot": "foot_left"}
    for site, body in cases:
        # body-frame input: the simulator's sensor aligned with the body (x fwd, y left, z up) -> (v, ap, ml)
        rec = simulate(RunnerProfile(), sites=(sim_site[site],), duration_s=6.0, sampling_rate_hz=fs, seed=5,
                       gyro=False, orientation="aligned" if body else "random")
        a = rec.signals[sim_site[site]].acc_ms2
        signals[(site, body)] = a[:, [2, 0, 1]] if body else a
    source = "simulator"
except ImportError:
    import numpy as np
    tt = np.arange(int(6 * fs)) / fs
    a = np.zeros((tt.size, 3)); a[:, 0] = 0.8
    a[:, 2] = 9.80665 * (1.0 + 1.5 * np.maximum(np.sin(2 * np.pi * 1.4 * tt), 0.0))
    signals = {(c[0], c[1]): a for c in cases}
    source = "synthetic"
t0 = time.perf_counter()
import numpy as np
from runform.dsp import GaitEventDetector
res = {"signal": source, "mode": mode, "import_s": time.perf_counter() - t0, "first_update_s": {},
       "second_update_s": {}, "first_step_update_s": {}, "steady_update_s": {}}
if mode == "after_warmup":
    from runform.dsp import warmup
    a = time.perf_counter(); warmup(); res["warmup_s"] = time.perf_counter() - a
first_total = 0.0
for site, body in cases:
    key = site + ("/body_frame" if body else "/sensor_frame")
    acc = np.ascontiguousarray(signals[(site, body)])
    t = np.arange(acc.shape[0]) / fs
    det = GaitEventDetector(site, fs, body_frame=body)
    times, step_at = [], None
    for i in range(0, acc.shape[0], 20):
        a = time.perf_counter(); steps = det.update(acc[i:i + 20], t[i:i + 20]); b = time.perf_counter()
        times.append(b - a)
        if step_at is None and len(steps):
            step_at = len(times) - 1
    res["first_update_s"][key] = times[0]
    res["second_update_s"][key] = times[1]
    res["first_step_update_s"][key] = times[step_at] if step_at is not None else None
    res["steady_update_s"][key] = sorted(times)[len(times) // 2]
    first_total += times[0] + (times[step_at] if step_at not in (None, 0) else 0.0)
res["first_updates_total_s"] = first_total
res["process_s"] = time.perf_counter() - t0
print("@@RESULT@@" + json.dumps(res))
"""


def _count_cache_files(d: Path) -> int:
    return sum(1 for p in d.rglob("*") if p.suffix in (".nbi", ".nbc"))


def _run(cmd: list[str], env: dict, timeout_s: float) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    cp = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    return time.perf_counter() - t0, cp


def _child_env(cache_dir: Path | None) -> dict:
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    return env


def first_update(cache_dir: Path | None, cases=COLD_CASES, timeout_s: float = 300.0, after_warmup: bool = False
                 ) -> dict:
    """One fresh process: import time; per (site, path) the first ``update()``, the first one that emits a step,
    and a steady-state one (20-sample chunks of a simulated run). ``after_warmup``: call
    ``runform.dsp.warmup()`` first, as a live session does, to see what it leaves uncompiled."""
    mode = "after_warmup" if after_warmup else "direct"
    wall, cp = _run([sys.executable, "-c", _CHILD, json.dumps(cases), mode], _child_env(cache_dir), timeout_s)
    line = next((ln for ln in cp.stdout.splitlines() if ln.startswith("@@RESULT@@")), None)
    if cp.returncode != 0 or line is None:
        raise RuntimeError(f"cold-start child failed (exit {cp.returncode}): {cp.stderr.strip()[-800:]}")
    res = json.loads(line[len("@@RESULT@@"):])
    res["process_wall_s"] = wall
    if cache_dir is not None:
        res["cache_files_after"] = _count_cache_files(cache_dir)
    return res


def warmup_command(cache_dir: Path | None, timeout_s: float = 300.0) -> dict:
    """Wall time of ``runform warmup`` in a fresh process, and the time it reports for the kernels."""
    cmd = [sys.executable, "-m", "runform.server.cli", "warmup"]
    wall, cp = _run(cmd, _child_env(cache_dir), timeout_s)
    if cp.returncode != 0:
        raise RuntimeError(f"`runform warmup` failed (exit {cp.returncode}): {cp.stderr.strip()[-800:]}")
    m = re.search(r"([0-9.]+)\s*s", cp.stdout)
    return {"process_wall_s": wall, "reported_s": float(m.group(1)) if m else None, "stdout": cp.stdout.strip()}


# A live edge's start: a fresh process imports runform, warms the kernels of its configured sensor site (as
# `runform run` does before any sensor streams), then 20-sample packets of running arrive (pre-recorded, fed as
# fast as the detector takes them): wall time from the process start to the first step out of the detector.
_LIVE_CHILD = r"""
import json, sys, time
t_start = time.time()
import numpy as np
from runform.dsp import GaitEventDetector, warmup
site = sys.argv[1]
acc = np.load(sys.argv[2])
t_import = time.time()
warmup([site], body_frame=False, skip_blas_probe=True)
t_warm = time.time()
det = GaitEventDetector(site, 500.0)
t = np.arange(acc.shape[0]) / 500.0
first = None
for i in range(0, acc.shape[0], 20):
    if len(det.update(acc[i:i + 20], t[i:i + 20])):
        first = time.time()
        break
print("@@RESULT@@" + json.dumps({"t_start": t_start, "import_s": t_import - t_start, "warmup_s": t_warm - t_import,
                                 "first_step_at": first, "feed_s": (first or time.time()) - t_warm}))
"""

LIVE_SITES = ("sacrum", "shank", "foot")


def _live_signals(folder: Path) -> dict[str, Path]:
    """6 s of simulated running per site, saved for the children (their time is not the simulator's)."""
    import numpy as np

    from runform.firmware_bridge.simulator import RunnerProfile, simulate

    out = {}
    sim_site = {"sacrum": "sacrum", "shank": "shank_left", "foot": "foot_left"}
    for site in LIVE_SITES:
        rec = simulate(RunnerProfile(), sites=(sim_site[site],), duration_s=6.0, sampling_rate_hz=500.0, seed=5,
                       gyro=False, orientation="random")
        out[site] = folder / f"{site}.npy"
        np.save(out[site], np.ascontiguousarray(rec.signals[sim_site[site]].acc_ms2))
    return out


def time_to_first_step(site: str, signal: Path, cache_dir: Path, timeout_s: float = 300.0) -> dict:
    """One fresh live-like process (see ``_LIVE_CHILD``); ``time_to_first_step_s`` counts from before the
    interpreter starts."""
    t0 = time.time()
    wall, cp = _run([sys.executable, "-c", _LIVE_CHILD, site, str(signal)], _child_env(cache_dir), timeout_s)
    line = next((ln for ln in cp.stdout.splitlines() if ln.startswith("@@RESULT@@")), None)
    if cp.returncode != 0 or line is None:
        raise RuntimeError(f"live child failed (exit {cp.returncode}): {cp.stderr.strip()[-800:]}")
    res = json.loads(line[len("@@RESULT@@"):])
    if res["first_step_at"] is None:
        raise RuntimeError(f"no step from 6 s of simulated running ({site})")
    res["time_to_first_step_s"] = res["first_step_at"] - t0
    res["interpreter_start_s"] = res["t_start"] - t0
    res["process_wall_s"] = wall
    return res


def _spread(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"median": xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]),
            "min": xs[0], "max": xs[-1], "values": xs}


def first_step(repeats: int = 3, timeout_s: float = 300.0, sites=LIVE_SITES) -> dict:
    """Per site: time to the first step with an empty numba cache (a new cache folder each repeat) and with a warm
    one (the same folder again), ``repeats`` times each; empty and warm runs alternate."""
    out: dict = {"repeats": repeats, "sites": {}}
    with tempfile.TemporaryDirectory(prefix="runform-bench-live-") as d:
        signals = _live_signals(Path(d))
        for site in sites:
            empty, warm, parts = [], [], []
            for k in range(repeats):
                cache = Path(d) / f"cache-{site}-{k}"
                r_empty = time_to_first_step(site, signals[site], cache, timeout_s)
                r_warm = time_to_first_step(site, signals[site], cache, timeout_s)
                empty.append(r_empty["time_to_first_step_s"])
                warm.append(r_warm["time_to_first_step_s"])
                parts.append({"empty": {k2: r_empty[k2] for k2 in ("import_s", "warmup_s", "feed_s")},
                              "warm": {k2: r_warm[k2] for k2 in ("import_s", "warmup_s", "feed_s")}})
            out["sites"][site] = {"empty_cache_s": _spread(empty), "warm_cache_s": _spread(warm), "parts": parts}
    return out


def run(timeout_s: float = 300.0, cases=COLD_CASES, live_repeats: int = 3) -> dict:
    out: dict = {"cases": [f"{s}/{'body_frame' if b else 'sensor_frame'}" for s, b in cases]}
    with tempfile.TemporaryDirectory(prefix="runform-bench-numba-") as d1, \
            tempfile.TemporaryDirectory(prefix="runform-bench-numba-") as d2:
        for key, fn in (("cold_cache", lambda: first_update(Path(d1), cases, timeout_s)),
                        ("warm_cache", lambda: first_update(Path(d1), cases, timeout_s)),
                        ("warm_cache_after_warmup", lambda: first_update(Path(d1), cases, timeout_s, True)),
                        ("warmup_cold_cache", lambda: warmup_command(Path(d2), timeout_s)),
                        ("warmup_warm_cache", lambda: warmup_command(Path(d2), timeout_s))):
            try:
                out[key] = fn()
            except Exception as exc:  # reported, the rest of the bench goes on
                out[key] = {"error": f"{type(exc).__name__}: {exc}"}
    if live_repeats:
        try:
            out["first_step"] = first_step(live_repeats, timeout_s)
        except Exception as exc:
            out["first_step"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out
