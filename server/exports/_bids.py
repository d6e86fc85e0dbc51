"""Motion-BIDS export (BIDS 1.10 motion datatype): a BIDS dataset directory for one session.

::

    dataset_description.json  README  participants.tsv  participants.json
    sub-<runner>/ses-<session>/sub-<r>_ses-<s>_scans.tsv           acq_time (UTC) per recording
    sub-<runner>/ses-<session>/motion/
        sub-<r>_ses-<s>_task-running_tracksys-<site>_motion.tsv     one row per sample, no header
        sub-<r>_ses-<s>_task-running_tracksys-<site>_channels.tsv   name component type tracked_point units ...
        sub-<r>_ses-<s>_task-running_tracksys-<site>_motion.json    SamplingFrequency, TaskName, counts, ...
        sub-<r>_ses-<s>_task-running_events.tsv (+ .json)            steps: onset, duration (= contact), side ...

One tracking system per sensor (the sensors have their own clocks, so their samples do not share rows). Sample
times are exact in the ``LATENCY`` channel (seconds from the session's data onset = the earliest sample of
any sensor, the same origin as the ``onset`` column of events.tsv); ``SamplingFrequency`` is the nominal rate and
``SamplingFrequencyEffective`` the measured one. Accelerations in m/s^2 (gravity included), angular rates in
deg/s, sensor axes.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from runform.dsp import SIDE_NAMES

from ._common import ExportError, dumps, session_metadata

BIDS_VERSION = "1.10.0"
TASK = "running"


def _label(s: str) -> str:
    lab = re.sub(r"[^A-Za-z0-9]", "", str(s))
    if not lab:
        raise ExportError(f"cannot make a BIDS label from {s!r}")
    return lab


def _tsv_val(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if v != v else repr(v)
    s = str(v)
    return s if s else "n/a"


def _write_tsv(path: Path, header, rows) -> None:
    with open(path, "w") as f:
        if header is not None:
            f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(_tsv_val(v) for v in r) + "\n")


def export_bids(store, session_id: str, out) -> list[Path]:
    out = Path(out)
    meta = session_metadata(store, session_id)
    session = store.get_session(session_id)
    runner = store.get_runner(session.runner_id)
    sub, ses = _label(session.runner_id), _label(session.id)
    mdir = out / f"sub-{sub}" / f"ses-{ses}" / "motion"
    mdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    desc = {"Name": f"runform session {session.id}", "BIDSVersion": BIDS_VERSION, "DatasetType": "raw",
            "License": "n/a (set by the data owner)", "Authors": ["runform export"],
            "GeneratedBy": [{"Name": "runform", "Version": meta["exporter"].split()[-1],
                             "Description": "wearable-IMU running-form monitor"}]}
    if not (out / "dataset_description.json").exists():
        (out / "dataset_description.json").write_text(json.dumps(desc, indent=1))
        (out / "README").write_text(
            "Running sessions recorded with runform (wearable IMUs; lossless raw samples with exact timestamps).\n"
            "Accelerations in m/s^2 including gravity, angular rates in deg/s, sensor axes. The LATENCY channel "
            "holds each sample's time in seconds from the session's data onset (also the origin of events.tsv).\n")
        (out / "participants.json").write_text(json.dumps({"participant_id": {"Description": "runner id"},
                                                           "mass_kg": {"Description": "body mass", "Units": "kg"}},
                                                          indent=1))
    ppath = out / "participants.tsv"
    rows = {}
    if ppath.exists():
        for line in ppath.read_text().splitlines()[1:]:
            parts = line.split("\t")
            rows[parts[0]] = parts[1:]
    mass = session.mass_kg if session.mass_kg is not None else (runner.mass_kg if runner else None)
    rows[f"sub-{sub}"] = [_tsv_val(mass)]
    _write_tsv(ppath, ["participant_id", "mass_kg"], [[k] + v for k, v in sorted(rows.items())])

    raw_sensors = store.raw_sensors(session_id)
    steps = store.read_steps(session_id)
    onsets = [s["t0_s"] for s in raw_sensors]
    if not onsets and len(steps):
        onsets = [float(steps["ic_s"].min())]
    if not onsets:
        raise ExportError(f"session {session_id} has no samples and no steps: nothing to export as Motion-BIDS")
    t0 = min(onsets)
    scans = []
    sensors_by_id = {x.sensor_id: x for x in session.sensors}
    used = set()
    for s in raw_sensors:
        info = sensors_by_id.get(s["sensor_id"])
        tracksys = _label(s["site"] or s["sensor_id"])
        if tracksys in used:
            tracksys = _label(s["sensor_id"])
        used.add(tracksys)
        stem = f"sub-{sub}_ses-{ses}_task-{TASK}_tracksys-{tracksys}"
        has_gyr = False
        n = 0
        t_first = t_last = None
        with open(mdir / f"{stem}_motion.tsv", "w") as f:
            for piece in store.iter_raw_chunks(session_id, s["sensor_id"]):
                t = piece["time_s"]
                cols = [piece["acc_ms2"][:, 0], piece["acc_ms2"][:, 1], piece["acc_ms2"][:, 2]]
                if piece["gyr_dps"] is not None:
                    has_gyr = True
                if has_gyr:
                    g = piece["gyr_dps"] if piece["gyr_dps"] is not None else np.full((len(t), 3), np.nan)
                    cols += [g[:, 0], g[:, 1], g[:, 2]]
                cols.append(t - t0)
                lists = [["n/a" if v != v else repr(v) for v in c.tolist()] for c in cols]
                f.writelines("\t".join(r) + "\n" for r in zip(*lists))
                n += len(t)
                t_first = t[0] if t_first is None else t_first
                t_last = t[-1]
        fs = info.sampling_rate_hz if info and info.sampling_rate_hz else None
        eff = (n - 1) / (t_last - t_first) if n > 1 and t_last > t_first else None
        if fs is None:
            fs = eff or 1.0
        site = s["site"] or "unknown"
        ch = [(f"{site}_ACCEL_{a}", a, "ACCEL", site, "m/s^2") for a in "xyz"]
        if has_gyr:
            ch += [(f"{site}_GYRO_{a}", a, "GYRO", site, "deg/s") for a in "xyz"]
        ch.append(("latency", "n/a", "LATENCY", "n/a", "s"))
        _write_tsv(mdir / f"{stem}_channels.tsv",
                   ["name", "component", "type", "tracked_point", "units", "sampling_frequency"],
                   [list(c) + [fs] for c in ch])
        side = "left" if "left" in site else ("right" if "right" in site else None)
        mj = {"TaskName": TASK, "TaskDescription": "running (or walking/standing) with wearable IMUs",
              "SamplingFrequency": fs, "SamplingFrequencyEffective": eff,
              "TrackingSystemName": f"runform IMU {s['sensor_id']}",
              "Manufacturer": (info.meta.get("protocol") or {}).get("name", "n/a") if info and isinstance(
                  info.meta.get("protocol"), dict) else "n/a",
              "RecordingType": "continuous", "RecordingDuration": (t_last - t_first) if n > 1 else 0.0,
              "MotionChannelCount": len(ch), "ACCELChannelCount": 3, "GYROChannelCount": 3 if has_gyr else 0,
              "LATENCYChannelCount": 1, "TrackedPointsCount": 1, "ANGACCELChannelCount": 0,
              "JNTANGChannelCount": 0, "MAGNChannelCount": 0, "MISCChannelCount": 0, "ORNTChannelCount": 0,
              "POSChannelCount": 0, "VELChannelCount": 0,
              "DeviceSerialNumber": str(((info.meta.get("protocol") or {}).get("config") or {}).get("serial")
                                        or s["sensor_id"]) if info else s["sensor_id"],
              "ManufacturersModelName": str((info.meta.get("protocol") or {}).get("kind", "n/a"))
              if info and isinstance(info.meta.get("protocol"), dict) else "n/a",
              "SubjectArtefactDescription": "n/a",
              "runform": {"sensor_id": s["sensor_id"], "site": site, "side": side,
                          "time_origin_s": t0, "clock_monotonic_s": session.clock_monotonic_s,
                          "clock_utc_unix_s": session.clock_utc_unix_s, "clock_source": session.clock_source,
                          "session_id": session.id}}
        mj = {k: v for k, v in mj.items() if v is not None}
        (mdir / f"{stem}_motion.json").write_text(dumps(mj))
        written += [mdir / f"{stem}_{x}" for x in ("motion.tsv", "channels.tsv", "motion.json")]
        utc = session.to_utc(t_first)
        acq = "n/a"
        if np.isfinite(utc):
            acq = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(float(utc))) + f".{int((utc % 1) * 1e6):06d}Z"
        scans.append([f"motion/{stem}_motion.tsv", acq])
    # events: steps (onset = initial contact, duration = ground contact)
    ev_stem = f"sub-{sub}_ses-{ses}_task-{TASK}_events"
    ev_rows = []
    for st in steps:
        dur = st["gct_ms"] / 1000 if np.isfinite(st["gct_ms"]) else 0.0
        side = SIDE_NAMES.get(int(st["side"]))
        ev_rows.append([float(st["ic_s"] - t0), float(dur), f"step_{side or 'unknown'}", float(st["ic_s"]),
                        str(st["sensor"]), str(st["site"]), float(st["gct_ms"]), float(st["cadence_spm"]),
                        float(st["peak_accel_g"])])
    for note in store.read_notes(session_id):
        if note["time_s"] is not None:
            ev_rows.append([float(note["time_s"] - t0), 0.0, f"note_{note['kind']}", float(note["time_s"]),
                            None, None, None, None, None])
    ev_rows.sort(key=lambda r: r[0])
    _write_tsv(mdir / f"{ev_stem}.tsv", ["onset", "duration", "trial_type", "time_s", "sensor", "site", "gct_ms",
                                         "cadence_spm", "peak_accel_g"], ev_rows)
    (mdir / f"{ev_stem}.json").write_text(json.dumps({
        "onset": {"Description": "initial contact, seconds from the session's data onset", "Units": "s"},
        "duration": {"Description": "ground contact time", "Units": "s"},
        "trial_type": {"Description": "event kind", "Levels": {
            **{"step_L": "left step", "step_R": "right step", "step_unknown": "step, side unknown"},
            **{r[2]: f"annotation ({r[2][5:]})" for r in ev_rows if r[2].startswith("note_")}}},
        "time_s": {"Description": "event time, host monotonic clock", "Units": "s"},
        "sensor": {"Description": "sensor that detected the step"}, "site": {"Description": "where it was worn"},
        "gct_ms": {"Description": "ground contact time", "Units": "ms"},
        "cadence_spm": {"Description": "cadence, steps per minute"},
        "peak_accel_g": {"Description": "peak acceleration in the impact window, standard gravities"},
    }, indent=1))
    written += [mdir / f"{ev_stem}.tsv", mdir / f"{ev_stem}.json"]
    _write_tsv(out / f"sub-{sub}" / f"ses-{ses}" / f"sub-{sub}_ses-{ses}_scans.tsv", ["filename", "acq_time"], scans)
    return [out / "dataset_description.json", *written]
