"""Helpers shared by the subcommands: progress rendering, common options and the output policy."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, Sequence, TypeVar

from ..progress import Progress

T = TypeVar("T")


def plain(doc: str | None) -> str:
    """A module docstring as --help text: reStructuredText's ``literal`` marks and ``Examples::``
    block markers become plain text (the docstrings stay RST for the API docs)."""
    import re

    text = re.sub(r"``([^`]*)``", r"\1", doc or "")
    return re.sub(r"::[ \t]*$", ":", text, flags=re.M)


def add_batch_size_argument(parser, default: int | None, help: str, *, old: str | None = None,
                            dest: str = "batch_size") -> None:
    """``--batch-size`` (every command spells it this way); ``old`` a former spelling kept hidden."""
    parser.add_argument("--batch-size", dest=dest, type=int, default=default, metavar="N", help=help)
    if old:
        parser.add_argument(old, dest=dest, type=int, help=argparse.SUPPRESS)


def finite_float(text: str) -> float:
    """argparse type: a finite number ('nan' and 'inf' are refused as the usage errors they are)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def check_device(device: str | None, option: str = "--device") -> None:
    """Refuse a device this PyTorch build or machine does not have, in one line (torch would raise
    an assertion deep inside the first ``.to(device)``).

    Raises
    ------
    ConfigError
        ``cuda`` without a CUDA build or a visible GPU, a GPU index beyond the count, ``mps`` where it
        is not available, or a name torch does not know.
    """
    from ..errors import ConfigError

    if device is None or device in ("auto", "cpu"):
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{option} {device!r}: not a device name; use cpu, cuda, cuda:N or auto.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise ConfigError(f"{option} {device}: {built}; use --device cpu, or install a CUDA build of torch "
                              "on a machine with an NVIDIA GPU.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{option} {device}: only {torch.cuda.device_count()} GPU(s) are visible "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1}).")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"{option} {device}: Apple MPS is not available here; use --device cpu.")


# What every DATA argument accepts (gandl_core.plates.build_index), said once for every --help.
DATA_FORMS = ("RxRx-layout folder (with metadata.csv), CellProfiler LoadData CSV, folder of multichannel "
              "TIFFs or OME-TIFFs, OME-Zarr HCS plate (.zarr) or a folder of them, ND2/CZI file or folder or "
              "ImageXpress folder (formats extra), or an index .parquet written by 'gandl-core index'")
# The metavar of every --channels/--names option (comma-separated channel names).
CHANNELS_METAVAR = "A,B,..."


def add_data_argument(parser: argparse.ArgumentParser, name: str = "data") -> None:
    """Add the positional DATA argument accepted by every image-reading step."""
    parser.add_argument(name, metavar="DATA", help="plate: " + DATA_FORMS)


def follow(gen: Generator[Progress, None, T], desc: str = "", *, quiet: bool = False) -> T:
    """Drive a progress generator to its end, drawing a tqdm bar on stderr; return its result.

    Metrics of each report are shown in the bar's postfix; ``message`` lines are printed above it.
    Ctrl-C closes the generator (so it can stop cleanly) and re-raises KeyboardInterrupt.
    """
    from tqdm import tqdm

    bar = None
    stage = None
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                return stop.value
            if quiet:
                continue
            if bar is None or (p.total is not None and bar.total != p.total) or p.stage != stage:
                stage = p.stage
                if bar is not None:
                    bar.close()
                # Not a terminal (CI logs, pipes): redraw at most every 5 s instead of every step.
                tty = sys.stderr.isatty()
                label = f"{desc}: {p.stage}" if desc and p.stage and p.stage != desc else (desc or p.stage)
                bar = tqdm(total=p.total, desc=label, unit=p.unit, file=sys.stderr,
                           dynamic_ncols=True, leave=True, mininterval=0.2 if tty else 5.0)
            if p.metrics:
                bar.set_postfix({k: _fmt(v) for k, v in list(p.metrics.items())[:6]}, refresh=False)
            if p.message:
                bar.write(p.message, file=sys.stderr)
            bar.update(p.done - bar.n)  # tqdm throttles redraws by mininterval
    except KeyboardInterrupt:
        gen.close()
        raise
    finally:
        if bar is not None:
            bar.close()


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ----- one output policy for every command ---------------------------------------------------------------------

def add_out_argument(parser: argparse.ArgumentParser, metavar: str, help: str, *, required: bool = True,
                     default: str | None = None, old: str | None = None) -> None:
    """``-o/--out`` (every command spells its output this way). ``old``: a former spelling kept as a
    hidden alias (e.g. ``--output``), so existing scripts keep working."""
    flags = ["-o", "--out"]
    # With a hidden alias argparse cannot see that the alias gave the value: main() checks instead.
    parser.add_argument(*flags, dest="out", required=required and not old, default=default, metavar=metavar,
                        help=help + (" (required)" if required and old else ""))
    if old:
        parser.add_argument(old, dest="out", metavar=metavar, help=argparse.SUPPRESS)
        parser.set_defaults(out_required=required)


def add_out_positional(parser: argparse.ArgumentParser, metavar: str, help: str, default: str | None = None) -> None:
    """An output given either as the positional ``OUT`` (the short form) or as ``-o/--out`` like every
    other command; :func:`out_of` returns the one given."""
    parser.add_argument("out_pos", metavar=metavar, nargs="?", default=None, help=help)
    parser.add_argument("-o", "--out", dest="out", metavar=metavar, default=None, help=f"same as {metavar}")
    parser.set_defaults(out_default=default)


def out_of(args: argparse.Namespace) -> str:
    """The output named by :func:`add_out_positional`'s positional or ``-o``.

    Raises
    ------
    ConfigError
        Both are given and differ, or neither is given and there is no default.
    """
    from ..errors import ConfigError

    if args.out and args.out_pos and args.out != args.out_pos:
        raise ConfigError(f"two outputs given ({args.out_pos} and -o {args.out}); give one.")
    out = args.out or args.out_pos or args.out_default
    if not out:
        raise ConfigError("no output folder: give OUT (or -o OUT).")
    return out


def add_overwrite_argument(parser: argparse.ArgumentParser, what: str = "OUT") -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace an existing {what} (its old files are removed; without this flag an "
                        "existing output is refused)")


def check_new_file(path: str | os.PathLike, overwrite: bool, *, option: str = "-o") -> Path:
    """Refuse to replace an existing output file unless ``overwrite``; return the path.

    Raises
    ------
    DataError
        ``path`` exists and ``overwrite`` is false, or ``path`` is a folder.
    """
    from ..errors import DataError

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{option} {path}: is a folder; give a file name.")
    if path.exists() and not overwrite:
        raise DataError(f"{path} already exists; pass --overwrite to replace it, or choose another {option}.")
    return path


def check_queries(args: argparse.Namespace, *names: str) -> None:
    """Check the selection options ``names`` (e.g. ``"positive"``) before any file is read: a query
    outside the safe selection language (:mod:`gandl_core.selection`) fails at once."""
    from ..selection import check_expr

    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            check_expr(value, option="--" + name.replace("_", "-"))


STAGE_PREFIX = ".gandl-stage-"
STALE_AFTER_S = 3600.0  # a staging folder untouched this long belongs to a killed run


def _manifest(out: Path, command: str) -> Path:
    return out / f".gandl-{command}.json"


def _previous_files(out: Path, command: str, known: Sequence[str]) -> list[str]:
    """Files a previous run of ``command`` left in ``out``: its manifest's list, else the known names."""
    import fnmatch
    import json

    if not out.is_dir():
        return []
    try:
        listed = json.loads(_manifest(out, command).read_text()).get("files", [])
        return sorted(n for n in listed if (out / n).is_file())
    except (OSError, ValueError, AttributeError):
        pass
    names = [p.name for p in out.iterdir() if p.is_file()]
    return sorted(n for n in names if any(fnmatch.fnmatch(n, pat) for pat in known))


def _refuse_previous(out: Path, command: str, known: Sequence[str], overwrite: bool) -> list[str]:
    from ..errors import DataError

    previous = _previous_files(out, command, known)
    if previous and not overwrite:
        shown = ", ".join(previous[:4]) + (", ..." if len(previous) > 4 else "")
        raise DataError(f"{out} already holds the output of a '{command}' run ({shown}); pass --overwrite to "
                        "replace it (its old files are removed), or choose another -o.")
    return previous


@contextmanager
def staged_output(out: str | os.PathLike, command: str, *, overwrite: bool,
                  known: Sequence[str] = ()) -> Iterator[Path]:
    """Write a command's output folder all at once, or not at all.

    Yields a fresh staging folder inside ``out``; the command writes every file there. When the
    block ends without error, the files of the previous run of ``command`` (listed in its manifest,
    ``out/.gandl-<command>.json``, or matching ``known`` for outputs written before manifests) are
    removed, the new files moved in, and the manifest rewritten. On any error the staging folder is
    deleted and ``out`` is left as it was: no half-written result, no stale plot of an earlier run
    beside new tables. Other commands' files in ``out`` are never touched. The folder's writer lock
    (:func:`gandl_core.locks.output_lock`) is held throughout, so two runs cannot mix their files.

    Raises
    ------
    DataError
        ``out`` holds a previous run's output and ``overwrite`` is false, or ``out`` is a file.
    """
    from ..errors import DataError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"-o {out}: is a file; give a folder for {command}'s outputs.")
    _refuse_previous(out, command, known, overwrite)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with _locked_stage(out, command, known, overwrite) as stage:
            yield stage
    except BaseException:
        if created:  # a folder this run made and filled with nothing is not left behind
            try:
                out.rmdir()
            except OSError:
                pass
        raise


def write_staged(args: Any, command: str, known: Sequence[str], write: Callable[[Any, Path], list[str]]) -> int:
    """The whole run of a command that writes a folder: ``write(args, stage)`` fills a staging folder
    (see :func:`staged_output`; ``args.out``, ``args.overwrite``) and returns the names it wrote,
    which are printed as one ``wrote OUT/a, b`` line. Returns 0, the command's exit status."""
    with staged_output(args.out, command, overwrite=args.overwrite, known=known) as stage:
        written = write(args, stage)
    print(f"wrote {args.out}/" + ", ".join(written))
    return 0


@contextmanager
def _locked_stage(out: Path, command: str, known: Sequence[str], overwrite: bool) -> Iterator[Path]:
    import shutil
    import tempfile
    import time

    from ..locks import output_lock
    from ..tables import write_json

    with output_lock(out, command=command):
        previous = _refuse_previous(out, command, known, overwrite)  # again: another run may have just finished
        for old in out.glob(STAGE_PREFIX + "*"):  # left by a killed run
            try:
                if time.time() - old.stat().st_mtime > STALE_AFTER_S:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{command}-", dir=out))
        try:
            yield stage
            new = sorted(p.name for p in stage.iterdir())
            for name in previous:
                if name not in new:
                    (out / name).unlink(missing_ok=True)
            for name in new:
                os.replace(stage / name, out / name)
            write_json(_manifest(out, command), {"command": command, "files": new})
        finally:
            shutil.rmtree(stage, ignore_errors=True)
