"""numpy structured arrays / records -> JSON-ready values (NaN/inf -> null), and npz bytes."""
from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

__all__ = ["jsonable", "records", "columns", "npz_bytes"]


def jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, np.ndarray):
        if v.dtype.names:
            return records(v)
        return jsonable(v.tolist())
    if isinstance(v, np.generic):
        return jsonable(v.item())
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "to_dict"):
        return jsonable(v.to_dict())
    if hasattr(v, "__dataclass_fields__"):
        import dataclasses
        return jsonable(dataclasses.asdict(v))
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if hasattr(v, "items"):
        return jsonable(dict(v))
    return str(v)


def _column(a: np.ndarray) -> list:
    if a.dtype.kind == "f":
        if a.ndim == 1:
            return [x if math.isfinite(x) else None for x in a.tolist()]
        return jsonable(a.tolist())  # nested lists; jsonable maps NaN -> None
    if a.dtype.kind == "S":
        return [x.decode("utf-8", "replace") for x in a.tolist()]
    return jsonable(a.tolist())


def columns(arr: np.ndarray) -> dict[str, list]:
    return {name: _column(arr[name]) for name in arr.dtype.names}


def records(arr: np.ndarray) -> list[dict]:
    cols = columns(arr)
    keys = list(cols)
    return [dict(zip(keys, vals)) for vals in zip(*(cols[k] for k in keys))]


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    """``np.savez_compressed`` of the non-None arrays (string arrays as fixed-width unicode, no pickles)."""
    out = {}
    for k, v in arrays.items():
        if v is None:
            continue
        a = np.asarray(v)
        if a.dtype == object:
            a = a.astype(str)
        out[k] = a
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    return buf.getvalue()
