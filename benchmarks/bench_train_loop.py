"""Time the real ``train()`` loop on a plate: start-up, the first ETA shown, and the steady rate.

Unlike ``bench_train.py`` (the networks alone, on random tensors) this runs everything a user runs:
indexing, the normalizer fit, the field cache, data loading, the step, ticks, SWD, fakes and
checkpoints. It prints one JSON line:

* ``first_step_s`` / ``first_step_cpu_s``: wall and process-CPU seconds from start to the first
  report after a training step (start-up: imports, index, normalizer, cache, SWD reference crops);
* ``first_eta_s``: the time left the first tick announced, and ``rest_s``: how long the rest took;
* ``steady_s_per_kimg`` / ``steady_cpu_s_per_kimg``: from the report at 25% of the run to the end.

On a shared machine read the CPU figures with ``OMP_NUM_THREADS=1``: they do not count the time
other processes took (with several threads, OpenMP's spin-waiting would).

Example::

    OMP_NUM_THREADS=1 python benchmarks/bench_train_loop.py /path/load_data.csv /tmp/run --kimg 1.5
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def main(argv: list[str] | None = None) -> int:
    t0 = time.time()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("out", help="run folder (must not hold a run)")
    p.add_argument("--kimg", type=float, default=1.5)
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--set", default="{}", help='TrainConfig overrides as JSON, e.g. \'{"quality_kimg": 0}\'')
    args = p.parse_args(argv)

    from gandl_core.gan.train import TrainConfig, train
    from gandl_core.plates import build_index

    extra = json.loads(args.set)
    index = build_index(args.data)
    t_index = time.time() - t0
    cfg = TrainConfig.from_preset(args.preset, data=args.data, out_dir=args.out, kimg=args.kimg, **extra)
    rows = []
    for rep in train(cfg, index):
        rows.append((time.time() - t0, rep.done, dict(rep.metrics), time.process_time()))
    first = next(r for r in rows if r[1] > 0)
    first_tick = next((r for r in rows if "eta_s" in r[2]), None)
    a = next(r for r in rows if r[1] >= 0.25 * args.kimg)
    b = rows[-1]
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "data": args.data, "preset": args.preset, "kimg": args.kimg, **extra, "index_s": round(t_index, 1),
        "first_step_s": round(first[0], 1), "first_step_cpu_s": round(first[3], 1),
        "first_eta_s": None if first_tick is None else round(first_tick[2]["eta_s"], 1),
        "rest_s": None if first_tick is None else round(b[0] - first_tick[0], 1),
        "steady_s_per_kimg": round((b[0] - a[0]) / (b[1] - a[1]), 2),
        "steady_cpu_s_per_kimg": round((b[3] - a[3]) / (b[1] - a[1]), 2),
        "total_s": round(b[0], 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1), "maxrss_mb": ru.ru_maxrss // 1024,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
