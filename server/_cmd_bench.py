"""``runform bench``: speed of the DSP, cold start, peers on the same data, other areas -> docs/benchmarks.md."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure DSP throughput/latency, cold start, peers; write docs/benchmarks.md",
        description="Runs every benchmark in one process on this machine (numba kernels, the full streaming "
                    "detector in 20-sample chunks and whole arrays, cold start with an empty numba cache, gaitmap/"
                    "mobgap from .venv-peers on the same recordings, and the other areas' benchmarks) and writes a "
                    "Markdown report plus the machine-readable JSON beside it.")
    p.add_argument("--out", default="docs/benchmarks.md", help="Markdown report (default docs/benchmarks.md)")
    p.add_argument("--json", default=None, help="JSON results (default: --out with .json)")
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke run in about a minute")
    p.add_argument("--duration-s", type=float, default=None,
                   help="length of each long recording fed to the detector (default 600, --quick 30)")
    p.add_argument("--data", default=None, help="shared recordings folder (default $RUNFORM_DATA or ../shared/data)")
    p.add_argument("--no-peers", action="store_true", help="skip gaitmap/mobgap")
    p.add_argument("--no-cold", action="store_true", help="skip the cold-start subprocesses")
    p.add_argument("--no-areas", action="store_true", help="skip the other areas' benchmarks")
    p.add_argument("--peers-python", default=None, help="python of the peer venv (default .venv-peers/bin/python)")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="measure nothing: re-render --out from a previous run's JSON (e.g. after editing Methods)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from runform.server.bench import FULL, QUICK, run_bench
    from runform.server.bench._report import write

    if args.from_json:
        import json

        try:
            res = json.loads(Path(args.from_json).read_text())
        except (OSError, ValueError) as exc:
            print(f"runform bench: cannot read {args.from_json}: {exc}", file=sys.stderr)
            return 2
        from runform.server.bench import _summary

        if "detector" in res:
            res["summary"] = _summary(res)  # recomputed: the rules may be newer than the JSON
        write(res, Path(args.out), None)
        print(f"re-rendered {args.out} from {args.from_json}")
        return 0
    cfg = QUICK if args.quick else FULL
    changes: dict = {"data": args.data, "peer_python": args.peers_python}
    if args.duration_s is not None:
        if not args.duration_s > 0:
            print("runform bench: --duration-s must be positive", file=sys.stderr)
            return 2
        changes["duration_s"] = args.duration_s
    if args.no_peers:
        changes["peers"] = False
    if args.no_cold:
        changes["cold_start"] = False
    if args.no_areas:
        changes["hooks"] = {}
    cfg = dataclasses.replace(cfg, **changes)
    out_md = Path(args.out)
    out_json = Path(args.json) if args.json else out_md.with_suffix(".json")
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[bench {time.perf_counter() - t0:6.1f} s] {msg}", flush=True)

    res = run_bench(cfg, progress)
    write(res, out_md, out_json)
    s = res["summary"]
    print(f"wrote {out_md} and {out_json} in {res['total_s']:.0f} s")
    for key in ("kernel_chain_sensor_frame", "kernel_chain_body_frame", "detector_whole_all", "detector_chunked_all"):
        lo, hi = s.get(key, (None, None))
        if lo is not None:
            print(f"  {key:28s} {lo / 1e6:8.2f} – {hi / 1e6:8.2f} M samples/s")
    for e in res.get("errors", []):
        print(f"  error: {e}")
    return 0
