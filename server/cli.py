"""The ``runform`` command: one entry point, one subcommand per job.

Each subcommand lives in its own module exposing ``register(subparsers)``; the
module is listed in ``_COMMAND_MODULES`` and imported only when the CLI starts,
so ``runform --help`` stays fast and a broken optional part cannot hide the rest.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# module path -> what it provides; each module has register(subparsers).
_COMMAND_MODULES: tuple[str, ...] = (
    "runform.server._cmd_dsp",  # analyze, warmup
    "runform.server._cmd_simulate",  # simulate (recording CSV + true events)
    "runform.server._cmd_validate",  # validate
    "runform.server._cmd_bench",  # bench
    "runform.server._cmd_ble",  # scan, record, sensor-sim
    "runform.server._cmd_edge",  # run, broker
    "runform.server._cmd_export",  # ingest, import-journal, export, sessions
    "runform.server._cmd_server",  # server, user
    "runform.server._cmd_demo",  # demo (broker + server + edge + virtual BLE runners)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runform",
        description="runform: wearable-IMU running-form monitor (BLE bridge, streaming DSP, cues, storage).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a part not installed in this build
            if exc.name and exc.name.startswith("runform"):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # python -m runform.server.cli
    sys.exit(main())
