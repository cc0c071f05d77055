"""Pixel I/O for one site: cheap header checks and raw-intensity reads.

Files are PNG (8- or 16-bit grey, read with Pillow) or TIFF (read with tifffile, which returns the
stored values: palette TIFFs with an identity grey map stay single-channel instead of being expanded
to RGB as Pillow would). A path ``"<file>::<k>"`` names frame ``k`` (0-based) of a multichannel TIFF
stack; the channel axis of a stack is the one the file's metadata names (OME-XML, ImageJ, tifffile:
see :mod:`._tiffmeta`), else the smaller of the first and last axis of a 3-D stack (and <= 16).
A path ``"<array>::<k>"`` whose ``<array>`` is a zarr array folder is channel ``k`` of an OME-Zarr
field (:mod:`._omezarr`); ``"<file>::scene=<i>::<k>"`` is channel ``k`` of scene ``i`` of a vendor
file read with bioio (:mod:`._bioio`). Nothing here keeps a file open after it returns, so the functions are safe
in DataLoader workers.

Two guards apply to every read: an image whose header declares more than :func:`max_image_pixels`
values (height x width x channels; default 2**27, set ``GANDL_MAX_IMAGE_PIXELS`` to change it) is
refused before any pixel buffer is allocated, and a floating-point image holding NaN or infinite
values is refused naming the file (they would poison the plate's intensity scaling). A TIFF whose
page chain runs past its end is reported as cut short (not as holding fewer channels).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from ..errors import DataError
from . import _bioio, _omezarr, _tiffmeta

PATH_PREFIX = "Path_"
STACK_SEP = "::"
MAX_STACK_CHANNELS = 16
_TIFF_SUFFIXES = {".tif", ".tiff"}
DEFAULT_MAX_IMAGE_PIXELS = 1 << 27  # 134 M values: e.g. 5 channels of 5180 x 5180; a 16-bit file of 256 MiB
MAX_PIXELS_ENV = "GANDL_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """The largest image (height x width x channels) a file may declare: ``GANDL_MAX_IMAGE_PIXELS``
    from the environment, else :data:`DEFAULT_MAX_IMAGE_PIXELS`.

    Raises
    ------
    ConfigError
        The environment variable is not a positive whole number.
    """
    text = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except ValueError:
        value = 0
    if value <= 0:
        from ..errors import ConfigError

        raise ConfigError(f"{MAX_PIXELS_ENV}={os.environ[MAX_PIXELS_ENV]!r}: give a positive whole number of "
                          f"pixels (default {DEFAULT_MAX_IMAGE_PIXELS}).")
    return value


def check_declared_size(shape: Sequence[int], where: object) -> None:
    """Refuse an image whose header declares more values than :func:`max_image_pixels` allows,
    before anything is allocated for it (a 1 KB file may declare 100000 x 100000 pixels)."""
    total = 1
    for s in shape:
        total *= max(int(s), 0)
    limit = max_image_pixels()
    if total > limit:
        dims = " x ".join(str(int(s)) for s in shape)
        raise DataError(f"{where}: the header declares an image of {dims} = {total:,} values, more than the "
                        f"limit of {limit:,} (a damaged file, or a very large image). If the image is real, "
                        f"raise the limit with the environment variable {MAX_PIXELS_ENV}=<values>, or crop/tile "
                        "it into fields first.")


_CUT_SIGNS = ("page offset", "offset to page", "tag list of page")


@contextmanager
def _tiff_problems() -> Iterator[list[str]]:
    """Collect what tifffile logs while parsing (it logs, rather than raises, a page chain that
    points past the end of a cut file), without printing it."""
    found: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if record.levelno >= logging.ERROR and any(k in text for k in _CUT_SIGNS):
                found.append(text)

    log = logging.getLogger("tifffile")
    handler, propagate = _Keep(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield found
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def _tiff_header(p: Path) -> tuple[tuple[int, ...], str, str | None, list[str] | None]:
    """:func:`._tiffmeta.header` with two guards: a page chain that runs past the end of the file is
    "cut short" (tifffile only logs it and shows fewer pages, which would read as fewer channels),
    and the declared size must be within :func:`max_image_pixels`."""
    with _tiff_problems() as problems:
        try:
            info = _tiffmeta.header(p)
        except Exception:
            if not problems:
                raise
            info = None
    if problems:
        raise ValueError(f"the file is cut short or damaged: its page chain points past its {p.stat().st_size} "
                         f"bytes (tifffile: {problems[0][:120]})")
    check_declared_size(info[0], p)
    return info


def split_stack_path(path: str) -> tuple[str, int | None]:
    """Split ``"file::k"`` into ``("file", k)``; a plain path gives ``(path, None)``."""
    path = str(path)
    head, sep, tail = path.rpartition(STACK_SEP)
    if sep and tail.isdigit():
        return head, int(tail)
    return path, None


def _zarr_field(file: str) -> bool:
    """True if ``file`` is an OME-Zarr field's array folder (the OME-Zarr HCS source)."""
    return os.path.isdir(file) and _omezarr.is_zarr_array(file)


def exists(path: str) -> bool:
    """Whether the file (or OME-Zarr array) a ``Path_`` value names is there."""
    file = split_stack_path(path)[0]
    return os.path.isfile(file) or _zarr_field(file) or _bioio.exists(file)


def channel_axis(shape: Sequence[int], where: str = "", axes: str | None = None) -> tuple[int | None, int]:
    """Return (channel axis or None for a 2-D plane, channel count) for an image of ``shape``.

    Singleton axes are ignored; the axis is counted among the others. When the file's metadata
    names its axes (``axes``, e.g. ``"CYX"`` from OME-XML/ImageJ/tifffile, see :mod:`._tiffmeta`),
    the channel axis is the one it calls ``C`` (or ``S``), with no size limit. Otherwise a 3-D image
    has its channels on the smaller of the first and last axis, which must be at most 16 (why: fields
    are hundreds of pixels wide, stains are few).

    Raises
    ------
    DataError
        If the shape is not 2-D or 3-D after dropping singleton axes, or no axis looks like channels,
        or the metadata names z planes / time points.
    """
    named = _tiffmeta.channel_axis(shape, axes, where)
    if named is not None:
        return named
    dims = [int(s) for s in shape if int(s) != 1]
    if len(dims) == 2:
        return None, 1
    if len(dims) != 3:
        raise DataError(f"{where}: image has shape {tuple(shape)}; expected a 2-D plane [H,W] or a "
                        f"stack [C,H,W] / [H,W,C] with C <= {MAX_STACK_CHANNELS}. Re-save it as one "
                        "of those.")
    first, last = dims[0], dims[-1]
    if first <= last and first <= MAX_STACK_CHANNELS:
        return 0, first
    if last <= MAX_STACK_CHANNELS:
        return 2, last
    raise DataError(f"{where}: cannot tell the channel axis of a stack of shape {tuple(shape)} "
                    f"(neither the first nor the last axis is <= {MAX_STACK_CHANNELS}). Save it as "
                    "[C,H,W].")


def image_header(path: str | os.PathLike) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of an image file read from its header only (no pixel decoding).

    Also checks cheaply that the file is complete: a PNG must end with its IEND chunk; a TIFF's
    image data must lie inside the file. Raises DataError naming the file otherwise.

    Returns
    -------
    (shape, dtype)
        ``shape`` as stored (e.g. ``(H, W)`` or ``(C, H, W)``), ``dtype`` a numpy dtype name.
    """
    return image_info(path)[:2]


def image_info(path: str | os.PathLike) -> tuple[tuple[int, ...], str, str | None, list[str] | None]:
    """:func:`image_header` plus what a TIFF's metadata says: (shape, dtype, axes, channel names).

    ``axes`` (e.g. ``"CYX"``) and ``channel names`` are None where the file does not name them
    (PNG, plain TIFF pages).
    """
    p = Path(path)
    try:
        if p.suffix.lower() in _TIFF_SUFFIXES:
            return _tiff_header(p)
        with open(p, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            n = fh.tell()
            fh.seek(max(0, n - 12))
            tail = fh.read()
            fh.seek(0)
            with _open_pil(fh, p) as im:
                if im.format == "PNG" and b"IEND" not in tail:
                    raise ValueError("no IEND chunk at the end (truncated)")
                mode, (w, h) = im.mode, im.size
        dtype = {"L": "uint8", "P": "uint8", "1": "bool", "I;16": "uint16", "I;16B": "uint16",
                 "I": "int32", "F": "float32"}.get(mode, "uint8")
        # RGB/LA PNGs are read as one grey plane (read_plane refuses them if the bands differ).
        return (h, w), dtype, None, None
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{p}: no such file. Fix the path in the index/CSV or restore the file.") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder error becomes a named DataError
        raise DataError(f"{p}: cannot read this image ({exc}). Re-export the file, or build the "
                        "index with skip_missing=True to leave this site out.") from exc


def read_plane(path: str | os.PathLike) -> np.ndarray:
    """Decode a whole image file to a numpy array of its stored values (2-D or 3-D).

    Raises
    ------
    DataError
        Naming the file if it is missing, truncated or not an image.
    """
    return decode(path)[0]


def decode(path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """:func:`read_plane` plus the axes a TIFF's metadata names (None where it names none)."""
    p = Path(path)
    try:
        if p.suffix.lower() in _TIFF_SUFFIXES:
            _tiff_header(p)  # a cut file or an oversized header is refused before any pixel buffer exists
            # tifffile returns stored values; palette images are NOT mapped through the colormap.
            arr, axes = _tiffmeta.read(p)
            return _finite(arr, p), axes
        with _open_pil(p, p) as im:
            im.load()
            if im.mode in ("RGB", "RGBA", "LA"):
                arr = np.asarray(im)
                grey = arr[..., 0]
                if not all(np.array_equal(grey, arr[..., k]) for k in range(1, min(arr.shape[-1], 3))):
                    raise ValueError(f"colour image (mode {im.mode}); expected one grey channel per file")
                return grey, None
            # "P" gives palette indices (raw values), "I;16" gives uint16, "I" int32.
            return _finite(np.asarray(im), p), None
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{p}: no such file. Fix the path in the index/CSV or restore the file.") from exc
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{p}: cannot read this image ({exc}). Re-export the file, or build the "
                        "index with skip_missing=True to leave this site out.") from exc


@contextmanager
def _open_pil(fp, where: Path):
    """``PIL.Image.open`` with this module's size limit applied to the header before any decoding.
    Pillow's own decompression-bomb limit is raised to ours when ours is larger (never lowered)."""
    import warnings

    from PIL import Image

    limit = max_image_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit
    _check_png_header(fp, where)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{where}: the header declares an image larger than the limit ({exc}). If the image "
                        f"is real, raise the limit with {MAX_PIXELS_ENV}=<values>.") from None
    with im:
        bands = len(im.getbands())
        check_declared_size((im.size[1], im.size[0]) + ((bands,) if bands > 1 else ()), where)
        yield im


def _check_png_header(fp, where: Path) -> None:
    """A PNG's declared size straight from its IHDR chunk (bytes 16..24), before Pillow sees it."""
    import struct

    if hasattr(fp, "read"):
        pos = fp.tell()
        head = fp.read(26)
        fp.seek(pos)
    else:
        with open(fp, "rb") as fh:
            head = fh.read(26)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        colour = head[25] if len(head) > 25 else 0
        bands = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 1)
        check_declared_size((h, w) + ((bands,) if bands > 1 else ()), where)


def _finite(arr: np.ndarray, where: Path) -> np.ndarray:
    """``arr`` unchanged; a floating-point image with NaN or inf values is refused, naming the file."""
    if arr.dtype.kind == "f":
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            kinds = "/".join(k for k, f in (("NaN", np.isnan), ("inf", np.isinf)) if f(arr).any())
            raise DataError(f"{where}: {bad:,} of {arr.size:,} pixels are {kinds} (a floating-point image with "
                            "missing or overflowed values). They would corrupt the plate's intensity scaling: "
                            "replace them (e.g. by 0) and re-save the file, or leave the site out.")
    return arr


def _frame(stack: np.ndarray, k: int, where: str, axes: str | None = None) -> np.ndarray:
    axis, n = channel_axis(stack.shape, where, axes)
    squeezed = stack.reshape([s for s in stack.shape if s != 1]) if stack.ndim > 2 else stack
    if axis is None:
        if k != 0:
            raise DataError(f"{where}: asks for frame {k} but the file has one plane.")
        return squeezed
    if not 0 <= k < n:
        raise DataError(f"{where}: asks for frame {k} but the stack has {n} channels (0..{n - 1}).")
    return np.take(squeezed, k, axis=axis)


def _paths_of(row_or_paths: object, channels: Sequence[str] | None) -> list[str]:
    if isinstance(row_or_paths, (str, os.PathLike)):
        return [str(row_or_paths)]
    if isinstance(row_or_paths, Mapping) or hasattr(row_or_paths, "index") and hasattr(row_or_paths, "get"):
        keys = list(row_or_paths.keys())
        cols = [k for k in keys if str(k).startswith(PATH_PREFIX)]
        if not cols:
            raise DataError(f"read_site: the row has no '{PATH_PREFIX}<channel>' entries (keys: "
                            f"{[str(k) for k in keys][:8]}). Pass a row of an index from build_index.")
        if channels is not None:
            missing = [c for c in channels if PATH_PREFIX + c not in cols]
            if missing:
                raise DataError(f"read_site: channel(s) {missing} not in this row; available: "
                                f"{[c[len(PATH_PREFIX):] for c in cols]}.")
            cols = [PATH_PREFIX + c for c in channels]
        return [str(row_or_paths[c]) for c in cols]
    paths = [str(p) for p in row_or_paths]  # type: ignore[union-attr]
    if channels is not None:
        raise DataError("read_site: channels= needs an index row (named Path_ columns), not a list of paths.")
    return paths


def read_site(row_or_paths: object, channels: Sequence[str] | None = None) -> np.ndarray:
    """Read one site as a float32 array [C,H,W] of raw intensities (no normalization).

    Parameters
    ----------
    row_or_paths
        A row of an index (``pd.Series`` or dict with ``Path_<Channel>`` entries, in channel order),
        or a sequence of paths (one per channel, ``"file::k"`` for frame k of a stack).
    channels
        Channel names to read, in this order (only with a row); default all ``Path_`` entries.

    Returns
    -------
    numpy.ndarray
        float32 [C,H,W]; 8-bit files give 0..255, 16-bit files 0..65535.

    Raises
    ------
    DataError
        If a file is missing, truncated or unreadable (the message names it), or the channels
        differ in size.
    """
    paths = _paths_of(row_or_paths, channels)
    cache: dict[str, np.ndarray] = {}  # a stack is decoded once per site, not once per channel
    planes = []
    for path in paths:
        file, k = split_stack_path(path)
        if _zarr_field(file):  # OME-Zarr: read only this channel's plane, axes from the metadata
            planes.append(_omezarr.read_plane(file, k))
            continue
        if _bioio.split_scene(file):  # "<vendor file>::scene=<i>": bioio reads channel k of scene i
            planes.append(_bioio.read_plane(file, k))
            continue
        if file not in cache:
            cache[file] = decode(file)
        arr, axes = cache[file]
        if k is None and arr.ndim > 2 and channel_axis(arr.shape, path, axes)[0] is not None:
            raise DataError(f"{path}: holds {channel_axis(arr.shape, path, axes)[1]} channels (shape {arr.shape}) "
                            "but is named as one plane. Index a stack as '<file>::<k>' per channel (a "
                            "folder of multichannel TIFFs does this).")
        plane = _frame(arr, k or 0, path, axes) if (k is not None or arr.ndim > 2) else arr
        planes.append(plane)
    shapes = {p.shape for p in planes}
    if len(shapes) > 1:
        detail = ", ".join(f"{path} {p.shape}" for path, p in zip(paths, planes))
        raise DataError(f"channels of one site differ in size: {detail}. All channels of a site must "
                        "have the same height and width.")
    return np.stack([p.astype(np.float32, copy=False) for p in planes])


def plane_shape(path: str, cache: dict | None = None) -> tuple[tuple[int, int], str, int]:
    """((H, W), dtype, channels-in-file) of the plane ``path`` names, from the header only.

    ``cache`` (file -> header) lets the channels of one stack share a single header read.
    """
    file, k = split_stack_path(path)
    if _zarr_field(file):
        return _omezarr.plane_shape(file, k)
    if _bioio.split_scene(file):
        return _bioio.plane_shape(file, k)
    if cache is not None and file in cache:
        shape, dtype, axes = cache[file]
    else:
        shape, dtype, axes, _ = image_info(file)
        if cache is not None:
            cache[file] = (shape, dtype, axes)
    axis, n = channel_axis(shape, path, axes)
    dims = [s for s in shape if s != 1]
    if axis is None:
        hw = (dims[0], dims[1])
        if k not in (None, 0):
            raise DataError(f"{path}: asks for frame {k} but the file has one plane.")
    else:
        hw = tuple(d for i, d in enumerate(dims) if i != axis)
        if k is None:
            raise DataError(f"{file}: holds {n} channels, but the index names the file without "
                            "'::<k>'. Index it as a folder of multichannel TIFFs.")
        if not 0 <= k < n:
            raise DataError(f"{path}: asks for frame {k} but the stack has {n} channels (0..{n - 1}).")
    return hw, dtype, n
