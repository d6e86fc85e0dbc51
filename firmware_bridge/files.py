"""Recorded files as sample sources: CSV in the shared-data layout.

A CSV has a ``time_s`` column and acceleration columns in g (``*_g``) or m/s²
(``*_ms2``), optionally gyroscope columns in deg/s (``*_dps``). Columns are
picked by name (``--axes v=COL,ap=COL,ml=COL`` or x/y/z names); anything that
makes the file unusable raises :class:`InputFileError` with a message naming
the problem. Problems that leave a meaningful result become warnings.
"""
from __future__ import annotations

import csv
import math
import re
import warnings as py_warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from runform.dsp import G0


class InputFileError(ValueError):
    """The file cannot be analysed; the message says why."""


@dataclass
class Recording:
    """Samples loaded from a file, in pipeline units."""

    time_s: np.ndarray  # (n,)
    acc_ms2: np.ndarray  # (n, 3) float64, columns in the order of ``acc_columns``
    acc_columns: tuple[str, ...]
    gyr_dps: np.ndarray | None
    sampling_rate_hz: float
    source: str
    warnings: list[str] = field(default_factory=list)
    range_g_detected: float | None = None  # full-scale range inferred from flat-topped samples
    body_frame: bool = False  # columns are (vertical, AP, ML) rather than unknown sensor axes


_ACC_RE = re.compile(r"^(?P<stem>.*?acc.*?|.*?)_(?P<unit>g|ms2)$", re.IGNORECASE)


def parse_axes(spec: str | None) -> dict[str, str]:
    """``"v=acc_v_g,ap=acc_ap_g"`` -> ``{"v": "acc_v_g", "ap": "acc_ap_g"}``."""
    if not spec:
        return {}
    out: dict[str, str] = {}
    for part in spec.split(","):
        if "=" not in part:
            raise InputFileError(f"--axes entry {part!r} is not of the form NAME=COLUMN (e.g. v=acc_v_g)")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in ("v", "ap", "ml", "x", "y", "z"):
            raise InputFileError(f"--axes name {k!r} must be one of v, ap, ml (or x, y, z)")
        if k in out:
            raise InputFileError(f"--axes names {k!r} twice ({k}={out[k]} and {k}={v}); give each axis once")
        if v in out.values():
            raise InputFileError(f"--axes uses column {v!r} for two axes; give each axis its own column")
        out[k] = v
    return out


def _read_header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: Excel writes a BOM before the header
            try:
                return [h.strip() for h in next(csv.reader(fh))]
            except StopIteration:
                raise InputFileError(f"{path}: the file is empty") from None
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{path}: is a directory, not a CSV file") from None
    except PermissionError:
        raise InputFileError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise InputFileError(f"{path}: not a text CSV file") from None
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def _read_values(path: Path, n_cols: int, reader: str | None = None) -> np.ndarray:
    """The values below the header (rows x columns, float64; empty / nan cells NaN).

    ``reader``: ``"pyarrow"`` (the default when it is installed: a multithreaded C++ parser, ~20x faster than
    NumPy's on a 10-minute 500 Hz recording) or ``"numpy"`` (``np.loadtxt``, the fallback); both give the same
    values and the same errors (tests/cli/test_analyze.py runs the error cases through both).
    """
    if reader is None:
        reader = "pyarrow" if _have_pyarrow() else "numpy"
    data = _values_pyarrow(path, n_cols) if reader == "pyarrow" else _values_numpy(path, n_cols)
    if data.shape[1] != n_cols:
        raise InputFileError(f"{path}: {data.shape[1]} values per row but {n_cols} column names")
    return data


def _have_pyarrow() -> bool:
    try:
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return False
    return True


_NULLS = ("", "nan", "NaN")


def _values_pyarrow(path: Path, n_cols: int) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{k}" for k in range(n_cols)]  # the header is read above (duplicates, BOM): generic names here
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(skip_rows=1, column_names=names),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.float64() for c in names},
                                                 null_values=list(_NULLS), strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        msg = str(exc).replace("In CSV column #", "column ").replace("CSV ", "")
        raise InputFileError(f"{path}: malformed CSV ({msg.strip()})") from None
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    out = np.empty((table.num_rows, n_cols))
    for k, col in enumerate(table.columns):  # nulls (empty, nan) become NaN
        out[:, k] = col.to_numpy(zero_copy_only=False)
    return out


def _to_float(text: str) -> float:
    text = text.strip()
    return math.nan if text in _NULLS else float(text)


def _values_numpy(path: Path, n_cols: int) -> np.ndarray:
    try:
        with py_warnings.catch_warnings():
            py_warnings.simplefilter("ignore", UserWarning)  # "Empty input file": a header-only file, refused below
            data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, converters=_to_float, comments=None,
                              ndmin=2, encoding="utf-8")
    except ValueError as exc:
        raise InputFileError(f"{path}: malformed CSV ({exc})") from None
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if data.size == 0:
        data = np.empty((0, n_cols))
    return data


def load_csv(path: str | Path, axes: str | dict | None = None, reader: str | None = None,
             on_columns: Callable[[bool, bool], None] | None = None) -> Recording:
    """Read a recording.

    ``reader``: as in :func:`_read_values` (default: pyarrow when installed). ``on_columns(body_frame, gyro)``
    is called once the header has been understood, before the values are parsed (``runform analyze`` loads
    the detector's kernels for exactly that path meanwhile).
    """
    path = Path(path)
    header = _read_header(path)
    cols = {name: i for i, name in enumerate(header)}
    warnings: list[str] = []
    if "time_s" not in cols:
        raise InputFileError(f"{path}: no 'time_s' column (columns: {', '.join(header)})")
    ax = parse_axes(axes) if isinstance(axes, str) or axes is None else dict(axes)

    def unit_scale(name: str) -> float:
        if name.endswith("_g"):
            return G0
        if name.endswith("_ms2"):
            return 1.0
        raise InputFileError(f"{path}: column {name!r} has no unit suffix (_g or _ms2)")

    body_frame = False
    if ax:
        missing = [c for c in ax.values() if c not in cols]
        if missing:
            raise InputFileError(f"{path}: --axes names missing column(s) {missing}; columns: {', '.join(header)}")
        order = [k for k in ("v", "ap", "ml", "x", "y", "z") if k in ax]
        acc_names = [ax[k] for k in order]
        body_frame = "v" in ax
    else:
        acc_names = [h for h in header if h != "time_s" and re.search(r"acc", h, re.I) and _ACC_RE.match(h)]
        if not acc_names:
            acc_names = [h for h in header if re.fullmatch(r"(a[xyz]|acc_?[xyz]|[xyz])_(g|ms2)", h, re.I)]
        named = {m.group(1).lower(): h for h in acc_names if (m := re.search(r"_(v|ap|ml)_(?:g|ms2)$", h, re.I))}
        if "v" in named:
            acc_names = [named[k] for k in ("v", "ap", "ml") if k in named]
            body_frame = True
    if not acc_names:
        raise InputFileError(
            f"{path}: no acceleration columns found (expected names like acc_x_g or acc_v_ms2); "
            f"columns: {', '.join(header)}"
        )
    if len(acc_names) > 3:
        raise InputFileError(
            f"{path}: more than three acceleration columns {acc_names}; choose with --axes v=..,ap=..,ml=.."
        )
    slots = list(range(len(acc_names)))
    if body_frame:  # (vertical, AP, ML) keep their places: a missing AP must not move ML into the AP slot
        keys = order if ax else [k for k in ("v", "ap", "ml") if k in named]
        if not set(keys) <= {"v", "ap", "ml"}:
            raise InputFileError("--axes mixes body axes (v, ap, ml) with sensor axes (x, y, z); use one kind")
        slots = [("v", "ap", "ml").index(k) for k in keys]
    scales = [unit_scale(name) for name in acc_names]
    gyr_names = [h for h in header if re.search(r"gyr", h, re.I) and h.endswith("_dps")]
    if on_columns is not None:
        on_columns(body_frame, len(gyr_names) == 3)
    data = _read_values(path, len(header), reader)
    t = data[:, cols["time_s"]]
    acc = np.zeros((t.shape[0], 3))
    for k, name, scale in zip(slots, acc_names, scales):
        acc[:, k] = data[:, cols[name]] * scale
    if len(acc_names) < 3:
        warnings.append(
            f"only {len(acc_names)} acceleration axes ({', '.join(acc_names)}); missing axes taken as 0"
        )
    gyr = None
    if len(gyr_names) == 3:
        gyr = np.stack([data[:, cols[c]] for c in gyr_names], axis=1)
    elif gyr_names:
        warnings.append(
            f"{len(gyr_names)} gyroscope column(s) ({', '.join(gyr_names)}) instead of three: gyroscope not used"
        )

    if t.shape[0] < 10:
        raise InputFileError(f"{path}: only {t.shape[0]} samples")
    # time checks
    if not np.isfinite(t).all():
        raise InputFileError(f"{path}: time_s has {int((~np.isfinite(t)).sum())} empty or non-numeric values")
    dt = np.diff(t)
    if (dt == 0).any():
        i = int(np.argmax(dt == 0))
        raise InputFileError(f"{path}: duplicated time {t[i]:.6f} s at rows {i + 2} and {i + 3}")
    if (dt < 0).any():
        i = int(np.argmax(dt < 0))
        raise InputFileError(f"{path}: time goes backwards at row {i + 3} ({t[i]:.6f} -> {t[i + 1]:.6f} s)")
    fs = 1.0 / float(np.median(dt))
    gaps = dt > 1.5 / fs
    if gaps.any():
        warnings.append(
            f"{int(gaps.sum())} gap(s) in time_s (largest {dt.max() * 1000:.1f} ms); "
            "samples are treated as contiguous at the nominal rate across gaps"
        )
    # NaN samples: interpolate short runs, refuse long ones
    bad = ~np.isfinite(acc).all(axis=1)
    if bad.any():
        runs = _runs(bad)
        longest = max(e - s for s, e in runs)
        if longest > 0.05 * fs:
            s, e = max(runs, key=lambda r: r[1] - r[0])
            raise InputFileError(
                f"{path}: {e - s} consecutive samples without acceleration from t={t[s]:.3f} s "
                f"({(e - s) / fs * 1000:.0f} ms); fill or cut the gap first"
            )
        good = ~bad
        for k in range(3):
            acc[bad, k] = np.interp(t[bad], t[good], acc[good, k])
        warnings.append(f"{int(bad.sum())} sample(s) with missing acceleration were interpolated (runs <= 50 ms)")
    if gyr is not None:  # the same rule for the gyroscope, but a long gap only drops the (optional) gyroscope
        bad = ~np.isfinite(gyr).all(axis=1)
        if bad.any():
            runs = _runs(bad)
            s, e = max(runs, key=lambda r: r[1] - r[0])
            if e - s > 0.05 * fs:
                warnings.append(
                    f"{e - s} consecutive samples without rotation rate from t={t[s]:.3f} s "
                    f"({(e - s) / fs * 1000:.0f} ms): gyroscope not used"
                )
                gyr = None
            else:
                good = ~bad
                for k in range(3):
                    gyr[bad, k] = np.interp(t[bad], t[good], gyr[good, k])
                warnings.append(
                    f"{int(bad.sum())} sample(s) with missing rotation rate were interpolated (runs <= 50 ms)"
                )
    range_g = _detect_clipping(acc / G0)
    if range_g is not None:
        warnings.append(
            f"acceleration flat-tops at about ±{range_g:.1f} g: the sensor clipped; impact peaks are lower bounds"
        )
    return Recording(t, acc, tuple(acc_names), gyr, fs, str(path), warnings, range_g, body_frame)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.where(d == 1)[0], np.where(d == -1)[0]))


def _detect_clipping(acc_g: np.ndarray) -> float | None:
    """A full-scale value repeated on one axis several times (and >= 2 g) means clipping."""
    best = None
    for k in range(acc_g.shape[1]):
        col = acc_g[:, k]
        for extreme in (col.max(), col.min()):
            if abs(extreme) < 2.0 or not math.isfinite(extreme):
                continue
            hits = np.count_nonzero(np.abs(col - extreme) < 1e-9)
            if hits >= 3:
                best = max(best or 0.0, abs(extreme))
    return best
