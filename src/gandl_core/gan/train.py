"""GAN-DL training: the StyleGAN2 game on unlabelled plates, as a generator that yields progress.

``train(config)`` runs the loop and yields :class:`~gandl_core.progress.Progress` reports (unit
kimg) with losses, augmentation strength, speed and time left; occasionally a fakes grid, the SWD
quality metric and the checkpoint path. It returns the final checkpoint path. Closing the generator
(napari's Stop, Ctrl-C in the CLI) or an error writes a last valid checkpoint first.

One step, with B = ``config.batch`` images (split over processes under torchrun):

1. D step: real crops and G's fakes (style mixing) pass through the same adaptive augmentation;
   logistic loss (or WGAN critic loss + gradient penalty + drift); every ``r1_interval`` steps the
   lazy R1 penalty on reals is added, scaled by the interval. ADA's ``p`` follows r_t.
2. G step: non-saturating loss (or -critic); every ``pl_interval`` steps the lazy path-length
   penalty. Lazy regularization scales Adam's lr and betas by ``interval / (interval + 1)``
   (StyleGAN2, appendix B).
3. EMA generator update with half-life ``ema_kimg`` (ramped up over the first images).

Reproducibility: weights, latents, augmentation and noise come from torch's global RNG seeded with
``seed`` (and the rank); the data order and crop positions are pure functions of (seed, step), so a
resumed run replays exactly the images the uninterrupted run would have used. RNG state is saved in
checkpoints.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) each process takes ``batch / world`` images per
step; gradients are averaged with ``all_reduce`` before every optimizer step (explicitly rather than
with DDP, because the lazy-regularization passes use different subsets of parameters); buffers are
averaged every step; rank 0 writes all files. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import copy
import json
import math
import random
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import ConfigError, DataError
from ..progress import Progress, ProgressGenerator
from .train_config import PRESETS, RESUMABLE_FIELDS, TrainConfig  # noqa: F401  (re-exported)

__all__ = ["TrainConfig", "PRESETS", "train", "fakes_grid", "composite_rgb"]

# False-colour composite per stain name (fluorescence convention); unknown stains cycle the rest.
STAIN_COLOURS = {
    "DNA": (0.2, 0.4, 1.0), "ER": (0.1, 1.0, 0.2), "Actin": (1.0, 0.2, 0.1), "AGP": (1.0, 0.2, 0.1),
    "RNA": (1.0, 0.85, 0.1), "Golgi": (1.0, 0.1, 0.9), "Mito": (1.0, 0.1, 0.9),
}
_CYCLE = [(0.2, 0.4, 1.0), (0.1, 1.0, 0.2), (1.0, 0.2, 0.1), (1.0, 0.85, 0.1), (1.0, 0.1, 0.9), (0.1, 0.9, 1.0)]


# ------------------------------------------------------------------------------------------
# Data: deterministic batches of random crops
# ------------------------------------------------------------------------------------------


class _CropSource:
    """Dataset whose items are (site, crop seed): a random crop of ``resolution`` from the field.

    Crops are made here (in the worker) from the normalized, optionally downscaled field, so the
    crop position is a pure function of the crop seed and not of which worker runs it.
    """

    def __init__(self, base, resolution: int, crop_mode: str = "random") -> None:
        self.base, self.resolution, self.crop_mode = base, resolution, crop_mode

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: tuple[int, int]):
        import torch

        i, seed = item
        x = self.base.field(i)  # [C,H,W] normalized
        r = self.resolution
        h, w = x.shape[-2:]
        if self.crop_mode == "resize":
            # The whole field shrunk to r x r (GAN-DL on RxRx19a saw whole fields): area averaging
            # antialiases when shrinking; bilinear if a field is smaller than r.
            mode = "area" if (h >= r and w >= r) else "bilinear"
            kw = {} if mode == "area" else {"align_corners": False}
            return torch.nn.functional.interpolate(x[None], size=(r, r), mode=mode, **kw)[0].contiguous()
        if h < r or w < r:
            name = Path(str(self.base.paths[i][0])).name if hasattr(self.base, "paths") else f"site {i}"
            raise DataError(f"{name}: field {h}x{w} (after field_scale) is smaller than the training "
                            f"resolution {r}; lower --resolution, raise --field-scale or use crop_mode='resize'.")
        rng = np.random.default_rng(seed)
        y0, x0 = int(rng.integers(0, h - r + 1)), int(rng.integers(0, w - r + 1))
        return x[:, y0:y0 + r, x0:x0 + r].contiguous()


class _StepBatches:
    """Batch sampler: for global step s, items [s*B, (s+1)*B) of the concatenated per-epoch
    permutations, keeping this rank's share. A pure function of (seed, step): resumable."""

    def __init__(self, n: int, batch: int, seed: int, start_step: int, rank: int, world: int) -> None:
        self.n, self.batch, self.seed, self.start = n, batch, seed, start_step
        self.rank, self.world = rank, world
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch, 11]).permutation(self.n)}
        return self._perms[epoch]

    def batch_at(self, step: int) -> list[tuple[int, int]]:
        pos = np.arange(step * self.batch, (step + 1) * self.batch)
        items = [(int(self._perm(int(p // self.n))[p % self.n]), int(self.seed * 1_000_003 + p)) for p in pos]
        per = self.batch // self.world
        return items[self.rank * per:(self.rank + 1) * per]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start
        while True:
            yield self.batch_at(step)
            step += 1


# ------------------------------------------------------------------------------------------
# Images for people: grids and composites
# ------------------------------------------------------------------------------------------


def composite_rgb(img: np.ndarray, channel_names: list[str] | tuple[str, ...]) -> np.ndarray:
    """False-colour RGB [H,W,3] in [0,1] of one image [C,H,W] in about [-1,1], stains additively blended."""
    x = np.clip((np.asarray(img, np.float32) + 1.0) / 2.0, 0.0, 1.0)
    rgb = np.zeros(x.shape[1:] + (3,), np.float32)
    for k in range(x.shape[0]):
        name = channel_names[k] if k < len(channel_names) else ""
        colour = STAIN_COLOURS.get(name, _CYCLE[k % len(_CYCLE)])
        rgb += x[k][..., None] * np.asarray(colour, np.float32)[None, None]
    return np.clip(rgb, 0.0, 1.0)


def fakes_grid(images: np.ndarray, channel_names, *, cols: int = 8, scale: int = 1) -> np.ndarray:
    """One uint8 RGB picture: a row block per channel (grey) and a false-colour composite row block.

    ``images`` [N,C,H,W] in about [-1,1]. Channels are labelled by their row order (see the PNG's
    sidecar text in the run folder's README) — the composite uses fluorescence colours per stain.
    ``scale`` enlarges every pixel to scale x scale (nearest neighbour), so 32-px crops are big enough
    to look at; the run's PNGs use ``png_scale(resolution)``.
    """
    if scale > 1:
        images = np.repeat(np.repeat(np.asarray(images), scale, axis=2), scale, axis=3)
    n, c, h, w = images.shape
    cols = min(cols, n)
    rows = int(math.ceil(n / cols))
    pad = 2
    blocks = []
    for k in list(range(c)) + ["rgb"]:
        canvas = np.zeros((rows * (h + pad), cols * (w + pad), 3), np.float32)
        for i in range(n):
            r, q = divmod(i, cols)
            tile = composite_rgb(images[i], channel_names) if k == "rgb" else \
                np.repeat(np.clip((images[i, k] + 1) / 2, 0, 1)[..., None], 3, axis=2)
            canvas[r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = tile
        blocks.append(canvas)
    sep = np.full((4, blocks[0].shape[1], 3), 0.35, np.float32)
    out = np.concatenate([x for b in blocks for x in (b, sep)][:-1], axis=0)
    return (out * 255).astype(np.uint8)


def png_scale(resolution: int) -> int:
    """Pixel enlargement of the fakes/reals PNGs: tiles of at least 64 screen pixels."""
    return max(1, 64 // int(resolution))


def _save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    from ..tables import atomic_write

    with atomic_write(path, suffix=".png") as tmp:
        Image.fromarray(rgb).save(tmp)


# ------------------------------------------------------------------------------------------
# Distributed helpers
# ------------------------------------------------------------------------------------------


def _local_device(device):
    """Under torchrun each process owns one GPU: cuda -> cuda:LOCAL_RANK (and make it current, which
    NCCL collectives and all_gather_object rely on). CPU and single-process runs are unchanged."""
    import torch

    if device.type != "cuda" or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.index is None:
        if local >= torch.cuda.device_count():
            raise ConfigError(f"torchrun started {os.environ.get('LOCAL_WORLD_SIZE', '?')} processes on this node but "
                              f"only {torch.cuda.device_count()} GPU(s) are visible: use --nproc-per-node "
                              f"{torch.cuda.device_count()}.")
        device = torch.device("cuda", local)
    torch.cuda.set_device(device)
    return device


def _dist_setup(device):
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _allreduce_grads(module, world: int) -> None:
    import torch.distributed as dist

    if world <= 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def _average_buffers(module, world: int) -> None:
    import torch.distributed as dist

    if world <= 1:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= world


def _broadcast_module(module, world: int) -> None:
    import torch.distributed as dist

    if world <= 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, 0)


def _gather(t, world: int):
    """Concatenate a same-shaped tensor from every rank (identity for one process)."""
    import torch
    import torch.distributed as dist

    if world <= 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def _save_json(path: Path, obj: dict) -> None:
    from ..tables import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=2))


def _np_state_list() -> list:
    """numpy's global RNG state as plain lists/numbers (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]


def _py_state_list() -> list:
    version, internal, gauss = random.getstate()
    return [int(version), [int(v) for v in internal], gauss]


def _set_np_py_state(rng: dict) -> None:
    if "numpy" in rng:
        name, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    if "python" in rng:
        version, internal, gauss = rng["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))


def _write_rank_digest(folder: Path, rank: int, modules: dict, augment_p: float, step: int) -> None:
    import hashlib

    digest = {}
    for name, module in modules.items():
        h = hashlib.sha256()
        for key, t in sorted(module.state_dict().items()):
            h.update(key.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        digest[name] = h.hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    _save_json(folder / f"rank{rank}.json", {**digest, "augment_p": augment_p, "step": step})


def _checksum(module) -> float:
    return float(sum(p.detach().double().sum() for p in module.parameters()))


# ------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------


def _autocast(device, amp: bool):
    """The mixed-precision context of the training step: bf16 autocast on CUDA, None elsewhere.

    (A function so that tests can run the same bf16 code path with CPU autocast.)
    """
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if (amp and device.type == "cuda") else None


def _resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"option 'device' = {name!r} but no CUDA device is available; use --device cpu.")
    return dev


def _prepare_run(config: TrainConfig, index, resume: bool):
    """Index the data, fit or reload the normalizer, reconcile config with data and any resume state."""
    from ..checkpoint import check_compatible, load_checkpoint
    from ..plates import IntensityNormalizer, build_index, channel_names

    out = Path(config.out_dir)
    latest = out / "checkpoints" / "latest.pt"
    state = None
    if resume:
        if not latest.is_file():
            raise ConfigError(f"--resume: {latest} does not exist; start a new run without --resume.")
        state = load_checkpoint(latest)
        old = TrainConfig.from_dict(state["config"])
        # Channels come from the data: compare after filling them in.
        cmp_cfg = config.replace(channels=old.channels, channel_names=old.channel_names)
        diff = old.diff(cmp_cfg)
        if diff:
            lines = ", ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
            raise ConfigError(f"--resume: the options differ from the run in {out} ({lines}). Resume with the "
                              "same options (only kimg, device, workers and snapshot intervals may change) "
                              "or start a new run in another folder.")
    elif latest.exists():
        raise ConfigError(f"{out} already holds a run (checkpoints/latest.pt): pass --resume to continue it "
                          "or choose another output folder.")
    if index is None:
        if not config.data:
            raise ConfigError("no training data: give DATA (a plate folder, LoadData CSV or index parquet).")
        index = build_index(config.data)
    elif not hasattr(index, "columns"):
        index = build_index(index)
    if len(index) == 0:
        raise DataError("the training index has no sites.")
    names = channel_names(index)
    if state is not None:
        check_compatible(state, names, source="the training data")
        normalizer = IntensityNormalizer.from_dict(state["normalizer"])
    else:
        if config.channel_names and list(config.channel_names) != names:
            raise ConfigError(f"option 'channel_names' {list(config.channel_names)} differ from the data's "
                              f"channels {names}; select channels when indexing.")
        normalizer = IntensityNormalizer(gamma=config.intensity_gamma).fit(
            index, n_sites=min(config.norm_sites, len(index)), seed=config.seed)
    config = config.replace(channels=len(names), channel_names=names)
    return config, index, normalizer, state


def train(config: TrainConfig, index=None, *, resume: bool = False) -> ProgressGenerator[Path]:
    """Train GAN-DL's StyleGAN2 on a plate, yielding progress; return the final checkpoint path.

    Parameters
    ----------
    config
        The run's :class:`TrainConfig` (``config.data`` is used when ``index`` is None).
    index
        A plate index (DataFrame from :func:`gandl_core.plates.build_index`) or anything
        ``build_index`` accepts; overrides ``config.data``.
    resume
        Continue the run in ``config.out_dir`` from ``checkpoints/latest.pt`` (kimg, optimizer and
        augmentation state, RNG); ``config.kimg`` may be raised to train longer.

    Yields
    ------
    Progress
        unit ``kimg``; metrics ``loss_G``, ``loss_D``, ``r1``/``gp``, ``pl``, ``augment_p``, ``rt``,
        ``sec_per_kimg``, ``eta_s``, and ``swd`` when measured; artifacts ``fakes`` (uint8 RGB grid),
        ``fakes_png``, ``checkpoint``.

    Raises
    ------
    ConfigError, DataError, CheckpointError
        Bad options, data or resume state — before any training starts.
    """
    import torch

    from . import losses
    from .augment import AdaptiveAugment
    from ..checkpoint import build_discriminator, build_generator, save_checkpoint
    from ..plates import PlateDataset

    config, index, normalizer, state = _prepare_run(config, index, resume)
    device = _resolve_device(config.device)
    device = _local_device(device)
    rank, world = _dist_setup(device)
    if config.batch % world:
        raise ConfigError(f"option 'batch' = {config.batch} is not divisible by the {world} processes; "
                          f"use a multiple of {world}.")
    per_rank = config.batch // world
    if per_rank < 1:
        raise ConfigError(f"option 'batch' = {config.batch} gives no image per process.")
    out = Path(config.out_dir)
    ckpt_dir, fakes_dir = out / "checkpoints", out / "fakes"
    if rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        fakes_dir.mkdir(parents=True, exist_ok=True)
        config.save(out / "config.json")
        _save_json(out / "normalizer.json", normalizer.to_dict())  # the run's intensity scaling, readable

    torch.manual_seed(config.seed)
    G = build_generator(config.to_dict()).to(device)
    D = build_discriminator(config.to_dict()).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    # channels_last: oneDNN and cuDNN both run these convolutions faster (CPU cpu-small step +18%, docs/benchmarks.md)
    mem = torch.channels_last if config.channels_last else torch.contiguous_format
    G.to(memory_format=mem)
    D.to(memory_format=mem)

    c_d = config.r1_interval / (config.r1_interval + 1) if config.loss == "stylegan2" else 1.0
    c_g = config.pl_interval / (config.pl_interval + 1) if config.pl_weight > 0 and config.loss == "stylegan2" else 1.0
    opt_G = torch.optim.Adam(G.parameters(), lr=config.lr_g * c_g, betas=(config.beta1 ** c_g, config.beta2 ** c_g))
    opt_D = torch.optim.Adam(D.parameters(), lr=config.lr_d * c_d, betas=(config.beta1 ** c_d, config.beta2 ** c_d))
    ada = AdaptiveAugment(p=config.augment_p if config.augment != "none" else 0.0,
                          target=config.augment_target if config.augment == "ada" else None,
                          speed_kimg=config.augment_speed_kimg)
    pl_state = losses.PathLengthState()
    r1_gamma = config.r1_gamma if config.r1_gamma >= 0 else 0.0002 * config.resolution ** 2 / config.batch

    step = 0
    if state is not None:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        ada.load_state_dict(state["augment"])
        pl_state.load_state_dict(state["pl_state"])
        step = int(state["step"])
        if rank == 0 or world == 1:
            torch.set_rng_state(state["rng"]["torch"])
            _set_np_py_state(state["rng"])
    else:
        torch.manual_seed(config.seed + 7919 * rank)  # different latents per rank, same weights (below)
        random.seed(config.seed + rank)
        np.random.seed((config.seed + rank) % 2**32)
    _broadcast_module(G, world)
    _broadcast_module(D, world)
    _broadcast_module(G_ema, world)

    base = PlateDataset(index, normalizer, config.resolution, mode="full", seed=config.seed, scale=config.field_scale)
    source = _CropSource(base, config.resolution, config.crop_mode)
    sampler = _StepBatches(len(base), config.batch, config.seed, step, rank, world)
    loader = torch.utils.data.DataLoader(source, batch_sampler=sampler, num_workers=config.workers,
                                         generator=torch.Generator().manual_seed(config.seed),
                                         persistent_workers=False, pin_memory=device.type == "cuda")
    data_iter = iter(loader)

    total_steps = int(math.ceil(config.kimg * 1000 / config.batch))
    planned_steps = total_steps  # what progress bars show, even if a time limit ends the run sooner
    def steps_of(kimg: float) -> int:
        return max(1, int(round(kimg * 1000 / config.batch)))
    tick_s, snap_s, fakes_s, qual_s = (steps_of(config.tick_kimg), steps_of(config.snapshot_kimg),
                                       steps_of(config.fakes_kimg), steps_of(config.quality_kimg) if config.quality_kimg > 0 else 0)
    z_fixed = torch.randn(min(16, 2 * per_rank if per_rank > 1 else 16), config.z_dim,
                          generator=torch.Generator().manual_seed(config.seed + 1)).to(device)
    real_probe = None
    quality_reals = None
    autocast = _autocast(device, config.amp)
    metrics_file = out / "metrics.jsonl"
    last_saved = step if state is not None else -1
    t_start, step_start = time.time(), step
    acc: dict[str, float] = {}
    n_acc = 0

    def kimg_at(s: int) -> float:
        return s * config.batch / 1000.0

    def snapshot() -> Path:
        nonlocal last_saved
        path = ckpt_dir / f"ckpt-{kimg_at(step):09.3f}.pt"
        payload = {
            "kind": "stylegan2", "config": config.to_dict(), "channel_names": list(config.channel_names),
            "normalizer": normalizer.to_dict(), "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
            "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(), "augment": ada.state_dict(),
            "augment_p": float(ada.p), "pl_state": pl_state.state_dict(), "kimg": kimg_at(step), "step": step,
            "rng": {"torch": torch.get_rng_state(), "numpy": _np_state_list(), "python": _py_state_list()},
            "metrics": dict(acc),
        }
        save_checkpoint(path, payload)
        save_checkpoint(ckpt_dir / "latest.pt", payload)
        last_saved = step
        return path

    def run_ctx():
        import contextlib

        return autocast if autocast is not None else contextlib.nullcontext()

    def log(record: dict) -> None:
        with open(metrics_file, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    finished = False
    try:
        if qual_s and rank == 0 and step == 0:
            # The curve starts at the untrained generator, so a run shows how far it came.
            quality_reals = _quality_reals(base, config, config.quality_samples)
            quality = _quality(G_ema, quality_reals, config, device)
            log({"kimg": 0.0, "step": 0, "time_s": 0.0, "world": world, **{k: round(v, 6) for k, v in quality.items()}})
            yield Progress(0.0, kimg_at(planned_steps), unit="kimg", stage="train", metrics=dict(quality),
                           artifacts={"quality": quality})
        while step < total_steps:
            try:
                real = next(data_iter).to(device, non_blocking=True)
            except RuntimeError as exc:
                raise DataError(f"reading training images failed: {exc}") from exc
            if real_probe is None and rank == 0:
                real_probe = real[:16].detach().cpu()
                # The same grid layout for real crops: what the fakes should come to look like.
                _save_png(fakes_dir / "reals.png", fakes_grid(real_probe.float().numpy(), config.channel_names,
                                                                  scale=png_scale(config.resolution)))
            real = real.contiguous(memory_format=mem)
            n = real.shape[0]
            try:
                # ---------------- D step ----------------
                D.requires_grad_(True)
                G.requires_grad_(False)
                do_r1 = config.loss == "stylegan2" and r1_gamma > 0 and step % config.r1_interval == 0
                z = torch.randn(n, config.z_dim, device=device)
                with torch.no_grad(), run_ctx():
                    fake = G(z, mixing_prob=config.style_mixing)
                # R1 is taken with respect to D's actual (augmented) input: the augmentation is not
                # differentiated twice, which CUDA's grid_sample (ADA's zoom) cannot do.
                real_in = ada(real).detach().requires_grad_(do_r1)
                with run_ctx():
                    real_scores = D(real_in)
                    fake_scores = D(ada(fake.float()))
                if config.loss == "stylegan2":
                    loss_D = losses.d_logistic_loss(real_scores.float(), fake_scores.float())
                    reg = losses.r1_penalty(real_scores.float(), real_in, r1_gamma, interval=config.r1_interval) \
                        if do_r1 else torch.zeros((), device=device)
                else:
                    loss_D = losses.wgan_d_loss(real_scores.float(), fake_scores.float())
                    reg = losses.gradient_penalty(D, real_in.detach(), ada(fake.float()).detach(),
                                                  weight=config.gp_weight) \
                        + losses.epsilon_penalty(real_scores.float())
                opt_D.zero_grad(set_to_none=True)
                (loss_D + reg).backward()
                _allreduce_grads(D, world)
                opt_D.step()
                if config.augment == "ada":
                    # Every rank must move p identically: feed the scores of the whole global batch.
                    ada.update(_gather(real_scores.detach().float(), world))
                # ---------------- G step ----------------
                D.requires_grad_(False)
                G.requires_grad_(True)
                z = torch.randn(n, config.z_dim, device=device)
                with run_ctx():
                    gen = G(z, mixing_prob=config.style_mixing)
                    gscores = D(ada(gen))
                loss_G = losses.g_nonsaturating_loss(gscores.float()) if config.loss == "stylegan2" \
                    else losses.wgan_g_loss(gscores.float())
                pl = torch.zeros((), device=device)
                if config.loss == "stylegan2" and config.pl_weight > 0 and step % config.pl_interval == 0:
                    m = max(1, n // 2)
                    ws = G.styles(torch.randn(m, config.z_dim, device=device), mixing_prob=config.style_mixing)
                    pl, _ = losses.path_length_penalty(G.synthesis(ws), ws, pl_state, weight=config.pl_weight,
                                                       interval=config.pl_interval)
                opt_G.zero_grad(set_to_none=True)
                (loss_G + pl).backward()
                _allreduce_grads(G, world)
                opt_G.step()
                _average_buffers(D, world)
                _average_buffers(G, world)
                # ---------------- EMA ----------------
                nimg = (step + 1) * config.batch
                ema_nimg = config.ema_kimg * 1000
                if config.ema_rampup > 0:
                    ema_nimg = min(ema_nimg, nimg * config.ema_rampup)
                beta = 0.5 ** (config.batch / max(ema_nimg, 1e-8))
                with torch.no_grad():
                    for pe, p in zip(G_ema.parameters(), G.parameters()):
                        pe.lerp_(p.detach(), 1.0 - beta)
                    for be, b in zip(G_ema.buffers(), G.buffers()):
                        be.copy_(b)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                # CUDA raises OutOfMemoryError; the CPU allocator a RuntimeError "can't allocate memory".
                text = str(exc).lower()
                if not (isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text
                        or "can't allocate memory" in text or "cannot allocate memory" in text):
                    raise
                raise ConfigError(f"out of memory on {device} at step {step}: lower --batch (now {config.batch}) "
                                  f"or --resolution (now {config.resolution}), or use a smaller preset; the "
                                  "last checkpoint is kept (--resume continues with the same options).") from exc
            step += 1
            reg_name = "r1" if config.loss == "stylegan2" else "gp"  # D regularizer: lazy R1 or WGAN-GP
            for k, v in (("loss_D", loss_D), ("loss_G", loss_G), (reg_name, reg), ("pl", pl)):
                acc[k] = acc.get(k, 0.0) + float(v.detach())
            n_acc += 1
            if not all(math.isfinite(v) for v in acc.values()):
                raise ConfigError(f"training diverged at kimg {kimg_at(step):.3f} (a loss is not finite): lower "
                                  "the learning rates (--lr-g/--lr-d) or raise r1_gamma.")

            artifacts: dict[str, Any] = {}
            metrics: dict[str, float] = {}
            elapsed = time.time() - t_start
            if config.time_limit_s > 0 and step < total_steps:
                over = torch.tensor([float(elapsed >= config.time_limit_s)], device=device)  # NCCL: on the GPU
                if world > 1:  # rank 0's clock decides, so all ranks stop at the same step
                    import torch.distributed as dist

                    dist.broadcast(over, 0)
                if over.item():
                    total_steps = step  # time budget spent: this step is the last one
            sec_per_kimg = elapsed / max(kimg_at(step - step_start), 1e-9)
            # SWD has its own schedule; a quality step is also a metrics tick so the number gets logged.
            quality_due = bool(qual_s) and (step % qual_s == 0 or step == total_steps)
            if step % tick_s == 0 or step == total_steps or quality_due:
                metrics = {k: v / n_acc for k, v in acc.items()}
                metrics.update(augment_p=float(ada.p), sec_per_kimg=sec_per_kimg,
                               eta_s=sec_per_kimg * (kimg_at(total_steps) - kimg_at(step)))
                if ada.r_t is not None:  # ADA's overfitting signal; absent (not NaN) when ADA is off
                    metrics["rt"] = float(ada.r_t)
                if world > 1:
                    import torch.distributed as dist

                    sums = [None] * world
                    dist.all_gather_object(sums, _checksum(D))
                    metrics["ranks_in_sync"] = float(max(sums) - min(sums) <= 1e-6 * max(1.0, abs(sums[0])))
                    if not metrics["ranks_in_sync"]:
                        raise RuntimeError(f"distributed training diverged between ranks: D checksums {sums}")
                if quality_due and rank == 0 and real_probe is not None:
                    if quality_reals is None:  # drawn once: every SWD point compares against the same reals
                        quality_reals = _quality_reals(base, config, config.quality_samples)
                    quality = _quality(G_ema, quality_reals, config, device)
                    metrics.update(quality)
                    artifacts["quality"] = quality
                acc, n_acc = {}, 0
            if rank == 0 and (step % fakes_s == 0 or step == total_steps):
                with torch.no_grad():
                    imgs = G_ema(z_fixed, noise_mode="const").float().cpu().numpy()
                grid = fakes_grid(imgs, config.channel_names, scale=png_scale(config.resolution))
                png = fakes_dir / f"fakes-{kimg_at(step):09.3f}.png"
                _save_png(png, grid)
                _save_png(fakes_dir / "latest.png", grid)
                artifacts.update(fakes=imgs, fakes_png=png)
            if rank == 0 and (step % snap_s == 0 or step == total_steps):
                artifacts["checkpoint"] = snapshot()
            if metrics and rank == 0:
                log({"kimg": round(kimg_at(step), 4), "step": step, "time_s": round(elapsed, 2), "world": world,
                     **{k: (round(v, 6) if math.isfinite(v) else None) for k, v in metrics.items()}})
            if rank == 0:
                yield Progress(kimg_at(step), kimg_at(planned_steps), unit="kimg", stage="train",
                               metrics=metrics, artifacts=artifacts)
        finished = True
        if os.environ.get("GANDL_TRAIN_RANK_DIGEST"):
            # Test hook (tests/test_ddp.py): every rank records a hash of its final weights, so a
            # test can prove that all ranks ended with bit-identical networks.
            _write_rank_digest(Path(os.environ["GANDL_TRAIN_RANK_DIGEST"]), rank,
                               {"G": G, "D": D, "G_ema": G_ema}, float(ada.p), step)
    finally:
        # Stopped early (generator closed, Ctrl-C, error): leave a valid checkpoint of the work done.
        if rank == 0 and step > 0 and last_saved != step and (finished or step > step_start):
            snapshot()
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
    return ckpt_dir / "latest.pt"


# Images in each SWD measurement. The metric's floor is the SWD between two draws of reals: 0.085 with 64
# images, 0.059 with 256 (sd 0.004 over 4 pairs; demo screen, 32 px), so 256 resolves fakes closer to the reals.
QUALITY_SAMPLES = 256


def _quality_reals(base, config: TrainConfig, n: int = QUALITY_SAMPLES):
    """``n`` fixed real crops (seeded): the reference set of every SWD point of a run."""
    import torch

    rng = np.random.default_rng(config.seed + 99)
    src = _CropSource(base, config.resolution, config.crop_mode)
    idx = rng.integers(0, len(base), n)
    return torch.stack([src[(int(i), int(config.seed * 7 + j))] for j, i in enumerate(idx)]).float()


def _quality(G_ema, real, config: TrainConfig, device) -> dict[str, float]:
    """SWD between the fixed real crops ``real`` and as many EMA fakes, at three Laplacian levels."""
    import torch

    from .quality import swd

    n = real.shape[0]
    z = torch.randn(n, config.z_dim, generator=torch.Generator().manual_seed(config.seed + 5))
    with torch.no_grad():
        fake = torch.cat([G_ema(zb.to(device), noise_mode="const").float().cpu() for zb in z.split(64)])
    levels = swd(real, fake, levels=3, patches_per_level=4096, seed=config.seed)
    out = {f"swd_{i}": v for i, v in enumerate(levels)}
    out["swd"] = float(np.mean(levels))
    return out
