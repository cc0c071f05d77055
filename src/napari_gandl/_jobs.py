"""Core calls the docks run in a worker process (:mod:`._process`): no Qt, no napari here.

A function named here as ``"napari_gandl._jobs:<name>"`` is imported in a fresh interpreter, so
this module stays light (pandas and gandl_core; torch only inside the functions).
"""

from __future__ import annotations

import pandas as pd


def embed_generator(index: pd.DataFrame, checkpoint: str, *, wells: list[tuple[str, str]] | None,
                    batch_size: int = 16):
    """Progress generator: load the discriminator (imports torch) and embed every site of ``index``.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        The site-level embedding table (Metadata_* + GAN_*) and its per-well medians.
    """
    from gandl_core.embed import embed_iter
    from gandl_core.featurizers.base import GanFeaturizer

    featurizer = GanFeaturizer.from_checkpoint(checkpoint, "cpu")
    sites = yield from embed_iter(index, featurizer, wells=wells, batch_size=batch_size)
    return sites, well_profiles(sites)


def well_profiles(sites: pd.DataFrame) -> pd.DataFrame:
    """Per-well median of the site features (core :func:`~gandl_core.analysis.profiles.aggregate`)."""
    from gandl_core.analysis.profiles import aggregate

    return aggregate(sites, strata=("Metadata_Plate", "Metadata_Well"), method="median")
