"""Training-speed benchmark for the StyleGAN2 networks: throughput and fraction of the machine's peak.

Measures, in one run (so ratios compare like with like on a shared machine):

1. the fp32 matmul peak of this machine (``torch.mm`` of large square matrices, GFLOP/s);
2. discriminator forward throughput (eval mode, no grad: the embedding workload), images/s;
3. the full G+D training step (G forward; D forward on reals and fakes, logistic D loss, D backward,
   Adam step; G forward again, D forward on fakes, non-saturating G loss, G backward, Adam step),
   images/s where one "image" is one real image of the batch;
4. FLOPs per image of both, counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
   convolutions, forward and backward; elementwise work is not counted), and the achieved fraction
   of the measured peak.

Every timing is the best of ``--repeats`` runs after a warm-up, because other processes may share
the cores. Lazy regularizers (R1 every 16 D steps, path length every 4 G steps) are excluded from
the main step unless ``--with-reg`` is given, which adds them at their amortized rate.

Example::

    OMP_NUM_THREADS=2 python benchmarks/bench_train.py --resolution 64 --channels 5 --batch 16 \
        --channel-base 16384 --channel-max 512 --json bench.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling helpers, also when loaded by path
from _bench_common import cpu_model  # noqa: E402


# Clock used by best_time: wall time by default; ``--clock cpu`` switches to this process's CPU
# time, which on a shared machine does not count the time slices other processes took. It is only
# a fair measure with one thread (with several, OpenMP's spin-waiting counts as CPU time too).
_CLOCK: Callable[[], float] = time.perf_counter


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Best time (wall, or CPU with ``--clock cpu``) of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = _CLOCK()
        fn()
        times.append(_CLOCK() - t0)
    return min(times)


def matmul_peak(sizes: list[int], repeats: int) -> float:
    """fp32 GFLOP/s of ``torch.mm`` on square matrices: the best over ``sizes`` and ``repeats``.

    The best over a few sizes, so that the "peak" is not understated by one unlucky shape (a lower
    peak would flatter the fractions reported against it).
    """
    import torch

    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size), torch.randn(size, size)
        t = best_time(lambda: torch.mm(a, b), repeats, warmup=2)
        best = max(best, 2.0 * size**3 / t / 1e9)
    return best


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs (multiply-add = 2) that ``fn`` executes in matmuls and convolutions, forward and backward.

    Uses the per-operator formulas of ``torch.utils.flop_counter`` (grouped convolutions counted
    by their real work) through a minimal dispatch mode: ``FlopCounterMode`` itself also tracks
    modules with autograd hooks, which trips over the generator's expanded constant input.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class _Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                _Count.total += int(formula(*args, **kwargs, out_val=out))
            return out

    with _Count():
        fn()
    return float(_Count.total)


def build(args: argparse.Namespace):
    """Networks, optimizers and a data batch as the training loop would hold them."""
    import torch

    from gandl_core.gan.augment import AdaptiveAugment
    from gandl_core.gan.stylegan2 import Discriminator, Generator

    torch.manual_seed(0)
    G = Generator(args.resolution, args.channels, z_dim=args.z_dim, w_dim=args.z_dim,
                  mapping_layers=args.mapping_layers, channel_base=args.channel_base,
                  channel_max=args.channel_max)
    D = Discriminator(args.resolution, args.channels, channel_base=args.channel_base,
                      channel_max=args.channel_max, mbstd_group=4)
    reals = torch.rand(args.batch, args.channels, args.resolution, args.resolution) * 2 - 1
    if args.channels_last:
        G = G.to(memory_format=torch.channels_last)
        D = D.to(memory_format=torch.channels_last)
        reals = reals.contiguous(memory_format=torch.channels_last)
    # StyleGAN2 Adam settings; betas (0, 0.99).
    opt_g = torch.optim.Adam(G.parameters(), lr=0.0025, betas=(0.0, 0.99), eps=1e-8)
    opt_d = torch.optim.Adam(D.parameters(), lr=0.0025, betas=(0.0, 0.99), eps=1e-8)
    ada = AdaptiveAugment(p=args.augment_p, target=None)
    return G, D, opt_g, opt_d, reals, ada


def make_train_step(args, G, D, opt_g, opt_d, reals, ada) -> Callable[[], None]:
    """One full G+D step (plus amortized lazy regularizers with ``--with-reg``)."""
    import torch

    from gandl_core.gan import losses

    pl_state = losses.PathLengthState()
    counter = {"i": 0}
    n = reals.shape[0]

    def aug(x):
        return ada(x) if args.augment_p > 0 else x

    def step() -> None:
        i = counter["i"]
        counter["i"] += 1
        G.train()
        D.train()
        # --- D step: reals vs detached fakes.
        with torch.no_grad():
            fakes = G(torch.randn(n, args.z_dim), mixing_prob=0.9)
        d_loss = losses.d_logistic_loss(D(aug(reals)), D(aug(fakes)))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        if args.with_reg and i % 16 == 0:
            x = reals.detach().requires_grad_(True)
            r1 = losses.r1_penalty(D(aug(x)), x, gamma=0.0002 * args.resolution**2 / n, interval=16)
            r1.backward()
        opt_d.step()
        # --- G step: non-saturating loss through D (D's grads are not needed).
        D.requires_grad_(False)
        fakes = G(torch.randn(n, args.z_dim), mixing_prob=0.9)
        g_loss = losses.g_nonsaturating_loss(D(aug(fakes)))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        if args.with_reg and i % 4 == 0:
            m = max(1, n // 2)
            ws = G.styles(torch.randn(m, args.z_dim)).detach().requires_grad_(True)
            pl, _ = losses.path_length_penalty(G.synthesis(ws), ws, pl_state, interval=4)
            pl.backward()
        opt_g.step()
        D.requires_grad_(True)

    return step


def run(args: argparse.Namespace) -> dict:
    """Run all measurements and return them as a dict."""
    import torch

    global _CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    _CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    result: dict = {
        "cpu": cpu_model(),
        "threads": threads,
        "torch": torch.__version__,
        "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "config": {k: getattr(args, k) for k in ("preset", "resolution", "channels", "batch", "channel_base", "channel_max",
                                                  "mapping_layers", "z_dim", "channels_last", "augment_p",
                                                  "with_reg", "repeats", "clock")},
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    peak = matmul_peak(args.matmul_sizes, args.repeats)
    result["peak_gflops"] = peak

    G, D, opt_g, opt_d, reals, ada = build(args)
    from gandl_core.gan.stylegan2 import parameter_count

    result["params_G"] = parameter_count(G)
    result["params_D"] = parameter_count(D)
    n = args.batch

    # D forward, embedding workload: eval mode, no autograd.
    D.eval()

    def d_forward() -> None:
        with torch.no_grad():
            D(reals)

    d_flops = count_flops(d_forward)
    t = best_time(d_forward, args.repeats)
    result["d_forward"] = {
        "images_per_s": n / t,
        "gflop_per_image": d_flops / n / 1e9,
        "gflops": d_flops / t / 1e9,
        "fraction_of_peak": d_flops / t / 1e9 / peak,
    }

    step = make_train_step(args, G, D, opt_g, opt_d, reals, ada)
    step()  # allocate optimizer state before counting
    # With lazy regularizers the unit of work is a cycle of 16 steps (one R1 and four path-length
    # evaluations), else best-of timing would just pick the steps without regularization.
    cycle = 16 if args.with_reg else 1

    def steps() -> None:
        for _ in range(cycle):
            step()

    s_flops = count_flops(steps)  # (also the warm-up for the timing below)
    t = best_time(steps, args.repeats if cycle == 1 else 1, warmup=0)
    images = n * cycle
    result["train_step"] = {
        "images_per_s": images / t,
        "seconds_per_step": t / cycle,
        "gflop_per_image": s_flops / images / 1e9,
        "gflops": s_flops / t / 1e9,
        "fraction_of_peak": s_flops / t / 1e9 / peak,
        "kimg_per_hour": images / t * 3600 / 1000,
    }
    # Measure the peak again after the networks ran. Fractions use the larger of the two values:
    # if another process held the cores during one measurement, that is the conservative choice.
    result["peak_gflops_after"] = matmul_peak(args.matmul_sizes, args.repeats)
    peak = max(result["peak_gflops"], result["peak_gflops_after"])
    result["peak_gflops_used"] = peak
    for key in ("d_forward", "train_step"):
        result[key]["fraction_of_peak"] = result[key]["gflops"] / peak
    return result


def render(result: dict) -> str:
    """Human-readable table."""
    c = result["config"]
    lines = [
        f"CPU: {result['cpu']}  threads: {result['threads']}  torch {result['torch']}  mkldnn: {result['mkldnn']}",
        f"config: {('preset ' + c['preset'] + ', ') if c['preset'] else ''}{c['resolution']}x{c['resolution']}, {c['channels']} channels, batch {c['batch']}, "
        f"channel_base {c['channel_base']}, channel_max {c['channel_max']}, channels_last {c['channels_last']}, "
        f"augment_p {c['augment_p']}, with_reg {c['with_reg']}, clock {c['clock']}",
        f"params: G {result['params_G'] / 1e6:.2f} M, D {result['params_D'] / 1e6:.2f} M",
        f"fp32 matmul peak: {result['peak_gflops']:.1f} GFLOP/s before, {result['peak_gflops_after']:.1f} after; "
        f"fractions use {result['peak_gflops_used']:.1f}",
        "",
        f"{'workload':<22}{'images/s':>10}{'GFLOP/img':>11}{'GFLOP/s':>10}{'% of peak':>11}",
    ]
    for key, label in (("d_forward", "D forward (no grad)"), ("train_step", "G+D training step")):
        r = result[key]
        lines.append(f"{label:<22}{r['images_per_s']:>10.2f}{r['gflop_per_image']:>11.3f}{r['gflops']:>10.1f}"
                     f"{100 * r['fraction_of_peak']:>10.1f}%")
    lines.append(f"training: {result['train_step']['kimg_per_hour']:.2f} kimg/hour")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolution", type=int, default=None, help="default 64 (or the preset's)")
    p.add_argument("--channels", type=int, default=5)
    p.add_argument("--batch", type=int, default=None, help="default 16 (or the preset's)")
    p.add_argument("--preset", default=None, help="take resolution/batch/channel_base/channel_max/mapping_layers/"
                   "z_dim from the training presets (gandl_core.gan.train_config.PRESETS); explicit options override")
    p.add_argument("--channel-base", type=int, default=None, help="default 16384 (or the preset's)")
    p.add_argument("--channel-max", type=int, default=None, help="default 512 (or the preset's)")
    p.add_argument("--mapping-layers", type=int, default=None, help="default 3 (or the preset's)")
    p.add_argument("--z-dim", type=int, default=None, help="z_dim = w_dim; default 512 (or the preset's)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="NHWC memory format (faster oneDNN convolutions on CPU; default on)")
    p.add_argument("--augment-p", type=float, default=0.0, help="ADA probability applied to D's inputs")
    p.add_argument("--with-reg", action="store_true", help="include lazy R1 and path-length regularization")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="'cpu': time with this process's CPU time (robust on a shared machine; use with --threads 1)")
    p.add_argument("--matmul-sizes", type=int, nargs="+", default=[4096, 6144],
                   help="square matmul sizes for the peak measurement (best is kept)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)

    sizes = {"resolution": 64, "batch": 16, "channel_base": 16384, "channel_max": 512, "mapping_layers": 3,
             "z_dim": 512}
    if args.preset:
        # Only when asked: the training modules are another engineer's and may move.
        try:
            from gandl_core.gan.train_config import PRESETS
        except ImportError:
            from gandl_core.gan.train import PRESETS
        if args.preset not in PRESETS:
            p.error(f"--preset {args.preset!r}: choose one of {sorted(PRESETS)}")
        preset = dict(PRESETS[args.preset])
        for key in sizes:
            if key in preset:
                sizes[key] = preset[key]
    for key, default in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    args.preset_name = args.preset or ""

    result = run(args)
    print(render(result))
    if args.json:
        from gandl_core.tables import write_json  # atomic, strict JSON

        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
