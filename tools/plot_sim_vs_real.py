#!/usr/bin/env python
"""Side-by-side figure of simulated vs real sacrum and shank signals -> docs/img/sim_vs_real.png.

Real: Alcantara 2022 sacrum (trial03, 3.33 m/s level, rearfoot; the authors low-passed it at 20 Hz) and
Bach 2022 shank (trial01, 8.5 km/h, clips at 8 g, 142.857 Hz), both shown in the simulator's body frame
(x forward, y left, z up).  Simulated: the same speed, cadence, sample rate and range, sensor aligned.

    .venv/bin/python tools/plot_sim_vs_real.py [--data ../shared/data] [--out docs/img/sim_vs_real.png]

Needs matplotlib (not a runtime dependency of runform).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def main(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("RUNFORM_DATA", os.path.join(here, "..", "..", "shared", "data")))
    ap.add_argument("--out", default=os.path.join(here, "..", "docs", "img", "sim_vs_real.png"))
    args = ap.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import pandas as pd
    except ImportError as exc:
        print(f"this script needs matplotlib and pandas: {exc}", file=sys.stderr)
        return 2
    from runform.firmware_bridge.simulator import RunnerProfile, simulate

    sac = pd.read_csv(os.path.join(args.data, "sacrum_treadmill_alcantara2022", "trial03.csv"))
    sac_ref = pd.read_csv(os.path.join(args.data, "sacrum_treadmill_alcantara2022", "trial03_ref.csv")).to_numpy()
    sh = pd.read_csv(os.path.join(args.data, "shank_treadmill_bach2022", "trial01.csv"))
    sh_ref = pd.read_csv(os.path.join(args.data, "shank_treadmill_bach2022", "trial01_ref.csv")).to_numpy()

    cad_sac = 60.0 / np.median(np.diff(sac_ref[:, 0]))
    gct_sac = 1000 * np.median(sac_ref[:, 1] - sac_ref[:, 0])
    rec_sac = simulate(RunnerProfile(cadence_spm=cad_sac, speed_ms=3.33, gct_ms=gct_sac), sites=("sacrum",),
                       duration_s=12, sampling_rate_hz=500, seed=3, orientation="aligned", noise_g=0.005)
    cad_sh = 120.0 / np.median(np.diff(sh_ref[:, 0]))
    gct_sh = 1000 * np.median(sh_ref[:, 1] - sh_ref[:, 0])
    rec_sh = simulate(RunnerProfile(cadence_spm=cad_sh, speed_ms=8.5 / 3.6, gct_ms=gct_sh), sites=("shank_right",),
                      duration_s=12, sampling_rate_hz=1000 / 7, seed=3, orientation="aligned", range_g=8.0,
                      noise_g=0.02)

    fig, axs = plt.subplots(4, 2, figsize=(16, 14), sharey="row")
    win = 1.6

    def shade(ax, ev, t0):
        for ic, tc in ev:
            if t0 - 0.5 < ic < t0 + win:
                ax.axvspan(ic - t0, tc - t0, color="0.9", zorder=0)

    # sacrum: real
    t0 = sac_ref[4, 0] - 0.05
    m = (sac.time_s >= t0) & (sac.time_s < t0 + win)
    axs[0, 0].plot(sac.time_s[m] - t0, sac.acc_v_g[m], label="acc vertical (z)")
    axs[0, 0].plot(sac.time_s[m] - t0, sac.fz_bw[m], "k--", lw=0.8, label="vGRF / BW")
    axs[1, 0].plot(sac.time_s[m] - t0, sac.acc_ap_g[m], label="acc AP (x)")
    for ax in axs[:2, 0]:
        shade(ax, sac_ref, t0)
    axs[0, 0].set_title(f"REAL sacrum, Alcantara 2022 trial03 (3.33 m/s, {cad_sac:.0f} spm, 20 Hz low-passed)")
    # sacrum: simulated
    sig = rec_sac.signals["sacrum"]
    ev = rec_sac.events
    t0s = ev["ic_s"][10] - 0.05
    m = (sig.time_s >= t0s) & (sig.time_s < t0s + win)
    a = sig.acc_ms2[m] / 9.80665
    axs[0, 1].plot(sig.time_s[m] - t0s, a[:, 2], label="acc vertical (z)")
    axs[0, 1].plot(sig.time_s[m] - t0s, a[:, 1], label="acc ML (y, left +)")
    axs[1, 1].plot(sig.time_s[m] - t0s, a[:, 0], label="acc AP (x)")
    for ax in axs[:2, 1]:
        shade(ax, np.column_stack([ev["ic_s"], ev["tc_s"]]), t0s)
    axs[0, 1].set_title("SIMULATED sacrum, same speed/cadence/GCT, 500 Hz, rearfoot")

    # shank: real, body frame (forward, left, up) = (-z_s, -y_s, -x_s)
    t0 = sh_ref[5, 0] - 0.1
    m = (sh.time_s >= t0) & (sh.time_s < t0 + win)
    tt = sh.time_s[m] - t0
    axs[2, 0].plot(tt, -sh.acc_x_g[m], ".-", ms=3, label="axial up (z)")
    axs[3, 0].plot(tt, -sh.acc_z_g[m], ".-", ms=3, label="AP forward (x)")
    axs[3, 0].plot(tt, sh.acc_y_g[m], ".-", ms=3, label="ML lateral")
    for ax in axs[2:, 0]:
        shade(ax, sh_ref, t0)
    axs[2, 0].set_title(f"REAL shank, Bach 2022 trial01 (8.5 km/h, {cad_sh:.0f} spm, 143 Hz, clips at 8 g)")
    sig = rec_sh.signals["shank_right"]
    ev = rec_sh.events[rec_sh.events["side"] == 1]
    t0s = ev["ic_s"][4] - 0.1
    m = (sig.time_s >= t0s) & (sig.time_s < t0s + win)
    a = sig.acc_ms2[m] / 9.80665
    tt = sig.time_s[m] - t0s
    axs[2, 1].plot(tt, a[:, 2], ".-", ms=3, label="axial up (z)")
    axs[3, 1].plot(tt, a[:, 0], ".-", ms=3, label="AP forward (x)")
    axs[3, 1].plot(tt, -a[:, 1], ".-", ms=3, label="ML lateral (-y, right leg)")
    for ax in axs[2:, 1]:
        shade(ax, np.column_stack([ev["ic_s"], ev["tc_s"]]), t0s)
    axs[2, 1].set_title("SIMULATED right shank, same speed/cadence/GCT, 143 Hz, range 8 g")
    for ax in axs.ravel():
        ax.grid(True, lw=0.4)
        ax.legend(loc="upper right", fontsize=8)
        ax.set_xlabel("s (grey: stance)")
    for ax, lab in zip(axs[:, 0], ["g", "g", "g", "g"]):
        ax.set_ylabel(lab)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
