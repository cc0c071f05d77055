"""Write small vendor-format sources that bioio reads, for the tests (like ``omezarr_plate.py``).

* ``write_imagexpress(root)``: an ImageXpress acquisition folder (``.jdce`` descriptor, image_metadata
  CSV, one TIFF per plane), wells B02 and C03, sites 1 and 2, channels DAPI and FITC.
* ``write_czi(path)``: one CZI file (pylibCZIrw, which bioio-czi ships with) holding one scene with
  named channels (DNA, ER).

Pixel values encode where they come from: ``value(channel, well, site) = 1000*channel + 100*well + 10*site``
(constant planes).
"""

from __future__ import annotations

import csv
import json

import numpy as np


def value(ch: int, well: int, site: int) -> int:
    return 1000 * ch + 100 * well + 10 * site


def write_imagexpress(root, wells=("B02", "C03"), sites=(1, 2), channels=("DAPI", "FITC"), shape=(40, 44)):
    """A minimal ImageXpress acquisition: .jdce descriptor, image_metadata CSV, one TIFF per plane."""
    import tifffile

    (root / "timepoint1").mkdir(parents=True)
    desc = {"ImageStack": {"AutoLeadAcquisitionProtocol": {"Wavelengths": [
        {"Index": k + 1, "EmissionFilter": {"Name": n}} for k, n in enumerate(channels)]}}}
    (root / "plate.jdce").write_text(json.dumps(desc))
    rows = []
    for w, well in enumerate(wells):
        for site in sites:
            for c in range(len(channels)):
                name = f"{well}_s{site}_w{c + 1}.tif"
                tifffile.imwrite(root / "timepoint1" / name, np.full(shape, value(c, w, site), np.uint16))
                rows.append({"Well": well, "Field": site, "Wavelength": c + 1, "Timepoint": 1, "ZIndex": 1,
                             "ImageFileName": name, "ImageSubFolderPath": "timepoint1"})
    with open(root / "image_metadata_1.csv", "w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)
    return root


def write_czi(path, channels=("DNA", "ER"), shape=(30, 26), well: int = 0):
    """One CZI file, one scene, one constant plane per named channel (value(c, well, 1))."""
    from pylibCZIrw import czi as pyczi

    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        for c in range(len(channels)):
            czi.write(data=np.full(shape, value(c, well, 1), np.uint16), plane={"C": c, "T": 0, "Z": 0})
        czi.write_metadata(document_name="plate", channel_names=dict(enumerate(channels)))
    return path
