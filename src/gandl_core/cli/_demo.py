"""``gandl-core demo OUT``: the whole pipeline on a synthetic screen made on the fly (the README's main job)."""

from __future__ import annotations

import argparse

from ..gan.train_config import PRESETS
from ._common import add_out_positional, finite_float, follow, out_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run synth -> train -> embed -> profile -> evaluate -> dose-response -> report",
                       description="End to end on a synthetic screen with known ground truth, about 5 minutes on "
                       "2 CPU cores (training takes most of it and stops at the preset's length or at "
                       "--minutes). Prints where the HTML report is and the headline numbers, each scored "
                       "against the ground truth.")
    add_out_positional(p, "OUT", "output folder (default demo-out)", default="demo-out")
    p.add_argument("--minutes", type=finite_float, default=6.0,
                   help="training time budget in minutes (default 6; cpu-small's 24 kimg take ~4 on 2 idle cores)")
    p.add_argument("--preset", default="cpu-small", choices=list(PRESETS),
                   help="training preset (default cpu-small; cpu-tiny = smoke test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the screen and of training")
    p.add_argument("--image-size", type=int, default=96, help="synthetic field size in px (default 96)")
    p.add_argument("--plates", type=int, default=1, help="plates per cell type (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is not empty")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    result = follow(run_demo(out_of(args), seed=args.seed, minutes=args.minutes, preset=args.preset,
                             image_size=args.image_size, plates=args.plates, overwrite=args.overwrite), "demo")
    print(result.summary())
    return 0
