"""Run core work in background threads with one error path and progress in napari's activity dock.

Every long core call (indexing, training, embedding, fitting) runs in a ``superqt`` worker:

* **one notification per error.** napari's own ``thread_worker`` relays every error to the
  notification manager (a toast with a traceback) *and* re-raises it in the GUI thread (which
  aborts a script without an event loop); a handler of ours would then add a second toast. Here
  workers are plain superqt workers: the only ``errored`` handler is ours, which shows one
  notification in plain words (:class:`gandl_core.errors.GandlError` text as is; anything else as
  "unexpected error", with the traceback logged, not shown) and then calls the dock's reset.
* **progress in the activity dock**: :class:`Progress` reports update a ``napari.utils.progress``
  bar (per-mille of the work, description with the time left), throttled to a few updates per
  second so a fast generator cannot flood the GUI thread.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable

log = logging.getLogger("napari_gandl")

UPDATE_S = 0.25  # minimum seconds between GUI progress updates
# While a worker runs, the GUI thread shares the GIL with it. Python's default switch interval
# (5 ms) makes the GUI thread wait up to 5 ms each time it takes the GIL back after a Qt call,
# thousands of times per redraw; 0.5 ms keeps the event loop responsive at a small cost in
# worker throughput (torch's kernels run without the GIL anyway).
WORKER_SWITCH_INTERVAL = 0.0005
_running = {"n": 0, "interval": None}


def _worker_started() -> None:
    if _running["n"] == 0:
        _running["interval"] = sys.getswitchinterval()
        sys.setswitchinterval(min(WORKER_SWITCH_INTERVAL, _running["interval"]))
    _running["n"] += 1


def _worker_finished() -> None:
    _running["n"] = max(0, _running["n"] - 1)
    if _running["n"] == 0 and _running["interval"] is not None:
        sys.setswitchinterval(_running["interval"])


def gui_terms(text: str) -> str:
    """A core message in GUI terms: the command-line hints it carries for CLI users are dropped.

    ``"... or pass skip_missing=True (CLI --skip-missing) to ..."`` -> ``"... or pass skip_missing=True to ..."``.
    """
    import re

    text = re.sub(r"\s*\((?:CLI|cli)[: ][^()]*\)", "", text)
    text = re.sub(r"\s*\(--[a-z][\w-]*[^()]*\)", "", text)
    return text


def error_text(exc: BaseException) -> str:
    """The words shown for an error: a GandlError's own message (GUI terms), else a short 'unexpected' line."""
    from gandl_core.errors import GandlError

    from ._child import ChildError

    if isinstance(exc, GandlError):
        return gui_terms(str(exc))
    if isinstance(exc, ChildError):  # already "<type>: <message>" from a worker process
        return f"Unexpected error ({exc}). Details are in the terminal log."
    return f"Unexpected error ({type(exc).__name__}: {exc}). Details are in the terminal log."


def notify_error(exc: BaseException, *, context: str = "") -> str:
    """Show one error notification (no traceback dialog) and return its text."""
    from napari.utils.notifications import show_error

    from gandl_core.errors import GandlError

    text = error_text(exc)
    if context:
        text = f"{context}: {text}"
    if not isinstance(exc, GandlError):
        log.error("napari-gandl: %s", text, exc_info=(type(exc), exc, exc.__traceback__))
    show_error(text)
    return text


def format_seconds(s: float | None) -> str:
    """``75`` -> ``"1 min 15 s"``; None -> ``""``."""
    if s is None or s != s or s < 0:
        return ""
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class ProgressTracker:
    """Turns :class:`gandl_core.progress.Progress` reports into throttled text and an activity bar.

    ``update(p)`` returns the line to show (or None when throttled) and moves the napari progress
    bar; the time left is the core's ``seconds_left``/``eta_s`` metric when it gives one, else
    estimated from the rate since the first report.
    """

    def __init__(self, description: str, *, use_napari: bool = True) -> None:
        self.description = description
        self._bar = None
        self._t0: float | None = None
        self._done0 = 0.0
        self._last = 0.0
        self.seconds_left: float | None = None
        self._pending: tuple | None = None
        self._scheduled = False
        self._flushing = False
        if use_napari:
            try:
                from napari.utils import progress

                self._bar = progress(total=1000, desc=description)
            except Exception:  # noqa: BLE001 - no activity dock (no napari GUI): text only
                self._bar = None

    def update(self, p: Any, *, force: bool = False) -> str | None:
        now = time.monotonic()
        if self._t0 is None:
            self._t0, self._done0 = now, float(p.done)
        left = p.metrics.get("seconds_left", p.metrics.get("eta_s")) if p.metrics else None
        if left is None and p.total and float(p.done) > self._done0:
            rate = (float(p.done) - self._done0) / max(now - self._t0, 1e-6)
            left = (float(p.total) - float(p.done)) / rate
        self.seconds_left = left
        if not force and now - self._last < UPDATE_S and p.fraction != 1.0:
            return None
        self._last = now
        total = f"/{p.total:g}" if p.total else ""
        eta = f", {format_seconds(left)} left" if left is not None else ""
        text = f"{p.done:g}{total} {p.unit}{eta}" + (f". {p.message}" if p.message else "")
        if self._bar is not None:
            self._pending = (int(1000 * p.fraction) if p.fraction is not None else None, f"{self.description}: {text}")
            if not self._scheduled:
                # napari's progress bar widget calls QApplication.processEvents() on every change:
                # updating it inside a `yielded` handler would re-enter that handler (deep
                # recursion with a fast worker). Update it from its own timer event instead.
                from qtpy.QtCore import QTimer

                self._scheduled = True
                QTimer.singleShot(0, self._flush)
        return text

    def _flush(self) -> None:
        self._scheduled = False
        if self._bar is None or self._pending is None or self._flushing:
            return
        self._flushing = True
        try:
            target, desc = self._pending
            self._pending = None
            bar = self._bar
            if target is not None and target > bar.n:
                bar.update(target - bar.n)  # (napari runs processEvents here: close() may run meanwhile)
            if self._bar is bar:
                bar.set_description(desc)
        finally:
            self._flushing = False

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _connect(worker: Any, *, on_yield: Callable | None, on_return: Callable | None,
             on_error: Callable[[BaseException], None] | None, on_finish: Callable[[], None] | None,
             context: str) -> None:
    def errored(exc: BaseException) -> None:
        try:
            notify_error(exc, context=context)
        finally:
            if on_error is not None:
                on_error(exc)

    if on_yield is not None:
        worker.yielded.connect(on_yield)
    if on_return is not None:
        worker.returned.connect(on_return)
    worker.errored.connect(errored)
    if on_finish is not None:
        worker.finished.connect(on_finish)
    _worker_started()
    worker.finished.connect(_worker_finished)
    # Last handler: ``worker.done`` is True once every handler above has run (tests, benchmarks).
    worker.done = False
    worker.finished.connect(lambda: setattr(worker, "done", True))


def start_generator(make_gen: Callable[[], Any], *, on_yield: Callable[[Any], None],
                    on_return: Callable[[Any], None], on_error: Callable[[BaseException], None] | None = None,
                    on_finish: Callable[[], None] | None = None, context: str = "") -> Any:
    """Start ``make_gen()`` (a Progress generator) in a superqt ``GeneratorWorker``.

    ``make_gen`` is called inside the worker thread, so heavy imports (torch) and setup happen
    off the GUI thread. ``worker.quit()`` stops it: the generator is closed in the worker thread
    at the next yield (the core's ``finally`` blocks then leave a valid state, e.g. a checkpoint)
    before ``finished`` is emitted. ``on_error`` runs after the one notification.

    Returns
    -------
    superqt.utils.GeneratorWorker (already started).
    """
    from qtpy.QtCore import Qt
    from superqt.utils import GeneratorWorker

    def _run():
        gen = make_gen()
        try:
            result = yield from gen
        finally:
            gen.close()
        return result

    worker = GeneratorWorker(_run)
    # quit() makes the worker leave its loop without closing our generator; close it right there,
    # in the worker thread (DirectConnection), so the core's cleanup runs off the GUI thread.
    worker.aborted.connect(lambda: worker._gen.close(), Qt.DirectConnection)
    _connect(worker, on_yield=on_yield, on_return=on_return, on_error=on_error, on_finish=on_finish,
             context=context)
    worker.start()
    return worker


def start_function(fn: Callable[[], Any], *, on_return: Callable[[Any], None],
                   on_error: Callable[[BaseException], None] | None = None,
                   on_finish: Callable[[], None] | None = None, context: str = "") -> Any:
    """Run ``fn()`` in a superqt ``FunctionWorker`` (same single error path); returns the started worker."""
    from superqt.utils import FunctionWorker

    worker = FunctionWorker(fn)
    _connect(worker, on_yield=None, on_return=on_return, on_error=on_error, on_finish=on_finish,
             context=context)
    worker.start()
    return worker


class LatestOnly:
    """Run one function worker at a time; while it runs keep only the newest request.

    Clicking through wells faster than images load must not queue a backlog of reads (each ending
    in a layer update on the GUI thread): the reads in between are skipped.
    """

    def __init__(self, context: str = "") -> None:
        self.context = context
        self.worker = None
        self._pending: tuple | None = None

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def submit(self, fn: Callable[[], Any], on_return: Callable[[Any], None]) -> None:
        if self.worker is not None:
            self._pending = (fn, on_return)
            return
        self._start(fn, on_return)

    def _start(self, fn: Callable[[], Any], on_return: Callable[[Any], None]) -> None:
        self.worker = start_function(fn, on_return=on_return, on_finish=self._next, context=self.context)

    def _next(self) -> None:
        self.worker = None
        if self._pending is not None:
            fn, on_return = self._pending
            self._pending = None
            self._start(fn, on_return)
