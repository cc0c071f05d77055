"""``gandl-core train DATA -o RUN_DIR``: train GAN-DL's StyleGAN2 on an unlabelled plate."""

from __future__ import annotations

import argparse

from ..gan.train_config import PRESETS
from ._common import (CHANNELS_METAVAR, add_batch_size_argument, add_data_argument, add_out_argument, check_device,
                      finite_float, follow)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the StyleGAN2 (GAN-DL pretext task) on a plate",
                       description="Train a StyleGAN2 on unlabelled multichannel images. Writes RUN_DIR/config.json, "
                       "checkpoints/ (latest.pt + snapshots), fakes/*.png and metrics.jsonl. Works under torchrun "
                       "for several processes/GPUs. Presets: cpu-tiny (tests), cpu-small (first look on a CPU, "
                       "minutes), gpu-256, paper.")
    add_data_argument(p)
    add_out_argument(p, "RUN_DIR", "run folder")
    p.add_argument("--preset", default=None, choices=list(PRESETS),
                   help="training recipe (default cpu-small; with --resume: the run's own)")
    p.add_argument("--resolution", type=int, help="training crop size, power of two")
    p.add_argument("--field-scale", type=finite_float, help="downscale fields by this factor before cropping")
    p.add_argument("--crop-mode", dest="crop_mode", choices=["random", "resize"],
                   help="random: random RESOLUTION-px crops of each field (default); resize: the whole field "
                   "shrunk to RESOLUTION px")
    p.add_argument("--kimg", type=finite_float, help="training length, thousands of real images")
    add_batch_size_argument(p, None, "images per step (over all processes)", old="--batch", dest="batch")
    p.add_argument("--loss", choices=["stylegan2", "wgan-gp"], help="GAN loss")
    p.add_argument("--lr-g", type=finite_float, dest="lr_g", help="generator learning rate")
    p.add_argument("--lr-d", type=finite_float, dest="lr_d", help="discriminator learning rate")
    p.add_argument("--r1-gamma", type=finite_float, dest="r1_gamma", help="R1 weight (default: ADA heuristic)")
    p.add_argument("--augment", choices=["ada", "fixed", "none"], help="discriminator augmentation")
    p.add_argument("--mapping-layers", type=int, dest="mapping_layers", help="mapping network depth (GAN-DL: 3)")
    p.add_argument("--g-input", dest="g_input", choices=["const", "mapped"],
                   help="generator input: const (StyleGAN2's learned constant) or mapped (+ a per-sample map from "
                   "w; cpu-small's default: varied layouts in short runs)")
    p.add_argument("--intensity-gamma", type=finite_float, dest="intensity_gamma",
                   help="power on the [0,1]-scaled intensities (1 = linear, default; 0.5 = square-root stretch)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (default auto: cuda if available)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes")
    p.add_argument("--minutes", type=finite_float, help="stop after this many minutes (with a checkpoint)")
    p.add_argument("--channels", metavar=CHANNELS_METAVAR,
                   help="comma-separated channel names to train on (selects/reorders)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from checkpoints/latest.pt")
    p.add_argument("--keep-checkpoints", type=int, dest="keep_checkpoints", metavar="N",
                   help="snapshots checkpoints/ckpt-*.pt to keep, the newest (default 3; 0 = all); best.pt (lowest "
                   "SWD) and latest.pt are kept too")
    p.add_argument("--cache-gib", type=finite_float, dest="cache_gib", metavar="GIB",
                   help="memory for decoded fields, read once and cropped in memory (default 2; 0 = decode per crop)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..plates import build_index
    from ..gan.train import train

    check_device(args.device)
    overrides = {k: getattr(args, k) for k in ("resolution", "kimg", "batch", "loss", "lr_g", "lr_d", "r1_gamma",
                                              "augment", "mapping_layers", "seed", "device", "workers", "crop_mode",
                                              "g_input", "intensity_gamma")}
    overrides["field_scale"] = args.field_scale
    overrides.update(keep_checkpoints=args.keep_checkpoints, cache_gib=args.cache_gib)
    if args.minutes is not None:
        overrides["time_limit_s"] = args.minutes * 60.0
    config = _config(args, overrides)
    channels = [c.strip() for c in args.channels.split(",")] if args.channels else None
    index = build_index(args.data, channels=channels)
    _sigterm_stops_cleanly()
    ckpt = follow(train(config, index, resume=args.resume), "train")
    import os

    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports (it wrote the files)
        print(_summary(args.out))
        print(f"checkpoint: {ckpt}\nfakes: {args.out}/fakes/latest.png (real crops: fakes/reals.png)\n"
              f"metrics: {args.out}/metrics.jsonl")
    return 0


def _config(args: argparse.Namespace, overrides: dict):
    """The run's config: a preset plus the flags given; with --resume, the run's saved config.json
    plus the flags given (so ``--resume --kimg 20`` is all a user types to train longer)."""
    import json
    from pathlib import Path

    from ..errors import ConfigError
    from ..gan.train import TrainConfig

    saved = Path(args.out) / "config.json"
    given = {k: v for k, v in overrides.items() if v is not None}
    if args.resume and args.preset is None and saved.is_file():
        try:
            base = TrainConfig.from_dict(json.loads(saved.read_text()))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{saved}: cannot read the run's config ({exc}); pass --preset and the options "
                              "the run was started with.") from exc
        return base.replace(data=str(args.data), out_dir=str(args.out), **given)
    return TrainConfig.from_preset(args.preset or "cpu-small", data=str(args.data), out_dir=str(args.out), **given)


def _sigterm_stops_cleanly() -> None:
    """SIGTERM (cluster preemption, ``kill``, torchrun shutting down) stops like Ctrl-C. While the loop
    runs, ``train`` itself turns both into "finish this step, write the checkpoint, then stop"."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)


def _summary(out) -> str:
    """One line from metrics.jsonl: length, speed and the SWD trend of the run."""
    import json
    from pathlib import Path

    try:
        lines = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return "trained (no metrics.jsonl to summarise)"
    if not lines:
        return "trained (no metrics yet)"
    last = lines[-1]
    text = f"trained to {last['kimg']:g} kimg (step {last['step']}), {last.get('sec_per_kimg') or 0:.0f} s/kimg"
    swd = [(x["kimg"], x["swd"]) for x in lines if x.get("swd") is not None]
    if swd:
        shown = [f"{v:.3f}" for _, v in swd[-6:]]
        if len(swd) > 6:  # keep the start of the curve in view: the untrained generator's value
            shown = [f"{swd[0][1]:.3f}", "..."] + shown[1:]
        text += "; SWD " + " -> ".join(shown) + " (lower = fakes closer to the reals)"
    return text
