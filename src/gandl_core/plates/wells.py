"""Well names: the one parser of the project (index, plots, napari plate map).

A well name is one or two row letters and a column number: ``B02``, ``b2``, ``B002``, ``B-02``,
``AF48`` (1536-well plates run rows A..Z, AA..AF). Positions are **0-based** row and column
indices, the cell of a plate array: ``parse_well("A01") == (0, 0)``, ``parse_well("B02") == (1, 1)``,
``parse_well("AA03") == (26, 2)``. The canonical spelling is row letters + a column of at least two
digits: ``format_well(1, 1) == "B02"``, ``normalize_well("b2") == "B02"``.
"""

from __future__ import annotations

import re

from ..errors import DataError

__all__ = ["WellNameError", "parse_well", "format_well", "normalize_well", "row_letters"]

_WELL = re.compile(r"^\s*([A-Za-z]{1,2})[-_\s]?0*(\d{1,3})\s*$")


class WellNameError(DataError, ValueError):
    """A string is not a well name (a ``DataError``; also a ``ValueError`` for callers that catch those)."""


def parse_well(well: object, *, where: str | None = None) -> tuple[int, int]:
    """``"B02"`` (or ``"b2"``, ``"B002"``, ``"B-02"``) -> ``(1, 1)``: 0-based row and column.

    Parameters
    ----------
    well
        The well name.
    where
        Where the name came from (file, line, column), put at the front of the error message.

    Raises
    ------
    WellNameError
        ``well`` is not row letter(s) + a column number >= 1 (e.g. ``"XYZ"``, ``"B0"``, ``""``).
    """
    m = _WELL.match(str(well))
    col = int(m.group(2)) if m else 0
    if not m or col < 1:
        at = f"{where}: " if where else ""
        raise WellNameError(f"{at}well {well!r} is not a well name like 'B02' (row letter(s) A-Z or AA-AF, then the "
                            "column number from 1). Fix the well column.")
    row = 0
    for ch in m.group(1).upper():  # "AA" follows "Z" on 1536-well plates
        row = row * 26 + (ord(ch) - 64)
    return row - 1, col - 1


def row_letters(row: int) -> str:
    """0-based row index -> its letters: 0 -> ``A``, 25 -> ``Z``, 26 -> ``AA``."""
    if int(row) < 0:
        raise ValueError(f"row index {row} is negative")
    s, r = "", int(row) + 1
    while r:
        r, rem = divmod(r - 1, 26)
        s = chr(65 + rem) + s
    return s


def format_well(row: int, col: int) -> str:
    """0-based row and column -> the canonical name: ``format_well(1, 1) == "B02"``."""
    if int(col) < 0:
        raise ValueError(f"column index {col} is negative")
    return f"{row_letters(row)}{int(col) + 1:02d}"


def normalize_well(well: object, *, where: str | None = None) -> str:
    """Any accepted spelling -> the canonical one: ``"b2"``, ``"B-2"``, ``"B002"`` -> ``"B02"``.

    Raises
    ------
    WellNameError
        As :func:`parse_well`.
    """
    return format_well(*parse_well(well, where=where))
