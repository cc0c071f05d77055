"""The end-to-end demo: the README's main job, on a synthetic screen made on the fly.

synth → index → train (``cpu-small``, time-boxed) → embed (trained and random-weight D) → well
profiles → controls separability → On-perturbation projection, Z′ → dose-response fits and hit list
→ HTML report. Every number is scored against the screen's ground truth, so the demo says not only
"it ran" but how well GAN-DL recovered what is known to be there.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError
from .progress import Progress, ProgressGenerator
from .selection import select

CONTROLS = "Metadata_Role in ['positive', 'negative']"
POSITIVE = "Metadata_Role == 'positive'"
NEGATIVE = "Metadata_Role == 'negative'"


@dataclass
class DemoResult:
    """Headline numbers and where the artifacts are."""

    out_dir: Path
    report: Path | None
    numbers: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        n = self.numbers
        lines = [f"report: {self.report}"]
        for key, label in [
            ("controls_accuracy", "C+ vs C- held-out accuracy (trained D)"),
            ("controls_accuracy_random_d", "C+ vs C- held-out accuracy (random-weight D)"),
            ("celltype_accuracy", "cell-type held-out accuracy"),
            ("z_prime", "Z' of the On-perturbation score, out of fold (trained D)"),
            ("z_prime_random_d", "Z' of the On-perturbation score, out of fold (random-weight D)"),
            ("ec50_spearman", "Spearman rho, fitted vs true EC50 (actives)"),
            ("active_auc", "AUC, actives vs inactives by fitted efficacy"),
            ("active_precision", "precision of the active calls (status ok or extrapolated)"),
            ("active_recall", "recall of the true actives"),
            ("train_kimg", "training length (kimg)"),
        ]:
            if key in n and n[key] is not None:
                v = n[key]
                lines.append(f"{label}: {v:.3f}" if isinstance(v, float) else f"{label}: {v}")
        return "\n".join(lines)


def run_demo(out_dir: str | os.PathLike, *, seed: int = 0, minutes: float = 6.0, preset: str = "cpu-small",
             image_size: int = 96, plates: int = 1, overwrite: bool = False) -> ProgressGenerator[DemoResult]:
    """Run the whole pipeline on a fresh synthetic screen, yielding progress; return the headline numbers.

    Parameters
    ----------
    out_dir
        Folder for everything: ``screen/``, ``run/``, tables, ``figures/`` and ``report.html``.
    seed
        Seed of the screen and of training.
    minutes
        Training time budget (the step in progress finishes, then a checkpoint is written).
    preset
        Training preset (``cpu-small`` for a CPU, ``cpu-tiny`` for a smoke test).
    image_size, plates
        Size of the synthetic screen (field edge in px, plates per cell type).
    overwrite
        Reuse a non-empty ``out_dir`` (its previous contents are replaced).

    Raises
    ------
    ConfigError
        If ``out_dir`` holds files and ``overwrite`` is False.
    """
    from .plates import build_index
    from .synth import make_screen_iter
    from .gan.train import TrainConfig, train

    out = _fresh_folder(Path(out_dir), overwrite)
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    t0 = time.time()
    numbers: dict[str, Any] = {}
    # 1. the screen
    screen = yield from _stage("synth", make_screen_iter(out / "screen", seed=seed, image_size=image_size,
                                                         plates=plates))
    index = build_index(screen)
    truth = pd.read_csv(screen / "ground_truth.csv")
    yield Progress(1, 1, unit="step", stage="index", message=f"indexed {len(index)} sites from {screen}")
    # 2. training, time-boxed
    cfg = TrainConfig.from_preset(preset, data=str(screen), out_dir=str(out / "run"), seed=seed,
                                  time_limit_s=minutes * 60.0)
    ckpt = yield from _stage("train", train(cfg, index))
    numbers["train_kimg"] = round(float(__import__("torch").load(ckpt, weights_only=True)["kimg"]), 3)
    # 3-5. embeddings of the trained and a random-weight D, well profiles, separability
    prof, prof_rand, sep = yield from _embed_and_evaluate(index, ckpt, out, seed, numbers)
    # 6-7. On-perturbation axis, Z', dose-response fits scored against the truth
    fits, hits = yield from _project_and_fit(prof, prof_rand, truth, out, numbers)
    # 8. the report
    numbers["minutes_total"] = round((time.time() - t0) / 60.0, 2)
    notes = [f"Screen: {screen} (ground truth in ground_truth.csv). Training: preset {preset}, "
             f"{numbers['train_kimg']} kimg in a {minutes:g}-minute budget.",
             "Profiles: median per well, standardized per plate against its control wells.",
             f"Controls accuracy: class-balanced linear SVM; {sep.params.get('validation', '')}.",
             "Z': each control well scored by an On axis fitted without it (out of fold)."]
    html = _write_report(out, numbers, fits, hits, notes)
    yield Progress(1, 1, unit="step", stage="report", message=f"report written to {html}")
    return DemoResult(out, Path(html), numbers)


def _fresh_folder(out: Path, overwrite: bool) -> Path:
    """``out``, created; a non-empty one is refused unless ``overwrite`` (then its contents are replaced)."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} is not empty: choose a new folder or pass --overwrite.")
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _stage(name: str, gen: ProgressGenerator[Any]) -> ProgressGenerator[Any]:
    """Forward a sub-generator's progress under the demo's stage name; return its result."""
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        p.stage = name
        yield p


def _embed_and_evaluate(index: pd.DataFrame, ckpt: Path, out: Path, seed: int,
                        numbers: dict[str, Any]) -> ProgressGenerator[tuple[pd.DataFrame, pd.DataFrame, Any]]:
    """Embed with the trained D and the same architecture with random weights (the honest baseline),
    build per-plate normalized well profiles and score the controls' (and cell types') separability.

    Returns the trained and random-weight profiles and the trained D's separability result.
    """
    from .analysis import evaluation
    from .analysis.profiles import aggregate, normalize_plates
    from .embed import embed_iter
    from .featurizers.base import GanFeaturizer
    from .tables import write_table

    emb = yield from _stage("embed", embed_iter(index, GanFeaturizer.from_checkpoint(ckpt),
                                                out=out / "embeddings.parquet", overwrite=True))
    emb_rand = yield from _stage("embed random-D", embed_iter(index, _random_discriminator(ckpt, seed),
                                                              out=out / "embeddings_random_d.parquet",
                                                              overwrite=True))
    wells = aggregate(emb)
    prof = normalize_plates(wells, controls=CONTROLS)
    prof_rand = normalize_plates(aggregate(emb_rand), controls=CONTROLS)
    write_table(prof, out / "profiles.parquet")
    yield Progress(1, 1, unit="step", stage="profile", message=f"{len(prof)} well profiles")

    sep = evaluation.separability(prof, positive=POSITIVE, negative=NEGATIVE, by="Metadata_CellType", seed=seed)
    sep_rand = evaluation.separability(prof_rand, positive=POSITIVE, negative=NEGATIVE, seed=seed)
    numbers["controls_accuracy"] = float(sep.accuracy)
    numbers["controls_balanced_accuracy"] = float(sep.balanced_accuracy)
    numbers["controls_accuracy_random_d"] = float(sep_rand.accuracy)
    # Each synthetic plate holds one cell type (as in RxRx19a), so per-plate normalization would erase
    # the cell-type signal: the cell-type task uses the raw well medians.
    ctrl = wells[select(wells, CONTROLS)]
    if ctrl["Metadata_CellType"].nunique() > 1:
        numbers["celltype_accuracy"] = float(evaluation.classify(ctrl, label="Metadata_CellType", seed=seed).accuracy)
    yield Progress(1, 1, unit="step", stage="evaluate", message=f"controls accuracy {sep.accuracy:.3f} "
                   f"(random-weight D {sep_rand.accuracy:.3f})")
    return prof, prof_rand, sep


def _project_and_fit(prof: pd.DataFrame, prof_rand: pd.DataFrame, truth: pd.DataFrame, out: Path,
                     numbers: dict[str, Any]) -> ProgressGenerator[tuple[pd.DataFrame, pd.DataFrame]]:
    """On-perturbation axis and Z' (trained and random D), then a dose-response fit per compound on the
    On score, scored against the screen's truth; writes the tables and figures, returns fits and hits."""
    from .analysis import dose_response as dr
    from .analysis import plots, projection
    from .tables import write_table

    figs = out / "figures"
    _, scores, stats = projection.project_table(prof, positive=POSITIVE, negative=NEGATIVE)
    write_table(scores, out / "scores.parquet")
    numbers["z_prime"] = float(stats["z_prime"])
    numbers["ssmd"] = float(stats["ssmd"])
    numbers["z_prime_random_d"] = float(projection.project_table(prof_rand, positive=POSITIVE,
                                                                 negative=NEGATIVE)[2]["z_prime"])
    plots.e2_scatter(scores, figs / "e2.png", color="Metadata_Role", marker="Metadata_CellType")

    treated = scores[scores["Metadata_Role"] == "treated"]
    fits = dr.fit_all(treated, score="OnScore", compound="Metadata_Treatment", dose="Metadata_Concentration")
    hits = dr.hit_list(fits)
    fits.to_csv(out / "dose_response_fits.csv", index=False)
    hits.to_csv(out / "hits.csv", index=False)
    numbers.update(_score_against_truth(fits, truth))
    for compound in _showcase(fits, truth):
        plots.dose_scatter(treated, fits, compound, figs / f"dose_{compound}.png", score="OnScore",
                           compound_col="Metadata_Treatment", dose_col="Metadata_Concentration")
    plots.plate_heatmap(scores, "OnScore", figs / "plate_on_score.png")
    yield Progress(1, 1, unit="step", stage="dose-response",
                   message=f"EC50 rank correlation with truth: {numbers.get('ec50_spearman')}")
    return fits, hits


def _write_report(out: Path, numbers: dict[str, Any], fits: pd.DataFrame, hits: pd.DataFrame,
                  notes: list[str]) -> Path:
    """``numbers.json`` and ``report.html`` (every figure in ``figures/``, the fits and the hit list)."""
    from .analysis import report
    from .tables import write_text_atomic

    write_text_atomic(out / "numbers.json", json.dumps(numbers, indent=2, default=float))
    return Path(report.write_report(
        out / "report.html", title="GAN-DL demo on a synthetic screen", numbers=numbers,
        figures=sorted((out / "figures").glob("*.png")), tables={"Dose-response fits": fits, "Hit list": hits},
        notes=notes))


def _random_discriminator(ckpt: Path, seed: int):
    """GAN-DL's discriminator architecture with seeded random weights and the trained run's normalizer."""
    import torch

    from .checkpoint import build_discriminator, load_checkpoint
    from .featurizers.base import GanFeaturizer
    from .plates import IntensityNormalizer

    state = load_checkpoint(ckpt)
    torch.manual_seed(seed + 12345)
    D = build_discriminator(state["config"]).eval()
    return GanFeaturizer.from_discriminator(D, IntensityNormalizer.from_dict(state["normalizer"]),
                                            channels=list(state["channel_names"]), prefix="RandD_",
                                            info={"name": "random-d", "seed": seed + 12345},
                                            scale=float(state["config"].get("field_scale", 1.0)))


def _score_against_truth(fits: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Any]:
    """Spearman rho of fitted vs true EC50 over true actives with a fit; AUC of actives vs inactives."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from .analysis.dose_response import ACTIVE_STATUSES

    t = truth.rename(columns={"treatment": "Metadata_Compound"}).set_index("Metadata_Compound")
    f = fits.set_index("Metadata_Compound")
    both = f.merge(t, left_index=True, right_index=True, how="inner", suffixes=("", "_true"))
    out: dict[str, Any] = {}
    called, true = both["Metadata_Status"].isin(ACTIVE_STATUSES), both["active"].astype(bool)
    out["active_precision"] = float((called & true).sum() / called.sum()) if called.sum() else None
    out["active_recall"] = float((called & true).sum() / true.sum()) if true.sum() else None
    act = both[both["active"].astype(bool) & np.isfinite(both["ec50"]) & (both["Metadata_Status"] == "ok")]
    out["n_actives_fitted"] = int(len(act))
    out["ec50_spearman"] = float(spearmanr(act["ec50"], act["ec50_uM"]).statistic) if len(act) >= 3 else None
    eff = both["efficacy"].fillna(0.0)
    labels = both["active"].astype(bool)
    out["active_auc"] = float(roc_auc_score(labels, eff)) if labels.nunique() == 2 else None
    return out


def _showcase(fits: pd.DataFrame, truth: pd.DataFrame, n: int = 3) -> list[str]:
    """A few compounds worth a plot: the strongest fitted, and one true inactive for contrast."""
    order = fits.sort_values("efficacy", ascending=False)["Metadata_Compound"].tolist()
    inactive = truth.loc[~truth["active"].astype(bool) & ~truth["toxic"].astype(bool), "treatment"].tolist()
    picks = order[: n - 1] + [c for c in inactive if c not in order[: n - 1]][:1]
    return picks
