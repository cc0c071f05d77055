"""Projection & activity dock: controls -> On score on the plate map, overlay, E2 pick, dose-response."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_gandl import _layers as L

pytestmark = pytest.mark.napari


def embedded_viewer(make_napari_viewer, root: Path):
    """Viewer with the tiny plate open and well features merged in (features follow health)."""
    viewer = make_napari_viewer(show=False)
    viewer.open(str(root), plugin="napari-gandl")
    layer = L.find_plate_map(viewer)
    session = layer.metadata[L.SESSION_KEY]
    rng = np.random.default_rng(0)
    w = session.wells
    health = np.where(w["Metadata_Condition"] == "Mock", 1.0,
                      np.where(w["Metadata_Treatment"].fillna("") != "",
                               (np.log10(w["Metadata_Concentration"].astype(float).clip(1e-3)) + 1) / 3, 0.0))
    feats = pd.DataFrame(rng.normal(0, 0.05, (len(w), 8)), columns=[f"GAN_{i:03d}" for i in range(8)])
    feats["GAN_000"] += health
    feats["GAN_001"] -= health
    session.merge_wells(pd.concat([w[["Metadata_Plate", "Metadata_Well"]], feats], axis=1))
    L.refresh_features(layer)
    return viewer, layer, session


def test_fit_colours_plate_map_and_overlay(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    viewer, layer, session = embedded_viewer(make_napari_viewer, tiny_rxrx)
    _, w = viewer.window.add_plugin_dock_widget("napari-gandl", "Projection and activity")
    assert w.column.value == "Metadata_Role"
    assert (w.positive.value, w.negative.value) == ("positive", "negative")
    assert w.prefix.value == "GAN_"
    grey = layer.face_color.copy()
    scores = w.fit()
    assert scores is not None and len(scores) == 16  # every embedded well of both plates
    on = layer.features.set_index("Metadata_Well")["OnScore"]
    # Mock (C+) wells score above Active (C-) wells; treated wells rise with dose
    assert on[["B02", "B03"]].min() > on[["C02", "C03"]].max()
    assert on["B04"] < on["B05"] < on["C04"] < on["C05"]
    # the core scales On so that the control means sit at +1 (C+) and -1 (C-)
    allw = session.wells
    assert allw.loc[allw.Metadata_Role == "positive", "OnScore"].mean() == pytest.approx(1.0, abs=1e-6)
    assert allw.loc[allw.Metadata_Role == "negative", "OnScore"].mean() == pytest.approx(-1.0, abs=1e-6)
    assert "OffScore" in layer.features
    assert w.z_prime is not None and np.isfinite(w.z_prime) and "Z' out of fold" in w.z_label.text()
    colours = layer.face_color
    assert not np.allclose(colours, grey)
    order = np.argsort(layer.features["OnScore"].to_numpy())
    assert not np.allclose(colours[order[0]], colours[order[-1]])
    # overlay: the shown site takes its well's score
    L.show_well_site(viewer, "EXP-1_Plate1", "B02")
    ov = L.find_layer(viewer, "overlay")
    assert ov is not None and ov.data.shape == (32, 32)
    assert float(ov.data[0, 0]) == pytest.approx(on["B02"], rel=1e-6)
    L.show_well_site(viewer, "EXP-1_Plate1", "C02")
    assert float(ov.data[0, 0]) == pytest.approx(on["C02"], rel=1e-6)
    # colour by another column: the colours change
    w.colour_by.value = "GAN_003"
    assert not np.allclose(layer.face_color, colours)
    # refit with Condition values: same axis direction, plate re-coloured on refit
    w.column.value = "Metadata_Condition"
    w.positive.value, w.negative.value = "Mock", "Active SARS-CoV-2"
    before = layer.face_color.copy()
    assert w.fit() is not None
    assert w.colour_by.value == "OnScore"
    assert not np.allclose(layer.face_color, before)


def test_scatter_pick_selects_well_and_dose_response(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    viewer, layer, session = embedded_viewer(make_napari_viewer, tiny_rxrx)
    _, w = viewer.window.add_plugin_dock_widget("napari-gandl", "Projection and activity")
    w.fit()
    rows = w._scatter_rows
    i = int(np.flatnonzero((rows["Metadata_Plate"] == "EXP-1_Plate2") & (rows["Metadata_Well"] == "C04"))[0])
    # a real matplotlib pick event on that point
    x, y = w._scatter.get_offsets()[i]
    w.canvas.draw()
    px, py = w.ax.transData.transform((x, y))
    from matplotlib.backend_bases import MouseEvent

    picked = []
    cid = w.canvas.mpl_connect("pick_event", lambda e: picked.append(e.ind))
    w.fig.pick(MouseEvent("button_press_event", w.canvas, px, py, button=1))
    w.canvas.mpl_disconnect(cid)
    assert picked and i in picked[0], picked
    assert session.plate == "EXP-1_Plate2"
    sel = L.selected_wells(viewer)
    assert sel == [("EXP-1_Plate2", "C04")]
    assert viewer.layers["site DNA"].metadata["title"].startswith("EXP-1_Plate2")
    # dose-response of cmpA (4 doses) is drawn; the fit comes from the core when it exists
    assert w.compound.choices == ("cmpA",)
    w.plot_dose_response()
    pts = w.dr_ax.collections[0].get_offsets()
    assert len(pts) == 8  # 4 doses x 2 plates
    assert len(w.dr_ax.lines) >= 1 and "EC50" in w.dr_label.text() or "no Hill fit" in w.dr_label.text()


def test_fit_without_features_names_the_prefix(make_napari_viewer, tiny_rxrx, monkeypatch) -> None:
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    viewer.open(str(tiny_rxrx), plugin="napari-gandl")
    _, w = viewer.window.add_plugin_dock_widget("napari-gandl", "Projection and activity")
    assert w.fit() is None
    assert "GAN_" in shown[0] and "Embed" in shown[0]


def test_same_control_values_and_bad_train_option_are_messages(make_napari_viewer, tiny_rxrx, monkeypatch) -> None:
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer, layer, session = embedded_viewer(make_napari_viewer, tiny_rxrx)
    _, w = viewer.window.add_plugin_dock_widget("napari-gandl", "Projection and activity")
    w.negative.value = "positive"
    assert w.fit() is None
    assert "positive" in shown[-1] and "pick two values" in shown[-1]
    pytest.importorskip("gandl_core.gan.train")
    _, t = viewer.window.add_plugin_dock_widget("napari-gandl", "Train GAN")
    t._advanced["resolution"].value = 12
    assert t.start() is None
    assert "resolution" in shown[-1] and "12" in shown[-1]
    assert t.start_btn.enabled


def test_wells_without_score_stay_grey(make_napari_viewer, tiny_rxrx) -> None:
    viewer, layer, session = embedded_viewer(make_napari_viewer, tiny_rxrx)
    # only plate 1 embedded: plate 2's wells have no features and no score
    gan = [c for c in session.wells.columns if c.startswith("GAN_")]
    session.wells.loc[session.wells.Metadata_Plate == "EXP-1_Plate2", gan] = np.nan
    _, w = viewer.window.add_plugin_dock_widget("napari-gandl", "Projection and activity")
    assert w.fit() is not None
    assert session.wells.groupby("Metadata_Plate")["OnScore"].count().to_dict() == {"EXP-1_Plate1": 8, "EXP-1_Plate2": 0}
    L.show_plate(layer, "EXP-1_Plate2")
    np.testing.assert_allclose(layer.face_color, [[0.35, 0.35, 0.35, 1.0]] * 8)
    L.show_plate(layer, "EXP-1_Plate1")
    assert np.all(layer.face_color[:, 3] == 1) and layer.face_color[:, :3].std() > 0.05
