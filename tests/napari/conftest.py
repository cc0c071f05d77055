"""Tiny plates for the napari tests, built in tmp folders (seconds, no synth needed)."""

from __future__ import annotations

from pathlib import Path

import os

import numpy as np
import pandas as pd
import pytest

# tests/conftest.py's pytest_configure runs before pytest-xvfb's, so it sets the 'offscreen'
# platform (no OpenGL) even though Xvfb then provides a DISPLAY. Undo that here (collection time,
# before any QApplication exists) so viewers and screenshots get a real GL context.
def _use_display() -> None:
    if os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        del os.environ["QT_QPA_PLATFORM"]


_use_display()


@pytest.fixture(scope="session", autouse=True)
def _xvfb_display_not_offscreen() -> None:
    """When this conftest is loaded before pytest_configure (pytest tests/napari), undo it here.

    Autouse session fixtures run before pytest-qt creates the QApplication.
    """
    _use_display()

STAINS = 5
SIZE = 32
# (well, condition, treatment, concentration): 2 positive (Mock), 2 negative (Active), 4 treated.
WELLS = [
    ("B02", "Mock", "", 0.0), ("B03", "Mock", "", 0.0),
    ("C02", "Active SARS-CoV-2", "", 0.0), ("C03", "Active SARS-CoV-2", "", 0.0),
    ("B04", "Active SARS-CoV-2", "cmpA", 0.1), ("B05", "Active SARS-CoV-2", "cmpA", 1.0),
    ("C04", "Active SARS-CoV-2", "cmpA", 10.0), ("C05", "Active SARS-CoV-2", "cmpA", 100.0),
]


def write_rxrx(root: Path, *, plates: int = 2, sites: int = 2, size: int = SIZE, seed: int = 0) -> Path:
    """An RxRx-layout folder: Mock wells have bright round nuclei, Active wells dim speckle."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    yy, xx = np.mgrid[:size, :size]
    for p in range(1, plates + 1):
        folder = root / "images" / "EXP-1" / f"Plate{p}"
        folder.mkdir(parents=True, exist_ok=True)
        for well, cond, treat, conc in WELLS:
            healthy = 1.0 if cond == "Mock" else (np.log10(conc) + 1) / 3 if treat else 0.0
            for s in range(1, sites + 1):
                cy, cx = rng.uniform(8, size - 8, 2)
                blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (3 + 3 * healthy) ** 2))
                for k in range(1, STAINS + 1):
                    img = 2000 + 30000 * blob * (0.3 + healthy) * (k / STAINS) + rng.normal(0, 500, (size, size))
                    Image.fromarray(np.clip(img, 0, 65535).astype(np.uint16)).save(folder / f"{well}_s{s}_w{k}.png")
                rows.append({"site_id": f"EXP-1_{p}_{well}_{s}", "well_id": f"EXP-1_{p}_{well}",
                             "cell_type": "HRCE", "experiment": "EXP-1", "plate": p, "well": well, "site": s,
                             "disease_condition": cond, "treatment": treat, "treatment_conc": conc})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


@pytest.fixture
def tiny_rxrx(tmp_path: Path) -> Path:
    return write_rxrx(tmp_path / "screen")



def wait_open(viewer, qtbot, timeout: int = 60000):
    """Wait until the plate opened into ``viewer`` is shown (indexing worker + staged layers done)."""
    from napari_gandl._hub import hub_of

    hub = hub_of(viewer)
    qtbot.waitUntil(lambda: hub.opening is None and hub.ready and not hub.building and hub.session is not None,
                    timeout=timeout)
    return hub.session


def open_plate(viewer, path, qtbot, timeout: int = 60000):
    """Open a plate source through the plugin's reader and wait until it is shown; returns the session."""
    from napari_gandl._hub import hub_of

    hub = hub_of(viewer)
    before = hub.session
    viewer.open(str(path), plugin="napari-gandl")
    qtbot.waitUntil(lambda: hub.session is not None and hub.session is not before, timeout=timeout)
    return wait_open(viewer, qtbot, timeout)


def open_failing(viewer, path, qtbot, timeout: int = 20000):
    """Open a source the plugin should refuse; wait until the opening worker has finished; returns the hub."""
    from napari_gandl._hub import hub_of

    viewer.open(str(path), plugin="napari-gandl")
    hub = hub_of(viewer)
    qtbot.waitUntil(lambda: hub.opening is None, timeout=timeout)
    qtbot.wait(50)
    return hub


def wait_reads(viewer, qtbot, timeout: int = 10000) -> None:
    """Wait until no site read is running (a well click reads its site in a worker)."""
    from napari_gandl._hub import hub_of

    hub = hub_of(viewer)
    qtbot.waitUntil(lambda: not hub.reading, timeout=timeout)


def wait_worker(worker, qtbot, timeout: int = 60000) -> None:
    """Wait until a worker (fit, embed, dose-response...) has finished and its handlers ran."""
    if worker is None:
        return
    qtbot.waitUntil(lambda: worker.done, timeout=timeout)


def dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget("napari-gandl", name)
    return widget


@pytest.fixture
def errors(monkeypatch):
    """Every error notification shown during a test (napari's show_error, patched), as text."""
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda msg: shown.append(str(msg)))
    return shown
