"""``convae`` (prefix ``CAE_``): a residual convolutional autoencoder trained on the same unlabelled plate.

In the spirit of Wallace et al.'s autoencoder embeddings for cell painting: an encoder of
residual blocks halves the field down to 4x4 and a linear layer gives a 1024-d bottleneck (the
embedding); a mirrored decoder reconstructs the C-channel crop (``tanh``, since inputs are the
normalized [-1, 1] intensities). GroupNorm (not BatchNorm) keeps the embedding a pure function of
each image (batch-invariant) in training and evaluation alike.

Training (:func:`train_convae`, ``gandl-core train-convae DATA -o RUN``) reads random crops with
``PlateDataset(mode="random_crop")`` and minimises

    pixel loss (L1 by default, or MSE) + ssim_weight * (1 - SSIM) [+ perceptual_weight * perceptual]

with SSIM computed per channel (Gaussian window 11, sigma 1.5, data range 2; :func:`ssim`) and
averaged over channels. The optional perceptual term compares DenseNet-121 ``denseblock2``
activations of input and reconstruction (channels averaged to RGB, ImageNet statistics); it needs
a local torchvision ImageNet state_dict file (``--perceptual-weights``), never downloaded.

The run folder holds ``config.json``, ``checkpoints/ckpt-<kimg>.pt`` and ``checkpoints/latest.pt``
(kind ``"convae"``, see the checkpoint format in docs/architecture.md: ``model``, ``opt``,
``normalizer``, ``channel_names``, ``step``, ``kimg``, ``rng``, ``metrics``) and ``metrics.jsonl``.
Batches are a pure function of (seed, step), so ``resume=True`` continues exactly where an
interrupted run stopped (same weights as an uninterrupted run, up to float round-off).

:class:`ConvAEFeaturizer` ``.from_checkpoint(path)`` embeds plates with the trained encoder.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError, ConfigError, DataError
from ..progress import Progress, ProgressGenerator
from .base import ModuleFeaturizer, file_sha256

if TYPE_CHECKING:
    import torch

EMBED_DIM = 1024


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvAEConfig:
    """Everything a convae run needs; saved as ``config.json`` and inside every checkpoint."""

    data: str = ""                 # plate: folder, LoadData CSV or index .parquet
    out: str = ""                  # run folder
    channels: tuple[str, ...] | None = None  # select/reorder the data's channels by name (None = all)
    resolution: int = 64           # crop side (a power of two >= 8); the encoder halves it to 4x4
    scale: float = 1.0             # downscale fields before cropping (e.g. 0.5 for 1024^2 RxRx)
    width: int = 32                # feature maps of the first stage (doubled per stage, capped at 8x)
    embed_dim: int = EMBED_DIM     # bottleneck width = embedding width
    batch: int = 16                # crops per step
    kimg: float | None = None      # length in thousands of crops (takes precedence over epochs)
    epochs: float = 10.0           # length in passes over the sites (one crop per site per epoch)
    lr: float = 2e-4               # Adam learning rate
    pixel_loss: str = "l1"         # "l1" or "mse"
    ssim_weight: float = 1.0       # weight of (1 - SSIM)
    perceptual_weights: str | None = None  # torchvision DenseNet-121 state_dict for the perceptual term
    perceptual_weight: float = 0.1
    seed: int = 0
    checkpoint_every: int = 200    # steps between checkpoints (and at the end)
    num_workers: int = 0
    device: str = "cpu"

    def validate(self) -> "ConvAEConfig":
        """Check option values.

        Raises
        ------
        ConfigError
            Names the option and the allowed range.
        """
        r = int(self.resolution)
        if r < 8 or r & (r - 1):
            raise ConfigError(f"--resolution {self.resolution}: must be a power of two >= 8 (e.g. 64).")
        for name in ("width", "embed_dim", "batch", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1.")
        if self.kimg is not None and float(self.kimg) <= 0:
            raise ConfigError(f"--kimg {self.kimg}: must be > 0.")
        if self.kimg is None and float(self.epochs) <= 0:
            raise ConfigError(f"--epochs {self.epochs}: must be > 0.")
        if self.pixel_loss not in ("l1", "mse"):
            raise ConfigError(f"--pixel-loss {self.pixel_loss!r}: choose 'l1' or 'mse'.")
        if float(self.ssim_weight) < 0 or float(self.perceptual_weight) < 0:
            raise ConfigError("--ssim-weight / --perceptual-weight must be >= 0.")
        if not 0.0 < float(self.scale) <= 1.0:
            raise ConfigError(f"--scale {self.scale}: must be in (0, 1].")
        if float(self.lr) <= 0:
            raise ConfigError(f"--lr {self.lr}: must be > 0.")
        return self

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        d = asdict(self)
        d["channels"] = list(self.channels) if self.channels is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ConvAEConfig":
        """Inverse of :meth:`to_dict`; unknown keys are ignored (newer versions)."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if kw.get("channels") is not None:
            kw["channels"] = tuple(kw["channels"])
        return cls(**kw)


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------


def _build_classes():
    import torch
    from torch import nn
    from torch.nn import functional as F

    def norm(c: int) -> nn.Module:
        return nn.GroupNorm(min(8, c), c)

    class ResBlock(nn.Module):
        """Pre-activation residual block; ``resample`` = "down" (stride 2), "up" (x2) or None."""

        def __init__(self, cin: int, cout: int, resample: str | None) -> None:
            super().__init__()
            self.resample = resample
            self.n1, self.c1 = norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
            self.n2 = norm(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, padding=1, stride=2 if resample == "down" else 1)
            self.skip = nn.Conv2d(cin, cout, 1, stride=2 if resample == "down" else 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.resample == "up":
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            h = self.c1(F.silu(self.n1(x)))
            h = self.c2(F.silu(self.n2(h)))
            return (h + self.skip(x)) * math.sqrt(0.5)

    class ConvAE(nn.Module):
        """Residual conv autoencoder: ``encode [N,C,R,R] -> [N,embed_dim]``, ``decode`` back.

        Parameters
        ----------
        channels
            Image channels C.
        resolution
            Input side R (power of two >= 8): log2(R) - 2 down stages to 4x4.
        width
            Maps of the first stage; doubled per stage, capped at 8 x width.
        embed_dim
            Bottleneck (embedding) width.
        """

        def __init__(self, channels: int, resolution: int, width: int = 32, embed_dim: int = EMBED_DIM) -> None:
            super().__init__()
            self.channels, self.resolution, self.embed_dim = int(channels), int(resolution), int(embed_dim)
            n_stages = int(math.log2(resolution)) - 2
            widths = [min(width * 2 ** k, width * 8) for k in range(n_stages + 1)]
            self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
            self.down = nn.Sequential(*[ResBlock(widths[k], widths[k + 1], "down") for k in range(n_stages)])
            self.enc_norm = norm(widths[-1])
            self.to_embed = nn.Linear(widths[-1] * 16, embed_dim)
            self.from_embed = nn.Linear(embed_dim, widths[-1] * 16)
            self.up = nn.Sequential(*[ResBlock(widths[k + 1], widths[k], "up") for k in reversed(range(n_stages))])
            self.out_norm = norm(widths[0])
            self.to_img = nn.Conv2d(widths[0], channels, 3, padding=1)
            self._top = widths[-1]

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            if x.ndim != 4 or tuple(x.shape[1:]) != (self.channels, self.resolution, self.resolution):
                raise DataError(f"the autoencoder expects [N, {self.channels}, {self.resolution}, "
                                f"{self.resolution}] crops, got {list(x.shape)}; check the channels and "
                                "the resolution match the checkpoint.")
            h = F.silu(self.enc_norm(self.down(self.stem(x))))
            return self.to_embed(h.flatten(1))

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            h = self.from_embed(z).view(-1, self._top, 4, 4)
            return torch.tanh(self.to_img(F.silu(self.out_norm(self.up(h)))))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.decode(self.encode(x))

    return ConvAE


_CONVAE = None


def _convae_class():
    global _CONVAE
    if _CONVAE is None:
        _CONVAE = _build_classes()
    return _CONVAE


def build_convae(channels: int, resolution: int, *, width: int = 32, embed_dim: int = EMBED_DIM) -> "torch.nn.Module":
    """A fresh ``ConvAE`` (see :func:`_build_classes`); seed torch first for reproducibility.

    Raises
    ------
    ConfigError
        Resolution not a power of two >= 8, or non-positive sizes.
    """
    r = int(resolution)
    if r < 8 or r & (r - 1):
        raise ConfigError(f"--resolution {resolution}: must be a power of two >= 8.")
    if int(channels) < 1 or int(width) < 1 or int(embed_dim) < 1:
        raise ConfigError("convae: channels, width and embed_dim must be >= 1.")
    return _convae_class()(int(channels), r, int(width), int(embed_dim))


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def ssim(x: "torch.Tensor", y: "torch.Tensor", *, data_range: float = 2.0, window: int = 11,
         sigma: float = 1.5, reduce: bool = True) -> "torch.Tensor":
    """Structural similarity per channel (Wang et al. 2004), Gaussian window, 'valid' region.

    Parameters
    ----------
    x, y
        ``[N, C, H, W]`` images in the same units.
    data_range
        Value range (2 for [-1, 1] inputs): sets the stabilisers C1=(0.01 L)^2, C2=(0.03 L)^2.
    window, sigma
        Gaussian window side (shrunk to the image if larger, kept odd) and width.
    reduce
        ``True``: one number (mean over images and channels); ``False``: ``[N, C]``.

    Returns
    -------
    torch.Tensor
        SSIM in [-1, 1]; 1 means identical. Matches ``skimage.metrics.structural_similarity(...,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` on each channel.
    """
    import torch
    from torch.nn import functional as F

    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim: x and y must be [N,C,H,W] of the same shape, got {list(x.shape)} and {list(y.shape)}")
    c = x.shape[1]
    win = min(int(window), x.shape[-1], x.shape[-2])
    win -= 1 - win % 2  # odd
    r = win // 2
    coords = torch.arange(win, dtype=x.dtype, device=x.device) - r
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).expand(c, 1, win, win).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, k, groups=c)  # depthwise: each channel alone

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    per = s.mean(dim=(-2, -1))  # [N, C]
    return per.mean() if reduce else per


class _Perceptual:
    """DenseNet-121 denseblock2 feature distance (frozen ImageNet network from a local file)."""

    def __init__(self, weights: str, device: Any) -> None:
        import torch

        from .densenet import IMAGENET_MEAN, IMAGENET_STD, load_densenet121

        net = load_densenet121(weights)
        f = net.features
        self.trunk = torch.nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0, f.denseblock1, f.transition1,
                                         f.denseblock2).to(device).eval()
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def __call__(self, x: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        from torch.nn import functional as F

        def rgb(t):
            t = ((t + 1) * 0.5).mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
            return (t - self.mean) / self.std

        return F.mse_loss(self.trunk(rgb(x)), self.trunk(rgb(y)))


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _save(path: Path, state: dict) -> None:
    from ..checkpoint import save_checkpoint  # atomic, fsynced, ordinary permissions

    save_checkpoint(path, state)


def load_convae(path: str | os.PathLike, device: str = "cpu") -> tuple["torch.nn.Module", Any, dict]:
    """Load a convae checkpoint: ``(model, IntensityNormalizer, raw checkpoint dict)``.

    Raises
    ------
    CheckpointError
        Missing/unreadable file, wrong kind (e.g. a StyleGAN2 checkpoint) or bad weights.
    """
    from ..plates import IntensityNormalizer
    from .random_d import read_checkpoint

    state = read_checkpoint(path)
    where = state["_path"]
    if state.get("kind") != "convae" or "model" not in state:
        raise CheckpointError(f"{where} is not a convae checkpoint (kind={state.get('kind')!r}); give "
                              "<run>/checkpoints/latest.pt of 'gandl-core train-convae'.")
    cfg = ConvAEConfig.from_dict(state.get("config") or {})
    names = list(state.get("channel_names") or [])
    model = build_convae(len(names), cfg.resolution, width=cfg.width, embed_dim=cfg.embed_dim)
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: the weights do not fit its config ({str(exc).splitlines()[0]}).") from exc
    return model.to(device).eval(), IntensityNormalizer.from_dict(state["normalizer"]), state


class ConvAEFeaturizer(ModuleFeaturizer):
    """``CAE_`` embedding: the bottleneck of a trained convae (``ConvAE.encode``)."""

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu") -> "ConvAEFeaturizer":
        """Featurizer of a ``train-convae`` checkpoint (file or run folder).

        Raises
        ------
        CheckpointError
            See :func:`load_convae`.
        """
        model, normalizer, state = load_convae(path, device=device)
        info = {"name": "convae", "checkpoint": {"path": str(Path(state["_path"]).resolve()),
                                                 "sha256": file_sha256(state["_path"]),
                                                 "kimg": float(state.get("kimg", 0.0)),
                                                 "step": int(state.get("step", 0)), "kind": "convae"}}
        return cls(model, prefix="CAE_", n_features=model.embed_dim, channels=list(state["channel_names"]),
                   resolution=model.resolution, normalizer=normalizer,
                   forward=lambda m, x: m.encode(x), info=info, device=device, channels_last=False)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
#
# Split like the GAN loop (gan/step.py, gan/schedule.py): :class:`ConvAEStep` knows what a step
# is, :class:`_Schedule` when a checkpoint is due, :class:`_RunFolder` what a checkpoint holds,
# and :func:`train_convae` only wires them together around a short loop.


def _batch_indices(seed: int, step: int, n: int, batch: int) -> list[int]:
    """Sites of a step: a pure function of (seed, step), so resuming replays the same stream."""
    import numpy as np

    rng = np.random.default_rng([int(seed), int(step), 7])
    return rng.integers(0, n, size=batch).tolist()


class ConvAEStep:
    """The autoencoder, its Adam optimizer and the step that trains them: ``metrics = trainer(x)``.

    A step reconstructs the batch ``x`` and minimises ``pixel + ssim_weight * (1 - SSIM)
    [+ perceptual_weight * perceptual]``. :attr:`step` counts the steps done (restored by
    :meth:`load_state_dict`).

    Parameters
    ----------
    config
        The run's :class:`ConvAEConfig`; the weights are drawn from ``config.seed`` (torch's global
        RNG is left as it was).
    channels
        Image channels C.
    device
        Where the model lives.
    perceptual
        The optional :class:`_Perceptual` term (None: pixel + SSIM only).
    """

    def __init__(self, config: ConvAEConfig, channels: int, device: Any, perceptual: Any = None) -> None:
        import torch

        self.config, self.perceptual, self.step = config, perceptual, 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(config.seed))
            self.model = build_convae(channels, config.resolution, width=config.width, embed_dim=config.embed_dim)
        self.model.to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(0.9, 0.99))

    def __call__(self, x: "torch.Tensor") -> dict[str, float]:
        """One optimisation step on ``x`` [N, C, R, R]; returns ``loss``, ``pixel``, ``ssim`` (and
        ``perceptual``) as floats. A non-finite ``loss`` is returned, not raised: the caller decides."""
        from torch.nn import functional as F

        c = self.config
        y = self.model(x)
        pix = F.l1_loss(y, x) if c.pixel_loss == "l1" else F.mse_loss(y, x)
        s = ssim(y, x)
        loss = pix + c.ssim_weight * (1.0 - s)
        metrics = {"loss": 0.0, "pixel": float(pix.detach()), "ssim": float(s.detach())}
        if self.perceptual is not None:
            pl = self.perceptual(y, x)
            loss = loss + c.perceptual_weight * pl
            metrics["perceptual"] = float(pl.detach())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        metrics["loss"] = float(loss.detach())
        return metrics

    def state_dict(self) -> dict:
        """``model`` (CPU tensors), ``opt`` and ``step``: what a checkpoint needs to resume."""
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "opt": self.opt.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])


@dataclass(frozen=True)
class _Schedule:
    """Step counts of a run: its length and when a checkpoint is written."""

    batch: int
    n_sites: int           # batches draw from sites 0 .. n_sites - 1
    total: int             # steps of the whole run
    checkpoint_every: int

    @classmethod
    def of(cls, config: ConvAEConfig, n_sites: int) -> "_Schedule":
        """``config.kimg`` thousand crops, or ``config.epochs`` passes over ``n_sites``; >= 1 step."""
        total_imgs = float(config.kimg) * 1000.0 if config.kimg is not None else float(config.epochs) * n_sites
        return cls(config.batch, n_sites, max(1, int(math.ceil(total_imgs / config.batch))), config.checkpoint_every)

    def kimg(self, step: int) -> float:
        return step * self.batch / 1000.0

    def checkpoint_due(self, step: int) -> bool:
        return step % self.checkpoint_every == 0 or step == self.total


class _RunFolder:
    """``<out>/config.json``, ``metrics.jsonl`` and ``checkpoints/`` (``ckpt-<kimg>.pt`` + ``latest.pt``)."""

    def __init__(self, config: ConvAEConfig) -> None:
        self.config, self.root = config, Path(config.out)
        self.latest = self.root / "checkpoints" / "latest.pt"
        self.metrics = self.root / "metrics.jsonl"

    def start(self, names: list[str], normalizer: Any, schedule: _Schedule) -> None:
        """Create the folders and write ``config.json`` (options, channels, sites, steps)."""
        self.names, self.normalizer = names, normalizer
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "checkpoints").mkdir(exist_ok=True)
        cfg_text = json.dumps({**self.config.to_dict(), "channel_names": names, "n_sites": schedule.n_sites,
                               "total_steps": schedule.total}, indent=2)
        (self.root / "config.json").write_text(cfg_text)

    def save(self, trainer: ConvAEStep, metrics: dict) -> Path:
        """Write ``ckpt-<kimg>.pt`` and ``latest.pt`` (kind ``convae``); return the snapshot's path."""
        import torch

        weights = trainer.state_dict()
        state = {"format": "gandl-checkpoint", "version": 1, "kind": "convae", "config": self.config.to_dict(),
                 "channel_names": self.names, "normalizer": self.normalizer.to_dict(),
                 "model": weights["model"], "opt": weights["opt"],
                 "kimg": trainer.step * self.config.batch / 1000.0, "step": trainer.step,
                 "rng": {"torch": torch.get_rng_state(), "numpy": [], "python": []},
                 "metrics": {k: float(v) for k, v in metrics.items()}}
        path = self.root / "checkpoints" / f"ckpt-{state['kimg']:08.3f}.pt"
        _save(path, state)
        _save(self.latest, state)
        return path


def _check_inputs(config: ConvAEConfig, index: Any, resume: bool) -> Any:
    """Validate the options and the run folder; return the site index (built from ``config.data``
    when ``index`` is None)."""
    from ..plates import build_index

    config.validate()
    if not config.out:
        raise ConfigError("-o RUN_DIR is missing: give the folder the convae run writes to.")
    latest = _RunFolder(config).latest
    if index is None:
        if not config.data:
            raise ConfigError("DATA is missing: give the plate folder, LoadData CSV or index .parquet.")
        index = build_index(config.data, channels=list(config.channels) if config.channels else None)
    if len(index) == 0:
        raise DataError(f"{config.data or 'the index'}: no sites to train on.")
    if latest.exists() and not resume:
        raise ConfigError(f"{Path(config.out)} already holds a convae run ({latest}). Pass --resume to continue "
                          "it or choose another -o.")
    return index


def _perceptual_term(config: ConvAEConfig, device: Any) -> "_Perceptual | None":
    if not config.perceptual_weights:
        return None
    if not Path(config.perceptual_weights).expanduser().is_file():
        raise ConfigError(f"--perceptual-weights {config.perceptual_weights}: file not found. Give a "
                          "local torchvision DenseNet-121 state_dict (see docs/counterparts.md), or leave "
                          "the option out to train with pixel + SSIM loss only. Nothing is downloaded.")
    return _Perceptual(config.perceptual_weights, device)


def _resume(trainer: ConvAEStep, latest: Path, names: list[str], device: Any) -> Any:
    """Load ``latest`` into ``trainer`` (same architecture, batch, seed and channels required);
    return the run's normalizer."""
    if not latest.exists():
        raise CheckpointError(f"--resume: {latest} does not exist; start without --resume.")
    config = trainer.config
    model_prev, normalizer, state = load_convae(latest, device=str(device))
    prev = ConvAEConfig.from_dict(state["config"])
    arch = ("resolution", "width", "embed_dim", "seed", "batch", "scale")
    diff = [k for k in arch if getattr(prev, k) != getattr(config, k)]
    if diff or list(state["channel_names"]) != names:
        raise CheckpointError(f"{latest}: cannot resume with changed {diff or ['channels']}; keep the "
                              "run's options (see its config.json) or start a new -o folder.")
    trainer.load_state_dict({"model": model_prev.state_dict(), "opt": state["opt"], "step": state["step"]})
    return normalizer


def _train_loop(trainer: ConvAEStep, schedule: _Schedule, dataset: Any, folder: _RunFolder,
                device: Any) -> ProgressGenerator[Path]:
    """Steps until ``schedule.total``: a metrics line each, checkpoints when due, and one more
    checkpoint if the loop is stopped between two (so the work done can be resumed)."""
    import torch

    c = trainer.config
    trainer.model.train()
    t0, start = time.perf_counter(), trainer.step
    metrics: dict[str, float] = {}
    yield Progress(schedule.kimg(trainer.step), schedule.kimg(schedule.total), unit="kimg", stage="train-convae",
                   message=(f"resuming at step {trainer.step}" if trainer.step else ""))
    saved_step = trainer.step
    try:
        with open(folder.metrics, "a") as log:
            while trainer.step < schedule.total:
                picks = _batch_indices(c.seed, trainer.step, schedule.n_sites, c.batch)
                dataset.set_epoch(trainer.step)  # crop positions from (seed, site, step)
                metrics = trainer(torch.stack([dataset[i] for i in picks]).to(device))
                step = trainer.step
                if not math.isfinite(metrics["loss"]):
                    raise DataError(f"convae training diverged at step {step} (loss {metrics['loss']}); "
                                    "lower --lr or check the images for NaN/inf.")
                metrics["img/s"] = (step - start) * c.batch / max(time.perf_counter() - t0, 1e-9)
                log.write(json.dumps({"step": step, "kimg": schedule.kimg(step), **metrics}) + "\n")
                artifacts = {}
                if schedule.checkpoint_due(step):
                    log.flush()
                    artifacts["checkpoint"] = folder.save(trainer, metrics)
                    saved_step = step
                yield Progress(schedule.kimg(step), schedule.kimg(schedule.total), unit="kimg",
                               stage="train-convae", metrics=dict(metrics), artifacts=artifacts)
    finally:
        # A stop between steps leaves a resumable checkpoint of the work done.
        if trainer.step != saved_step and trainer.step > 0 and math.isfinite(metrics.get("loss", float("nan"))):
            folder.save(trainer, metrics)
    return folder.latest


def train_convae(config: ConvAEConfig, index: Any = None, *, resume: bool = False) -> ProgressGenerator[Path]:
    """Train a convae on an unlabelled plate; yields progress, returns ``checkpoints/latest.pt``.

    Parameters
    ----------
    config
        :class:`ConvAEConfig` (``data`` and ``out`` required unless ``index`` is given).
    index
        A site index to train on instead of ``config.data``.
    resume
        Continue from ``<out>/checkpoints/latest.pt`` (same config required except the length).

    Yields
    ------
    Progress
        ``unit="kimg"``, ``stage="train-convae"``, metrics ``loss``, ``pixel``, ``ssim``
        (and ``perceptual``), ``img/s``; ``artifacts["checkpoint"]`` when one is written.

    Returns
    -------
    pathlib.Path
        The final checkpoint (``<out>/checkpoints/latest.pt``).

    Raises
    ------
    ConfigError
        Bad options, missing ``out``, an existing run without ``resume``, or a missing
        ``perceptual_weights`` file (via :class:`CheckpointError`).
    DataError
        No sites / unreadable images.
    CheckpointError
        ``resume`` without a checkpoint, or a checkpoint from another architecture.
    """
    import torch

    from ..plates import IntensityNormalizer, PlateDataset, channel_names

    index = _check_inputs(config, index, resume)
    names = channel_names(index)
    device = torch.device(config.device)
    perceptual = _perceptual_term(config, device)
    schedule = _Schedule.of(config, len(index))
    trainer = ConvAEStep(config, len(names), device, perceptual)
    folder = _RunFolder(config)
    if resume:
        normalizer = _resume(trainer, folder.latest, names, device)
    else:
        normalizer = IntensityNormalizer().fit(index, seed=config.seed)
    folder.start(names, normalizer, schedule)
    dataset = PlateDataset(index, normalizer, config.resolution, mode="random_crop", seed=config.seed,
                           scale=config.scale)
    return (yield from _train_loop(trainer, schedule, dataset, folder, device))
