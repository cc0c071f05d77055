"""GAN-DL training: the StyleGAN2 game on unlabelled plates, as a generator that yields progress.

``train(config)`` runs the loop and yields :class:`~gandl_core.progress.Progress` reports (unit
kimg) with losses, augmentation strength, speed and time left; occasionally a fakes grid, the SWD
quality metric and the checkpoint path. It returns the final checkpoint path.

The parts, each in its own module:

* :mod:`.step` -- :class:`~.step.TrainStep`: networks, optimizers, ADA, regularizers, EMA and the
  step itself (D phase, G phase, EMA), with ``state_dict``/``load_state_dict``;
* :mod:`.schedule` -- when ticks, SWD, fakes and snapshots are due; Ctrl-C/SIGTERM and the time
  limit as "stop after this step";
* :mod:`.data` -- deterministic batches of keyed crops of a ``PlateDataset``, the field cache;
* :mod:`.run_folder` -- the run folder's lock, metrics, pictures and checkpoints;
* :mod:`.distributed` -- several processes under torchrun;

and this module wires them: prepare (data, normalizer, resume state), then the loop.

Stopping: closing the generator (napari's Stop), Ctrl-C or SIGTERM (a flag: the current step
finishes) or an error between steps writes a checkpoint of the last finished step; Ctrl-C/SIGTERM
then raise KeyboardInterrupt. An error inside a step (out of memory, a non-finite loss) writes
nothing: the previous checkpoint is the last consistent state.

Reproducibility: weights, latents, augmentation and noise come from torch's global RNG seeded with
``seed`` (and the rank); the data order and crop positions are pure functions of (seed, step), so a
resumed run replays exactly the images the uninterrupted run would have used. RNG state is saved in
checkpoints.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) each process takes ``batch / world`` images per
step; gradients are averaged before every optimizer step, buffers every step, ADA's ``p`` follows
the whole global batch; rank 0 writes all files. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..progress import Progress, ProgressGenerator
from . import distributed as dist
from .data import QUALITY_SAMPLES, StepBatches as _StepBatches  # noqa: F401  (re-exported)
from .distributed import local_device as _local_device  # noqa: F401  (re-exported)
from .images import STAIN_COLOURS, channel_colours, composite_rgb, fakes_grid, png_scale  # noqa: F401 (re-exported)
from .train_config import PRESETS, RESUMABLE_FIELDS, TrainConfig  # noqa: F401  (re-exported)

__all__ = ["TrainConfig", "PRESETS", "train", "fakes_grid", "composite_rgb"]


def _autocast(device, amp: bool):
    """The mixed-precision context of the training step: bf16 autocast on CUDA, None elsewhere.

    (A function so that tests can run the same bf16 code path with CPU autocast.)
    """
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if (amp and device.type == "cuda") else None


def _resolve_device(name: str):
    """The torch device of option ``device``, refused with a clear message where it does not exist."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"option 'device' = {name!r} is not a device: use auto, cpu, cuda or cuda:N.") from exc
    if dev.type == "cuda":
        if torch.version.cuda is None:
            raise ConfigError(f"option 'device' = {name!r} but this PyTorch ({torch.__version__}) is a CPU-only "
                              "build: use --device cpu, or install a CUDA build of torch.")
        if not torch.cuda.is_available():
            raise ConfigError(f"option 'device' = {name!r} but no CUDA device is available; use --device cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"option 'device' = {name!r} but only {torch.cuda.device_count()} GPU(s) are "
                              f"visible (cuda:0..cuda:{torch.cuda.device_count() - 1}).")
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
            snaps = sorted(latest.parent.glob("ckpt-*.pt"))
            hint = f" ({snaps[-1].name} exists: copy it to latest.pt to resume from it)" if snaps else ""
            raise ConfigError(f"--resume: {latest} does not exist{hint}; start a new run without --resume.")
        state = load_checkpoint(latest)
        old = TrainConfig.from_dict(state["config"])
        # Channels come from the data: compare after filling them in.
        cmp_cfg = config.replace(channels=old.channels, channel_names=old.channel_names)
        diff = old.diff(cmp_cfg)
        if diff:
            lines = ", ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
            raise ConfigError(f"--resume: the options differ from the run in {out} ({lines}). Resume with the "
                              "same options (only kimg, device, workers, intervals and housekeeping options may "
                              "change) or start a new run in another folder.")
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


@dataclass
class _Run:
    """What the loop works with (one object instead of a dozen closure variables)."""

    config: TrainConfig
    trainer: Any  # step.TrainStep
    folder: Any  # run_folder.RunFolder
    schedule: Any  # schedule.Schedule
    dataset: Any
    batches: Any
    normalizer: Any
    device: Any
    rank: int
    world: int
    step: int
    start_step: int
    best_swd: float = math.inf
    diverged: bool = False
    quality_reals: Any = None
    z_fixed: Any = None
    first_batch: bool = True
    t0: float = field(default_factory=time.time)
    t_rate: tuple[float, int] | None = None  # (time, step) from which the speed is measured
    last_metrics: dict = field(default_factory=dict)
    message: str = ""  # shown with the next report (how the fields were cached)

    def kimg(self, step: int | None = None) -> float:
        return self.schedule.kimg(self.step if step is None else step)


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
    ConfigError, DataError, CheckpointError, OutputBusyError, OutOfSpaceError
        Bad options, data or resume state (before any training starts), another writer of the run
        folder, a full disk. KeyboardInterrupt after Ctrl-C/SIGTERM, once the checkpoint is written.
    """
    from .run_folder import RunFolder
    from .schedule import Schedule

    device = dist.local_device(_resolve_device(config.device))
    rank, world = dist.setup(device)
    if config.batch % world:
        raise ConfigError(f"option 'batch' = {config.batch} is not divisible by the {world} processes; "
                          f"use a multiple of {world}.")
    folder = RunFolder(config.out_dir, writer=rank == 0, keep=config.keep_checkpoints)
    with folder.open(command="train"):
        config, index, normalizer, state = _prepare_run(config, index, resume)
        folder.write_text("config.json", json.dumps(config.to_dict(), indent=2))
        folder.write_text("normalizer.json", json.dumps(normalizer.to_dict(), indent=2))  # readable scaling
        trainer, step = _build_trainer(config, device, rank, world, state)
        if state is not None:
            folder.saved_step = step  # latest.pt holds this step
            folder.forget_after(step)
        from . import data

        dataset = data.crop_dataset(index, normalizer, config)
        schedule = Schedule(config)
        cache = data.cache_fields(dataset, workers=config.workers)
        while True:  # a line while a big plate is read in; the summary goes with the first report
            try:
                line = next(cache)
            except StopIteration as done:
                message = done.value
                break
            if rank == 0:
                yield Progress(schedule.kimg(step), schedule.kimg(schedule.planned), unit="kimg", stage="train",
                               message=line)
        batches = data.make_loader(dataset, config, step, rank, world, pin=device.type == "cuda")
        best = (state or {}).get("best_swd")
        run = _Run(config, trainer, folder, schedule, dataset, batches, normalizer, device, rank, world,
                   step=step, start_step=step, best_swd=math.inf if best is None else float(best), message=message)
        return (yield from _loop(run))


def _build_trainer(config: TrainConfig, device, rank: int, world: int, state: dict | None):
    """The TrainStep with fresh (seeded) or resumed state, identical on every rank; and the step count."""
    import torch

    from .step import TrainStep, set_rng_state

    torch.manual_seed(config.seed)  # the weights: the same on every rank
    trainer = TrainStep(config, device, world=world, autocast=_autocast(device, config.amp))
    step = 0
    if state is not None:
        trainer.load_state_dict(state)
        step = int(state["step"])
    if state is not None and (rank == 0 or world == 1):
        set_rng_state(state["rng"], device)
    else:  # different latents per rank, same weights (broadcast below)
        offset = 0 if state is None else step
        torch.manual_seed(config.seed + 7919 * rank + offset)
        random.seed(config.seed + rank + offset)
        np.random.seed((config.seed + rank + offset) % 2**32)
    trainer.broadcast()
    return trainer, step


def _loop(run: _Run) -> ProgressGenerator[Path]:
    """Steps until the schedule's end, a stop request or an error; a checkpoint at a step boundary."""
    from .schedule import StopRequest

    config, sched = run.config, run.schedule
    finished = False
    with StopRequest(config.time_limit_s) as stop:
        try:
            if sched.quality and run.rank == 0 and run.step == 0:
                yield _measure_start(run)
            run.t0 = time.time()
            while run.step < sched.total:
                real = _next_batch(run)
                _train_step(run, real)
                run.step += 1
                signalled, time_up = stop.after_step(run.world, run.device)
                if signalled:
                    break
                if time_up:
                    sched.end_at(run.step)  # time budget spent: this step is the last one
                report = _after_step(run)
                if report is not None:
                    yield report
            finished = run.step >= sched.total
            if os.environ.get("GANDL_TRAIN_RANK_DIGEST"):
                dist.write_rank_digest(Path(os.environ["GANDL_TRAIN_RANK_DIGEST"]), run.rank,
                                       {"G": run.trainer.G, "D": run.trainer.D, "G_ema": run.trainer.G_ema},
                                       run.trainer.ada.p, run.step)
        finally:
            _save_on_exit(run, finished)
            dist.barrier(run.world)
        if stop.signal_name is not None:
            raise KeyboardInterrupt(f"{stop.signal_name}: stopped after step {run.step}, checkpoint written")
    return run.folder.latest


def _save_on_exit(run: _Run, finished: bool) -> None:
    """Leave a checkpoint of the work done, unless the state is not a consistent one (stopped inside a
    step, diverged) or there is nothing new to save (or no room to save it)."""
    folder = run.folder
    if (run.rank != 0 or run.step == 0 or run.trainer.in_step or run.diverged or folder.failed
            or folder.saved_step == run.step or not (finished or run.step > run.start_step)):
        return
    folder.save(_payload(run), run.step, run.kimg())


def _measure_start(run: _Run) -> Progress:
    """The SWD of the untrained generator: where the curve starts, so a run shows how far it came."""
    from . import data

    run.quality_reals = data.quality_reals(run.dataset, run.config, run.config.quality_samples)
    quality = _quality(run.trainer.G_ema, run.quality_reals, run.config, run.device)
    run.folder.log({"kimg": 0.0, "step": 0, "time_s": 0.0, "world": run.world,
                    **{k: round(v, 6) for k, v in quality.items()}})
    message, run.message = run.message, ""
    return Progress(0.0, run.kimg(run.schedule.planned), unit="kimg", stage="train", metrics=dict(quality),
                    artifacts={"quality": quality}, message=message)


def _next_batch(run: _Run):
    try:
        real = next(run.batches).to(run.device, non_blocking=True)
    except RuntimeError as exc:
        raise DataError(f"reading training images failed: {exc}") from exc
    if run.first_batch and run.rank == 0:
        # The same grid layout for real crops: what the fakes should come to look like.
        run.folder.png("reals.png", fakes_grid(real[:16].float().cpu().numpy(), run.config.channel_names,
                                               scale=png_scale(run.config.resolution)))
    run.first_batch = False
    return real


def _train_step(run: _Run, real) -> None:
    import torch

    try:
        run.trainer(real, run.step)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
        # CUDA raises OutOfMemoryError; the CPU allocator a RuntimeError "can't allocate memory".
        text = str(exc).lower()
        if not (isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text
                or "can't allocate memory" in text or "cannot allocate memory" in text):
            raise
        c = run.config
        kept = (f"the last checkpoint (step {run.folder.saved_step or run.start_step}) is kept and --resume "
                "continues from it with the same options" if (run.folder.saved_step or run.start_step)
                else "no checkpoint was written yet")
        raise ConfigError(f"out of memory on {run.device} at step {run.step}: lower --batch (now {c.batch}) or "
                          f"--resolution (now {c.resolution}), or use a smaller preset; {kept}.") from exc
    if run.t_rate is None:  # speed is measured from the end of the first step (warm-up excluded)
        run.t_rate = (time.time(), run.step + 1)


def _after_step(run: _Run) -> Progress | None:
    """The events due after a step (metrics, SWD, fakes, checkpoint); rank 0's progress report."""
    due = run.schedule.due(run.step)
    metrics: dict[str, float] = {}
    artifacts: dict[str, Any] = {}
    if due.tick:
        metrics = _tick_metrics(run)
    elif due.snapshot and not run.trainer.losses_finite():  # never snapshot a diverged state
        _diverged(run)
    new_best = False
    if due.quality and run.rank == 0:
        if run.quality_reals is None:  # drawn once: every SWD point compares against the same reals
            from . import data

            run.quality_reals = data.quality_reals(run.dataset, run.config, run.config.quality_samples)
        quality = _quality(run.trainer.G_ema, run.quality_reals, run.config, run.device)
        metrics.update(quality)
        artifacts["quality"] = quality
        new_best = quality["swd"] < run.best_swd
        run.best_swd = min(run.best_swd, quality["swd"])
    if due.fakes and run.rank == 0:
        artifacts.update(_fakes(run))
    if (due.snapshot or new_best) and run.rank == 0:
        artifacts["checkpoint"] = run.folder.save(_payload(run), run.step, run.kimg(), best=new_best)
    if run.rank != 0:
        return None
    if metrics:
        run.folder.log({"kimg": round(run.kimg(), 4), "step": run.step, "time_s": round(time.time() - run.t0, 2),
                        "world": run.world,
                        **{k: (round(v, 6) if math.isfinite(v) else None) for k, v in metrics.items()}})
    message, run.message = run.message, ""
    return Progress(run.kimg(), run.kimg(run.schedule.planned), unit="kimg", stage="train", metrics=metrics,
                    artifacts=artifacts, message=message)


def _tick_metrics(run: _Run) -> dict[str, float]:
    """Mean losses of the tick (one read from the device), speed, time left; ranks checked in sync."""
    metrics = run.trainer.read_metrics()
    if not all(math.isfinite(v) for v in metrics.values()):
        _diverged(run)
    now = time.time()
    t_rate, s_rate = run.t_rate if run.t_rate and run.step > run.t_rate[1] else (run.t0, run.start_step)
    sec_per_kimg = (now - t_rate) / max(run.kimg(run.step - s_rate), 1e-9)
    metrics.update(sec_per_kimg=sec_per_kimg, eta_s=sec_per_kimg * (run.kimg(run.schedule.total) - run.kimg()))
    if run.world > 1:
        metrics["ranks_in_sync"] = float(dist.in_sync(run.trainer.D, run.world))
    run.last_metrics = dict(metrics)
    return metrics


def _diverged(run: _Run) -> None:
    run.diverged = True
    raise ConfigError(f"training diverged by kimg {run.kimg():.3f} (a loss is not finite): lower the learning "
                      "rates (--lr-g/--lr-d) or raise r1_gamma. The last checkpoint before it is kept.")


def _fakes(run: _Run) -> dict:
    import torch

    if run.z_fixed is None:
        per_rank = run.config.batch // run.world
        run.z_fixed = torch.randn(min(16, 2 * per_rank if per_rank > 1 else 16), run.config.z_dim,
                                  generator=torch.Generator().manual_seed(run.config.seed + 1)).to(run.device)
    with torch.no_grad():
        imgs = run.trainer.G_ema(run.z_fixed, noise_mode="const").float().cpu().numpy()
    grid = fakes_grid(imgs, run.config.channel_names, scale=png_scale(run.config.resolution))
    png = run.folder.png(f"fakes-{run.kimg():09.3f}.png", grid)
    run.folder.png("latest.png", grid)
    return {"fakes": imgs, "fakes_png": png}


def _payload(run: _Run) -> dict:
    """The checkpoint of the run at its current step (format in docs/architecture.md)."""
    from .step import rng_state

    c = run.config
    return {"kind": "stylegan2", "config": c.to_dict(), "channel_names": list(c.channel_names),
            "normalizer": run.normalizer.to_dict(), **run.trainer.state_dict(), "kimg": run.kimg(),
            "step": run.step, "rng": rng_state(run.device), "metrics": dict(run.last_metrics),
            "best_swd": run.best_swd if math.isfinite(run.best_swd) else None}


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
