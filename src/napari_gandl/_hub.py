"""One layer manager per viewer: the current plate session and the layers that show it.

Design (one plate source per viewer): opening another plate **replaces** the previous one. Its
layers (site channels, plate map, grid, tint, fakes) are removed, the old session emits
``closed`` (docks drop its state: a Resume button no longer points at the old run), and every dock
follows the new session through :attr:`SessionHub.session_changed`. The analyst's own layers are
never touched. To compare two sources side by side, open a second viewer (File > New Window).

Responsiveness: indexing, reading the first site and building the well table run in a worker;
the layers are then created one per event-loop turn (each ``add_image`` costs a GPU upload), and
afterwards only updated in place: a well click reads the site in a worker (newest click wins) and
swaps the layers' data; a plate switch changes which points are ``shown``; new columns are merged
into ``layer.features`` (other plugins' columns survive).
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from psygnal import Signal

from . import _layers as L
from . import _warmup
from ._session import (ROLE_CODE_COLUMN, ROLE_COLUMN, PlateSession, SiteRef, display_table, initial_channels,
                       merge_into_features, well_table)
from ._workers import LatestOnly, start_generator

_HUBS: dict[int, "SessionHub"] = {}
STEP_DELAY_MS = 1  # between two staged steps: input, the tick of other timers and paints run in between
STEP_LATE_S = 0.02  # a step timer firing later than this after it was armed waits one more turn


@dataclass
class OpenedPlate:
    """What the opening worker hands to the GUI thread."""

    session: PlateSession
    planes: list[np.ndarray]
    first: SiteRef | None
    limits: list[tuple[float, float]] | None = None  # each plane's contrast limits (computed in the worker)


def real_viewer(viewer: Any) -> Any:
    """The viewer itself: napari hands plugin widgets a public-only proxy of it."""
    return getattr(viewer, "__wrapped__", viewer)


def hub_of(viewer: Any) -> "SessionHub":
    """The viewer's hub (created on first use)."""
    viewer = real_viewer(viewer)
    hub = _HUBS.get(id(viewer))
    if hub is None or hub.viewer is not viewer:
        hub = _HUBS[id(viewer)] = SessionHub(viewer)
    return hub


def current_session(viewer: Any) -> PlateSession | None:
    """The plate session shown in ``viewer`` (None when no plate is open): for scripts and the console."""
    return hub_of(viewer).session


# ----------------------------------------------------------------------------------------------
# off the GUI thread
# ----------------------------------------------------------------------------------------------

def open_plate_iter(path: str | Path, *, pattern: str | None = None, names: list[str] | None = None):
    """Progress generator (worker): index a plate source, read its first site -> :class:`OpenedPlate`."""
    from gandl_core.plates import build_index_iter

    index = yield from build_index_iter(path, skip_missing=True, pattern=pattern or None, names=names)
    return session_from_index(index, str(path), pattern=pattern)


def session_from_index(index: pd.DataFrame, source: str, *, pattern: str | None = None) -> OpenedPlate:
    from gandl_core.plates import channel_names

    from ._reader import check_wells

    wells = well_table(index)
    check_wells(wells, source)
    plate = str(wells["Metadata_Plate"].iloc[0])
    first = index[index["Metadata_Plate"].astype(str) == plate].iloc[0]
    planes, limits = L.planes_and_limits(first)
    session = PlateSession(index=index, wells=wells, plate=plate, source=source,
                           site_shape=tuple(planes[0].shape), channels=source_channels(index, source),
                           skipped=list(index.attrs.get("skipped", [])), pattern=pattern)
    ref = SiteRef(plate, str(first["Metadata_Well"]), int(first.get("Metadata_Site", 1)))
    return OpenedPlate(session, planes, ref, limits)


def source_channels(index: pd.DataFrame, source: str) -> list:
    """Channel display specs: the plate's own colours where it has them (OME-Zarr ``omero``), else stain rules."""
    from dataclasses import replace

    from gandl_core.plates import channel_names, is_omezarr_plate

    specs = initial_channels(channel_names(index))
    path = Path(source)
    if is_omezarr_plate(path) or (path.is_dir() and any(is_omezarr_plate(c) for c in path.iterdir() if c.is_dir())):
        try:
            from gandl_core.plates import plate_channels

            colours = {str(c.get("name")): L.colormap_from_hex(c.get("color")) for c in plate_channels(path)}
        except Exception:  # noqa: BLE001 - colours are a nicety: keep the stain rules
            colours = {}
        specs = [replace(s, colormap=colours.get(s.name) or s.colormap) for s in specs]
    return specs


# ----------------------------------------------------------------------------------------------
# the hub
# ----------------------------------------------------------------------------------------------

class SessionHub:
    """The current :class:`PlateSession` of one viewer and its layers (see the module docstring)."""

    session_changed = Signal(object)  # PlateSession | None
    site_shown = Signal(object)  # SiteRef, after the site layers show it

    def __init__(self, viewer: Any) -> None:
        self._viewer = weakref.ref(viewer)
        self.session: PlateSession | None = None
        self.ready = False
        self.opening = None  # the worker opening a source
        self._steps: deque[Callable[[], None]] = deque()
        self._stepping = False
        self._hidden: list[Any] = []  # layers created hidden, shown by the next step
        self._armed_at = 0.0  # when the next step's timer was armed
        self._yielded = False  # the armed step already waited one turn
        self._selecting: set[int] | None = None
        self._reader = LatestOnly("Reading a site")
        self._quiet_selection = False
        viewer.layers.events.removed.connect(self._on_removed)
        _warmup.start()  # napari's first-layer costs, paid in a thread (see _warmup)
        self._glyph_timer = _warmup.warm_glyphs(viewer)  # and its text glyphs, a few ms at a time

    @property
    def viewer(self) -> Any:
        return self._viewer()

    # -- opening ---------------------------------------------------------------------------------
    def open_source(self, path: str | Path, *, kind: str = "plate", pattern: str | None = None,
                    names: list[str] | None = None, on_done: Callable[[], None] | None = None,
                    prepare: Callable[[], Any] | None = None) -> Any:
        """Open a plate source in a worker (index + first site), then replace the current session.

        ``kind`` is ``"plate"`` (anything :func:`gandl_core.plates.build_index` reads) or
        ``"table"`` (a profile/embedding table). Progress shows in the activity dock; an error is
        one notification and leaves the current session as it was. ``prepare`` (optional) runs
        first in the worker (e.g. generating the sample screen).
        """
        from ._reader import read_table_session
        from ._workers import ProgressTracker

        tracker = ProgressTracker(f"Opening {Path(path).name}")

        def make():
            if prepare is not None:
                prepare()
            if kind == "table":
                return _after_warmup(_as_gen(lambda: read_table_session(Path(path))))
            return _after_warmup(open_plate_iter(path, pattern=pattern, names=names))

        state = {"ok": False}

        def done(opened: OpenedPlate) -> None:
            state["ok"] = True
            self.install(opened.session, opened.planes, opened.first, opened.limits)
            if on_done is not None:
                self.after_build(on_done)

        def finished() -> None:
            tracker.close()
            self.opening = None
            if not state["ok"]:  # the sample's placeholder must not outlive a failed opening
                self._remove_placeholders()

        self.opening = start_generator(make, on_yield=tracker.update, on_return=done, on_finish=finished,
                                       context=f"Opening {path}")
        self.opening.warned.connect(_show_user_warning)
        return self.opening

    def _remove_placeholders(self, keep: list[Any] = ()) -> None:
        remove_layers(self.viewer, [ly for ly in self.viewer.layers if ly.metadata.get(L.KIND_KEY) == "placeholder"
                                    and not any(ly is k for k in keep)])

    def install(self, session: PlateSession, planes: list[np.ndarray], first: SiteRef | None,
                limits: list[tuple[float, float]] | None = None) -> None:
        """Replace the current session by ``session``, one layer step per event-loop turn.

        The previous plate's layers are reused and updated in place where they can be (site
        channels, plate map, grid: a second plate costs no new layers); the rest are removed.
        """
        _warmup.apply()  # before the first layer: the unit registry built off the GUI thread
        _warmup.freeze_heap(self.viewer)  # full collections no longer scan napari's long-lived heap
        old = self.session
        self.ready = False
        self.session = None
        reuse: dict[str, list[Any]] = {"site": [], "plate_map": [], "plate_grid": []}
        # the sample command's placeholder (a 1-pixel image) becomes the first site layer
        from napari.layers import Image

        holders = [ly for ly in self.viewer.layers if ly.metadata.get(L.KIND_KEY) == "placeholder"
                   and isinstance(ly, Image)][:1]
        reuse["site"] = list(holders)
        self._steps.append(lambda: self._remove_placeholders(keep=holders))
        # the previous session's layers; with no session (its plate map was deleted), any left behind
        leftovers = self.layers_of(old.id) if old is not None else \
            [ly for ly in self.viewer.layers if "session_id" in ly.metadata and ly.metadata.get(L.KIND_KEY)]
        if leftovers:
            if old is not None:
                self._detach(old)
            for layer in leftovers:
                kind = layer.metadata.get(L.KIND_KEY)
                if kind in reuse:
                    reuse[kind].append(layer)
                else:
                    self._steps.append(lambda ly=layer: self._remove(ly))
            for layer in reuse["site"][len(planes):] + reuse["plate_map"][1:] + reuse["plate_grid"][1:]:
                self._steps.append(lambda ly=layer: self._remove(ly))
            # free the names first, so a reused layer can take any channel's name
            for i, layer in enumerate(reuse["site"][:len(planes)]):
                self._steps.append(lambda ly=layer, i=i: setattr(ly, "name", f"{L.SITE_PREFIX} ~{session.id}.{i}"))
        if old is not None:
            old.close()
            self.session_changed.emit(None)
        title = first.label() if first else ""
        sites = reuse["site"]
        for i, (spec, plane) in enumerate(zip(session.channels, planes)):
            target = sites[i] if i < len(sites) else None
            lim = limits[i] if limits is not None and i < len(limits) else None
            self._steps.append(lambda s=spec, p=plane, t=target, m=lim: self._site_layer(session, s, p, title, t, m))
        grid = reuse["plate_grid"][0] if reuse["plate_grid"] else None
        pm = reuse["plate_map"][0] if reuse["plate_map"] else None
        self._steps.append(lambda: self._grid_layer(session, grid))
        self._steps.append(self._show_hidden)
        self._steps.append(lambda: self._plate_map_layer(session, pm))
        self._steps.append(self._show_hidden)
        self._steps.append(lambda: self._finish_install(session, first))
        self._steps.append(lambda: self._show_current(session, first))
        self._steps.append(lambda: self._announce(session))
        self._run_steps()

    def after_build(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the staged layer building is done."""
        self._steps.append(fn)
        self._run_steps()

    def _run_steps(self) -> None:
        """Run the queued steps, one per event-loop turn (one chain of steps at a time)."""
        if self._stepping:
            return
        self._stepping = True
        self._next_step()

    def _next_step(self) -> None:
        from qtpy.QtCore import QTimer

        # A real timer, not a zero-delay one: Qt runs zero-delay callbacks as posted events, ahead
        # of timers and input, so a chain of them (with the paints they cause) was one long stall.
        self._armed_at = time.perf_counter()
        QTimer.singleShot(STEP_DELAY_MS, self._step)

    def _step(self) -> None:
        if not self._steps:
            self._stepping = False
            return
        if time.perf_counter() - self._armed_at > STEP_LATE_S and not self._yielded:
            # The repaint the previous step caused ran long, and this timer, armed before it, would
            # fire ahead of every timer that fell due meanwhile (input and other timers too): the step
            # and the paint became one stall. Re-armed now, it runs after them, on the next turn.
            self._yielded = True
            self._next_step()
            return
        self._yielded = False
        fn = self._steps.popleft()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a Qt timer callback must never raise (aborts PyQt)
            from ._workers import notify_error

            notify_error(exc, context="Building the plate's layers")
        finally:
            if self._steps:
                self._next_step()
            else:
                self._stepping = False

    def _remove(self, layer: Any) -> None:
        remove_layers(self.viewer, [layer])

    def _site_layer(self, session: PlateSession, spec: Any, plane: np.ndarray, title: str, layer: Any,
                    limits: tuple[float, float] | None = None) -> None:
        kwargs = L.site_layer_kwargs(spec, plane, session_id=session.id, title=title, limits=limits)
        if layer is None:
            with _not_activated(self.viewer):
                layer = self.viewer.add_image(plane, **kwargs)
        else:  # reuse the previous plate's layer: new data, name, colour and range, in place
            layer.data = plane
            layer.name = kwargs["name"]
            layer.colormap = kwargs["colormap"]
            layer.metadata.update(kwargs["metadata"])
            layer.contrast_limits_range = L.full_range(plane)
            layer.contrast_limits = kwargs["contrast_limits"]
        layer.contrast_limits_range = L.full_range(plane)
        layer.metadata["auto_limits"] = tuple(layer.contrast_limits)

    def _show_hidden(self) -> None:
        """Show the layers created hidden one step earlier (see :meth:`_grid_layer`)."""
        hidden, self._hidden = self._hidden, []
        for layer in hidden:
            if layer in self.viewer.layers:
                layer.visible = True

    def _grid_layer(self, session: PlateSession, layer: Any) -> None:
        data, kwargs, _ = L.grid_label_data(session)
        if layer is None:
            # A new Points layer is created hidden and shown on the next turn: its first paint
            # builds the marker and text shader programs (vispy parses their source in Python,
            # ~0.1 s), so creating and drawing it in one turn was one stall of both costs.
            with _not_activated(self.viewer):
                self._hidden.append(self.viewer.add_points(data, visible=False, **kwargs))
            return
        layer.data = data
        layer.features = kwargs["features"]
        layer.size = kwargs["size"]
        layer.text = kwargs["text"]
        layer.metadata.update(kwargs["metadata"])

    def _plate_map_layer(self, session: PlateSession, layer: Any) -> None:
        data, kwargs, _ = L.plate_map_data(session)
        if layer is None:  # hidden until the next turn, as the grid
            with _not_activated(self.viewer):
                layer = self.viewer.add_points(data, visible=False, **kwargs)
            self._hidden.append(layer)
            layer.mouse_drag_callbacks.append(_click_select)
        else:  # the previous plate's map, updated in place
            layer.selected_data = set()
            layer.data = data
            layer.features = kwargs["features"]
            for key in ("name", "symbol", "size", "face_color", "border_color", "border_width",
                        "border_width_is_relative", "shown"):
                setattr(layer, key, kwargs[key])
            layer.metadata.update(kwargs["metadata"])
            layer.metadata.pop("legend", None)
            if _click_select not in layer.mouse_drag_callbacks:
                layer.mouse_drag_callbacks.append(_click_select)
        layer.selected_data.events.items_changed.connect(self._on_selection)

    def _finish_install(self, session: PlateSession, first: SiteRef | None) -> None:
        self.session = session
        session.plate_changed.connect(self._on_plate)
        session.wells_changed.connect(self._on_wells)
        session.channels_changed.connect(self._on_channels)
        session.colouring_changed.connect(self._on_colouring)
        session.current_changed.connect(self._on_current)
        pm = self.plate_map
        if pm is not None:
            self.plate_map_on_top()
            if first is not None:  # the shown well is the selected one (its site is already shown)
                self._quiet_selection = True
                try:
                    pm.selected_data = {int(i) for i in session.rows_of([(first.plate, first.well)])}
                finally:
                    self._quiet_selection = False
        self.viewer.reset_view()

    def _show_current(self, session: PlateSession, first: SiteRef | None) -> None:
        """Next turn: the canvas label of the shown site (its text visual is created now)."""
        if self.session is session:
            self.ready = True
            session.set_current(first)

    def _announce(self, session: PlateSession) -> None:
        """Last turn: the docks follow the new session (each fills its tables and choices)."""
        if self.session is session:
            self.session_changed.emit(session)

    def _detach(self, session: PlateSession) -> None:
        for sig, slot in ((session.plate_changed, self._on_plate), (session.wells_changed, self._on_wells),
                          (session.channels_changed, self._on_channels),
                          (session.colouring_changed, self._on_colouring),
                          (session.current_changed, self._on_current)):
            sig.disconnect(slot, missing_ok=True)
        pm = self.find("plate_map", session.id)
        if pm is not None:
            pm.selected_data.events.items_changed.disconnect(self._on_selection)

    def close(self) -> None:
        """Close the current session and remove its layers now."""
        old = self.session
        if old is None:
            return
        self._detach(old)
        self.session, self.ready = None, False
        remove_layers(self.viewer, self.layers_of(old.id))
        old.close()
        self.session_changed.emit(None)

    def _on_removed(self, event: Any) -> None:
        layer = event.value
        _warmup.layer_removed(layer)
        s = self.session
        if s is not None and layer.metadata.get(L.KIND_KEY) == "plate_map" and layer.metadata.get("session_id") == s.id:
            self._detach(s)
            self.session, self.ready = None, False
            s.close()
            self.session_changed.emit(None)

    # -- finding layers --------------------------------------------------------------------------
    def layers_of(self, session_id: int, kind: str | None = None) -> list[Any]:
        return [ly for ly in self.viewer.layers if ly.metadata.get("session_id") == session_id
                and (kind is None or ly.metadata.get(L.KIND_KEY) == kind)]

    def find(self, kind: str, session_id: int | None = None) -> Any | None:
        sid = session_id if session_id is not None else (self.session.id if self.session else None)
        if sid is None:
            return None
        hits = self.layers_of(sid, kind)
        return hits[-1] if hits else None

    @property
    def plate_map(self) -> Any | None:
        return self.find("plate_map")

    def site_layers(self) -> list[Any]:
        return self.layers_of(self.session.id, "site") if self.session else []

    # -- selection and sites ---------------------------------------------------------------------
    def selected(self) -> list[tuple[str, str]]:
        """(plate, well) of the wells selected in the plate map (shown plate only), in table order."""
        pm, s = self.plate_map, self.session
        if pm is None or s is None:
            return []
        rows = sorted(i for i in pm.selected_data if i < len(s.wells) and pm.shown[i])
        return list(zip(s.wells["Metadata_Plate"].iloc[rows], s.wells["Metadata_Well"].iloc[rows]))

    def select(self, pairs: list[tuple[str, str]]) -> None:
        """Select wells in the plate map (switching to the first one's plate)."""
        s, pm = self.session, self.plate_map
        if s is None or pm is None or not pairs:
            return
        rows = set(int(i) for i in s.rows_of([p for p in pairs if p[0] == str(pairs[0][0])]))
        self._selecting = rows  # a plate switch on the way shows these wells, not the plate's first one
        try:
            s.set_plate(pairs[0][0])
        finally:
            self._selecting = None
        pm.selected_data = rows

    def _on_selection(self, *_: Any) -> None:
        if self._quiet_selection:
            return
        sel = self.selected()
        if sel:
            self.show_site(*sel[0])

    def show_site(self, plate: str, well: str, site: int | None = None) -> bool:
        """Read a site in a worker and show it in the site layers (updated in place).

        Returns False (nothing to show) for a profile table or a well without sites.
        """
        s = self.session
        if s is None or s.index is None:
            return False
        sites = s.sites_of(plate, well)
        if sites.empty:
            return False
        if site is not None and "Metadata_Site" in sites.columns and (sites["Metadata_Site"] == site).any():
            row = sites[sites["Metadata_Site"] == site].iloc[0]
        else:
            row = sites.iloc[0]
        ref = SiteRef(str(plate), str(well), int(row.get("Metadata_Site", 1)))
        sid = s.id
        self._reader.submit(lambda: L.planes_and_limits(row), lambda got: self._show_planes(sid, ref, *got))
        return True

    def _show_planes(self, session_id: int, ref: SiteRef, planes: list[np.ndarray],
                     limits: list[tuple[float, float]] | None = None) -> None:
        s = self.session
        if s is None or s.id != session_id:
            return  # the session changed while the site was read
        for i, (layer, plane) in enumerate(zip(self.site_layers(), planes)):
            auto = layer.metadata.get("auto_limits")
            keep_user = auto is not None and tuple(np.round(layer.contrast_limits, 6)) != tuple(np.round(auto, 6))
            layer.data = plane
            if not keep_user:  # the analyst did not touch the contrast: follow the new site
                layer.contrast_limits = limits[i] if limits is not None else L.robust_limits(plane)
                layer.metadata["auto_limits"] = tuple(layer.contrast_limits)
            layer.metadata["title"] = ref.label()
        s.set_current(ref)
        self.site_shown.emit(ref)

    @property
    def reading(self) -> bool:
        return self._reader.busy

    # -- reacting to the session -----------------------------------------------------------------
    def _on_plate(self, plate: str) -> None:
        pm, s = self.plate_map, self.session
        if pm is None or s is None:
            return
        if self._selecting is None:
            pm.selected_data = set()
        pm.shown = s.plate_mask()
        wells = s.plate_wells()
        if len(wells) and self._selecting is None:  # (select() shows its own well next)
            self.show_site(plate, str(wells["Metadata_Well"].iloc[0]))

    def _on_wells(self, columns: tuple) -> None:
        pm, s = self.plate_map, self.session
        if pm is None or s is None:
            return
        cols = list(columns)
        gone = [c for c in columns if c not in s.wells.columns]
        extra_gone = [ROLE_CODE_COLUMN] if ROLE_COLUMN in gone else []
        ours = display_table(s, [c for c in cols if c in s.wells.columns])
        set_features(pm, merge_into_features(pm.features, ours, drop=gone + extra_gone))
        if any(str(c).startswith("GAN_") for c in columns):
            pm.border_color = L.border_colours(s)
        if s.colouring.column in columns or s.colouring.column in gone:
            if s.colouring.column in gone:
                from dataclasses import replace

                s.set_colouring(replace(s.colouring, column=None))
            else:
                self._on_colouring()

    def _on_channels(self) -> None:
        s = self.session
        if s is None:
            return
        for layer, spec in zip(self.site_layers(), s.channels):
            layer.name = f"{L.SITE_PREFIX} {spec.name}"
            layer.colormap = spec.colormap
            layer.metadata["channel"] = spec.name

    def _on_colouring(self) -> None:
        pm, s = self.plate_map, self.session
        if pm is None or s is None:
            return
        rgba, legend = L.well_colours(s.wells, s.colouring.column, s.colouring.colormap)
        pm.face_color = rgba
        pm.metadata["legend"] = legend
        self.update_tint()

    def _on_current(self, ref: SiteRef | None) -> None:
        overlay = text_overlay(self.viewer)
        if ref is None:
            overlay.visible = False
            return
        overlay.text = ref.label()
        overlay.visible = True
        self.update_tint()

    def update_tint(self) -> Any | None:
        """The semi-transparent layer giving the shown site its well's colour (only when asked)."""
        s = self.session
        existing = self.find("overlay")
        col = s.colouring.column if s else None
        if s is None or not s.colouring.tint_site or not col or s.current is None or not s.site_shape[0]:
            if existing is not None:
                remove_layers(self.viewer, [existing])
            return None
        rgba, _ = L.well_colours(s.wells, col, s.colouring.colormap)
        row = s.rows_of([(s.current.plate, s.current.well)])
        colour = rgba[row[0]] if row.size else np.array(L.MISSING)
        # One pixel stretched over the site (no full-size upload per click).
        data = np.asarray(colour, np.float32).reshape(1, 1, 4)
        h, w = s.site_shape
        if existing is None:
            existing = self.viewer.add_image(data, name=L.OVERLAY_NAME, rgb=True, opacity=0.3,
                                             blending="translucent", scale=(h, w),
                                             translate=(h / 2 - 0.5, w / 2 - 0.5),
                                             metadata={L.KIND_KEY: "overlay", "session_id": s.id})
            self.plate_map_on_top()
        else:
            existing.data = data
        existing.metadata["value"] = s.value(s.current.plate, s.current.well, col)
        existing.metadata["colour"] = tuple(float(c) for c in colour)
        return existing

    def plate_map_on_top(self) -> None:
        """The plate map last in the layer list and active: it is what the analyst clicks."""
        pm = self.plate_map
        if pm is None:
            return
        layers = self.viewer.layers
        i = layers.index(pm)
        if i != len(layers) - 1:
            layers.move(i, len(layers))
        layers.selection.active = pm

    # -- staged layer creation for others (fakes) ------------------------------------------------
    def add_layers_staged(self, makers: list[Callable[[], None]]) -> None:
        """Create layers one per event-loop turn (each a separate short stall); the plate map stays on top."""
        self._steps.extend(lambda m=m: self._not_activated_call(m) for m in makers)
        self._steps.append(self.plate_map_on_top)
        self._run_steps()

    def _not_activated_call(self, maker: Callable[[], None]) -> None:
        with _not_activated(self.viewer):  # the plate map is made active after them (plate_map_on_top)
            maker()

    @property
    def building(self) -> bool:
        return bool(self._steps)


def hold_activation(viewer: Any) -> Callable[[], None]:
    """Layers inserted from now on do not become the active layer (napari's default on insert) until
    the returned function is called.

    Activating each new site layer made napari switch its layer-controls panel to that layer's new
    widget and repaint it: about half of every layer step of a plate (0.125 s -> 0.057 s per image
    layer on 2 cores); the plate map is made active once, when the plate is built. napari's flag is
    private: where it is missing nothing changes.
    """
    layers = viewer.layers
    had = getattr(layers, "_activate_on_insert", None)
    if had is None:
        return lambda: None
    layers._activate_on_insert = False

    def restore() -> None:
        layers._activate_on_insert = had

    return restore


@contextlib.contextmanager
def _not_activated(viewer: Any):
    """:func:`hold_activation` for the layers made inside the block."""
    restore = hold_activation(viewer)
    try:
        yield
    finally:
        restore()


def remove_layers(viewer: Any, layers: list[Any]) -> None:
    """Remove layers from the viewer in one batch, without napari's full garbage collection.

    napari 0.9 runs ``gc.collect()`` on every layer removal (a workaround for a Windows OpenGL
    driver race): with napari, Qt and pandas loaded that is a full collection of a large heap,
    0.2-0.3 s of GUI-thread CPU on a 2-core machine, a stall per removed layer. Elsewhere than
    Windows, while the plugin removes its layers, napari's canvas module sees a ``gc`` whose
    ``collect`` collects the youngest generation only; Python's own collections free the rest
    when they are due. (Freezing the heap instead made napari's collection cheap but reset
    Python's count of long-lived objects, so a full collection followed a moment later.)
    """
    layers = [ly for ly in layers if ly in viewer.layers]
    if not layers:
        return
    with _young_collections_in_napari():
        with viewer.layers.batched_update():
            for layer in layers:
                viewer.layers.remove(layer)


class _YoungGC:
    """The ``gc`` module, but ``collect()`` collects generation 0 only."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def collect(self, generation: int = 2) -> int:
        return self._real.collect(0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@contextlib.contextmanager
def _young_collections_in_napari():
    import sys

    canvas = sys.modules.get("napari._vispy.canvas")
    real = getattr(canvas, "gc", None)
    if sys.platform == "win32" or real is None or not callable(getattr(real, "collect", None)) \
            or isinstance(real, _YoungGC):
        yield  # napari's workaround runs unchanged
        return
    canvas.gc = _YoungGC(real)
    try:
        yield
    finally:
        canvas.gc = real


def set_features(layer: Any, table: pd.DataFrame) -> None:
    """Give a layer a new features table (same rows, the old columns merged in: see merge_into_features).

    napari's public setter re-validates every column and computes a default per column (about a
    millisecond per column: half a second for 512 GAN features on a busy 2-core machine). When
    the rows are the same, the table is swapped in directly and the same events are emitted; the
    public setter is the fallback when napari's internals differ.
    """
    table = table.reset_index(drop=True)
    ft = getattr(layer, "_feature_table", None)
    if ft is None or not hasattr(ft, "_values") or not hasattr(ft, "_defaults") or len(ft._values) != len(table):
        layer.features = table
        return
    ft._values = table
    ft._defaults = table.iloc[-1:].reset_index(drop=True) if len(table) else table.head(0)
    layer.events.properties()
    layer.events.features()


def text_overlay(viewer: Any) -> Any:
    """The canvas text overlay (``viewer.canvas.overlays.text`` since napari 0.9)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    return overlays.text if overlays is not None and hasattr(overlays, "text") else viewer.text_overlay


def _after_warmup(gen: Any):
    """The opening generator, then (still in the worker) wait for the warm-up of napari's first layers."""
    result = yield from gen
    _warmup.wait()
    return result


def _as_gen(fn: Callable[[], Any]):
    """A function as a Progress generator without reports (so it runs in a GeneratorWorker)."""
    return fn()
    yield  # pragma: no cover - makes this a generator


def _show_user_warning(w: tuple) -> None:
    """A core warning from a worker (e.g. sites left out) as one warning notification."""
    message, category = w[0], w[1]
    if isinstance(category, type) and issubclass(category, UserWarning) and \
            not issubclass(category, (DeprecationWarning, FutureWarning)):
        from napari.utils.notifications import show_warning

        show_warning(str(message))


def point_under(layer: Any, position: Any) -> int | None:
    """Index of the shown square point under a world position (None when between wells)."""
    pos = np.asarray(layer.world_to_data(position), float)[-2:]
    data = np.asarray(layer.data, float)[:, -2:]
    half = np.asarray(layer.size, float).reshape(-1)
    half = np.broadcast_to(half, (len(data),)) / 2
    inside = (np.abs(data - pos) <= half[:, None]).all(axis=1) & np.asarray(layer.shown, bool)
    hits = np.flatnonzero(inside)
    if not hits.size:
        return None
    return int(hits[np.argmin(np.abs(data[hits] - pos).sum(axis=1))])


def _click_select(layer: Any, event: Any):
    """Select a well by clicking it in pan/zoom mode (a drag still pans); shift-click adds/removes."""
    if layer.mode != "pan_zoom" or getattr(event, "button", 1) != 1:
        return
    start = np.asarray(event.position, float)
    yield
    moved = False
    while event.type == "mouse_move":
        if np.abs(np.asarray(event.position, float) - start).max() > float(np.max(layer.size)) * 0.3:
            moved = True
        yield
    if moved:
        return
    hit = point_under(layer, event.position)
    shift = "Shift" in {str(getattr(m, "name", m)) for m in event.modifiers}
    if hit is None:
        if not shift:
            layer.selected_data = set()
        return
    if shift:
        sel = set(layer.selected_data)
        sel ^= {int(hit)}
        layer.selected_data = sel
    else:
        layer.selected_data = {int(hit)}
