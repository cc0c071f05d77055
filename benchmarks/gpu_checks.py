"""One-shot checks and timings of the CUDA paths (run on a GPU machine; CI never has one).

1. ``correct``: the networks on CUDA fp32 and bf16 autocast against the CPU fp32 reference
   (relative error of G's images and D's features), then a short cpu-tiny-sized training run on CUDA
   with bf16 autocast + channels-last, its checkpoint loaded on the CPU (weights_only), a resume on
   CUDA, and the embedding of a few sites on CUDA vs the CPU.
2. ``speed``: the real training loop (``gandl_core.gan.train.train``: data loading, ADA, lazy R1, path
   length, EMA) at a preset's size, e.g. gpu-256 = 256x256x5, batch 32; reports the steady-state
   seconds per kimg from the run's own metrics (after ``--warmup-kimg``), images/s, peak GPU memory,
   and the device's bf16 and fp32 matmul rates measured in the same process.

Example::

    PYTHONPATH=src python benchmarks/gpu_checks.py correct --out /tmp/gc
    PYTHONPATH=src python benchmarks/gpu_checks.py speed --out /tmp/gc --preset gpu-256 --kimg 4 --workers 8
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def _rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _device_info() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": "cpu"}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, sms=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version())
    return info


def matmul_rates(device: str, size: int = 8192) -> dict:
    """TFLOP/s of one size^3 matmul in bf16 and in fp32 (tf32 off), timed with CUDA events."""
    import torch

    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        torch.backends.cuda.matmul.allow_tf32 = False
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        for _ in range(10):
            a @ b
        t1.record()
        torch.cuda.synchronize()
        out[f"matmul_{name}_tflops"] = round(2 * size**3 * 10 / (t0.elapsed_time(t1) / 1e3) / 1e12, 1)
    return out


def _screen(folder: Path, image_size: int, compounds: int) -> Path:
    from gandl_core.synth import make_screen

    if not (folder / "metadata.csv").exists():
        make_screen(folder, plates=1, image_size=image_size, compounds=compounds, overwrite=True)
    return folder


def correct(args) -> dict:
    import torch

    from gandl_core.gan.stylegan2 import Discriminator, Generator

    res: dict = {}
    dev = args.device
    torch.manual_seed(0)
    G = Generator(z_dim=128, w_dim=128, resolution=64, channels=5, channel_base=2048, channel_max=128).eval()
    D = Discriminator(resolution=64, channels=5, channel_base=2048, channel_max=128).eval()
    z = torch.randn(16, 128)
    with torch.no_grad():
        img_ref = G(z, noise_mode="const")
        x = torch.randn(16, 5, 64, 64)
        f_ref = D.features(x)
        Gc, Dc = G.to(dev), D.to(dev)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        res["G_fp32_rel"] = _rel(Gc(z.to(dev), noise_mode="const").cpu(), img_ref)
        res["D_features_fp32_rel"] = _rel(Dc.features(x.to(dev)).cpu(), f_ref)
        with torch.autocast(torch.device(dev).type, dtype=torch.bfloat16):
            res["G_bf16_rel"] = _rel(Gc(z.to(dev), noise_mode="const").float().cpu(), img_ref)
            res["D_features_bf16_rel"] = _rel(Dc.features(x.to(dev)).float().cpu(), f_ref)
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True
        Dc = Dc.to(memory_format=torch.channels_last)
        res["D_features_tf32_channels_last_rel"] = _rel(
            Dc.features(x.to(dev).contiguous(memory_format=torch.channels_last)).cpu(), f_ref)

    try:
        _correct_training(args, res)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        res["training_error"] = f"{type(exc).__name__}: {exc}"
    return res


def _correct_training(args, res: dict) -> None:
    import torch

    from gandl_core.checkpoint import load_checkpoint
    from gandl_core.embed import embed_iter
    from gandl_core.featurizers.base import GanFeaturizer
    from gandl_core.plates import build_index
    from gandl_core.progress import run_to_end
    from gandl_core.gan.train import TrainConfig, train

    dev = args.device
    out = Path(args.out)
    screen = _screen(out / "screen96", 96, compounds=3)
    index = build_index(screen)
    run = out / "run_amp"
    shutil.rmtree(run, ignore_errors=True)
    cfg = TrainConfig.from_preset("cpu-tiny", data=str(screen), out_dir=str(run), resolution=32, kimg=0.4,
                                  device=dev, amp=True, channels_last=True, snapshot_kimg=0.2, quality_kimg=0.2,
                                  fakes_kimg=0.2, tick_kimg=0.1, pl_weight=2.0, pl_interval=2, r1_interval=4,
                                  augment="fixed", augment_p=0.5)
    t0 = time.time()
    ckpt = run_to_end(train(cfg, index))
    res["train_amp_s"] = round(time.time() - t0, 1)
    rows = [r for r in map(json.loads, open(run / "metrics.jsonl")) if r["step"] > 0]  # step 0: untrained SWD only
    res["train_amp_losses_finite"] = all(r["loss_D"] is not None and r["loss_G"] is not None for r in rows)
    res["train_amp_last"] = {k: rows[-1].get(k) for k in ("kimg", "loss_D", "loss_G", "r1", "pl", "swd")}
    state = load_checkpoint(ckpt)  # CPU, weights_only
    res["checkpoint_on_cpu"] = all(t.device.type == "cpu" for t in state["D"].values())
    cfg2 = cfg.replace(kimg=0.6)
    run_to_end(train(cfg2, index, resume=True))
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    res["resume_reached_kimg"] = rows[-1]["kimg"]
    small = index.head(12)
    feats = {}
    for device in ("cpu", dev):
        fz = GanFeaturizer.from_checkpoint(run / "checkpoints" / "latest.pt", device=device)
        emb = run_to_end(embed_iter(small, fz, out=out / f"emb_{device}.parquet", overwrite=True, device=device))
        cols = [c for c in emb.columns if not c.startswith("Metadata_")]
        feats[device] = torch.tensor(emb[cols].to_numpy())
    res["embed_cuda_vs_cpu_rel"] = _rel(feats[dev], feats["cpu"])


def speed(args) -> dict:
    import torch

    from gandl_core.plates import build_index
    from gandl_core.gan.train import TrainConfig, train

    out = Path(args.out)
    res = {**matmul_rates(args.device)} if args.device.startswith("cuda") else {}
    screen = _screen(out / f"screen{args.image_size}", args.image_size, compounds=args.compounds)
    index = build_index(screen)
    res["sites"] = len(index)
    for amp in args.amp_modes:
        run = out / f"run_{args.preset}_{'bf16' if amp else 'fp32'}"
        shutil.rmtree(run, ignore_errors=True)
        overrides = dict(data=str(screen), out_dir=str(run), kimg=args.kimg, device=args.device, amp=bool(amp),
                         workers=args.workers, tick_kimg=args.tick_kimg, snapshot_kimg=1e6, fakes_kimg=1e6,
                         quality_kimg=0)
        if args.batch:
            overrides["batch"] = args.batch
        cfg = TrainConfig.from_preset(args.preset, **overrides)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        try:
            for _ in train(cfg, index):
                pass
        except Exception as exc:  # record and go on to the next mode
            res[f"{'bf16' if amp else 'fp32'}_error"] = f"{type(exc).__name__}: {exc}"
            print(res, flush=True)
            continue
        wall = time.time() - t0
        rows = [r for r in map(json.loads, open(run / "metrics.jsonl")) if r["step"] > 0]
        steady = [r for r in rows if r["kimg"] >= args.warmup_kimg]
        k0, t0_, k1, t1_ = steady[0]["kimg"], steady[0]["time_s"], steady[-1]["kimg"], steady[-1]["time_s"]
        spk = (t1_ - t0_) / max(k1 - k0, 1e-9)
        key = "bf16" if amp else "fp32"
        res[f"{key}_sec_per_kimg"] = round(spk, 2)
        res[f"{key}_img_per_s"] = round(1000 / spk, 1)
        res[f"{key}_wall_s"] = round(wall, 1)
        res[f"{key}_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None
        res[f"{key}_config"] = {k: getattr(cfg, k) for k in ("resolution", "channels", "batch", "channel_base",
                                                             "channel_max", "augment", "pl_weight", "r1_interval",
                                                             "workers", "channels_last")}
        res[f"{key}_loss_last"] = {k: rows[-1].get(k) for k in ("loss_D", "loss_G", "augment_p")}
        print(json.dumps({k: v for k, v in res.items() if k.startswith(key)}), flush=True)
        (out / "speed.json").write_text(json.dumps({**_device_info(), **res}, indent=1))  # kept if a later mode is cut off
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("correct", "speed"))
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="gpu-256")
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--kimg", type=float, default=4.0)
    p.add_argument("--warmup-kimg", type=float, default=1.0)
    p.add_argument("--tick-kimg", type=float, default=0.256)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--compounds", type=int, default=4)
    p.add_argument("--amp-modes", type=int, nargs="+", default=[1, 0], help="1 = bf16 autocast, 0 = fp32")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    res = {**_device_info(), **(correct(args) if args.what == "correct" else speed(args))}
    Path(args.out, f"{args.what}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
