"""Small Qt pieces the docks share: a scrolling dock body, a fold-away section, session wiring.

Every dock puts its fields in a :class:`QScrollArea`, so its minimum height is a few rows, never
the sum of its fields: four docks fit a 768-px laptop screen (fields scroll instead of being
squeezed into slivers). :class:`DockBase` follows the viewer's current plate session
(:mod:`._hub`) and drops its connections when the dock is closed.
"""

from __future__ import annotations

from typing import Any, Callable

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea, QSizePolicy, QToolButton,
                            QVBoxLayout, QWidget)

MIN_DOCK_HEIGHT = 120  # px a dock may shrink to (its content scrolls)
DOCK_WIDTH = 340


class Fold(QWidget):
    """A titled section that folds away (folded by default): advanced options, channel settings."""

    def __init__(self, title: str, content: QWidget, *, expanded: bool = False) -> None:
        super().__init__()
        self.button = QToolButton()
        self.button.setText(title)
        self.button.setCheckable(True)
        self.button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.button.setStyleSheet("QToolButton { border: none; font-weight: bold; }")
        self.content = content
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 2, 0, 2)
        lay.addWidget(self.button)
        lay.addWidget(content)
        self.button.toggled.connect(self.set_expanded)
        self.set_expanded(expanded)

    @property
    def expanded(self) -> bool:
        return self.button.isChecked()

    def set_expanded(self, on: bool) -> None:
        self.button.blockSignals(True)
        self.button.setChecked(bool(on))
        self.button.blockSignals(False)
        self.button.setArrowType(Qt.DownArrow if on else Qt.RightArrow)
        self.content.setVisible(bool(on))


def button_row(*buttons: QWidget) -> QWidget:
    row = QWidget()
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    for b in buttons:
        if isinstance(b, QPushButton):
            b.setMinimumHeight(26)
            b.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        lay.addWidget(b)
    return row


def status_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextSelectableByMouse)
    label.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Minimum)
    return label


class DockBase(QWidget):
    """A dock: scrolling body, the viewer's hub, the current session (``self.session``).

    Subclasses put widgets into ``self.body`` (a QVBoxLayout) and override :meth:`on_session`
    (called with the new session or None). :meth:`link` connects a psygnal signal for the life of
    the dock; :meth:`link_session` for the life of the current session.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        from ._hub import hub_of

        self.viewer = napari_viewer
        self.hub = hub_of(napari_viewer)
        self._links: list[tuple[Any, Callable]] = []
        self._session_links: list[tuple[Any, Callable]] = []
        inner = QWidget()
        self.body = QVBoxLayout(inner)
        self.body.setContentsMargins(6, 6, 6, 6)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        self.scroll = scroll
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setMinimumHeight(MIN_DOCK_HEIGHT)
        self.setMinimumWidth(DOCK_WIDTH)
        links, session_links = self._links, self._session_links
        self.destroyed.connect(lambda *_: _disconnect_all(links + session_links))
        self.link(self.hub.session_changed, self._session_changed)

    @property
    def session(self) -> Any:
        return self.hub.session

    def link(self, signal: Any, slot: Callable) -> None:
        signal.connect(slot)
        self._links.append((signal, slot))

    def link_session(self, signal: Any, slot: Callable) -> None:
        signal.connect(slot)
        self._session_links.append((signal, slot))

    def _session_changed(self, session: Any) -> None:
        _disconnect_all(self._session_links)
        self._session_links.clear()
        self.on_session(session)

    def on_session(self, session: Any) -> None:  # pragma: no cover - overridden
        pass

    def minimumSizeHint(self):  # noqa: N802 - Qt API
        hint = super().minimumSizeHint()
        hint.setHeight(min(hint.height(), MIN_DOCK_HEIGHT))
        return hint


def _disconnect_all(links: list[tuple[Any, Callable]]) -> None:
    for signal, slot in links:
        try:
            signal.disconnect(slot)
        except Exception:  # noqa: BLE001 - already gone
            pass
