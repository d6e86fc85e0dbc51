"""mobgap's initial-contact detector as a command, the peer of `runform analyze` (run by ``runform bench``).

Runs INSIDE the peer venv (``.venv-peers/bin/python``). Reads a body-frame CSV (``time_s``, ``acc_v_g``,
``acc_ap_g``, ``acc_ml_g``: the layout `runform analyze` reads too) with pandas, hands it to mobgap in its
body frame (acc_is = vertical, acc_ml, acc_pa in m/s^2; rotation rates 0: the detectors below use the
acceleration only) and prints ONE JSON object with the initial contacts found. The bench times the whole
process, imports included, as it times `runform analyze`.

Usage: python mobgap_analyze.py FILE.csv [--algorithm IcdIonescu|IcdShinImproved]
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

G0 = 9.80665


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--algorithm", default="IcdIonescu", choices=["IcdIonescu", "IcdShinImproved"])
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import numpy as np
    import pandas as pd
    from mobgap import initial_contacts

    df = pd.read_csv(args.file)
    t = df["time_s"].to_numpy()
    fs = 1.0 / float(np.median(np.diff(t)))
    data = pd.DataFrame({
        "acc_is": df["acc_v_g"].to_numpy() * G0,
        "acc_ml": df["acc_ml_g"].to_numpy() * G0,
        "acc_pa": df["acc_ap_g"].to_numpy() * G0,
        "gyr_is": 0.0, "gyr_ml": 0.0, "gyr_pa": 0.0,
    })
    algo = getattr(initial_contacts, args.algorithm)().detect(data, sampling_rate_hz=fs)
    ic = algo.ic_list_["ic"].to_numpy()
    json.dump({"algorithm": args.algorithm, "sampling_rate_hz": fs, "n_samples": int(len(df)),
               "n_ic": int(ic.size), "ic_s": [round(float(t[i]), 4) for i in ic[:5]]}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
