"""The training configuration: one frozen, typed dataclass, saved as JSON beside the checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# Fields that may differ between a run and its resume (everything else must match).
RESUMABLE_FIELDS = frozenset({"kimg", "out_dir", "workers", "device", "snapshot_kimg", "fakes_kimg",
                              "quality_kimg", "quality_samples", "tick_kimg", "data", "time_limit_s",
                              "keep_checkpoints", "cache_gib"})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a GAN-DL training run. Build with :meth:`from_preset`."""

    # --- data -----------------------------------------------------------------------------
    data: str = ""                      # plate (any form build_index accepts); recorded for provenance
    out_dir: str = "run"                # run folder: config.json, checkpoints/, fakes/, metrics.jsonl
    resolution: int = 32                # training crop size in px (power of two >= 8)
    field_scale: float = 1.0            # downscale factor applied to fields before cropping (keeps cells a sensible size)
    crop_mode: str = "random"           # "random": random resolution-px crops; "resize": whole field shrunk to resolution
    channels: int = 5                   # image channels (stains); set from the data
    channel_names: tuple[str, ...] = () # stain names in channel order; set from the data
    norm_sites: int = 64                # sites sampled to fit the intensity normalizer
    intensity_gamma: float = 1.0        # power on the [0,1]-scaled intensities (0.5 = sqrt stretch; see IntensityNormalizer)
    # --- networks (GAN-DL: mapping depth 3, style 512) ------------------------------------
    z_dim: int = 512                    # latent size
    w_dim: int = 512                    # style vector size
    mapping_layers: int = 3             # mapping network depth (8 in StyleGAN2, 3 in GAN-DL)
    channel_base: int = 32768           # feature maps at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512              # cap on feature maps
    g_input: str = "const"              # G's 4x4 input: "const" (StyleGAN2) or "mapped" (+ a map from w; see stylegan2.INPUT_MODES)
    mbstd_group: int = 4                # minibatch-stddev group size
    feature_dim: int = 512              # discriminator embedding size (GAN-DL: 512)
    # --- optimisation ---------------------------------------------------------------------
    batch: int = 32                     # total images per step (over all processes)
    kimg: float = 1000.0                # training length in thousands of real images shown to D
    lr_g: float = 0.0025                # generator Adam learning rate
    lr_d: float = 0.0025                # discriminator Adam learning rate
    beta1: float = 0.0                  # Adam beta1 (StyleGAN2: 0)
    beta2: float = 0.99                 # Adam beta2 (StyleGAN2: 0.99)
    loss: str = "stylegan2"             # "stylegan2" (non-saturating logistic + R1 + path length) or "wgan-gp"
    r1_gamma: float = -1.0              # R1 weight; < 0: ADA heuristic 0.0002 * resolution^2 / batch
    r1_interval: int = 16               # lazy R1: every N D steps
    pl_weight: float = 2.0              # path-length regularization weight (0 disables)
    pl_interval: int = 4                # lazy path-length: every N G steps
    gp_weight: float = 10.0             # WGAN-GP gradient penalty weight
    style_mixing: float = 0.9           # probability of style mixing per sample
    ema_kimg: float = 10.0              # half-life of the generator EMA, kimg
    ema_rampup: float = 0.05            # EMA half-life ramp-up as a fraction of images seen (None-like: 0 = off)
    # --- augmentation (ADA) ---------------------------------------------------------------
    augment: str = "ada"                # "ada" (adaptive p), "fixed" (p = augment_p), "none"
    augment_p: float = 0.0              # initial / fixed augmentation probability
    augment_target: float = 0.6         # ADA target for r_t = E[sign(D(real))]
    augment_speed_kimg: float = 100.0   # images for p to go 0 -> 1, kimg
    # --- bookkeeping ----------------------------------------------------------------------
    seed: int = 0                       # seed for weights, latents, data order and crops
    device: str = "auto"                # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    amp: bool = True                    # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True          # channels-last memory format (faster convolutions)
    workers: int = 0                    # DataLoader worker processes
    tick_kimg: float = 0.2              # metrics line every N kimg
    snapshot_kimg: float = 5.0          # checkpoint every N kimg
    fakes_kimg: float = 5.0             # fakes grid every N kimg
    quality_kimg: float = 5.0           # SWD quality metric every N kimg (0 disables)
    quality_samples: int = 256          # real crops and fakes per SWD measurement (floor 0.059 at 256, 0.085 at 64)
    time_limit_s: float = 0.0           # stop (with a checkpoint) after this many seconds; 0 = train to kimg
    keep_checkpoints: int = 3           # snapshots ckpt-*.pt kept (the newest; best.pt = lowest SWD is kept too); 0 = all
    cache_gib: float = 2.0              # memory for decoded fields (read once, then cropped in memory); 0 = no cache
    preset: str = "custom"              # name of the preset this came from

    # ------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        _check_numbers(self)
        _check_resolution(self.resolution)
        if self.loss not in {"stylegan2", "wgan-gp"}:
            raise ConfigError(f"option 'loss' = {self.loss!r}: choose 'stylegan2' or 'wgan-gp'.")
        if not 0 < float(self.intensity_gamma) <= 4:
            raise ConfigError(f"option 'intensity_gamma' = {self.intensity_gamma!r} must be in (0, 4] (1 = linear, "
                              "0.5 = square root).")
        if self.g_input not in {"const", "mapped"}:
            raise ConfigError(f"option 'g_input' = {self.g_input!r}: choose 'const' (StyleGAN2) or 'mapped'.")
        if self.augment not in {"ada", "fixed", "none"}:
            raise ConfigError(f"option 'augment' = {self.augment!r}: choose 'ada', 'fixed' or 'none'.")
        for name in ("batch", "channels", "z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max",
                     "r1_interval", "pl_interval", "norm_sites", "quality_samples"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"option '{name}' = {getattr(self, name)!r} must be >= 1.")
        if self.batch < self.mbstd_group:
            raise ConfigError(
                f"option 'batch' = {self.batch} is smaller than the minibatch-stddev group ({self.mbstd_group}): "
                f"use --batch >= {self.mbstd_group} or a smaller mbstd_group.")
        if not self.kimg > 0:
            raise ConfigError(f"option 'kimg' = {self.kimg!r} must be > 0.")
        if self.crop_mode not in {"random", "resize"}:
            raise ConfigError(f"option 'crop_mode' = {self.crop_mode!r}: choose 'random' (crops) or 'resize' "
                              "(whole field).")
        if not 0 < self.field_scale <= 1:
            raise ConfigError(f"option 'field_scale' = {self.field_scale!r} must be in (0, 1].")
        if self.channel_names and len(self.channel_names) != self.channels:
            raise ConfigError(f"option 'channel_names' has {len(self.channel_names)} names but channels = {self.channels}.")

    # ------------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str = "cpu-small", **overrides: Any) -> "TrainConfig":
        """A config from a named preset (see :data:`PRESETS`) with keyword overrides.

        Raises
        ------
        ConfigError
            Unknown preset or option.
        """
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}.")
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise ConfigError(f"unknown training option(s) {bad}; valid: {sorted(known)}.")
        values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}, "preset": name}
        if "channel_names" in values:
            values["channel_names"] = tuple(values["channel_names"])
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        if "channel_names" in changes:
            changes["channel_names"] = tuple(changes["channel_names"])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["channel_names"] = list(self.channel_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys are refused with the list of valid ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ConfigError(f"unknown training option(s) {bad} in the config; valid: {sorted(known)}.")
        d = dict(d)
        d["channel_names"] = tuple(d.get("channel_names", ()))
        return cls(**d)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as JSON (atomically, ordinary permissions)."""
        from ..tables import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2))

    def diff(self, other: "TrainConfig", ignore: frozenset[str] = RESUMABLE_FIELDS) -> dict[str, tuple]:
        """Fields (outside ``ignore``) whose values differ: {name: (self, other)}."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}


# Ranges of the float options (inclusive bounds; None = unbounded). Every float must be finite.
_FLOAT_RANGES: dict[str, tuple[float | None, float | None, str]] = {
    "lr_g": (0.0, None, "> 0"), "lr_d": (0.0, None, "> 0"), "beta1": (0.0, 1.0, "in [0, 1)"),
    "beta2": (0.0, 1.0, "in [0, 1)"), "pl_weight": (0.0, None, ">= 0"), "gp_weight": (0.0, None, ">= 0"),
    "style_mixing": (0.0, 1.0, "in [0, 1]"), "ema_kimg": (0.0, None, ">= 0"), "ema_rampup": (0.0, None, ">= 0"),
    "augment_p": (0.0, 1.0, "in [0, 1]"), "augment_target": (0.0, 1.0, "in [0, 1]"),
    "augment_speed_kimg": (0.0, None, "> 0"), "tick_kimg": (0.0, None, "> 0"), "snapshot_kimg": (0.0, None, "> 0"),
    "fakes_kimg": (0.0, None, "> 0"), "quality_kimg": (0.0, None, ">= 0 (0 disables)"),
    "time_limit_s": (0.0, None, ">= 0 (0 = no limit)"), "cache_gib": (0.0, None, ">= 0 (0 = no cache)"),
}
_OPEN_LOW = {"lr_g", "lr_d", "augment_speed_kimg", "tick_kimg", "snapshot_kimg", "fakes_kimg"}
_OPEN_HIGH = {"beta1", "beta2"}
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _check_numbers(cfg: "TrainConfig") -> None:
    """Every float option finite and in range, counts whole numbers, the device a device name: a
    ConfigError naming the option (``--lr-g nan`` must not start a run that diverges at step 1)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.type in ("float", float) and not isinstance(value, bool):
            try:
                x = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"option '{f.name}' = {value!r} is not a number.") from None
            if not math.isfinite(x):
                raise ConfigError(f"option '{f.name}' = {value!r} must be a finite number.")
            lo, hi, words = _FLOAT_RANGES.get(f.name, (None, None, ""))
            if (lo is not None and (x < lo or (x == lo and f.name in _OPEN_LOW))) or \
                    (hi is not None and (x > hi or (x == hi and f.name in _OPEN_HIGH))):
                raise ConfigError(f"option '{f.name}' = {value!r} must be {words}.")
        elif f.type in ("int", int) and f.name != "resolution":
            if isinstance(value, bool) or not isinstance(value, (int, np_integer())) or \
                    (f.name in ("workers", "seed", "keep_checkpoints") and value < 0):
                raise ConfigError(f"option '{f.name}' = {value!r} must be a whole number"
                                  f"{' >= 0' if f.name in ('workers', 'seed', 'keep_checkpoints') else ''}.")
    if not isinstance(cfg.device, str) or not _DEVICE.fullmatch(cfg.device):
        raise ConfigError(f"option 'device' = {cfg.device!r} is not a device: use auto, cpu, cuda or cuda:N.")


def np_integer() -> type:
    """numpy's integer base class when numpy is loaded (configs built from arrays), else int."""
    import sys

    np = sys.modules.get("numpy")
    return np.integer if np is not None else int


def _check_resolution(resolution: int) -> None:
    """Power of two >= 8, checked here (not via stylegan2) so a config can be built without torch:
    napari's training dock and the CLI parser make configs at start-up."""
    try:
        r = int(resolution)
    except (TypeError, ValueError):
        r = -1
    if r != resolution or r < 8 or (r & (r - 1)) != 0:
        raise ConfigError(f"option 'resolution' = {resolution!r} is not supported: the StyleGAN2 networks need a "
                          "power of two >= 8 (8, 16, 32, 64, 128, 256, 512, 1024). Use --resolution 32, 64, ...")


PRESETS: dict[str, dict[str, Any]] = {
    # Seconds on a CPU: unit tests and smoke runs.
    "cpu-tiny": dict(resolution=16, z_dim=32, w_dim=32, channel_base=256, channel_max=32, feature_dim=512,
                     batch=8, kimg=0.05, mbstd_group=4, tick_kimg=0.016, snapshot_kimg=0.024, fakes_kimg=0.024,
                     quality_kimg=0.024, quality_samples=32, r1_interval=4, pl_interval=2, ema_kimg=0.01,
                     augment_speed_kimg=5.0),
    # A first look on a laptop / 2-core CPU: a few minutes, controls separable, nucleus- and cytoplasm-like fakes.
    # Sized on a 2-core CPU: ~8-10 s/kimg idle, so 24 kimg in ~4 min; 32 px crops at native pixel size (2-4 cells).
    # g_input "mapped": with StyleGAN2's constant input every fake of a short run had the same layout.
    # augment "none": ADA smoothed the SWD curve but cut the demo's Z' from 0.22/0.26 to 0.09/0.13 (seeds
    # 0/1); a few minutes on a few hundred fields is too short for D to overfit.
    # lr_g 0.0005 (a slower G than D, "two time-scale" updates): with equal rates G caught up within ~5 kimg
    # on a real plate (BBBC016), D's loss sat at ln 4 and its features got worse with training; with a
    # slower G, D keeps learning and its features beat the equal-rate ones (Z' -0.24 vs -1.41 at 12-20 kimg).
    # docs/training.md, "How cpu-small was tuned", has the measurements.
    "cpu-small": dict(resolution=32, z_dim=128, w_dim=128, channel_base=1024, channel_max=64, feature_dim=512,
                      batch=16, kimg=24.0, lr_g=0.0005, lr_d=0.0025, tick_kimg=0.16, snapshot_kimg=2.0,
                      fakes_kimg=1.0, quality_kimg=2.0, ema_kimg=1.0, augment="none", augment_speed_kimg=20.0,
                      pl_weight=0.0, g_input="mapped"),
    # A GPU run of sensible size.
    "gpu-256": dict(resolution=256, channel_base=16384, channel_max=512, batch=32, kimg=5000,
                    tick_kimg=4, snapshot_kimg=100, fakes_kimg=50, quality_kimg=100, workers=8),
    # GAN-DL as published: StyleGAN2 with a 3-layer mapping network and 512-d styles.
    "paper": dict(resolution=512, channel_base=32768, channel_max=512, batch=32, kimg=25000,
                  tick_kimg=4, snapshot_kimg=200, fakes_kimg=100, quality_kimg=200, workers=8),
}
