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
    ref_cad = factor * 60.0 * (len(ref_ic) - 1) / (ref_ic[-1] - ref_ic[0])
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
            "running_leave_one_subject_out": _loo_bias(run, subj),
        }
    foot = evaluate_gaitmap_foot(root)
    if foot:
        report["foot"] = foot
    walking = evaluate_walking_lowerback(root)
    if walking:
        report["sacrum_walking"] = walking
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
    for name in ("sacrum", "shank"):
        if name not in rep:
            continue
        a = rep[name]["all"] if name == "sacrum" else rep[name]["running"]
        lab = f"{name}{'' if name == 'sacrum' else ' (running)'}"
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
        v = s["all"]["vgrf"]
        L += ["", f"Peak vGRF: n = {v['n']}, bias {_f(v['bias'], 3)} BW, SD {_f(v['sd'], 3)} BW, LoA "
                  f"{_f(v['loa_low'], 3)} … {_f(v['loa_high'], 3)} BW, RMSE {_f(v['rmse'], 3)} BW.", "",
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
        L += [""] + head_e
        for k in ("running", "walking"):
            if s[k]:
                L += _event_rows(k, s[k])
        for k, v in s["running_by_subject"].items():
            L += _event_rows(f"running, {k}", v)
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
