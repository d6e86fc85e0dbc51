"""What the numbers were measured on: CPU, cores, load, versions, commit."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def _cpuinfo() -> dict:
    info: dict = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if ":" not in line:
            continue
        k, v = (s.strip() for s in line.split(":", 1))
        if k == "model name" and "cpu_model" not in info:
            info["cpu_model"] = v
        elif k == "cpu MHz" and "cpu_mhz" not in info:
            try:
                info["cpu_mhz"] = float(v)
            except ValueError:
                pass
        elif k == "flags" and "simd" not in info:
            flags = set(v.split())
            info["simd"] = " ".join(f for f in ("sse4_2", "avx", "avx2", "avx512f", "fma") if f in flags)
    return info


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit(root: Path) -> str | None:
    try:
        cp = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if cp.returncode != 0:
        return None
    return cp.stdout.strip() + ("+local changes" if dirty.stdout.strip() else "")


def describe(root: Path | None = None) -> dict:
    cpu = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        usable = os.cpu_count()
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover
        load = None
    import numba
    import numpy

    out = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": cpu.get("cpu_model") or platform.processor() or "unknown",
        "cpu_mhz": cpu.get("cpu_mhz"),
        "simd": cpu.get("simd"),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "load_average_1_5_15": list(load) if load else None,
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "llvmlite": _version("llvmlite"),
        "runform": _version("runform"),
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR") or "(beside the sources)",
    }
    if root is not None:
        out["git_commit"] = _git_commit(root)
    return out
