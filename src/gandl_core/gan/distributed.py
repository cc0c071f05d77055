"""Several processes under ``torchrun``: device per rank, process group, gradient and buffer averaging.

Gradients are averaged with an explicit ``all_reduce`` before every optimizer step rather than with
DDP, because the lazy-regularization passes use different subsets of parameters. Every helper is
the identity for one process. Backend: NCCL on CUDA, gloo on CPU. (torch is imported inside the
functions: ``gandl_core.gan.train`` must import without it.)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import ConfigError


def local_device(device):
    """Under torchrun each process owns one GPU: cuda -> cuda:LOCAL_RANK (and make it current, which
    NCCL collectives and all_gather_object rely on). CPU and single-process runs are unchanged."""
    import torch

    if device.type != "cuda" or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.index is None:
        if local >= torch.cuda.device_count():
            raise ConfigError(f"torchrun started {os.environ.get('LOCAL_WORLD_SIZE', '?')} processes on this node but "
                              f"only {torch.cuda.device_count()} GPU(s) are visible: use --nproc-per-node "
                              f"{torch.cuda.device_count()}.")
        device = torch.device("cuda", local)
    torch.cuda.set_device(device)
    return device


def setup(device) -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def allreduce_grads(module, world: int) -> None:
    import torch.distributed as dist

    if world <= 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def average_buffers(module, world: int) -> None:
    import torch.distributed as dist

    if world <= 1:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= world


def broadcast_module(module, world: int) -> None:
    import torch.distributed as dist

    if world <= 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, 0)


def gather(t, world: int):
    """Concatenate a same-shaped tensor from every rank (identity for one process)."""
    import torch
    import torch.distributed as dist

    if world <= 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def any_rank(flags, world: int):
    """Element-wise max of a small float tensor over ranks (a stop flag raised by any rank, or by rank 0's clock)."""
    import torch.distributed as dist

    if world > 1:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def in_sync(module, world: int) -> bool:
    """True when every rank holds the same weights (a checksum of ``module`` compared over ranks)."""
    import torch.distributed as dist

    if world <= 1:
        return True
    total = float(sum(p.detach().double().sum() for p in module.parameters()))
    sums = [None] * world
    dist.all_gather_object(sums, total)
    if max(sums) - min(sums) > 1e-6 * max(1.0, abs(sums[0])):
        raise RuntimeError(f"distributed training diverged between ranks: D checksums {sums}")
    return True


def barrier(world: int) -> None:
    import torch.distributed as dist

    if world > 1 and dist.is_initialized():
        dist.barrier()


def write_rank_digest(folder: Path, rank: int, modules: dict, augment_p: float, step: int) -> None:
    """Test hook (tests/test_ddp.py): a hash of this rank's final weights, so a test can prove that all
    ranks ended with bit-identical networks."""
    from ..tables import write_text_atomic

    digest = {}
    for name, module in modules.items():
        h = hashlib.sha256()
        for key, t in sorted(module.state_dict().items()):
            h.update(key.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        digest[name] = h.hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / f"rank{rank}.json", json.dumps({**digest, "augment_p": augment_p, "step": step}, indent=2))
