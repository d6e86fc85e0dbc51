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
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runform.dsp import GaitEventDetector
from runform.firmware_bridge.files import load_csv

TOLERANCE_MS = 60.0  # an IC within this of a reference IC is a match (stated in the report)
CHUNK = 20  # samples per update, as one BLE packet batch


def data_root() -> Path | None:
    env = os.environ.get("RUNFORM_DATA")
    candidates = [Path(env)] if env else []
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
    steps, _ = run_detector(rec, site, mass_kg, params=params)
    ref_ic = ref[:, 0]
    ref_tc = ref[:, 1]
    lo, hi = ref_ic.min() - 0.2, ref_tc.max() + 0.2
    in_range = (steps["ic_s"] >= lo) & (steps["ic_s"] <= hi)
    steps_r = steps[in_range]
    pairs = match_steps(steps_r, ref_ic, ref_tc)
    di = np.array([p[0] for p in pairs], dtype=int)
    rj = np.array([p[1] for p in pairs], dtype=int)
    ic_err = (steps_r["ic_s"][di] - ref_ic[rj]) * 1000 if pairs else np.empty(0)
    tc_err = (steps_r["tc_s"][di] - ref_tc[rj]) * 1000 if pairs else np.empty(0)
    gct_err = steps_r["gct_ms"][di] - (ref_tc[rj] - ref_ic[rj]) * 1000 if pairs else np.empty(0)
    # cadence over the reference span: steps per minute from IC counts and spans
    if site == "sacrum":
        ref_cad = 60.0 * (len(ref_ic) - 1) / (ref_ic[-1] - ref_ic[0])
    else:  # one leg: strides -> steps
        ref_cad = 2 * 60.0 * (len(ref_ic) - 1) / (ref_ic[-1] - ref_ic[0])
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
