"""``runform analyze`` and ``runform warmup``."""
from __future__ import annotations

import argparse
import json
import math
import sys
import threading

import numpy as np

SITE_CHOICES = ("foot", "foot_left", "foot_right", "shank", "shank_left", "shank_right", "sacrum", "hip")
MIN_RANGE_G = 2.0  # smallest full-scale range of a real accelerometer (±2 g)
MAX_RANGE_G = 1000.0  # high-g shock sensors end around ±400 g; beyond this the value is a typo


def check_mass_kg(mass_kg) -> float | None:
    """``None`` or a positive finite body mass; anything else raises ``ValueError`` with the reason."""
    if mass_kg is None:
        return None
    m = float(mass_kg)
    if not (math.isfinite(m) and m > 0):
        raise ValueError(f"body mass must be a positive finite number of kg, got {mass_kg!r}")
    return m


def check_range_g(range_g) -> float | None:
    """``None`` or a plausible accelerometer full-scale range (``MIN_RANGE_G`` .. ``MAX_RANGE_G`` g)."""
    if range_g is None:
        return None
    r = float(range_g)
    if not (math.isfinite(r) and MIN_RANGE_G <= r <= MAX_RANGE_G):
        raise ValueError(f"accelerometer range must be a finite number of g between {MIN_RANGE_G:g} and "
                         f"{MAX_RANGE_G:g} (e.g. 16 for a ±16 g sensor), got {range_g!r}")
    return r


def _arg_type(check, what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: {text!r} is not a number") from None
        try:
            return check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = what  # argparse names the type in its messages
    return parse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="detect every step in a CSV recording and print one JSON object",
        description=(
            "Reads a CSV with a time_s column and acceleration columns in g (*_g) or m/s² (*_ms2), runs it "
            "through the step detector (the whole file in one call: the same steps as streaming it) and prints "
            "ONE JSON object: site, sampling_rate_hz, steps "
            "(ic_s, tc_s, side, gct_ms, flight_ms, peak_accel_g, clipped, ...), summary, warnings, gyro. "
            "Gyroscope columns (gyr_x_dps, gyr_y_dps, gyr_z_dps) are passed to the detector, which takes "
            "toe-off from them on the foot. Times are on the file's own clock. Exit 2 with a message on "
            "stderr when the file cannot be analysed."
        ),
    )
    p.add_argument("file", help="CSV file")
    p.add_argument("--site", required=True,
                   choices=SITE_CHOICES)
    p.add_argument("--mass-kg", type=_arg_type(check_mass_kg, "mass-kg"), default=None,
                   help="body mass, kg (positive): adds peak vertical force in newtons")
    p.add_argument("--range-g", type=_arg_type(check_range_g, "range-g"), default=None,
                   help=f"accelerometer full-scale range, g ({MIN_RANGE_G:g}..{MAX_RANGE_G:g}; clipping flag)")
    p.add_argument("--axes", default=None,
                   help="body-frame columns, e.g. v=acc_v_g,ap=acc_ap_g,ml=acc_ml_g (default: found from names; "
                        "unknown sensor axes are oriented from gravity)")
    p.add_argument("--json", action="store_true", help="print JSON (the default and only output format)")
    p.set_defaults(func=cmd_analyze)

    w = sub.add_parser("warmup", help="compile the numba kernels into the on-disk cache",
                       description="Compiles (or loads from cache) the DSP kernels of the given sensor sites (all "
                                   "sites by default) and prints how long it took. With an empty cache half of "
                                   "the kernels compile in a helper process.")
    w.add_argument("--site", action="append", default=None, choices=SITE_CHOICES,
                   help="a configured sensor site (repeatable; default: every site)")
    w.set_defaults(func=cmd_warmup)


def _finite(x):
    x = float(x)
    return None if not math.isfinite(x) else round(x, 6)


def steps_to_json(steps, mass_kg=None) -> list[dict]:
    from runform.dsp import ACTIVITY_NAMES, G0, SIDE_NAMES

    out = []
    for s in steps:
        d = {
            "ic_s": _finite(s["ic_s"]),
            "tc_s": _finite(s["tc_s"]),
            "side": SIDE_NAMES[int(s["side"])],
            "gct_ms": _finite(s["gct_ms"]),
            "flight_ms": _finite(s["flight_ms"]),
            "step_time_ms": _finite(s["step_time_ms"]),
            "cadence_spm": _finite(s["cadence_spm"]),
            "cadence_smoothed_spm": _finite(s["cadence_smoothed_spm"]),
            "duty_factor": _finite(s["duty_factor"]),
            "peak_accel_g": _finite(s["peak_accel_g"]),
            "clipped": bool(s["clipped"]),
            "loading_rate_gps": _finite(s["loading_rate_gps"]),
            "peak_vgrf_bw": _finite(s["peak_vgrf_bw"]),
            "activity": ACTIVITY_NAMES[int(s["activity"])],
        }
        if mass_kg and math.isfinite(float(s["peak_vgrf_bw"])):
            d["peak_vgrf_n"] = round(float(s["peak_vgrf_bw"]) * mass_kg * G0, 1)
        out.append(d)
    return out


def summarize_steps(steps, site: str) -> dict:
    def mean(name):
        v = steps[name]
        v = v[np.isfinite(v)]
        return round(float(v.mean()), 3) if v.size else None

    def sd(name):
        v = steps[name]
        v = v[np.isfinite(v)]
        return round(float(v.std(ddof=1)), 3) if v.size > 1 else None

    summary = {
        "n_steps": int(steps.size),
        "cadence_spm": None,
        "gct_ms_mean": mean("gct_ms"), "gct_ms_sd": sd("gct_ms"),
        "flight_ms_mean": mean("flight_ms"),
        "step_time_ms_mean": mean("step_time_ms"),
        "duty_factor_mean": mean("duty_factor"),
        "peak_accel_g_mean": mean("peak_accel_g"), "peak_accel_g_max": None,
        "loading_rate_gps_mean": mean("loading_rate_gps"),
        "peak_vgrf_bw_mean": mean("peak_vgrf_bw"),
        "clipped_steps": int(steps["clipped"].sum()) if steps.size else 0,
        "running_steps": int((steps["activity"] == 2).sum()) if steps.size else 0,
        "walking_steps": int((steps["activity"] == 1).sum()) if steps.size else 0,
    }
    st = steps["step_time_ms"]
    st = st[np.isfinite(st)]
    if st.size:
        summary["cadence_spm"] = round(60000.0 / float(st.mean()), 2)
    pk = steps["peak_accel_g"]
    pk = pk[np.isfinite(pk)]
    if pk.size:
        summary["peak_accel_g_max"] = round(float(pk.max()), 3)
    left = steps[steps["side"] == 0]["gct_ms"]
    right = steps[steps["side"] == 1]["gct_ms"]
    left, right = left[np.isfinite(left)], right[np.isfinite(right)]
    if site == "sacrum" and left.size and right.size:
        lm, rm = float(left.mean()), float(right.mean())
        summary["gct_balance_left_pct"] = round(100.0 * lm / (lm + rm), 2)
    return summary


def analyze_file(path: str, site: str, mass_kg=None, range_g=None, axes=None) -> dict:
    from runform.dsp import DetectorInputError, GaitEventDetector, parse_site, warmup
    from runform.firmware_bridge.files import load_csv

    try:
        mass_kg = check_mass_kg(mass_kg)
        range_g = check_range_g(range_g)
    except ValueError as exc:
        raise DetectorInputError(str(exc)) from None
    base_site, _ = parse_site(site)
    # once the header tells the path (input frame, gyroscope), its kernels load (or compile) in a thread while
    # the values are parsed: both mostly wait on native code (pyarrow's parser, LLVM) that runs without the GIL
    warming: list[threading.Thread] = []

    def on_columns(body_frame: bool, gyro: bool) -> None:
        th = threading.Thread(target=warmup, args=([site],),
                              kwargs={"body_frame": body_frame, "gyro": gyro and base_site == "foot",
                                      "skip_blas_probe": True},
                              name="runform-warmup", daemon=True)
        th.start()
        warming.append(th)

    try:
        rec = load_csv(path, axes, on_columns=on_columns)
    finally:
        for th in warming:
            th.join()
    warnings = list(rec.warnings)
    det = GaitEventDetector(site, rec.sampling_rate_hz, mass_kg=mass_kg,
                            range_g=range_g or rec.range_g_detected, body_frame=rec.body_frame)
    # the whole recording in one call: the detector is chunking-invariant (tests/dsp/test_chunking.py), so these
    # are exactly the steps a live session streaming the file in BLE-sized packets would emit
    steps = det.update(rec.acc_ms2, rec.time_s, rec.gyr_dps)
    duration = float(rec.time_s[-1] - rec.time_s[0])
    if steps.size == 0:
        warnings.append(
            f"no steps found in {duration:.1f} s: the recording does not look like running or walking "
            f"with a {base_site} sensor (check --site and the axes)"
        )
    elif steps.size < max(3, duration / 4):
        warnings.append(f"only {steps.size} steps in {duration:.1f} s: mostly not running/walking?")
    if base_site == "sacrum" and len(rec.acc_columns) < 3 and not (rec.body_frame and rec.acc_ms2[:, 2].any()):
        warnings.append("no medio-lateral axis: left/right cannot be told from a sacrum sensor without it, "
                        "so every step has side null")
    if base_site != "sacrum" and len(rec.acc_columns) < 3:
        warnings.append("limb sensors need all three axes for orientation-free detection")
    return {
        "site": site,
        "sampling_rate_hz": round(rec.sampling_rate_hz, 6),
        "n_samples": int(rec.time_s.shape[0]),
        "duration_s": round(duration, 6),
        "axes": {"columns": list(rec.acc_columns), "frame": "body" if rec.body_frame else "sensor (oriented from gravity)"},
        "look_ahead_ms": round(det.look_ahead_ms, 1),
        "gyro": bool(det.use_gyro),
        "steps": steps_to_json(steps, mass_kg),
        "summary": summarize_steps(steps, base_site),
        "warnings": warnings,
    }


def cmd_analyze(args) -> int:
    from runform.dsp import DetectorInputError
    from runform.firmware_bridge.files import InputFileError

    try:
        result = analyze_file(args.file, args.site, args.mass_kg, args.range_g, args.axes)
    except (InputFileError, DetectorInputError) as exc:
        print(f"runform analyze: error: {exc}", file=sys.stderr)
        return 2
    try:  # serialise completely first: a failure must never leave half a JSON object on stdout
        text = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        print(f"runform analyze: error: the result cannot be written as JSON ({exc})", file=sys.stderr)
        return 2
    sys.stdout.write(text + "\n")
    return 0


def cmd_warmup(args) -> int:
    from runform.dsp import warmup

    took = warmup(args.site, skip_blas_probe=True)
    print(f"numba kernels ready in {took:.2f} s")
    return 0
