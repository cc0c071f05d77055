"""``gandl-core explain`` end to end on a tiny chain (synth -> train cpu-tiny -> embed -> profile -> project).

A cpu-tiny run of two steps has learned nothing: its generator draws noise, so the CLI tests check
the mechanics (files, the provenance chain, determinism, the illustration label, the report
section, refusals). Its discriminator is nearly random, but random-weight D features still tell
the controls apart, so the axis fitted on them is a real On axis of the screen; the phenotype test
gives that D and axis a generator that *can* draw the phenotype by construction (see
:class:`CrossFadeG`), on all five channels; ``test_explain_trained.py`` does the same with a generator
our training made (the RNA channel; docs/explain.md, "What the tests show").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gandl_core.cli import main
from gandl_core.errors import CheckpointError, DataError

CONTROLS = "Metadata_Role in ['positive', 'negative']"


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    from gandl_core.synth import make_screen

    root = tmp_path_factory.mktemp("explain")
    screen = make_screen(root / "screen", plates=2, cell_types=("HRCE",), image_size=96, controls=6, compounds=3,
                         replicates=1, seed=2)
    assert main(["train", str(screen), "-o", str(root / "run"), "--preset", "cpu-tiny", "--resolution", "32",
                 "--kimg", "0.016"]) == 0
    assert main(["embed", str(screen), "--checkpoint", str(root / "run"), "-o", str(root / "emb.parquet"),
                 "--workers", "0"]) == 0
    assert main(["profile", str(root / "emb.parquet"), "-o", str(root / "prof.parquet"), "--controls", CONTROLS]) == 0
    assert main(["project", str(root / "prof.parquet"), "-o", str(root / "out" / "proj")]) == 0
    return root


def test_cli_explain_writes_montage_strips_and_a_report_section(chain: Path, capsys) -> None:
    out = chain / "out" / "explain"
    args = ["explain", str(chain / "screen"), str(chain / "out" / "proj"), "-o", str(out), "--n", "4",
            "--readout-channel", "RNA", "--starts", "2", "--steps", "3", "--n-fit", "32", "--label", "Metadata_Role"]
    assert main(args) == 0
    for name in ("montage.png", "montage.csv", "strip.png", "strip_RNA.png", "strip.csv", "explain.json"):
        assert (out / name).is_file(), name
    numbers = json.loads((out / "explain.json").read_text())
    assert "not a measurement" in numbers["note"]
    assert numbers["strip_checkpoint"].endswith("latest.pt") and numbers["strip_n_fit"] == 32
    montage = pd.read_csv(out / "montage.csv")
    assert list(montage["column"]) == [0, 1, 2, 3] and montage["OnScore"].is_monotonic_increasing
    assert "readout" in montage and "montage_readout_spearman" in numbers
    strip = pd.read_csv(out / "strip.csv")
    assert len(strip) == 6 and np.allclose(strip["target"].unique(), [-1.0, 0.0, 1.0])
    assert main(["report", str(chain / "out")]) == 0
    html = (chain / "out" / "report.html").read_text()
    assert "What the On axis sees" in html and "Illustration, not a measurement" in html
    capsys.readouterr()
    assert main(args) == 1 and "already holds the output" in capsys.readouterr().err  # never clobbers a result
    assert main(args + ["--overwrite", "--no-generator", "--where", "Metadata_Role == 'treated'"]) == 0
    assert not (out / "strip.png").exists()  # the previous run's files are replaced, not mixed in
    assert set(pd.read_csv(out / "montage.csv")["Metadata_Role"]) == {"treated"}
    assert main(args[:3] + ["-o", str(chain / "bad"), "--where", "__import__('os')"]) == 1  # never run as code


def test_generator_strip_is_deterministic_and_checks_its_checkpoint(chain: Path, tmp_path: Path) -> None:
    from gandl_core.analysis.explain_generator import generator_strip, load_feature_axis
    from gandl_core.checkpoint import load_checkpoint, load_discriminator, save_checkpoint

    axis, ckpt = load_feature_axis(chain / "out" / "proj")
    assert ckpt is not None and Path(ckpt).is_file()
    assert axis.plates == ["HRCE-1_Plate1", "HRCE-1_Plate2"]
    # the embeddings' readout (the multiscale default) travels with the axis, and the fakes are read the same way
    assert axis.info["source"]["features"] == "multiscale"
    assert len(axis.features) == load_discriminator(ckpt)[0].feature_width("multiscale") != 512
    a = generator_strip(ckpt, axis, starts=2, steps=3, n_fit=32, seed=5)
    b = generator_strip(ckpt, axis, starts=2, steps=3, n_fit=32, seed=5)
    assert a.images.shape == (3, 2, 5, 32, 32) and np.array_equal(a.images, b.images)
    assert a.table.equals(b.table) and "not a measurement" in a.info["note"]
    assert not np.array_equal(generator_strip(ckpt, axis, starts=2, steps=3, n_fit=32, seed=6).images, a.images)
    # each fake's table score is the axis's score of D's features of that very image
    D = load_discriminator(ckpt)[0]
    with torch.no_grad():
        feats = D.features(torch.as_tensor(a.images.reshape(-1, 5, 32, 32)), kind="multiscale").numpy()
    assert np.allclose(axis.score(feats), a.table["score"], atol=1e-4)
    raw = a.raw_images()
    assert raw.shape == a.images.shape
    assert np.all(raw >= a.normalizer.lo[None, None, :, None, None] - 1e-2)
    assert np.all(raw <= a.normalizer.hi[None, None, :, None, None] + 1e-2)
    # a checkpoint other than the one that made the embeddings is refused
    state = load_checkpoint(ckpt)
    state["step"] = int(state.get("step", 0)) + 1
    other = save_checkpoint(tmp_path / "other.pt", state)
    with pytest.raises(CheckpointError, match="another checkpoint"):
        generator_strip(other, axis, n_fit=16)


def test_sphered_profiles_are_refused_with_the_fix(chain: Path, tmp_path: Path) -> None:
    from gandl_core.analysis.explain_generator import load_feature_axis

    prof = tmp_path / "sphered.parquet"
    assert main(["profile", str(chain / "emb.parquet"), "-o", str(prof), "--controls", CONTROLS, "--sphere",
                 "--epsilon", "0.1"]) == 0
    assert main(["project", str(prof), "-o", str(tmp_path / "proj")]) == 0
    with pytest.raises(DataError, match="without --sphere"):
        load_feature_axis(tmp_path / "proj")
    with pytest.raises(DataError, match="scores.parquet"):
        load_feature_axis(tmp_path / "nowhere")


class CrossFadeG:
    """A generator that can draw the screen's phenotype: ``w[0]`` cross-fades a mock field into the
    same field with every cell infected (``synth.render_site`` with the screen's camera model), one
    of 4 layouts chosen by ``w[1:5]`` = 10 x one-hot (a short move in W keeps the layout).

    It stands in for a trained generator on all five channels: on these CPUs no short 5-channel run
    of ours learns the RNA puncta (an RNA-only run does: test_explain_trained.py).
    """

    def __init__(self, normalizer, size: int) -> None:
        self.z_dim, self.num_ws, self.norm, self.size = 5, 1, normalizer, size
        self.fields = [self._pair(k) for k in range(4)]

    def _pair(self, key: int) -> list[np.ndarray]:
        from gandl_core.synth import _plate_effects, _to_uint16, render_site

        for j in range(100):  # the first layout with a few cells in the tile
            seed = [key, j, 11]
            pair = [render_site(np.random.default_rng(seed), size=self.size, cell_type="HRCE", infected_fraction=q)
                    for q in (0.0, 1.0)]
            if (pair[0][0] > 0.5).sum() > 60:
                break
        gain, offset, vig = _plate_effects(np.random.default_rng([key, 2]), self.size)
        return [torch.as_tensor(self.norm.transform(_to_uint16(f, np.random.default_rng([key, 12]), gain, offset,
                                                               vig).astype(np.float32))) for f in pair]

    def mapping(self, z):
        return torch.cat([z[:, :1], torch.nn.functional.one_hot(z[:, 1:5].argmax(1), 4).float() * 10.0], 1)

    def synthesis(self, ws, noise_mode: str = "const"):
        w = ws[:, 0]
        a = torch.sigmoid(2.0 * w[:, 0])[:, None, None, None]  # differentiable: "optimize" can follow it
        k = w[:, 1:5].argmax(1).tolist()
        mock, infected = (torch.stack([self.fields[i][j] for i in k]) for j in (0, 1))
        return (1 - a) * mock + a * infected


def test_strip_shows_the_phenotype_when_the_generator_can_draw_it(chain: Path) -> None:
    from gandl_core.analysis import explain
    from gandl_core.analysis.explain_generator import _load_gd, load_feature_axis, strip_from_networks

    axis, ckpt = load_feature_axis(chain / "out" / "proj")
    _, D, norm, info = _load_gd(ckpt, "cpu")
    strip = strip_from_networks(CrossFadeG(norm, D.resolution), D, norm, axis, channels=info["channel_names"],
                                starts=4, steps=7, n_fit=128, seed=0, span="auto")
    t = strip.table
    # the line search lands on the targets wherever the line reaches them
    by = t.groupby("replicate")["score"]
    reached = t["target"].between(by.transform("min") - 1e-6, by.transform("max") + 1e-6)
    assert (reached.groupby(t["replicate"]).sum() >= 3).all()  # each layout's fades cover part of the span
    assert np.allclose(t.loc[reached, "score"], t.loc[reached, "target"], atol=0.05)
    # RNA puncta (read on the fakes brought back to raw units) fall along every strip, C- end to C+
    # end. 28 images; rho <= -0.8 is far beyond chance (p < 1e-6) and this generator gives about -0.93.
    reads, rho = explain.readout(strip, channel="RNA")
    assert rho < -0.8, reads
    per_start = reads.pivot(index="replicate", columns="position", values="readout").to_numpy()
    assert np.all(np.diff(per_start, axis=1) <= 1e-3)  # monotone within each strip
    assert np.all(per_start[:, 0] - per_start[:, -1] > 0.05)
    # "optimize" (gradient steps in W, kept near the start) draws the same change; -3..-1 lies inside the
    # scores the fades of this D reach (its fakes span about -5.6..+1.2)
    opt = strip_from_networks(CrossFadeG(norm, D.resolution), D, norm, axis, channels=info["channel_names"],
                              starts=2, steps=3, n_fit=64, seed=0, span=(-3.0, -1.0), method="optimize", iters=40)
    scores = opt.table.pivot(index="replicate", columns="position", values="score").to_numpy()
    assert np.all(np.diff(scores, axis=1) > 0), opt.table
    reads, rho = explain.readout(opt, channel="RNA")
    assert rho < -0.8, reads
