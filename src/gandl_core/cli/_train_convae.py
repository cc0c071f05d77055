"""``gandl-core train-convae``: train the convolutional-autoencoder counterpart on an unlabelled plate.

Examples::

    gandl-core train-convae plate/ -o cae_run --resolution 64 --epochs 20
    gandl-core train-convae plate/ -o cae_run --kimg 50 --batch-size 32
    gandl-core train-convae plate/ -o cae_run --kimg 100 --resume        # continue / extend a run
    gandl-core train-convae plate/ -o cae_run --perceptual-weights densenet121.pth

Then: gandl-core featurize plate/ --method convae --checkpoint cae_run -o cae.parquet
"""

from __future__ import annotations

import argparse

from ._common import (CHANNELS_METAVAR, add_batch_size_argument, add_data_argument, add_out_argument, check_device,
                      finite_float, follow, plain)

HELP = "train the convolutional autoencoder counterpart (CAE_ features)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train-convae", help=HELP, description=plain(__doc__),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(p)
    add_out_argument(p, "RUN_DIR", "run folder to write")
    p.add_argument("--channels", metavar=CHANNELS_METAVAR, help="select/reorder the data's channels by name")
    p.add_argument("--resolution", type=int, default=64, help="crop side, power of two >= 8 (default 64)")
    p.add_argument("--scale", type=finite_float, default=1.0, help="downscale fields before cropping (default 1)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=finite_float, default=None, help="passes over the sites (default 10)")
    length.add_argument("--kimg", type=finite_float, default=None, help="thousands of crops to train on")
    add_batch_size_argument(p, 16, "crops per step (default 16)", old="--batch", dest="batch")
    p.add_argument("--lr", type=finite_float, default=2e-4, help="Adam learning rate (default 2e-4)")
    p.add_argument("--width", type=int, default=32, help="maps in the first stage (default 32)")
    p.add_argument("--pixel-loss", choices=["l1", "mse"], default="l1", help="pixel term (default l1)")
    p.add_argument("--ssim-weight", type=finite_float, default=1.0, help="weight of 1 - SSIM (default 1)")
    p.add_argument("--perceptual-weights", metavar="FILE",
                   help="local torchvision DenseNet-121 state_dict enabling a perceptual term (never downloaded)")
    p.add_argument("--perceptual-weight", type=finite_float, default=0.1, help="weight of the perceptual term")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR/checkpoints/latest.pt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..featurizers.convae import ConvAEConfig, train_convae

    check_device(args.device)
    channels = tuple(c.strip() for c in args.channels.split(",") if c.strip()) if args.channels else None
    config = ConvAEConfig(data=str(args.data), out=str(args.out), channels=channels, resolution=args.resolution,
                          scale=args.scale, width=args.width, batch=args.batch, kimg=args.kimg,
                          epochs=args.epochs if args.epochs is not None else 10.0, lr=args.lr,
                          pixel_loss=args.pixel_loss, ssim_weight=args.ssim_weight,
                          perceptual_weights=args.perceptual_weights, perceptual_weight=args.perceptual_weight,
                          seed=args.seed, checkpoint_every=args.checkpoint_every, device=args.device)
    path = follow(train_convae(config, resume=args.resume), desc="train-convae")
    print(f"wrote {path}")
    return 0
