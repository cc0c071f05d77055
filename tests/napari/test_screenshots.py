"""Screenshots of the viewer with each dock (tests/artifacts/, gitignored) are not blank; sample data opens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import dock, open_plate, wait_open, wait_worker
from napari_gandl._hub import hub_of
from napari_gandl._sample_data import SAMPLE_NAME

pytestmark = pytest.mark.napari

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def shoot(viewer, qtbot, widget, name: str) -> np.ndarray:
    qtbot.waitUntil(lambda: widget.isVisible(), timeout=5000)
    qtbot.wait(200)
    viewer.reset_view()  # the dock narrowed the canvas: fit the plate into view again
    qtbot.wait(100)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert canvas[..., :3].std() > 5, "the canvas rendered nothing (no OpenGL context?)"
    img = viewer.screenshot(canvas_only=False, flash=False)
    ARTIFACTS.mkdir(exist_ok=True)
    from PIL import Image

    Image.fromarray(img).save(ARTIFACTS / f"napari-{name}.png")
    return img


def test_sample_data_generates_and_opens(make_napari_viewer, tmp_path, monkeypatch, qtbot) -> None:
    pytest.importorskip("gandl_core.synth")
    monkeypatch.setenv("NAPARI_GANDL_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    viewer.open_sample("napari-gandl", "synthetic_screen")  # generated and indexed in a worker
    session = wait_open(viewer, qtbot, timeout=120000)
    assert (tmp_path / "cache" / SAMPLE_NAME / "metadata.csv").is_file()
    assert len(session.plates) == 2 and len(viewer.layers["site DNA"].data) == 96
    roles = set(session.wells["Metadata_Role"])
    assert {"positive", "negative", "treated"} <= roles
    # second call reuses the cache (no regeneration) and replaces the first session
    stamp = (tmp_path / "cache" / SAMPLE_NAME / "metadata.csv").stat().st_mtime_ns
    viewer.open_sample("napari-gandl", "synthetic_screen")
    hub = hub_of(viewer)
    qtbot.waitUntil(lambda: hub.session is not None and hub.session is not session, timeout=60000)
    wait_open(viewer, qtbot)
    assert (tmp_path / "cache" / SAMPLE_NAME / "metadata.csv").stat().st_mtime_ns == stamp
    assert sum(ly.name == "plate map" for ly in viewer.layers) == 1
    assert not any(ly.metadata.get("gandl_kind") == "placeholder" for ly in viewer.layers)


@pytest.mark.parametrize("name", ["GAN-DL (all steps, tabbed)", "Projection and activity"])
def test_screenshot_with_dock_is_not_blank(make_napari_viewer, tiny_rxrx, qtbot, name) -> None:
    viewer = make_napari_viewer(show=True)
    session = open_plate(viewer, tiny_rxrx, qtbot)
    widget = dock(viewer, name)
    if name == "Projection and activity":
        rng = np.random.default_rng(0)
        mock = (session.wells["Metadata_Condition"] == "Mock").to_numpy(float)
        feats = session.wells[["Metadata_Plate", "Metadata_Well"]].copy()
        for i in range(4):
            feats[f"GAN_{i:03d}"] = rng.normal(0, 0.1, len(feats)) + (mock if i == 0 else 0)
        session.merge_wells(feats)
        wait_worker(widget.fit(), qtbot)
        assert widget.scores is not None
    img = shoot(viewer, qtbot, widget, name.split()[0].lower().strip("-"))
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300
    assert img[..., :3].std() > 10  # not a blank window
    # the dock region (right part) has content, too
    assert img[:, -img.shape[1] // 4:, :3].std() > 5
