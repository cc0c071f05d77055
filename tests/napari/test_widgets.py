"""Docks in a real viewer (opened through the plugin menu): plates, marks, training, embedding, errors, sizes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from conftest import dock, open_plate, wait_reads, wait_worker, write_rxrx
from napari_gandl import _layers as L
from napari_gandl._hub import hub_of

pytestmark = pytest.mark.napari
DOCKS = ["GAN-DL (all steps, tabbed)", "Plate browser", "Train GAN", "Embed wells", "Projection and activity"]


@pytest.mark.parametrize("name", DOCKS)
def test_every_widget_opens_from_the_menu(make_napari_viewer, name) -> None:
    viewer = make_napari_viewer()
    widget = dock(viewer, name)
    assert widget is not None and widget.viewer.layers is not None


def test_docks_fit_a_laptop_screen(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    """Every dock open at once (advanced options unfolded too): the window still fits 1000 px of height."""
    viewer = make_napari_viewer(show=True)
    open_plate(viewer, tiny_rxrx, qtbot)
    widgets = [dock(viewer, n) for n in DOCKS]
    for w in (widgets[0].train, widgets[2]):
        w.adv_fold.set_expanded(True)
    qtbot.wait(50)
    heights = {n: w.minimumSizeHint().height() for n, w in zip(DOCKS, widgets)}
    assert max(heights.values()) <= 200, heights
    window = viewer.window._qt_window
    assert window.minimumSizeHint().height() <= 1000, window.minimumSizeHint()
    assert window.minimumSize().height() <= 1000
    # the buttons keep a usable height and number fields show their decimals
    train = widgets[2]
    assert train.start_btn.minimumHeight() >= 24
    assert train.preset.value == "cpu-small" and train._advanced["lr_g"].native.text().rstrip("0").endswith("0005")


def test_plate_widget_selection_shows_well(make_napari_viewer, tiny_rxrx: Path, qtbot) -> None:
    viewer = make_napari_viewer()
    session = open_plate(viewer, tiny_rxrx, qtbot)
    w = dock(viewer, "Plate browser")
    assert [w.plate_box.itemText(i) for i in range(w.plate_box.count())] == ["EXP-1_Plate1", "EXP-1_Plate2"]
    hub = hub_of(viewer)
    pm = hub.plate_map
    dna = viewer.layers["site DNA"]
    layer_count = len(viewer.layers)
    b02, c03 = session.rows_of([("EXP-1_Plate1", "B02"), ("EXP-1_Plate1", "C03")])
    pm.selected_data = {int(c03), int(b02)}
    wait_reads(viewer, qtbot)
    assert w.table.rowCount() == 2
    headers = [w.table.horizontalHeaderItem(j).text() for j in range(w.table.columnCount())]
    cond = [w.table.item(i, headers.index("Condition")).text() for i in range(2)]
    assert sorted(cond) == ["Active SARS-CoV-2", "Mock"]
    # first selected (table order) is B02: its site 1 replaced the DNA layer data in place
    assert viewer.layers["site DNA"] is dna and len(viewer.layers) == layer_count
    from gandl_core.plates import read_site

    idx = session.index
    row = idx[(idx.Metadata_Well == "B02") & (idx.Metadata_Site == 1) & (idx.Metadata_Plate == "EXP-1_Plate1")].iloc[0]
    np.testing.assert_array_equal(dna.data, read_site(row)[0])
    np.testing.assert_allclose(dna.contrast_limits, L.robust_limits(dna.data))  # (computed in the reader worker)
    assert w.showing.text() == "EXP-1_Plate1 · B02 · site 1"
    w.site_box.setValue(2)
    wait_reads(viewer, qtbot)
    row2 = idx[(idx.Metadata_Well == "B02") & (idx.Metadata_Site == 2) & (idx.Metadata_Plate == "EXP-1_Plate1")].iloc[0]
    np.testing.assert_array_equal(dna.data, read_site(row2)[0])
    # switching plate changes which points are shown: features keep every well
    w.plate_box.setCurrentText("EXP-1_Plate2")
    wait_reads(viewer, qtbot)
    assert session.plate == "EXP-1_Plate2" and len(pm.features) == 16
    assert set(pm.features.loc[pm.shown, "Metadata_Plate"]) == {"EXP-1_Plate2"}
    assert len(pm.selected_data) == 0 and session.current.plate == "EXP-1_Plate2"


def test_click_selects_a_well_in_pan_zoom_mode(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    """The default mode pans; a click without a drag still selects the well under it (shift adds)."""
    from napari_gandl._hub import _click_select

    viewer = make_napari_viewer()
    session = open_plate(viewer, tiny_rxrx, qtbot)
    pm = hub_of(viewer).plate_map
    assert pm.mode == "pan_zoom" and _click_select in pm.mouse_drag_callbacks

    def click(row: int, modifiers=(), drag=(0.0, 0.0)) -> None:
        pos = tuple(pm.data[row])
        ev = SimpleNamespace(type="mouse_press", position=pos, modifiers=list(modifiers), button=1)
        gen = _click_select(pm, ev)
        next(gen)
        if any(drag):
            ev.type, ev.position = "mouse_move", (pos[0] + drag[0], pos[1] + drag[1])
            next(gen)
        ev.type = "mouse_release"
        with pytest.raises(StopIteration):
            next(gen)

    c04, b05 = (int(i) for i in session.rows_of([("EXP-1_Plate1", "C04"), ("EXP-1_Plate1", "B05")]))
    click(c04)
    assert pm.selected_data == {c04}
    click(b05, modifiers=["Shift"])
    assert pm.selected_data == {c04, b05}
    click(b05, drag=(30.0, 30.0))  # a drag pans: the selection stays
    assert pm.selected_data == {c04, b05}
    wait_reads(viewer, qtbot)


def test_second_plate_replaces_the_first(make_napari_viewer, tiny_rxrx, tmp_path, qtbot) -> None:
    """Opening another plate removes the first one's layers, keeps the analyst's own, and every dock follows."""
    viewer = make_napari_viewer()
    first = open_plate(viewer, tiny_rxrx, qtbot)
    mine = viewer.add_points(np.zeros((1, 2)), name="my annotations")
    gandl = dock(viewer, "GAN-DL (all steps, tabbed)")
    first.checkpoint = str(tmp_path / "old.pt")
    gandl.train.on_session(first)
    assert gandl.train.resume_btn.isEnabled()
    closed = []
    first.closed.connect(lambda: closed.append(True))
    other = write_rxrx(tmp_path / "other", plates=1, size=24, seed=3)
    second = open_plate(viewer, other, qtbot)
    assert closed == [True] and second is not first
    kinds = [(ly.metadata.get(L.KIND_KEY), ly.metadata.get("session_id")) for ly in viewer.layers if ly is not mine]
    assert {sid for _, sid in kinds} == {second.id}  # nothing of the first plate is left
    assert [ly.name for ly in viewer.layers if ly.name.startswith("site ")] == \
        ["site DNA", "site ER", "site Actin", "site RNA", "site Golgi"]  # no "[1]" duplicates
    assert "my annotations" in viewer.layers
    assert viewer.layers["site DNA"].data.shape == (24, 24)
    assert [gandl.plate.plate_box.itemText(i) for i in range(gandl.plate.plate_box.count())] == ["EXP-1_Plate1"]
    assert not gandl.train.resume_btn.isEnabled()  # Resume no longer points at the old plate's run
    assert gandl.analysis.z_label.text() == "Z' = -"


@pytest.mark.skipif(__import__("sys").platform == "win32", reason="napari's own collection runs unchanged on Windows")
def test_layer_removal_skips_napari_full_collection(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    """napari collects all garbage on every layer removal (0.2-0.3 s on a busy 2-core machine): the plugin's
    removals run as one batch whose collection covers the youngest generation only."""
    import gc

    viewer = make_napari_viewer()
    open_plate(viewer, tiny_rxrx, qtbot)
    hub = hub_of(viewer)
    viewer.add_points(np.zeros((1, 2)), name="my annotations")
    generations: list[int] = []

    def seen(phase: str, info: dict) -> None:
        if phase == "start":
            generations.append(info["generation"])

    gc.callbacks.append(seen)
    was_enabled = gc.isenabled()
    gc.disable()  # only explicit collections (napari's) are recorded
    try:
        hub.close()
    finally:
        gc.callbacks.remove(seen)
        if was_enabled:
            gc.enable()
    assert [ly.name for ly in viewer.layers] == ["my annotations"]  # the plate's layers are gone, ours stays
    assert generations == [0]  # one collection for the batch, of the youngest generation
    import napari._vispy.canvas as canvas

    assert canvas.gc is gc  # napari's module has the real gc back


def test_points_layers_are_created_hidden_and_shown_on_the_next_turn(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    """A new Points layer's first paint builds its shader programs (~0.1 s): creating it hidden moves
    that cost out of the turn that creates the layer; the next staged step shows it."""
    viewer = make_napari_viewer()
    at_insert: dict[str, bool] = {}
    viewer.layers.events.inserted.connect(lambda e: at_insert.setdefault(e.value.name, e.value.visible))
    open_plate(viewer, tiny_rxrx, qtbot)
    hub = hub_of(viewer)
    grid = next(ly for ly in viewer.layers if ly.metadata.get(L.KIND_KEY) == "plate_grid")
    assert at_insert[grid.name] is False and at_insert[hub.plate_map.name] is False
    assert at_insert["site DNA"] is True  # images are drawn at once: their paint is cheap
    assert grid.visible and hub.plate_map.visible and hub._hidden == []


def test_plate_layers_do_not_take_the_selection_one_by_one(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    """Each activated new layer switched and repainted napari's layer controls: the plate's layers are
    inserted without activation and the plate map is made active once, at the end."""
    viewer = make_napari_viewer()
    mine = viewer.add_points(np.zeros((1, 2)), name="my annotations")
    active_at_insert: list[bool] = []
    viewer.layers.events.inserted.connect(
        lambda e: active_at_insert.append(viewer.layers.selection.active is e.value))
    open_plate(viewer, tiny_rxrx, qtbot)
    hub = hub_of(viewer)
    assert len(active_at_insert) == 7 and not any(active_at_insert)  # 5 sites, grid, plate map
    assert viewer.layers.selection.active is hub.plate_map
    assert viewer.layers._activate_on_insert is True  # napari's default is back
    other = viewer.add_points(np.zeros((1, 2)), name="later")
    assert viewer.layers.selection.active is other and mine in viewer.layers


def test_a_late_step_waits_one_turn_so_the_loop_runs_between(make_napari_viewer, qtbot) -> None:
    """A step timer that fires long after it was armed (a slow repaint ran first) lets the event loop
    turn once more before the step, so the step and the repaint are not one stall."""
    import time

    from napari_gandl import _hub

    viewer = make_napari_viewer()
    hub = hub_of(viewer)
    ran: list[float] = []
    hub._steps.append(lambda: ran.append(time.perf_counter()))
    hub._stepping = True
    hub._armed_at = time.perf_counter() - 10 * _hub.STEP_LATE_S  # as after a long paint
    hub._step()
    assert ran == [] and hub._yielded  # not run: re-armed
    qtbot.waitUntil(lambda: bool(ran), timeout=2000)
    assert not hub._yielded and not hub.building


def test_first_plate_freezes_the_heap_until_an_older_layer_goes(make_napari_viewer, tiny_rxrx, qtbot) -> None:
    """Full collections stop scanning the long-lived heap once a plate opens; removing a layer that
    existed before (whose reference cycles the frozen collector would keep) unfreezes it."""
    import gc

    from napari_gandl import _warmup

    gc.unfreeze()
    _warmup._state["frozen"] = None  # as in a fresh process
    try:
        viewer = make_napari_viewer()
        mine = viewer.add_points(np.zeros((1, 2)), name="my annotations")
        assert gc.get_freeze_count() == 0
        open_plate(viewer, tiny_rxrx, qtbot)
        assert gc.get_freeze_count() > 1000
        assert _warmup.freeze_heap(viewer) is False  # once per process
        viewer.layers.remove(hub_of(viewer).plate_map)  # a layer made after the freeze: stays frozen
        assert gc.get_freeze_count() > 1000
        viewer.layers.remove(mine)
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def test_sample_command_returns_before_its_worker_starts(make_napari_viewer, qtbot, tmp_path, monkeypatch) -> None:
    """napari builds the sample's placeholder layer first; the opening worker starts on a later turn
    (started together they competed for the GIL: one long stall)."""
    monkeypatch.setenv("NAPARI_GANDL_CACHE", str(tmp_path))
    from conftest import wait_open

    from napari_gandl import _sample_data

    monkeypatch.setattr(_sample_data, "SAMPLE_KWARGS", {**_sample_data.SAMPLE_KWARGS, "image_size": 48,
                                                        "cell_types": ("HRCE",), "compounds": 3, "replicates": 1})
    viewer = make_napari_viewer()
    hub = hub_of(viewer)
    layers = viewer.open_sample("napari-gandl", "synthetic_screen")
    assert [ly.metadata.get(L.KIND_KEY) for ly in layers] == ["placeholder"]
    assert hub.opening is None  # not started yet: the placeholder was built alone
    assert viewer.layers.selection.active is not layers[0]  # and not activated (no controls repaint)
    qtbot.waitUntil(lambda: hub.opening is not None or hub.session is not None, timeout=5000)
    session = wait_open(viewer, qtbot)
    assert session is not None and not [ly for ly in viewer.layers if ly.metadata.get(L.KIND_KEY) == "placeholder"]
    assert viewer.layers._activate_on_insert is True


def write_unlabelled_plate(root: Path, wells=("B02", "B03", "B04", "C02", "C03", "C04")) -> Path:
    """A LoadData plate without any role/condition column (like real BBBC022 plates)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = []
    for w in wells:
        for ch in ("DNA", "Actin"):
            Image.fromarray(rng.integers(100, 4000, (16, 16)).astype(np.uint16)).save(root / f"{w}_{ch}.png")
        rows.append({"Metadata_Plate": "P1", "Metadata_Well": w, "FileName_DNA": f"{w}_DNA.png",
                     "PathName_DNA": ".", "FileName_Actin": f"{w}_Actin.png", "PathName_Actin": "."})
    pd.DataFrame(rows).to_csv(root / "load_data.csv", index=False)
    return root / "load_data.csv"


def test_mark_controls_by_selection_then_fit(make_napari_viewer, tmp_path, qtbot, errors) -> None:
    viewer = make_napari_viewer()
    session = open_plate(viewer, write_unlabelled_plate(tmp_path / "plate"), qtbot)
    assert "Metadata_Role" not in session.wells
    gandl = dock(viewer, "GAN-DL (all steps, tabbed)")
    assert gandl.analysis.column.choices == ()  # nothing to fit on yet
    # features where row B is "healthy": GAN_000 high
    rng = np.random.default_rng(0)
    feats = session.wells[["Metadata_Plate", "Metadata_Well"]].copy()
    healthy = feats["Metadata_Well"].str.startswith("B").to_numpy(float)
    for i in range(4):
        feats[f"GAN_{i:03d}"] = rng.normal(0, 0.05, len(feats)) + (healthy if i == 0 else 0)
    session.merge_wells(feats)
    pm = hub_of(viewer).plate_map
    pm.selected_data = set(int(i) for i in session.rows_of([("P1", "B02"), ("P1", "B03")]))
    assert gandl.plate.mark("C+") == 2
    pm.selected_data = set(int(i) for i in session.rows_of([("P1", "C02"), ("P1", "C03")]))
    assert gandl.plate.mark("C-") == 2
    pm.selected_data = {int(session.rows_of([("P1", "C04")])[0])}
    assert gandl.plate.mark("ignore") == 1
    assert session.wells["Metadata_Role"].tolist() == ["positive", "positive", "", "negative", "negative", "ignore"]
    assert pm.features["Metadata_RoleCode"].tolist() == [1, 1, 0, 2, 2, 4]
    assert set(session.index["Metadata_Role"]) == {"positive", "negative", "", "ignore"}
    ana = gandl.analysis
    assert ana.column.value == "Metadata_Role" and (ana.positive.value, ana.negative.value) == ("positive", "negative")
    wait_worker(ana.fit(), qtbot)
    assert not errors, errors
    on = session.wells.set_index("Metadata_Well")["OnScore"]
    assert on[["B02", "B03"]].mean() == pytest.approx(1.0, abs=1e-6)
    assert on[["C02", "C03"]].mean() == pytest.approx(-1.0, abs=1e-6)
    assert np.isnan(on["C04"]) and np.isfinite(on["B04"])  # ignored: not scored; unmarked: scored
    # the marks are saved with the table
    gandl.embed.save_path.value = str(tmp_path / "wells.parquet")
    path = gandl.embed.save()
    from gandl_core.tables import read_table

    saved = read_table(path)
    assert saved.set_index("Metadata_Well")["Metadata_Role"].to_dict()["B02"] == "positive"


def test_rename_channels_and_colours(make_napari_viewer, tmp_path, qtbot) -> None:
    viewer = make_napari_viewer()
    session = open_plate(viewer, write_unlabelled_plate(tmp_path / "plate"), qtbot)
    w = dock(viewer, "Plate browser")
    from napari_gandl._session import ChannelSpec

    assert w.rename_channels([ChannelSpec("Hoechst", "cyan"), ChannelSpec("Phalloidin", "magenta")])
    assert [ly.name for ly in hub_of(viewer).site_layers()] == ["site Hoechst", "site Phalloidin"]
    assert viewer.layers["site Hoechst"].colormap.name == "cyan"
    assert list(session.index.filter(like="Path_").columns) == ["Path_Hoechst", "Path_Phalloidin"]


def test_fakes_grid_tiles_in_order() -> None:
    from napari_gandl._train_widget import fakes_grid

    f = np.arange(5, dtype=np.float32)[:, None, None, None] * np.ones((5, 2, 3, 4), np.float32)
    g = fakes_grid(f)
    assert g.shape == (2, 6, 12)  # 3 columns x 2 rows
    assert g[0, 0, 0] == 0 and g[0, 0, 4] == 1 and g[0, 3, 0] == 3 and g[1, 3, 4] == 4
    assert g[0, 5, 11] == 0  # the empty cell takes the minimum


def test_advanced_fields_carry_the_cores_comments() -> None:
    pytest.importorskip("gandl_core.gan.train")
    from gandl_core.gan.train import TrainConfig
    from napari_gandl._train_widget import TrainWidget, field_choices, field_docs

    docs = field_docs(TrainConfig)
    assert "power of two" in docs["resolution"]
    assert field_choices("ada", docs["augment"]) == ["ada", "fixed", "none"]
    assert field_choices("auto", docs["device"]) == []  # free text ("...")
    w = TrainWidget._widget_for("kimg", 1.5, docs["kimg"])
    assert w.label == "kimg (kimg)" and "thousands" in w.tooltip


# ---------------------------------------------------------------------------------------------
# embedding with a real (random, tiny) discriminator checkpoint
# ---------------------------------------------------------------------------------------------

def tiny_checkpoint(path: Path, index: pd.DataFrame) -> Path:
    import torch

    from gandl_core.checkpoint import save_checkpoint
    from gandl_core.gan.stylegan2 import Discriminator
    from gandl_core.plates import IntensityNormalizer, channel_names

    torch.manual_seed(0)
    tiny = dict(channel_base=256, channel_max=16, feature_dim=16)
    chans = channel_names(index)
    D = Discriminator(16, len(chans), **tiny)
    cfg = {"resolution": 16, "channels": len(chans), "channel_base": 256, "channel_max": 16,
           "mbstd_group": 4, "feature_dim": 16}
    save_checkpoint(path, {"format": "gandl-checkpoint", "version": 1, "kind": "stylegan2", "config": cfg,
                           "channel_names": chans, "normalizer": IntensityNormalizer().fit(index).to_dict(),
                           "D": {k: v.contiguous() for k, v in D.state_dict().items()}, "kimg": 0.0, "step": 0})
    return path


def test_embed_two_selected_wells_fills_features(make_napari_viewer, tiny_rxrx, tmp_path, qtbot) -> None:
    viewer = make_napari_viewer()
    session = open_plate(viewer, tiny_rxrx, qtbot)
    pm = hub_of(viewer).plate_map
    pm.features["MANUAL_CLUSTER_ID"] = pd.Categorical(np.arange(16) % 3)  # another plugin's column
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt", session.index)
    w = dock(viewer, "Embed wells")
    w.checkpoint.value = str(ckpt)
    w.selected_only.value = True
    pm.selected_data = set(int(i) for i in session.rows_of([("EXP-1_Plate1", "B02"), ("EXP-1_Plate1", "C02")]))
    worker = w.start()
    wait_worker(worker, qtbot, 90000)
    assert len(w.sites) == 4  # 2 wells x 2 sites
    feats = pm.features
    assert "GAN_000" in feats.columns and "GAN_015" in feats.columns
    assert feats["MANUAL_CLUSTER_ID"].tolist() == (np.arange(16) % 3).tolist()  # merged, not replaced
    done = feats.dropna(subset=["GAN_000"])
    assert sorted(done["Metadata_Well"]) == ["B02", "C02"] and len(feats) == 16
    site_med = w.sites[w.sites.Metadata_Well == "C02"]["GAN_003"].median()
    assert done.set_index("Metadata_Well").loc["C02", "GAN_003"] == pytest.approx(site_med, rel=1e-5)
    # embedded wells are marked (white border), the rest are not
    border = pm.border_color
    assert np.allclose(border[feats["GAN_000"].notna().to_numpy()], L.EMBEDDED_BORDER)
    assert np.allclose(border[feats["GAN_000"].isna().to_numpy()], L.PLAIN_BORDER)
    w.save_path.value = tmp_path / "wells.parquet"
    path = w.save()
    from gandl_core.tables import read_table

    saved = read_table(path)
    assert len(saved) == 2 and saved.attrs["gandl"]["checkpoint"] == str(ckpt)


def test_embed_can_be_stopped(make_napari_viewer, tiny_rxrx, tmp_path, qtbot, monkeypatch) -> None:
    monkeypatch.setattr("napari_gandl._embed_widget.EmbedWidget.target", "fake_cores:slow_embed")
    viewer = make_napari_viewer()
    session = open_plate(viewer, tiny_rxrx, qtbot)
    w = dock(viewer, "Embed wells")
    w.checkpoint.value = str(tiny_checkpoint(tmp_path / "tiny.pt", session.index))
    from napari.utils import progress

    worker = w.start()
    qtbot.waitUntil(lambda: "left" in w.info.text(), timeout=60000)  # sites done and the time left
    assert w.stop_btn.isEnabled() and not w.run_btn.isEnabled()
    bars = [b for b in progress._all_instances if str(b.desc).startswith("Embedding wells")]
    assert bars and bars[0].total == 1000  # napari's activity dock shows it, with the time left
    qtbot.waitUntil(lambda: "left" in bars[0].desc and bars[0].n > 0, timeout=5000)
    w.stop()
    wait_worker(worker, qtbot, 10000)
    assert "Stopped" in w.info.text() and w.run_btn.isEnabled() and not w.stop_btn.isEnabled()
    assert not any(str(c).startswith("GAN_") for c in session.wells.columns)


def test_worker_error_is_one_notification_and_resets_the_dock(make_napari_viewer, tiny_rxrx, tmp_path, qtbot,
                                                              errors) -> None:
    """A corrupt checkpoint: exactly one message, no traceback toast, the dock usable again."""
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    open_plate(viewer, tiny_rxrx, qtbot)
    w = dock(viewer, "Embed wells")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    w.checkpoint.value = str(bad)
    before = len(notification_manager.records)
    worker = w.start()
    wait_worker(worker, qtbot, 60000)
    assert len(errors) == 1 and "bad.pt" in errors[0], errors
    assert len(notification_manager.records) == before  # napari's own relay added nothing
    assert w.run_btn.isEnabled() and not w.stop_btn.isEnabled()
    assert w.info.text().startswith("Embedding failed") and "Loading" not in w.info.text()
    # a user error found before starting is one message too
    w.checkpoint.value = "/nonexistent/ckpt.pt"
    assert w.start() is None
    assert len(errors) == 2 and "checkpoint" in errors[1] and "/nonexistent/ckpt.pt" in errors[1]


def test_embed_then_fit_on_the_real_core(make_napari_viewer, tiny_rxrx, tmp_path, qtbot) -> None:
    """Analyst path: open the plate and the docks first, embed every well, then Fit."""
    viewer = make_napari_viewer()
    session = open_plate(viewer, tiny_rxrx, qtbot)
    ana = dock(viewer, "Projection and activity")
    assert ana.prefix.choices == ()  # nothing embedded yet
    ana.column.value = "Metadata_Condition"
    ana.positive.value, ana.negative.value = "Mock", "Active SARS-CoV-2"
    pm = hub_of(viewer).plate_map
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt", session.index)
    w = dock(viewer, "Embed wells")
    w.checkpoint.value = str(ckpt)
    wait_worker(w.start(), qtbot, 90000)
    assert len(w.sites) == 32
    wait_worker(ana.fit(), qtbot)
    assert ana.scores is not None and len(ana.scores) == 16 and np.isfinite(ana.scores["OnScore"]).all()
    assert (ana.positive.value, ana.negative.value) == ("Mock", "Active SARS-CoV-2")  # kept by the refresh
    wells = session.wells
    mock = wells["Metadata_Condition"] == "Mock"
    act = wells["Metadata_Condition"] == "Active SARS-CoV-2"  # treated wells are Active too
    assert wells.loc[mock, "OnScore"].mean() == pytest.approx(1.0, abs=1e-6)
    assert wells.loc[act, "OnScore"].mean() == pytest.approx(-1.0, abs=1e-6)
    assert np.isfinite(ana.z_prime)
    # re-embedding invalidates the scores: they are dropped and the plate map goes back to grey
    wait_worker(w.start(), qtbot, 90000)
    assert "OnScore" not in pm.features.columns and session.colouring.column is None
    np.testing.assert_allclose(pm.face_color[:, :3], 0.5, atol=0.01)


def test_tiff_folder_opens_with_a_file_name_pattern(make_napari_viewer, tmp_path, qtbot, errors) -> None:
    """File names no built-in pattern knows: File > Open says so; the Plate browser opens it with a pattern."""
    import tifffile

    folder = tmp_path / "scan"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for well in ("B02", "B03"):
        for ch in (1, 2):
            tifffile.imwrite(folder / f"{well}-fld1-ch{ch}.tif", rng.integers(0, 999, (12, 14), dtype=np.uint16))
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin="napari-gandl")
    hub = hub_of(viewer)
    qtbot.waitUntil(lambda: hub.opening is None, timeout=20000)
    assert len(errors) == 1 and "pattern" in errors[0] and "CLI" not in errors[0] and hub.session is None
    w = dock(viewer, "Plate browser")
    w.folder.setText(str(folder))
    w.pattern.setText(r"(?P<well>[A-P]\d+)-fld(?P<site>\d+)-ch(?P<channel>\d+)\.tif")
    w.index_again()
    from conftest import wait_open

    session = wait_open(viewer, qtbot)
    assert sorted(session.wells["Metadata_Well"]) == ["B02", "B03"] and session.channel_names == ["w1", "w2"]
    assert session.pattern and len(errors) == 1


def test_worker_error_in_a_script_without_an_event_loop_does_not_abort(tmp_path) -> None:
    """A failing worker in a plain script (no napari.run()): one message, the process ends normally."""
    import os
    import subprocess
    import sys

    code = (
        "import time\n"
        "from qtpy.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "import napari.utils.notifications as n\n"
        "shown = []\n"
        "n.show_error = shown.append\n"
        "from napari_gandl._workers import start_function\n"
        "from gandl_core.errors import DataError\n"
        "def boom():\n"
        "    raise DataError('plate.csv: no rows')\n"
        "w = start_function(boom, on_return=print)\n"
        "t0 = time.time()\n"
        "while not w.done and time.time() - t0 < 30:\n"
        "    app.processEvents(); time.sleep(0.01)\n"
        "print('DONE', shown)\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "DONE ['plate.csv: no rows']" in res.stdout, res.stdout + res.stderr[-2000:]
