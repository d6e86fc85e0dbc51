"""Benchmarks of the other areas, each run in its own subprocess with a timeout so one failing or hanging
area cannot take the bench down. An area whose module is absent is reported as not available."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

#: module -> what it measures (the module exposes ``run(quick: bool) -> dict``)
AREA_HOOKS: dict[str, str] = {
    "runform.firmware_bridge._bench": "decoder packets/s per protocol, clock sync, journal",
    "runform.firmware_bridge.ble._bench": "virtual sensors through the emulated BLE stack",
    "runform.server._bench_mqtt": "packet -> cue latency through MQTT",
}

NOT_AVAILABLE = "not available in this build"
_EXIT_MISSING = 3

_CHILD = r"""
import importlib, importlib.util, json, sys
mod_name, quick = sys.argv[1], sys.argv[2] == "1"
try:
    spec = importlib.util.find_spec(mod_name)
except ModuleNotFoundError:
    spec = None
if spec is None:
    sys.exit(3)
mod = importlib.import_module(mod_name)
if not callable(getattr(mod, "run", None)):
    print(f"{mod_name} has no run(quick) function", file=sys.stderr)
    sys.exit(4)
res = mod.run(quick)

def default(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses
        return dataclasses.asdict(o)
    return str(o)

sys.stdout.flush()
print("\n@@RESULT@@" + json.dumps(res, default=default))
"""


def run_hook(module: str, quick: bool, timeout_s: float, env: dict | None = None) -> dict:
    """Run ``module.run(quick)`` in a subprocess; always returns a dict with ``status``."""
    child_env = dict(os.environ)
    if env:
        child_env.update(env)
    t0 = time.perf_counter()
    try:
        cp = subprocess.run([sys.executable, "-c", _CHILD, module, "1" if quick else "0"], env=child_env,
                            capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-600:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {"status": "timeout", "error": f"no result within {timeout_s:g} s", "stderr_tail": tail,
                "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    if cp.returncode == _EXIT_MISSING:
        return {"status": "not_available", "error": NOT_AVAILABLE, "wall_s": wall}
    line = next((ln for ln in reversed(cp.stdout.splitlines()) if ln.startswith("@@RESULT@@")), None)
    if cp.returncode != 0 or line is None:
        err = cp.stderr.strip().splitlines()
        return {"status": "error", "error": (err[-1] if err else f"exit code {cp.returncode}"),
                "stderr_tail": cp.stderr[-1500:], "exit_code": cp.returncode, "wall_s": wall}
    try:
        result = json.loads(line[len("@@RESULT@@"):])
    except json.JSONDecodeError as exc:
        return {"status": "error", "error": f"unreadable result: {exc}", "wall_s": wall}
    return {"status": "ok", "result": result, "wall_s": wall}


def run(quick: bool, timeout_s: float, hooks: dict[str, str] | None = None, env: dict | None = None) -> dict:
    hooks = AREA_HOOKS if hooks is None else hooks
    out = {}
    for module, what in hooks.items():
        res = run_hook(module, quick, timeout_s, env)
        res["what"] = what
        out[module] = res
    return out


def flatten(d, prefix: str = "", limit: int = 200) -> list[tuple[str, object]]:
    """Nested result dict -> (dotted key, scalar) rows for the report table."""
    rows: list[tuple[str, object]] = []

    def rec(x, p):
        if len(rows) >= limit:
            return
        if isinstance(x, dict):
            for k, v in x.items():
                rec(v, f"{p}.{k}" if p else str(k))
        elif isinstance(x, (list, tuple)) and len(x) > 8:
            rows.append((p, f"[{len(x)} values]"))
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                rec(v, f"{p}[{i}]")
        else:
            rows.append((p, x))

    rec(d, prefix)
    return rows
