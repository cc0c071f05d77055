"""GAN losses: values against closed forms, signs, and the regularizers' analytic cases."""

from __future__ import annotations

import math

import pytest
import torch

from gandl_core.errors import ConfigError
from gandl_core.gan.losses import (
    PathLengthState,
    d_logistic_loss,
    epsilon_penalty,
    g_nonsaturating_loss,
    gradient_penalty,
    path_length_penalty,
    r1_penalty,
    wgan_d_loss,
    wgan_g_loss,
)


def test_logistic_losses_closed_form_and_direction() -> None:
    zero = torch.zeros(8, 1)
    assert d_logistic_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert g_nonsaturating_loss(zero).item() == pytest.approx(math.log(2))
    good_d = d_logistic_loss(torch.full((8,), 5.0), torch.full((8,), -5.0))
    bad_d = d_logistic_loss(torch.full((8,), -5.0), torch.full((8,), 5.0))
    assert good_d.item() == pytest.approx(2 * math.log1p(math.exp(-5)), rel=1e-6)
    assert bad_d.item() == pytest.approx(2 * math.log1p(math.exp(5)), rel=1e-6)
    # G's loss falls as D rates fakes more real; gradient w.r.t. the score is negative.
    s = torch.tensor([-2.0, 0.0, 3.0], requires_grad=True)
    g_nonsaturating_loss(s).backward()
    assert (s.grad < 0).all()
    assert g_nonsaturating_loss(torch.tensor([4.0])) < g_nonsaturating_loss(torch.tensor([-4.0]))
    # Extreme logits stay finite (softplus, not log(sigmoid)).
    assert torch.isfinite(d_logistic_loss(torch.tensor([-1e4]), torch.tensor([1e4])))
    with pytest.raises(ValueError, match="fake_scores"):
        g_nonsaturating_loss(torch.zeros(2, 2))


class _Linear(torch.nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).sum(dim=(1, 2, 3)).unsqueeze(1) + 0.3


def test_r1_of_linear_d_is_analytic_squared_norm() -> None:
    torch.manual_seed(0)
    w = torch.randn(2, 4, 4)
    D = _Linear(w.clone())
    x = torch.randn(5, 2, 4, 4, requires_grad=True)
    pen = r1_penalty(D(x), x, gamma=10.0)
    expected = 10.0 / 2 * float(w.square().sum())
    assert pen.item() == pytest.approx(expected, rel=1e-5)
    # Lazy form scales by the interval.
    x2 = x.detach().requires_grad_(True)
    assert r1_penalty(D(x2), x2, gamma=10.0, interval=16).item() == pytest.approx(16 * expected, rel=1e-5)
    # It has a graph to D's weights: d/dw (gamma/2 ||w||^2) = gamma * w.
    D.w.grad = None
    x3 = x.detach().requires_grad_(True)
    r1_penalty(D(x3), x3, gamma=10.0).backward()
    torch.testing.assert_close(D.w.grad, 10.0 * w, rtol=1e-5, atol=1e-5)
    assert r1_penalty(D(x3), x3, gamma=0.0).item() == 0.0


def test_r1_errors() -> None:
    D = _Linear(torch.ones(1, 2, 2))
    x = torch.randn(2, 1, 2, 2)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(D(x), x, gamma=1.0)
    with pytest.raises(ConfigError, match="r1_gamma"):
        r1_penalty(D(x), x, gamma=-1.0)
    with pytest.raises(ConfigError, match="r1_interval"):
        r1_penalty(D(x), x, gamma=1.0, interval=0)


def test_wgan_gp_zero_at_unit_gradient_norm_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4)
    unit = _Linear(w / w.norm())  # gradient norm exactly 1 everywhere
    real, fake = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    assert gradient_penalty(unit, real, fake).item() == pytest.approx(0.0, abs=1e-8)
    steep = _Linear(3 * w / w.norm())  # norm 3: penalty = 10 * (3-1)^2
    gp = gradient_penalty(steep, real, fake, weight=10.0)
    assert gp.item() == pytest.approx(40.0, rel=1e-5)
    gp.backward()
    assert steep.w.grad is not None and float(steep.w.grad.norm()) > 0
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(unit, real, fake[:2])


def test_wgan_losses_and_drift() -> None:
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([[-1.0], [1.0]])
    assert wgan_d_loss(real, fake).item() == pytest.approx(0.0 - 3.0)
    assert wgan_g_loss(fake).item() == pytest.approx(0.0)
    assert epsilon_penalty(real, 0.001).item() == pytest.approx(0.001 * 10.0)
    with pytest.raises(ConfigError, match="wgan_epsilon"):
        epsilon_penalty(real, -1.0)


def test_path_length_linear_synthesis_and_state() -> None:
    torch.manual_seed(0)
    n, num_ws, w_dim, c, h = 256, 2, 8, 2, 4
    A = torch.randn(w_dim, c * h * h)
    ws = torch.randn(n, num_ws, w_dim, requires_grad=True)
    # Linear "synthesis": image = (sum over layers of w) @ A.  J^T y = A y per layer, norm^2 of a
    # Gaussian y/sqrt(HW) projected through A has expectation ||A||_F^2 / (H W).
    imgs = (ws.sum(dim=1) @ A).view(n, c, h, h)
    state = PathLengthState(decay=0.01)
    pen, lengths = path_length_penalty(imgs, ws, state, weight=2.0)
    assert lengths.shape == (n,)
    expected_sq = float(A.square().sum()) / (h * h)
    assert float(lengths.square().mean()) == pytest.approx(expected_sq, rel=0.15)
    assert state.mean == pytest.approx(0.01 * float(lengths.mean()), rel=1e-6)
    assert pen.item() > 0 and torch.isfinite(pen)
    # With the mean converged, the penalty is the (small) variance of the lengths * weight.
    state.mean = float(lengths.mean())
    state.decay = 0.0
    imgs2 = (ws.sum(dim=1) @ A).view(n, c, h, h)
    pen2, l2 = path_length_penalty(imgs2, ws, state, weight=2.0, interval=4)
    assert pen2.item() == pytest.approx(4 * 2.0 * float((l2 - state.mean).square().mean()), rel=1e-5)
    assert pen2.item() < pen.item() * 4
    restored = PathLengthState()
    restored.load_state_dict(state.state_dict())
    assert restored == state


def test_path_length_errors() -> None:
    ws = torch.randn(2, 3)
    with pytest.raises(ValueError, match="require grad"):
        path_length_penalty(torch.randn(2, 1, 4, 4), ws, PathLengthState())
    with pytest.raises(ConfigError, match="pl_weight"):
        path_length_penalty(torch.randn(2, 1, 4, 4), ws.requires_grad_(True), PathLengthState(), weight=-1)


def test_losses_train_a_tiny_stylegan2_to_the_data() -> None:
    """End to end: networks + logistic losses + lazy R1 + style mixing + ADA fit a simple 2-stain pattern."""
    from gandl_core.gan.augment import AdaptiveAugment
    from gandl_core.gan.stylegan2 import Discriminator, Generator

    torch.manual_seed(0)
    G = Generator(8, 2, z_dim=16, w_dim=16, channel_base=64, channel_max=16)
    D = Discriminator(8, 2, channel_base=64, channel_max=16, feature_dim=32)
    opt_g = torch.optim.Adam(G.parameters(), lr=0.005, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=0.005, betas=(0.0, 0.99))
    # Fixed p (translation/zoom/colour would blur this tiny pattern; dihedral ones would not leak at p<1).
    ada = AdaptiveAugment(p=0.2, target=None, xflip=False, rotate90=False, translate=0.0, scale_std=0.0)

    def reals(n: int) -> torch.Tensor:
        # Stain 0: bright top-left quadrant on a dark field; stain 1: uniformly dark.
        x = torch.full((n, 2, 8, 8), -0.5) + 0.05 * torch.randn(n, 2, 8, 8)
        x[:, 0, :4, :4] += 1.0
        return x

    def stats(f: torch.Tensor) -> list[float]:
        return [float(f[:, 0, :4, :4].mean()), float(f[:, 0, 4:, 4:].mean()), float(f[:, 1].mean())]

    for i in range(250):
        r = reals(16)
        fake = G(torch.randn(16, 16)).detach()
        d_loss = d_logistic_loss(D(ada(r)), D(ada(fake)))
        opt_d.zero_grad()
        d_loss.backward()
        if i % 4 == 0:
            x = r.requires_grad_(True)
            r1_penalty(D(ada(x)), x, gamma=0.1, interval=4).backward()
        opt_d.step()
        D.requires_grad_(False)
        g_loss = g_nonsaturating_loss(D(ada(G(torch.randn(16, 16), mixing_prob=0.5))))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
    G.eval()
    with torch.no_grad():
        got = stats(G(torch.randn(256, 16), noise_mode="const"))
    assert got == pytest.approx([0.5, -0.5, -0.5], abs=0.15)
