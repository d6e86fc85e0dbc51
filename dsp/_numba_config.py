"""The one place for numba settings (like stumpy's ``config.py``).

Every kernel in :mod:`runform.dsp` is compiled through :func:`jit`, never with
``numba.njit`` directly, so the options below hold everywhere:

- ``cache=True``: compiled machine code is stored beside the sources (or in
  ``$NUMBA_CACHE_DIR``), so a sensor connecting does not wait for compilation.
- ``fastmath=False``: results must be bit-identical whether a recording is fed
  as one array or in any chunking; reassociating float sums would break that.
- ``nogil=True``: kernels can run in a worker thread beside the BLE event loop.

``NUMBA_DISABLE_JIT=1`` turns every kernel into plain Python (for coverage and
debugging); the test suite passes in that mode too.
"""
from __future__ import annotations

import os

import numba

RUNFORM_NUMBA_OPTIONS: dict = {
    "cache": True,
    "fastmath": False,
    "nogil": True,
    "error_model": "numpy",
}

JIT_DISABLED: bool = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")


def jit(func=None, **overrides):
    """``numba.njit`` with runform's options; usable as ``@jit`` or ``@jit(...)``."""
    options = {**RUNFORM_NUMBA_OPTIONS, **overrides}
    if func is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(func)


def skip_blas_probe() -> None:
    """Answer numba's one-time probe for SciPy's BLAS with "absent", for processes whose start-up counts.

    The first time numba compiles or loads a function it imports ``numba.np.arraymath``, which checks for BLAS by
    importing ``scipy.linalg`` (0.3-0.5 s when SciPy is installed, e.g. in the test and bench environments). No
    runform kernel uses BLAS (no ``np.dot``, no ``np.linalg`` inside a kernel). Only runform's own commands call
    this (``runform analyze``, ``runform run``, ``runform warmup``); numba functions of the same process that do
    need BLAS would then raise, so a library user's process is never changed. A no-op when numba has already
    probed or SciPy's BLAS is already loaded.
    """
    import sys

    blas = "scipy.linalg.cython_blas"
    if "numba.np.arraymath" in sys.modules or blas in sys.modules:
        return
    sys.modules[blas] = None  # an import of it raises ImportError now
    try:
        import numba.np.arraymath  # noqa: F401  (the probe runs here)
    finally:
        if blas in sys.modules and sys.modules[blas] is None:
            del sys.modules[blas]
