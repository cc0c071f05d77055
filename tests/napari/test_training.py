"""The Train dock: training runs in a process of its own; progress, fakes, Stop, Resume and errors come back.

A stand-in core (tests/napari/fake_cores.py, same contract as gandl_core.gan.train) checks the
mechanics in about a second per run; the real core (cpu-tiny) checks Stop's checkpoint and Resume.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import dock, open_plate, wait_worker

pytestmark = pytest.mark.napari
FAKE = "fake_cores:train"


@pytest.fixture
def fake_core(monkeypatch):
    from fake_cores import PRESETS, FakeConfig

    monkeypatch.setattr("napari_gandl._train_widget.train_api", lambda: (FakeConfig, PRESETS, FAKE))
    monkeypatch.setattr("napari_gandl._train_widget.TrainWidget.FAKES_S", 0.1)


def calls_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "calls.jsonl").read_text().splitlines()]


def ckpt_step(run: Path) -> int:
    return int((run / "checkpoints" / "latest.pt").read_text().split()[1])


def test_training_runs_in_its_own_process_and_stops_and_resumes(make_napari_viewer, tiny_rxrx, tmp_path, qtbot,
                                                                fake_core) -> None:
    viewer = make_napari_viewer()
    session = open_plate(viewer, tiny_rxrx, qtbot)
    w = dock(viewer, "Train GAN")
    assert w.preset.value == "cpu-tiny"
    assert set(w._advanced) == {"kimg", "resolution", "batch_size", "lr_g", "loss", "seed"}  # not out/data/resume
    assert not w.show_adv
    w.preset.value = "paper"
    assert w._advanced["resolution"].value == 256
    w.preset.value = "cpu-tiny"
    w._advanced["seed"].value = 7
    run = tmp_path / "run"
    w.out.value = str(run)
    worker = w.start()
    assert not w.start_btn.isEnabled() and w.stop_btn.isEnabled()
    qtbot.waitUntil(lambda: w.progress_seen >= 5 and "fakes" in viewer.layers, timeout=60000)
    w.stop()
    wait_worker(worker, qtbot, 20000)
    call = calls_of(run)[0]
    assert call["pid"] != os.getpid() and call["pid"] == worker.pid  # the core ran in the training process
    assert not call["resume"] and call["seed"] == 7 and call["resolution"] == 16 and call["out_dir"] == str(run)
    assert call["index_rows"] == 32  # the open plate's index reached the process
    steps = ckpt_step(run)
    assert 5 <= steps < 4000  # stopped early: the generator was closed in the process (its finally ran)
    qtbot.waitUntil(lambda: not worker.process.is_alive(), timeout=20000)  # and the process ends
    assert len(w.history["loss_G"]) >= 5 and w.history["loss_G"][-1][1] < w.history["loss_G"][0][1]
    fakes = viewer.layers["fakes"]
    # 4 fakes tiled 2x2 into one uint8 false-colour mosaic, made in the training process
    assert fakes.rgb and fakes.data.shape == (32, 32, 3) and fakes.data.dtype == np.uint8
    assert [ly.name for ly in viewer.layers if ly.name.startswith("fakes")] == ["fakes"]
    assert fakes.metadata["session_id"] == session.id
    assert w.resume_btn.isEnabled() and w.start_btn.isEnabled() and not w.stop_btn.isEnabled()
    ckpt = run / "checkpoints" / "latest.pt"
    assert w.last_checkpoint == ckpt and session.checkpoint == str(ckpt)
    # Resume: the same run continues from its checkpoint, in a new process
    worker2 = w.start(resume=True)
    qtbot.waitUntil(lambda: w.progress_seen >= 3, timeout=60000)
    w.stop()
    wait_worker(worker2, qtbot, 20000)
    call2 = calls_of(run)[1]
    assert call2["resume"] is True and call2["seed"] == 7 and call2["pid"] not in (os.getpid(), call["pid"])
    assert ckpt_step(run) > steps  # it went on from where it stopped
    assert w.history["loss_G"][0][0] < steps * 0.001 < w.history["loss_G"][-1][0]  # one curve across both runs


@pytest.mark.parametrize("seed, words", [(13, "option 'seed' = 13 is unlucky: pick another seed."),
                                         (14, "Unexpected error (RuntimeError: a bug in the core)"),
                                         (15, "the training process ended unexpectedly (exit code 3)")])
def test_an_error_in_the_training_process_is_one_notification(make_napari_viewer, tmp_path, qtbot, errors,
                                                              fake_core, seed, words) -> None:
    """A user error (its own words), a bug and a process that dies: one notification each, the dock reset."""
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    w = dock(viewer, "Train GAN")
    w._advanced["seed"].value = seed
    w.out.value = str(tmp_path / "run")
    before = len(notification_manager.records)
    worker = w.start()
    wait_worker(worker, qtbot, 60000)
    assert len(errors) == 1 and words in errors[0], errors
    assert errors[0].startswith("Training: ") and "Traceback" not in errors[0]
    assert len(notification_manager.records) == before  # nothing relayed twice
    assert w.start_btn.isEnabled() and not w.stop_btn.isEnabled()
    assert w.info.text().startswith("Training failed")
    qtbot.waitUntil(lambda: not worker.process.is_alive(), timeout=20000)


def test_closing_napari_stops_a_run_with_a_checkpoint(tmp_path, qtbot) -> None:
    """What the exit hook does: the run stops after its step and leaves its checkpoint; no process is left."""
    from fake_cores import FakeConfig
    from napari_gandl._process import ProcessWorker

    run = tmp_path / "run"
    seen = []
    proc = ProcessWorker(FAKE, (FakeConfig(out_dir=str(run)),), payload={"index": None},
                        on_yield=seen.append).start()
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=60000)
    proc.shutdown(wait_s=20)
    assert not proc.process.is_alive() and proc.process.exitcode == 0
    assert ckpt_step(run) >= 3


def test_fakes_mosaic_uses_the_channels_colours() -> None:
    from napari_gandl._child import fakes_rgb

    fakes = -np.ones((4, 2, 8, 8), np.float32)
    fakes[:, 1] = 1.0  # channel 2 fully on, channel 1 off
    rgb = fakes_rgb(fakes, [(0, 0, 1), (1, 0, 1)], [(1, 1, 1)])
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert (rgb.reshape(-1, 3) == [255, 0, 255]).all()  # magenta, channel 2's colour
    other = fakes_rgb(fakes[:, :1], [(0, 0, 1), (1, 0, 1)], [(0, 1, 0)])  # 1 channel: the fallback colours
    assert (other == 0).all()
    assert (fakes_rgb(-fakes[:, :1], [], [(0, 1, 0)]).reshape(-1, 3) == [0, 255, 0]).all()


def test_real_training_stops_at_a_step_boundary_and_resumes(make_napari_viewer, tiny_rxrx, tmp_path, qtbot) -> None:
    pytest.importorskip("gandl_core.gan.train")
    from gandl_core.checkpoint import load_checkpoint

    viewer = make_napari_viewer()
    open_plate(viewer, tiny_rxrx, qtbot)
    w = dock(viewer, "Train GAN")
    assert w.preset.value == "cpu-small"  # the real core's default: an analyst's first real run
    w.preset.value = "cpu-tiny"
    w._advanced["kimg"].value = 5.0  # long enough that Stop, not the end, finishes it
    w._advanced["quality_kimg"].value = 0.0
    run = tmp_path / "run"
    w.out.value = str(run)
    worker = w.start()
    qtbot.waitUntil(lambda: w.progress_seen >= 2, timeout=120000)
    w.stop()
    wait_worker(worker, qtbot, 60000)
    latest = run / "checkpoints" / "latest.pt"
    assert latest.is_file() and w.last_checkpoint == latest
    state = load_checkpoint(latest)
    batch = state["config"]["batch"]
    assert state["step"] >= 1 and 0 < state["kimg"] < 5.0
    assert state["kimg"] == pytest.approx(state["step"] * batch / 1000)  # a whole number of steps
    assert state["channel_names"] == ["DNA", "ER", "Actin", "RNA", "Golgi"]
    assert "loss_G" in w.history and np.isfinite([v for _, v in w.history["loss_G"]]).all()
    assert w.resume_btn.isEnabled() and not w.info.text().startswith("Training failed")
    # Resume continues the run from that step (the core refuses a checkpoint it cannot continue)
    worker = w.start(resume=True)
    qtbot.waitUntil(lambda: w.progress_seen >= 2, timeout=120000)
    w.stop()
    wait_worker(worker, qtbot, 60000)
    again = load_checkpoint(latest)
    assert again["step"] > state["step"] and again["kimg"] == pytest.approx(again["step"] * batch / 1000)
    assert not w.info.text().startswith("Training failed"), w.info.text()
