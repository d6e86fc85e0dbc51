"""``runform validate``: accuracy against force plates / motion capture -> docs/accuracy.md."""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="measure event accuracy on the real recordings and write the accuracy report",
        description="Runs every trial of ../shared/data (or $RUNFORM_DATA) through the streaming detector "
                    "(20-sample chunks) and writes bias, SD, limits of agreement and RMSE per dataset and "
                    "condition. Overground running (Grouvel 2023): marker reference contacts, checked against "
                    "the force plates of its .c3d trials, and the IMU clock checked against the markers before "
                    "any IMU is scored. Skips with a clear message when the data are absent.",
    )
    p.add_argument("--out", default="docs/accuracy.md", help="Markdown report (default docs/accuracy.md)")
    p.add_argument("--json-out", default=None, help="machine-readable results (default: beside --out, .json)")
    p.add_argument("--data", default=None,
                   help="data folder (default $RUNFORM_DATA or ../shared/data); a named folder that is not the "
                        "shared data folder is an error (exit 2), not a fallback")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args) -> int:
    from runform.server import validation as V

    try:  # a folder named with --data or $RUNFORM_DATA must be a data folder: no silent fallback
        root = V.data_root(args.data)
    except V.DataRootError as exc:
        print(f"runform validate: error: {exc}", file=sys.stderr)
        return 2
    if root is None:
        print("runform validate: skipped: no data folder found (set RUNFORM_DATA or place shared/data beside "
              "the checkout)", file=sys.stderr)
        return 0
    t0 = time.perf_counter()
    report = V.full_report(root)
    md = V.render_markdown(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    jpath = Path(args.json_out) if args.json_out else out.with_suffix(".json")
    jpath.write_text(json.dumps(report, indent=1, default=_json_default, allow_nan=True))
    print(f"wrote {out} and {jpath} in {time.perf_counter() - t0:.1f} s")
    for line in V.headline(report):
        print("  " + line)
    return 0


def _json_default(o):
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    raise TypeError(type(o))
