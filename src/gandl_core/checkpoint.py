"""Checkpoints: atomic writes, code-free loading, and the discriminator rebuilt for embedding.

A checkpoint is a plain dict of tensors, numbers, strings and lists (format in
docs/architecture.md) written with ``torch.save`` to a temporary file in the destination folder,
flushed to disk and renamed over the target, so a crash never leaves a half-written checkpoint.
Loading always uses ``torch.load(..., weights_only=True)``: a file that would need to unpickle
arbitrary objects (and so could run code) is refused.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any, Sequence

from .errors import CheckpointError

FORMAT = "gandl-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + fsync + rename).

    ``format`` and ``version`` keys are added when missing.

    Returns
    -------
    Path
        The path written.
    """
    import torch

    from .tables import atomic_write

    path = Path(path)
    state = {"format": FORMAT, "version": VERSION, **state}
    with atomic_write(path, fsync=True) as tmp:
        torch.save(state, tmp)
    return path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Accept a checkpoint file or a run folder (then ``<run>/checkpoints/latest.pt``)."""
    p = Path(path)
    if p.is_dir():
        cand = p / "checkpoints" / "latest.pt"
        if cand.is_file():
            return cand
        raise CheckpointError(f"{p} is a folder without checkpoints/latest.pt: give a run folder written by "
                              "'gandl-core train' or a .pt checkpoint file.")
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file. Give a .pt file written by 'gandl-core train' "
                              "(e.g. <run>/checkpoints/latest.pt) or the run folder.")
    return p


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict:
    """Load a checkpoint dict without executing code (``weights_only=True``).

    Raises
    ------
    CheckpointError
        If the file is missing, truncated/corrupt, needs code to load, or is not a gandl checkpoint.
    """
    import torch

    p = resolve_checkpoint(path)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "GLOBAL" not in text and "global" not in text:
            # Garbage bytes also surface as UnpicklingError ("Unsupported operand"): not a torch file.
            raise CheckpointError(f"{p}: cannot read this checkpoint; it is truncated or not a torch file. "
                                  "Use another checkpoint of the run (checkpoints/ckpt-*.pt).") from exc
        detail = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "global" in ln), "")
        raise CheckpointError(
            f"{p}: refused to load: the file holds Python objects that would have to run code to load "
            f"({detail[:200]}). Only checkpoints written by napari-gandl are accepted."
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{p}: cannot read this checkpoint ({exc}); it is truncated or not a torch file. "
                              "Use another checkpoint of the run (checkpoints/ckpt-*.pt).") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a napari-gandl checkpoint (no format={FORMAT!r} key).")
    if int(state.get("version", 0)) > VERSION:
        raise CheckpointError(f"{p}: checkpoint format version {state.get('version')} is newer than this "
                              f"napari-gandl understands ({VERSION}); upgrade napari-gandl.")
    return state


def file_identity(path: str | os.PathLike) -> dict:
    """Path, size and sha256 of a file: how tables record the checkpoint they came from."""
    p = Path(path)
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"path": str(p.resolve()), "bytes": p.stat().st_size, "sha256": h.hexdigest()}


def build_discriminator(config: dict):
    """A :class:`~gandl_core.gan.stylegan2.Discriminator` with the architecture recorded in ``config``."""
    from .gan.stylegan2 import Discriminator

    try:
        return Discriminator(int(config["resolution"]), int(config["channels"]),
                             channel_base=int(config["channel_base"]), channel_max=int(config["channel_max"]),
                             mbstd_group=int(config.get("mbstd_group", 4)),
                             feature_dim=int(config.get("feature_dim", 512)))
    except KeyError as exc:
        raise CheckpointError(f"checkpoint config lacks {exc}: it was not written by 'gandl-core train'.") from exc


def build_generator(config: dict):
    """A :class:`~gandl_core.gan.stylegan2.Generator` with the architecture recorded in ``config``."""
    from .gan.stylegan2 import Generator

    return Generator(int(config["resolution"]), int(config["channels"]), z_dim=int(config.get("z_dim", 512)),
                     w_dim=int(config.get("w_dim", 512)), mapping_layers=int(config.get("mapping_layers", 3)),
                     channel_base=int(config["channel_base"]), channel_max=int(config["channel_max"]),
                     input_mode=str(config.get("g_input", "const")))  # runs before g_input existed: const


def load_discriminator(path: str | os.PathLike, device: str = "cpu") -> tuple[Any, Any, dict]:
    """Rebuild the trained discriminator of a checkpoint for embedding.

    Returns
    -------
    (Discriminator in eval mode on ``device``, IntensityNormalizer, info)
        ``info`` holds ``config``, ``channel_names``, ``kimg``, ``step``, ``kind`` and the file identity.

    Raises
    ------
    CheckpointError
        If the checkpoint lacks the discriminator or its weights do not fit the recorded architecture.
    """
    from .plates import IntensityNormalizer

    p = resolve_checkpoint(path)
    state = load_checkpoint(p)
    if "D" not in state or "config" not in state:
        raise CheckpointError(f"{p}: this checkpoint has no discriminator ('D'); kind={state.get('kind')!r}. "
                              "Embed with a GAN-DL training checkpoint, or use 'gandl-core featurize' for others.")
    D = build_discriminator(state["config"])
    try:
        D.load_state_dict(state["D"])
    except RuntimeError as exc:
        raise CheckpointError(f"{p}: the discriminator weights do not match the architecture in its config "
                              f"({str(exc).splitlines()[0]}).") from exc
    D.eval().to(device)
    if "normalizer" not in state:
        raise CheckpointError(f"{p}: the checkpoint has no intensity normalizer; it cannot embed new images.")
    normalizer = IntensityNormalizer.from_dict(state["normalizer"])
    info = {"config": state["config"], "channel_names": list(state.get("channel_names") or []),
            "kimg": float(state.get("kimg", 0.0)), "step": int(state.get("step", 0)),
            "kind": state.get("kind", "stylegan2"), **file_identity(p)}
    return D, normalizer, info


def check_compatible(state: dict, channel_names: Sequence[str], *, source: str = "the data") -> None:
    """Raise CheckpointError unless ``channel_names`` equal the checkpoint's channels (same order).

    The message names both lists and how to select/reorder channels.
    """
    expected = list(state.get("channel_names") or [])
    got = list(channel_names)
    if expected and expected != got:
        raise CheckpointError(
            f"the checkpoint was trained on channels {expected} but {source} has {got}. Select and order the "
            f"channels to match, e.g. --channels {','.join(expected)} (or build_index(..., channels=[...]))."
        )
    n = int(state.get("config", {}).get("channels", len(got)))
    if n != len(got):
        raise CheckpointError(f"the checkpoint expects {n} channels but {source} has {len(got)} ({got}).")
