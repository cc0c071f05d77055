"""GAN-DL training loop: config validation, run folder, resume == uninterrupted, stop/kill safety."""

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
import torch

from gandl_core.checkpoint import load_checkpoint, load_discriminator
from gandl_core.errors import ConfigError
from gandl_core.progress import Progress, run_to_end
from gandl_core.gan.train import PRESETS, TrainConfig, train

# One step of cpu-tiny = batch 8 images = 0.008 kimg. Tests count in steps.
STEP = 0.008
FAST = dict(quality_kimg=0.0, fakes_kimg=1.0, snapshot_kimg=1.0, tick_kimg=STEP, norm_sites=8)


@pytest.fixture(scope="module")
def index(synth_screen):
    from gandl_core.plates import build_index

    ix = build_index(synth_screen)
    return ix.iloc[:48].reset_index(drop=True)  # a few wells are plenty for a handful of steps


def _cfg(tmp_path: Path, name: str = "run", **kw) -> TrainConfig:
    return TrainConfig.from_preset("cpu-tiny", out_dir=str(tmp_path / name), **{**FAST, **kw})


# ---------------------------------------------------------------------------------- config


def test_presets_and_json_round_trip():
    assert {"cpu-tiny", "cpu-small", "paper"} <= set(PRESETS)
    paper = TrainConfig.from_preset("paper")
    assert (paper.mapping_layers, paper.w_dim, paper.channel_max, paper.beta1, paper.beta2) == (3, 512, 512, 0.0, 0.99)
    assert paper.resolution >= 256
    small = TrainConfig.from_preset("cpu-small", kimg=3.0, channel_names=["DNA", "ER"], channels=2)
    assert small.kimg == 3.0 and small.preset == "cpu-small" and small.channel_names == ("DNA", "ER")
    back = TrainConfig.from_dict(json.loads(json.dumps(small.to_dict())))
    assert back == small
    with pytest.raises(Exception):
        small.kimg = 5  # frozen


@pytest.mark.parametrize("kw,culprit", [
    (dict(resolution=24), "resolution"),
    (dict(batch=2), "batch"),
    (dict(loss="hinge"), "loss"),
    (dict(augment="always"), "augment"),
    (dict(kimg=0), "kimg"),
    (dict(field_scale=2.0), "field_scale"),
    (dict(lr_gg=0.1), "lr_gg"),
])
def test_bad_options_name_the_option(kw, culprit):
    with pytest.raises(ConfigError, match=culprit):
        TrainConfig.from_preset("cpu-tiny", **kw)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'gpu-huge'.*cpu-small"):
        TrainConfig.from_preset("gpu-huge")


def test_channel_names_must_match_data(tmp_path, index):
    cfg = _cfg(tmp_path, channel_names=["DNA", "ER", "Actin", "Mito", "Golgi"], channels=5, kimg=STEP)
    with pytest.raises(ConfigError, match="Mito"):
        next(train(cfg, index))


# ---------------------------------------------------------------------------------- the loop


def test_run_folder_metrics_fakes_and_checkpoint(tmp_path, index):
    from gandl_core.plates import build_index

    two = index[[c for c in index.columns if not c.startswith("Path_") or c in ("Path_DNA", "Path_Actin")]]
    two = build_index(two, channels=["DNA", "Actin"]) if "channels" in build_index.__code__.co_varnames else two
    cfg = _cfg(tmp_path, kimg=4 * STEP, fakes_kimg=2 * STEP, quality_kimg=4 * STEP, snapshot_kimg=2 * STEP)
    gen = train(cfg, two)
    reports = []
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as stop:
            final = Path(stop.value)
            break
    run = tmp_path / "run"
    assert all(isinstance(p, Progress) and p.unit == "kimg" for p in reports)
    done = [p.done for p in reports]
    assert done == sorted(done) and done[-1] == pytest.approx(4 * STEP) and reports[-1].total == pytest.approx(4 * STEP)
    assert final == run / "checkpoints" / "latest.pt"
    # config.json is the resolved config: channels come from the data
    saved = json.loads((run / "config.json").read_text())
    assert saved["channels"] == 2 and saved["channel_names"] == ["DNA", "Actin"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2, 3, 4]  # step 0: SWD of the untrained generator
    assert lines[0]["swd"] > 0 and "loss_D" not in lines[0]
    lines = lines[1:]
    for key in ("loss_G", "loss_D", "pl", "augment_p", "sec_per_kimg", "eta_s"):
        assert all(key in x for x in lines), key
    assert all(np.isfinite(x["loss_D"]) and x["loss_D"] > 0 for x in lines)
    assert lines[-1]["swd"] is not None and lines[-1]["swd"] > 0
    assert "quality" in reports[-1].artifacts and reports[-1].metrics["swd"] == pytest.approx(lines[-1]["swd"], rel=1e-4)
    fakes = sorted(p.name for p in (run / "fakes").glob("fakes-*.png"))
    assert len(fakes) == 2 and (run / "fakes" / "latest.png").is_file()
    from PIL import Image

    img = np.asarray(Image.open(run / "fakes" / "latest.png"))
    assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 1  # not blank
    ckpts = sorted((run / "checkpoints").glob("ckpt-*.pt"))
    assert len(ckpts) == 2
    state = load_checkpoint(final)
    assert state["step"] == 4 and state["kimg"] == pytest.approx(4 * STEP)
    for key in ("G", "D", "G_ema", "opt_G", "opt_D", "normalizer", "rng", "augment_p"):
        assert key in state, key
    D, norm, info = load_discriminator(final)
    assert info["channel_names"] == ["DNA", "Actin"] and D.channels == 2
    with torch.no_grad():
        assert D.features(torch.zeros(3, 2, 16, 16)).shape == (3, 512)


def _weights(path: Path) -> dict:
    st = load_checkpoint(path)
    return {"D": st["D"], "G_ema": st["G_ema"], "G": st["G"], "p": st["augment_p"], "step": st["step"]}


def test_resume_equals_uninterrupted(tmp_path, index):
    kw = dict(augment="ada", augment_speed_kimg=0.05, r1_interval=2, pl_interval=2, pl_weight=2.0)
    full = run_to_end(train(_cfg(tmp_path, "full", kimg=4 * STEP, **kw), index))
    run_to_end(train(_cfg(tmp_path, "parts", kimg=2 * STEP, **kw), index))
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):
        next(train(_cfg(tmp_path, "parts", kimg=4 * STEP, **kw), index))
    parts = run_to_end(train(_cfg(tmp_path, "parts", kimg=4 * STEP, **kw), index, resume=True))
    a, b = _weights(full), _weights(parts)
    assert a["step"] == b["step"] == 4
    assert a["p"] == pytest.approx(b["p"]) and a["p"] > 0  # ADA moved p, and identically
    for net in ("D", "G_ema", "G"):
        for k in a[net]:
            torch.testing.assert_close(a[net][k], b[net][k], rtol=1e-5, atol=1e-6, msg=f"{net}.{k}")
    # resumed metrics continue the step count
    steps = [json.loads(x)["step"] for x in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_resume_refuses_changed_options(tmp_path, index):
    run_to_end(train(_cfg(tmp_path, kimg=STEP), index))
    with pytest.raises(ConfigError) as exc:
        next(train(_cfg(tmp_path, kimg=3 * STEP, lr_g=0.01, seed=3), index, resume=True))
    msg = str(exc.value)
    assert "lr_g" in msg and "seed" in msg and "kimg" not in msg.split("(")[1].split(")")[0]
    with pytest.raises(ConfigError, match="does not exist"):
        next(train(_cfg(tmp_path, "nothing_here", kimg=STEP), index, resume=True))


def test_close_writes_a_checkpoint(tmp_path, index):
    gen = train(_cfg(tmp_path, kimg=50 * STEP), index)
    for _ in range(3):
        next(gen)
    gen.close()  # napari's Stop
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert state["step"] == 3


def test_wgan_gp_trains(tmp_path, index):
    run_to_end(train(_cfg(tmp_path, kimg=2 * STEP, loss="wgan-gp", augment="none"), index))
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(x["loss_D"]) and np.isfinite(x["loss_G"]) for x in lines)
    assert all(x.get("gp", 0) > 0 for x in lines)  # gradient penalty is active


def test_sigkill_then_resume_loses_at_most_one_snapshot(tmp_path, synth_screen):
    run = tmp_path / "killed"
    cli = [sys.executable, "-m", "gandl_core.cli", "train", str(synth_screen), "-o", str(run), "--preset", "cpu-tiny"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cli + ["--kimg", str(200 * STEP)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    ckpt_dir = run / "checkpoints"
    deadline = time.time() + 60
    try:
        while time.time() < deadline and not list(ckpt_dir.glob("ckpt-*.pt")):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        assert list(ckpt_dir.glob("ckpt-*.pt")), "no checkpoint within 60 s"
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = load_checkpoint(ckpt_dir / "latest.pt")  # never half-written
    step0 = saved["step"]
    assert step0 >= 3
    lines = (run / "metrics.jsonl").read_text().splitlines()
    logged = json.loads(lines[-1])["step"] if lines else 0
    # lost work: at most the steps since the last snapshot (cpu-tiny snapshots every 3 steps)
    assert logged - step0 <= 3
    target = (step0 + 2) * STEP
    res = subprocess.run(cli + ["--kimg", f"{target:.4f}", "--resume"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert load_checkpoint(ckpt_dir / "latest.pt")["step"] == step0 + 2
    assert "checkpoint" in res.stdout
