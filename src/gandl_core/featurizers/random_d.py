"""``random-d`` (prefix ``RandD_``): the GAN-DL discriminator with seeded random weights.

The control that tells how much of GAN-DL's separability comes from *training* rather than from
the architecture (random convolutional features are a strong baseline on cell images). The
network is exactly GAN-DL's :class:`gandl_core.gan.stylegan2.Discriminator`, built with the same
architecture as

* a given training checkpoint (``--checkpoint``: resolution, channel_base, channel_max,
  mbstd_group and feature width from its ``config``; its normalizer and channel names are reused
  so both embeddings see identical inputs), or
* a ``TrainConfig`` preset (``--preset cpu-small``, the default without a checkpoint), or
* explicit ``resolution`` / ``channel_base`` / ``channel_max``,

and initialised from ``torch.manual_seed(seed)`` (the equalized-learning-rate layers draw N(0, 1)
weights, scaled at run time, as at the start of GAN training). Without a checkpoint the
normalizer is ``None`` and the engine fits one on the plate (``IntensityNormalizer`` defaults).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import CheckpointError, ConfigError
from .base import DEFAULT_FEATURES, GanFeaturizer, file_sha256

#: Used when neither a checkpoint nor a preset gives the architecture (and no train module).
DEFAULT_RESOLUTION = 32
#: Architecture used without a checkpoint or preset: the CPU-sized GAN-DL preset.
DEFAULT_PRESET = "cpu-small"
_ARCH_KEYS = ("resolution", "channel_base", "channel_max", "mbstd_group", "feature_dim", "field_scale")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a ``gandl-checkpoint`` dict (weights only), resolving a run folder to its latest.pt.

    Parameters
    ----------
    path
        Checkpoint file or run folder.

    Returns
    -------
    dict
        The checkpoint dict with ``"_path"`` (resolved file) added.

    Raises
    ------
    CheckpointError
        Missing or unreadable file, or not a dict.
    """
    path = Path(path).expanduser()
    if path.is_dir() and (path / "checkpoints" / "latest.pt").is_file():
        path = path / "checkpoints" / "latest.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file. Give a .pt file written by 'gandl-core "
                              "train' / 'train-convae' (e.g. <run>/checkpoints/latest.pt) or its run folder.")
    try:
        from ..checkpoint import load_checkpoint  # the shared loader, once it exists
    except ImportError:
        load_checkpoint = None
    try:
        if load_checkpoint is not None:
            state = load_checkpoint(path)
        else:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise CheckpointError(f"{path}: cannot be read as a gandl checkpoint ({exc}).") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a gandl checkpoint (expected a dict).")
    state = dict(state)
    state["_path"] = str(path)
    return state


def architecture(*, checkpoint: dict | None = None, preset: str | None = None,
                 resolution: int | None = None, channel_base: int | None = None,
                 channel_max: int | None = None) -> dict:
    """Discriminator architecture from a checkpoint, a preset, or explicit values (that order).

    Explicit values override what the checkpoint/preset says.

    Returns
    -------
    dict
        ``resolution``, ``channel_base``, ``channel_max``, ``mbstd_group``, ``feature_dim`` and
        ``field_scale`` (fields are downscaled by it before tiling, as in training).

    Raises
    ------
    ConfigError
        Unknown preset (names the available ones).
    """
    arch: dict[str, Any] = {"resolution": DEFAULT_RESOLUTION, "channel_base": 32768, "channel_max": 512,
                            "mbstd_group": 4, "feature_dim": 512, "field_scale": 1.0}
    if checkpoint is not None:
        cfg = dict(checkpoint.get("config") or {})
        arch.update({k: cfg[k] for k in _ARCH_KEYS if cfg.get(k) is not None})
        if "D" in checkpoint and isinstance(checkpoint["D"], dict) and "fc.weight" in checkpoint["D"]:
            arch["feature_dim"] = int(checkpoint["D"]["fc.weight"].shape[0])
    else:
        preset = preset or DEFAULT_PRESET
        try:
            from ..gan.train_config import PRESETS, TrainConfig
        except ImportError as exc:
            raise ConfigError(f"--preset {preset}: training presets are not available in this install "
                              "(gandl_core.gan.train missing); give --resolution instead.") from exc
        if preset not in PRESETS:
            raise ConfigError(f"--preset {preset!r}: choose one of {sorted(PRESETS)}.")
        cfg = TrainConfig.from_preset(preset).to_dict()
        arch.update({k: cfg[k] for k in _ARCH_KEYS if cfg.get(k) is not None})
    for k, v in (("resolution", resolution), ("channel_base", channel_base), ("channel_max", channel_max)):
        if v is not None:
            arch[k] = int(v)
    return {k: (float(v) if k == "field_scale" else int(v)) for k, v in arch.items()}


def random_d_featurizer(channels: Sequence[str], *, checkpoint: str | os.PathLike | None = None,
                        preset: str | None = None, resolution: int | None = None,
                        channel_base: int | None = None, channel_max: int | None = None,
                        seed: int = 0, normalizer: Any = None, device: str = "cpu",
                        features: str = DEFAULT_FEATURES) -> GanFeaturizer:
    """A ``RandD_`` featurizer: GAN-DL's discriminator with seeded random weights.

    Parameters
    ----------
    channels
        Channel names of the data (with a checkpoint, they must equal the checkpoint's).
    checkpoint
        Training checkpoint (or run folder) whose architecture and normalizer to copy; its
        trained weights are *not* used.
    preset
        ``TrainConfig`` preset name giving the architecture (when no checkpoint).
    resolution, channel_base, channel_max
        Explicit architecture values (override checkpoint/preset).
    seed
        Seed of the random weights (same seed, same features).
    normalizer
        ``IntensityNormalizer`` to use; default the checkpoint's, else ``None`` (fitted on the plate).
    device
        Where the network runs.
    features
        Which readout (``"final"`` fc layer or ``"multiscale"``), as for the trained discriminator:
        compare like with like.

    Returns
    -------
    GanFeaturizer
        Prefix ``RandD_``; width as :meth:`Discriminator.feature_width` of ``features``.

    Raises
    ------
    CheckpointError
        Unreadable checkpoint, or its channels differ from ``channels``.
    ConfigError
        Bad architecture values or preset.
    """
    import torch

    from ..gan.stylegan2 import Discriminator

    channels = [str(c) for c in channels]
    if not channels:
        raise ConfigError("random-d: the data has no channels.")
    state = read_checkpoint(checkpoint) if checkpoint is not None else None
    arch = architecture(checkpoint=state, preset=preset, resolution=resolution,
                        channel_base=channel_base, channel_max=channel_max)
    info: dict[str, Any] = {"name": "random-d", "seed": int(seed), "architecture": arch}
    if state is not None:
        names = [str(c) for c in (state.get("channel_names") or [])]
        if names and names != channels:
            raise CheckpointError(
                f"{state['_path']} was trained on channels {names} but the data has {channels}; select "
                "the same channels (--channels " + ",".join(names) + ").")
        if normalizer is None and state.get("normalizer"):
            from ..plates import IntensityNormalizer

            normalizer = IntensityNormalizer.from_dict(state["normalizer"])
        info["architecture_from"] = {"path": str(Path(state["_path"]).resolve()),
                                     "sha256": file_sha256(state["_path"])}
    else:
        info["architecture_from"] = {"preset": preset or DEFAULT_PRESET}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        D = Discriminator(arch["resolution"], len(channels), channel_base=arch["channel_base"],
                          channel_max=arch["channel_max"], mbstd_group=arch["mbstd_group"],
                          feature_dim=arch["feature_dim"])
    return GanFeaturizer.from_discriminator(D, normalizer, channels, prefix="RandD_", device=device, info=info,
                                           scale=arch["field_scale"], features=features)
