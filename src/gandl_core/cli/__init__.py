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
        "CellProfiler LoadData CSV, a folder of multichannel TIFFs or OME-TIFFs, an OME-Zarr HCS plate, "
        "ND2/CZI files or an ImageXpress folder (formats extra), or an index .parquet.",
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
    """Entry point of the ``gandl-core`` console script. Returns the exit code.

    Exit codes: 0 done; 1 a data or user error (a :class:`GandlError`, or the disk filled up), printed
    as one line without a traceback; 2 a usage error (unknown option, missing argument: argparse);
    130 interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "out_required", False) and not args.out:  # -o given under a hidden alias is fine
        parser.exit(2, f"gandl-core {args.command}: error: the following arguments are required: -o/--out\n")
    try:
        return int(args.func(args) or 0)
    except GandlError as exc:
        print(f"gandl-core {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gandl-core {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, RuntimeError) as exc:
        full = disk_full(exc)
        if full is None:
            raise
        print(f"gandl-core {args.command}: error: {full}", file=sys.stderr)
        return 1


def _target_of(filename) -> str:
    """The output a temporary file of ``tables.atomic_write`` stands for (``.x.parquet.ab12cd34.tmp``
    -> ``x.parquet``); other names unchanged."""
    import re
    from pathlib import Path

    p = Path(str(filename))
    m = re.match(r"^\.(.+)\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?$", p.name)
    return str(p.with_name(m.group(1))) if m else str(p)


_FULL = ("No space left on device", "Disk quota exceeded", "file write failed")


def disk_full(exc: BaseException) -> str | None:
    """One line for a write that failed because the disk (or quota) is full, else None.

    Recognises ``OSError`` ENOSPC/EDQUOT anywhere in the exception chain, pyarrow's and torch's
    wrapped forms ("No space left on device", torch's "file write failed"). The writers use
    :func:`gandl_core.tables.atomic_write`, so no partial file is left behind.
    """
    import errno

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {_target_of(exc.filename)}" if exc.filename else ""
            return (f"the disk is full{where} ({exc.strerror or 'no space left'}); nothing half-written was "
                    "kept. Free some space (or choose an -o on another disk) and run the command again.")
        if any(text in str(exc) for text in _FULL):
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            return (f"a write failed, most likely a full disk ({first}); "
                    "nothing half-written was kept. Free some space (or choose an -o on another disk) and run "
                    "the command again.")
        exc = exc.__cause__ or exc.__context__
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
