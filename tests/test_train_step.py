"""The training step object: no host syncs between ticks, and a state that round-trips.

On a GPU every ``.item()``, ``float(t)``, ``bool(t)`` or ``.tolist()`` in the step makes the host wait
for the kernels queued so far, so the GPU idles while Python prepares the next ones. The step must
not read any tensor back: losses are summed on the device and read once per tick. CI has no GPU,
so the reads are counted on the CPU by patching torch.Tensor.
"""

from __future__ import annotations

import io

import pytest
import torch

from gandl_core.gan.step import TrainStep
from gandl_core.gan.train import TrainConfig

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


def _trainer(**kw) -> tuple[TrainStep, torch.Tensor]:
    cfg = TrainConfig.from_preset("cpu-tiny", channels=2, channel_names=["a", "b"], **kw)
    torch.manual_seed(0)
    trainer = TrainStep(cfg, torch.device("cpu"))
    real = torch.rand(cfg.batch, 2, cfg.resolution, cfg.resolution, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return trainer, real


class _CountReads:
    """Count tensor-to-Python reads while active (each would be a host sync on a GPU)."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[str] = []
        for name in READS:
            original = getattr(torch.Tensor, name)

            def spy(t, *a, _name=name, _original=original, **k):
                self.calls.append(_name)
                return _original(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, spy)


@pytest.mark.parametrize("kw", [
    dict(augment="ada", augment_p=0.5, augment_speed_kimg=0.01, r1_interval=2, pl_interval=2, pl_weight=2.0),
    dict(loss="wgan-gp", augment="fixed", augment_p=0.5),
], ids=["stylegan2-ada-r1-pl", "wgan-gp-fixed-aug"])
def test_steps_between_ticks_read_nothing_back(monkeypatch, kw):
    trainer, real = _trainer(**kw)
    for step in range(2):  # optimizer state allocated, ADA statistics on their device
        trainer(real, step)
    trainer.read_metrics()
    reads = _CountReads(monkeypatch)
    for step in range(2, 10):  # R1, path length and 2 ADA adjustments (interval 4) happen in here
        trainer(real, step)
    assert reads.calls == [], f"host syncs in the training step: {sorted(set(reads.calls))}"
    metrics = trainer.read_metrics()
    monkeypatch.undo()
    assert reads.calls.count("tolist") == 1  # the tick: one read of all the summed losses
    reg = "r1" if kw.get("loss", "stylegan2") == "stylegan2" else "gp"
    assert all(torch.isfinite(torch.tensor(metrics[k])) for k in ("loss_D", "loss_G", reg, "pl"))
    assert metrics[reg] > 0
    if kw.get("augment") == "ada":
        assert metrics["augment_p"] != 0.5 and metrics["rt"] is not None  # p moved, on the device
        assert kw.get("pl_weight") and metrics["pl"] > 0


def test_losses_are_means_over_the_tick_and_state_round_trips():
    trainer, real = _trainer(augment="ada", augment_speed_kimg=0.01)
    for step in range(3):
        trainer(real, step)
    first = trainer.read_metrics()
    assert trainer.read_metrics()["loss_D"] == 0.0  # read once, then reset
    buf = io.BytesIO()
    torch.save(trainer.state_dict(), buf)  # as a checkpoint does: plain values, loadable without code
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert isinstance(state["augment_p"], float) and isinstance(state["pl_state"]["mean"], float)
    other, _ = _trainer(augment="ada", augment_speed_kimg=0.01)
    other.load_state_dict(state)
    torch.manual_seed(5)
    trainer(real, 3)
    torch.manual_seed(5)
    other(real, 3)
    for k, v in trainer.D.state_dict().items():
        torch.testing.assert_close(v, other.D.state_dict()[k], rtol=0, atol=0, msg=k)
    assert first["loss_D"] > 0 and trainer.ada.p == other.ada.p
