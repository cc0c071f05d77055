"""The bf16 mixed-precision code path, run on the CPU.

CI has no GPU, and on CUDA ``train`` runs its steps under bf16 autocast. A first run on an H200 found
dtype errors that fp32 CPU tests could not see (fp32 running buffers updated with bf16 values; R1
differentiating twice through ``grid_sample``, which CUDA cannot). These tests run the same code
under CPU bf16 autocast so such errors fail here first.
"""

from __future__ import annotations

import json

import pytest
import torch

import gandl_core.gan.train as train_mod
from gandl_core.progress import run_to_end
from gandl_core.gan.stylegan2 import Discriminator, Generator
from gandl_core.gan.train import TrainConfig, train


def _cpu_bf16(device, amp):
    return torch.autocast("cpu", dtype=torch.bfloat16) if amp else None


def test_running_buffers_stay_fp32_under_bf16_autocast():
    G = Generator(16, 3, z_dim=16, w_dim=16, channel_base=256, channel_max=32).train()
    D = Discriminator(16, 3, channel_base=256, channel_max=32).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert G.mapping(torch.randn(8, 16)).dtype == torch.bfloat16  # autocast is really on
        img = G(torch.randn(8, 16))
        scores = D(img)
    assert G.mapping.w_avg.dtype == torch.float32 and torch.count_nonzero(G.mapping.w_avg) > 0
    assert D.mbstd.running_std.dtype == torch.float32 and float(D.mbstd.running_std) > 0
    assert torch.isfinite(scores.float()).all()


@pytest.mark.parametrize("loss", ["stylegan2", "wgan-gp"])
def test_training_step_runs_under_bf16_autocast(tmp_path, synth_screen, monkeypatch, loss):
    entered = []

    def spy(device, amp):
        ctx = _cpu_bf16(device, amp)
        entered.append(ctx is not None)
        return ctx

    monkeypatch.setattr(train_mod, "_autocast", spy)
    from gandl_core.plates import build_index

    index = build_index(synth_screen).iloc[:16].reset_index(drop=True)
    # Every regularizer on every step, and augmentation with zoom on every image (p = 1).
    cfg = TrainConfig.from_preset("cpu-tiny", out_dir=str(tmp_path / "run"), kimg=0.032, amp=True, loss=loss,
                                  r1_interval=1, pl_weight=2.0, pl_interval=1, augment="fixed", augment_p=1.0,
                                  quality_kimg=0.0, tick_kimg=0.008, norm_sites=8)
    run_to_end(train(cfg, index))
    assert entered == [True]
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert len(rows) == 4
    reg = "r1" if loss == "stylegan2" else "gp"
    for r in rows:
        assert r["loss_D"] is not None and r["loss_G"] is not None and r[reg] is not None
    if loss == "stylegan2":  # the lazy regularizers really ran (non-zero) under autocast
        assert all(r["r1"] > 0 and r["pl"] > 0 for r in rows)
    else:
        assert all(r["gp"] > 0 for r in rows)
