"""Run a dock's long core call in a separate process and relay its reports to the GUI thread.

Training and embedding are mostly torch kernels, but torch's first import, the loop around the
kernels and every Python-level part hold the GIL: in a thread of napari's process they stalled the
event loop (half a second when a worker imported torch, a quarter second when layers were built
while a training step ran). :class:`ProcessWorker` runs a Progress generator in a process of its
own (``multiprocessing``, 'spawn': a fresh interpreter, no copy of Qt's state) and looks to the
docks like the thread workers of :mod:`._workers`: ``is_running``, ``quit()``, ``done``, and the
same handlers (``on_yield`` with each report, ``on_return`` with the result, ``on_error`` after the
one notification, ``on_finish`` last). napari's process never imports torch.

The GUI side only starts the process, puts the large inputs (the plate index) on a queue (pickled
by the queue's feeder thread, not the GUI thread) and polls the reply queue from a ``QTimer``, a
few milliseconds of work per poll. The child's side is :mod:`._child` (no Qt, no napari).

``quit()`` sets a ``multiprocessing.Event``: the child closes the generator at its next report
(training: after the current step, and the core writes the checkpoint of that step). When napari
exits while a process runs, the same happens (an ``atexit`` hook asks every process to stop and
waits for it; then SIGTERM, which the training core also turns into "stop after this step", and
finally SIGKILL, if one does not end in time).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util  # noqa: F401 - registers multiprocessing's exit hook before ours (see the end)
import os
import queue
import signal
import time
import weakref
from typing import Any, Callable, Sequence

from ._workers import notify_error

log = logging.getLogger("napari_gandl")

POLL_MS = 100  # how often the GUI looks for the child's reports
POLL_BUDGET_S = 0.02  # at most this long handling reports per poll (the rest waits for the next one)
EXIT_WAIT_S = 60.0  # at exit: how long a run may take to finish its step and write the checkpoint

_LIVE: "weakref.WeakSet[ProcessWorker]" = weakref.WeakSet()


class ProcessWorker:
    """A Progress generator ``target(*args, **kwargs, **payload)`` run in a spawned process.

    ``target`` is ``"module:function"`` (importable in a fresh interpreter). ``payload`` (e.g.
    ``{"index": DataFrame}``) reaches the child through a queue. ``colours`` (RGB per channel) and
    ``fallback`` (a colour cycle) colour the fakes mosaic the child sends.
    """

    def __init__(self, target: str, args: tuple = (), kwargs: dict | None = None, *, payload: dict | None = None,
                 on_yield: Callable[[Any], None] | None = None, on_return: Callable[[Any], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 on_finish: Callable[[], None] | None = None, context: str = "",
                 colours: Sequence = (), fallback: Sequence = ((1.0, 1.0, 1.0),)) -> None:
        self.target, self.args, self.kwargs = target, tuple(args), dict(kwargs or {})
        self.payload = dict(payload or {})
        self.on_yield, self.on_return, self.on_error, self.on_finish = on_yield, on_return, on_error, on_finish
        self.context = context
        self.colours = [tuple(float(v) for v in c[:3]) for c in colours]
        self.fallback = [tuple(float(v) for v in c[:3]) for c in fallback] or [(1.0, 1.0, 1.0)]
        self.process = None
        self.done = False  # True once every handler ran (tests, benchmarks)
        self.stopping = False
        self._finished = False
        self._timer = None
        self._inbox = self._outbox = self._stop = None

    # -- the worker interface of the docks -------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self.process is not None and not self._finished

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> "ProcessWorker":
        import multiprocessing as mp

        from qtpy.QtCore import QTimer

        from ._child import child_main

        ctx = mp.get_context("spawn")
        self._inbox, self._outbox, self._stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        args = (self.target, self.args, self.kwargs, self._inbox, self._outbox, self._stop, os.getpid(),
                self.colours, self.fallback)
        # not a daemon: a daemonic process may not start children (the core's DataLoader workers)
        self.process = ctx.Process(target=child_main, name=f"napari-gandl {self.context or self.target}",
                                   daemon=False, args=args)
        self.process.start()
        self._inbox.put(self.payload)  # pickled and written by the queue's feeder thread
        self.payload = {}
        _LIVE.add(self)
        self._timer = QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self._timer.start()
        return self

    def quit(self) -> None:
        """Ask the process to stop at its next report (training: after this step, with a checkpoint)."""
        if self.is_running and self._stop is not None:
            self.stopping = True
            self._stop.set()

    # -- relaying ----------------------------------------------------------------------------------
    def _poll(self) -> None:
        """Handle the child's reports (a bounded amount per call); finish once it has ended."""
        if self._finished:
            return
        t0 = time.monotonic()
        while time.monotonic() - t0 < POLL_BUDGET_S:
            try:
                kind, value = self._outbox.get_nowait()
            except queue.Empty:
                break
            except (EOFError, OSError):  # the pipe broke: the child is gone
                break
            if self._handle(kind, value):
                return
        if not self.process.is_alive():
            self._drain_after_exit()

    def _drain_after_exit(self) -> None:
        """The child has ended: handle what it sent last, or report that it died without a word."""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                kind, value = self._outbox.get(timeout=0.05)
            except queue.Empty:
                if self._outbox.empty():
                    break
                continue
            except (EOFError, OSError):
                break
            if self._handle(kind, value):
                return
        code = self.process.exitcode
        from ._child import ChildError

        what = (self.context or "worker").lower()
        self._error(ChildError(f"the {what} process ended unexpectedly (exit code {code})"))
        self._finish()

    def _handle(self, kind: str, value: Any) -> bool:
        """One message; True when it was the last one (the run is over)."""
        if kind == "progress":
            if self.on_yield is not None:
                self._call(self.on_yield, value)
            return False
        if kind == "returned":
            if self.on_return is not None:
                self._call(self.on_return, value)
        else:  # "error"
            self._error(value)
        self._finish()
        return True

    def _call(self, fn: Callable, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - a timer callback must never raise (aborts PyQt)
            notify_error(exc, context=self.context)

    def _error(self, exc: BaseException) -> None:
        try:
            notify_error(exc, context=self.context)
        finally:
            if self.on_error is not None:
                self._call(self.on_error, exc)

    def _finish(self) -> None:
        self._finished = True
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self.process is not None:
            self.process.join(timeout=0)  # reap it if it has exited; never wait on the GUI thread
        _LIVE.discard(self)
        for q in (self._inbox, self._outbox):
            if q is not None:
                q.close()
                q.cancel_join_thread()
        try:
            if self.on_finish is not None:
                self._call(self.on_finish)
        finally:
            self.done = True

    # -- exit ------------------------------------------------------------------------------------
    def shutdown(self, wait_s: float = EXIT_WAIT_S) -> None:
        """Stop now and wait (napari is closing; a training run writes its checkpoint): Event, SIGTERM, SIGKILL."""
        p = self.process
        if p is None or not p.is_alive():
            return
        self._stop.set()
        p.join(wait_s)
        if p.is_alive():
            log.warning("napari-gandl: the %s process did not stop in %.0f s; terminating it", self.context, wait_s)
            os.kill(p.pid, signal.SIGTERM)  # training stops after the step it is in
            p.join(10)
        if p.is_alive():
            p.kill()
            p.join(5)


def _shutdown_all() -> None:
    for proc in list(_LIVE):
        try:
            proc.shutdown()
        except Exception:  # noqa: BLE001 - exiting: never raise from atexit
            log.exception("napari-gandl: stopping a worker process failed")


# Registered after multiprocessing's own exit hook (multiprocessing.util is imported above), so it
# runs first (atexit is last in, first out): the processes are asked to stop before multiprocessing
# joins its children, which would otherwise wait for a whole training run to end.
atexit.register(_shutdown_all)
