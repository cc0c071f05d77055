"""``gandl-core featurize``: a counterpart embedding of every site (one row per site), same engine as embed.

Examples::

    gandl-core featurize plate/ --method handcrafted -o hc.parquet
    gandl-core featurize plate/ --method random-d --checkpoint run/ -o randd.parquet   # same architecture as run
    gandl-core featurize plate/ --method random-d --preset cpu-small -o randd.parquet
    gandl-core featurize plate/ --method convae --checkpoint cae_run/ -o cae.parquet
    gandl-core featurize plate/ --method densenet-collapsed --weights densenet121.pth -o dnc.parquet
    gandl-core featurize plate/ --method densenet-concat --random-weights -o dnx.parquet  # tests/demos only
    gandl-core featurize plate/ --method handcrafted -o hc.parquet --shard 0/4            # array job 0 of 4

Methods and prefixes: gan (GAN_), random-d (RandD_), handcrafted (HC_), convae (CAE_),
densenet-collapsed (DNc_), densenet-concat (DNx_). See docs/counterparts.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..featurizers.base import FEATURE_KINDS
from ..gan.train_config import PRESETS
from ._common import (CHANNELS_METAVAR, add_batch_size_argument, add_data_argument, add_out_argument, check_device,
                      follow, plain)

HELP = "embed every site with a counterpart method (random-d, handcrafted, convae, densenet-*)"
METHODS = ["gan", "random-d", "handcrafted", "convae", "densenet-collapsed", "densenet-concat"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("featurize", help=HELP, description=plain(__doc__),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(p)
    p.add_argument("--method", "-m", required=True, choices=METHODS, help="embedding method")
    add_out_argument(p, "OUT.parquet", "table to write")
    p.add_argument("--channels", metavar=CHANNELS_METAVAR, help="select/reorder the data's channels by name")
    g = p.add_argument_group("method options")
    g.add_argument("--checkpoint", "-c", metavar="CKPT",
                   help="gan/convae: the model to use; random-d: copy this checkpoint's architecture and normalizer")
    g.add_argument("--preset", choices=list(PRESETS),
                   help="random-d: training preset giving the architecture (e.g. cpu-small)")
    g.add_argument("--resolution", type=int, help="random-d: input resolution (power of two, default 64)")
    g.add_argument("--seed", type=int, help="random-d / densenet --random-weights: seed of the random weights (default 0)")
    g.add_argument("--features", choices=FEATURE_KINDS, default=None,
                   help="gan / random-d: discriminator readout, multiscale (default) or final (the paper's fc layer)")
    g.add_argument("--weights", metavar="FILE", help="densenet-*: torchvision DenseNet-121 ImageNet state_dict file")
    g.add_argument("--random-weights", action="store_true",
                   help="densenet-*: use a random network (tests/demos only; not ImageNet features)")
    g.add_argument("--input-size", type=int, help="densenet-*: side the field is resized to (default 224)")
    g.add_argument("--nuclear-channel", help="handcrafted: channel segmented into nuclei (default DNA or the first)")
    g.add_argument("--intensity", choices=["normalized", "raw"],
                   help="handcrafted: plate-normalized (default) or raw intensities")
    e = p.add_argument_group("engine options")
    e.add_argument("--wells", metavar="W,..", help="only these wells: B02,C03 or PLATE:WELL items")
    add_batch_size_argument(e, 16, "sites per batch (default 16)")
    e.add_argument("--workers", type=int, default=None, help="image-decoding processes (default: cores - 1, max 8)")
    e.add_argument("--field-mode", choices=["tiles", "resize"], default=None,
                   help="random-d/convae fields larger than the resolution: average tiles (default) or resize")
    e.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    e.add_argument("--shard", metavar="K/N", help="only shard K of N (0-based); combine with 'gandl-core embed --merge'")
    m = e.add_mutually_exclusive_group()
    m.add_argument("--resume", action="store_true", help="keep finished parts of an interrupted run")
    m.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    e.add_argument("--skip-bad", action="store_true", help="skip unreadable sites (listed in the metadata)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..embed import DEFAULT_FIELD_MODE, embed_iter, parse_shard, shard_path
    from ..featurizers.registry import make_featurizer
    from ..plates import build_index, channel_names
    from ._embed import _wells

    check_device(args.device)
    channels = [c.strip() for c in args.channels.split(",") if c.strip()] if args.channels else None
    index = build_index(args.data, channels=channels)
    options = {"checkpoint": args.checkpoint, "preset": args.preset, "resolution": args.resolution,
               "seed": args.seed, "weights": args.weights, "random_weights": args.random_weights,
               "input_size": args.input_size, "nuclear_channel": args.nuclear_channel,
               "intensity": args.intensity, "features": args.features}
    featurizer = make_featurizer(args.method, channel_names(index), device=args.device, **options)
    shard = parse_shard(args.shard)
    out = Path(args.out)
    target = shard_path(out, *shard) if shard else out
    workers = args.workers if args.workers is not None else max(0, min(8, (os.cpu_count() or 1) - 1))
    df = follow(
        embed_iter(index, featurizer, out=target, wells=_wells(args.wells), batch_size=args.batch_size,
                   num_workers=workers, field_mode=args.field_mode or DEFAULT_FIELD_MODE, resume=args.resume,
                   overwrite=args.overwrite, shard=shard, skip_bad=args.skip_bad),
        desc=f"featurize {args.method}",
    )
    n_feat = sum(1 for c in df.columns if not str(c).startswith("Metadata_"))
    print(f"wrote {target}: {len(df)} sites x {n_feat} {featurizer.prefix} features")
    return 0
