"""Write a training checkpoint without what only training needs: a model to share, embed and explain with.

A training checkpoint holds G, D, the EMA generator, both optimizers' moments, the augmentation and
random states: about 17 MB for cpu-small. Embedding and ``gandl-core explain`` need only D, the EMA
generator, the config, the channel names and the intensity normalizer. ``--half`` stores the weights
as float16 (they are loaded back into float32 networks), halving the file again; the features it gives
differ from the full checkpoint's in the 4th significant digit, so embed and explain with the same file.

The result cannot be resumed (no optimizer state): keep the training checkpoint for that.

Usage::

    python scripts/slim_checkpoint.py RUN/checkpoints/latest.pt model.pt [--half]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

KEEP = ("kind", "config", "channel_names", "normalizer", "D", "G_ema", "kimg", "step", "best_swd")


def slim(src: str | Path, dst: str | Path, *, half: bool = False) -> Path:
    """Copy the keys in :data:`KEEP` of checkpoint ``src`` to ``dst`` (weights as float16 with ``half``)."""
    import torch

    from gandl_core.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(src)
    out = {k: state[k] for k in KEEP if k in state}
    if "D" not in out or "G_ema" not in out:
        raise SystemExit(f"{src}: not a GAN-DL training checkpoint (it has no D and G_ema weights).")
    if half:
        for net in ("D", "G_ema"):
            out[net] = {k: v.half() if torch.is_floating_point(v) else v for k, v in out[net].items()}
    out["slim"] = {"source": Path(src).name, "half": bool(half)}
    return save_checkpoint(dst, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="training checkpoint (.pt) or run folder")
    ap.add_argument("dst", help="output .pt (must not exist)")
    ap.add_argument("--half", action="store_true", help="store the weights as float16")
    args = ap.parse_args(argv)
    if Path(args.dst).exists():
        print(f"{args.dst} exists: choose another name or remove it first.", file=sys.stderr)
        return 1
    path = slim(args.src, args.dst, half=args.half)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
