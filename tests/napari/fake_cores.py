"""Stand-ins for the core calls the docks run in a worker process (same contracts), importable there.

The Train and Embed docks run their target ``"module:function"`` in a spawned process, so a test's
fake core must live in a module (not a test function's closure). ``train`` (gandl_core.gan.train's
contract) writes a text "checkpoint" with
the step it stopped at (the real core's ``finally`` saves on close), records how it was called
in ``calls.jsonl`` of the run folder and reports the process it runs in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from gandl_core.errors import ConfigError
from gandl_core.progress import Progress


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    out_dir: str = "run"
    data: str = ""
    kimg: float = 0.2
    resolution: int = 16
    batch_size: int = 4
    lr_g: float = 0.0025
    loss: str = "stylegan2"
    seed: int = 0
    channels: int = 5

    @classmethod
    def from_preset(cls, name, **over):
        base = {"cpu-tiny": {}, "paper": {"kimg": 25000.0, "resolution": 256}}[name]
        return cls(**{**base, **over})


PRESETS = {"cpu-tiny": {}, "paper": {}}


def train(cfg, index=None, *, resume=False):
    out = Path(cfg.out_dir)
    ckpt = out / "checkpoints" / "latest.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    with open(out / "calls.jsonl", "a") as fh:
        fh.write(json.dumps({"seed": cfg.seed, "resolution": cfg.resolution, "out_dir": cfg.out_dir,
                             "resume": resume, "index_rows": None if index is None else len(index),
                             "pid": os.getpid()}) + "\n")
    if cfg.seed == 13:
        raise ConfigError("option 'seed' = 13 is unlucky: pick another seed.")
    if cfg.seed == 14:
        raise RuntimeError("a bug in the core")
    if cfg.seed == 15:
        os._exit(3)  # the process dies without a word (killed, out of memory...)
    step = int(ckpt.read_text().split()[1]) if resume and ckpt.is_file() else 0
    try:
        while step < 4000:
            time.sleep(0.02)
            step += 1
            fakes = np.random.default_rng(step).normal(size=(4, 5, 16, 16)).astype(np.float32)
            art = {"fakes": fakes}
            if step % 3 == 0:
                ckpt.write_text(f"step {step}")
                art["checkpoint"] = ckpt
            yield Progress(done=step * 0.001, total=4.0, unit="kimg", stage="train",
                           metrics={"loss_G": 1.0 / step, "loss_D": 0.5, "pid": float(os.getpid())}, artifacts=art)
    finally:
        ckpt.write_text(f"step {step}")  # the real core saves a checkpoint on close
    return ckpt


def slow_embed(index, checkpoint, *, wells, batch_size=16):
    """An embedding that takes 10 s (500 sites at 20 ms) and returns nothing: for Stop."""
    for i in range(500):
        time.sleep(0.02)
        yield Progress(done=i, total=500, unit="sites", stage="embed")
    return None
