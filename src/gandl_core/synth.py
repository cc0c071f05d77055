"""A synthetic RxRx19a look-alike screen with known ground truth.

Why: every test, the demo and the napari sample need a plate with the structure of a real
phenotypic screen — control wells that differ, compounds whose effect follows a known dose
response, plate effects to normalize away — without downloading 450 GB. Because the truth is known,
the whole pipeline can be scored: does the embedding separate the controls, do fitted EC50s rank
like the true ones, are actives separated from inactives.

Generative model (all intensities before plate effects are in arbitrary units around 1):

* **Cell types.** ``HRCE`` stand-in: large, flat epithelial cells (cell/nucleus ratio ~2.6,
  aspect ratio ~1.2, round nuclei). ``VERO`` stand-in: smaller spindle cells (aspect ~2.3,
  elongated nuclei), denser.
* **Cells.** Positions are uniform in the field; each cell is an ellipse with an orientation. Stains
  (one channel each, RxRx19a order):

  ``w1 DNA``    nucleus ellipse with chromatin texture; toxic compounds condense nuclei (smaller, brighter).
  ``w2 ER``     cytoplasm, brighter near the nucleus, fine reticular texture.
  ``w3 Actin``  cortical ring plus stress fibres along the cell's long axis.
  ``w4 RNA``    2–3 nucleoli and diffuse cytoplasm.
  ``w5 Golgi``  a compact perinuclear ribbon on one side of the nucleus, plus membrane outline.

* **Infection phenotype** (C− wells; each cell is infected with probability ``q``): bright
  cytoplasmic RNA puncta (viral replication sites), rounder cells with few stress fibres,
  fragmented Golgi scattered around the nucleus, swollen ER; infected wells also hold ~20% fewer
  cells (cytopathic effect).
* **Controls.** ``Mock`` wells (C+, role ``positive``): q = 0. ``Active SARS-CoV-2`` untreated
  wells (C−, role ``negative``): q = ``infection``.
* **Compounds** are added to infected cells at six half-log doses. The fraction of the phenotype
  rescued follows a Hill curve ``rescue(c) = efficacy * c^h / (c^h + EC50^h)`` and
  ``q = infection * (1 - rescue)``. Some compounds are inactive (efficacy 0), some toxic
  (viability ``1 - c^h / (c^h + TC50^h)`` scales the cell count and condenses nuclei).
* **Plate effects.** Each plate has its own per-channel gain and offset and a radial
  illumination fall-off, so raw features differ between plates until normalized per plate.

Outputs (RxRx layout, readable by :func:`gandl_core.plates.build_index`)::

    OUT/metadata.csv         site_id, well_id, cell_type, experiment, plate, well, site,
                             disease_condition, treatment, treatment_conc
    OUT/images/<experiment>/Plate<plate>/<well>_s<site>_w<k>.png   16-bit grayscale
    OUT/ground_truth.csv     one row per compound: treatment, ec50_uM, hill, efficacy, active,
                             toxic, tc50_uM
    OUT/wells.csv            one row per well: role, dose, true_rescue, true_infected_fraction,
                             true_viability
    OUT/README.txt           this design, in words
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import ConfigError, DataError
from .progress import Progress, ProgressGenerator, run_to_end

CHANNEL_NAMES = ["DNA", "ER", "Actin", "RNA", "Golgi"]
CELL_TYPES = ("HRCE", "VERO")
MOCK = "Mock"
ACTIVE = "Active SARS-CoV-2"

# Shape parameters per cell type: nucleus radius (px), cell/nucleus size ratio, cell aspect ratio,
# nucleus aspect ratio, cells per 100x100 px.
_MORPHOLOGY = {
    "HRCE": dict(r_nuc=3.6, ratio=2.6, aspect=1.25, nuc_aspect=1.1, density=20.0),
    "VERO": dict(r_nuc=3.0, ratio=2.3, aspect=2.3, nuc_aspect=1.5, density=30.0),
}


@dataclass(frozen=True)
class Compound:
    """Ground truth of one synthetic compound."""

    name: str
    ec50_uM: float
    hill: float
    efficacy: float
    tc50_uM: float  # inf when not toxic

    @property
    def active(self) -> bool:
        return self.efficacy > 0

    @property
    def toxic(self) -> bool:
        return bool(np.isfinite(self.tc50_uM))

    def rescue(self, conc: float) -> float:
        """Fraction of the infection phenotype rescued at ``conc`` uM (Hill curve)."""
        if self.efficacy == 0:
            return 0.0
        return float(self.efficacy * conc**self.hill / (conc**self.hill + self.ec50_uM**self.hill))

    def viability(self, conc: float) -> float:
        """Fraction of cells alive at ``conc`` uM (1 when not toxic)."""
        if not self.toxic:
            return 1.0
        return float(1.0 - conc**2 / (conc**2 + self.tc50_uM**2))


def default_doses() -> list[float]:
    """Six half-log doses, 0.0316 .. 10 uM (ratio sqrt(10)), as in a typical dose series."""
    return [float(round(10.0**e, 4)) for e in np.arange(-1.5, 1.01, 0.5)]


def make_compounds(n: int, doses: Sequence[float], rng: np.random.Generator) -> list[Compound]:
    """Draw ``n`` compounds: ~60% active with EC50s spread across the dose range, ~25% inactive,
    ~15% toxic (and inactive). The two first actives are named like GAN-DL's reference drugs."""
    if n < 3:
        raise ConfigError(f"option 'compounds' = {n}: need at least 3 (active, inactive and toxic examples).")
    lo, hi = np.log10(min(doses)), np.log10(max(doses))
    n_tox = max(1, int(round(0.15 * n)))
    n_inactive = max(1, int(round(0.25 * n)))
    n_active = n - n_tox - n_inactive
    # Evenly spaced log-EC50s inside the tested range (jittered) so the ranking is recoverable.
    log_ec50 = np.linspace(lo + 0.4, hi - 0.4, n_active) + rng.uniform(-0.1, 0.1, n_active)
    rng.shuffle(log_ec50)
    out: list[Compound] = []
    names = [f"cmpd-{i + 1:02d}" for i in range(n)]
    k = 0
    for i in range(n_active):
        out.append(Compound(names[k], float(10**log_ec50[i]), float(rng.uniform(1.0, 2.0)),
                            float(rng.uniform(0.7, 1.0)), float("inf")))
        k += 1
    for _ in range(n_inactive):
        out.append(Compound(names[k], float("nan"), 1.0, 0.0, float("inf")))
        k += 1
    for _ in range(n_tox):
        out.append(Compound(names[k], float("nan"), 1.0, 0.0, float(10 ** rng.uniform(lo + 0.8, hi - 0.2))))
        k += 1
    perm = rng.permutation(n)
    return [Compound(names[j], out[p].ec50_uM, out[p].hill, out[p].efficacy, out[p].tc50_uM)
            for j, p in enumerate(perm)]


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return n / (n.std() + 1e-8)


def render_site(
    rng: np.random.Generator,
    *,
    size: int,
    cell_type: str,
    infected_fraction: float,
    viability: float = 1.0,
    infected_well: bool = False,
) -> np.ndarray:
    """Render one 5-channel field, float32 [5, size, size], intensities ~0..2 before plate effects.

    Parameters
    ----------
    rng
        Source of randomness (one per site keeps sites independent of rendering order).
    size
        Field edge in pixels.
    cell_type
        ``"HRCE"`` or ``"VERO"`` (see the module docstring for their morphology).
    infected_fraction
        Probability that a cell shows the infection phenotype.
    viability
        Fraction of cells left alive; below 1 also condenses nuclei (toxicity).
    infected_well
        Virus was added (cytopathic effect lowers the cell count by up to 20%).
    """
    m = _MORPHOLOGY[cell_type]
    area = size * size / 1e4
    density = m["density"] * viability * (1.0 - 0.2 * infected_fraction if infected_well else 1.0)
    n_cells = int(rng.poisson(max(density * area, 0.5)))
    img = np.zeros((5, size, size), np.float64)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    tex_chrom = _smooth_noise(rng, (size, size), 0.8)
    tex_er = _smooth_noise(rng, (size, size), 0.7)
    condense = 1.0 - 0.35 * (1.0 - viability)  # toxic: smaller, brighter nuclei
    for _ in range(n_cells):
        cy, cx = rng.uniform(0, size, 2)
        theta = rng.uniform(0, np.pi)
        infected = rng.random() < infected_fraction
        r_n = m["r_nuc"] * rng.uniform(0.85, 1.15) * condense
        aspect = 1.0 + (m["aspect"] - 1.0) * (0.35 if infected else 1.0)  # infected cells round up
        r_c = r_n / condense * m["ratio"] * (1.15 if infected else 1.0)
        a_c, b_c = r_c * np.sqrt(aspect), r_c / np.sqrt(aspect)
        a_n, b_n = r_n * np.sqrt(m["nuc_aspect"]), r_n / np.sqrt(m["nuc_aspect"])
        half = int(np.ceil(a_c + 3))
        y0, y1 = max(0, int(cy) - half), min(size, int(cy) + half + 1)
        x0, x1 = max(0, int(cx) - half), min(size, int(cx) + half + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        c, s = np.cos(theta), np.sin(theta)
        u, v = c * dx + s * dy, -s * dx + c * dy  # cell frame: u along the long axis
        d_cell = np.sqrt((u / a_c) ** 2 + (v / b_c) ** 2)
        d_nuc = np.sqrt((u / a_n) ** 2 + (v / b_n) ** 2)
        cell = 1.0 / (1.0 + np.exp((d_cell - 1.0) * 8.0))
        nuc = 1.0 / (1.0 + np.exp((d_nuc - 1.0) * 10.0))
        cyto = np.clip(cell - nuc, 0, 1)
        sl = (slice(y0, y1), slice(x0, x1))
        # DNA: nucleus with chromatin texture; condensed nuclei are brighter.
        img[0][sl] += nuc * (1.0 + 0.25 * tex_chrom[sl]) * (1.0 / condense) ** 2 * rng.uniform(0.8, 1.2)
        # ER: perinuclear gradient with reticular texture; swollen when infected.
        er_gain = 1.35 if infected else 1.0
        img[1][sl] += cyto * np.exp(-np.maximum(d_cell - 0.2, 0) * 1.2) * (0.8 + 0.35 * tex_er[sl]) * 0.7 * er_gain
        # Actin: cortical ring + stress fibres along u (few when infected).
        ring = np.exp(-((d_cell - 0.95) / 0.12) ** 2)
        fib_amp = 0.15 if infected else 1.0
        fibres = 0.5 + 0.5 * np.cos(v * 2.2 + rng.uniform(0, 2 * np.pi))
        img[2][sl] += 0.7 * ring + cyto * fib_amp * fibres**4 * 0.9 + 0.1 * cell
        # RNA: nucleoli + diffuse cytoplasm; infected: bright cytoplasmic puncta.
        rna = 0.25 * cyto + 0.2 * nuc
        for _k in range(rng.integers(2, 4)):
            ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.5)
            pu, pv = rad * a_n * np.cos(ang), rad * b_n * np.sin(ang)
            rna += 0.9 * np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * 0.7**2))
        if infected:
            for _k in range(rng.integers(5, 9)):
                ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(0.45, 0.85)
                pu, pv = rad * a_c * np.cos(ang), rad * b_c * np.sin(ang)
                rna += 1.6 * np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * 0.8**2))
        img[3][sl] += rna
        # Golgi: perinuclear ribbon on one side, fragmented into scattered dots when infected.
        golgi = 0.15 * np.exp(-((d_cell - 0.95) / 0.15) ** 2)
        side = rng.uniform(0, 2 * np.pi)
        if infected:
            for _k in range(rng.integers(5, 8)):
                ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 0.8)
                pu, pv = rad * a_c * np.cos(ang), rad * b_c * np.sin(ang)
                golgi += 0.6 * np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * 0.6**2))
        else:
            gu, gv = 1.3 * a_n * np.cos(side), 1.3 * b_n * np.sin(side)
            golgi += 1.1 * np.exp(-((u - gu) ** 2 / (2 * 1.4**2) + (v - gv) ** 2 / (2 * 0.9**2)))
        img[4][sl] += golgi * cell
    return np.clip(img, 0.0, None).astype(np.float32)


def _plate_effects(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel gain, offset and the plate's radial illumination profile."""
    gain = np.exp(rng.normal(0.0, 0.2, 5))
    offset = rng.uniform(0.02, 0.08, 5)
    yy, xx = np.mgrid[0:size, 0:size]
    r2 = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (size / 2) ** 2
    vignette = 1.0 - rng.uniform(0.1, 0.3) * r2 / 2
    return gain, offset, vignette


def _to_uint16(field: np.ndarray, rng: np.random.Generator, gain, offset, vignette) -> np.ndarray:
    # Camera model: signal * gain * illumination + background, shot noise ~ sqrt(counts), read noise.
    counts = (field * gain[:, None, None] * vignette[None] + offset[:, None, None]) * 6000.0 + 300.0
    counts = counts + rng.normal(0.0, 1.0, counts.shape) * np.sqrt(np.maximum(counts, 0)) * 1.5 + rng.normal(0, 20, counts.shape)
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)


def _write_png16(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint16)).save(path, format="PNG", compress_level=1)


# ------------------------------------------------------------------------------------------
# Plate layout and writing
# ------------------------------------------------------------------------------------------

_ROWS = "ABCDEFGHIJKLMNOP"


def _well_names(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` well names of a 384-well plate, inner wells first (edge wells are avoided in real
    screens), in a random order."""
    if n > 16 * 24:
        raise ConfigError(f"{n} wells per plate do not fit a 384-well plate: lower 'compounds', 'replicates' or 'controls'.")
    inner = [f"{r}{c:02d}" for r in _ROWS[1:-1] for c in range(2, 24)]
    outer = [f"{r}{c:02d}" for r in _ROWS for c in range(1, 25) if f"{r}{c:02d}" not in set(inner)]
    pool = inner + outer
    chosen = pool[:n]
    return [chosen[i] for i in rng.permutation(n)]


def make_screen_iter(
    out_dir: str | os.PathLike,
    *,
    plates: int = 1,
    seed: int = 0,
    image_size: int = 96,
    sites: int = 1,
    compounds: int = 8,
    replicates: int = 2,
    controls: int = 10,
    doses: Sequence[float] | None = None,
    cell_types: Sequence[str] = CELL_TYPES,
    infection: float = 0.9,
    overwrite: bool = False,
) -> ProgressGenerator[Path]:
    """Write a synthetic screen in RxRx layout, yielding progress per well; return the folder.

    Parameters
    ----------
    out_dir
        Folder to create (must not exist or be empty unless ``overwrite``).
    plates
        Plates per cell type. Each cell type is its own experiment (``HRCE-1``, ``VERO-1``).
    seed
        Random seed; the same seed gives bit-identical files.
    image_size
        Field edge in pixels (>= 32).
    sites
        Sites (fields) per well.
    compounds, replicates
        Number of compounds, and replicate wells per compound and dose on every plate.
    controls
        Mock (C+) wells and infected untreated (C−) wells per plate, each.
    doses
        Concentrations in uM (default :func:`default_doses`: six half-log steps).
    cell_types
        Subset of ``("HRCE", "VERO")``.
    infection
        Fraction of cells infected in C− wells.
    overwrite
        Replace an existing non-empty ``out_dir``.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    ConfigError
        For sizes or counts that cannot make a screen.
    DataError
        If ``out_dir`` exists and is not empty (and ``overwrite`` is False).
    """
    out = Path(out_dir)
    if image_size < 32:
        raise ConfigError(f"option 'image_size' = {image_size}: use at least 32 px so fields hold whole cells.")
    for name, val in (("plates", plates), ("sites", sites), ("replicates", replicates), ("controls", controls)):
        if int(val) < 1:
            raise ConfigError(f"option '{name}' = {val} must be >= 1.")
    unknown = [c for c in cell_types if c not in _MORPHOLOGY]
    if unknown or not cell_types:
        raise ConfigError(f"option 'cell_types' = {list(cell_types)}: choose from {list(CELL_TYPES)}.")
    if not 0.0 < infection <= 1.0:
        raise ConfigError(f"option 'infection' = {infection} must be in (0, 1].")
    doses = list(doses) if doses is not None else default_doses()
    if len(doses) < 2 or min(doses) <= 0:
        raise ConfigError(f"option 'doses' = {doses}: give at least two positive concentrations (uM).")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"{out} exists and is not empty: choose a new folder or pass overwrite=True (--overwrite).")
        shutil.rmtree(out)

    rng = np.random.default_rng(seed)
    cmpds = make_compounds(compounds, doses, rng)
    plan: list[dict] = []  # one entry per well
    for ct_i, ct in enumerate(cell_types):
        experiment = f"{ct}-1"
        for p in range(1, plates + 1):
            wells: list[dict] = []
            wells += [dict(role="positive", condition=MOCK, cmpd=None, conc=None) for _ in range(controls)]
            wells += [dict(role="negative", condition=ACTIVE, cmpd=None, conc=None) for _ in range(controls)]
            for cp in cmpds:
                for conc in doses:
                    wells += [dict(role="treated", condition=ACTIVE, cmpd=cp, conc=conc) for _ in range(replicates)]
            names = _well_names(len(wells), np.random.default_rng([seed, ct_i, p, 1]))
            for w, name in zip(wells, names):
                w.update(cell_type=ct, experiment=experiment, plate=p, well=name, ct_index=ct_i)
            plan.extend(sorted(wells, key=lambda w: (_ROWS.index(w["well"][0]), int(w["well"][1:]))))

    tmp = Path(tempfile.mkdtemp(prefix=".synth-", dir=out.parent if out.parent.exists() else None))
    try:
        meta_rows, well_rows = [], []
        effects: dict[tuple[int, int], tuple] = {}
        for i, w in enumerate(plan):
            key = (w["ct_index"], w["plate"])
            if key not in effects:
                effects[key] = _plate_effects(np.random.default_rng([seed, key[0], key[1], 2]), image_size)
            gain, offset, vignette = effects[key]
            cp: Compound | None = w["cmpd"]
            rescue = cp.rescue(w["conc"]) if cp is not None else 0.0
            viability = cp.viability(w["conc"]) if cp is not None else 1.0
            q = 0.0 if w["role"] == "positive" else infection * (1.0 - rescue)
            folder = tmp / "images" / w["experiment"] / f"Plate{w['plate']}"
            folder.mkdir(parents=True, exist_ok=True)
            well_id = f"{w['experiment']}_{w['plate']}_{w['well']}"
            for s in range(1, sites + 1):
                srng = np.random.default_rng([seed, w["ct_index"], w["plate"], _ROWS.index(w["well"][0]),
                                              int(w["well"][1:]), s, 3])
                field = render_site(srng, size=image_size, cell_type=w["cell_type"], infected_fraction=q,
                                    viability=viability, infected_well=w["condition"] == ACTIVE)
                raw = _to_uint16(field, srng, gain, offset, vignette)
                for k in range(5):
                    _write_png16(folder / f"{w['well']}_s{s}_w{k + 1}.png", raw[k])
                meta_rows.append({
                    "site_id": f"{well_id}_{s}", "well_id": well_id, "cell_type": w["cell_type"],
                    "experiment": w["experiment"], "plate": w["plate"], "well": w["well"], "site": s,
                    "disease_condition": w["condition"], "treatment": cp.name if cp else "",
                    "treatment_conc": "" if cp is None else w["conc"],
                })
            well_rows.append({
                "experiment": w["experiment"], "plate": w["plate"], "well": w["well"], "cell_type": w["cell_type"],
                "role": w["role"], "treatment": cp.name if cp else "", "treatment_conc": "" if cp is None else w["conc"],
                "true_rescue": round(rescue, 6), "true_infected_fraction": round(q, 6),
                "true_viability": round(viability, 6),
            })
            yield Progress(i + 1, len(plan), unit="wells", stage="synth", metrics={"sites": (i + 1) * sites})

        _write_csv(tmp / "metadata.csv", meta_rows)
        _write_csv(tmp / "wells.csv", well_rows)
        _write_csv(tmp / "ground_truth.csv", [{
            "treatment": c.name, "ec50_uM": "" if not np.isfinite(c.ec50_uM) else round(c.ec50_uM, 6),
            "hill": round(c.hill, 4), "efficacy": round(c.efficacy, 4), "active": c.active, "toxic": c.toxic,
            "tc50_uM": "" if not c.toxic else round(c.tc50_uM, 6),
        } for c in sorted(cmpds, key=lambda c: c.name)])
        (tmp / "README.txt").write_text(_readme(seed, plates, image_size, sites, compounds, replicates,
                                                controls, doses, cell_types, infection))
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)  # the folder appears whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def make_screen(out_dir: str | os.PathLike, **kwargs) -> Path:
    """Write a synthetic screen (see :func:`make_screen_iter` for the parameters) and return its folder."""
    return run_to_end(make_screen_iter(out_dir, **kwargs))


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _readme(seed, plates, image_size, sites, compounds, replicates, controls, doses, cell_types, infection) -> str:
    return f"""Synthetic GAN-DL screen (napari-gandl gandl_core.synth), seed {seed}.

Layout: RxRx19a-style. metadata.csv lists every site; images/<experiment>/Plate<p>/<well>_s<site>_w<k>.png
are 16-bit grayscale PNGs, {image_size}x{image_size} px; channels w1..w5 = {', '.join(CHANNEL_NAMES)}.

Cell types (one experiment each, {plates} plate(s) per experiment): {', '.join(cell_types)}.
  HRCE stand-in: large flat epithelial cells, round nuclei.  VERO stand-in: smaller spindle cells, denser.

Per plate: {controls} Mock wells (C+, uninfected), {controls} Active SARS-CoV-2 untreated wells (C-),
and {compounds} compounds x {len(doses)} doses ({', '.join(str(d) for d in doses)} uM) x {replicates} replicate wells,
all on infected cells. {sites} site(s) per well.

Infection phenotype ({infection:.0%} of cells in C- wells): bright cytoplasmic RNA puncta, rounder cells with few
actin stress fibres, fragmented Golgi, swollen ER, ~20% fewer cells.
Compounds rescue a fraction efficacy*c^h/(c^h+EC50^h) of the phenotype (ground_truth.csv); inactive compounds
have efficacy 0; toxic ones lower cell numbers and condense nuclei above their TC50.
Plate effects: per-plate per-channel gain/offset and radial illumination fall-off.

wells.csv gives every well's role (positive = C+, negative = C-, treated), dose and the true rescue,
infected fraction and viability.
"""
