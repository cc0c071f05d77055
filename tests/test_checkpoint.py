"""Checkpoint files: atomic save, code-free load, discriminator rebuild, channel compatibility."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from gandl_core.checkpoint import (build_discriminator, check_compatible, load_checkpoint, load_discriminator,
                                   resolve_checkpoint, save_checkpoint)
from gandl_core.errors import CheckpointError
from gandl_core.plates import IntensityNormalizer

CONFIG = {"resolution": 8, "channels": 3, "channel_base": 64, "channel_max": 16, "mbstd_group": 2,
          "feature_dim": 24}
NAMES = ["DNA", "ER", "Actin"]


def _normalizer() -> IntensityNormalizer:
    norm = IntensityNormalizer()
    norm.lo, norm.hi, norm.channels = [1.0, 2.0, 3.0], [100.0, 200.0, 300.0], NAMES
    return norm


def _minimal(tmp_path: Path, name: str = "d.pt") -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    D = build_discriminator(CONFIG)
    path = save_checkpoint(tmp_path / name, {"kind": "stylegan2", "config": CONFIG, "channel_names": NAMES,
                                             "normalizer": _normalizer().to_dict(), "D": D.state_dict(),
                                             "kimg": 1.5, "step": 12})
    return path, D


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_round_trip_and_discriminator_features(tmp_path):
    path, D = _minimal(tmp_path)
    state = load_checkpoint(path)
    assert state["format"] == "gandl-checkpoint" and state["version"] == 1 and state["step"] == 12
    D2, norm, info = load_discriminator(path)
    assert not D2.training
    x = torch.randn(4, 3, 8, 8)
    D.eval()
    with torch.no_grad():
        f1, f2 = D.features(x), D2.features(x)
    assert f1.shape == (4, 24)
    torch.testing.assert_close(f1, f2)
    assert info["channel_names"] == NAMES and info["kimg"] == 1.5 and info["step"] == 12
    assert len(info["sha256"]) == 64 and info["bytes"] == path.stat().st_size
    np.testing.assert_allclose(norm.hi, [100.0, 200.0, 300.0])
    # a run folder resolves to checkpoints/latest.pt
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest.pt").write_bytes(path.read_bytes())
    assert resolve_checkpoint(run) == run / "checkpoints" / "latest.pt"
    assert load_discriminator(run)[2]["sha256"] == info["sha256"]


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path, _ = _minimal(tmp_path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"kind": "stylegan2"})
    assert path.read_bytes() == before  # old checkpoint intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pt"]


def test_pickled_object_is_refused(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"format": "gandl-checkpoint", "payload": Evil()}, bad)
    with pytest.raises(CheckpointError, match="evil.pt") as exc:
        load_checkpoint(bad)
    assert "code" in str(exc.value)


@pytest.mark.parametrize("content,match", [
    (b"", "truncated"), (b"not a torch file at all", "truncated"), (None, "no such checkpoint"),
])
def test_missing_or_corrupt_file_named(tmp_path, content, match):
    p = tmp_path / "broken.pt"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as exc:
        load_checkpoint(p)
    assert "broken.pt" in str(exc.value)


def test_truncated_checkpoint(tmp_path):
    path, _ = _minimal(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="d.pt"):
        load_discriminator(path)


def test_foreign_and_newer_files(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt.*not a napari-gandl checkpoint"):
        load_checkpoint(foreign)
    newer = tmp_path / "newer.pt"
    torch.save({"format": "gandl-checkpoint", "version": 99}, newer)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(newer)
    folder = tmp_path / "empty_run"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="empty_run.*latest.pt"):
        load_checkpoint(folder)


def test_convae_checkpoint_has_no_discriminator(tmp_path):
    p = save_checkpoint(tmp_path / "ae.pt", {"kind": "convae", "config": CONFIG, "model": {}})
    with pytest.raises(CheckpointError, match="ae.pt.*no discriminator.*featurize"):
        load_discriminator(p)


def test_weights_not_matching_config(tmp_path):
    path, D = _minimal(tmp_path)
    state = load_checkpoint(path)
    state["config"] = {**CONFIG, "channel_base": 256}
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        load_discriminator(path)


def test_check_compatible_names_both_channel_lists(tmp_path):
    path, _ = _minimal(tmp_path)
    state = load_checkpoint(path)
    check_compatible(state, NAMES)  # same order: fine
    with pytest.raises(CheckpointError) as exc:
        check_compatible(state, ["ER", "DNA", "Actin"])
    msg = str(exc.value)
    assert "['DNA', 'ER', 'Actin']" in msg and "['ER', 'DNA', 'Actin']" in msg and "--channels DNA,ER,Actin" in msg
    with pytest.raises(CheckpointError, match="expects 3 channels"):
        check_compatible({"config": {"channels": 3}}, ["a", "b"])


def test_pickle_module_is_only_used_for_error_type():
    # guard: load_checkpoint must never fall back to weights_only=False
    src = Path(__file__).resolve().parents[1] / "src" / "gandl_core" / "checkpoint.py"
    text = src.read_text()
    assert "weights_only=False" not in text and "weights_only=True" in text
    assert pickle.UnpicklingError  # the error type we translate
