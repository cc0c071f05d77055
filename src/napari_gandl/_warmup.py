"""napari's one-time costs of a session's first layers, paid in a background thread instead.

The first image layer of a napari session took 0.7-0.9 s of GUI-thread CPU on a 2-core machine,
every later one about 0.1 s. It is not shader compilation: profiling napari 0.9.2 alone (no plugin)
shows lazy work done on the first layer: ``scipy.ndimage`` imported for the thumbnail, ``xarray``
imported to check whether the data is an xarray (when it is installed), and pint's application
unit registry built from its definition files (every layer's units). Done in a thread first, the
first ``add_image`` costs what the later ones cost.

:func:`start` (called when the plugin's hub is created: a dock opened, File > Open, a sample)
runs :func:`prepare` in a daemon thread; :func:`wait` blocks a worker (the plate-opening one)
until it is done; :func:`apply` (GUI thread, before the first layer is created) installs the unit
registry built in the thread as pint's application registry, only while napari has not built its
own (an unbuilt registry has no units anyone could hold). The imports need nothing more: Python's
import lock makes a module imported in a thread available to every thread. :func:`freeze_heap`
(GUI thread, when the first plate opens) keeps Python's full garbage collections off the long-lived
heap; :func:`layer_removed` undoes it when an older layer leaves.
"""

from __future__ import annotations

import threading
from typing import Any

_state: dict[str, Any] = {"thread": None, "registry": None, "applied": False, "installed": False, "frozen": None}
_done = threading.Event()


def prepare() -> Any:
    """Import what napari's first layers import lazily and build a unit registry (any thread).

    Returns the registry, or None when pint's application registry is already built.
    """
    import scipy.ndimage  # noqa: F401 - Image layer thumbnails

    try:
        import xarray  # noqa: F401 - napari checks every layer's data for xarray types when installed
    except ImportError:
        pass
    import pint
    from pint.registry import LazyRegistry

    if not isinstance(pint.get_application_registry().get(), LazyRegistry):
        return None
    # The same registry pint's lazy default builds on first use (LazyRegistry.__init).
    return pint.UnitRegistry(on_redefinition="raise")


def freeze_heap(viewer: Any) -> bool:
    """GUI thread, once per process: move every object alive now to the collector's permanent generation.

    Python's automatic full collections scan every tracked object: with napari, Qt and pandas
    loaded that was 0.1-0.4 s of CPU holding the GIL, seen by ``benchmarks/bench_napari.py``
    falling into whatever the analyst was doing at that moment (opening a plate, a first fakes
    layer). The objects alive when the first plate opens (modules, classes, Qt wrappers, the
    docks) live as long as the process; frozen, they are no longer scanned and full collections
    scan only what came later. Objects freed by reference counting are freed as before; frozen
    objects in reference cycles are not collected -- so when a layer that existed at the freeze is
    removed (its cycles would otherwise be kept), :func:`layer_removed` unfreezes everything.
    Returns True when this call froze the heap.
    """
    import gc

    if _state.get("frozen") is not None:
        return False
    from ._layers import KIND_KEY

    # the sample command's 1-pixel placeholder is not counted: it becomes a site layer or goes
    _state["frozen"] = {id(ly) for ly in viewer.layers if ly.metadata.get(KIND_KEY) != "placeholder"}
    gc.freeze()
    return True


def layer_removed(layer: Any) -> None:
    """GUI thread: a layer left a viewer; unfreeze the heap if the layer existed when it was frozen."""
    import gc

    frozen = _state.get("frozen")
    if frozen and id(layer) in frozen:
        frozen.clear()  # once: from now on the collector scans everything, as without the freeze
        gc.unfreeze()


def _run() -> None:
    try:
        _state["registry"] = prepare()
    except Exception:  # noqa: BLE001 - a warm-up only: napari does the same work itself if this fails
        _state["registry"] = None
    finally:
        _done.set()


def start() -> None:
    """Start the warm-up once per process (returns at once)."""
    if _state["thread"] is None:
        _state["thread"] = threading.Thread(target=_run, name="napari-gandl warm-up", daemon=True)
        _state["thread"].start()


def wait(timeout: float | None = 60.0) -> bool:
    """Block (a worker thread) until the warm-up is done; True when it is."""
    start()
    return _done.wait(timeout)


def apply() -> bool:
    """GUI thread: install the registry built by the warm-up if napari has not built its own yet.

    Returns True when the warm-up's registry is (now) pint's application registry.
    """
    if _state["applied"] or not _done.is_set():
        return _state["installed"]
    _state["applied"] = True
    reg = _state["registry"]
    _state["registry"] = None
    if reg is None:
        return False
    import pint
    from pint.registry import LazyRegistry

    if not isinstance(pint.get_application_registry().get(), LazyRegistry):
        return False  # napari built its own meanwhile (a layer was made): keep that one
    pint.set_application_registry(reg)
    _state["installed"] = True
    return True


# Glyphs of the plate map's row/column labels first (they are drawn with the first plate), then
# what napari measures text with ("ÅÉÑŐy"), the canvas label ("plate · well · site 1") and the rest.
GLYPHS = "ABCDEFGH123456789IJKLMNOP0" + "ÅÉÑŐy ·site" + "QRSTUVWXYZabcdfghjklmnopqruvwxz_-.:/()#"
GLYPH_MS = 10  # one glyph per timer tick: 5-10 ms of GUI-thread CPU each on a 2-core machine


def warm_glyphs(viewer: Any, chars: str = GLYPHS) -> Any:
    """GUI thread: render the text glyphs napari will need, one per timer tick; returns the timer.

    napari's text (the plate map's labels, the canvas label) is drawn with signed-distance-field
    glyphs that vispy computes on the CPU the first time a character is drawn, inside the paint:
    the first paint with the plate grid computed about 30 glyphs, 0.3 s of GUI-thread CPU in one
    go. Here the same glyphs go into the same font cache (the canvas's font manager, which every
    text of the canvas uses) a few milliseconds at a time while nothing else happens. The glyph
    cache is napari's internal API: if it is not where expected, nothing is done.
    """
    from qtpy.QtCore import QTimer

    try:
        info = viewer.window._qt_viewer.canvas._font_info
        font = info.font_manager.get_font(info.face)
        done = getattr(font, "_glyphs", {})
    except Exception:  # noqa: BLE001 - another napari: its text is drawn as before
        return None
    todo = [c for c in dict.fromkeys(chars) if c not in done]
    if not todo:
        return None
    timer = QTimer()
    timer.setInterval(GLYPH_MS)

    def tick() -> None:
        try:
            font[todo.pop(0)]  # loads the glyph into the font's texture atlas (uploaded at the next draw)
        except Exception:  # noqa: BLE001 - stop quietly: napari draws any missing glyph itself
            todo.clear()
        if not todo:
            timer.stop()

    timer.timeout.connect(tick)
    timer.start()
    return timer
