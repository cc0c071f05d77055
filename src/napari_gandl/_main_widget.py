"""One tabbed GAN-DL dock (Plate, Train, Embed, Analyse): the four steps in the space of one.

On a laptop screen (1366x768) four docks stacked beside the canvas leave each a sliver; this dock
holds the same four widgets as tabs, each scrolling on its own. The separate docks stay in the
Plugins menu for large screens.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from ._analysis_widget import AnalysisWidget
from ._embed_widget import EmbedWidget
from ._plate_widget import PlateWidget
from ._train_widget import TrainWidget
from ._ui import DOCK_WIDTH, MIN_DOCK_HEIGHT


class GandlWidget(QWidget):
    """Tabbed dock: ``plate``, ``train``, ``embed``, ``analysis`` attributes are the four docks."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.plate = PlateWidget(napari_viewer)
        self.train = TrainWidget(napari_viewer)
        self.embed = EmbedWidget(napari_viewer)
        self.analysis = AnalysisWidget(napari_viewer)
        self.tabs = QTabWidget()
        for widget, title, tip in ((self.plate, "Plate", "Plate browser: wells, sites, controls, colours"),
                                   (self.train, "Train", "Train the GAN on the open plate"),
                                   (self.embed, "Embed", "Discriminator features per well"),
                                   (self.analysis, "Analyse", "On-perturbation axis, Z', dose-response")):
            i = self.tabs.addTab(widget, title)
            self.tabs.setTabToolTip(i, tip)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.tabs)
        self.setMinimumWidth(DOCK_WIDTH)
        self.setMinimumHeight(MIN_DOCK_HEIGHT + 30)
