"""`runform analyze` against mobgap's initial-contact detector, each as a whole process on the same file.

A 10-minute 500 Hz lower-back recording (simulator: walking, running, walking; sensor aligned with the body,
written in the body-frame layout both commands read: ``time_s, acc_v_g, acc_ap_g, acc_ml_g``) is analysed
``repeats`` times by each command, interleaved (runform, mobgap, runform, ...), so both see the same machine
load. Wall time of the whole process (interpreter start, imports, reading, detection, output) and its CPU time
(children's user + system). The numba cache is warm (one untimed run first): a cold cache is the cold-start
bench's subject. runform also analyses the same motion in sensor axes (random mounting: the orientation
estimate runs), which mobgap cannot take.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DURATION_S = 600.0
RATE_HZ = 500.0


def write_files(folder: Path, duration_s: float = DURATION_S, rate_hz: float = RATE_HZ) -> dict[str, Path]:
    """The body-frame file (both commands) and the sensor-frame file (runform) of one simulated recording."""
    from runform.firmware_bridge.simulator import RunnerProfile, Segment, simulate

    quarter = duration_s / 4
    segs = [Segment("walk", quarter), Segment("run", 2 * quarter), Segment("walk", quarter)]
    out = {}
    for frame, orientation in (("body", "aligned"), ("sensor", "random")):
        rec = simulate(RunnerProfile(), sites=("sacrum",), sampling_rate_hz=rate_hz, seed=1, gyro=False,
                       orientation=orientation, segments=segs)
        sig = rec.signals["sacrum"]
        a = sig.acc_ms2 / 9.80665
        path = folder / f"sacrum_{frame}_{duration_s:g}s.csv"
        if frame == "body":  # aligned sensor: x forward, y left, z up -> (v, ap, ml)
            cols, data = "time_s,acc_v_g,acc_ap_g,acc_ml_g", np.column_stack([sig.time_s, a[:, 2], a[:, 0], a[:, 1]])
        else:
            cols, data = "time_s,acc_x_g,acc_y_g,acc_z_g", np.column_stack([sig.time_s, a])
        np.savetxt(path, data, delimiter=",", header=cols, comments="", fmt="%.6f")
        out[frame] = path
    return out


def _timed(cmd: list[str], timeout_s: float) -> dict:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cp.returncode != 0:
        raise RuntimeError(f"{Path(cmd[1]).name if len(cmd) > 1 else cmd[0]} failed (exit {cp.returncode}): "
                           f"{cp.stderr.strip()[-600:]}")
    out = json.loads(cp.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), "out": out}


def _stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "values": xs}


def run(repeats: int = 5, peer_python: Path | None = None, peer_tool: Path | None = None,
        duration_s: float = DURATION_S, timeout_s: float = 300.0) -> dict:
    from ._peers import default_peer_python, repo_root

    peer_python = Path(peer_python) if peer_python else default_peer_python()
    peer_tool = Path(peer_tool) if peer_tool else repo_root() / "tools" / "peers" / "mobgap_analyze.py"
    runform = [sys.executable, "-m", "runform.server.cli", "analyze"]
    res: dict = {"duration_s": duration_s, "sampling_rate_hz": RATE_HZ, "repeats": repeats,
                 "load_average_at_start": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="runform-bench-analyze-") as d:
        files = write_files(Path(d), duration_s)
        res["file_mb"] = round(files["body"].stat().st_size / 1e6, 1)
        cmds = {"runform analyze (body axes)": runform + [str(files["body"]), "--site", "sacrum"],
                "runform analyze (sensor axes)": runform + [str(files["sensor"]), "--site", "sacrum"]}
        if peer_python.exists() and peer_tool.exists():
            cmds["mobgap IcdIonescu (body axes)"] = [str(peer_python), str(peer_tool), str(files["body"])]
        else:
            res["peer_error"] = f"peer venv or tool not found ({peer_python}, {peer_tool}); `make bench` creates it"
        for cmd in cmds.values():  # untimed: fills the numba cache, loads the OS file cache
            _timed(cmd, timeout_s)
        runs: dict[str, list[dict]] = {k: [] for k in cmds}
        for _ in range(repeats):
            for name, cmd in cmds.items():
                runs[name].append(_timed(cmd, timeout_s))
    res["commands"] = {}
    for name, rs in runs.items():
        out = rs[-1]["out"]
        found = len(out["steps"]) if "steps" in out else out.get("n_ic")
        res["commands"][name] = {"wall_s": _stats([r["wall_s"] for r in rs]), "cpu_s": _stats([r["cpu_s"] for r in rs]),
                                 "found": found, "found_what": "steps" if "steps" in out else "ICs"}
    if "mobgap IcdIonescu (body axes)" in runs:
        # ratio per repeat (the two ran back to back), then its median and range
        per = [p["wall_s"] / r["wall_s"] for p, r in zip(runs["mobgap IcdIonescu (body axes)"],
                                                          runs["runform analyze (body axes)"])]
        res["ratio_wall"] = _stats(per)
        res["ratio_cpu"] = _stats([p["cpu_s"] / r["cpu_s"] for p, r in zip(runs["mobgap IcdIonescu (body axes)"],
                                                                           runs["runform analyze (body axes)"])])
    res["load_average_at_end"] = list(os.getloadavg())
    return res
