"""`yolo-attn-bench [MODE] [options]`: dispatch to a benchmark mode; without a mode name, the models mode runs.

A mode is a module of this package with `DESCRIPTION` (str), `add_arguments(parser)` and `main(args) -> int`; adding
one means writing that module and naming it in `MODES`.
"""

from __future__ import annotations

import argparse
import importlib

from yolo_attn.usererrors import FLAGS, HELP, run_command

MODES = {  # mode name -> module; the first is the default
    "models": "yolo_attn.bench.models",
    "ops": "yolo_attn.bench.ops",
    "finetune": "yolo_attn.bench.finetune",
    "deploy": "yolo_attn.bench.deploy",
    "profile": "yolo_attn.bench.profile",
}


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: the command line) and run the chosen mode; return its exit status (2: a user's error)."""
    return run_command("yolo-attn-bench", _main, argv)


def _main(argv: list[str]) -> int:
    name = argv.pop(0) if argv and argv[0] in MODES else next(iter(MODES))
    mode = importlib.import_module(MODES[name])
    ap = argparse.ArgumentParser(
        prog=f"yolo-attn-bench {name}",
        description=mode.DESCRIPTION,
        epilog=f"Modes: {', '.join(MODES)} (`yolo-attn-bench MODE --help`); without a mode name: {next(iter(MODES))}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mode.add_arguments(ap)
    ap.add_argument(FLAGS[0], FLAGS[1], action="store_true", help=HELP)  # read by run_command
    return mode.main(ap.parse_args(argv))
