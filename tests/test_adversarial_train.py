"""Training under faults: a second writer, Ctrl-C/SIGTERM mid-step, a full disk, a killed write, bad options,
a diverging run, and the checkpoints that pile up. Each test failed on the code before its fix."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from gandl_core.checkpoint import load_checkpoint
from gandl_core.errors import ConfigError, GandlError
from gandl_core.gan import losses
from gandl_core.gan.train import TrainConfig, train
from gandl_core.locks import OutputBusyError
from gandl_core.progress import run_to_end

STEP = 0.008  # cpu-tiny: 8 images per step
FAST = dict(quality_kimg=0.0, fakes_kimg=1.0, snapshot_kimg=1.0, tick_kimg=STEP, norm_sites=8)


def _cfg(tmp_path: Path, name: str = "run", **kw) -> TrainConfig:
    return TrainConfig.from_preset("cpu-tiny", out_dir=str(tmp_path / name), **{**FAST, **kw})


def _latest(tmp_path: Path, name: str = "run") -> dict:
    return load_checkpoint(tmp_path / name / "checkpoints" / "latest.pt")


# ------------------------------------------------------------------------------------ one writer


def test_a_second_train_into_the_same_run_folder_is_refused(tmp_path, small_index):
    first = train(_cfg(tmp_path, kimg=20 * STEP), small_index)
    next(first)  # running: it holds the folder
    with pytest.raises(OutputBusyError) as exc:
        next(train(_cfg(tmp_path, kimg=20 * STEP), small_index))
    assert f"pid {os.getpid()}" in str(exc.value) and "'train'" in str(exc.value)
    with pytest.raises(OutputBusyError):  # a resume is a writer too
        next(train(_cfg(tmp_path, kimg=20 * STEP), small_index, resume=True))
    first.close()
    assert _latest(tmp_path)["step"] == 1
    run_to_end(train(_cfg(tmp_path, kimg=2 * STEP), small_index, resume=True))  # released: the run continues
    assert _latest(tmp_path)["step"] == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]  # nothing interleaved from the refused runs


# ------------------------------------------------------------------------- interrupts at a step boundary


def _every_state(path: Path) -> dict:
    st = load_checkpoint(path)
    return {k: st[k] for k in ("G", "D", "G_ema", "opt_G", "opt_D", "step", "augment_p")}


def _assert_same(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=where)
    else:
        assert a == pytest.approx(b), where


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_signal_mid_step_then_resume_equals_the_uninterrupted_run(tmp_path, small_index, monkeypatch, sig):
    kw = dict(augment="ada", augment_speed_kimg=0.05, r1_interval=2, pl_interval=2, pl_weight=2.0)
    full = run_to_end(train(_cfg(tmp_path, "full", kimg=6 * STEP, **kw), small_index))
    # As in the CLI: SIGTERM outside the loop stops like Ctrl-C (before the fix it did so inside a step too).
    monkeypatch.setattr(signal, "SIGTERM", signal.SIGTERM)
    old = signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    real_g_loss = losses.g_nonsaturating_loss
    calls = {"n": 0}

    def g_loss(scores):
        calls["n"] += 1
        if calls["n"] == 3:  # in the middle of step 3: D has been updated, G not yet
            os.kill(os.getpid(), sig)
        return real_g_loss(scores)

    monkeypatch.setattr(losses, "g_nonsaturating_loss", g_loss)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_to_end(train(_cfg(tmp_path, "parts", kimg=6 * STEP, **kw), small_index))
    finally:
        signal.signal(signal.SIGTERM, old)
    monkeypatch.setattr(losses, "g_nonsaturating_loss", real_g_loss)
    stopped = load_checkpoint(tmp_path / "parts" / "checkpoints" / "latest.pt")
    assert stopped["step"] == 3  # the step in progress finished, then the checkpoint was written
    assert {int(s["step"]) for o in ("opt_D", "opt_G") for s in stopped[o]["state"].values()} == {3}
    parts = run_to_end(train(_cfg(tmp_path, "parts", kimg=6 * STEP, **kw), small_index, resume=True))
    a, b = _every_state(full), _every_state(parts)
    assert a["step"] == b["step"] == 6
    _assert_same(a, b)  # weights, EMA, both optimizers' moments and step counts, ADA p


# ------------------------------------------------------------------------------------- full disk


def _disk_full_on_call(monkeypatch, n: int, full: bool = True) -> None:
    """torch.save fails from its n-th call as it does on a full disk (seen on a real full tmpfs: "unexpected
    pos" / "iostream error" RuntimeErrors, no errno), and the disk then reports no free space."""
    import shutil
    from collections import namedtuple

    from gandl_core.gan import run_folder

    real_save, real_usage = torch.save, shutil.disk_usage
    calls = {"n": 0}

    def save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] >= n:
            Path(f).write_bytes(b"PK\x03\x04 half")  # a partial file, as a full disk leaves it
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3359616 vs 3359504")
        return real_save(obj, f, *a, **k)

    def usage(path):
        total = real_usage(path).total
        return namedtuple("usage", "total used free")(total, total - 4096, 4096 if full else total // 2)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(run_folder.shutil, "disk_usage", usage)


def test_disk_full_keeps_a_loadable_latest_and_says_so_in_one_line(tmp_path, small_index, monkeypatch):
    _disk_full_on_call(monkeypatch, 2)  # the first snapshot (step 2) works, the second (step 4) fails
    with pytest.raises(GandlError) as exc:
        run_to_end(train(_cfg(tmp_path, kimg=6 * STEP, snapshot_kimg=2 * STEP), small_index))
    msg = str(exc.value)
    assert "\n" not in msg and "no space left" in msg and "latest.pt (step 2) is intact" in msg and "--resume" in msg
    monkeypatch.undo()
    ckpts = tmp_path / "run" / "checkpoints"
    assert _latest(tmp_path)["step"] == 2
    assert sorted(p.name for p in ckpts.iterdir()) == ["ckpt-00000.016.pt", "latest.pt"]  # no newer snapshot, no temp
    run_to_end(train(_cfg(tmp_path, kimg=3 * STEP, snapshot_kimg=2 * STEP), small_index, resume=True))
    assert _latest(tmp_path)["step"] == 3


def test_a_failed_write_with_space_left_is_one_line_too(tmp_path, small_index, monkeypatch):
    _disk_full_on_call(monkeypatch, 1, full=False)
    with pytest.raises(GandlError, match=r"latest.pt: could not be written \(RuntimeError.*no checkpoint could be"):
        run_to_end(train(_cfg(tmp_path, kimg=STEP), small_index))


def test_disk_full_in_the_cli_is_one_line(tmp_path, small_index_parquet, monkeypatch, capsys):
    from gandl_core.cli import main

    _disk_full_on_call(monkeypatch, 1)  # not even the first checkpoint fits
    rc = main(["train", str(small_index_parquet), "-o", str(tmp_path / "run"), "--preset", "cpu-tiny",
               "--kimg", str(STEP)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err[-1:]) == 1 and err[-1].startswith("gandl-core train: error:")
    assert "no space left" in err[-1] and "no checkpoint could be written" in err[-1]
    ckpts = tmp_path / "run" / "checkpoints"
    assert not (ckpts.exists() and any(ckpts.iterdir()))  # nothing half-written, no snapshot


def test_temp_files_of_a_killed_write_are_cleaned_at_the_next_start(tmp_path, small_index):
    run_to_end(train(_cfg(tmp_path, kimg=STEP), small_index))
    run = tmp_path / "run"
    junk = [run / "checkpoints" / ".latest.pt.k3j2h1g0.tmp", run / "checkpoints" / ".ckpt-00000.016.pt.4242.tmp",
            run / "fakes" / ".latest.png.a1b2c3d4.png", run / ".metrics.jsonl.zz99.tmp"]
    for p in junk:
        p.write_bytes(b"")  # 0-byte files, as a kill mid-write leaves them
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"kimg": 0.01, "st')  # a line cut off by the kill
    run_to_end(train(_cfg(tmp_path, kimg=2 * STEP), small_index, resume=True))
    assert not any(p.exists() for p in junk)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]


# --------------------------------------------------------------------------------------- diverging


def test_a_diverged_run_does_not_overwrite_the_last_good_checkpoint(tmp_path, small_index, monkeypatch):
    real_d_loss = losses.d_logistic_loss
    calls = {"n": 0}

    def d_loss(real_scores, fake_scores):
        calls["n"] += 1
        out = real_d_loss(real_scores, fake_scores)
        return out * float("nan") if calls["n"] >= 3 else out  # step 3's loss is NaN

    monkeypatch.setattr(losses, "d_logistic_loss", d_loss)
    with pytest.raises(ConfigError, match="diverged"):
        run_to_end(train(_cfg(tmp_path, kimg=10 * STEP, snapshot_kimg=2 * STEP), small_index))
    state = _latest(tmp_path)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["D"].values() if v.is_floating_point())


# ------------------------------------------------------------------------------------- bad options


@pytest.mark.parametrize("option,value", [("lr_g", float("nan")), ("lr_d", float("inf")), ("lr_d", 0.0),
                                          ("r1_gamma", float("nan")), ("time_limit_s", float("nan")),
                                          ("beta2", 1.0), ("cache_gib", -1.0), ("device", "gpu"),
                                          ("keep_checkpoints", -1)])
def test_bad_numbers_and_devices_are_refused_by_the_config(option, value):
    """The Python API and napari build TrainConfigs directly: `lr_g=nan` used to start a run that 'diverged'."""
    with pytest.raises(ConfigError, match=f"'{option}'"):
        TrainConfig.from_preset("cpu-tiny", **{option: value})


@pytest.mark.parametrize("flags,words", [(["--lr-g", "nan"], "--lr-g"), (["--device", "gpu"], "device"),
                                         (["--cache-gib", "inf"], "--cache-gib")])
def test_bad_numbers_and_devices_in_the_cli_are_one_line_before_any_work(tmp_path, small_index_parquet, capsys, flags,
                                                                          words):
    from gandl_core.cli import main

    try:
        rc = main(["train", str(small_index_parquet), "-o", str(tmp_path / "run"), "--preset", "cpu-tiny"] + flags)
    except SystemExit as exc:  # argparse's usage error
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc in (1, 2) and words in err[-1] and "Traceback" not in "".join(err), err
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_cuda_on_a_cpu_only_torch_is_refused_before_the_data_is_read(tmp_path, small_index, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    from gandl_core.plates import _normalize

    def no_fit(*a, **k):
        raise AssertionError("the normalizer was fitted before the device was checked")

    monkeypatch.setattr(_normalize.IntensityNormalizer, "fit", no_fit)
    with pytest.raises(ConfigError, match="CPU-only build.*--device cpu"):
        next(train(_cfg(tmp_path, kimg=STEP, device="cuda"), small_index))
    with pytest.raises(ConfigError, match="'device'"):
        TrainConfig.from_preset("cpu-tiny", device="cuda:x")


# ---------------------------------------------------------------------------- checkpoint retention


def test_keeps_the_last_n_snapshots_and_the_best_by_swd(tmp_path, small_index):
    cfg = _cfg(tmp_path, kimg=6 * STEP, snapshot_kimg=STEP, quality_kimg=2 * STEP, keep_checkpoints=2,
               quality_samples=16)
    run_to_end(train(cfg, small_index))
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("ckpt-*.pt")) == ["ckpt-00000.040.pt", "ckpt-00000.048.pt"]
    assert os.path.samefile(ckpts / "latest.pt", ckpts / "ckpt-00000.048.pt")  # a link, not a second copy
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    swd = {x["step"]: x["swd"] for x in lines if x.get("swd") is not None and x["step"] > 0}
    assert sorted(swd) == [2, 4, 6]
    best = load_checkpoint(ckpts / "best.pt")
    assert best["step"] == min(swd, key=swd.get) and best["best_swd"] == pytest.approx(min(swd.values()), abs=1e-6)
    assert TrainConfig().keep_checkpoints == 3  # the default keeps a few, not every one
    # keep_checkpoints 0 keeps them all
    run_to_end(train(_cfg(tmp_path, "all", kimg=3 * STEP, snapshot_kimg=STEP, keep_checkpoints=0), small_index))
    assert len(list((tmp_path / "all" / "checkpoints").glob("ckpt-*.pt"))) == 3


def test_field_cache_gives_the_same_crops_and_training(tmp_path, small_index):
    from gandl_core.gan.data import crop_dataset
    from gandl_core.plates import IntensityNormalizer

    norm = IntensityNormalizer().fit(small_index, n_sites=4)
    cfg = TrainConfig.from_preset("cpu-tiny")
    cached, plain = crop_dataset(small_index, norm, cfg), crop_dataset(small_index, norm, cfg.replace(cache_gib=0.0))
    assert list(cached.fill_cache(threads=2))[-1] == len(small_index) and cached.cached == len(small_index)
    for item in [(0, 5), (7, 123), (23, 99)]:
        assert torch.equal(cached[item], plain[item])
    cached[(0, 5)].fill_(9.0)  # a crop is a copy: the cache is never handed out
    assert torch.equal(cached[(0, 5)], plain[(0, 5)])
    tiny = crop_dataset(small_index, norm, cfg.replace(cache_gib=3 * 5 * 48 * 48 * 4 / 2**30))  # room for 3 fields
    list(tiny.fill_cache())
    assert tiny.cached == 3
    a = run_to_end(train(_cfg(tmp_path, "cache", kimg=2 * STEP), small_index))
    b = run_to_end(train(_cfg(tmp_path, "nocache", kimg=2 * STEP, cache_gib=0.0), small_index))
    for k, v in load_checkpoint(a)["D"].items():
        assert torch.equal(v, load_checkpoint(b)["D"][k]), k
    assert np.isfinite(load_checkpoint(a)["kimg"])
