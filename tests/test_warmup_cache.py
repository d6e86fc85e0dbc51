"""`runform warmup` compiles the kernels into the numba cache, so a later process (a sensor connecting) loads
machine code instead of compiling; `warmup(sites)` compiles only what those sites need, half of it in a helper
process when the cache is empty, and leaves nothing for the live path to compile."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNFORM = Path(sys.executable).with_name("runform")

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"), reason="needs numba's JIT")


def _kernels_in(cache: Path) -> set[str]:
    return {p.name.split(".")[1].split("-")[0] for p in cache.rglob("*.nbi")}  # "<module>.<function>-<line>.py311.nbi"


def test_warmup_fills_an_empty_cache_and_a_second_process_reuses_it(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    first = subprocess.run([str(RUNFORM), "warmup"], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    kernels = _kernels_in(tmp_path / "cache")
    for k in ("orientation_kernel", "body_frame_kernel", "sosfilt_bank_kernel", "sosfilt_kernel", "fir_kernel",
              "limb_kernel", "sacrum_kernel", "walk_kernel", "step_metrics_kernel", "merge_walk_run_kernel",
              "row_norm_kernel", "jerk_kernel", "motion_kernel"):
        assert k in kernels, (k, kernels)
    assert len(list((tmp_path / "cache").rglob("*.nbc"))) >= len(kernels)
    # a second process loads everything from the cache: numba rewrites a cache file only when it compiles
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    second = subprocess.run([str(RUNFORM), "warmup"], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()} == files


_LIVE = r"""
import json, sys
import numpy as np
from numba.core.dispatcher import Dispatcher
from runform.dsp import GaitEventDetector, warmup
from runform.dsp import _detect, _filters, _motion, _orientation, _steps
from runform.firmware_bridge.simulator import RunnerProfile, Segment, simulate

warmup(["hip"], body_frame=False, parallel=sys.argv[1] == "1")
disps = {f"{m.__name__}.{n}": d for m in (_detect, _filters, _motion, _orientation, _steps)
         for n, d in vars(m).items() if isinstance(d, Dispatcher)}
before = {k: [str(s) for s in d.signatures] for k, d in disps.items()}
rec = simulate(RunnerProfile(), sites=("sacrum",), sampling_rate_hz=500.0, seed=4, orientation="random",
               segments=[Segment("walk", 8.0), Segment("run", 8.0)])
sig = rec.signals["sacrum"]
steps = GaitEventDetector("sacrum", 500.0).update(sig.acc_ms2, sig.time_s)
det = GaitEventDetector("sacrum", 500.0)
chunked = sum(len(det.update(sig.acc_ms2[i:i + 20], sig.time_s[i:i + 20])) for i in range(0, len(sig.time_s), 20))
after = {k: [str(s) for s in d.signatures] for k, d in disps.items()}
print(json.dumps({"before": before, "after": after, "steps": len(steps), "chunked": chunked,
                  "walking": int((steps["activity"] == 1).sum()), "running": int((steps["activity"] == 2).sum())}))
"""


@pytest.mark.parametrize("parallel", [True, False])
def test_site_warmup_compiles_that_site_only_and_leaves_nothing_for_the_live_path(tmp_path, parallel):
    """An edge with a sacral sensor: warmup(["hip"]) on an empty cache (with the helper process, or without),
    then a detector on simulated walking and running, whole and in 20-sample chunks: no kernel gets a new
    signature (nothing compiles while data flows), and no limb kernel was compiled or cached."""
    cache = tmp_path / "cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    env.pop("NUMBA_DISABLE_JIT", None)
    cp = subprocess.run([sys.executable, "-c", _LIVE, "1" if parallel else "0"], env=env, capture_output=True,
                        text=True, timeout=600)
    assert cp.returncode == 0, cp.stderr
    res = json.loads(cp.stdout.strip().splitlines()[-1])
    assert res["walking"] > 5 and res["running"] > 5 and res["chunked"] == res["steps"]
    assert res["after"] == res["before"]
    compiled = {k.rsplit(".", 1)[1] for k, v in res["before"].items() if v}
    assert {"orientation_kernel", "sosfilt_bank_kernel", "sacrum_kernel", "fir_kernel", "walk_kernel",
            "merge_walk_run_kernel", "step_metrics_kernel", "motion_kernel"} <= compiled
    assert not compiled & {"limb_kernel", "jerk_kernel", "row_norm_kernel", "body_frame_kernel", "sosfilt_kernel"}
    cached = _kernels_in(cache)
    assert compiled <= cached | {"_parabolic"} and "limb_kernel" not in cached
