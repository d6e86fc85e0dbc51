"""``runform simulate``: write a simulated IMU recording (CSV) and its true events (``<FILE>_ref.csv``).

The CSV has the layout of the shared real recordings: ``time_s`` (true time), ``sensor_tick`` (the
sensor's own drifting clock), ``acc_x_g, acc_y_g, acc_z_g`` (or ``acc_*_ms2`` with ``--units ms2``),
``gyr_x_dps, gyr_y_dps, gyr_z_dps`` when the site has a gyroscope, and ``clipped``.  The reference file has
``ic_s, tc_s, side`` (L/R) like the real ``*_ref.csv`` plus the other true step fields.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def _segments(spec: str | None):
    """``stand:5,run:60@165,walk:20@115`` -> Segments (optional ``@cadence_spm``)."""
    from runform.firmware_bridge.simulator import Segment

    if not spec:
        return None
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            act, rest = part.split(":", 1)
            if "@" in rest:
                dur, cad = rest.split("@", 1)
                out.append(Segment(act.strip(), float(dur), {"cadence_spm": float(cad)}))
            else:
                out.append(Segment(act.strip(), float(rest)))
        except ValueError as exc:
            raise ValueError(f"bad segment {part!r} in --segments (expected activity:seconds[@cadence]): {exc}")
    return out


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate", help="write a simulated IMU recording with exact true events (CSV + _ref.csv)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--site", default="sacrum",
                   help="foot_left | foot_right | shank_left | shank_right | sacrum (default sacrum)")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: total of --segments, else 60)")
    p.add_argument("--segments", default=None,
                   help="schedule, e.g. 'stand:5,run:60@165,walk:20@115,stand:10' (activity:seconds[@spm])")
    p.add_argument("--out", required=True, help="output CSV; the truth goes to <stem>_ref.csv")
    p.add_argument("--rate", type=float, default=500.0, help="nominal sampling rate, Hz (default 500)")
    p.add_argument("--cadence", type=float, default=170.0, help="running cadence, steps/min (default 170)")
    p.add_argument("--speed", type=float, default=3.3, help="running speed, m/s (default 3.3)")
    p.add_argument("--gct-ms", type=float, default=None, help="running ground contact time (default: derived)")
    p.add_argument("--foot-strike", default="rearfoot", choices=("rearfoot", "midfoot", "forefoot"))
    p.add_argument("--impact-g", type=float, default=None, help="peak tibial acceleration, g (default: derived)")
    p.add_argument("--asymmetry-pct", type=float, default=0.0, help="+ = left contact longer/heavier")
    p.add_argument("--range-g", type=float, default=16.0, help="accelerometer range (clipping), g")
    p.add_argument("--noise-g", type=float, default=0.005, help="white noise SD, g")
    p.add_argument("--orientation", default="random", choices=("random", "aligned"))
    p.add_argument("--no-gyro", action="store_true", help="accelerometer only")
    p.add_argument("--rate-error-ppm", type=float, default=0.0)
    p.add_argument("--clock-drift-ppm", type=float, default=0.0)
    p.add_argument("--tick-hz", type=float, default=None, help="sensor tick clock (default: the sample rate)")
    p.add_argument("--units", default="g", choices=("g", "ms2"), help="acceleration columns in g or m/s^2")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args) -> int:
    from runform.firmware_bridge.simulator import RunnerProfile, simulate

    try:
        segments = _segments(args.segments)
        duration = args.duration if args.duration is not None else (None if segments else 60.0)
        profile = RunnerProfile(cadence_spm=args.cadence, speed_ms=args.speed, gct_ms=args.gct_ms,
                                foot_strike=args.foot_strike, impact_peak_g=args.impact_g,
                                asymmetry_pct=args.asymmetry_pct)
        rec = simulate(profile, sites=(args.site,), duration_s=duration, segments=segments,
                       sampling_rate_hz=args.rate, seed=args.seed, noise_g=args.noise_g,
                       orientation=args.orientation, range_g=args.range_g, gyro=not args.no_gyro,
                       rate_error_ppm=args.rate_error_ppm, clock_drift_ppm=args.clock_drift_ppm, tick_hz=args.tick_hz)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sig = rec.signals[args.site]
    out = args.out
    stem = out[:-4] if out.lower().endswith(".csv") else out
    ref_path = stem + "_ref.csv"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_recording_csv(out, sig, units=args.units)
    write_ref_csv(ref_path, rec.events)
    meta = {"site": args.site, "sampling_rate_hz": sig.sampling_rate_hz, "tick_hz": sig.tick_hz,
            "range_g": sig.range_g, "orientation": sig.orientation.round(9).tolist(), "seed": args.seed,
            "duration_s": rec.duration_s, "profile": {k: getattr(rec.profile, k) for k in rec.profile.__dataclass_fields__},
            "segments": args.segments, "rate_error_ppm": args.rate_error_ppm, "clock_drift_ppm": args.clock_drift_ppm,
            "frame": "sensor = R @ body; body x forward, y left, z up"}
    with open(stem + "_meta.json", "w") as fh:
        json.dump(meta, fh, indent=1)
    print(f"wrote {out} ({len(sig.time_s)} samples, {int(sig.clipped.sum())} clipped), {ref_path} "
          f"({len(rec.events)} steps)")
    return 0


def write_recording_csv(path: str, sig, units: str = "g") -> None:
    acc = sig.acc_ms2 / 9.80665 if units == "g" else sig.acc_ms2
    cols = ["time_s", "sensor_tick"] + [f"acc_{a}_{'g' if units == 'g' else 'ms2'}" for a in "xyz"]
    data = [sig.time_s, sig.sensor_tick.astype(np.float64), acc[:, 0], acc[:, 1], acc[:, 2]]
    fmts = ["%.6f", "%d", "%.6f", "%.6f", "%.6f"]
    if sig.gyr_dps is not None:
        cols += [f"gyr_{a}_dps" for a in "xyz"]
        data += [sig.gyr_dps[:, 0], sig.gyr_dps[:, 1], sig.gyr_dps[:, 2]]
        fmts += ["%.4f"] * 3
    cols.append("clipped")
    data.append(sig.clipped.astype(np.float64))
    fmts.append("%d")
    np.savetxt(path, np.column_stack(data), delimiter=",", header=",".join(cols), comments="", fmt=fmts)


def write_ref_csv(path: str, events) -> None:
    side = np.where(events["side"] == 0, "L", "R")
    act = np.where(events["activity"] == 2, "run", "walk")
    with open(path, "w") as fh:
        fh.write("ic_s,tc_s,side,activity,gct_ms,flight_ms,impact_peak_g,peak_accel_g_foot,peak_accel_g_shank,"
                 "peak_accel_g_sacrum\n")
        for e, s, a in zip(events, side, act):
            fh.write(f"{e['ic_s']:.6f},{e['tc_s']:.6f},{s},{a},{e['gct_ms']:.3f},{e['flight_ms']:.3f},"
                     f"{e['impact_peak_g']:.3f},{e['peak_accel_g_foot']:.3f},{e['peak_accel_g_shank']:.3f},"
                     f"{e['peak_accel_g_sacrum']:.3f}\n")
