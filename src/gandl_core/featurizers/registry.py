"""Name -> featurizer factory for every embedding method (``gandl-core featurize --method NAME``).

======================= ======== ================================================================
method                  prefix   needs
======================= ======== ================================================================
``gan``                 GAN_     ``checkpoint`` (a ``gandl-core train`` checkpoint); ``features``
``random-d``            RandD_   architecture: ``checkpoint`` or ``preset`` or ``resolution``; ``features``
``handcrafted``         HC_      nothing (options: ``nuclear_channel``, ``intensity``)
``convae``              CAE_     ``checkpoint`` (a ``gandl-core train-convae`` checkpoint)
``densenet-collapsed``  DNc_     ``weights`` (torchvision DenseNet-121 file) or ``random_weights``
``densenet-concat``     DNx_     ``weights`` or ``random_weights``
======================= ======== ================================================================

``features`` picks the discriminator's readout: ``multiscale`` (default; mean and spread of every
stage) or ``final`` (the paper's fc layer); docs/embedding.md compares them.

Every featurizer follows :class:`gandl_core.featurizers.base.Featurizer` and runs through
:func:`gandl_core.embed.embed_iter` (sharding, resume, workers for free).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from ..errors import ConfigError

METHODS: dict[str, str] = {
    "gan": "GAN_",
    "random-d": "RandD_",
    "handcrafted": "HC_",
    "convae": "CAE_",
    "densenet-collapsed": "DNc_",
    "densenet-concat": "DNx_",
}

# Options each method accepts (anything else is a mistake worth reporting).
_OPTIONS: dict[str, set[str]] = {
    "gan": {"checkpoint", "features"},
    "random-d": {"checkpoint", "preset", "resolution", "channel_base", "channel_max", "seed", "features"},
    "handcrafted": {"nuclear_channel", "intensity", "distances", "levels", "granularity_steps",
                    "granularity_size", "granularity_background", "min_nucleus_area"},
    "convae": {"checkpoint"},
    "densenet-collapsed": {"weights", "random_weights", "seed", "input_size", "collapse_weight", "collapse_bias"},
    "densenet-concat": {"weights", "random_weights", "seed", "input_size"},
}


def available_methods() -> list[str]:
    """Names accepted by :func:`make_featurizer`, in documentation order."""
    return list(METHODS)


def make_featurizer(method: str, channels: Sequence[str], *, device: str = "cpu", normalizer: Any = None,
                    **options: Any) -> Any:
    """Build the featurizer of ``method`` for data with these channels.

    Parameters
    ----------
    method
        One of :func:`available_methods`.
    channels
        Channel names of the data, in order.
    device
        Where networks run.
    normalizer
        Override the intensity normalizer (default: the checkpoint's, else fitted on the plate).
    **options
        Method options (see the table in the module docstring); ``None`` values are ignored.

    Returns
    -------
    Featurizer

    Raises
    ------
    ConfigError
        Unknown method (lists the known ones), an option the method does not take, or a
        missing required option (names the ``--option``).
    CheckpointError
        Missing/unreadable checkpoint or weights file, channel mismatch.
    """
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: choose one of {available_methods()}.")
    options = {k: v for k, v in options.items() if v is not None and v is not False}
    extra = sorted(set(options) - _OPTIONS[method])
    if extra:
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        raise ConfigError(f"--method {method} does not use {flags}; it takes "
                          f"{sorted('--' + k.replace('_', '-') for k in _OPTIONS[method])}.")
    channels = [str(c) for c in channels]
    if method in ("gan", "convae"):
        if "checkpoint" not in options:
            what = "gandl-core train" if method == "gan" else "gandl-core train-convae"
            raise ConfigError(f"--method {method} needs --checkpoint: the .pt file (or run folder) written by "
                              f"'{what}'.")
        if method == "gan":
            from .base import GanFeaturizer

            feat = GanFeaturizer.from_checkpoint(options["checkpoint"], device=device,
                                                 **({"features": options["features"]} if "features" in options else {}))
        else:
            from .convae import ConvAEFeaturizer

            feat = ConvAEFeaturizer.from_checkpoint(options["checkpoint"], device=device)
        if normalizer is not None:
            feat.normalizer = normalizer
        return feat
    if method == "random-d":
        from .random_d import random_d_featurizer

        return random_d_featurizer(channels, normalizer=normalizer, device=device, **options)
    if method == "handcrafted":
        from .handcrafted import HandcraftedFeaturizer

        return HandcraftedFeaturizer(channels, normalizer=normalizer, **options)
    from .densenet import DenseNetFeaturizer

    mode = "collapsed" if method == "densenet-collapsed" else "concat"
    return DenseNetFeaturizer(channels, mode=mode, normalizer=normalizer, device=device, **options)


def describe(path_or_df: Any) -> dict:
    """The featurizer identity stored in an embeddings table (``{}`` if none).

    Parameters
    ----------
    path_or_df
        A table path or a DataFrame read with ``tables.read_table``.
    """
    if isinstance(path_or_df, (str, os.PathLike)):
        from ..tables import read_table_metadata

        meta = read_table_metadata(path_or_df)
    else:
        meta = getattr(path_or_df, "attrs", {}).get("gandl", {})
    return dict(meta.get("featurizer") or {})
