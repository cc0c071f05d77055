"""Helpers shared by the subcommands: progress rendering and common options."""

from __future__ import annotations

import argparse
import sys
from typing import Generator, TypeVar

from ..progress import Progress

T = TypeVar("T")


def add_data_argument(parser: argparse.ArgumentParser, name: str = "data") -> None:
    """Add the positional DATA argument accepted by every image-reading step."""
    parser.add_argument(
        name,
        metavar="DATA",
        help="plate: RxRx-layout folder (with metadata.csv), CellProfiler LoadData CSV, "
        "folder of multichannel TIFFs, or an index .parquet written by 'gandl-core index'",
    )


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
