"""Training edge cases: bad data/resume state named, any channel count, Ctrl-C leaves a checkpoint,
fluorescence composites. (The main loop tests are in test_train_loop.py, DDP in test_ddp.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gandl_core.checkpoint import load_checkpoint
from gandl_core.errors import CheckpointError, ConfigError, DataError
from gandl_core.progress import run_to_end
from gandl_core.gan.train import TrainConfig, composite_rgb, fakes_grid, train

STEP = 0.008  # cpu-tiny: 8 images per step
FAST = dict(quality_kimg=0.0, fakes_kimg=1.0, snapshot_kimg=1.0, tick_kimg=STEP, norm_sites=8)


def _cfg(tmp_path: Path, name: str = "run", **kw) -> TrainConfig:
    return TrainConfig.from_preset("cpu-tiny", out_dir=str(tmp_path / name), **{**FAST, **kw})


def test_crop_larger_than_field_is_named(tmp_path, small_index):
    # synthetic fields are 48 px; at field_scale 0.25 they are 12 px < 16 px crops
    with pytest.raises(DataError) as exc:
        run_to_end(train(_cfg(tmp_path, kimg=STEP, field_scale=0.25), small_index))
    msg = str(exc.value)
    assert "resolution" in msg and "16" in msg and "field" in msg


def test_resize_mode_trains_on_whole_fields(tmp_path, small_index):
    from gandl_core.gan.data import crop_dataset
    from gandl_core.plates import IntensityNormalizer, PlateDataset

    norm = IntensityNormalizer().fit(small_index, n_sites=4)
    cfg = TrainConfig.from_preset("cpu-tiny", crop_mode="resize", field_scale=0.25, cache_gib=0.0)
    whole = crop_dataset(small_index, norm, cfg)[(0, 0)]  # 12 px fields enlarged to 16 px
    assert whole.shape == (5, 16, 16)
    full = PlateDataset(small_index, norm, 16, mode="full")
    shrunk = crop_dataset(small_index, norm, cfg.replace(field_scale=1.0))
    # area-averaged whole field: same mean as the field, independent of the crop key
    assert float(shrunk[(0, 123)].mean()) == pytest.approx(float(full.field(0).mean()), abs=1e-4)
    assert torch_equal(shrunk[(0, 123)], shrunk[(0, 999)])
    run_to_end(train(_cfg(tmp_path, kimg=STEP, crop_mode="resize", field_scale=0.25), small_index))
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["config"]["crop_mode"] == "resize"
    with pytest.raises(ConfigError, match="crop_mode"):
        TrainConfig.from_preset("cpu-tiny", crop_mode="center")


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_empty_index_is_refused(tmp_path, small_index):
    with pytest.raises(DataError, match="no sites"):
        next(train(_cfg(tmp_path, kimg=STEP), small_index.iloc[:0]))


def test_no_data_at_all(tmp_path):
    with pytest.raises(ConfigError, match="DATA"):
        next(train(_cfg(tmp_path, kimg=STEP)))


def test_corrupt_latest_on_resume_names_the_file(tmp_path, small_index):
    run_to_end(train(_cfg(tmp_path, kimg=STEP), small_index))
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="latest.pt"):
        next(train(_cfg(tmp_path, kimg=2 * STEP), small_index, resume=True))


def test_single_stain_run_and_longer_resume(tmp_path, synth_screen):
    from gandl_core.plates import build_index

    one = build_index(synth_screen, channels=["Actin"]).iloc[:16].reset_index(drop=True)
    run_to_end(train(_cfg(tmp_path, kimg=STEP), one))
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert state["config"]["channels"] == 1 and state["channel_names"] == ["Actin"]
    assert json.loads((tmp_path / "run" / "normalizer.json").read_text())
    # real crops in the fakes' layout: 1 stain block + composite, 8 crops of 16 px drawn 4x (64 px, +2 px padding)
    from PIL import Image

    reals = np.asarray(Image.open(tmp_path / "run" / "fakes" / "reals.png"))
    assert reals.shape == (2 * 66 + 4, 8 * 66, 3) and reals.std() > 1
    # kimg may grow on resume; data with other channels may not
    run_to_end(train(_cfg(tmp_path, kimg=2 * STEP), one, resume=True))
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 2
    two = build_index(synth_screen, channels=["DNA", "Actin"]).iloc[:16].reset_index(drop=True)
    with pytest.raises(CheckpointError, match=r"\['Actin'\].*\['DNA', 'Actin'\]"):
        next(train(_cfg(tmp_path, kimg=3 * STEP), two, resume=True))


def test_composite_uses_fluorescence_colours():
    img = -np.ones((3, 4, 4), np.float32)
    img[0] = 1.0  # DNA fully on, the rest off
    rgb = composite_rgb(img, ["DNA", "ER", "Actin"])
    r, g, b = rgb[0, 0]
    assert b > 0.9 and b > 2 * r and b > 2 * g  # DNA is blue
    img[:] = -1
    img[2] = 1.0
    r, g, b = composite_rgb(img, ["DNA", "ER", "Actin"])[0, 0]
    assert r > 0.9 and r > 2 * g and r > 2 * b  # Actin is red
    grid = fakes_grid(np.random.default_rng(0).uniform(-1, 1, (5, 3, 8, 8)).astype(np.float32), ["DNA", "ER", "Actin"], cols=4)
    # 3 grey stain blocks + 1 composite block, 2 rows of 4 tiles each (8 px + 2 px padding), 4 px separators
    assert grid.dtype == np.uint8 and grid.shape == (4 * 2 * 10 + 3 * 4, 4 * 10, 3)
    # scale: every pixel becomes a scale x scale block (32-px crops are drawn at 64 px in run folders)
    imgs = np.random.default_rng(1).uniform(-1, 1, (2, 1, 4, 4)).astype(np.float32)
    big = fakes_grid(imgs, ["DNA"], cols=2, scale=3)
    assert big.shape == (14 + 4 + 14, 2 * 14, 3)  # 1 stain block + composite, 12-px tiles + 2 px padding
    small = fakes_grid(imgs, ["DNA"], cols=2)
    assert np.array_equal(big[:12:3, :12:3], small[:4, :4])
    from gandl_core.gan.train import png_scale
    assert (png_scale(16), png_scale(32), png_scale(64), png_scale(256)) == (4, 2, 1, 1)


def test_unnamed_channels_get_distinct_colours():
    """A GFP-only plate drew its composite blue (DNA's colour) and two unnamed channels shared one colour."""
    from gandl_core.gan.images import GREEN, GREY, MAGENTA, channel_colours

    assert channel_colours(["GFP"]) == [GREY] and channel_colours(["DNA"]) == [GREY]  # one channel: grey
    assert channel_colours(["c1", "c2"]) == [GREEN, MAGENTA]
    for names in (["c1", "c2", "c3"], ["a", "b", "c", "d", "e"], ["DNA", "GFP"], ["Golgi", "Mito"], ["DNA", "x", "y"]):
        colours = channel_colours(names)
        assert len(colours) == len(names) and len(set(colours)) == len(names), names
    assert channel_colours(["DNA", "ER", "Actin"])[0][2] == 1.0  # named stains keep their colours: DNA blue
    img = -np.ones((1, 4, 4), np.float32)
    img[0, 0, 0] = 1.0
    r, g, b = composite_rgb(img, ["GFP"])[0, 0]
    assert r == g == b == 1.0  # a bright pixel of a single channel is white, not blue
    two = -np.ones((2, 4, 4), np.float32)
    two[0] = 1.0
    r, g, b = composite_rgb(two, ["w1", "w2"])[0, 0]
    assert g > 0.9 and r < 0.2 and b < 0.3  # the first unnamed channel green, the second (off) adds nothing


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_in_the_cli_leaves_a_checkpoint(tmp_path, small_index_parquet, sig):
    run = tmp_path / "interrupted"
    cli = [sys.executable, "-m", "gandl_core.cli", "train", str(small_index_parquet), "-o", str(run),
           "--preset", "cpu-tiny", "--kimg", str(200 * STEP)]
    # The child gets the default SIGINT disposition, as in a terminal: if pytest itself runs in a background
    # job (nohup ... &), SIGINT is inherited as ignored and Python would never raise KeyboardInterrupt.
    proc = subprocess.Popen(cli, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 90
    try:
        # line 1 is the untrained generator's SWD (step 0); line 2 the first training tick
        while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            time.sleep(0.2)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]  # "interrupted", not killed by the signal
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    logged = json.loads(metrics.read_text().splitlines()[-1])["step"]
    assert state["step"] >= logged >= 1  # the checkpoint holds all the work done before Ctrl-C
    assert state["step"] < 200


def test_cli_resume_needs_only_the_new_length(tmp_path, small_index_parquet, capsys):
    from gandl_core.cli import main

    run = tmp_path / "run"
    base = ["train", str(small_index_parquet), "-o", str(run)]
    assert main(base + ["--preset", "cpu-tiny", "--kimg", str(STEP), "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint:" in out and "trained to 0.008 kimg (step 1)" in out and "s/kimg; SWD " in out
    # no --preset/--seed: the run's own config.json is the base, --kimg the only change
    assert main(base + ["--resume", "--kimg", str(2 * STEP)]) == 0
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert state["step"] == 2 and state["config"]["seed"] == 5 and state["config"]["preset"] == "cpu-tiny"
    # an explicit change of a non-resumable option is still refused, naming it
    assert main(base + ["--resume", "--kimg", str(3 * STEP), "--lr-g", "0.01"]) == 1
    assert "lr_g" in capsys.readouterr().err


def test_configs_and_the_train_parser_do_not_import_torch():
    """napari and the CLI build configs at start-up: that must not pay for importing torch."""
    code = ("import sys, argparse\n"
            "from gandl_core.gan.train import TrainConfig, PRESETS\n"
            "from gandl_core.cli import _train\n"
            "[TrainConfig.from_preset(n).to_dict() for n in PRESETS]\n"
            "_train.register(argparse.ArgumentParser().add_subparsers())\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]


def test_out_of_memory_suggests_smaller_batch(tmp_path, small_index, monkeypatch):
    from gandl_core.gan import stylegan2

    real_forward = stylegan2.Discriminator.forward
    calls = {"n": 0}

    def forward(self, img):
        calls["n"] += 1
        if calls["n"] > 6:  # a few steps succeed, then the allocator gives up
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123456789 bytes.")
        return real_forward(self, img)

    monkeypatch.setattr(stylegan2.Discriminator, "forward", forward)
    with pytest.raises(ConfigError) as exc:  # 3 D passes a step: step 3 fails, after a snapshot at step 2
        run_to_end(train(_cfg(tmp_path, kimg=20 * STEP, snapshot_kimg=2 * STEP), small_index))
    msg = str(exc.value)
    assert "out of memory" in msg and "--batch (now 8)" in msg and "--resolution (now 16)" in msg
    assert "checkpoint (step 2) is kept" in msg
    # the failed step left nothing half-done on disk: latest.pt is the state after step 2, both optimizers
    # included (an optimizer one step ahead of the weights' step would not resume exactly)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert state["step"] == 2
    assert {int(s["step"]) for opt in ("opt_D", "opt_G") for s in state[opt]["state"].values()} == {2}


def test_quality_is_logged_on_its_own_schedule(tmp_path, small_index):
    # ticks every 3 steps, SWD every 2: SWD must still be measured (and logged) at steps 2 and 4,
    # and once before the first step (the untrained generator: where the curve starts)
    run_to_end(train(_cfg(tmp_path, kimg=4 * STEP, tick_kimg=3 * STEP, quality_kimg=2 * STEP), small_index))
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 2, 3, 4]
    assert [x.get("swd") is not None for x in lines] == [True, True, False, True]
    assert all(x["swd"] > 0 for x in lines if x.get("swd") is not None)
    assert lines[0]["kimg"] == 0.0 and "loss_D" not in lines[0]
    # a resumed run does not measure its start again
    run_to_end(train(_cfg(tmp_path, kimg=6 * STEP, tick_kimg=3 * STEP, quality_kimg=2 * STEP), small_index,
                     resume=True))
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines].count(0) == 1


def test_loader_workers_do_not_change_the_run(tmp_path, small_index):
    """Crop positions and data order are functions of (seed, step), not of which process reads them."""
    import torch

    a = run_to_end(train(_cfg(tmp_path, "w0", kimg=2 * STEP, workers=0), small_index))
    b = run_to_end(train(_cfg(tmp_path, "w1", kimg=2 * STEP, workers=1), small_index))
    da, db = load_checkpoint(a)["D"], load_checkpoint(b)["D"]
    for k in da:
        torch.testing.assert_close(da[k], db[k], rtol=1e-6, atol=1e-7, msg=k)
    c = run_to_end(train(_cfg(tmp_path, "seed1", kimg=2 * STEP, seed=1), small_index))
    dc = load_checkpoint(c)["D"]
    assert any(not torch.allclose(da[k], dc[k]) for k in da if da[k].is_floating_point())  # the seed matters


def test_time_limit_stops_with_a_checkpoint_and_a_steady_total(tmp_path, small_index):
    reports = []
    gen = train(_cfg(tmp_path, kimg=100 * STEP, time_limit_s=1e-3, tick_kimg=50 * STEP), small_index)
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as stop:
            final = stop.value
            break
    assert len(reports) == 1 and reports[0].done == pytest.approx(STEP)
    assert reports[0].total == pytest.approx(100 * STEP)  # the bar keeps its planned length
    assert load_checkpoint(final)["step"] == 1
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1]  # the last step is logged even off-tick
