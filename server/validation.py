"""Accuracy against force-plate reference: the engine behind ``runform validate``.

Every trial goes through the *streaming* path (``GaitEventDetector.update`` on
20-sample chunks, as BLE delivers), then detected steps are matched one-to-one
to reference contacts (nearest IC within ``tolerance_ms``). Per dataset and
condition we report matched steps, precision/recall, and for IC, TC and GCT
the bias (IMU − reference), SD, 95 % limits of agreement and RMSE in ms, plus
cadence error and peak vGRF error where the data allow.
"""
from __future__ import annotations

import json
import time
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runform.dsp import G0, GaitEventDetector
from runform.firmware_bridge.files import load_csv

TOLERANCE_MS = 60.0  # an IC within this of a reference IC is a match (stated in the report)
CHUNK = 20  # samples per update, as one BLE packet batch


class DataRootError(ValueError):
    """A data folder was named explicitly (argument or $RUNFORM_DATA) but is not one."""


def _is_data_folder(p: Path) -> bool:
    return p.is_dir() and (p / "README.md").exists()


def data_root(explicit: str | Path | None = None) -> Path | None:
    """The shared recordings folder, or ``None`` when no default location has it.

    A folder named explicitly (``explicit``, else ``$RUNFORM_DATA``) is the only candidate: when it is not a
    data folder (a directory with the shared ``README.md``) this raises :class:`DataRootError` instead of
    silently falling back to ``../shared/data``.
    """
    named, source = (explicit, "--data") if explicit else (os.environ.get("RUNFORM_DATA"), "RUNFORM_DATA")
    if named:
        p = Path(named).expanduser()
        if _is_data_folder(p):
            return p
        why = "does not exist" if not p.exists() else "is not a directory" if not p.is_dir() else \
            "has no README.md (not the shared data folder)"
        raise DataRootError(f"{source} {str(p)!r} {why}; expected the shared data folder "
                            "(README.md plus one folder per dataset, e.g. sacrum_treadmill_alcantara2022/)")
    candidates = []
    here = Path(__file__).resolve()
    candidates += [p / "shared" / "data" for p in list(here.parents)[:6]]
    candidates.append(Path.cwd().parent / "shared" / "data")
    for c in candidates:
        if c.is_dir() and (c / "README.md").exists():
            return c
    return None


@dataclass
class TrialResult:
    dataset: str
    trial: str
    condition: str
    n_ref: int
    n_det: int
    n_matched: int
    ic_err_ms: np.ndarray
    tc_err_ms: np.ndarray
    gct_err_ms: np.ndarray
    cadence_err_pct: float
    vgrf_err_bw: np.ndarray = field(default_factory=lambda: np.empty(0))


def run_detector(rec, site: str, mass_kg=None, chunk: int = CHUNK, params=None):
    det = GaitEventDetector(site, rec.sampling_rate_hz, mass_kg=mass_kg, range_g=rec.range_g_detected,
                            params=params, body_frame=rec.body_frame)
    parts = []
    n = rec.time_s.shape[0]
    for s in range(0, n, chunk):
        parts.append(det.update(rec.acc_ms2[s:s + chunk], rec.time_s[s:s + chunk]))
    return np.concatenate(parts), det


def match_steps(steps, ref_ic, ref_tc, tolerance_ms=TOLERANCE_MS):
    """Greedy one-to-one matching by IC distance; returns index pairs (det, ref)."""
    det_ic = steps["ic_s"]
    pairs = []
    used = set()
    for j, ric in enumerate(ref_ic):
        if det_ic.size == 0:
            break
        d = np.abs(det_ic - ric)
        order = np.argsort(d)
        for i in order:
            if d[i] * 1000 > tolerance_ms:
                break
            if i not in used:
                used.add(i)
                pairs.append((int(i), j))
                break
    return pairs


def evaluate_trial(dataset, trial, condition, rec, ref, site, mass_kg=None, fz_bw=None, params=None):
    """Run one recording through the streaming detector and compare it with its reference contacts."""
    steps, _ = run_detector(rec, site, mass_kg, params=params)
    return _evaluate_steps(dataset, trial, condition, steps, ref, site, rec, fz_bw)


def _ref(path: Path) -> np.ndarray:
    return np.genfromtxt(path, delimiter=",", skip_header=1, ndmin=2)


def iter_trials(root: Path, datasets=("sacrum_treadmill_alcantara2022", "shank_treadmill_bach2022")):
    """Yield (dataset, trial, condition, site, recording, ref, mass_kg, fz_bw)."""
    for ds in datasets:
        folder = root / ds
        if not folder.is_dir():
            continue
        meta = json.loads((folder / "meta.json").read_text())
        for trial in sorted(meta):
            m = meta[trial]
            rec = load_csv(folder / f"{trial}.csv")
            ref = _ref(folder / f"{trial}_ref.csv")
            if ds.startswith("sacrum"):
                cond = f"{m['speed_ms']:.2f} m/s, slope {m['slope_deg']:+.0f}°"
                fz = np.genfromtxt(folder / f"{trial}.csv", delimiter=",", names=True)["fz_bw"]
                yield ds, trial, cond, "sacrum", rec, ref, m.get("mass_kg"), fz, m
            else:
                cond = f"{m['condition']} {m['speed_kmh']:.1f} km/h"
                yield ds, trial, cond, "shank", rec, ref, m.get("mass_kg"), None, m


def summarize(values: np.ndarray) -> dict:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "bias": math.nan, "sd": math.nan, "loa_low": math.nan, "loa_high": math.nan,
                "rmse": math.nan}
    bias = float(v.mean())
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"n": int(v.size), "bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd,
            "loa_high": bias + 1.96 * sd, "rmse": float(np.sqrt(np.mean(v ** 2)))}


def aggregate(results: list[TrialResult]) -> dict:
    n_ref = sum(r.n_ref for r in results)
    n_det = sum(r.n_det for r in results)
    n_m = sum(r.n_matched for r in results)
    cat = lambda name: np.concatenate([getattr(r, name) for r in results]) if results else np.empty(0)
    cad = np.array([r.cadence_err_pct for r in results])
    return {
        "trials": len(results), "n_ref": n_ref, "n_det": n_det, "n_matched": n_m,
        "recall": n_m / n_ref if n_ref else math.nan, "precision": n_m / n_det if n_det else math.nan,
        "ic": summarize(cat("ic_err_ms")), "tc": summarize(cat("tc_err_ms")), "gct": summarize(cat("gct_err_ms")),
        "cadence_abs_err_pct_mean": float(np.nanmean(np.abs(cad))) if cad.size else math.nan,
        "cadence_abs_err_pct_max": float(np.nanmax(np.abs(cad))) if cad.size else math.nan,
        "vgrf": summarize(cat("vgrf_err_bw")),
    }


# ------------------------------------------------------------------ full report
TARGETS = {
    "shank_ic_sd_ms": 8.0,
    "sacrum_gct_rmse_ms": 20.0,
    "cadence_err_pct": 0.5,
    "recall": 0.98,
    "precision": 0.98,
}


def _group(results, key):
    groups: dict[str, list[TrialResult]] = {}
    for r in results:
        groups.setdefault(key(r), []).append(r)
    return {k: aggregate(v) for k, v in sorted(groups.items())}


def evaluate_gaitmap_foot(root: Path) -> dict | None:
    """Foot IMUs (walking, 204.8 Hz, acc + gyro) against motion-capture IC/TC from gaitmap's example."""
    folder = root / "walking_foot_gaitmap_example"
    if not (folder / "imu_sample.csv").exists():
        return None
    raw = np.genfromtxt(folder / "imu_sample.csv", delimiter=",", skip_header=2)
    with (folder / "imu_sample.csv").open() as fh:
        sensors = fh.readline().strip().split(",")[1:]
        axes = fh.readline().strip().split(",")[1:]
    ev = np.genfromtxt(folder / "stride_events_sample.csv", delimiter=",", names=True, dtype=None, encoding=None)
    fs = 204.8
    out = {}
    for use_gyro in (False, True):
        results = []
        for foot in ("left", "right"):
            col = {a: i + 1 for i, (s, a) in enumerate(zip(sensors, axes)) if s == f"{foot}_sensor"}
            acc = raw[:, [col["acc_x"], col["acc_y"], col["acc_z"]]]
            gyr = raw[:, [col["gyr_x"], col["gyr_y"], col["gyr_z"]]]
            t = np.arange(acc.shape[0]) / fs
            det = GaitEventDetector(f"foot_{foot}", fs, use_gyro=use_gyro)
            parts = [det.update(acc[s:s + CHUNK], t[s:s + CHUNK], gyr[s:s + CHUNK] if use_gyro else None)
                     for s in range(0, t.shape[0], CHUNK)]
            steps = np.concatenate(parts)
            sel = ev[ev["foot"] == foot]
            ref = np.column_stack([sel["ic"] / fs, sel["tc"] / fs])
            ref = ref[np.argsort(ref[:, 0])]
            # mocap TC of a stride precedes its IC (strides run mid-stance to mid-stance): pair each IC
            # with the first TC after it
            tcs = np.sort(sel["tc"] / fs)
            pair_tc = np.array([tcs[tcs > ic][0] if (tcs > ic).any() else np.nan for ic in ref[:, 0]])
            ref = np.column_stack([ref[:, 0], pair_tc])
            ok = np.isfinite(ref[:, 1])
            rec_like = type("R", (), {"time_s": t})
            r = _evaluate_steps("walking_foot_gaitmap_example", foot, "walking (mocap reference)", steps,
                                ref[ok], "foot", rec_like)
            results.append(r)
        out["gyro" if use_gyro else "acc_only"] = aggregate(results)
    return out


WALK_TOLERANCE_MS = 150.0  # walking IC match window (a walking step lasts 450-800 ms; stated in the report)
WALK_FOLDER = "walking_lowerback_mobgap_example"


def load_walking_lowerback(root: Path) -> list[dict] | None:
    """The mobgap example (Mobilise-D format, ``data.mat``): lower-back IMU (acc in g, 100 Hz) and INDIP
    reference initial/final contacts, per walking bout ("MicroWB", seconds from the recording start).

    Returns one dict per recording that has reference bouts, or None when the folder (or SciPy, needed to
    read MATLAB files) is missing.
    """
    folder = root / WALK_FOLDER / "example_data" / "data" / "lab"
    if not folder.is_dir():
        return None
    try:
        from scipy.io import loadmat
    except ImportError:  # SciPy is a test/validation dependency, not a runtime one
        return None
    out = []
    for mat in sorted(folder.glob("*/*/data.mat")):
        subject = f"{mat.parent.parent.name}/{mat.parent.name}"
        tm = loadmat(mat, squeeze_me=True, struct_as_record=False)["data"].TimeMeasure1
        for test in tm._fieldnames:
            for trial in getattr(tm, test)._fieldnames:
                rec = getattr(getattr(tm, test), trial)
                su = rec.SU.LowerBack
                wbs = rec.Standards.INDIP.MicroWB
                wbs = list(wbs) if isinstance(wbs, np.ndarray) else [wbs]
                bouts = [{"start_s": float(w.Start), "end_s": float(w.End),
                          "ic_s": np.atleast_1d(np.asarray(w.InitialContact_Event, dtype=float))} for w in wbs]
                if not bouts:
                    continue
                fs = float(su.Fs.Acc)
                acc = np.asarray(su.Acc, dtype=float) * G0
                out.append({"subject": subject, "test": test, "trial": trial, "fs": fs, "acc_ms2": acc,
                            "time_s": np.arange(acc.shape[0]) / fs, "bouts": bouts})
    return out


def _walk_bout_errors(steps, bout, tol_ms=WALK_TOLERANCE_MS):
    """Match detected ICs to one bout's reference ICs. NaN reference ICs (INDIP could not place them)
    are left out; unmatched detections between the neighbours of such a gap are not counted as false."""
    ic = bout["ic_s"]
    tol = tol_ms / 1000.0
    valid = np.isfinite(ic)
    ref = ic[valid]
    sel = steps[(steps["ic_s"] >= bout["start_s"] - tol) & (steps["ic_s"] <= bout["end_s"])]
    pairs = match_steps(sel, ref, ref, tolerance_ms=tol_ms)
    di = np.array([p[0] for p in pairs], dtype=int)
    rj = np.array([p[1] for p in pairs], dtype=int)
    unknown = np.zeros(sel.shape[0], dtype=bool)
    for j in np.nonzero(~valid)[0]:
        lo = ic[:j][np.isfinite(ic[:j])]
        hi = ic[j + 1:][np.isfinite(ic[j + 1:])]
        a = lo[-1] + tol if lo.size else -np.inf
        b = hi[0] - tol if hi.size else np.inf
        unknown |= (sel["ic_s"] > a) & (sel["ic_s"] < b)
    matched = np.zeros(sel.shape[0], dtype=bool)
    matched[di] = True
    n_det = int(matched.sum() + (~matched & ~unknown).sum())
    ic_err = (sel["ic_s"][di] - ref[rj]) * 1000
    # step time of consecutive matched steps against the reference's consecutive ICs
    order = np.argsort(rj)
    di, rj = di[order], rj[order]
    full_j = np.nonzero(valid)[0][rj]  # positions in the bout's IC list (with NaNs): consecutive = +1
    ok = np.diff(full_j) == 1
    step_err = (np.diff(sel["ic_s"][di]) - np.diff(ref[rj]))[ok] * 1000
    # bout cadence from the median step time (walking bouts hold turns, shuffles and pauses): detected =
    # the steps' own step_time_ms, reference = intervals of consecutive valid reference ICs
    ref_steps = np.diff(ic)
    ref_steps = ref_steps[np.isfinite(ref_steps) & (ref_steps > 0) & (ref_steps < 2.0)]
    ref_cad = 60.0 / np.median(ref_steps) if ref_steps.size else math.nan
    st_ms = sel["step_time_ms"][np.isfinite(sel["step_time_ms"])]
    det_cad = 60000.0 / np.median(st_ms) if st_ms.size else math.nan
    return {"n_ref": int(valid.sum()), "n_det": n_det, "n_matched": len(pairs), "ic_err_ms": ic_err,
            "step_err_ms": step_err, "cadence_err_pct": 100.0 * (det_cad - ref_cad) / ref_cad,
            "activity_walking": int((sel["activity"] == 1).sum()), "n_sel": int(sel.shape[0]),
            "sides_known": int((sel["side"] >= 0).sum())}


def _walk_aggregate(rows: list[dict], bias_shift_ms: float = 0.0) -> dict:
    n_ref = sum(r["n_ref"] for r in rows)
    n_det = sum(r["n_det"] for r in rows)
    n_m = sum(r["n_matched"] for r in rows)
    cad = np.array([r["cadence_err_pct"] for r in rows])
    ic = np.concatenate([r["ic_err_ms"] for r in rows]) - bias_shift_ms if rows else np.empty(0)
    return {
        "bouts": len(rows), "n_ref": n_ref, "n_det": n_det, "n_matched": n_m,
        "recall": n_m / n_ref if n_ref else math.nan, "precision": n_m / n_det if n_det else math.nan,
        "f1": 2 * n_m / (n_ref + n_det) if n_ref + n_det else math.nan,
        "ic": summarize(ic), "step_time": summarize(np.concatenate([r["step_err_ms"] for r in rows])),
        "cadence_abs_err_pct_mean": float(np.nanmean(np.abs(cad))) if cad.size else math.nan,
        "cadence_abs_err_pct_max": float(np.nanmax(np.abs(cad))) if cad.size else math.nan,
        "within_60ms": float(np.mean(np.abs(ic) <= 60.0)) if ic.size else math.nan,
        "activity_walking_frac": (sum(r["activity_walking"] for r in rows) / max(1, sum(r["n_sel"] for r in rows))),
        "sides_known": sum(r["sides_known"] for r in rows),
    }


def evaluate_walking_lowerback(root: Path, params=None) -> dict | None:
    """Sacral/lower-back WALKING: streaming detector (20-sample chunks, sensor mounted as worn, vertical
    from gravity) against INDIP reference ICs of the mobgap example, per walking bout."""
    recs = load_walking_lowerback(root)
    if not recs:
        return None
    rows = []
    for r in recs:
        det = GaitEventDetector("lower_back", r["fs"], params=params)
        n = r["time_s"].shape[0]
        steps = np.concatenate([det.update(r["acc_ms2"][s:s + CHUNK], r["time_s"][s:s + CHUNK])
                                for s in range(0, n, CHUNK)])
        for b in r["bouts"]:
            e = _walk_bout_errors(steps, b)
            e.update(subject=r["subject"], test=r["test"], trial=r["trial"], bout=f"{b['start_s']:.1f}-{b['end_s']:.1f} s")
            rows.append(e)
    cohort = lambda r: "healthy adults (HA)" if r["subject"].startswith("HA") else "multiple sclerosis (MS)"
    out = {"tolerance_ms": WALK_TOLERANCE_MS, "look_ahead_ms": det.walk_look_ahead_ms,
           "all": _walk_aggregate(rows),
           "by_subject": {s: _walk_aggregate([r for r in rows if r["subject"] == s])
                          for s in sorted({r["subject"] for r in rows})},
           "by_test": {t: _walk_aggregate([r for r in rows if r["test"] == t]) for t in sorted({r["test"] for r in rows})},
           "by_cohort": {c: _walk_aggregate([r for r in rows if cohort(r) == c]) for c in sorted({cohort(r) for r in rows})},
           "per_bout": [{k: (v if not isinstance(v, np.ndarray) else None) for k, v in r.items()
                         if k not in ("ic_err_ms", "step_err_ms")} | {"ic_sd_ms": summarize(r["ic_err_ms"])["sd"]}
                        for r in rows]}
    # the IC offset is calibrated on this folder (the only lower-back walking data): leave one subject out
    loo = {}
    for s in sorted({r["subject"] for r in rows}):
        train = np.concatenate([r["ic_err_ms"] for r in rows if r["subject"] != s])
        test = [r for r in rows if r["subject"] == s]
        shift = float(np.mean(train))
        loo[f"{s} held out"] = _walk_aggregate(test, bias_shift_ms=shift) | {"ic_bias_shift_ms": shift}
    out["leave_one_subject_out"] = loo
    return out


def _evaluate_steps(dataset, trial, condition, steps, ref, site, rec, fz_bw=None):
    """Match detected steps to reference contacts (IC, TC in columns of ``ref``) and collect the errors."""
    ref_ic, ref_tc = ref[:, 0], ref[:, 1]
    lo, hi = ref_ic.min() - 0.2, ref_tc.max() + 0.2
    in_range = (steps["ic_s"] >= lo) & (steps["ic_s"] <= hi)
    steps_r = steps[in_range]
    pairs = match_steps(steps_r, ref_ic, ref_tc)
    di = np.array([p[0] for p in pairs], dtype=int)
    rj = np.array([p[1] for p in pairs], dtype=int)
    ic_err = (steps_r["ic_s"][di] - ref_ic[rj]) * 1000
    tc_err = (steps_r["tc_s"][di] - ref_tc[rj]) * 1000
    gct_err = steps_r["gct_ms"][di] - (ref_tc[rj] - ref_ic[rj]) * 1000
    # cadence over the reference span (steps per minute); a single-leg reference counts strides
    factor = 1 if site == "sacrum" else 2
    ref_cad = factor * 60.0 * (len(ref_ic) - 1) / (ref_ic[-1] - ref_ic[0]) if len(ref_ic) > 1 else math.nan
    cad = steps_r["cadence_spm"]
    cad = cad[np.isfinite(cad)]
    det_cad = 60000.0 / np.mean(60000.0 / cad) if cad.size else math.nan
    vgrf_err = np.empty(0)
    if fz_bw is not None and pairs:
        errs = []
        for i, j in zip(di, rj):
            m = (rec.time_s >= ref_ic[j]) & (rec.time_s <= ref_tc[j])
            if m.any():
                errs.append(steps_r["peak_vgrf_bw"][i] - fz_bw[m].max())
        vgrf_err = np.array(errs)
    return TrialResult(dataset, trial, condition, len(ref_ic), int(in_range.sum()), len(pairs),
                       ic_err, tc_err, gct_err, 100.0 * (det_cad - ref_cad) / ref_cad, vgrf_err)


# ------------------------------------------------------------------ overground running, markers + force plates
OVERGROUND = "overground_multisite_grouvel2023"
OVERGROUND_FS_HZ = 100.0  # marker (and, nominally, IMU) rate of the synchronised CSV files
FP_THRESHOLD_N = 50.0  # force-plate contact: summed vertical force above this (as the other folders' references)
FP_MIN_CONTACT_MS = 80.0
MARKER_FLOOR_MARGIN_MM = 25.0  # a foot is "low" while its lowest marker is within this of the trial's floor level
MARKER_IC_BEFORE_MS = 30.0  # IC is searched from this before the start of the low phase (a swing foot may dip low
MARKER_IC_AFTER_MS = 60.0  # just before landing) to this after it
MARKER_TC_SEARCH_MS = 80.0  # knee-extension peak searched up to this after the end of the low phase
MARKER_MAX_SPEED_MS = 1.5  # m/s: and its heel-forefoot midpoint moves slower than this horizontally (a swing foot
#                            that dips low moves at several m/s)
MARKER_MERGE_MS = 150.0  # low phases closer than this are one contact (a marker flickering over the margin)
MARKER_MIN_LOW_MS = 100.0  # a shorter low phase is a low swing, not a stance (running stance >= ~150 ms)
SYNC_MIN_R = 0.8  # IMU and marker foot rotation must correlate at least this well on the nominal clock
SYNC_MAX_LAG_MS = 200.0
_IMU_SITES = {"sacrum": "SA", "foot_left": "LF", "foot_right": "RF", "shank_left": "LS", "shank_right": "RS"}


@dataclass(frozen=True)
class C3DFile:
    """What ``read_c3d`` returns: 3-D points (frames, points, xyz) in the file's unit, analog channels
    (samples, channels) scaled to their unit, both rates, labels and the FORCE_PLATFORM group."""
    points: np.ndarray
    point_labels: list
    point_rate_hz: float
    analog: np.ndarray
    analog_labels: list
    analog_rate_hz: float
    force_platform: dict


def read_c3d(path: Path) -> C3DFile:
    """Minimal C3D reader in plain NumPy (Intel/PC byte order; float or scaled int16 storage): enough for the
    force plates and markers of the Grouvel trials, checked against ezc3d on them (identical values)."""
    import struct

    raw = Path(path).read_bytes()
    if len(raw) < 512 or raw[1] != 0x50:
        raise ValueError(f"{path}: not a C3D file (bad header key)")
    p0 = (raw[0] - 1) * 512
    if raw[p0 + 3] != 84:
        raise ValueError(f"{path}: C3D processor type {raw[p0 + 3]} is not supported (only Intel/PC, 84)")
    groups, params = {}, {}
    i, end = p0 + 4, p0 + raw[p0 + 2] * 512
    while i < end:
        nch, gid = struct.unpack_from("<bb", raw, i)
        if nch == 0:
            break
        name = raw[i + 2:i + 2 + abs(nch)].decode("latin-1").upper()
        j = i + 2 + abs(nch)
        nxt = struct.unpack_from("<h", raw, j)[0]
        if gid < 0:
            groups[-gid] = name
        else:
            dtype, nd = struct.unpack_from("<bB", raw, j + 2)
            dims = list(raw[j + 4:j + 4 + nd])
            count = int(np.prod(dims)) if nd else 1
            buf = raw[j + 4 + nd:j + 4 + nd + count * abs(dtype)]
            if dtype == -1:  # characters; a 2-D array is a list of fixed-width strings
                w = dims[0] if nd > 1 else 0
                val = [buf[k * w:(k + 1) * w].decode("latin-1").strip() for k in range(count // w)] if w else \
                    buf.decode("latin-1").strip()
            else:
                val = np.frombuffer(buf, dtype={1: "<u1", 2: "<i2", 4: "<f4"}[dtype]).astype(float)
                if nd > 1:
                    val = val.reshape(dims[::-1])
            params[(gid, name)] = val
        if nxt == 0:
            break
        i = j + nxt
    par: dict = {}
    for (gid, name), v in params.items():
        par.setdefault(groups.get(gid, str(gid)), {})[name] = v
    h = np.frombuffer(raw[:20], dtype="<u2")
    n_pts, n_an_total, first, last, data_block, an_per_frame = (int(h[1]), int(h[2]), int(h[3]), int(h[4]),
                                                                int(h[8]), int(h[9]))
    scale = struct.unpack_from("<f", raw, 12)[0]
    n_frames = last - first + 1
    n_ch = n_an_total // an_per_frame if an_per_frame else 0
    per_frame = 4 * n_pts + n_an_total
    arr = np.frombuffer(raw, dtype="<f4" if scale < 0 else "<i2", count=per_frame * n_frames,
                        offset=(data_block - 1) * 512).astype(float).reshape(n_frames, per_frame)
    pts = arr[:, :4 * n_pts].reshape(n_frames, n_pts, 4)[:, :, :3] * (1.0 if scale < 0 else abs(scale))
    an = arr[:, 4 * n_pts:].reshape(n_frames * max(an_per_frame, 1), n_ch)
    a = par.get("ANALOG", {})
    sc = np.resize(np.atleast_1d(a.get("SCALE", 1.0)), n_ch)
    off = np.resize(np.atleast_1d(a.get("OFFSET", 0.0)), n_ch)
    an = (an - off) * sc * float(np.atleast_1d(a.get("GEN_SCALE", 1.0))[0])
    pt = par.get("POINT", {})
    return C3DFile(pts, list(np.atleast_1d(pt.get("LABELS", []))), float(np.atleast_1d(pt.get("RATE", 0.0))[0]), an,
                   list(np.atleast_1d(a.get("LABELS", []))), float(np.atleast_1d(a.get("RATE", 0.0))[0]),
                   par.get("FORCE_PLATFORM", {}))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of every run of True."""
    e = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(e == 1)[0], np.nonzero(e == -1)[0] - 1))


def force_plate_contacts(c3d: C3DFile, threshold_n: float = FP_THRESHOLD_N,
                         min_contact_ms: float = FP_MIN_CONTACT_MS) -> np.ndarray:
    """Contacts from the summed vertical force of all plates (a foot may straddle two adjacent plates):
    rows (on_s, off_s, peak_n, centre_x, centre_y) with the plate-area centre of the loaded plates (mm).
    Onset/offset = first/last sample above ``threshold_n``; runs shorter than ``min_contact_ms`` are noise."""
    fp = c3d.force_platform
    ch = np.atleast_2d(fp["CHANNEL"]).astype(int)  # (plates, 6): Fx Fy Fz Mx My Mz, 1-based
    fz = np.stack([c3d.analog[:, c[2] - 1] for c in ch])  # (plates, samples)
    if np.abs(fz.min()) > np.abs(fz.max()):  # stored as the force ON the plate (downwards)
        fz = -fz
    total = fz.sum(0)
    corners = np.asarray(fp["CORNERS"]).reshape(len(ch), 4, 3)
    fs = c3d.analog_rate_hz
    out = []
    for a, b in _runs(total > threshold_n):
        if (b - a + 1) * 1000.0 / fs < min_contact_ms or a == 0 or b == total.shape[0] - 1:
            continue  # noise, or a contact cut by the trial's ends
        loaded = fz[:, a:b + 1].max(1) > threshold_n
        ctr = corners[loaded].reshape(-1, 3).mean(0)
        out.append((a / fs, b / fs, float(total[a:b + 1].max()), ctr[0], ctr[1]))
    return np.array(out, dtype=float).reshape(-1, 5)


def _interior_peak(x: np.ndarray, lo: int, hi: int) -> float:
    """Fractional index (parabolic refinement) of the maximum of ``x`` in [lo, hi]; NaN when it sits on the
    window's edge (the peak is not inside: an incomplete contact)."""
    lo, hi = max(lo, 0), min(hi, x.shape[0] - 1)
    if hi - lo < 2:
        return math.nan
    k = lo + int(np.argmax(x[lo:hi + 1]))
    if k in (lo, hi):
        return math.nan
    y0, y1, y2 = x[k - 1], x[k], x[k + 1]
    den = y0 - 2 * y1 + y2
    return k + (0.5 * (y0 - y2) / den if den != 0 else 0.0)


def knee_angle_deg(hip: np.ndarray, knee: np.ndarray, ankle: np.ndarray) -> np.ndarray:
    """Included knee angle (180° = straight) from hip, knee and ankle joint centres (n, 3)."""
    u, v = hip - knee, ankle - knee
    c = (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def marker_contacts(heel_mm: np.ndarray, forefoot_mm: np.ndarray, toe_mm: np.ndarray, knee_deg: np.ndarray,
                    fs: float) -> tuple[np.ndarray, int]:
    """Foot contacts of one foot from markers (lab frame, z up, mm).

    - candidate contact ("low phase"): the foot's lowest marker (heel, forefoot, toe) within
      ``MARKER_FLOOR_MARGIN_MM`` of the lowest height that marker set reaches in the trial, and the
      heel-forefoot midpoint slower than ``MARKER_MAX_SPEED_MS`` horizontally (foot-velocity idea of
      O'Connor et al. 2007, Gait Posture 25:469); phases apart by
      less than ``MARKER_MERGE_MS`` are one, and one shorter than ``MARKER_MIN_LOW_MS`` is a low swing;
    - IC: the landing impact, i.e. the peak upward vertical acceleration of the heel marker (Hreljac &
      Marshall 2000, J Biomech 33:783) or of the forefoot marker, whichever lands first (mid/forefoot
      strikers), searched from ``MARKER_IC_BEFORE_MS`` before to ``MARKER_IC_AFTER_MS`` after the start of
      the low phase: the earlier of the two
      markers' peaks, unless it is less than half the later one (then the later, larger one);
    - TC: peak knee extension in late stance (Fellin et al. 2010, J Sci Med Sport 13:646: the best of five
      kinematic toe-off methods against force plates in overground running, 4.9 ms mean absolute error),
      searched from the middle of the low phase to ``MARKER_TC_SEARCH_MS`` after its end.

    Returns (rows (ic_s, tc_s), number of contacts left out as incomplete: cut by the trial's start or end,
    or without an interior acceleration / knee-extension peak).
    """
    low = np.minimum(np.minimum(heel_mm[:, 2], forefoot_mm[:, 2]), toe_mm[:, 2])
    mid_xy = (heel_mm[:, :2] + forefoot_mm[:, :2]) / 2.0
    speed = np.linalg.norm(np.gradient(mid_xy, axis=0), axis=1) * fs / 1000.0  # m/s
    runs = _runs((low < np.nanmin(low) + MARKER_FLOOR_MARGIN_MM) & (speed < MARKER_MAX_SPEED_MS))
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and (a - merged[-1][1]) * 1000.0 / fs < MARKER_MERGE_MS:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    az = {k: np.gradient(np.gradient(m[:, 2])) * fs * fs / 1000.0 for k, m in (("heel", heel_mm), ("fore", forefoot_mm))}
    w_ic0 = int(round(MARKER_IC_BEFORE_MS * fs / 1000.0))
    w_ic1 = int(round(MARKER_IC_AFTER_MS * fs / 1000.0))
    w_tc = int(round(MARKER_TC_SEARCH_MS * fs / 1000.0))
    n = low.shape[0]
    rows, left_out = [], 0
    for a, b in merged:
        if a - w_ic0 < 1 or b + w_tc > n - 2:  # cut by the trial's start or end (checked first: a cut
            left_out += 1  # contact may look short)
            continue
        if (b - a + 1) * 1000.0 / fs < MARKER_MIN_LOW_MS:
            continue
        peaks = []
        for k in ("heel", "fore"):
            p = _interior_peak(az[k], a - w_ic0, a + w_ic1)
            if math.isfinite(p):
                peaks.append((p, float(np.interp(p, np.arange(n), az[k]))))
        if not peaks:
            left_out += 1
            continue
        peaks.sort()
        ic = peaks[0][0] if len(peaks) == 1 or peaks[0][1] >= 0.5 * peaks[1][1] else peaks[1][0]
        tc = _interior_peak(knee_deg, (a + b) // 2, b + w_tc)
        if not math.isfinite(tc) or tc <= ic:
            left_out += 1
            continue
        rows.append((ic / fs, tc / fs))
    return np.array(rows, dtype=float).reshape(-1, 2), left_out

def load_overground_trial(path: Path) -> dict:
    """One ``synchronised/*.csv`` trial: markers (mm, lab frame, z up, running along ±x) and the IMU channels
    (``P6_<site>_acc_<axis>`` in g, ``P6_<site>_gyro_<axis>`` in deg/s) as the file states them, all at 100 Hz."""
    d = np.genfromtxt(path, delimiter=",", names=True)
    names = set(d.dtype.names)
    need = [f"{s}{m}_{a}" for s in "LR" for m in ("HEE", "FMH", "TOE", "HJC", "KJC", "AJC") for a in "xyz"]
    missing = [c for c in need if c not in names]
    if missing:
        raise ValueError(f"{path}: missing marker columns {missing[:6]}")
    m = lambda name: np.column_stack([d[f"{name}_{a}"] for a in "xyz"])
    out = {"trial": path.stem, "n": d.shape[0], "fs": OVERGROUND_FS_HZ, "markers": {}, "imu": {}}
    for s in "LR":
        out["markers"][s] = {k: m(f"{s}{k}") for k in ("HEE", "FMH", "TOE", "HJC", "KJC", "AJC")}
    for site, code in _IMU_SITES.items():
        if f"P6_{code}_acc_x" in names:
            out["imu"][site] = {"acc_g": m(f"P6_{code}_acc"),
                                "gyr_dps": m(f"P6_{code}_gyro") if f"P6_{code}_gyro_x" in names else None}
    return out


def overground_reference(trial: dict) -> tuple[np.ndarray, int]:
    """Marker reference contacts of both feet, sorted by IC: rows (ic_s, tc_s, side) with side 0 = L, 1 = R
    (``SIDE_LEFT``/``SIDE_RIGHT``), and the number of incomplete contacts left out."""
    rows, left_out = [], 0
    for side, s in ((0, "L"), (1, "R")):
        mk = trial["markers"][s]
        c, lo = marker_contacts(mk["HEE"], mk["FMH"], mk["TOE"], knee_angle_deg(mk["HJC"], mk["KJC"], mk["AJC"]),
                                trial["fs"])
        left_out += lo
        rows += [(ic, tc, side) for ic, tc in c]
    ref = np.array(sorted(rows), dtype=float).reshape(-1, 3)
    return ref, left_out


def _foot_pitch_rate_dps(mk: dict, fs: float) -> np.ndarray:
    """Sagittal rotation rate of the foot from its heel->toe vector (deg/s), whatever the running direction."""
    d = mk["TOE"] - mk["HEE"]
    return np.degrees(np.gradient(np.unwrap(np.arctan2(d[:, 2], np.hypot(d[:, 0], d[:, 1]))))) * fs


def _principal_component(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(0)
    return xc @ np.linalg.svd(xc, full_matrices=False)[2][0]


def imu_clock_check(ref_rate: np.ndarray, imu_rate: np.ndarray, fs: float,
                    max_lag_ms: float = SYNC_MAX_LAG_MS) -> dict:
    """Does an IMU rotation rate run on the markers' clock? ``ref_rate`` (marker foot pitch rate) and
    ``imu_rate`` (the gyroscope's principal component) of the same samples. Returns the best |r| on the
    nominal clock (lag within ±``max_lag_ms``) and, for diagnosis, the best |r| over time-scale factors
    1–8 (IMU index = offset + t × fs / k) with that factor: k ≈ 1 means the clocks agree; k > 1 means the
    IMU rows cover k times more real time than the marker rows (the IMU's real rate is fs / k)."""
    n = ref_rate.shape[0]
    t = np.arange(n, dtype=float)

    def best_r(idx):  # idx (m, n): IMU sample positions for each candidate; rows whose span fits
        g = np.interp(idx.ravel(), t, imu_rate).reshape(idx.shape)
        g = g - g.mean(1, keepdims=True)
        r_ = ref_rate - ref_rate.mean()
        den = np.sqrt((g * g).sum(1) * (r_ * r_).sum())
        r = np.abs(g @ r_) / np.where(den > 0, den, np.inf)
        return float(r.max()) if r.size else math.nan, int(np.argmax(r)) if r.size else -1

    max_lag = int(round(max_lag_ms * fs / 1000.0))
    r_nom = 0.0
    for lag in range(-max_lag, max_lag + 1):  # plain shifts: correlate the overlapping parts
        a, b = (ref_rate[lag:], imu_rate[:n - lag]) if lag >= 0 else (ref_rate[:n + lag], imu_rate[-lag:])
        if a.shape[0] > n // 2 and a.std() > 0 and b.std() > 0:
            r_nom = max(r_nom, abs(float(np.corrcoef(a, b)[0, 1])))
    best = (math.nan, math.nan)
    for k in np.round(np.arange(1.0, 8.01, 0.1), 1):
        span = (n - 1) / k
        offs = np.arange(0.0, n - 1 - span + 1e-9, 1.0)
        if offs.size == 0:
            continue
        r, i = best_r(offs[:, None] + t[None, :] / k)
        if not (r <= best[0]):  # NaN-safe max
            best = (r, float(k))
    return {"r_nominal": r_nom, "r_best": best[0], "time_scale": best[1]}


def evaluate_overground(root: Path) -> dict | None:
    """Overground running (Grouvel et al. 2023 subset): marker reference contacts for every trial, checked
    against the force plates where a ``.c3d`` has them; the IMU clock checked against the markers; and the
    streaming detector evaluated on the IMU sites of every trial whose IMU runs on the markers' clock."""
    folder = root / OVERGROUND
    files = sorted((folder / "synchronised").glob("*.csv")) if folder.is_dir() else []
    if not files:
        return None
    trials, per_trial = [], []
    for f in files:
        tr = load_overground_trial(f)
        ref, left_out = overground_reference(tr)
        checks = []
        for s, site in (("L", "foot_left"), ("R", "foot_right")):
            imu = tr["imu"].get(site)
            if imu is not None and imu["gyr_dps"] is not None:
                checks.append(imu_clock_check(_foot_pitch_rate_dps(tr["markers"][s], tr["fs"]),
                                              _principal_component(imu["gyr_dps"]), tr["fs"]))
        sync = {"r_nominal": max((c["r_nominal"] for c in checks), default=math.nan),
                "r_best": max((c["r_best"] for c in checks), default=math.nan),
                "time_scale": float(np.median([c["time_scale"] for c in checks])) if checks else math.nan}
        sync["in_sync"] = bool(sync["r_nominal"] >= SYNC_MIN_R)
        tr.update(ref=ref, sync=sync)
        trials.append(tr)
        gct = (ref[:, 1] - ref[:, 0]) * 1000.0
        per_trial.append({"trial": tr["trial"], "duration_s": tr["n"] / tr["fs"], "n_contacts": int(ref.shape[0]),
                          "n_left": int((ref[:, 2] == 0).sum()), "n_right": int((ref[:, 2] == 1).sum()),
                          "n_incomplete": left_out, "gct_ms_mean": float(gct.mean()) if gct.size else math.nan,
                          **{f"imu_{k}": v for k, v in sync.items()}})
    out = {"tolerance_ms": TOLERANCE_MS, "per_trial": per_trial, "n_trials": len(trials),
           "n_contacts": int(sum(t["ref"].shape[0] for t in trials)),
           "force_plates": _overground_force_plate_check(folder, {t["trial"]: t for t in trials})}
    ok = [t for t in trials if t["sync"]["in_sync"]]
    out["n_trials_in_sync"] = len(ok)
    out["imu"] = _overground_imu(ok) if ok else None
    return out


def _overground_force_plate_check(folder: Path, trials: dict) -> dict:
    """Marker reference against force-plate onset/offset, for the trials that have a ``.c3d``."""
    rows = []
    for c3d_path in sorted((folder / "mocap_c3d").glob("*.c3d")):
        tr = trials.get(c3d_path.stem)
        if tr is None:
            continue
        c3d = read_c3d(c3d_path)
        fs = tr["fs"]
        for on_s, off_s, peak_n, cx, cy in force_plate_contacts(c3d):
            # the foot on the plate: the lower one at mid-contact
            k = min(int(round((on_s + off_s) / 2 * fs)), tr["n"] - 1)
            low = {s: min(tr["markers"][s][m][k, 2] for m in ("HEE", "FMH", "TOE")) for s in ("L", "R")}
            side = 0 if low["L"] < low["R"] else 1
            ref = tr["ref"][tr["ref"][:, 2] == side]
            j = int(np.argmin(np.abs(ref[:, 0] - on_s))) if ref.size else -1
            if j < 0 or abs(ref[j, 0] - on_s) * 1000.0 > 100.0:
                rows.append({"trial": tr["trial"], "side": "LR"[side], "fp_on_s": on_s, "fp_off_s": off_s,
                             "matched": False})
                continue
            rows.append({"trial": tr["trial"], "side": "LR"[side], "fp_on_s": on_s, "fp_off_s": off_s,
                         "peak_n": peak_n, "matched": True,
                         "ic_err_ms": (ref[j, 0] - on_s) * 1000.0, "tc_err_ms": (ref[j, 1] - off_s) * 1000.0,
                         "gct_err_ms": ((ref[j, 1] - ref[j, 0]) - (off_s - on_s)) * 1000.0})
    m = [r for r in rows if r["matched"]]
    return {"threshold_n": FP_THRESHOLD_N, "min_contact_ms": FP_MIN_CONTACT_MS, "contacts": rows,
            "n_plate_contacts": len(rows), "n_matched": len(m),
            "ic": summarize([r["ic_err_ms"] for r in m]), "tc": summarize([r["tc_err_ms"] for r in m]),
            "gct": summarize([r["gct_err_ms"] for r in m])}


def side_accuracy(steps: np.ndarray, ref: np.ndarray, pairs: list) -> tuple[int, int]:
    """(matched steps whose side equals the reference foot's, matched steps with a known side)."""
    known = [(i, j) for i, j in pairs if steps["side"][i] >= 0]
    return sum(int(steps["side"][i]) == int(ref[j, 2]) for i, j in known), len(known)


def _overground_imu(trials: list[dict]) -> dict:
    """Streaming detector (``CHUNK``-sample updates, the sites' default parameters) on every IMU site of
    trials whose IMU is on the markers' clock. Contacts before the detector's first step are warm-up."""
    res: dict = {}
    for tr in trials:
        t = np.arange(tr["n"]) / tr["fs"]
        for site, imu in tr["imu"].items():
            for use_gyro in ((False,) if site == "sacrum" or imu["gyr_dps"] is None else (False, True)):
                det = GaitEventDetector(site, tr["fs"], use_gyro=use_gyro)
                steps = np.concatenate([det.update(imu["acc_g"][s:s + CHUNK] * G0, t[s:s + CHUNK],
                                                   imu["gyr_dps"][s:s + CHUNK] if use_gyro else None)
                                        for s in range(0, tr["n"], CHUNK)])
                ref = tr["ref"] if site == "sacrum" else tr["ref"][tr["ref"][:, 2] == (0 if "left" in site else 1)]
                key = f"{site.split('_')[0]}{' + gyro' if use_gyro else ''}"
                acc = res.setdefault(key, {"results": [], "side_ok": 0, "side_known": 0, "warmup": 0})
                if ref.shape[0] == 0:
                    continue
                acc["warmup"] += int((ref[:, 0] < (steps["ic_s"][0] - TOLERANCE_MS / 1000.0)).sum()) if steps.size \
                    else ref.shape[0]
                r = _evaluate_steps(OVERGROUND, tr["trial"], site, steps, ref[:, :2], site.split("_")[0],
                                    type("R", (), {"time_s": t}))
                acc["results"].append(r)
                if site == "sacrum":
                    lo, hi = ref[0, 0] - 0.2, ref[:, 1].max() + 0.2
                    sel = steps[(steps["ic_s"] >= lo) & (steps["ic_s"] <= hi)]
                    ok, known = side_accuracy(sel, ref, match_steps(sel, ref[:, 0], ref[:, 1]))
                    acc["side_ok"] += ok
                    acc["side_known"] += known
    return {k: aggregate(v["results"]) | {"warmup_contacts": v["warmup"], "side_correct": v["side_ok"],
                                           "side_known": v["side_known"],
                                           "side_accuracy": v["side_ok"] / v["side_known"] if v["side_known"] else math.nan}
            for k, v in res.items()}


SIM_SIDE_CASES = (  # (label, cadence_spm, speed_ms, asymmetry_pct, foot_strike)
    ("170 spm, 3.3 m/s", 170.0, 3.3, 0.0, "rearfoot"),
    ("155 spm, 2.5 m/s", 155.0, 2.5, 0.0, "rearfoot"),
    ("185 spm, 4.5 m/s, forefoot", 185.0, 4.5, 0.0, "forefoot"),
    ("170 spm, 3.3 m/s, 10 % asymmetry", 170.0, 3.3, 10.0, "rearfoot"),
)
SIM_SIDE_SEEDS = (1, 2, 3, 4, 5)


def evaluate_sim_side(duration_s: float = 60.0, sampling_rate_hz: float = 200.0) -> dict:
    """Sacral left/right labelling against the SIMULATOR's truth (no real running data here has both a sacral
    medio-lateral channel on the reference clock and per-foot contacts): random sensor mountings, several
    speeds, cadences, strikes and an asymmetric runner; steps matched to true ICs within TOLERANCE_MS.
    Also the sacral GCT and peak-g figures per case, for reading beside the real-data sections."""
    from runform.firmware_bridge.simulator import RunnerProfile, simulate

    rows = {}
    for label, cad, speed, asym, strike in SIM_SIDE_CASES:
        n_true = n_match = n_side_ok = n_side_known = 0
        gct_err = []
        for seed in SIM_SIDE_SEEDS:
            rec = simulate(RunnerProfile(cadence_spm=cad, speed_ms=speed, asymmetry_pct=asym, foot_strike=strike),
                           sites=("sacrum",), duration_s=duration_s, sampling_rate_hz=sampling_rate_hz, seed=seed,
                           orientation="random")
            sig = rec.signals["sacrum"]
            det = GaitEventDetector("sacrum", sampling_rate_hz)
            steps = np.concatenate([det.update(sig.acc_ms2[i:i + CHUNK], sig.time_s[i:i + CHUNK])
                                    for i in range(0, len(sig.time_s), CHUNK)])
            truth = rec.events[rec.events["ic_s"] > 5.0]  # the first seconds: the frame estimate settles
            steps = steps[steps["ic_s"] > 5.0 - TOLERANCE_MS / 1000.0]
            n_true += truth.size
            for j, k in match_steps(steps, truth["ic_s"], truth["tc_s"]):
                ev = truth[k]
                n_match += 1
                gct_err.append(steps["gct_ms"][j] - ev["gct_ms"])
                if steps["side"][j] >= 0:
                    n_side_known += 1
                    n_side_ok += int(steps["side"][j] == ev["side"])
        rows[label] = {"n_true": n_true, "n_matched": n_match, "recall": n_match / max(n_true, 1),
                       "side_labelled": n_side_known, "side_accuracy": n_side_ok / max(n_side_known, 1),
                       "side_unknown_pct": 100.0 * (n_match - n_side_known) / max(n_match, 1),
                       "gct": summarize(np.array(gct_err))}
    return {"duration_s": duration_s, "sampling_rate_hz": sampling_rate_hz, "seeds": list(SIM_SIDE_SEEDS),
            "cases": rows}


def full_report(root: Path) -> dict:
    import platform

    import numba

    sac, shank, per_trial = [], [], []
    meta_of = {}
    for ds, trial, cond, site, rec, ref, mass, fz, m in iter_trials(root):
        r = evaluate_trial(ds, trial, cond, rec, ref, site, mass, fz)
        meta_of[(ds, trial)] = m
        (sac if site == "sacrum" else shank).append(r)
        per_trial.append({"dataset": ds, "trial": trial, "condition": cond, "n_ref": r.n_ref, "n_det": r.n_det,
                          "n_matched": r.n_matched,
                          "gct_rmse_ms": summarize(r.gct_err_ms)["rmse"], "ic_sd_ms": summarize(r.ic_err_ms)["sd"],
                          "cadence_err_pct": r.cadence_err_pct})
    report: dict = {
        "generated_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "data_root": str(root), "tolerance_ms": TOLERANCE_MS, "chunk_samples": CHUNK,
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "params": {site: _params_dict(site) for site in ("sacrum", "shank", "foot")},
        "per_trial": per_trial,
    }
    if sac:
        report["sacrum"] = {
            "all": aggregate(sac),
            "by_speed": _group(sac, lambda r: r.condition.split(",")[0]),
            "by_slope": _group(sac, lambda r: r.condition.split(", ")[1]),
            "leave_one_speed_out": _loo_bias(sac, lambda r: r.condition.split(",")[0]),
        }
    if shank:
        run = [r for r in shank if r.condition.startswith("running")]
        walk = [r for r in shank if r.condition.startswith("walking")]
        subj = lambda r: f"subject {meta_of[(r.dataset, r.trial)]['subject']}"
        report["shank"] = {
            "running": aggregate(run) if run else None,
            "walking": aggregate(walk) if walk else None,
            "running_by_subject": _group(run, subj),
            "walking_by_subject": _group(walk, subj),
            "walking_by_speed": _group(walk, lambda r: r.condition),
            "running_leave_one_subject_out": _loo_bias(run, subj),
        }
    foot = evaluate_gaitmap_foot(root)
    if foot:
        report["foot"] = foot
    walking = evaluate_walking_lowerback(root)
    if walking:
        report["sacrum_walking"] = walking
    overground = evaluate_overground(root)
    if overground:
        report["overground"] = overground
    report["sim_side"] = evaluate_sim_side()
    report["targets"] = _targets(report)
    return report


def _params_dict(site):
    from dataclasses import asdict

    from runform.dsp import params_for

    return asdict(params_for(site))


def _loo_bias(results, key):
    """Leave-one-group-out check of the bias calibration: the constant IC/TC offsets are re-estimated
    without the group and applied to it; reports the group's GCT/IC figures after that correction."""
    groups = sorted({key(r) for r in results})
    out = {}
    for g in groups:
        train = [r for r in results if key(r) != g]
        test = [r for r in results if key(r) == g]
        if not train or not test:
            continue
        ic_b = float(np.mean(np.concatenate([r.ic_err_ms for r in train])))
        tc_b = float(np.mean(np.concatenate([r.tc_err_ms for r in train])))
        ic = np.concatenate([r.ic_err_ms for r in test]) - ic_b
        tc = np.concatenate([r.tc_err_ms for r in test]) - tc_b
        out[g] = {"ic": summarize(ic), "tc": summarize(tc), "gct": summarize(tc - ic),
                  "ic_bias_shift_ms": ic_b, "tc_bias_shift_ms": tc_b}
    return out


def _targets(rep):
    rows = []
    if "shank" in rep and rep["shank"]["running"]:
        v = rep["shank"]["running"]["ic"]["sd"]
        rows.append(("shank IC SD, running (ms)", TARGETS["shank_ic_sd_ms"], v, v <= TARGETS["shank_ic_sd_ms"]))
    if "sacrum" in rep:
        a = rep["sacrum"]["all"]
        v = a["gct"]["rmse"]
        rows.append(("sacrum GCT RMSE (ms)", TARGETS["sacrum_gct_rmse_ms"], v, v <= TARGETS["sacrum_gct_rmse_ms"]))
    for name, part in (("sacrum", "all"), ("shank", "running"), ("shank", "walking")):
        if name not in rep or not rep[name].get(part):
            continue
        a = rep[name][part]
        lab = f"{name}{'' if name == 'sacrum' else f' ({part})'}"
        rows.append((f"{lab} cadence error, mean abs %", TARGETS["cadence_err_pct"], a["cadence_abs_err_pct_mean"],
                     a["cadence_abs_err_pct_mean"] <= TARGETS["cadence_err_pct"]))
        rows.append((f"{lab} steps found (recall)", TARGETS["recall"], a["recall"], a["recall"] >= TARGETS["recall"]))
        rows.append((f"{lab} precision", TARGETS["precision"], a["precision"],
                     a["precision"] >= TARGETS["precision"]))
    return [{"what": w, "target": t, "value": v, "met": bool(ok)} for w, t, v, ok in rows]


def headline(rep) -> list[str]:
    return [f"{'MET ' if r['met'] else 'MISS'} {r['what']}: {r['value']:.3f} (target {r['target']})"
            for r in rep.get("targets", [])]


def _f(x, nd=1):
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}"


def _event_rows(label, a, events=("ic", "tc", "gct")):
    rows = []
    for e in events:
        s = a[e]
        rows.append(f"| {label} | {e.upper()} | {s['n']} | {_f(s['bias'])} | {_f(s['sd'])} | "
                    f"{_f(s['loa_low'])} … {_f(s['loa_high'])} | {_f(s['rmse'])} |")
    return rows


def _detection_row(label, a):
    return (f"| {label} | {a['n_ref']} | {a['n_det']} | {a['n_matched']} | {100 * a['recall']:.1f} | "
            f"{100 * a['precision']:.1f} | {_f(a['cadence_abs_err_pct_mean'], 2)} | "
            f"{_f(a['cadence_abs_err_pct_max'], 2)} |")


def render_markdown(rep: dict) -> str:
    L = []
    L += ["# Accuracy report", "",
          f"Generated by `make validate` (`runform validate`) on {rep['generated_utc']} UTC from `{rep['data_root']}`; "
          f"Python {rep['python']}, NumPy {rep['numpy']}, numba {rep['numba']}. Do not edit by hand.", "",
          "## Method", "",
          f"- Every trial runs through the **streaming** detector (`GaitEventDetector.update`) in {rep['chunk_samples']}-"
          "sample chunks, exactly as live BLE data would; times are on the file's own clock.",
          f"- A detected step matches a reference contact when its IC lies within **±{rep['tolerance_ms']:.0f} ms** "
          "(one-to-one, nearest first). Recall = matched / reference contacts; precision = matched / detected steps "
          "inside the span of the reference.",
          "- Errors are IMU − reference, in ms: bias (mean), SD, 95 % limits of agreement (bias ± 1.96 SD), RMSE, "
          "with n = matched steps. Cadence error: mean detected cadence vs the reference contacts' cadence, per trial.",
          "- **One parameter set per sensor site**, tuned on whole folders (never per trial). The constant offsets "
          "between the IMU feature and the force-plate event are calibrated once per site and subtracted; their "
          "values are listed below (they are part of the method, not hidden). A leave-one-group-out check "
          "re-estimates the offsets without each subject/speed to show how they transfer.",
          "- Peak vGRF (sacrum): peak of the 8 Hz-smoothed vertical proper acceleration during stance × one scale "
          "per site, against the force plate's stance maximum (body weights).", ""]
    # targets
    L += ["## Targets (issue #3)", "", "| what | target | measured | met |", "|---|---|---|---|"]
    for r in rep.get("targets", []):
        L.append(f"| {r['what']} | {r['target']} | {r['value']:.3f} | {'yes' if r['met'] else '**no**'} |")
    L.append("")
    head_d = ["| group | ref contacts | detected | matched | recall % | precision % | cadence err, mean abs % | max abs % |",
              "|---|---|---|---|---|---|---|---|"]
    head_e = ["| group | event | n | bias ms | SD ms | 95 % LoA ms | RMSE ms |", "|---|---|---|---|---|---|---|"]
    if "sacrum" in rep:
        s = rep["sacrum"]
        L += ["## Sacrum — treadmill running, Alcantara et al. 2022 (500 Hz, force treadmill, 1 runner)", "",
              "Vertical and AP acceleration as distributed (low-passed at 20 Hz by the authors, negative vertical "
              "values set to 0); both feet on one force plate, so every step has a reference. No medio-lateral "
              "channel: side labelling cannot be assessed on this data.", ""]
        L += head_d + [_detection_row("all", s["all"])]
        L += [_detection_row(k, v) for k, v in s["by_speed"].items()]
        L += [_detection_row(k, v) for k, v in s["by_slope"].items()]
        L += [""] + head_e + _event_rows("all", s["all"])
        for k, v in s["by_speed"].items():
            L += _event_rows(k, v)
        L += ["", "Peak vGRF (body weights):", "", "| group | n | bias BW | SD BW | 95 % LoA BW | RMSE BW |",
              "|---|---|---|---|---|---|"]
        for k, grp in [("all", s["all"])] + list(s["by_speed"].items()) + list(s["by_slope"].items()):
            v = grp["vgrf"]
            L.append(f"| {k} | {v['n']} | {_f(v['bias'], 3)} | {_f(v['sd'], 3)} | {_f(v['loa_low'], 3)} … "
                     f"{_f(v['loa_high'], 3)} | {_f(v['rmse'], 3)} |")
        L += ["",
              "Leave-one-speed-out (offsets re-estimated on the other speed):", "", head_e[0], head_e[1]]
        for k, v in s["leave_one_speed_out"].items():
            L += _event_rows(f"{k} held out", v)
        L.append("")
    if "shank" in rep:
        s = rep["shank"]
        L += ["## Shank — treadmill running 8.5 km/h and walking, Bach et al. 2022 (142.857 Hz, 3 subjects)", "",
              "Accelerometer only (no gyroscope), clipping at about ±8 g in running (reported as `clipped` on "
              "nearly every running step: peak acceleration is a lower bound). Force of the instrumented leg only, "
              "which carries the sensor.", ""]
        L += head_d
        for k in ("running", "walking"):
            if s[k]:
                L.append(_detection_row(k, s[k]))
        for k, v in s["running_by_subject"].items():
            L.append(_detection_row(f"running, {k}", v))
        for k, v in s["walking_by_subject"].items():
            L.append(_detection_row(f"walking, {k}", v))
        for k, v in s.get("walking_by_speed", {}).items():
            L.append(_detection_row(k, v))
        L += [""] + head_e
        for k in ("running", "walking"):
            if s[k]:
                L += _event_rows(k, s[k])
        for k, v in s["running_by_subject"].items():
            L += _event_rows(f"running, {k}", v)
        for k, v in s.get("walking_by_speed", {}).items():
            L += _event_rows(k, v)
        L += ["", "Leave-one-subject-out (running; offsets re-estimated on the other subjects):", "",
              head_e[0], head_e[1]]
        for k, v in s["running_leave_one_subject_out"].items():
            L += _event_rows(f"{k} held out", v)
        L += ["", "Toe-off from a shank accelerometer alone is the weak point (SD ≈ 40 ms): with no gyroscope the "
                  "push-off leaves no sharp acceleration feature at 143 Hz. Initial contact is precise.", ""]
    if "foot" in rep:
        f = rep["foot"]
        L += ["## Foot — walking, gaitmap example data (204.8 Hz, acc + gyro, motion-capture events)", "",
              "Reference: motion-capture IC/TC distributed with gaitmap (not force plates). Only walking foot "
              "data with references exist in the shared folders; offsets are calibrated on this recording "
              "itself, so these figures are in-sample.", ""]
        L += head_d + [_detection_row("accelerometer only", f["acc_only"]), _detection_row("with gyroscope", f["gyro"])]
        L += [""] + head_e + _event_rows("accelerometer only", f["acc_only"], ("ic", "tc")) + _event_rows(
            "with gyroscope", f["gyro"], ("ic", "tc")) + [""]
    if "sacrum_walking" in rep:
        w = rep["sacrum_walking"]
        head_w = ["| group | bouts | ref ICs | detected | matched | recall % | precision % | F1 | IC within ±60 ms % | "
                  "bout cadence err, mean abs % | max abs % |", "|---|---|---|---|---|---|---|---|---|---|---|"]

        def wrow(label, a):
            return (f"| {label} | {a['bouts']} | {a['n_ref']} | {a['n_det']} | {a['n_matched']} | "
                    f"{100 * a['recall']:.1f} | {100 * a['precision']:.1f} | {a['f1']:.2f} | "
                    f"{100 * a['within_60ms']:.0f} | {_f(a['cadence_abs_err_pct_mean'], 1)} | "
                    f"{_f(a['cadence_abs_err_pct_max'], 1)} |")
        L += ["## Sacrum / lower back — WALKING, mobgap example data (100 Hz, INDIP reference, 3 participants)", "",
              "Lower-back IMU as worn (vertical found from gravity, as live), INDIP reference initial contacts inside "
              "its walking bouts (`MicroWB`); Test5 = straight walking, Test11 = simulated daily activities with "
              "turns, stairs and pauses. Walking steps carry IC, step time and cadence only: final contact, GCT, "
              "flight and side are not measured (NaN / unknown). A detected IC matches a reference IC within "
              f"**±{w['tolerance_ms']:.0f} ms** (about a quarter of a walking step); detections outside the bouts "
              "are not scored; reference ICs INDIP left empty (NaN) are left out, and detections in their gap are not "
              "counted as false. Bout cadence = 60 / median step time, detected vs reference. Look-ahead "
              f"{w['look_ahead_ms']:.0f} ms. The IC offset is calibrated on this folder (the only lower-back walking "
              "data with references): in-sample; the leave-one-subject-out rows show how it transfers.", ""]
        L += head_w + [wrow("all", w["all"])]
        L += [wrow(k, v) for k, v in w["by_test"].items()]
        L += [wrow(k, v) for k, v in w["by_cohort"].items()]
        L += [wrow(k, v) for k, v in w["by_subject"].items()]
        L += ["", head_e[0], head_e[1]]
        for k, v in [("all", w["all"])] + list(w["by_test"].items()) + list(w["by_subject"].items()):
            L += _event_rows(k, v, ("ic", "step_time"))
        L += ["", "Leave-one-subject-out (IC offset re-estimated on the other participants):", "", head_e[0], head_e[1]]
        for k, v in w["leave_one_subject_out"].items():
            L += _event_rows(k, v, ("ic",))
        L += ["", "Honest reading: usable for walking cadence (straight walking: bout cadence within a few %), "
                  "moderate for step detection in daily-life walking (turns, shuffling, a participant with MS), and "
                  "imprecise for IC timing (SD ≈ 50 ms: a smooth trunk signal, no impact). For comparison, mobgap's "
                  "offline lower-back IC detectors reach F1 0.78–0.86 on this example data. Disable with "
                  "`SacrumParams(walking_ics=False)`.", ""]
    if "overground" in rep:
        L += _render_overground(rep["overground"], head_e)
    if rep.get("sim_side"):
        sd = rep["sim_side"]
        L += ["## Sacrum side labelling — simulator only", "",
              "No recording in the shared data has a sacral medio-lateral channel on the reference's clock together "
              "with per-foot contacts (Alcantara: no ML channel; Grouvel: IMU columns off the marker clock, see "
              "above; mobgap: walking, whose steps carry no side). So left/right labelling from one sacral sensor is "
              f"measured against the simulator's truth only: {len(sd['seeds'])} seeds per case × "
              f"{sd['duration_s']:.0f} s at {sd['sampling_rate_hz']:.0f} Hz, each with a random sensor mounting, "
              "20-sample chunks, steps after the first 5 s (the frame estimate settles), matched within "
              f"±{TOLERANCE_MS:.0f} ms. The simulator gives each stance a half-sine medio-lateral acceleration of 0.10 g "
              "towards the midline (the medial ground reaction force under the stance foot) plus noise; it is not "
              "fitted to a real sacral ML trace, so read this as a check of the method under any mounting, not as "
              "field accuracy (Kiernan et al. 2023 report 81.9 % on real overground data).", "",
              "| case | true ICs | matched | recall % | side labelled | side correct % | side unknown % | "
              "GCT bias ms | GCT SD ms |",
              "|---|---|---|---|---|---|---|---|---|"]
        for k, v in sd["cases"].items():
            L.append(f"| {k} | {v['n_true']} | {v['n_matched']} | {_f(100 * v['recall'])} | {v['side_labelled']} | "
                     f"{_f(100 * v['side_accuracy'])} | {_f(v['side_unknown_pct'])} | {_f(v['gct']['bias'])} | "
                     f"{_f(v['gct']['sd'])} |")
        L.append("")
    L += ["## Literature and products (from ../shared/reference/accuracy_anchors.md)", "",
          "| site | source | reference | reported |", "|---|---|---|---|",
          "| foot, acc + gyro | Falbriard et al. 2018 | force plate, treadmill | IC 2 ± 1 ms, TO 4 ± 2 ms after offset calibration |",
          "| sacrum | Patoz et al. 2022 | force treadmill | GCT RMSE ≈ 20 ms; peak vGRF RMSE ≈ 0.15 BW (≈ 6 %) |",
          "| trunk / lower back | Bergamini et al. 2012 | force plate | GCT LoA within ±25 ms |",
          "| sacrum, overground | Kiernan et al. 2023 (REID) | force plates | best IC: bias ≈ −30 ms, LoA ≈ ±120 ms; L/R 81.9 % |",
          "| sacrum | Alcantara et al. 2022 (RNN) | force treadmill | peak vGRF ≈ 6 %; cadence ≈ 0.1 % |",
          "| Stryd / RunScribe | foot pod | force plate | GCT ≈ −5 % / −2 % |",
          "| lower back, walking | mobgap (Mobilise-D), offline | INDIP, its example data | IC detection F1 0.78–0.86 |",
          "",
          "## Calibrated parameters per site", "", "```json", json.dumps(rep["params"], indent=1), "```", "",
          "## Per trial", "", "| dataset | trial | condition | ref | det | matched | IC SD ms | GCT RMSE ms | cadence err % |",
          "|---|---|---|---|---|---|---|---|---|"]
    for t in rep["per_trial"]:
        L.append(f"| {t['dataset'].split('_')[0]} | {t['trial']} | {t['condition']} | {t['n_ref']} | {t['n_det']} | "
                 f"{t['n_matched']} | {_f(t['ic_sd_ms'])} | {_f(t['gct_rmse_ms'])} | {_f(t['cadence_err_pct'], 2)} |")
    L.append("")
    return "\n".join(L)


def _render_overground(o: dict, head_e: list[str]) -> list[str]:
    fp = o["force_plates"]
    L = ["## Overground running — Grouvel et al. 2023 subset (markers 100 Hz, 3 trials with force plates 1 kHz, "
         f"{o['n_trials']} trials, 10 runners)", "",
         "Every trial is 1.1–2.1 s of running through the capture volume (one to two strides). **Reference** "
         "contacts of both feet come from the markers (lab frame, z up): a contact is a phase in which the foot's "
         f"lowest marker (heel, forefoot, toe) stays within {MARKER_FLOOR_MARGIN_MM:.0f} mm of its lowest level "
         f"in the trial while the heel–forefoot midpoint moves slower than {MARKER_MAX_SPEED_MS:.1f} m/s "
         "horizontally (foot-velocity idea of O'Connor et al. 2007); IC = the landing impact, the peak upward "
         "vertical acceleration of the heel marker (Hreljac & Marshall 2000) or of the forefoot marker when "
         "that lands first (mid/forefoot strikers); TC = peak knee extension in late stance from the hip, knee "
         "and ankle joint centres (Fellin et al. 2010: the best kinematic toe-off of five against force plates "
         "in overground running). Contacts cut by the start or end of a trial are left out.", "",
         "| trial | s | contacts (L/R) | left out (cut by the trial's ends) | mean GCT ms |", "|---|---|---|---|---|"]
    for t in o["per_trial"]:
        L.append(f"| {t['trial']} | {t['duration_s']:.2f} | {t['n_contacts']} ({t['n_left']}/{t['n_right']}) | "
                 f"{t['n_incomplete']} | {_f(t['gct_ms_mean'], 0)} |")
    L += ["", f"**Marker reference against the force plates** (`mocap_c3d/*.c3d`, read by a plain-NumPy C3D reader; "
              f"summed vertical force of the plates, a foot may straddle two; onset/offset at {fp['threshold_n']:.0f} N, "
              f"contacts of at least {fp['min_contact_ms']:.0f} ms; the foot on the plate is the lower one at mid-contact). "
              f"{fp['n_matched']} of {fp['n_plate_contacts']} plate contacts have a marker contact within 100 ms:", "",
          head_e[0], head_e[1]]
    L += _event_rows("markers − force plate", fp, ("ic", "tc", "gct"))
    L += ["", "| trial | foot | plate on s | plate off s | IC diff ms | TC diff ms |", "|---|---|---|---|---|---|"]
    for c in fp["contacts"]:
        L.append(f"| {c['trial']} | {c['side']} | {c['fp_on_s']:.3f} | {c['fp_off_s']:.3f} | "
                 f"{_f(c.get('ic_err_ms'))} | {_f(c.get('tc_err_ms'))} |")
    L += ["", "At 100 Hz one marker frame is 10 ms: the marker reference is good to about one frame for IC and "
              "half a frame for TC on these contacts (two runners only); it is the reference below, not a force "
              "plate.", "",
          "**IMU channels: not on the markers' clock.** Each trial's IMU foot gyroscope is compared with the foot's "
          "sagittal rotation rate from its heel→toe markers (the gyroscope's principal component; abs(r) of the "
          f"best alignment within ±{SYNC_MAX_LAG_MS:.0f} ms). Trials pass when abs(r) ≥ {SYNC_MIN_R}. For diagnosis, "
          "the best abs(r) over time-scale factors k = 1–8 (IMU row = offset + marker row / k) is given too:", "",
          "| trial | abs(r), nominal clock | best abs(r) with a time scale | k | IMU real rate ≈ 100/k Hz |",
          "|---|---|---|---|---|"]
    for t in o["per_trial"]:
        k = t["imu_time_scale"]
        L.append(f"| {t['trial']} | {t['imu_r_nominal']:.2f} | {t['imu_r_best']:.2f} | {_f(k, 2)} | "
                 f"{_f(100.0 / k if k == k and k > 0 else math.nan, 0)} |")
    L.append("")
    pt = o["per_trial"]
    rn = max(t["imu_r_nominal"] for t in pt)
    rb = [t["imu_r_best"] for t in pt]
    ks = [t["imu_time_scale"] for t in pt]
    if o["imu"] is None:
        L += [f"**{o['n_trials_in_sync']} of {o['n_trials']} trials pass.** In every trial the IMU rows do not run on "
              "the marker rows' clock: on the nominal clock the foot gyroscope and the marker foot rotation do not "
              f"correlate (abs(r) ≤ {rn:.2f}), whereas squeezing the IMU time axis by k = {min(ks):.1f}–{max(ks):.1f} "
              f"aligns them (abs(r) {min(rb):.2f}–{max(rb):.2f}). The IMU columns of `synchronised/*.csv` hold a "
              "stretch of recording several times longer than the marker window, resampled onto the marker rows: "
              "the IMU shows the runner standing still before the run while the markers show running from the "
              "first row, and the IMU stride lasts 10–24 rows where the markers' lasts 70–80 (inspected by hand). "
              f"Re-timed, the IMU would be sampled at about {100 / max(ks):.0f}–{100 / min(ks):.0f} Hz, below the "
              "100 Hz a foot or shank sensor needs and the 50 Hz a sacral sensor needs to resolve contacts (the "
              "detector refuses such rates). **So no IMU accuracy (IC/TC/GCT, recall/precision, sacral side "
              "labelling, warm-up of the short trials) can be measured on this folder**; numbers computed on it "
              "would be meaningless, and none are reported. The evaluation (streaming detector, 20-sample chunks, "
              "default per-site parameters, not re-tuned; sacrum side accuracy = matched steps whose side equals "
              "the reference foot; contacts before the first detected step counted as warm-up) runs automatically "
              "for every trial that passes the clock check, e.g. with correctly synchronised IMU files of the "
              "study placed in this folder.", ""]
    else:
        head_d = ["| site | ref contacts | detected | matched | recall % | precision % | contacts before the first "
                  "step (warm-up) | side accuracy % (n) |", "|---|---|---|---|---|---|---|---|"]
        L += [f"**Streaming detector on the {o['n_trials_in_sync']} trials that pass** (20-sample chunks, default "
              "per-site parameters, not re-tuned):", ""] + head_d
        for k, a in o["imu"].items():
            side = f"{100 * a['side_accuracy']:.1f} ({a['side_known']})" if a["side_known"] else "–"
            L.append(f"| {k} | {a['n_ref']} | {a['n_det']} | {a['n_matched']} | {100 * a['recall']:.1f} | "
                     f"{100 * a['precision']:.1f} | {a['warmup_contacts']} | {side} |")
        L += ["", head_e[0], head_e[1]]
        for k, a in o["imu"].items():
            L += _event_rows(k, a)
        L.append("")
    return L

