"""Projection & activity dock: controls -> On score on the plate map, tint, E2 pick, dose-response, other plugins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import dock, open_plate, wait_reads, wait_worker
from napari_gandl._hub import hub_of
from napari_gandl._session import Colouring

pytestmark = pytest.mark.napari


def embedded_viewer(make_napari_viewer, root: Path, qtbot, *, show: bool = False):
    """Viewer with the tiny plate open and well features merged in (features follow health)."""
    viewer = make_napari_viewer(show=show)
    session = open_plate(viewer, root, qtbot)
    rng = np.random.default_rng(0)
    w = session.wells
    health = np.where(w["Metadata_Condition"] == "Mock", 1.0,
                      np.where(w["Metadata_Treatment"].fillna("") != "",
                               (np.log10(w["Metadata_Concentration"].astype(float).clip(1e-3)) + 1) / 3, 0.0))
    feats = pd.DataFrame(rng.normal(0, 0.05, (len(w), 8)), columns=[f"GAN_{i:03d}" for i in range(8)])
    feats["GAN_000"] += health
    feats["GAN_001"] -= health
    session.merge_wells(pd.concat([w[["Metadata_Plate", "Metadata_Well"]], feats], axis=1))
    return viewer, hub_of(viewer).plate_map, session


def test_fit_colours_plate_map_and_tint_on_request(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    viewer, layer, session = embedded_viewer(make_napari_viewer, tiny_rxrx, qtbot)
    grey = layer.face_color.copy()
    w = dock(viewer, "Projection and activity")
    # opening the dock colours nothing and tints nothing
    np.testing.assert_allclose(layer.face_color, grey)
    assert not any(ly.metadata.get("gandl_kind") == "overlay" for ly in viewer.layers)
    assert w.column.value == "Metadata_Role"
    assert (w.positive.value, w.negative.value) == ("positive", "negative")
    assert w.prefix.value == "GAN_"
    wait_worker(w.fit(), qtbot)
    assert w.scores is not None and len(w.scores) == 16  # every embedded well of both plates
    on = session.plate_wells().set_index("Metadata_Well")["OnScore"]
    # Mock (C+) wells score above Active (C-) wells; treated wells rise with dose
    assert on[["B02", "B03"]].min() > on[["C02", "C03"]].max()
    assert on["B04"] < on["B05"] < on["C04"] < on["C05"]
    # the core scales On so that the control means sit at +1 (C+) and -1 (C-)
    allw = session.wells
    assert allw.loc[allw.Metadata_Role == "positive", "OnScore"].mean() == pytest.approx(1.0, abs=1e-6)
    assert allw.loc[allw.Metadata_Role == "negative", "OnScore"].mean() == pytest.approx(-1.0, abs=1e-6)
    assert "OffScore" in layer.features
    assert w.z_prime is not None and np.isfinite(w.z_prime) and "Z' out of fold" in w.z_label.text()
    # Fit asked for the On score: the plate map is coloured by it (low and high wells differ)
    assert session.colouring.column == "OnScore"
    colours = layer.face_color
    assert not np.allclose(colours, grey)
    order = np.argsort(layer.features["OnScore"].to_numpy())
    assert not np.allclose(colours[order[0]], colours[order[-1]])
    # the tint comes only when asked, and follows the shown well
    session.set_colouring(Colouring("OnScore", "viridis", tint_site=True))
    hub = hub_of(viewer)
    hub.show_site("EXP-1_Plate1", "B02")
    wait_reads(viewer, qtbot)
    ov = hub.find("overlay")
    assert ov is not None and ov.metadata["value"] == pytest.approx(on["B02"], rel=1e-6)
    b02 = int(session.rows_of([("EXP-1_Plate1", "B02")])[0])
    np.testing.assert_allclose(ov.metadata["colour"], layer.face_color[b02], atol=1e-6)
    hub.show_site("EXP-1_Plate1", "C02")
    wait_reads(viewer, qtbot)
    assert ov.metadata["value"] == pytest.approx(on["C02"], rel=1e-6)
    session.set_colouring(Colouring("OnScore", "viridis", tint_site=False))
    assert hub.find("overlay") is None
    # refit with Condition values: same axis direction, plate re-coloured on refit
    w.column.value = "Metadata_Condition"
    w.positive.value, w.negative.value = "Mock", "Active SARS-CoV-2"
    session.set_colouring(Colouring(None))
    wait_worker(w.fit(), qtbot)
    assert w.scores is not None and session.colouring.column == "OnScore"
    assert not np.allclose(layer.face_color, grey)


def test_colour_by_text_and_numbers(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    viewer, layer, session = embedded_viewer(make_napari_viewer, tiny_rxrx, qtbot)
    w = dock(viewer, "Plate browser")
    w.colour_by.setCurrentText("Metadata_Condition")  # text: categorical colours + a legend
    mock = (layer.features["Metadata_Condition"] == "Mock").to_numpy()
    colours = layer.face_color
    assert np.allclose(colours[mock], colours[mock][0]) and not np.allclose(colours[mock][0], colours[~mock][0])
    assert "Mock" in w.legend.text() and "Active SARS-CoV-2" in w.legend.text()
    w.colour_by.setCurrentText("GAN_000")  # numbers: a colormap with its range
    assert "GAN_000" in w.legend.text() and "(left) to" in w.legend.text()
    assert layer.face_color[:, :3].std() > 0.05
    w.colour_by.setCurrentText("(none)")
    np.testing.assert_allclose(layer.face_color[:, :3], 0.5, atol=0.01)


def test_scatter_pick_selects_well_and_dose_response(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    viewer, layer, session = embedded_viewer(make_napari_viewer, tiny_rxrx, qtbot)
    w = dock(viewer, "Projection and activity")
    wait_worker(w.fit(), qtbot)
    wait_worker(w.dr_worker, qtbot)
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
    wait_reads(viewer, qtbot)
    assert session.plate == "EXP-1_Plate2"
    assert hub_of(viewer).selected() == [("EXP-1_Plate2", "C04")]
    assert viewer.layers["site DNA"].metadata["title"].startswith("EXP-1_Plate2 · C04")
    assert "C04" in w.pick_label.text()
    # dose-response of cmpA (4 doses x 2 plates), the Hill fit from the core in a worker
    assert w.compound.choices == ("cmpA",)
    worker = w.plot_dose_response()
    pts = w.dr_ax.collections[0].get_offsets()
    assert len(pts) == 8
    wait_worker(worker, qtbot)
    assert ("EC50" in w.dr_label.text() and len(w.dr_ax.lines) >= 1) or "no Hill fit" in w.dr_label.text()


def test_fit_messages(make_napari_viewer, tiny_rxrx, qtbot, errors) -> None:
    """No features, or the same value for both groups: one message each, the dock usable again."""
    viewer = make_napari_viewer()
    open_plate(viewer, tiny_rxrx, qtbot)
    w = dock(viewer, "Projection and activity")
    wait_worker(w.fit(), qtbot)
    assert len(errors) == 1 and "GAN_" in errors[0] and "Embed" in errors[0]
    assert w.fit_btn.isEnabled() and "failed" in w.z_label.text()
    viewer2, _, _ = embedded_viewer(make_napari_viewer, tiny_rxrx, qtbot)
    w2 = dock(viewer2, "Projection and activity")
    w2.negative.value = "positive"
    wait_worker(w2.fit(), qtbot)
    assert len(errors) == 2 and "positive" in errors[-1] and "pick two values" in errors[-1]


def test_bad_train_option_is_a_message(make_napari_viewer, errors) -> None:
    pytest.importorskip("gandl_core.gan.train")
    viewer = make_napari_viewer()
    t = dock(viewer, "Train GAN")
    t._advanced["resolution"].value = 12
    assert t.start() is None
    assert len(errors) == 1 and "resolution" in errors[0] and "12" in errors[0]
    assert t.start_btn.isEnabled()


def test_wells_without_score_stay_grey(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    viewer, layer, session = embedded_viewer(make_napari_viewer, tiny_rxrx, qtbot)
    # only plate 1 embedded: plate 2's wells have no features and no score
    gan = [c for c in session.wells.columns if c.startswith("GAN_")]
    wells = session.wells.copy()
    wells.loc[wells.Metadata_Plate == "EXP-1_Plate2", gan] = np.nan
    session.merge_wells(wells)
    w = dock(viewer, "Projection and activity")
    wait_worker(w.fit(), qtbot)
    assert session.wells.groupby("Metadata_Plate")["OnScore"].count().to_dict() == {"EXP-1_Plate1": 8,
                                                                                    "EXP-1_Plate2": 0}
    plate2 = session.plate_mask("EXP-1_Plate2")
    np.testing.assert_allclose(layer.face_color[plate2], [[0.3, 0.3, 0.3, 1.0]] * 8)
    assert layer.face_color[~plate2, :3].std() > 0.05


def test_features_merge_keeps_other_plugins_columns(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    """A column another plugin put in layer.features survives a Fit, a mark and a plate switch."""
    viewer, layer, session = embedded_viewer(make_napari_viewer, tiny_rxrx, qtbot)
    theirs = pd.Categorical(np.arange(16) % 3)
    layer.features["MANUAL_CLUSTER_ID"] = theirs
    feats = layer.features.copy()
    feats["PCA_0"] = np.linspace(0, 1, 16)
    layer.features = feats
    w = dock(viewer, "GAN-DL (all steps, tabbed)")
    wait_worker(w.analysis.fit(), qtbot)
    assert "OnScore" in layer.features
    layer.selected_data = {0}
    w.plate.mark("ignore")
    w.plate.plate_box.setCurrentText("EXP-1_Plate2")
    wait_reads(viewer, qtbot)
    assert layer.features["MANUAL_CLUSTER_ID"].tolist() == list(theirs)
    np.testing.assert_allclose(layer.features["PCA_0"], np.linspace(0, 1, 16))
    assert len(layer.features) == 16 and layer.features["Metadata_Role"].iloc[0] == "ignore"


def test_clusters_plotter_plots_gan_features_and_keeps_its_clusters(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    """napari-clusters-plotter plots GAN features of the plate map; its cluster column survives a Fit."""
    pytest.importorskip("napari_clusters_plotter")
    viewer, layer, session = embedded_viewer(make_napari_viewer, tiny_rxrx, qtbot)
    _, plotter = viewer.window.add_plugin_dock_widget("napari-clusters-plotter", "Plot & select features")
    viewer.layers.selection.active = layer
    qtbot.waitUntil(lambda: plotter.control_widget.x_axis_box.count() > 0, timeout=10000)
    axes = [plotter.control_widget.x_axis_box.itemText(i) for i in range(plotter.control_widget.x_axis_box.count())]
    assert "GAN_000" in axes and "Metadata_RoleCode" in axes
    assert "Metadata_Condition" not in axes  # text is a category (hue), never an axis
    plotter.x_axis, plotter.y_axis = "GAN_000", "GAN_001"
    plotter.hue_axis = "Metadata_RoleCode"
    qtbot.wait(50)
    xy = np.asarray(plotter.plotting_widget.active_artist.data)
    np.testing.assert_allclose(xy[:, 0], layer.features["GAN_000"].to_numpy(float))
    # the analyst draws a cluster in the plot: it lands in MANUAL_CLUSTER_ID
    clusters = (layer.features["GAN_000"].to_numpy() > 0.5).astype(int)
    plotter._on_finish_draw(clusters)
    assert layer.features["MANUAL_CLUSTER_ID"].astype(int).tolist() == clusters.tolist()
    w = dock(viewer, "Projection and activity")
    wait_worker(w.fit(), qtbot)
    assert "OnScore" in layer.features
    assert layer.features["MANUAL_CLUSTER_ID"].astype(int).tolist() == clusters.tolist()
    qtbot.waitUntil(lambda: plotter.control_widget.x_axis_box.findText("OnScore") >= 0, timeout=10000)


def test_a_column_name_from_the_plate_never_runs_as_code(make_napari_viewer, tiny_rxrx, tmp_path, qtbot,
                                                         monkeypatch, errors) -> None:
    """A control column whose name is a pandas-query payload: Fit builds masks, nothing is executed."""
    viewer, layer, session = embedded_viewer(make_napari_viewer, tiny_rxrx, qtbot)
    flag = tmp_path / "PWNED"
    evil = f"Metadata_X` == 1 or @pd.io.common.os.system('touch {flag}') == 0 or `Metadata_X"
    wells = session.wells[["Metadata_Plate", "Metadata_Well"]].copy()
    wells[evil] = np.where(session.wells["Metadata_Role"] == "positive", "a",
                           np.where(session.wells["Metadata_Role"] == "negative", "b", "c"))
    session.merge_wells(wells, columns=[evil])
    w = dock(viewer, "Projection and activity")
    w.column.value = evil
    w.positive.value, w.negative.value = "a", "b"
    wait_worker(w.fit(), qtbot)
    assert not flag.exists() and not errors, errors
    allw = session.wells
    assert allw.loc[allw.Metadata_Role == "positive", "OnScore"].mean() == pytest.approx(1.0, abs=1e-6)


def test_numeric_colouring_shows_a_colour_bar(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    viewer, layer, session = embedded_viewer(make_napari_viewer, tiny_rxrx, qtbot, show=True)
    w = dock(viewer, "Plate browser")
    w.colour_by.setCurrentText("GAN_001")
    assert w.colourbar.isVisibleTo(w) and w.colourbar.pixmap().width() == 260
    w.colour_by.setCurrentText("Metadata_Role")
    assert not w.colourbar.isVisibleTo(w) and "positive" in w.legend.text()


def test_montage_along_the_on_axis(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    """When the core has gandl_core.analysis.explain: a button opens real sites along On as one layer."""
    pytest.importorskip("gandl_core.analysis.explain")
    viewer, layer, session = embedded_viewer(make_napari_viewer, tiny_rxrx, qtbot)
    w = dock(viewer, "Projection and activity")
    assert w.explain_btn is not None and not w.explain_btn.isEnabled()
    wait_worker(w.fit(), qtbot)
    assert w.explain_btn.isEnabled()
    wait_worker(w.open_montage(n=4, per_quantile=2), qtbot)
    hub = hub_of(viewer)
    qtbot.waitUntil(lambda: hub.find("montage") is not None and not hub.building, timeout=10000)
    m = hub.find("montage")
    assert m.rgb and m.data.shape == (2 * 32 + 2, 4 * 32 + 6, 3)
    table = m.metadata["table"]
    on = table.groupby("column")["OnScore"].mean().to_numpy()
    assert (np.diff(on) > 0).all()  # columns go from the C- end to the C+ end
    assert hub.plate_map is viewer.layers[-1]
