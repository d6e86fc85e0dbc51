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
