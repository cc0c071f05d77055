"""scripts/slim_checkpoint.py: a training checkpoint without optimizer state, optionally float16."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from gandl_core.checkpoint import load_checkpoint, load_discriminator, save_checkpoint
from gandl_core.cli import main

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slim_checkpoint.py"


def _script():
    spec = importlib.util.spec_from_file_location("slim_checkpoint", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from gandl_core.synth import make_screen

    root = tmp_path_factory.mktemp("slim")
    screen = make_screen(root / "screen", plates=1, cell_types=("HRCE",), image_size=64, controls=2, compounds=3,
                         replicates=1, seed=3)
    assert main(["train", str(screen), "-o", str(root / "run"), "--preset", "cpu-tiny", "--kimg", "0.016"]) == 0
    return root / "run" / "checkpoints" / "latest.pt"


def test_slim_keeps_the_models_and_drops_the_optimizers(run: Path, tmp_path: Path, capsys) -> None:
    slim = _script()
    assert slim.main([str(run), str(tmp_path / "full.pt")]) == 0
    assert slim.main([str(run), str(tmp_path / "half.pt"), "--half"]) == 0
    assert "MiB" in capsys.readouterr().out
    big, full, half = (p.stat().st_size for p in (run, tmp_path / "full.pt", tmp_path / "half.pt"))
    assert full < 0.6 * big and half < 0.6 * full
    state = load_checkpoint(tmp_path / "half.pt")
    assert {"D", "G_ema", "config", "normalizer", "channel_names"} <= set(state)
    assert not {"opt_G", "opt_D", "G", "rng"} & set(state)
    assert state["D"][next(iter(state["D"]))].dtype == torch.float16
    # the same discriminator: features of one batch agree with the training checkpoint's
    res = int(state["config"]["resolution"])
    x = torch.randn(4, len(state["channel_names"]), res, res, generator=torch.Generator().manual_seed(0))
    feats = []
    for path in (run, tmp_path / "full.pt", tmp_path / "half.pt"):
        D, _, _ = load_discriminator(path)
        with torch.no_grad():
            feats.append(D.features(x).numpy())
    assert np.array_equal(feats[0], feats[1])
    assert np.allclose(feats[0], feats[2], rtol=0.02, atol=0.02 * np.abs(feats[0]).max())
    assert not np.array_equal(feats[0], feats[2])


def test_slim_refuses_to_overwrite_and_needs_a_training_checkpoint(run: Path, tmp_path: Path, capsys) -> None:
    slim = _script()
    (tmp_path / "taken.pt").write_bytes(b"mine")
    assert slim.main([str(run), str(tmp_path / "taken.pt")]) == 1
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "taken.pt").read_bytes() == b"mine"
    save_checkpoint(tmp_path / "d_only.pt", {"kind": "other", "config": {}})
    with pytest.raises(SystemExit, match="no D and G_ema"):
        slim.slim(tmp_path / "d_only.pt", tmp_path / "out.pt")
