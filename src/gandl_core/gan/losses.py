"""GAN losses and regularizers as plain functions on discriminator outputs.

* Non-saturating logistic loss (Goodfellow et al. 2014) for G and D -- StyleGAN2's default.
* R1 penalty (Mescheder et al. 2018): ``gamma/2 * E ||grad_x D(x)||^2`` on reals; with lazy
  regularization (StyleGAN2 sec. 4) the caller evaluates it every ``interval`` steps and multiplies
  by ``interval`` -- :func:`r1_penalty` takes that factor.
* Path-length regularization (StyleGAN2 sec. 3.2): keeps ``||J_w^T y||`` close to its running mean
  ``a``; the mean lives in :class:`PathLengthState` (checkpointable).
* WGAN-GP (Gulrajani et al. 2017) critic and generator losses, gradient penalty and the small
  epsilon drift term of Karras et al. 2018 that keeps critic outputs near zero.

All losses return scalar tensors (means over the batch) and are differentiable; none calls
``backward``. Shapes: scores are [N] or [N, 1]; images [N, C, H, W].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = [
    "g_nonsaturating_loss",
    "d_logistic_loss",
    "r1_penalty",
    "PathLengthState",
    "path_length_penalty",
    "wgan_d_loss",
    "wgan_g_loss",
    "gradient_penalty",
    "epsilon_penalty",
]


def _flat(scores: torch.Tensor, name: str) -> torch.Tensor:
    if scores.ndim == 2 and scores.shape[1] == 1:
        return scores[:, 0]
    if scores.ndim != 1:
        raise ValueError(f"{name} must be discriminator scores of shape [N] or [N, 1], got {list(scores.shape)}")
    return scores


def g_nonsaturating_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``E[softplus(-D(G(z)))]`` = ``-E[log sigmoid(D(G(z)))]``.

    Parameters
    ----------
    fake_scores
        D's logits on generated images, [N] or [N, 1].

    Returns
    -------
    Scalar tensor; decreases as D rates the fakes more real.
    """
    return F.softplus(-_flat(fake_scores, "fake_scores")).mean()


def d_logistic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Logistic discriminator loss ``E[softplus(D(fake))] + E[softplus(-D(real))]``.

    Parameters
    ----------
    real_scores, fake_scores
        D's logits on real and generated images, [N] or [N, 1] (batch sizes may differ).

    Returns
    -------
    Scalar tensor; 2 log 2 when D outputs 0 everywhere, -> 0 as D separates perfectly.
    """
    return F.softplus(_flat(fake_scores, "fake_scores")).mean() + F.softplus(-_flat(real_scores, "real_scores")).mean()


def _input_grad(scores: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    if not inputs.requires_grad:
        raise ValueError("the images must have requires_grad=True before the discriminator is run on them")
    (grad,) = torch.autograd.grad(outputs=scores.sum(), inputs=inputs, create_graph=True)
    return grad


def r1_penalty(real_scores: torch.Tensor, real_images: torch.Tensor, gamma: float, *, interval: int = 1) -> torch.Tensor:
    """R1 gradient penalty ``interval * gamma/2 * E_x ||grad_x D(x)||^2`` on real images.

    Parameters
    ----------
    real_scores
        D's logits on ``real_images`` (computed after ``real_images.requires_grad_(True)``).
    real_images
        The real batch [N, C, H, W] that produced ``real_scores``.
    gamma
        R1 weight (StyleGAN2-ADA heuristic: 0.0002 * resolution^2 / batch).
    interval
        Lazy-regularization interval: the penalty is evaluated every ``interval`` D steps and
        scaled by it so its average strength is unchanged.

    Returns
    -------
    Scalar tensor with a graph (call ``backward`` to apply it).

    Raises
    ------
    ConfigError
        If ``gamma`` < 0 or ``interval`` < 1.
    """
    if gamma < 0:
        raise ConfigError(f"option 'r1_gamma' = {gamma!r} must be >= 0.")
    if interval < 1:
        raise ConfigError(f"option 'r1_interval' = {interval!r} must be an integer >= 1.")
    grad = _input_grad(_flat(real_scores, "real_scores"), real_images)
    return grad.square().sum(dim=(1, 2, 3)).mean() * (gamma / 2.0) * interval


@dataclass
class PathLengthState:
    """Running mean ``a`` of the path length ``||J_w^T y||`` for path-length regularization.

    Parameters
    ----------
    decay
        EMA decay of the mean (0.01 in StyleGAN2: ``mean <- mean + decay * (batch_mean - mean)``).
    mean
        Current running mean (0 until the first update).
    """

    decay: float = 0.01
    mean: float | torch.Tensor = 0.0  # a 0-dim tensor keeps the update on the device

    def state_dict(self) -> dict:
        """Plain-number state for checkpoints."""
        return {"decay": float(self.decay), "mean": float(self.mean)}

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict` output (a tensor mean stays a tensor on its device)."""
        self.decay = float(state["decay"])
        if isinstance(self.mean, torch.Tensor):
            self.mean = torch.full_like(self.mean, float(state["mean"]))
        else:
            self.mean = float(state["mean"])


def path_length_penalty(
    images: torch.Tensor,
    ws: torch.Tensor,
    state: PathLengthState,
    *,
    weight: float = 2.0,
    interval: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Path-length regularizer ``interval * weight * E (||J_w^T y|| - a)^2`` (StyleGAN2 eq. 4).

    ``y`` is Gaussian noise scaled by ``1/sqrt(H*W)`` so the path length does not depend on the
    image size; ``J_w^T y`` is one vector-Jacobian product through the synthesis network. The
    running mean ``a`` in ``state`` is updated in place (outside the graph).

    Parameters
    ----------
    images
        Generator output [N, C, H, W] computed from ``ws`` (with the graph kept).
    ws
        The styles [N, num_ws, w_dim] (or [N, w_dim]) the images were rendered from; must require grad.
    state
        Running-mean holder, updated in place.
    weight
        Regularization weight (2 in StyleGAN2).
    interval
        Lazy-regularization interval (the penalty is scaled by it).

    Returns
    -------
    (penalty, path_lengths)
        Scalar penalty with a graph, and the detached per-sample path lengths [N].
    """
    if weight < 0:
        raise ConfigError(f"option 'pl_weight' = {weight!r} must be >= 0.")
    if interval < 1:
        raise ConfigError(f"option 'pl_interval' = {interval!r} must be an integer >= 1.")
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got {list(images.shape)}")
    if not ws.requires_grad:
        raise ValueError("ws must require grad: render the images from ws with the graph kept")
    h, w = images.shape[2], images.shape[3]
    y = torch.randn_like(images) / math.sqrt(h * w)
    (grad,) = torch.autograd.grad(outputs=(images * y).sum(), inputs=ws, create_graph=True)
    # Sum over the style dimension, mean over the per-layer copies (as in the paper's code-free
    # description: the norm of the gradient w.r.t. one w, averaged over layers).
    sq = grad.square().sum(dim=-1)
    if sq.ndim == 2:
        sq = sq.mean(dim=1)
    lengths = (sq + 1e-8).sqrt()
    if isinstance(state.mean, torch.Tensor):
        # The training loop keeps the mean on the device: updated there, never read back per step
        # (a non-finite mean shows up in the penalty, which the loop checks once per tick).
        batch_mean = lengths.detach().mean().to(state.mean.dtype)
        state.mean = state.mean + state.decay * (batch_mean - state.mean)
    else:
        batch_mean = float(lengths.detach().mean())
        new_mean = state.mean + state.decay * (batch_mean - state.mean)
        if not math.isfinite(new_mean):
            raise FloatingPointError("path length became non-finite: lower the learning rate or pl_weight")
        state.mean = new_mean
    penalty = (lengths - state.mean).square().mean() * weight * interval
    return penalty, lengths.detach()


def wgan_d_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Wasserstein critic loss ``E[D(fake)] - E[D(real)]`` (minimized by the critic)."""
    return _flat(fake_scores, "fake_scores").mean() - _flat(real_scores, "real_scores").mean()


def wgan_g_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Wasserstein generator loss ``-E[D(fake)]``."""
    return -_flat(fake_scores, "fake_scores").mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real_images: torch.Tensor,
    fake_images: torch.Tensor,
    *,
    weight: float = 10.0,
    target: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty ``weight * E (||grad D(x_hat)|| - target)^2`` at random interpolates.

    Parameters
    ----------
    critic
        Callable mapping images [N, C, H, W] to scores [N] or [N, 1].
    real_images, fake_images
        Batches of equal shape; ``fake_images`` is detached here (the penalty trains D only).
    weight
        lambda (10 in Gulrajani et al.).
    target
        Target gradient norm (1 for 1-Lipschitz; Karras et al. 2018 used 750 with weight 1/750^2
        for a faster-moving critic).
    generator
        Optional torch.Generator for the interpolation weights.

    Returns
    -------
    Scalar penalty with a graph through the critic's parameters.
    """
    if real_images.shape != fake_images.shape:
        raise ValueError(
            f"real and fake batches must have the same shape, got {list(real_images.shape)} and {list(fake_images.shape)}"
        )
    if weight < 0:
        raise ConfigError(f"option 'gp_weight' = {weight!r} must be >= 0.")
    n = real_images.shape[0]
    if generator is None:  # on the device: no host-to-device copy in the training step
        eps = torch.rand(n, 1, 1, 1, device=real_images.device).to(real_images.dtype)
    else:
        eps = torch.rand(n, 1, 1, 1, generator=generator, device="cpu").to(real_images.device, real_images.dtype)
    x_hat = (eps * real_images.detach() + (1 - eps) * fake_images.detach()).requires_grad_(True)
    scores = _flat(critic(x_hat), "critic output")
    grad = _input_grad(scores, x_hat)
    norms = (grad.flatten(1).square().sum(dim=1) + 1e-12).sqrt()
    return (norms - target).square().mean() * weight


def epsilon_penalty(real_scores: torch.Tensor, epsilon: float = 0.001) -> torch.Tensor:
    """Drift term ``epsilon * E[D(real)^2]`` that keeps a Wasserstein critic's outputs bounded."""
    if epsilon < 0:
        raise ConfigError(f"option 'wgan_epsilon' = {epsilon!r} must be >= 0.")
    return _flat(real_scores, "real_scores").square().mean() * epsilon
