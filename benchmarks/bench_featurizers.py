"""Featurization throughput of every counterpart on the same sites, plus convae training time.

Usage::

    python benchmarks/bench_featurizers.py [DATA] [--sites 32] [--densenet-size 224] [--checkpoint GAN_CKPT]

DATA defaults to a fresh synthetic screen (gandl_core.synth, 96 px fields). Each method embeds
the same first ``--sites`` sites through gandl_core.embed.embed_iter (num_workers=0, in memory:
image decoding and normalization included) and the script prints a Markdown table of sites/s.
DenseNet runs with random weights (throughput does not depend on the weights). Hardware and
thread count are printed too; run it alone on the machine for meaningful numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?", help="plate (default: a new synthetic screen)")
    p.add_argument("--sites", type=int, default=32, help="sites embedded per method (default 32)")
    p.add_argument("--densenet-size", type=int, default=224, help="DenseNet input side (default 224)")
    p.add_argument("--checkpoint", help="a gandl-core train checkpoint: also time gan and random-d like it")
    p.add_argument("--convae-steps", type=int, default=20, help="convae training steps timed (default 20)")
    p.add_argument("--methods", default="handcrafted,random-d,densenet-collapsed,densenet-concat,convae",
                   help="comma-separated methods")
    args = p.parse_args(argv)

    import torch

    from gandl_core.embed import embed_iter
    from gandl_core.featurizers.convae import ConvAEConfig, ConvAEFeaturizer, train_convae
    from gandl_core.featurizers.registry import make_featurizer
    from gandl_core.plates import build_index, channel_names
    from gandl_core.progress import run_to_end

    tmp = Path(tempfile.mkdtemp(prefix="bench_feat_"))
    data = args.data
    if data is None:
        from gandl_core.synth import make_screen

        data = make_screen(tmp / "screen", seed=0, plates=1)
    index = build_index(data).iloc[: args.sites].reset_index(drop=True)
    names = channel_names(index)
    print(f"# featurizer throughput: {len(index)} sites of {data}, channels {names}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, python {sys.version.split()[0]}\n")
    rows = []
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.checkpoint:
        methods = ["gan"] + methods
    for method in methods:
        opts: dict = {}
        extra = ""
        if method == "convae":
            cfg = ConvAEConfig(out=str(tmp / "cae"), resolution=32, width=16, batch=16,
                               kimg=args.convae_steps * 16 / 1000, checkpoint_every=10 ** 6)
            t0 = time.perf_counter()
            ckpt = run_to_end(train_convae(cfg, index))
            dt = time.perf_counter() - t0
            extra = f"training: {args.convae_steps} steps x 16 crops of 32 px in {dt:.1f} s ({args.convae_steps * 16 / dt:.0f} img/s)"
            feat = ConvAEFeaturizer.from_checkpoint(ckpt)
        else:
            if method in ("gan", "random-d") and args.checkpoint:
                opts["checkpoint"] = args.checkpoint
            if method.startswith("densenet"):
                opts.update(random_weights=True, input_size=args.densenet_size)
                extra = f"input {args.densenet_size} px, random weights"
            feat = make_featurizer(method, names, **opts)
        run_to_end(embed_iter(index.iloc[:2], feat, batch_size=16))  # warm-up (imports, allocations)
        t0 = time.perf_counter()
        df = run_to_end(embed_iter(index, feat, batch_size=16))
        dt = time.perf_counter() - t0
        rows.append((method, feat.prefix, feat.n_features, len(df) / dt, extra))
        print(f"{method}: {len(df) / dt:.2f} sites/s", file=sys.stderr)
    print("| method | prefix | features | sites/s | notes |\n|---|---|---:|---:|---|")
    for m, pre, n, rate, extra in rows:
        print(f"| {m} | {pre} | {n} | {rate:.2f} | {extra} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
