"""The ``gandl-core`` command line: one subcommand per pipeline step.

Each subcommand lives in its own module ``gandl_core.cli._<name>`` exposing ``register(subparsers)``,
which adds its parser and sets ``func`` to a ``run(args) -> int`` function. A subcommand parses
options, calls one core function, and writes one artifact. Modules import torch and other heavy
libraries inside ``run`` only, so ``gandl-core --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import GandlError

# Order = order in --help, which follows the pipeline.
COMMANDS = [
    "synth",
    "index",
    "train",
    "embed",
    "featurize",
    "train_convae",
    "profile",
    "evaluate",
    "project",
    "dose_response",
    "compare",
    "explain",
    "report",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gandl-core",
        description="GAN-DL for microscopy: train a StyleGAN2 on unlabelled plates and use its "
        "discriminator as an image embedding. DATA arguments accept an RxRx-layout folder, a "
        "CellProfiler LoadData CSV, a folder of multichannel TIFFs, or an index .parquet.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        modname = f"{__name__}._{name}"
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:  # a step not written yet is not listed
            if exc.name == modname:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gandl-core`` console script. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GandlError as exc:
        print(f"gandl-core {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gandl-core {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
