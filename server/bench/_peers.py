"""Peer libraries (gaitmap, mobgap) timed in their own venv, and runform timed on the same samples.

The peers are never imported here: ``tools/peers/peer_timings.py`` runs under ``.venv-peers/bin/python``
(created by ``make bench``) and prints JSON. runform then processes the very same recordings (same files,
same samples, same rates: no resampling is needed, both detectors accept 204.8 Hz feet and a 100 Hz lower
back) and the ratios are runform samples/s ÷ peer samples/s, for

- offline use: one call on each whole recording (runform: ``update`` with the whole array);
- live use: runform streams 20-sample chunks; an offline peer has to be re-run on a sliding window
  (5 s every 100 ms), so its live throughput is new samples per second of CPU.

Both at the recordings' native rates and resampled to 500 Hz (the rate a running sensor streams at; per-sample
costs and the peers' own resampling make the ratios differ by rate), each side resampling with the same rule.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from runform.dsp import GaitEventDetector

from . import _data
from ._dsp import CHUNK_SAMPLES


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_peer_python() -> Path:
    for base in (Path.cwd(), repo_root()):
        p = base / ".venv-peers" / "bin" / "python"
        if p.exists():
            return p
    return repo_root() / ".venv-peers" / "bin" / "python"


def default_peer_script() -> Path:
    for base in (Path.cwd(), repo_root()):
        p = base / "tools" / "peers" / "peer_timings.py"
        if p.exists():
            return p
    return repo_root() / "tools" / "peers" / "peer_timings.py"


def _install_log_tail(peer_python: Path, n: int = 15) -> str | None:
    log = peer_python.parent.parent / "install.log"
    if log.exists():
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if "is ignored" not in ln]
        return "\n".join(lines[-n:])
    return None


def _venv_missing(peer_python: Path) -> dict | None:
    if Path(peer_python).exists():
        return None
    return {"error": f"peer venv not found ({peer_python}); `make bench` creates it "
                     "(target peers-venv, from tools/peers/requirements.txt)",
            "install_log_tail": _install_log_tail(Path(peer_python))}


#: native rates (None) and the rate of a running sensor
RATES = (None, 500.0)


def resample_rows(x: np.ndarray, fs: float, rate: float | None) -> np.ndarray:
    """Rows of ``x`` (n, k) linearly interpolated to ``rate`` on a uniform grid from the first sample: the rule of
    ``resample_rows`` in tools/peers/peer_timings.py, so both sides process the same samples."""
    if rate is None or abs(rate - fs) < 1e-9:
        return x
    n = int(np.floor((x.shape[0] - 1) / fs * rate)) + 1
    pos = np.arange(n) / rate * fs
    src = np.arange(x.shape[0], dtype=float)
    return np.ascontiguousarray(np.column_stack([np.interp(pos, src, x[:, k]) for k in range(x.shape[1])]))


def run_peer_script(peer_python: Path, script: Path, data_root: Path, quick: bool, timeout_s: float,
                    rate: float | None = None) -> dict:
    """Run the peer script in the peer venv; always returns a dict (``error`` on failure)."""
    missing = _venv_missing(peer_python)
    if missing is not None:
        return missing
    if not Path(script).exists():
        return {"error": f"peer script not found: {script}"}
    cmd = [str(peer_python), str(script), "--data-dir", str(data_root)] + (["--quick"] if quick else []) + (
        ["--rate", f"{rate:g}"] if rate else [])
    t0 = time.perf_counter()
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"peer script gave no result within {timeout_s:g} s"}
    wall = time.perf_counter() - t0
    if cp.returncode != 0:
        return {"error": f"peer script failed (exit {cp.returncode}): {cp.stderr.strip()[-1200:]}",
                "install_log_tail": _install_log_tail(Path(peer_python)), "wall_s": wall}
    try:
        res = json.loads(cp.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        return {"error": f"peer script printed no JSON ({exc}): {cp.stdout[-400:]}", "wall_s": wall}
    res["wall_s"] = wall
    return res


def _runform_on(recordings: list[tuple[str, np.ndarray]], fs: float, repeats: int, duration_s: float) -> dict:
    """runform on the given (site, acc) recordings: whole-array median time and 20-sample streaming time."""
    n = sum(a.shape[0] for _, a in recordings)
    whole, whole_cpu, steps = [], [], 0
    for _ in range(repeats):
        tot, cpu, steps = 0.0, 0.0, 0
        for site, acc in recordings:
            t = np.arange(acc.shape[0]) / fs
            det = GaitEventDetector(site, fs)
            c0 = time.process_time()
            t0 = time.perf_counter()
            steps += len(det.update(acc, t))
            tot += time.perf_counter() - t0
            cpu += time.process_time() - c0
        whole.append(tot)
        whole_cpu.append(cpu)
    chunked, chunked_cpu, steps_c = [], [], 0
    for _ in range(repeats):
        tot, cpu, steps_c = 0.0, 0.0, 0
        for site, acc in recordings:
            t = np.arange(acc.shape[0]) / fs
            chunks = [(np.ascontiguousarray(acc[i:i + CHUNK_SAMPLES]), t[i:i + CHUNK_SAMPLES])
                      for i in range(0, acc.shape[0], CHUNK_SAMPLES)]
            det = GaitEventDetector(site, fs)
            c0 = time.process_time()
            t0 = time.perf_counter()
            for a, tt in chunks:
                steps_c += len(det.update(a, tt))
            tot += time.perf_counter() - t0
            cpu += time.process_time() - c0
        chunked.append(tot)
        chunked_cpu.append(cpu)
    w, c = statistics.median(whole), statistics.median(chunked)
    wc, cc = max(statistics.median(whole_cpu), 1e-9), max(statistics.median(chunked_cpu), 1e-9)
    # samples/s are per second of process CPU time (per core), as for the peers; wall-clock beside them
    return {"n_samples": n, "sampling_rate_hz": fs, "sites": [s for s, _ in recordings], "repeats": repeats,
            "steps_whole": steps, "steps_chunked": steps_c,
            "whole_s": w, "whole_cpu_s": wc, "whole_samples_per_s": n / wc, "whole_samples_per_wall_s": n / w,
            "chunked_s": c, "chunked_cpu_s": cc, "chunked_samples_per_s": n / cc,
            "chunked_samples_per_wall_s": n / c,
            "recording_duration_s": duration_s, "chunked_cpu_fraction_of_one_core": cc / duration_s}


def runform_same_data(data_root: Path, repeats: int, rate: float | None = None) -> dict:
    out: dict = {}
    try:
        fs, feet = _data.gaitmap_feet(data_root)
        left, right = (resample_rows(feet[s], fs, rate) for s in ("left_sensor", "right_sensor"))
        fs = rate or fs
        # two feet recorded simultaneously: the live budget is the recording's duration
        out["gaitmap"] = _runform_on([("foot_left", left), ("foot_right", right)], fs, repeats, left.shape[0] / fs)
        out["gaitmap"]["n_rows"] = int(left.shape[0])
    except Exception as exc:
        out["gaitmap"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        fs, recs = _data.mobgap_lowerback(data_root)
        recs = [resample_rows(a, fs, rate) for a in recs]
        fs = rate or fs
        # three separate recordings, one after the other
        out["mobgap"] = _runform_on([("sacrum", a) for a in recs], fs, repeats, sum(a.shape[0] for a in recs) / fs)
        out["mobgap"]["n_rows"] = int(sum(a.shape[0] for a in recs))
    except Exception as exc:
        out["mobgap"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def ratios(peers: dict, ours: dict, rate: float | None = None) -> list[dict]:
    """Rows: runform samples/s ÷ peer samples/s for each peer algorithm, offline and live."""
    rows = []
    label = f"{rate:g} Hz (resampled)" if rate else "native"
    for lib in ("gaitmap", "mobgap"):
        p, r = peers.get(lib), ours.get(lib)
        if not isinstance(p, dict) or "error" in p or not isinstance(r, dict) or "error" in r:
            continue
        same = p.get("n_rows") == r.get("n_rows")
        for algo, res in p.items():
            if not isinstance(res, dict) or ("whole" not in res and "sliding" not in res):
                continue
            wh, sl = res.get("whole", {}), res.get("sliding", {})
            if "samples_per_s" in wh:
                rows.append({"peer": lib, "algorithm": algo, "mode": "offline: whole recording", "rate": label,
                             "rate_hz": p.get("sampling_rate_hz"), "peer_samples_per_s": wh["samples_per_s"],
                             "runform_samples_per_s": r["whole_samples_per_s"],
                             "ratio": r["whole_samples_per_s"] / wh["samples_per_s"], "same_samples": same})
            if "live_samples_per_s" in sl:
                rows.append({"peer": lib, "algorithm": algo, "rate": label, "rate_hz": p.get("sampling_rate_hz"),
                             "mode": f"live: peer re-run on {sl['window_s']:g} s window every "
                                     f"{sl['hop_s'] * 1000:g} ms; runform {CHUNK_SAMPLES}-sample updates",
                             "peer_samples_per_s": sl["live_samples_per_s"],
                             "runform_samples_per_s": r["chunked_samples_per_s"],
                             "ratio": r["chunked_samples_per_s"] / sl["live_samples_per_s"], "same_samples": same})
    return rows


def run(data_root: Path | None, quick: bool, repeats: int, peer_python: Path | None = None,
        peer_script: Path | None = None, timeout_s: float = 400.0, rates=RATES) -> dict:
    """Peers and runform at each rate; the first rate's results also at the top level."""
    peer_python = Path(peer_python) if peer_python else default_peer_python()
    peer_script = Path(peer_script) if peer_script else default_peer_script()
    if data_root is None:  # nothing to compare on; still say whether the peers themselves are there
        no_data = {"error": "shared recordings not found (set RUNFORM_DATA or --data)"}
        return {"peer_python": str(peer_python), "peers": _venv_missing(peer_python) or no_data,
                "runform": no_data, "ratios": []}
    by_rate = []
    for rate in rates:
        peers = run_peer_script(peer_python, peer_script, data_root, quick, timeout_s, rate)
        ours = runform_same_data(data_root, repeats, rate)
        by_rate.append({"rate_hz": rate, "peers": peers, "runform": ours, "ratios": ratios(peers, ours, rate)})
    first = by_rate[0]
    return {"peer_python": str(peer_python), "peers": first["peers"], "runform": first["runform"],
            "ratios": [r for b in by_rate for r in b["ratios"]], "by_rate": by_rate}
