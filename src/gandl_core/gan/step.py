"""One training step of the StyleGAN2 game, as an object the loop calls: ``trainer(real, step)``.

The idea follows StyleGAN2-ADA's split of the loss from the loop (Karras et al. 2020): the loop
only decides *when*; this object knows *what* a step is. A step is two phases:

1. **D phase**: real crops and G's fakes (style mixing) pass through the same adaptive
   augmentation; logistic loss (or WGAN critic loss + gradient penalty + drift); every
   ``r1_interval`` steps the lazy R1 penalty on reals is added, scaled by the interval. ADA's
   statistics are accumulated (``p`` moves every few steps, on the device).
2. **G phase**: non-saturating loss (or -critic); every ``pl_interval`` steps the lazy path-length
   penalty. Lazy regularization scales Adam's lr and betas by ``interval / (interval + 1)``
   (StyleGAN2, appendix B).

then the EMA generator update with half-life ``ema_kimg`` (ramped up over the first images).

No host syncs: nothing in a step reads a tensor back (losses are summed on the device and read
once per tick by :meth:`TrainStep.read_metrics`; ADA's ``p``, its statistics and the path-length
mean live on the device; random numbers are drawn there; Adam is the fused kernel, whose step count
stays on the device). So on a GPU the host queues steps ahead of the kernels.

:meth:`TrainStep.state_dict` / :meth:`~TrainStep.load_state_dict` hold everything a resumed run
needs besides the global RNG states (:func:`rng_state` / :func:`set_rng_state`).
"""

from __future__ import annotations

import contextlib
import copy
import random

import numpy as np
import torch

from . import distributed as dist
from . import losses
from .augment import AdaptiveAugment

__all__ = ["TrainStep", "rng_state", "set_rng_state"]

LOSS_KEYS = ("loss_D", "loss_G", "reg", "pl")


def _adam(params, lr: float, betas: tuple[float, float], fused: bool | None):
    # Fused Adam keeps its step count on the device (the for-loop version reads it back every step)
    # and runs one kernel for all parameters. Other devices fall back to torch's default.
    params = list(params)
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused or None)


class TrainStep:
    """Networks, optimizers, ADA and regularizer state of a run, and the step that trains them.

    Parameters
    ----------
    config
        The run's :class:`~gandl_core.gan.train_config.TrainConfig` (channels filled in).
    device
        Where the networks live. Weights are drawn from torch's global RNG: seed it first (every
        rank the same seed) for reproducible, rank-identical weights.
    world
        Processes sharing the batch (gradients and buffers are averaged over them).
    autocast
        A re-enterable context manager for mixed precision (bf16 autocast on CUDA), or None.
    fused
        Fused Adam (default: where torch has it, float32 on CPU or CUDA).
    """

    def __init__(self, config, device, *, world: int = 1, autocast=None, fused: bool | None = None) -> None:
        from ..checkpoint import build_discriminator, build_generator

        c = self.config = config
        self.device, self.world = device, world
        self._autocast = autocast
        self.G = build_generator(c.to_dict()).to(device)
        self.D = build_discriminator(c.to_dict()).to(device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        # channels_last: oneDNN and cuDNN both run these convolutions faster (CPU cpu-small step +18%)
        self.memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        self.G.to(memory_format=self.memory_format)
        self.D.to(memory_format=self.memory_format)
        stylegan = c.loss == "stylegan2"
        c_d = c.r1_interval / (c.r1_interval + 1) if stylegan else 1.0
        c_g = c.pl_interval / (c.pl_interval + 1) if c.pl_weight > 0 and stylegan else 1.0
        self.opt_G = _adam(self.G.parameters(), c.lr_g * c_g, (c.beta1 ** c_g, c.beta2 ** c_g), fused)
        self.opt_D = _adam(self.D.parameters(), c.lr_d * c_d, (c.beta1 ** c_d, c.beta2 ** c_d), fused)
        self.ada = AdaptiveAugment(p=c.augment_p if c.augment != "none" else 0.0,
                                   target=c.augment_target if c.augment == "ada" else None,
                                   speed_kimg=c.augment_speed_kimg)
        self.pl_state = losses.PathLengthState(mean=torch.zeros((), dtype=torch.float64, device=device))
        self.r1_gamma = c.r1_gamma if c.r1_gamma >= 0 else 0.0002 * c.resolution ** 2 / c.batch
        self.reg_name = "r1" if stylegan else "gp"  # D regularizer: lazy R1 or WGAN-GP
        self._sums = torch.zeros(len(LOSS_KEYS), device=device)
        self._count = 0
        self.in_step = False  # True while a step runs: its state is then half-updated, never saved
        self._zero = torch.zeros((), device=device)

    # ------------------------------------------------------------------------------------ the step
    def __call__(self, real: torch.Tensor, step: int) -> None:
        """Train on one batch of real crops (this rank's share of global step ``step``)."""
        self.in_step = True
        real = real.contiguous(memory_format=self.memory_format)
        loss_d, reg = self.d_phase(real, step)
        loss_g, pl = self.g_phase(real.shape[0], step)
        dist.average_buffers(self.D, self.world)
        dist.average_buffers(self.G, self.world)
        self.update_ema(step)
        self._sums += torch.stack([loss_d, loss_g, reg, pl]).detach().float()
        self._count += 1
        self.in_step = False

    def _ctx(self):
        return self._autocast if self._autocast is not None else contextlib.nullcontext()

    def d_phase(self, real: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """D's loss (+ lazy R1 or WGAN-GP), one optimizer step; returns (loss, regularizer)."""
        c, G, D, ada = self.config, self.G, self.D, self.ada
        D.requires_grad_(True)
        G.requires_grad_(False)
        do_r1 = c.loss == "stylegan2" and self.r1_gamma > 0 and step % c.r1_interval == 0
        z = torch.randn(real.shape[0], c.z_dim, device=self.device)
        with torch.no_grad(), self._ctx():
            fake = G(z, mixing_prob=c.style_mixing)
        # R1 is taken with respect to D's actual (augmented) input: the augmentation is not
        # differentiated twice, which CUDA's grid_sample (ADA's zoom) cannot do.
        real_in = ada(real).detach().requires_grad_(do_r1)
        with self._ctx():
            real_scores = D(real_in)
            fake_scores = D(ada(fake.float()))
        if c.loss == "stylegan2":
            loss = losses.d_logistic_loss(real_scores.float(), fake_scores.float())
            reg = losses.r1_penalty(real_scores.float(), real_in, self.r1_gamma, interval=c.r1_interval) \
                if do_r1 else self._zero
        else:
            loss = losses.wgan_d_loss(real_scores.float(), fake_scores.float())
            reg = losses.gradient_penalty(D, real_in.detach(), ada(fake.float()).detach(), weight=c.gp_weight) \
                + losses.epsilon_penalty(real_scores.float())
        self.opt_D.zero_grad(set_to_none=True)
        (loss + reg).backward()
        dist.allreduce_grads(D, self.world)
        self.opt_D.step()
        if c.augment == "ada":
            # Every rank must move p identically: feed the scores of the whole global batch.
            ada.accumulate(dist.gather(real_scores.detach().float(), self.world))
        return loss, reg

    def g_phase(self, n: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """G's loss through D (+ lazy path length), one optimizer step; returns (loss, penalty)."""
        c, G, D = self.config, self.G, self.D
        D.requires_grad_(False)
        G.requires_grad_(True)
        z = torch.randn(n, c.z_dim, device=self.device)
        with self._ctx():
            gen = G(z, mixing_prob=c.style_mixing)
            scores = D(self.ada(gen))
        loss = losses.g_nonsaturating_loss(scores.float()) if c.loss == "stylegan2" \
            else losses.wgan_g_loss(scores.float())
        pl = self._zero
        if c.loss == "stylegan2" and c.pl_weight > 0 and step % c.pl_interval == 0:
            ws = G.styles(torch.randn(max(1, n // 2), c.z_dim, device=self.device), mixing_prob=c.style_mixing)
            pl, _ = losses.path_length_penalty(G.synthesis(ws), ws, self.pl_state, weight=c.pl_weight,
                                               interval=c.pl_interval)
        self.opt_G.zero_grad(set_to_none=True)
        (loss + pl).backward()
        dist.allreduce_grads(G, self.world)
        self.opt_G.step()
        return loss, pl

    def update_ema(self, step: int) -> None:
        """G_ema <- lerp(G_ema, G, 1 - beta), beta from the half-life ``ema_kimg`` (ramped up)."""
        c = self.config
        nimg = (step + 1) * c.batch
        ema_nimg = c.ema_kimg * 1000
        if c.ema_rampup > 0:
            ema_nimg = min(ema_nimg, nimg * c.ema_rampup)
        beta = 0.5 ** (c.batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            ema_p, g_p = list(self.G_ema.parameters()), [p.detach() for p in self.G.parameters()]
            torch._foreach_lerp_(ema_p, g_p, 1.0 - beta)
            for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
                be.copy_(b)

    # ------------------------------------------------------------------------------ per tick
    def read_metrics(self) -> dict[str, float]:
        """Mean losses since the last call (one read from the device), plus ADA's ``augment_p``/``rt``."""
        sums = self._sums.tolist()
        n = max(self._count, 1)
        out = {(self.reg_name if k == "reg" else k): v / n for k, v in zip(LOSS_KEYS, sums)}
        self._sums.zero_()
        self._count = 0
        out["augment_p"] = self.ada.p
        if self.ada.r_t is not None:  # ADA's overfitting signal; absent (not NaN) when ADA is off
            out["rt"] = self.ada.r_t
        return out

    def losses_finite(self) -> bool:
        """Whether every loss summed since the last :meth:`read_metrics` is finite (one read)."""
        return bool(torch.isfinite(self._sums).all())

    # --------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Networks, optimizers, ADA and path-length state (plain tensors and numbers)."""
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                "augment": self.ada.state_dict(), "augment_p": self.ada.p, "pl_state": self.pl_state.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict` (a checkpoint)."""
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.ada.load_state_dict(state["augment"])
        self.pl_state.load_state_dict(state["pl_state"])

    def broadcast(self) -> None:
        """Rank 0's weights to every rank (identity for one process)."""
        for module in (self.G, self.D, self.G_ema):
            dist.broadcast_module(module, self.world)


def rng_state(device=None) -> dict:
    """torch's, numpy's and Python's global RNG states as checkpoint-safe values (+ CUDA's on a GPU)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    out = {"torch": torch.get_rng_state(),
           "numpy": [str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
           "python": [int(version), [int(v) for v in internal], gauss]}
    if device is not None and device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(rng: dict, device=None) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(rng["torch"])
    if "numpy" in rng:
        name, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    if "python" in rng:
        version, internal, gauss = rng["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    if "cuda" in rng and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
