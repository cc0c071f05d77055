"""The worker process's side: run a Progress generator and report to the GUI through a queue.

The Train and Embed docks run their core calls (:func:`gandl_core.gan.train.train`,
:func:`._jobs.embed_generator`) in a separate process (``multiprocessing``, 'spawn', see
:mod:`._process`), so the work, torch's import and their Python-level parts never hold the GUI
process's GIL. This module imports neither Qt nor napari (the child never builds a GUI); torch is
imported by the core inside the child only.

Messages to the GUI (tuples on ``outbox``):

* ``("progress", Progress)``: the generator's reports, made portable: a ``fakes`` array becomes a
  small false-colour ``uint8`` mosaic (``artifacts["fakes_rgb"]``, in the GUI's channel colours),
  paths become strings, anything that would need torch to unpickle is dropped. Reports without
  metrics, artifacts or a message are coalesced to a few per second.
* ``("returned", value)``: the generator's return value (a checkpoint path, DataFrames), or None
  when it was stopped.
* ``("error", exception)``: a :class:`gandl_core.errors.GandlError` (its own class when it
  survives pickling, else the base class with its message) or :class:`ChildError` for anything
  else (type and message; the traceback is printed on the child's stderr, the terminal log).

Stopping: the GUI sets ``stop`` (a ``multiprocessing.Event``); the driver checks it after every
report the generator yields (for training: between steps) and closes the generator there: the
core's ``finally`` then writes the checkpoint of the last finished step (see
``gandl_core.gan.train``). Ctrl-C or SIGTERM reaching a training child (a terminal's Ctrl-C, the
GUI process exiting) go through the core's own ``StopRequest`` (stop after this step, checkpoint,
KeyboardInterrupt), reported as a normal stop. If the GUI process disappears, the child stops the
same way at the next report.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

import numpy as np

NICE = 10  # the worker process's scheduling priority: below napari's, so it never slows the GUI down
REPORT_S = 0.25  # plain progress reports (no metrics, artifacts or message) at most this often
MAX_ARRAY_BYTES = 1 << 20  # other array artifacts larger than this are not sent to the GUI


class ChildError(Exception):
    """An unexpected error in a worker process: ``"<type>: <message>"`` (traceback in its stderr)."""


def resolve(target: str) -> Any:
    """``"package.module:function"`` -> the function."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def fakes_grid(fakes: np.ndarray, max_items: int = 16) -> np.ndarray:
    """Tile fakes [N,C,H,W] into one [C, rows*H, cols*W] mosaic (N up to ``max_items``)."""
    fakes = np.asarray(fakes, dtype=np.float32)
    if fakes.ndim == 3:
        fakes = fakes[None]
    n, c, h, w = fakes.shape
    n = min(n, max_items)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.full((c, rows * h, cols * w), np.nan, np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[:, r * h:(r + 1) * h, q * w:(q + 1) * w] = fakes[i]
    lo = float(np.nanmin(grid)) if np.isfinite(grid).any() else 0.0
    return np.nan_to_num(grid, nan=lo)


def composite(grid: np.ndarray, colours: Sequence[Sequence[float]]) -> np.ndarray:
    """False-colour RGB [H,W,3] in [0,1] of channels [C,H,W] in about [-1,1], channel k in ``colours[k]``."""
    x = np.clip((np.asarray(grid, np.float32) + 1.0) / 2.0, 0.0, 1.0)
    rgb = np.zeros(x.shape[1:] + (3,), np.float32)
    for k in range(x.shape[0]):
        rgb += x[k][..., None] * np.asarray(colours[k][:3], np.float32)[None, None]
    return np.clip(rgb, 0.0, 1.0)


def fakes_rgb(fakes: Any, colours: Sequence[Sequence[float]], fallback: Sequence[Sequence[float]]) -> np.ndarray:
    """The fakes the core yields ([N,C,H,W] in about [-1,1]) as one uint8 RGB mosaic [H,W,3].

    ``colours`` are the channels' display colours when there are as many as channels, else the
    ``fallback`` cycle is used.
    """
    arr = fakes.detach().cpu().numpy() if hasattr(fakes, "detach") else np.asarray(fakes)
    grid = fakes_grid(arr)
    use = list(colours) if len(colours) == grid.shape[0] else [fallback[k % len(fallback)]
                                                                for k in range(grid.shape[0])]
    return (composite(grid, use) * 255 + 0.5).astype(np.uint8)


def _portable(value: Any, limit: int | None = MAX_ARRAY_BYTES) -> Any:
    """A value the GUI process can unpickle without torch (None when there is no such form).

    Arrays over ``limit`` bytes are dropped (progress artifacts; None: no limit, results).
    """
    import pandas as pd

    if isinstance(value, (str, int, float, bool, pd.DataFrame, pd.Series)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "detach"):  # a tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value if limit is None or value.nbytes <= limit else None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _portable(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return (list if isinstance(value, list) else tuple)(_portable(v, limit) for v in value)
    return None


def portable_progress(p: Any, colours: Sequence, fallback: Sequence) -> Any:
    """A copy of the core's Progress that is small and needs no torch to unpickle."""
    from dataclasses import replace

    artifacts = {}
    for key, value in (p.artifacts or {}).items():
        if key == "fakes":
            artifacts["fakes_rgb"] = fakes_rgb(value, colours, fallback)
            continue
        value = _portable(value)
        if value is not None:
            artifacts[key] = value
    metrics = {}
    for key, value in (p.metrics or {}).items():
        try:
            metrics[str(key)] = float(value)
        except (TypeError, ValueError):
            pass
    return replace(p, metrics=metrics, artifacts=artifacts)


def portable_error(exc: BaseException) -> BaseException:
    """The exception to send: a GandlError as itself when it pickles, else its base; others as ChildError."""
    from gandl_core.errors import GandlError

    if isinstance(exc, GandlError):
        try:
            back = pickle.loads(pickle.dumps(exc))
            if type(back) is type(exc) and str(back) == str(exc):
                return back
        except Exception:  # noqa: BLE001 - an unpicklable subclass: keep the message
            pass
        return GandlError(str(exc))
    return ChildError(f"{type(exc).__name__}: {exc}")


def drive(gen: Any, outbox: Any, stop: Any, parent_pid: int, colours: Sequence, fallback: Sequence) -> Any:
    """Run a Progress generator, sending reports; close it (a step boundary) when asked to stop."""
    last_sent = 0.0
    held = None
    while True:
        if stop.is_set() or os.getppid() != parent_pid:
            gen.close()  # GeneratorExit at the core's yield: its finally writes the checkpoint
            return None
        try:
            p = next(gen)
        except StopIteration as end:
            if held is not None:
                outbox.put(("progress", held))
            return end.value
        q = portable_progress(p, colours, fallback)
        now = time.monotonic()
        if q.metrics or q.artifacts or q.message or now - last_sent >= REPORT_S:
            outbox.put(("progress", q))
            last_sent, held = now, None
        else:
            held = q  # sent with the next report that goes out


def child_main(target: str, args: tuple, kwargs: dict, inbox: Any, outbox: Any, stop: Any, parent_pid: int,
               colours: Sequence = (), fallback: Sequence = ((1.0, 1.0, 1.0),)) -> None:
    """Entry point of the worker process (see the module docstring).

    ``inbox`` delivers one dict of extra keyword arguments first (the plate index, which may be
    large, travels through a queue instead of the process's start-up pickle).
    """
    try:
        if NICE and hasattr(os, "nice"):
            os.nice(NICE)  # on an idle machine no slower; on a busy one the GUI goes first
        extra = inbox.get()
        result = drive(resolve(target)(*args, **kwargs, **extra), outbox, stop, parent_pid, colours, fallback)
        outbox.put(("returned", _portable(result, None)))
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: training stopped after a step and wrote its checkpoint
        outbox.put(("returned", None))
    except BaseException as exc:  # noqa: BLE001 - every error goes to the GUI's one error path
        traceback.print_exc(file=sys.stderr)
        outbox.put(("error", portable_error(exc)))
    finally:
        outbox.close()
        outbox.join_thread()  # everything is in the pipe before the process ends
