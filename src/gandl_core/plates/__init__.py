"""The plate data layer: index plates on disk, read sites, normalize intensities, serve tensors.

``build_index`` turns an RxRx folder, a CellProfiler LoadData CSV, a folder of TIFFs or an index
``.parquet`` into one table (one row per site: ``Metadata_*`` + ``Path_<Channel>``), validated up
front. ``read_site`` reads a site as float32 [C,H,W] raw intensities. ``IntensityNormalizer`` maps
robust per-channel percentiles to [-1, 1]. ``PlateDataset`` is the torch Dataset that training and
embedding read through (imported lazily: importing this package does not import torch).
"""

from __future__ import annotations

from ._images import image_header, read_site, split_stack_path
from ._omezarr import is_omezarr_plate, plate_channels
from ._index import build_index, build_index_iter, channel_columns, channel_names, select_channels
from ._normalize import IntensityNormalizer
from ._sources import RXRX_CHANNELS

__all__ = ["build_index", "build_index_iter", "channel_columns", "channel_names", "select_channels", "read_site",
           "image_header", "split_stack_path", "is_omezarr_plate", "plate_channels", "IntensityNormalizer", "PlateDataset", "RXRX_CHANNELS"]


def __getattr__(name: str):
    # PlateDataset subclasses torch's Dataset; import it (and torch) only when asked for.
    if name == "PlateDataset":
        from ._dataset import PlateDataset

        return PlateDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
