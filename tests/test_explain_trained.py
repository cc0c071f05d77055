"""The generator strip of a generator *our training made* shows the synthetic screen's phenotype.

``tests/data/explain_rna/generator_rna_40kimg.pt`` is a cpu-small run on the synthetic screen's RNA
channel (40 kimg, G learning rate 0.0025; 15 CPU minutes), slimmed to D and the EMA generator in
float16 (tests/data/README.md has the commands). Its fakes draw nuclei, cytoplasm and bright spots.
Here the whole chain runs as a user would: the same screen is written, embedded with that D,
profiled and projected; the strip moves the generator along the fitted On axis and the RNA spot
fraction (puncta) is read on the fakes. Infected (C-) wells carry puncta, mock (C+) wells do not,
so the readout must fall from the C- end to the C+ end. (``test_explain_cli.py`` checks the same
machinery with a stand-in generator that can draw the phenotype by construction.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gandl_core.cli import main

CKPT = Path(__file__).parent / "data" / "explain_rna" / "generator_rna_40kimg.pt"


@pytest.fixture(scope="module")
def projected(tmp_path_factory) -> Path:
    from gandl_core.synth import make_screen

    root = tmp_path_factory.mktemp("explain_trained")
    # the screen the generator was trained on (seed 0, one cell type, 96-px fields, 236 wells)
    screen = make_screen(root / "screen", plates=2, cell_types=("HRCE",), image_size=96, seed=0)
    assert main(["embed", str(screen), "--checkpoint", str(CKPT), "-o", str(root / "emb.parquet"),
                 "--channels", "RNA", "--workers", "0"]) == 0
    assert main(["profile", str(root / "emb.parquet"), "-o", str(root / "prof.parquet"),
                 "--controls", "Metadata_Role in ['positive', 'negative']"]) == 0
    assert main(["project", str(root / "prof.parquet"), "-o", str(root / "proj")]) == 0
    return root / "proj"


@pytest.mark.parametrize("seed", [1, 2])
def test_trained_generator_strip_loses_rna_puncta_from_c_minus_to_c_plus(projected: Path, seed: int) -> None:
    from gandl_core.analysis import explain
    from gandl_core.analysis.explain_generator import generator_strip, load_feature_axis

    axis, ckpt = load_feature_axis(projected)
    assert Path(ckpt).name == CKPT.name  # the provenance chain leads back to the shipped checkpoint
    strip = generator_strip(ckpt, axis, starts=4, steps=7, span=(-3.0, 3.0), seed=seed)
    t = strip.table
    # the fakes are placed on the axis: their measured scores rise along every strip
    for _, g in t.groupby("replicate"):
        assert np.all(np.diff(g.sort_values("position")["score"].to_numpy()) >= -1e-6), g
    reads, rho = explain.readout(strip, channel="RNA")
    per_start, medians = explain.readout_by_replicate(reads)
    # every strip loses puncta towards C+ (measured: -0.90 .. -0.99 for seeds 1 and 2)
    assert all(r < -0.6 for r in per_start), per_start
    # and so does the typical image: the median readout never rises along the axis and ends well below
    # where it starts (measured 0.26 -> 0.08 and 0.20 -> 0.08)
    assert np.all(np.diff(medians) <= 1e-3), medians
    assert medians[-1] < 0.6 * medians[0], medians
    assert rho < -0.6, reads  # pooled over 28 fakes (measured -0.74, -0.84)


def test_montage_of_the_learned_axis_loses_puncta_from_c_minus_to_c_plus(projected: Path) -> None:
    """The real sites at quantiles of this run's On score: the same readout falls from C- to C+."""
    from gandl_core.analysis import explain
    from gandl_core.plates import build_index
    from gandl_core.tables import read_table

    scores = read_table(projected / "scores.parquet")
    index = build_index(projected.parent / "screen", channels=["RNA"])
    m = explain.axis_montage(scores, index, n=7, per_quantile=2, seed=0)
    reads, rho = explain.readout(m, channel="RNA")
    _, medians = explain.readout_by_replicate(reads)
    assert rho < -0.7, reads  # 14 real sites (measured -0.85; medians 0.17 -> 0.06)
    assert medians[-1] < 0.6 * medians[0], medians
