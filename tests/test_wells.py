"""The one well-name parser (gandl_core.plates.wells) and the modules that use it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gandl_core.errors import DataError
from gandl_core.plates.wells import WellNameError, format_well, normalize_well, parse_well, row_letters


@pytest.mark.parametrize("name, rc", [("B02", (1, 1)), ("b2", (1, 1)), ("B002", (1, 1)), ("B-02", (1, 1)),
                                      (" b_2 ", (1, 1)), ("A01", (0, 0)), ("H12", (7, 11)), ("P24", (15, 23)),
                                      ("Z1", (25, 0)), ("AA03", (26, 2)), ("af48", (31, 47)), ("C100", (2, 99))])
def test_parse_well_spellings(name, rc) -> None:
    assert parse_well(name) == rc
    assert parse_well(format_well(*rc)) == rc


@pytest.mark.parametrize("bad", ["XYZ", "", "B0", "B00", "12", "B", "ABC1", "B1234", "B02x", None, float("nan")])
def test_bad_well_names_are_data_errors_naming_the_value(bad) -> None:
    with pytest.raises(WellNameError, match="is not a well name like 'B02'") as err:
        parse_well(bad, where="plate.csv line 4")
    assert isinstance(err.value, DataError) and isinstance(err.value, ValueError)
    assert str(err.value).startswith(f"plate.csv line 4: well {bad!r}")


def test_format_and_normalize() -> None:
    assert format_well(1, 1) == "B02" and format_well(26, 2) == "AA03" and format_well(0, 99) == "A100"
    assert [row_letters(i) for i in (0, 7, 25, 26, 31, 51, 52)] == ["A", "H", "Z", "AA", "AF", "AZ", "BA"]
    assert normalize_well("b2") == normalize_well("B-002") == "B02"
    with pytest.raises(ValueError):
        format_well(-1, 0)


def test_index_and_heatmap_use_it() -> None:
    from gandl_core.analysis.plots import plate_grids
    from gandl_core.plates._sources import normalize_well as index_well

    assert index_well("c3", "x.csv line 2") == "C03"
    with pytest.raises(DataError, match="x.csv line 2: well 'XYZ'"):
        index_well("XYZ", "x.csv line 2")
    # Before the shared parser, the index turned 'B0' into a well 'B00' that no plate has.
    with pytest.raises(DataError, match="'B0'"):
        index_well("B0", "x.csv line 3")
    df = pd.DataFrame({"Metadata_Plate": "P", "Metadata_Well": ["b2", "AA03", "H012"], "v": [1.0, 2.0, 3.0]})
    layout, grids = plate_grids(df, "v")
    assert layout == 1536 and grids["P"][1, 1] == 1.0 and grids["P"][26, 2] == 2.0 and grids["P"][7, 11] == 3.0
    assert np.isnan(grids["P"]).sum() == 32 * 48 - 3
    with pytest.raises(DataError, match="plate_heatmap: well 'XYZ'"):
        plate_grids(pd.DataFrame({"Metadata_Well": ["XYZ"], "v": [1.0]}), "v")
