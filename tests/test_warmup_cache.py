"""`runform warmup` compiles every kernel into the numba cache, so a later process (a sensor connecting) loads
machine code instead of compiling."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNFORM = Path(sys.executable).with_name("runform")


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"), reason="needs numba's JIT")
def test_warmup_fills_an_empty_cache_and_a_second_process_reuses_it(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    first = subprocess.run([str(RUNFORM), "warmup"], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    index = sorted(p.name for p in (tmp_path / "cache").rglob("*.nbi"))
    data = list((tmp_path / "cache").rglob("*.nbc"))
    kernels = {n.split(".")[1] for n in index}  # "<module>.<function>-<line>.py311.nbi"
    for k in ("orientation_kernel-", "sosfilt_bank_kernel-", "fir_kernel-", "limb_kernel-", "sacrum_kernel-",
              "walk_kernel-", "step_metrics_kernel-"):
        assert any(name.startswith(k) for name in kernels), (k, kernels)
    assert len(data) >= len(index)
    # a second process loads everything from the cache: numba rewrites a cache file only when it compiles
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    second = subprocess.run([str(RUNFORM), "warmup"], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()} == files
