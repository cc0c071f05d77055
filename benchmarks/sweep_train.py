"""Train several variants of a preset side by side and compare their quality curves and fakes.

Used to size and tune ``cpu-small``: each variant is the preset plus a few overrides, trained for the
same number of kimg on the same screen; the script records every variant's SWD curve, seconds per kimg
and final fakes grid, and prints one table. Variants run in parallel worker processes, which on a GPU
machine lets a dozen 32-px models train at once.

Example (CPU, two variants, one at a time)::

    python benchmarks/sweep_train.py demo-out/screen --out sweep --variants base noada --kimg 8 --procs 1

Example (one GPU, every variant, 8 at a time, fp32 so the dynamics match a CPU run)::

    python benchmarks/sweep_train.py screen --out sweep --device cuda --kimg 48 --procs 8 --no-amp
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

# Overrides on top of the preset. "noada" switches adaptive augmentation off: on a screen of a few
# hundred fields seen for a few minutes, D has no time to overfit, and augmenting its inputs only slows G.
VARIANTS: dict[str, dict] = {
    "base": {},
    "noada": {"augment": "none"},
    "noada_lr5": {"augment": "none", "lr_g": 0.005, "lr_d": 0.005},
    "noada_lr1": {"augment": "none", "lr_g": 0.001, "lr_d": 0.001},
    "noada_b8": {"augment": "none", "batch": 8},
    "noada_c128": {"augment": "none", "channel_base": 4096, "channel_max": 128},
    "noada_half": {"augment": "none", "field_scale": 0.5},
    "noada_resize": {"augment": "none", "crop_mode": "resize"},
    "noada_nomix": {"augment": "none", "style_mixing": 0.0},
    "noada_r64": {"augment": "none", "resolution": 64},
    "noada_ema3": {"augment": "none", "ema_kimg": 3.0},
    "noada_g1": {"augment": "none", "r1_gamma": 0.1},
    # Where the base recipe goes with more time ("_kimg" overrides --kimg for one variant).
    "noada_long": {"augment": "none", "_kimg": 160.0},
}


def _run_one(args: tuple) -> dict:
    name, overrides, data, out, preset, kimg, device, amp, threads, minutes = args
    import torch

    torch.set_num_threads(threads)
    from gandl_core.gan.train import TrainConfig, train

    overrides = dict(overrides)
    kimg = float(overrides.pop("_kimg", kimg))
    run_dir = Path(out) / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    q = max(kimg / 12, 0.5)
    cfg = TrainConfig.from_preset(preset, data=data, out_dir=str(run_dir), kimg=kimg, device=device, amp=amp,
                                  quality_kimg=q, fakes_kimg=q, snapshot_kimg=kimg, tick_kimg=q,
                                  time_limit_s=minutes * 60, **overrides)
    t0 = time.time()
    gen = train(cfg)
    try:
        while True:
            next(gen)
    except StopIteration:
        pass
    except Exception as exc:  # one broken variant must not sink the sweep: record it
        return {"name": name, "error": f"{type(exc).__name__}: {exc}"}
    wall = time.time() - t0
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    curve = [(r["kimg"], r["swd"]) for r in rows if r.get("swd") is not None]
    last = rows[-1]
    return {"name": name, "overrides": overrides, "kimg": last["kimg"], "wall_s": round(wall, 1),
            "sec_per_kimg": last.get("sec_per_kimg"), "swd_curve": curve,
            "swd_first": curve[0][1] if curve else None, "swd_last": curve[-1][1] if curve else None,
            "swd_best": min(v for _, v in curve) if curve else None,
            "augment_p": last.get("augment_p"), "fakes": str(run_dir / "fakes" / "latest.png")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="training data (any form build_index accepts)")
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"subset of {list(VARIANTS)}")
    p.add_argument("--kimg", type=float, default=24.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="bf16 autocast on CUDA (default off: match a CPU run's numerics)")
    p.add_argument("--procs", type=int, default=1, help="variants trained at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--minutes", type=float, default=0.0, help="time limit per variant (0 = train to --kimg)")
    args = p.parse_args(argv)
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(v, VARIANTS[v], args.data, str(out), args.preset, args.kimg, args.device, args.amp, args.threads,
             args.minutes)
            for v in args.variants]
    results = []
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.procs) as pool:
        for res in pool.imap_unordered(_run_one, jobs):
            results.append(res)
            print(json.dumps({k: res.get(k) for k in ("name", "kimg", "wall_s", "swd_first", "swd_best", "swd_last",
                                                      "error")}), flush=True)
            if "fakes" in res and os.path.exists(res["fakes"]):
                shutil.copy(res["fakes"], out / f"fakes_{res['name']}.png")
    results.sort(key=lambda r: args.variants.index(r["name"]))
    (out / "summary.json").write_text(json.dumps(results, indent=1))
    print(f"\n{'variant':<14} {'kimg':>6} {'s/kimg':>7} {'swd first':>9} {'best':>6} {'last':>6} {'aug p':>6}")
    for r in results:
        if "error" in r:
            print(f"{r['name']:<14} ERROR {r['error']}")
            continue
        print(f"{r['name']:<14} {r['kimg']:>6.1f} {r['sec_per_kimg'] or 0:>7.2f} {r['swd_first']:>9.3f} "
              f"{r['swd_best']:>6.3f} {r['swd_last']:>6.3f} {r['augment_p'] or 0:>6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
