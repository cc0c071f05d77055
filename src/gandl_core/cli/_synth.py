"""``gandl-core synth OUT``: write the synthetic RxRx19a-like screen with ground truth."""

from __future__ import annotations

import argparse

from ._common import add_out_positional, finite_float, follow, out_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic screen with known ground truth (RxRx layout)",
                       description="Write a procedural RxRx19a look-alike (5 stains, 2 cell types, mock/infected "
                       "controls, compounds at six half-log doses with known Hill rescue, plate effects) with "
                       "metadata.csv, ground_truth.csv and wells.csv.")
    add_out_positional(p, "OUT", "folder to create")
    p.add_argument("--plates", type=int, default=2, help="plates per cell type (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--image-size", type=int, default=96, help="field edge in pixels (default 96)")
    p.add_argument("--sites", type=int, default=1, help="sites per well (default 1)")
    p.add_argument("--compounds", type=int, default=8, help="number of compounds (default 8)")
    p.add_argument("--replicates", type=int, default=2, help="replicate wells per compound and dose (default 2)")
    p.add_argument("--controls", type=int, default=10, help="C+ and C- wells per plate, each (default 10)")
    p.add_argument("--uv-controls", type=int, default=2,
                   help="UV-inactivated-virus wells per plate (C+, look like Mock; default 2)")
    p.add_argument("--infection", type=finite_float, default=0.9,
                   help="fraction of cells infected in C- wells, in (0, 1] (default 0.9)")
    p.add_argument("--doses", default=None,
                   help="comma-separated concentrations in uM (default: six half-log doses 0.0316..10)")
    p.add_argument("--cell-types", default="HRCE,VERO", help="comma-separated subset of HRCE,VERO")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=run)


def _parse_doses(text: str | None) -> list[float] | None:
    from ..errors import ConfigError

    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--doses {text!r}: give comma-separated numbers in uM, e.g. --doses 0.1,0.316,1,3.16") from None


def run(args: argparse.Namespace) -> int:
    from ..synth import make_screen_iter

    out = follow(make_screen_iter(
        out_of(args), plates=args.plates, seed=args.seed, image_size=args.image_size, sites=args.sites,
        compounds=args.compounds, replicates=args.replicates, controls=args.controls,
        uv_controls=args.uv_controls, infection=args.infection, doses=_parse_doses(args.doses),
        cell_types=tuple(c.strip() for c in args.cell_types.split(",") if c.strip()), overwrite=args.overwrite,
    ), "synth")
    print(f"synthetic screen written to {out} (metadata.csv, ground_truth.csv, wells.csv, README.txt)")
    return 0
