#!/usr/bin/env python
"""Regenerate ``firmware_bridge/_sim_templates.py`` from the shared real recordings.

The simulator (``runform.firmware_bridge.simulator``) never reads the recordings at run time: it uses the
compact numbers this script derives from them (phase-normalised shape curves of ~50 points and a few fitted
parameters).  Run it again whenever the data or the extraction changes::

    .venv/bin/python tools/fit_sim_templates.py [--data ../shared/data] [--out firmware_bridge/_sim_templates.py]

What is extracted (body frame: x = antero-posterior forward, y = medio-lateral LEFT, z = vertical up):

* sacrum (Alcantara 2022, 500 Hz treadmill, IC/TC from force): vertical proper acceleration over the stance
  phase, normalised to unit mean (the simulator rescales it so every step's impulse equals body weight times
  the step time), for rearfoot (level/downhill trials) and mid/forefoot (uphill trials, the only non-rearfoot
  strikes in the set); the running single-leg force curve (fz_bw) the same way; antero-posterior acceleration
  over stance (braking then propulsion, made zero-mean); ground contact time against speed.
* shank (Bach 2022, 142.857 Hz treadmill, IC/TC from one belt): smooth (10 Hz low-passed) 3-axis acceleration
  over stance and over swing, running and walking, remapped to the body frame; the impact transient on the
  axial channel (raw minus smooth, unclipped steps) fitted with a damped sinusoid; walking single-leg vertical
  force curve (fz_N) for the walking sacrum; walking duty factor.
* foot and shank angular rate (Grouvel 2023 overground subset): sagittal angular rate phase-binned over stance
  and swing, IC/TC from the pressure insoles.  NOTE: in the ``synchronised`` CSVs the IMU and insole columns are
  on the ``x_Time`` clock (about 20-29 Hz, varying per trial), not on the 100 Hz marker clock; we use x_Time.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import pprint
import sys

import numpy as np
import pandas as pd
from scipy import optimize, signal

N_PHASE = 51  # points per phase curve, phase 0..1 inclusive


def _resample(t: np.ndarray, y: np.ndarray, t0: float, t1: float, n: int = N_PHASE) -> np.ndarray:
    grid = np.linspace(t0, t1, n)
    return np.interp(grid, t, y)


def _unit_mean(curve: np.ndarray) -> np.ndarray:
    x = np.linspace(0.0, 1.0, len(curve))
    return curve / np.trapezoid(curve, x)


def _r(a, nd: int = 4):
    return [round(float(v), nd) for v in np.asarray(a).ravel()]


# ----------------------------------------------------------------------------------------------- sacrum
def fit_sacrum(root: str) -> dict:
    folder = os.path.join(root, "sacrum_treadmill_alcantara2022")
    meta = json.load(open(os.path.join(folder, "meta.json")))
    groups = {"rearfoot": [], "midfoot": []}
    force, ap_curves = {"rearfoot": [], "midfoot": []}, {"rearfoot": [], "midfoot": []}
    gct_rows = []
    peak_rows = []
    for trial, m in sorted(meta.items()):
        d = pd.read_csv(os.path.join(folder, f"{trial}.csv"))
        ref = pd.read_csv(os.path.join(folder, f"{trial}_ref.csv")).to_numpy()
        fs = m["foot_strike_pct"]
        if fs["rfs"] >= 99 and m["slope_deg"] <= 0:
            kind = "rearfoot"
        elif fs["rfs"] <= 1:
            kind = "midfoot"
        else:
            continue
        t = d["time_s"].to_numpy()
        for ic, tc in ref:
            if ic < t[0] or tc > t[-1] or not 0.12 < tc - ic < 0.45:
                continue
            groups[kind].append(_resample(t, d["acc_v_g"].to_numpy(), ic, tc))
            force[kind].append(_resample(t, d["fz_bw"].to_numpy(), ic, tc))
            ap_curves[kind].append(_resample(t, d["acc_ap_g"].to_numpy(), ic, tc))
            sel = (t >= ic) & (t <= tc)
            peak_rows.append((kind, m["speed_ms"], float(d["acc_v_g"].to_numpy()[sel].max())))
        step = np.diff(ref[:, 0])
        step = step[(step > 0.2) & (step < 0.5)]
        if m["slope_deg"] == 0:  # (speed, mean GCT, cadence) per level trial for the GCT model
            gcts = ref[:, 1] - ref[:, 0]
            gct_rows.append((m["speed_ms"], float(np.median(gcts)), 60.0 / float(np.median(step))))
    out = {}
    for kind in groups:
        v = np.median(np.array(groups[kind]), axis=0)
        v[0] = max(v[0], 0.0)
        out[f"vertical_{kind}"] = _r(_unit_mean(np.clip(v, 0, None)))
        out[f"force_{kind}"] = _r(_unit_mean(np.clip(np.median(np.array(force[kind]), axis=0), 0, None)))
        ap = np.median(np.array(ap_curves[kind]), axis=0)
        x = np.linspace(0, 1, len(ap))
        ap = ap - np.trapezoid(ap, x)  # zero net horizontal impulse at constant speed
        out[f"ap_{kind}_g"] = _r(ap)
        out[f"n_steps_{kind}"] = len(groups[kind])
    pk = np.array([(p[1], p[2]) for p in peak_rows if p[0] == "rearfoot"])
    out["peak_vertical_rearfoot_g_by_speed"] = {
        str(s): round(float(np.median(pk[pk[:, 0] == s, 1])), 3) for s in np.unique(pk[:, 0])
    }
    return out, gct_rows


# ----------------------------------------------------------------------------------------------- shank
def _damped(t, a, tau, f, t_on):
    tt = np.clip(t - t_on, 0.0, None)
    return a * np.exp(-tt / tau) * np.sin(2 * np.pi * f * tt)


def fit_shank(root: str) -> dict:
    """Shank templates from Bach 2022 (subject E excluded: that sensor was mounted upside down, x reads +1 g).

    Sensor -> body frame.  x_s is axial pointing DOWN (reads -1 g upright).  z_s is antero-posterior pointing
    BACKWARD: over a whole stride the mean reading is the gravity projection of the mean shank tilt, and
    z_s averages +0.25 g walking / +0.6 g running while the shank is on average tilted top-forward (mean x_s
    and z_s together give |g| = 1.0 at a 35 deg mean tilt in running).  For a right-handed body frame
    (forward, left, up) = (-z_s, -y_s, -x_s), y_s points to the runner's RIGHT.  The side of the instrumented
    leg is not documented; we assume the right leg, so y_s is LATERAL and the ML templates are stored
    lateral-positive (the simulator mirrors them per leg).
    """
    folder = os.path.join(root, "shank_treadmill_bach2022")
    meta = json.load(open(os.path.join(folder, "meta.json")))
    fs_hz = 1000.0 / 7.0
    b, a = signal.butter(2, 10.0 / (fs_hz / 2))
    curves = {"run": {"stance": [], "swing": []}, "walk": {"stance": [], "swing": []}}
    walk_force, duty = [], {"run": [], "walk": []}
    residuals = {"run": [], "walk": []}
    peaks = {"run": [], "walk": []}
    win = np.arange(-3, 22)  # samples around IC for the transient
    for trial, m in sorted(meta.items()):
        if m["subject"] == "E":
            continue
        act = "run" if m["condition"] == "running" else "walk"
        d = pd.read_csv(os.path.join(folder, f"{trial}.csv"))
        ref = pd.read_csv(os.path.join(folder, f"{trial}_ref.csv")).to_numpy()
        t = d["time_s"].to_numpy()
        raw = d[["acc_x_g", "acc_y_g", "acc_z_g"]].to_numpy()
        # columns: AP forward, ML lateral, axial up
        body = np.column_stack([-raw[:, 2], raw[:, 1], -raw[:, 0]])
        smooth = signal.filtfilt(b, a, body, axis=0)
        for k in range(len(ref) - 1):
            ic, tc = ref[k]
            ic2 = ref[k + 1, 0]
            if ic < t[0] + 0.2 or ic2 > t[-1] - 0.2 or not 0.15 < tc - ic < 0.9 or not 0.5 < ic2 - ic < 1.4:
                continue
            duty[act].append((tc - ic) / (ic2 - ic))
            curves[act]["stance"].append(
                np.column_stack([_resample(t, smooth[:, j], ic, tc) for j in range(3)]))
            curves[act]["swing"].append(
                np.column_stack([_resample(t, smooth[:, j], tc, ic2) for j in range(3)]))
            if act == "walk":
                walk_force.append(_resample(t, d["fz_N"].to_numpy(), ic, tc))
            i0 = int(np.searchsorted(t, ic))
            idx = i0 + win
            peaks[act].append(float(np.max(np.abs(raw[idx[3:15], 0]))))
            if np.max(np.abs(raw[idx, :])) < 7.9:  # unclipped only
                residuals[act].append(body[idx, :] - smooth[idx, :])
    out = {}
    for act in curves:
        for ph in ("stance", "swing"):
            c = np.median(np.array(curves[act][ph]), axis=0)
            for j, ax in enumerate(("ap", "ml_lat", "up")):
                out[f"{act}_{ph}_{ax}_g"] = _r(c[:, j])
        out[f"{act}_duty_factor"] = round(float(np.median(duty[act])), 4)
        out[f"{act}_n_strides"] = len(curves[act]["stance"])
        out[f"{act}_axial_peak_g_median"] = round(float(np.median(peaks[act])), 3)
    wf = np.median(np.array(walk_force), axis=0)
    out["walk_force_unit_mean"] = _r(_unit_mean(np.clip(wf, 0, None)))
    # impact transient on the axial (up) channel: damped sinusoid switched on at t_on after IC; the ML and AP
    # channels are least-squares projections onto the same shape.
    fits = {}
    tt = win / fs_hz
    for act in residuals:
        r = np.median(np.array(residuals[act]), axis=0)  # (len(win), 3)
        k0 = int(np.argmax(np.abs(r[:12, 2])))
        p0 = [abs(r[k0, 2]) * 1.5, 0.03, 15.0, max(tt[k0] - 0.015, 0.0)]
        popt, _ = optimize.curve_fit(_damped, tt, r[:, 2] * np.sign(r[k0, 2]), p0=p0,
                                     bounds=([0, 0.005, 5.0, -0.01], [60, 0.2, 60.0, 0.06]), maxfev=20000)
        shape = _damped(tt, 1.0, *popt[1:])
        proj = [float(np.dot(r[:, j], shape) / np.dot(shape, shape)) for j in range(3)]
        fits[act] = {"t_on_s": round(float(popt[3]), 4), "tau_s": round(float(popt[1]), 4),
                     "freq_hz": round(float(popt[2]), 2), "amp_g": [round(v, 3) for v in proj],
                     "n_steps": len(residuals[act])}
    out["impact_transient"] = fits
    return out


# ----------------------------------------------------------------------------------------------- grouvel
def _bin_phase(phases: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    edges = np.linspace(0, 1, n + 1)
    centers = 0.5 * (edges[1:] + edges[:-1])
    out = np.full(n, np.nan)
    for i in range(n):
        s = (phases >= edges[i]) & (phases < edges[i + 1])
        if s.sum():
            out[i] = np.median(values[s])
    good = ~np.isnan(out)
    return np.interp(np.linspace(0, 1, N_PHASE), centers[good], out[good])


def fit_grouvel(root: str) -> dict:
    folder = os.path.join(root, "overground_multisite_grouvel2023", "synchronised")
    acc = {k: {"stance": ([], []), "swing": ([], [])} for k in ("foot", "shank")}
    sa_gyr_sd = []
    stride_s = []
    for f in sorted(glob.glob(os.path.join(folder, "*.csv"))):
        d = pd.read_csv(f)
        if "x_Time" not in d or "leftTotalForce_N_" not in d:
            continue
        t = d["x_Time"].to_numpy()
        for side, fcol in (("L", "leftTotalForce_N_"), ("R", "rightTotalForce_N_")):
            force = d[fcol].to_numpy()
            on = force > 0.3 * np.nanmax(force)
            # IC/TC by linear interpolation of the threshold crossing
            thr = 0.3 * np.nanmax(force)
            up = np.flatnonzero(~on[:-1] & on[1:])
            dn = np.flatnonzero(on[:-1] & ~on[1:])

            def cross(i):
                return t[i] + (thr - force[i]) / (force[i + 1] - force[i]) * (t[i + 1] - t[i])

            ics = np.array([cross(i) for i in up])
            tcs = np.array([cross(i) for i in dn])
            for seg, name in (("F", "foot"), ("S", "shank")):
                cols = [c for c in d.columns if c.endswith(f"_{side}{seg}_gyro_x")]
                if not cols:
                    continue
                pre = cols[0][: -len("_x")]
                gyr = d[[pre + "_x", pre + "_y", pre + "_z"]].to_numpy()
                moving = np.abs(gyr).max(axis=1) > 50
                if moving.sum() < 10:
                    continue
                # sagittal axis = first principal axis of the angular rate while moving
                u, s_, vt = np.linalg.svd(gyr[moving] - gyr[moving].mean(axis=0), full_matrices=False)
                axis = vt[0]
                sag = gyr @ axis
                cycles = []
                for ic in ics:
                    later_tc = tcs[tcs > ic]
                    later_ic = ics[ics > ic]
                    if not len(later_tc) or not len(later_ic):
                        continue
                    tc, ic2 = later_tc[0], later_ic[0]
                    if tc > ic2 or not 0.4 < ic2 - ic < 1.1:
                        continue
                    cycles.append((ic, tc, ic2))
                if not cycles:
                    continue
                # sign: the swing peak of the shank is "bottom forward" (negative about +y left, see docs);
                # the foot's largest excursion at push-off is plantarflexion (positive about +y left).
                sw = np.concatenate([sag[(t > tc) & (t < ic2)] for ic, tc, ic2 in cycles])
                st = np.concatenate([sag[(t >= ic) & (t <= tc)] for ic, tc, ic2 in cycles])
                if name == "shank":
                    sign = -1.0 if sw[np.argmax(np.abs(sw))] > 0 else 1.0
                else:
                    late = np.concatenate([sag[(t > tc - 0.05) & (t < tc + 0.05)] for ic, tc, ic2 in cycles])
                    sign = 1.0 if late[np.argmax(np.abs(late))] > 0 else -1.0
                sag = sag * sign
                for ic, tc, ic2 in cycles:
                    stride_s.append(ic2 - ic)
                    s = (t >= ic) & (t < tc)
                    acc[name]["stance"][0].append((t[s] - ic) / (tc - ic))
                    acc[name]["stance"][1].append(sag[s])
                    s = (t >= tc) & (t < ic2)
                    acc[name]["swing"][0].append((t[s] - tc) / (ic2 - tc))
                    acc[name]["swing"][1].append(sag[s])
        cols = [c for c in d.columns if "_SA_gyro_" in c]
        if cols:
            g = d[cols].to_numpy()
            g = g[np.abs(g).max(axis=1) > 20]
            if len(g) > 10:
                sa_gyr_sd.append(np.sort(g.std(axis=0))[::-1])
    out = {}
    for name in acc:
        for ph in ("stance", "swing"):
            p = np.concatenate(acc[name][ph][0])
            v = np.concatenate(acc[name][ph][1])
            out[f"{name}_{ph}_gyr_sag_dps"] = _r(_bin_phase(p, v, 20 if ph == "stance" else 24), 1)
    out["stride_s_median"] = round(float(np.median(stride_s)), 3)
    out["sacrum_gyr_sd_sorted_dps"] = _r(np.median(np.array(sa_gyr_sd), axis=0), 1)
    return out


def main(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("RUNFORM_DATA", os.path.join(here, "..", "..", "shared", "data")))
    ap.add_argument("--out", default=os.path.join(here, "..", "firmware_bridge", "_sim_templates.py"))
    args = ap.parse_args(argv)
    if not os.path.isdir(args.data):
        print(f"data folder not found: {args.data} (set --data or RUNFORM_DATA)", file=sys.stderr)
        return 2
    sacrum, gct_rows = fit_sacrum(args.data)
    shank = fit_shank(args.data)
    grouvel = fit_grouvel(args.data)
    # running GCT model: gct_s = k * speed^-0.5 * (cadence/170)^-0.5, least squares on level trials
    v, g, cad = (np.array(c) for c in zip(*gct_rows))
    basis = v ** -0.5 * (cad / 170.0) ** -0.5
    k_run = float(np.sum(basis * g) / np.sum(basis * basis))
    model = {
        "run_gct_k": round(k_run, 4),
        "walk_duty_factor": shank["walk_duty_factor"],
        "run_duty_factor_bach": shank["run_duty_factor"],
    }
    body = {
        "N_PHASE": N_PHASE,
        "SACRUM": sacrum,
        "SHANK": {k: v for k, v in shank.items() if k not in ("walk_duty_factor", "run_duty_factor")},
        "GYRO_SAGITTAL": grouvel,
        "GAIT_MODEL": model,
    }
    lines = [
        '"""Compact shape templates for the IMU simulator, derived from real recordings.',
        "",
        "GENERATED by tools/fit_sim_templates.py from the shared data (Alcantara 2022 sacrum, Bach 2022 shank,",
        "Grouvel 2023 overground multisite). Do not edit by hand; re-run the script. Phase curves have N_PHASE",
        "points from phase 0 (initial contact / toe-off) to 1 (toe-off / next initial contact).",
        "Body frame: x = antero-posterior forward, y = medio-lateral left, z = vertical up.",
        '"""',
        "# fmt: off",
    ]
    for name, val in body.items():
        lines.append(f"{name} = " + pprint.pformat(val, width=116, compact=True, sort_dicts=True))
    lines.append("")
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines))
    print(f"wrote {args.out}")
    print("gait model:", model)
    print("impact transient:", shank["impact_transient"])
    print("sacrum peaks:", sacrum["peak_vertical_rearfoot_g_by_speed"], "steps", sacrum["n_steps_rearfoot"],
          sacrum["n_steps_midfoot"])
    print("grouvel stride", grouvel["stride_s_median"], "sacrum gyro sd", grouvel["sacrum_gyr_sd_sorted_dps"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
