"""Run core generators in napari thread workers; show user errors as notifications.

Every long core call (training, embedding) is a generator yielding
:class:`gandl_core.progress.Progress`. :func:`start_generator` runs one in a ``thread_worker`` so
the GUI never blocks; a :class:`gandl_core.errors.GandlError` raised inside is shown with
``show_error(str(e))`` (the user can fix it: no traceback dialog); other exceptions are bugs and
go to napari's normal error handling.
"""

from __future__ import annotations

from typing import Any, Callable


def notify_error(exc: BaseException) -> None:
    """Show a user-fixable error as a notification; re-raise anything else."""
    from napari.utils.notifications import show_error

    from gandl_core.errors import GandlError

    if isinstance(exc, GandlError):
        show_error(str(exc))
    else:
        show_error(f"{type(exc).__name__}: {exc}")


def start_generator(make_gen: Callable[[], Any], *, on_yield: Callable[[Any], None],
                    on_return: Callable[[Any], None], on_error: Callable[[BaseException], None] | None = None,
                    on_finish: Callable[[], None] | None = None) -> Any:
    """Start ``make_gen()`` (a Progress generator) in a napari ``GeneratorWorker``.

    ``make_gen`` is called inside the worker thread, so heavy imports (torch) and setup happen
    off the GUI thread. Stopping: ``worker.quit()`` makes the worker close the generator at the
    next yield (the core's ``finally`` blocks then leave a valid state).

    Returns
    -------
    napari.qt.threading.GeneratorWorker (already started).
    """
    from napari.qt.threading import thread_worker

    @thread_worker(start_thread=False)
    def _run():
        gen = make_gen()
        try:
            result = yield from gen
        finally:
            gen.close()
        return result

    worker = _run()
    # quit() makes the worker leave its loop without closing our generator; close it right there,
    # in the worker thread (DirectConnection), so the core's cleanup (e.g. the final checkpoint)
    # runs off the GUI thread and before `finished` is emitted.
    from qtpy.QtCore import Qt

    worker.aborted.connect(lambda: worker._gen.close(), Qt.DirectConnection)
    worker.yielded.connect(on_yield)
    worker.returned.connect(on_return)
    worker.errored.connect(on_error or notify_error)
    if on_finish is not None:
        worker.finished.connect(on_finish)
    worker.start()
    return worker
