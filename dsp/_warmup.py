"""Compile (or load from the numba cache) the kernels the configured sensors need, before a sensor connects.

:func:`warmup` finds the kernels and their argument types by running the detectors of the configured paths
(site, input frame, gyroscope) once on a short synthetic signal with every kernel executed as plain Python
and its argument types recorded (no compilation, no hard-coded signature list: a kernel whose arguments
change is followed automatically). Then it compiles exactly those signatures, or loads them from the
on-disk cache. When the cache lacks several of them, half of the compilation runs in a helper process
(numba compiles one function at a time per process) that writes the shared cache, and this process loads
that half once the helper is done: with two cores an empty cache costs about half the time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

from ._numba_config import JIT_DISABLED
from ._numba_config import skip_blas_probe as _skip_blas_probe

BASE_SITES = ("sacrum", "shank", "foot")
_FS = 200.0
_N = 48  # samples of the synthetic signal (types, not results, are recorded: short is enough)
_record_lock = threading.Lock()


def _kernel_modules():
    from . import _detect, _detector, _filters, _motion, _orientation, _steps

    return (_detector, _detect, _filters, _motion, _orientation, _steps)


def _is_dispatcher(obj) -> bool:
    from numba.core.dispatcher import Dispatcher

    return isinstance(obj, Dispatcher)


@contextmanager
def _recording(calls: list):
    """Every numba kernel of the DSP modules runs as plain Python; calls made by the detector itself (not by
    another kernel) are appended to ``calls`` as ``(dispatcher, argument types)``."""
    from numba import typeof

    depth = [0]
    patched = []

    def stand_in(disp):
        py = disp.py_func

        def call(*args):
            if depth[0] == 0:
                calls.append((disp, tuple(typeof(a) for a in args)))
            depth[0] += 1
            try:
                return py(*args)
            finally:
                depth[0] -= 1
        return call

    with _record_lock:
        try:
            for mod in _kernel_modules():
                for name, obj in list(vars(mod).items()):
                    if _is_dispatcher(obj):
                        patched.append((mod, name, obj))
                        setattr(mod, name, stand_in(obj))
            yield calls
        finally:
            for mod, name, obj in reversed(patched):
                setattr(mod, name, obj)


def paths(sites=None, body_frame=None, gyro=None) -> list[tuple[str, bool, bool]]:
    """(base site, body frame, gyroscope) of every detector path the given configuration can take.

    ``sites``: site names or aliases (``None``: all); ``body_frame`` / ``gyro``: ``None`` = both."""
    from ._detector import SITE_ALIASES

    # a site the detector does not know is skipped here (creating its detector raises the error later)
    bases = tuple(dict.fromkeys(SITE_ALIASES[s][0] for s in (sites or ()) if s in SITE_ALIASES)) or BASE_SITES
    frames = (False, True) if body_frame is None else (bool(body_frame),)
    gyros = (False, True) if gyro is None else (bool(gyro),)
    return [(b, f, g) for b in bases for f in frames for g in gyros]


def _signal():
    t = np.arange(_N) / _FS
    acc = np.zeros((_N, 3))
    acc[:, 0] = 0.8
    acc[:, 2] = 9.80665 * (1.0 + 1.5 * np.maximum(np.sin(2 * np.pi * 1.4 * t), 0.0))
    gyr = np.zeros_like(acc)
    gyr[:, 1] = 300.0 * np.sin(2 * np.pi * 1.4 * t)
    return t, acc, gyr


def kernel_signatures(path_list) -> list[tuple[object, tuple]]:
    """``(dispatcher, argument types)`` of every kernel call the given paths make, in first-call order."""
    from . import _detect as K
    from . import _steps
    from ._detector import GaitEventDetector

    t, acc, gyr = _signal()
    calls: list = []
    with _recording(calls):
        for base, body_frame, gyro in path_list:
            det = GaitEventDetector(base, _FS, body_frame=body_frame)
            g = gyr if gyro else None
            # two chunks: the first call's start-up branches and the steady ones
            det.update(acc[:_N // 2], t[:_N // 2], None if g is None else g[:_N // 2])
            det.update(acc[_N // 2:], t[_N // 2:], None if g is None else g[_N // 2:])
        # kernels that only run when a step completes (not within this short signal): called as the detector
        # calls them, with the same argument types
        ic = np.array([1.0, 1.35, 1.7])
        for sacrum, side in sorted({(base == "sacrum", -1 if base == "sacrum" else 0) for base, _, _ in path_list}):
            _steps.step_metrics_kernel(ic, ic + 0.25, np.array([-0.05, 0.05, -0.05]), sacrum, side,
                                       np.array([0.0, 1.0, 0.0]), _steps.step_state_init())
        if any(base == "sacrum" for base, _, _ in path_list):
            rows = np.zeros((1, K.EV_N))
            K.merge_walk_run_kernel(rows, rows + 1.0, 30.0, np.zeros(3))
    seen, out = set(), []
    for disp, sig in calls:
        if (id(disp), sig) not in seen:
            seen.add((id(disp), sig))
            out.append((disp, sig))
    return out


def _cached(disp, sig) -> bool | None:
    """Is this signature in the on-disk cache (fresh)? ``None`` if that cannot be told (numba internals moved)."""
    try:
        cache = disp._cache
        key = cache._index_key(sig, disp.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except Exception:
        return None


def _cost(disp) -> int:
    """Compile-time proxy: the size of the kernel's bytecode."""
    return len(disp.py_func.__code__.co_code)


def _split(todo: list) -> tuple[list, list]:
    """Two halves of about equal compile cost (largest first, each to the lighter half)."""
    a, b, ca, cb = [], [], 0, 0
    for item in sorted(todo, key=lambda it: -_cost(it[1][0])):
        if ca <= cb:
            a.append(item)
            ca += _cost(item[1][0])
        else:
            b.append(item)
            cb += _cost(item[1][0])
    return a, b


def _idle_cpu() -> bool:
    """Is there a core a helper process could have to itself (two or more usable CPUs, and the 1-minute load
    leaves one free)? On a machine whose cores are all busy a helper only adds its own start-up."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        load = 0.0
    return cpus >= 2 and load <= cpus - 1.0


def warmup(sites=None, *, body_frame=None, gyro=None, parallel: bool | None = None,
           skip_blas_probe: bool = False) -> float:
    """Compile or load every kernel the given sensors need; returns the seconds it took.

    ``sites``: the configured sensor sites (names or aliases; ``None`` = every site); ``body_frame``,
    ``gyro``: ``None`` = both ways. ``parallel``: compile half in a helper process when the cache lacks
    kernels (``None``: when a core is idle, see :func:`_idle_cpu`). ``skip_blas_probe``: runform's own commands
    only, see :func:`runform.dsp._numba_config.skip_blas_probe`.
    """
    t0 = time.perf_counter()
    path_list = paths(sites, body_frame, gyro)
    if JIT_DISABLED:
        return time.perf_counter() - t0
    if skip_blas_probe:
        _skip_blas_probe()
    todo = kernel_signatures(path_list)
    indexed = list(enumerate(todo))
    missing = [it for it in indexed if _cached(*it[1]) is False]
    helper = None
    theirs: list = []
    if parallel is None and len(missing) >= 2:
        parallel = _idle_cpu()
    if parallel and len(missing) >= 2:
        mine_missing, theirs = _split(missing)
        helper = _start_helper(path_list, [i for i, _ in theirs])
        if helper is None:
            theirs = []
    skip = {i for i, _ in theirs}
    for i, (disp, sig) in indexed:
        if i not in skip:
            disp.compile(sig)
    if helper is not None:
        helper.wait()  # whatever happened there, the loop below compiles what is still missing
    for _, (disp, sig) in theirs:
        disp.compile(sig)
    return time.perf_counter() - t0


def _start_helper(path_list, indices):
    cmd = [sys.executable, "-c", "from runform.dsp._warmup import _helper_main; _helper_main()",
           json.dumps(path_list), json.dumps(indices)]
    env = dict(os.environ)
    try:
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except OSError:
        return None


def _helper_main() -> None:
    """Helper process: compile the listed kernel signatures into the shared on-disk cache."""
    _skip_blas_probe()  # a process of runform's own, nothing else runs in it
    path_list = [tuple(p) for p in json.loads(sys.argv[1])]
    wanted = set(json.loads(sys.argv[2]))
    for i, (disp, sig) in enumerate(kernel_signatures(path_list)):
        if i in wanted:
            disp.compile(sig)
