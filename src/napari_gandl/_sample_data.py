"""File > Open Sample > napari-gandl: a small synthetic screen, generated on the fly (no download).

The screen is written once with :func:`gandl_core.synth.make_screen` into a cache folder
(``$NAPARI_GANDL_CACHE`` or ``~/.cache/napari-gandl``) and then opened exactly like the reader
opens a plate: the first site (one layer per stain) with the plate map beside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from gandl_core import __version__

# The cache is keyed by the package version so an upgrade that changes the renderer regenerates it.
SAMPLE_NAME = f"synthetic-screen-{__version__}-r3"
SAMPLE_KWARGS = {"plates": 1, "seed": 0, "image_size": 96}  # 2 cell types x 1 plate, ~5 s


def cache_dir() -> Path:
    """Folder holding generated sample data (``$NAPARI_GANDL_CACHE`` overrides the default)."""
    return Path(os.environ.get("NAPARI_GANDL_CACHE", Path.home() / ".cache" / "napari-gandl")).expanduser()


def sample_screen_path() -> Path:
    """Path of the synthetic sample screen, generating it on first use.

    Generation writes to a temporary folder beside the target and renames it into place, so an
    interrupted run never leaves a half-written screen that later calls would trust.

    Returns
    -------
    Path
        An RxRx-layout folder (``metadata.csv`` + ``images/``).
    """
    target = cache_dir() / SAMPLE_NAME
    if (target / "metadata.csv").is_file():
        return target
    from gandl_core.synth import make_screen

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".sample-", dir=target.parent))
    try:
        made = Path(make_screen(tmp / "screen", **SAMPLE_KWARGS))
        try:
            os.replace(made, target)
        except OSError:  # another process won the race: use its copy
            if not (target / "metadata.csv").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def make_sample_screen() -> list[tuple]:
    """npe2 sample-data command: the synthetic screen (first site + plate map).

    In napari the screen is generated (first use) and indexed in a worker, progress in the
    activity dock; without a viewer the layers are returned directly.
    """
    from ._reader import _target_viewer, read_now

    viewer = _target_viewer()
    if viewer is None:
        return read_now(sample_screen_path(), "plate")
    from ._hub import hold_activation, hub_of

    target = cache_dir() / SAMPLE_NAME
    hub = hub_of(viewer)
    # napari builds the placeholder layer returned below (without making it the active layer: that
    # switch repainted the layer controls, as for the site layers); the worker starts on a later
    # turn, as a staged step. Started here, its indexing competed for the GIL with the layer's
    # creation: 0.32 s of GUI-thread CPU in one go instead of 0.12-0.19 s.
    restore = hold_activation(viewer)

    def start() -> None:
        restore()
        hub.open_source(target, kind="plate", prepare=sample_screen_path)

    hub.after_build(start)
    # napari wants at least one layer from a sample command: a 1-pixel placeholder image, which
    # becomes the first channel's layer when the worker is done (or is removed if opening fails).
    import numpy as np

    from ._layers import KIND_KEY

    return [(np.zeros((1, 1), np.uint16), {"name": "sample screen (opening...)",
                                           "metadata": {KIND_KEY: "placeholder"}}, "image")]
