"""The Featurizer protocol shared by every embedding, and the GAN-DL featurizer.

A *featurizer* turns a batch of normalized image tiles ``[N, C, H, W]`` into feature vectors
``[N, F]``. The streaming engine (:func:`gandl_core.embed.embed_iter`) reads and normalizes the
plate, cuts or resizes fields to the featurizer's ``resolution`` and writes the table; the
featurizer only decides *what* is computed. Any object with these attributes works:

=============== =============================================================================
``prefix``      feature column prefix, e.g. ``"GAN_"`` -> columns ``GAN_000 .. GAN_511``
``n_features``  F, the width of the vectors
``channels``    channel (stain) names the featurizer expects, in order; ``None`` = any
``resolution``  tile side the featurizer consumes, or ``None`` for whole fields
``normalizer``  an ``IntensityNormalizer`` (``None``: the engine fits one on the index)
``identity()``  JSON-able dict naming the featurizer (and checkpoint) for the table's metadata
``__call__``    ``batch [N,C,H,W] float32 -> [N,F] float32``, a pure function of each image
=============== =============================================================================

``__call__`` must be *batch-invariant* (the vector of one image never depends on its batchmates)
so tables do not change with the batch size or the number of loader workers.

:class:`ModuleFeaturizer` wraps any ``torch.nn.Module`` method as a featurizer (eval mode, no
grad, device handling); :class:`GanFeaturizer` is the GAN-DL embedding: the 512-d fc layer of a
trained StyleGAN2 discriminator, loaded from a checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

from ..errors import CheckpointError, ConfigError

#: Discriminator features embedded unless asked otherwise (see GanFeaturizer).
DEFAULT_FEATURES = "multiscale"
FEATURE_KINDS = ("final", "multiscale")


def check_feature_kind(kind: str) -> str:
    """``kind`` if it names a discriminator readout (:data:`FEATURE_KINDS`), else a ConfigError."""
    if kind not in FEATURE_KINDS:
        raise ConfigError(f"--features {kind!r}: choose 'final' (the paper's 512-d fc layer) or 'multiscale' "
                          "(mean and spread of every discriminator stage).")
    return kind

if TYPE_CHECKING:  # torch stays a lazy import: napari and the CLI parser import this module
    import torch


@runtime_checkable
class Featurizer(Protocol):
    """Structural type of every featurizer (see the module docstring)."""

    prefix: str
    n_features: int
    channels: list[str] | None
    resolution: int | None
    normalizer: Any

    def identity(self) -> dict:
        """JSON-able description recorded in the embeddings table's metadata."""
        ...

    def __call__(self, batch: "torch.Tensor") -> "torch.Tensor":
        """Features ``[N, n_features]`` of a batch ``[N, C, H, W]`` (batch-invariant)."""
        ...


def feature_names(prefix: str, n_features: int) -> list[str]:
    """Column names ``<prefix>000 .. <prefix>{n-1}`` (at least 3 digits, zero padded).

    Parameters
    ----------
    prefix
        Column prefix, e.g. ``"GAN_"``.
    n_features
        Number of features.

    Returns
    -------
    list[str]
    """
    width = max(3, len(str(max(n_features - 1, 0))))
    return [f"{prefix}{i:0{width}d}" for i in range(n_features)]


def check_channels(featurizer: Any, channels: Sequence[str], *, source: str = "the data") -> None:
    """Check that the data's channels are the featurizer's, in the same order.

    Parameters
    ----------
    featurizer
        Any featurizer; ``featurizer.channels is None`` accepts every channel list.
    channels
        Channel names of the index, in order.
    source
        How to name the data in the message (e.g. its path).

    Raises
    ------
    CheckpointError
        If the lists differ; the message names both lists and the ``--channels`` fix.
    """
    expected = getattr(featurizer, "channels", None)
    if expected is None:
        return
    expected, channels = list(expected), list(channels)
    if expected == channels:
        return
    ident = featurizer.identity() if hasattr(featurizer, "identity") else {}
    where = (ident.get("checkpoint") or {}).get("path") if isinstance(ident.get("checkpoint"), dict) else None
    what = f"the checkpoint {where}" if where else f"the featurizer {getattr(featurizer, 'prefix', '')!r}"
    missing = [c for c in expected if c not in channels]
    if missing:
        fix = (f"the data lacks {missing}: embed data that has these stains, or use a checkpoint "
               "trained on the data's channels")
    else:
        fix = ("select and reorder the data's channels with --channels " + ",".join(expected)
               + " (Python: plates.build_index(source, channels=[...]))")
    raise CheckpointError(
        f"{what} expects channels {expected} but {source} has channels {channels}; {fix}."
    )


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks (checkpoints can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


class ModuleFeaturizer:
    """Featurizer around a ``torch.nn.Module``: eval mode, ``torch.no_grad``, device handling.

    Parameters
    ----------
    module
        The network; put in eval mode and moved to ``device``.
    forward
        ``forward(module, batch) -> [N, F]``; default ``module(batch)``.
    prefix, n_features, channels, resolution, normalizer
        The protocol attributes (see the module docstring).
    info
        Extra JSON-able entries for :meth:`identity` (name, checkpoint, ...).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; batches are moved there, features come back on CPU.
    scale
        Fields are downscaled by this factor before tiling/resizing (1 = native pixels); a
        network trained on downscaled fields must see them at the same scale.
    channels_last
        Run convolutions in NHWC memory format: ~1.4x faster discriminator forward on CPU
        (docs/benchmarks.md); the numbers differ from NCHW only by float round-off.
    """

    def __init__(
        self,
        module: "torch.nn.Module",
        *,
        prefix: str,
        n_features: int,
        channels: Sequence[str] | None,
        resolution: int | None,
        normalizer: Any = None,
        forward: Callable[["torch.nn.Module", "torch.Tensor"], "torch.Tensor"] | None = None,
        info: dict | None = None,
        device: str = "cpu",
        channels_last: bool = True,
        scale: float = 1.0,
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.channels_last = bool(channels_last)
        # Downscale factor applied to fields before tiling (the training data's PlateDataset scale).
        self.scale = float(scale)
        # Field mode the network was trained for (None: the engine's default, tiles).
        self.field_mode: str | None = None
        self.module = module.to(self.device).eval()
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.prefix = prefix
        self.n_features = int(n_features)
        self.channels = list(channels) if channels is not None else None
        self.resolution = resolution
        self.normalizer = normalizer
        self._forward = forward
        self._info = dict(info or {})

    def identity(self) -> dict:
        """Name, prefix, width, channels and resolution plus the ``info`` given at construction."""
        out = {"name": type(self).__name__, "prefix": self.prefix, "n_features": self.n_features,
               "channels": self.channels, "resolution": self.resolution, "scale": self.scale}
        out.update(self._info)
        return out

    def to(self, device: str) -> "ModuleFeaturizer":
        """Move the network to ``device``; returns self."""
        import torch

        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def __call__(self, batch: "torch.Tensor") -> "torch.Tensor":
        """Features ``[N, n_features]`` (float32, CPU) of ``batch [N, C, H, W]``."""
        import torch

        with torch.no_grad():
            x = batch.to(self.device, dtype=torch.float32, non_blocking=True)
            if self.channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            y = self._forward(self.module, x) if self._forward is not None else self.module(x)
        if y.ndim != 2 or y.shape[0] != batch.shape[0] or y.shape[1] != self.n_features:
            raise RuntimeError(f"{self.prefix} featurizer returned shape {list(y.shape)}, "
                               f"expected [{batch.shape[0]}, {self.n_features}]")
        return y.float().cpu()


class _DiscriminatorFeatures:
    """``forward`` of a discriminator featurizer: ``D.features(x, kind)`` (picklable, unlike a lambda)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __call__(self, module: "torch.nn.Module", x: "torch.Tensor") -> "torch.Tensor":
        return module.features(x, self.kind)


class GanFeaturizer(ModuleFeaturizer):
    """GAN-DL embedding: features of a StyleGAN2 discriminator (``Discriminator.features``).

    Build it with :meth:`from_checkpoint`. ``features="final"`` is the paper's embedding, the fc
    layer (``GAN_000 .. GAN_511``); ``"multiscale"`` is the mean and spread of every stage of the
    discriminator's trunk (``Discriminator.features``; 576 columns for ``cpu-small``), the default
    because it does better on real plates (docs/embedding.md). The kind is recorded in
    :meth:`identity` as ``features``.
    """

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu", *,
                        prefix: str = "GAN_", features: str = DEFAULT_FEATURES) -> "GanFeaturizer":
        """Load the discriminator, normalizer and channel names of a training checkpoint.

        Parameters
        ----------
        path
            A ``gandl-checkpoint`` file (``checkpoints/latest.pt`` of a run) or a run folder
            (then ``<folder>/checkpoints/latest.pt``).
        device
            Where the network runs.
        prefix
            Column prefix (``"RandD_"`` for a random-weight discriminator, for instance).
        features
            ``"final"`` (the paper's fc layer) or ``"multiscale"`` (every stage's mean and spread).

        Returns
        -------
        GanFeaturizer

        Raises
        ------
        CheckpointError
            If the file is missing, not a checkpoint, or lacks the discriminator.
        """
        from .. import checkpoint as ckpt

        path = Path(path)
        if path.is_dir() and (path / "checkpoints" / "latest.pt").is_file():
            path = path / "checkpoints" / "latest.pt"
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file. Give a .pt file written by "
                                  "'gandl-core train' (e.g. <run>/checkpoints/latest.pt).")
        D, normalizer, info = ckpt.load_discriminator(path, device=device)
        info = dict(info or {})
        names = info.get("channel_names") or (list(normalizer.channels) if getattr(normalizer, "channels", None) else None)
        if names is None:
            raw = ckpt.load_checkpoint(path)
            names = list(raw.get("channel_names") or [])
        ident = {
            "name": "gan-dl",
            "features": check_feature_kind(features),
            "checkpoint": {"path": str(path.resolve()), "sha256": info.get("sha256") or file_sha256(path),
                           "kimg": _jsonable(info.get("kimg")), "step": _jsonable(info.get("step")),
                           "kind": info.get("kind", "stylegan2")},
        }
        cfg = info.get("config") if isinstance(info.get("config"), dict) else {}
        # TrainConfig.field_scale: fields were downscaled before cropping in training.
        scale = cfg.get("field_scale") or cfg.get("scale") or info.get("scale") or 1.0
        fz = cls(D, prefix=prefix, n_features=D.feature_width(features), channels=list(names),
                 resolution=int(D.resolution), normalizer=normalizer,
                 forward=_DiscriminatorFeatures(features), info=ident, device=device, scale=float(scale))
        # Trained on whole fields shrunk to the resolution (TrainConfig.crop_mode="resize"): embed alike.
        if cfg.get("crop_mode") == "resize":
            fz.field_mode = "resize"
        return fz

    @classmethod
    def from_discriminator(cls, discriminator: "torch.nn.Module", normalizer: Any,
                           channels: Sequence[str], *, prefix: str = "GAN_", device: str = "cpu",
                           info: dict | None = None, scale: float = 1.0,
                           features: str = DEFAULT_FEATURES) -> "GanFeaturizer":
        """Wrap an in-memory discriminator (e.g. during training, or random weights)."""
        return cls(discriminator, prefix=prefix, n_features=discriminator.feature_width(features),
                   channels=list(channels), resolution=int(discriminator.resolution),
                   normalizer=normalizer, forward=_DiscriminatorFeatures(features),
                   info={"name": "gan-dl", **(info or {}), "features": check_feature_kind(features)},
                   device=device, scale=scale)


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
