"""Plate, training and embedding docks in a real viewer (opened through the plugin menu entries)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gandl_core.progress import Progress
from napari_gandl import _layers as L

pytestmark = pytest.mark.napari


def dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget("napari-gandl", name)
    return widget


@pytest.mark.parametrize("name", ["Plate browser", "Train GAN", "Embed wells", "Projection and activity"])
def test_every_widget_opens_from_the_menu(make_napari_viewer, name) -> None:
    viewer = make_napari_viewer()
    widget = dock(viewer, name)
    assert widget is not None and widget.viewer.layers is not None and widget.isVisible() is not None


def test_plate_widget_selection_shows_well(make_napari_viewer, tiny_rxrx: Path, qtbot) -> None:
    viewer = make_napari_viewer()
    viewer.open(str(tiny_rxrx), plugin="napari-gandl")
    w = dock(viewer, "Plate browser")
    assert [w.plate_box.itemText(i) for i in range(w.plate_box.count())] == ["EXP-1_Plate1", "EXP-1_Plate2"]
    pm = L.find_plate_map(viewer)
    dna = viewer.layers["site DNA"]
    before = dna.data.copy()
    layer_count = len(viewer.layers)
    b02 = int(np.flatnonzero(pm.features["Metadata_Well"] == "B02")[0])
    c03 = int(np.flatnonzero(pm.features["Metadata_Well"] == "C03")[0])
    pm.selected_data = {c03, b02}
    assert w.table.rowCount() == 2
    headers = [w.table.horizontalHeaderItem(j).text() for j in range(w.table.columnCount())]
    cond = [w.table.item(i, headers.index("Condition")).text() for i in range(2)]
    assert sorted(cond) == ["Active SARS-CoV-2", "Mock"]
    # first selected (table order) is B02: its site 1 replaced the DNA layer data in place
    assert viewer.layers["site DNA"] is dna and len(viewer.layers) == layer_count
    from gandl_core.plates import read_site

    idx = pm.metadata[L.SESSION_KEY].index
    row = idx[(idx.Metadata_Well == "B02") & (idx.Metadata_Site == 1) & (idx.Metadata_Plate == "EXP-1_Plate1")].iloc[0]
    np.testing.assert_array_equal(dna.data, read_site(row)[0])
    assert not np.array_equal(dna.data, before) or row["Metadata_Well"] == "B02"
    w.site_box.setValue(2)
    row2 = idx[(idx.Metadata_Well == "B02") & (idx.Metadata_Site == 2) & (idx.Metadata_Plate == "EXP-1_Plate1")].iloc[0]
    np.testing.assert_array_equal(dna.data, read_site(row2)[0])
    # switching plate swaps the plate map's table in place
    w.plate_box.setCurrentText("EXP-1_Plate2")
    assert set(pm.features["Metadata_Plate"]) == {"EXP-1_Plate2"} and len(pm.data) == 8
    assert len(pm.selected_data) == 0


# ---------------------------------------------------------------------------------------------
# training: a fake core (same contract) for the widget mechanics; the real core when it exists
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FakeConfig:
    out_dir: str = "run"
    data: str = ""
    kimg: float = 0.2
    resolution: int = 16
    batch_size: int = 4
    loss: str = "stylegan2"
    seed: int = 0
    channels: int = 5

    @classmethod
    def from_preset(cls, name, **over):
        base = {"cpu-tiny": {}, "paper": {"kimg": 25000.0, "resolution": 256}}[name]
        return cls(**{**base, **over})


def fake_train(calls):
    def train(cfg, index=None, *, resume=False):
        calls.append((cfg, index, resume))
        ckpt = Path(cfg.out_dir) / "checkpoints" / "latest.pt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        step = 0
        try:
            while step < 4000:
                step += 1
                time.sleep(0.02)
                fakes = np.random.default_rng(step).normal(size=(4, 5, 16, 16)).astype(np.float32)
                art = {"fakes": fakes}
                if step % 3 == 0:
                    ckpt.write_text(f"step {step}")
                    art["checkpoint"] = ckpt
                yield Progress(done=step * 0.001, total=4.0, unit="kimg", stage="train",
                               metrics={"loss_G": 1.0 / step, "loss_D": 0.5}, artifacts=art)
        finally:
            ckpt.write_text(f"step {step}")  # the real core saves a checkpoint on close
        return ckpt
    return train


def test_train_widget_runs_stops_and_resumes_with_fake_core(make_napari_viewer, tiny_rxrx, tmp_path, qtbot,
                                                           monkeypatch) -> None:
    calls = []
    monkeypatch.setattr("napari_gandl._train_widget.train_api",
                        lambda: (FakeConfig, {"cpu-tiny": {}, "paper": {}}, fake_train(calls)))
    viewer = make_napari_viewer()
    viewer.open(str(tiny_rxrx), plugin="napari-gandl")
    w = dock(viewer, "Train GAN")
    assert w.preset.value == "cpu-tiny"
    assert set(w._advanced) == {"kimg", "resolution", "batch_size", "loss", "seed"}  # not out/data/resume
    assert w.adv.visible is False
    w.preset.value = "paper"
    assert w._advanced["resolution"].value == 256
    w.preset.value = "cpu-tiny"
    w._advanced["seed"].value = 7
    w.out.value = str(tmp_path / "run")
    worker = w.start()
    qtbot.waitUntil(lambda: w.progress_seen >= 5, timeout=10000)
    with qtbot.waitSignal(worker.finished, timeout=10000):
        w.stop()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5000)
    cfg, index, resumed = calls[0]
    assert not resumed
    assert cfg.seed == 7 and cfg.resolution == 16 and cfg.out_dir == str(tmp_path / "run")
    assert index is not None and len(index) == 32  # the open plate's index is trained on
    ckpt = tmp_path / "run" / "checkpoints" / "latest.pt"
    assert ckpt.is_file()
    steps = int(ckpt.read_text().split()[1])
    assert 5 <= steps < 4000  # stopped early, generator closed (finally ran)
    assert 0 < w.bar.value() < 1000
    assert len(w.history["loss_G"]) >= 5 and w.history["loss_G"][-1][1] < w.history["loss_G"][0][1]
    fakes = viewer.layers["fakes DNA"]
    assert fakes.data.shape == (32, 32)  # 4 fakes tiled 2x2
    assert [ly.name for ly in viewer.layers if ly.name.startswith("fakes")] == \
        ["fakes DNA", "fakes ER", "fakes Actin", "fakes RNA", "fakes Golgi"]
    assert w.resume_btn.enabled and w.start_btn.enabled and not w.stop_btn.enabled
    assert w.last_checkpoint == ckpt
    # Resume: the same run continues from the newest checkpoint
    worker = w.start(resume=True)
    qtbot.waitUntil(lambda: len(calls) == 2, timeout=5000)
    with qtbot.waitSignal(worker.finished, timeout=10000):
        w.stop()
    assert calls[1][2] is True and calls[1][0].seed == 7 and calls[1][0].out_dir == str(tmp_path / "run")


def test_fakes_grid_tiles_in_order() -> None:
    from napari_gandl._train_widget import fakes_grid

    f = np.arange(5, dtype=np.float32)[:, None, None, None] * np.ones((5, 2, 3, 4), np.float32)
    g = fakes_grid(f)
    assert g.shape == (2, 6, 12)  # 3 columns x 2 rows
    assert g[0, 0, 0] == 0 and g[0, 0, 4] == 1 and g[0, 3, 0] == 3 and g[1, 3, 4] == 4
    assert g[0, 5, 11] == 0  # the empty cell takes the minimum


# ---------------------------------------------------------------------------------------------
# embedding with a real (random, tiny) discriminator checkpoint
# ---------------------------------------------------------------------------------------------

def tiny_checkpoint(path: Path, index: pd.DataFrame) -> Path:
    import torch

    from gandl_core.checkpoint import save_checkpoint
    from gandl_core.plates import IntensityNormalizer, channel_names
    from gandl_core.gan.stylegan2 import Discriminator

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
    viewer.open(str(tiny_rxrx), plugin="napari-gandl")
    pm = L.find_plate_map(viewer)
    session = pm.metadata[L.SESSION_KEY]
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt", session.index)
    w = dock(viewer, "Embed wells")
    w.checkpoint.value = str(ckpt)
    w.selected_only.value = True
    rows = [int(np.flatnonzero(pm.features["Metadata_Well"] == x)[0]) for x in ("B02", "C02")]
    pm.selected_data = set(rows)
    worker = w.start()
    with qtbot.waitSignal(worker.finished, timeout=60000):
        pass
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5000)
    assert len(w.sites) == 4  # 2 wells x 2 sites
    feats = pm.features
    assert "GAN_000" in feats.columns and "GAN_015" in feats.columns
    done = feats.dropna(subset=["GAN_000"])
    assert sorted(done["Metadata_Well"]) == ["B02", "C02"] and len(feats) == 8
    site_med = w.sites[w.sites.Metadata_Well == "C02"]["GAN_003"].median()
    assert done.set_index("Metadata_Well").loc["C02", "GAN_003"] == pytest.approx(site_med, rel=1e-5)
    out = w.save_path.value = tmp_path / "wells.parquet"
    path = w.save()
    from gandl_core.tables import read_table

    saved = read_table(path)
    assert len(saved) == 2 and saved.attrs["gandl"]["checkpoint"] == str(ckpt)


def test_embed_without_checkpoint_names_the_field(make_napari_viewer, tiny_rxrx, monkeypatch) -> None:
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    viewer.open(str(tiny_rxrx), plugin="napari-gandl")
    w = dock(viewer, "Embed wells")
    w.checkpoint.value = "/nonexistent/ckpt.pt"
    assert w.start() is None
    assert "checkpoint" in shown[0] and "/nonexistent/ckpt.pt" in shown[0]


def test_real_training_on_the_open_plate_stops_with_a_checkpoint(make_napari_viewer, tiny_rxrx, tmp_path,
                                                                   qtbot) -> None:
    pytest.importorskip("gandl_core.gan.train")
    from gandl_core.checkpoint import load_checkpoint

    viewer = make_napari_viewer()
    viewer.open(str(tiny_rxrx), plugin="napari-gandl")
    w = dock(viewer, "Train GAN")
    assert w.preset.value == "cpu-tiny"
    w._advanced["kimg"].value = 5.0  # long enough that Stop, not the end, finishes it
    w._advanced["quality_kimg"].value = 0.0
    w.out.value = str(tmp_path / "run")
    worker = w.start()
    qtbot.waitUntil(lambda: w.progress_seen >= 2, timeout=60000)
    with qtbot.waitSignal(worker.finished, timeout=60000):
        w.stop()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10000)
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    assert latest.is_file() and w.last_checkpoint == latest
    state = load_checkpoint(latest)
    assert 0 < state["kimg"] < 5.0
    assert state["channel_names"] == ["DNA", "ER", "Actin", "RNA", "Golgi"]
    assert "loss_G" in w.history and np.isfinite([v for _, v in w.history["loss_G"]]).all()
    assert viewer.layers["fakes DNA"].data.ndim == 2
    assert w.resume_btn.enabled


def test_embed_then_fit_on_the_real_core(make_napari_viewer, tiny_rxrx, tmp_path, qtbot) -> None:
    """Analyst path: open the plate and the docks first, embed every well, then Fit."""
    viewer = make_napari_viewer()
    viewer.open(str(tiny_rxrx), plugin="napari-gandl")
    _, ana = viewer.window.add_plugin_dock_widget("napari-gandl", "Projection and activity")
    assert ana.prefix.choices == ()  # nothing embedded yet
    ana.column.value = "Metadata_Condition"
    ana.positive.value, ana.negative.value = "Mock", "Active SARS-CoV-2"
    pm = L.find_plate_map(viewer)
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt", pm.metadata[L.SESSION_KEY].index)
    w = dock(viewer, "Embed wells")
    w.checkpoint.value = str(ckpt)
    worker = w.start()
    with qtbot.waitSignal(worker.finished, timeout=90000):
        pass
    qtbot.waitUntil(lambda: w.sites is not None, timeout=5000)
    assert len(w.sites) == 32
    scores = ana.fit()
    assert scores is not None and len(scores) == 16 and np.isfinite(scores["OnScore"]).all()
    assert (ana.positive.value, ana.negative.value) == ("Mock", "Active SARS-CoV-2")  # kept by the refresh
    wells = pm.metadata[L.SESSION_KEY].wells
    mock = wells["Metadata_Condition"] == "Mock"
    act = wells["Metadata_Condition"] == "Active SARS-CoV-2"  # treated wells are Active too
    assert wells.loc[mock, "OnScore"].mean() == pytest.approx(1.0, abs=1e-6)
    assert wells.loc[act, "OnScore"].mean() == pytest.approx(-1.0, abs=1e-6)
    assert np.isfinite(ana.z_prime)
    # re-embedding invalidates the scores: they are dropped and the plate map goes back to grey
    worker = w.start()
    with qtbot.waitSignal(worker.finished, timeout=90000):
        pass
    qtbot.waitUntil(lambda: "OnScore" not in pm.features.columns, timeout=5000)
    np.testing.assert_allclose(pm.face_color[:, :3], 0.5, atol=0.01)
