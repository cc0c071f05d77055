"""Profile the real training step (``gandl_core.gan.step.TrainStep``) of a preset on any device.

Runs ``--warmup`` steps, then ``torch.profiler`` over ``--steps`` steps of the preset's networks,
optimizers, ADA and lazy regularizers (the same object ``train()`` drives), on synthetic crops
already on the device, so data loading is left out: this measures the step itself. Reports

* wall time per step and images/s;
* op time vs gaps: on CUDA the GPU's kernel time against the wall time (the rest is the GPU idle,
  waiting for the host: launch overhead, Python, host syncs); on CPU the time inside torch ops
  against the wall time (the rest is Python and dispatch between ops);
* the top ops by self time (device time on CUDA, CPU time on CPU), with call counts;
* on CUDA, the number of host-device synchronisations the profiler saw (``cudaStreamSynchronize``,
  ``cudaDeviceSynchronize``, blocking ``cudaMemcpy``), which a sync-free step keeps at zero.

Examples::

    OMP_NUM_THREADS=1 python benchmarks/profile_train.py --preset cpu-small --threads 1 --json prof.json
    python benchmarks/profile_train.py --preset gpu-256 --device cuda --trace gpu256.trace.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

SYNC_EVENTS = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"}
SCALAR_READ = "aten::_local_scalar_dense"  # what .item(), float(t), bool(t) run: a sync on a GPU


def build(args):
    """The TrainStep of the preset on the device, and a batch of synthetic crops."""
    import torch

    from gandl_core.gan.step import TrainStep
    from gandl_core.gan.train import TrainConfig, _autocast, _resolve_device

    names = [f"c{k + 1}" for k in range(args.channels)]
    overrides = dict(channels=args.channels, channel_names=names, device=args.device)
    if args.batch:
        overrides["batch"] = args.batch
    if args.augment:
        overrides["augment"] = args.augment
    config = TrainConfig.from_preset(args.preset, **overrides)
    device = _resolve_device(config.device)
    torch.manual_seed(0)
    trainer = TrainStep(config, device, autocast=_autocast(device, config.amp))
    gen = torch.Generator().manual_seed(1)
    real = (torch.rand(config.batch, config.channels, config.resolution, config.resolution, generator=gen) * 2 - 1)
    return config, device, trainer, real.to(device)


def profile(args) -> dict:
    import torch
    from torch.profiler import ProfilerActivity

    if args.threads:
        torch.set_num_threads(args.threads)
    config, device, trainer, real = build(args)
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    step = 0
    for _ in range(args.warmup):
        trainer(real, step)
        step += 1
    trainer.read_metrics()
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities, record_shapes=False) as prof:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            trainer(real, step)
            step += 1
        sync()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        metrics = trainer.read_metrics()  # the one read per tick, after the timed steps
    if args.trace:
        prof.export_chrome_trace(args.trace)
    events = prof.key_averages()
    if cuda:
        op_us = sum(e.self_device_time_total for e in events)
        top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:args.top]
        rows = [(e.key, e.count, e.self_device_time_total / 1e3) for e in top]
        syncs = sum(e.count for e in events if e.key in SYNC_EVENTS)
    else:
        op_us = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:args.top]
        rows = [(e.key, e.count, e.self_cpu_time_total / 1e3) for e in top]
        syncs = None
    reads = sum(e.count for e in events if e.key == SCALAR_READ)
    # CPU fused Adam reads each parameter's step count inside its kernel (no sync; the CUDA kernel reads
    # it on the device): those reads are expected, any others would be the step's own.
    n_params = len(list(trainer.G.parameters())) + len(list(trainer.D.parameters()))
    adam_reads = 0 if cuda else n_params * args.steps
    wall_ms = wall * 1e3
    op_ms = min(op_us / 1e3, wall_ms)
    return {
        "preset": args.preset, "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "resolution": config.resolution, "channels": config.channels, "batch": config.batch,
        "augment": config.augment, "loss": config.loss, "r1_interval": config.r1_interval,
        "pl_interval": config.pl_interval, "pl_weight": config.pl_weight, "amp": bool(config.amp and cuda),
        "steps": args.steps, "warmup": args.warmup,
        "seconds_per_step": wall / args.steps, "images_per_s": config.batch * args.steps / wall,
        "sec_per_kimg": wall / args.steps / config.batch * 1000,
        "op_ms": op_ms, "wall_ms": wall_ms, "op_fraction": op_ms / wall_ms, "gap_fraction": 1 - op_ms / wall_ms,
        "op_clock": "GPU kernel time" if cuda else "CPU time inside torch ops",
        "cpu_seconds_per_step": cpu / args.steps,
        "host_syncs": syncs, "scalar_reads": reads, "scalar_reads_fused_adam_cpu": adam_reads, "top": [{"op": k, "calls": c, "ms": ms, "fraction_of_wall": ms / wall_ms}
                                     for k, c, ms in rows],
        "loss_means": metrics, "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }


def render(r: dict) -> str:
    lines = [f"{r['preset']} on {r['device']} (torch {r['torch']}, {r['threads']} threads): {r['resolution']}px x "
             f"{r['channels']} ch, batch {r['batch']}, augment {r['augment']}, loss {r['loss']}, amp {r['amp']}",
             f"{r['steps']} steps after {r['warmup']} warm-up: {r['seconds_per_step'] * 1e3:.1f} ms/step, "
             f"{r['images_per_s']:.1f} img/s, {r['sec_per_kimg']:.2f} s/kimg (step only, no data loading)",
             f"{r['op_clock']}: {r['op_ms']:.0f} of {r['wall_ms']:.0f} ms wall = {100 * r['op_fraction']:.1f}%; "
             f"gaps {100 * r['gap_fraction']:.1f}%"]
    lines.append(f"process CPU time: {r['cpu_seconds_per_step'] * 1e3:.1f} ms/step (robust to a shared machine "
                 "with one thread; the profiler adds its own overhead)")
    lines.append(f"scalar reads ({SCALAR_READ}) in the profiled steps + one metrics read: {r['scalar_reads']}, of "
                 f"which {r['scalar_reads_fused_adam_cpu']} are CPU fused Adam's per-parameter step counts")
    if r["host_syncs"] is not None:
        lines.append(f"host-device syncs seen by the profiler: {r['host_syncs']} in {r['steps']} steps")
    lines.append(f"{'op':<48}{'calls':>8}{'ms':>10}{'% wall':>8}")
    for t in r["top"]:
        lines.append(f"{t['op'][:47]:<48}{t['calls']:>8}{t['ms']:>10.1f}{100 * t['fraction_of_wall']:>7.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--channels", type=int, default=5)
    p.add_argument("--batch", type=int, default=None, help="default: the preset's")
    p.add_argument("--augment", choices=["ada", "fixed", "none"], default=None, help="default: the preset's")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--trace", default=None, help="also write a Chrome trace (chrome://tracing, Perfetto)")
    args = p.parse_args(argv)
    result = profile(args)
    print(render(result))
    if args.json:
        from gandl_core.tables import write_json  # atomic, strict JSON

        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
