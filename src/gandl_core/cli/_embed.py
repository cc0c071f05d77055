"""``gandl-core embed``: GAN-DL features of every site of a plate (one row per site).

Examples::

    gandl-core embed plate/ --checkpoint run/checkpoints/latest.pt -o emb.parquet
    gandl-core embed plate/ --checkpoint ckpt.pt -o emb.parquet --wells B02,C03 --workers 2
    gandl-core embed plate/ --checkpoint ckpt.pt -o emb.parquet --resume          # after an interruption
    gandl-core embed plate/ --checkpoint ckpt.pt -o emb.parquet --shard 3/8       # array job 3 of 8
    gandl-core embed --merge -o emb.parquet                                      # combine the 8 shards
    torchrun --nproc-per-node 8 --no-python gandl-core embed plate/ --checkpoint ckpt.pt -o emb.parquet
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..featurizers.base import DEFAULT_FEATURES, FEATURE_KINDS
from ._common import (CHANNELS_METAVAR, DATA_FORMS, add_batch_size_argument, add_out_argument, check_device, follow,
                      plain)

HELP = "embed every site with a trained discriminator (GAN-DL features, one row per site)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("embed", help=HELP, description=plain(__doc__),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA", nargs="?",
                   help="plate: " + DATA_FORMS + " (not needed with --merge)")
    p.add_argument("--checkpoint", "-c", metavar="CKPT",
                   help="training checkpoint (.pt) or run folder (uses checkpoints/latest.pt)")
    add_out_argument(p, "OUT.parquet", "embeddings table to write")
    p.add_argument("--channels", metavar=CHANNELS_METAVAR, help="select/reorder the data's channels by name to match "
                   "the checkpoint (e.g. DNA,ER,Actin,RNA,Golgi)")
    p.add_argument("--features", choices=FEATURE_KINDS, default=DEFAULT_FEATURES,
                   help="discriminator readout: multiscale (mean and spread of every stage; default) or final "
                        "(the paper's 512-d fc layer)")
    p.add_argument("--wells", metavar="W,..", help="embed only these wells: B02,C03 or PLATE:WELL items")
    add_batch_size_argument(p, 32, "sites per batch (default 32)")
    p.add_argument("--workers", type=int, default=None,
                   help="image-decoding worker processes (default: CPU cores - 1, at most 8)")
    p.add_argument("--field-mode", choices=["tiles", "resize"], default=None,
                   help="fields larger than the network's resolution: average over tiles or resize (default: "
                        "resize for a checkpoint trained with --crop-mode resize, else tiles)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--shard", metavar="K/N", help="embed only shard K of N (0-based; for array jobs); writes "
                   "OUT's stem + .shard-K-of-N.parquet; combine with --merge")
    p.add_argument("--merge", action="store_true", help="combine OUT.shard-K-of-N files into OUT and exit")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="keep finished parts of an interrupted run")
    g.add_argument("--overwrite", action="store_true", help="replace an existing OUT / discard finished parts")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip sites whose images cannot be read (listed in a warning and the table metadata)")
    p.set_defaults(func=run)


def _wells(text: str | None) -> list | None:
    if not text:
        return None
    out: list = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        out.append(tuple(item.split(":", 1)) if ":" in item else item)
    return out


def run(args: argparse.Namespace) -> int:
    from ..embed import embed_iter, merge_shards, parse_shard, shard_path
    from ..errors import ConfigError

    out = Path(args.out)
    if args.merge:
        df = merge_shards(out, overwrite=args.overwrite)
        print(f"wrote {out}: {len(df)} sites")
        return 0
    if not args.data:
        raise ConfigError("DATA is missing: give the plate folder, LoadData CSV or index .parquet to embed.")
    if not args.checkpoint:
        raise ConfigError("--checkpoint is missing: give the .pt file written by 'gandl-core train'.")

    from ..featurizers.base import GanFeaturizer
    from ..plates import build_index

    check_device(args.device)
    channels = [c.strip() for c in args.channels.split(",") if c.strip()] if args.channels else None
    index = build_index(args.data, channels=channels)
    featurizer = GanFeaturizer.from_checkpoint(args.checkpoint, device=args.device, features=args.features)
    shard = parse_shard(args.shard)
    target = shard_path(out, *shard) if shard else out
    workers = args.workers if args.workers is not None else max(0, min(8, (os.cpu_count() or 1) - 1))
    rank = int(os.environ.get("RANK", "0") or 0)
    df = follow(
        embed_iter(index, featurizer, out=target, wells=_wells(args.wells), batch_size=args.batch_size,
                   num_workers=workers, field_mode=args.field_mode,
                   resume=args.resume, overwrite=args.overwrite, shard=shard, skip_bad=args.skip_bad),
        desc="embed", quiet=rank != 0,
    )
    if rank == 0:
        n_feat = sum(1 for c in df.columns if not str(c).startswith("Metadata_"))
        print(f"wrote {target}: {len(df)} sites x {n_feat} features")
    return 0
