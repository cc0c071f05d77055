"""A synthetic RxRx19a look-alike screen with known ground truth.

Why: every test, the demo and the napari sample need a plate with the structure of a real
phenotypic screen — control wells that differ, compounds whose effect follows a known dose
response, plate effects to normalize away — without downloading 450 GB. Because the truth is known,
the whole pipeline can be scored: does the embedding separate the controls, do fitted EC50s rank
like the true ones, are actives separated from inactives.

Generative model (all intensities before plate effects are in arbitrary units around 1):

* **Cell types.** ``HRCE`` stand-in: large, flat epithelial cells (nucleus radius 4 px, cell/nucleus
  ratio 2.9, aspect ratio 1.3, round nuclei, ~14 cells per 100x100 px). ``VERO`` stand-in: smaller
  spindle cells (nucleus 2.9 px, aspect 2.6, elongated nuclei), denser (~30 per 100x100 px).
  Cells are placed with a minimum spacing (they touch but rarely stack).
* **Cells.** Each cell is a soft-edged ellipse at a random orientation around its nucleus (details in
  :func:`render_site`). Stains (one channel each, RxRx19a order):

  ``w1 DNA``    nucleus ellipse with chromatin texture; toxic compounds condense nuclei (smaller, brighter).
  ``w2 ER``     cytoplasm, brighter near the nucleus, fine reticular texture.
  ``w3 Actin``  cortical ring plus 4-8 thin stress fibres roughly along the cell's long axis.
  ``w4 RNA``    2–3 nucleoli and diffuse cytoplasm.
  ``w5 Golgi``  a compact perinuclear ribbon on one side of the nucleus, plus membrane outline.

  Every cell gets its own log-normal (sd 0.15) brightness factor per stain (cell-to-cell variation).

* **Infection phenotype** (C− wells; each cell is infected with probability ``q``): bright
  cytoplasmic RNA puncta (viral replication sites), rounder cells with few stress fibres,
  fragmented Golgi scattered around the nucleus, swollen ER; 15% of infected cells fuse into
  enlarged syncytia with 2-4 nuclei; infected wells also hold ~20% fewer cells (cytopathic effect).
  All of it survives downsampling to 32-64 px crops (puncta are ~2 px wide at 96 px fields).
* **Controls.** ``Mock`` wells (C+, role ``positive``): q = 0. ``Active SARS-CoV-2`` untreated
  wells (C−, role ``negative``): q = ``infection``. ``UV Inactivated SARS-CoV-2`` wells (C+,
  role ``positive``, as RxRx19a treats them) look like Mock.
* **Compounds** are added to infected cells at six half-log doses. The fraction of the phenotype
  rescued follows a Hill curve ``rescue(c) = efficacy * c^h / (c^h + EC50^h)`` and
  ``q = infection * (1 - rescue)``. Some compounds are inactive (efficacy 0), some toxic
  (viability ``1 - c^2 / (c^2 + TC50^2)`` scales the cell count and condenses nuclei); with 8 or
  more compounds one toxic compound is also active (rescues at mid doses, kills at the top).
  See :func:`make_compounds`.
* **Plate effects.** Each plate has its own per-channel gain (log-normal, sd 0.2) and offset and a
  radial illumination fall-off (10-30% darker corners), so raw features differ between plates
  until normalized per plate.
* **Camera.** counts = (signal x gain x illumination + offset) x 6000 + 300, plus shot noise
  (1.5 sqrt(counts)) and read noise (sd 20), rounded to uint16: background ~400-800 counts,
  cells a few thousand, puncta and condensed nuclei up to ~25000 (no saturation).
* **Layout.** Wells are placed at random on a 384-well plate (inner wells first), so position does
  not follow role. Every site has its own random stream (seeded by seed, cell type, plate, well,
  site), so the same seed gives bit-identical files whatever else changes in the order of work.

Size and speed: the defaults (2 cell types x 2 plates x 118 wells x 1 site, 96 px) write 472 sites
(2360 PNGs, ~37 MB) in ~6 s of one CPU core (~13 ms per site: 7 render, 2 noise, 5 PNG encode).

Example::

    from gandl_core.synth import make_screen
    root = make_screen("screen", plates=1, image_size=96, sites=2)   # then gandl-core index screen

Outputs (RxRx layout, readable by :func:`gandl_core.plates.build_index`)::

    OUT/metadata.csv         site_id, well_id, cell_type, experiment, plate, well, site,
                             disease_condition, treatment, treatment_conc
    OUT/images/<experiment>/Plate<plate>/<well>_s<site>_w<k>.png   16-bit grayscale
    OUT/ground_truth.csv     one row per compound: treatment, ec50_uM, hill, efficacy, active,
                             toxic, tc50_uM
    OUT/wells.csv            one row per well: experiment, plate, well, cell_type,
                             disease_condition, role (positive = C+, negative = C-, treated),
                             treatment, treatment_conc, true_rescue, true_infected_fraction,
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
from .tables import default_file_mode
from .progress import Progress, ProgressGenerator, run_to_end

CHANNEL_NAMES = ["DNA", "ER", "Actin", "RNA", "Golgi"]
CELL_TYPES = ("HRCE", "VERO")
MOCK = "Mock"
ACTIVE = "Active SARS-CoV-2"
UV = "UV Inactivated SARS-CoV-2"

# Shape parameters per cell type: nucleus radius (px), cell/nucleus size ratio, cell aspect ratio,
# nucleus aspect ratio, cells per 100x100 px.
_MORPHOLOGY = {
    "HRCE": dict(r_nuc=4.0, ratio=2.9, aspect=1.3, nuc_aspect=1.1, density=14.0),
    "VERO": dict(r_nuc=2.9, ratio=2.3, aspect=2.6, nuc_aspect=1.6, density=30.0),
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
    """Draw ``n`` compounds: ~55% active and not toxic, ~25% inactive, ~20% toxic; named ``cmpd-01`` ..
    in a shuffled order (the name says nothing).

    Active compounds get log10(EC50) evenly spaced from 0.4 log units above the lowest dose to 0.4
    below the highest (+-0.1 jitter), Hill slope U(1, 2) and efficacy U(0.7, 1): each EC50 sits inside
    the tested range with a distinct rank. The first toxic compound is inactive (cytotoxic only,
    TC50 inside the range); further toxic ones are active with a therapeutic window: EC50 in the
    lower part of the range and TC50 = EC50 x 10^U(1, 1.5), so they rescue at mid doses and kill
    cells at the top doses (a bell-shaped readout, as for real cytotoxic hits).

    Raises
    ------
    ConfigError
        If ``n < 3`` or the doses span no more than a factor of 10.
    """
    if n < 3:
        raise ConfigError(f"option 'compounds' = {n}: need at least 3 (active, inactive and toxic examples).")
    lo, hi = np.log10(min(doses)), np.log10(max(doses))
    if hi - lo <= 1.0 + 1e-9:  # EC50s sit 0.4 log units inside the range; TC50s need 0.8 + 0.2 of room
        raise ConfigError(f"option 'doses' = {list(doses)}: the doses must span more than a factor of 10 "
                          f"(here {10 ** (hi - lo):.3g}x) so every EC50 and TC50 lies inside the tested range.")
    n_tox = max(1, int(round(0.2 * n)))
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
    for t in range(n_tox):
        if t == 0:
            out.append(Compound(names[k], float("nan"), 1.0, 0.0, float(10 ** rng.uniform(lo + 0.8, hi - 0.2))))
        else:
            l_ec = rng.uniform(lo + 0.4, lo + 0.4 + 0.25 * (hi - lo))
            out.append(Compound(names[k], float(10**l_ec), float(rng.uniform(1.0, 2.0)), float(rng.uniform(0.7, 1.0)),
                                float(10 ** (l_ec + rng.uniform(1.0, 1.5)))))
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


def _place_cells(rng: np.random.Generator, n: int, size: int, min_dist: float) -> np.ndarray:
    """Up to ``n`` cell centres, [k, 2] (y, x), at least ``min_dist`` apart.

    Dart throwing with a fixed number of candidates: cells in a monolayer touch but rarely pile
    up, and a crowded well saturates (fewer than ``n`` cells fit) like a confluent monolayer."""
    cand = rng.uniform(0, size, (4 * n + 4, 2))
    kept: list[np.ndarray] = []
    for p in cand:
        if len(kept) == n:
            break
        if not kept or np.min(np.sum((np.asarray(kept) - p) ** 2, axis=1)) >= min_dist**2:
            kept.append(p)
    return np.asarray(kept, dtype=np.float64).reshape(-1, 2)


def _spots(u: np.ndarray, v: np.ndarray, pu: np.ndarray, pv: np.ndarray, sigma: float, amp) -> np.ndarray:
    """Sum of isotropic Gaussian spots at cell-frame positions (pu, pv), vectorized over spots."""
    pu, pv = np.asarray(pu, u.dtype), np.asarray(pv, u.dtype)
    d2 = (u[None] - pu[:, None, None]) ** 2 + (v[None] - pv[:, None, None]) ** 2
    return float(amp) * np.exp(d2 * np.float32(-1.0 / (2 * sigma**2))).sum(axis=0)


@dataclass(frozen=True)
class _Cell:
    """One cell as drawn: orientation, phenotype, per-stain brightness and semi-axes (px) of the
    cell (``a_c`` along its long axis, ``b_c`` across) and of its nucleus (``a_n``, ``b_n``)."""

    theta: float
    infected: bool
    syncytium: bool
    bright: list[float]
    a_c: float
    b_c: float
    a_n: float
    b_n: float


def _draw_cell(rng: np.random.Generator, m: dict, infected_fraction: float, condense: float) -> _Cell:
    theta = float(rng.uniform(0, np.pi))
    infected = rng.random() < infected_fraction
    syncytium = infected and rng.random() < 0.15
    # Cell-to-cell stain variation (cell cycle, uptake): one log-normal factor per channel.
    bright = np.exp(rng.normal(0.0, 0.15, 5)).tolist()
    jitter = rng.uniform(0.85, 1.15)
    r_n = m["r_nuc"] * jitter * condense
    aspect = 1.0 + (m["aspect"] - 1.0) * (0.35 if infected else 1.0)  # infected cells round up
    r_c = m["r_nuc"] * jitter * m["ratio"] * (1.15 if infected else 1.0) * (1.7 if syncytium else 1.0)
    if syncytium:
        aspect = 1.1
    # Python floats keep the float32 patches float32 (NumPy scalars would upcast them).
    a_c, b_c = float(r_c * np.sqrt(aspect)), float(r_c / np.sqrt(aspect))
    a_n, b_n = float(r_n * np.sqrt(m["nuc_aspect"])), float(r_n / np.sqrt(m["nuc_aspect"]))
    return _Cell(theta, infected, syncytium, bright, a_c, b_c, a_n, b_n)


@dataclass(frozen=True)
class _Patch:
    """The window of the field a cell paints: its slices, the cell-frame coordinates ``u`` (along
    the long axis) and ``v``, the normalised elliptic distance ``d_cell`` and the soft cell mask."""

    sl: tuple[slice, slice]
    u: np.ndarray
    v: np.ndarray
    d_cell: np.ndarray
    mask: np.ndarray


def _cell_patch(cell: _Cell, cy, cx, yy: np.ndarray, xx: np.ndarray, size: int) -> _Patch | None:
    """The cell's window around centre (cy, cx), or None when it lies outside the field."""
    half = int(np.ceil(cell.a_c + 3))
    y0, y1 = max(0, int(cy) - half), min(size, int(cy) + half + 1)
    x0, x1 = max(0, int(cx) - half), min(size, int(cx) + half + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
    c, s = float(np.cos(cell.theta)), float(np.sin(cell.theta))
    u, v = c * dx + s * dy, -s * dx + c * dy  # cell frame: u along the long axis
    d_cell = np.sqrt((u / cell.a_c) ** 2 + (v / cell.b_c) ** 2)
    mask = 0.5 - 0.5 * np.tanh((d_cell - 1.0) * 4.0)  # logistic edge; tanh cannot overflow in float32
    return _Patch((slice(y0, y1), slice(x0, x1)), u, v, d_cell, mask)


def _nuclei(rng: np.random.Generator, cell: _Cell, p: _Patch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nucleus centres (cell frame) and the nuclear mask: one near the centre, or 2-4 spread
    through a syncytium."""
    n_nuc = int(rng.integers(2, 5)) if cell.syncytium else 1
    if n_nuc == 1:
        nu, nv = rng.normal(0, 0.08 * cell.a_n, 1), rng.normal(0, 0.08 * cell.b_n, 1)
    else:
        ang = rng.uniform(0, 2 * np.pi) + np.arange(n_nuc) * 2 * np.pi / n_nuc
        nu, nv = 0.45 * cell.a_c * np.cos(ang), 0.45 * cell.b_c * np.sin(ang)
    nuc = np.zeros_like(p.u)
    for pu, pv in zip(nu.tolist(), nv.tolist()):
        d_nuc = np.sqrt(((p.u - pu) / cell.a_n) ** 2 + ((p.v - pv) / cell.b_n) ** 2)
        nuc = np.maximum(nuc, 0.5 - 0.5 * np.tanh((d_nuc - 1.0) * 5.0))
    return nu, nv, nuc


def _actin(rng: np.random.Generator, cell: _Cell, p: _Patch, cyto: np.ndarray) -> np.ndarray:
    """Cortical ring + stress fibres, thin lines roughly parallel to the long axis (few when infected)."""
    ring = np.exp(-((p.d_cell - 0.95) / 0.12) ** 2)
    n_f = int(rng.integers(4, 9))
    f_off = (rng.uniform(-0.8, 0.8, n_f) * cell.b_c).astype(np.float32)
    f_slope = rng.normal(0.0, 0.12, n_f).astype(np.float32)
    f_amp = (rng.uniform(0.5, 1.0, n_f) * (0.15 if cell.infected else 1.0)).astype(np.float32)
    dist = p.v[None] - f_off[:, None, None] - f_slope[:, None, None] * p.u[None]
    fibres = np.tensordot(f_amp, np.exp(dist**2 * np.float32(-1.0 / (2 * 0.45**2))), 1)
    return 0.5 * ring + cyto * fibres * 0.9 + 0.1 * p.mask


def _rna(rng: np.random.Generator, cell: _Cell, p: _Patch, nu, nv, cyto: np.ndarray, nuc: np.ndarray) -> np.ndarray:
    """Nucleoli + diffuse cytoplasm; infected cells add bright cytoplasmic puncta (twice as many in
    a syncytium)."""
    u, v = p.u, p.v
    rna = 0.25 * cyto + 0.2 * nuc
    for pu, pv in zip(nu.tolist(), nv.tolist()):
        k = int(rng.integers(2, 4))
        ang, rad = rng.uniform(0, 2 * np.pi, k), rng.uniform(0, 0.5, k)
        rna += _spots(u, v, pu + rad * cell.a_n * np.cos(ang), pv + rad * cell.b_n * np.sin(ang), 0.7, 0.9)
    if cell.infected:
        k = int(rng.integers(5, 10)) * (2 if cell.syncytium else 1)
        ang, rad = rng.uniform(0, 2 * np.pi, k), rng.uniform(0.45, 0.85, k)
        rna += _spots(u, v, rad * cell.a_c * np.cos(ang), rad * cell.b_c * np.sin(ang), 0.8, 1.6)
    return rna


def _golgi(rng: np.random.Generator, cell: _Cell, p: _Patch, nu, nv) -> np.ndarray:
    """Membrane outline plus a perinuclear ribbon on one side, fragmented into scattered dots when
    infected."""
    u, v = p.u, p.v
    golgi = 0.15 * np.exp(-((p.d_cell - 0.95) / 0.15) ** 2)
    side = rng.uniform(0, 2 * np.pi)
    if cell.infected:
        k = int(rng.integers(5, 9))
        ang, rad = rng.uniform(0, 2 * np.pi, k), rng.uniform(0.35, 0.8, k)
        return golgi + _spots(u, v, rad * cell.a_c * np.cos(ang), rad * cell.b_c * np.sin(ang), 0.6, 0.6)
    gu, gv = float(nu[0] + 1.3 * cell.a_n * np.cos(side)), float(nv[0] + 1.3 * cell.b_n * np.sin(side))
    return golgi + 1.1 * np.exp(-((u - gu) ** 2 / (2 * 1.4**2) + (v - gv) ** 2 / (2 * 0.9**2)))


def _paint_cell(img: np.ndarray, rng: np.random.Generator, cell: _Cell, p: _Patch, tex_chrom: np.ndarray,
                tex_er: np.ndarray, condense: float) -> None:
    """Add one cell's five stains to ``img`` (random draws in a fixed order: nuclei, actin, RNA, Golgi)."""
    nu, nv, nuc = _nuclei(rng, cell, p)
    cyto = np.clip(p.mask - nuc, 0, 1)
    sl, bright = p.sl, cell.bright
    # DNA: nucleus with chromatin texture; condensed nuclei are brighter.
    img[0][sl] += nuc * (1.0 + 0.25 * tex_chrom[sl]) * (1.0 / condense) ** 2 * bright[0]
    # ER: perinuclear gradient with reticular texture; swollen when infected.
    er_gain = 1.35 if cell.infected else 1.0
    img[1][sl] += (cyto * np.exp(-np.maximum(p.d_cell - 0.2, 0) * 1.2) * (0.8 + 0.35 * tex_er[sl]) * 0.7 * er_gain
                   * bright[1])
    img[2][sl] += _actin(rng, cell, p, cyto) * bright[2]
    img[3][sl] += _rna(rng, cell, p, nu, nv, cyto, nuc) * bright[3]
    img[4][sl] += _golgi(rng, cell, p, nu, nv) * p.mask * bright[4]


def render_site(
    rng: np.random.Generator,
    *,
    size: int,
    cell_type: str,
    infected_fraction: float,
    viability: float = 1.0,
    infected_well: bool = False,
) -> np.ndarray:
    """Render one 5-channel field, float32 [5, size, size], intensities ~0..3 before plate effects.

    The generative model, per field:

    1. Cell count ~ Poisson(density x area), lowered by toxicity (``viability``) and, in wells
       that got virus, by up to 20% (cytopathic effect); centres are placed by dart throwing with a
       minimum spacing, so cells touch but rarely stack.
    2. Each cell is an ellipse (semi-axes from the cell type's nucleus radius, cell/nucleus ratio
       and aspect ratio, +-15% size jitter) at a random orientation, with a soft (logistic) edge.
       Nucleus: a smaller ellipse near the centre. Infected cells (probability
       ``infected_fraction``) round up (aspect ratio pulled towards 1) and swell by 15%; 15% of them
       fuse into syncytia (cell 1.7x larger, 2-4 nuclei).
    3. Stains, one per channel (RxRx19a order):
       w1 DNA: nuclei with smooth-noise chromatin; toxic wells condense nuclei (smaller, brighter).
       w2 ER: cytoplasm, brighter near the nucleus, reticular noise texture; 1.35x when infected.
       w3 Actin: cortical ring plus 4-8 stress fibres (thin Gaussian lines roughly along the long
       axis); infected cells keep 15% of the fibres.
       w4 RNA: 2-3 nucleoli per nucleus and dim cytoplasm; infected cells add 5-9 bright cytoplasmic
       puncta (viral replication sites), syncytia twice as many.
       w5 Golgi: a compact ribbon beside the nucleus plus a faint membrane outline; infected cells
       show it fragmented into 5-8 dots scattered through the cytoplasm.

    Camera noise, plate gain/offset and illumination are added later (:func:`make_screen_iter`).

    Parameters
    ----------
    rng
        Source of randomness (one per site keeps sites independent of rendering order).
    size
        Field edge in pixels.
    cell_type
        ``"HRCE"`` or ``"VERO"`` (see the module docstring for their morphology).
    infected_fraction
        Probability that a cell shows the infection phenotype (0..1).
    viability
        Fraction of cells left alive (0..1); below 1 also condenses nuclei (toxicity).
    infected_well
        Virus was added (cytopathic effect lowers the cell count by up to 20%).

    Returns
    -------
    numpy.ndarray
        float32 array [5, size, size], >= 0.

    Raises
    ------
    ConfigError
        For an unknown ``cell_type`` or fractions outside 0..1.
    """
    if cell_type not in _MORPHOLOGY:
        raise ConfigError(f"cell_type {cell_type!r}: choose from {list(CELL_TYPES)}.")
    for name, val in (("infected_fraction", infected_fraction), ("viability", viability)):
        if not 0.0 <= val <= 1.0:
            raise ConfigError(f"option '{name}' = {val} must be in [0, 1].")
    m = _MORPHOLOGY[cell_type]
    area = size * size / 1e4
    density = m["density"] * viability * (1.0 - 0.2 * infected_fraction if infected_well else 1.0)
    n_target = int(rng.poisson(max(density * area, 0.5)))
    condense = 1.0 - 0.35 * (1.0 - viability)  # toxic: smaller, brighter nuclei
    r_cell = m["r_nuc"] * m["ratio"]
    centres = _place_cells(rng, n_target, size, min_dist=0.9 * r_cell)
    # float32 patches: half the time of float64 and far below the 16-bit output's precision.
    img = np.zeros((5, size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    tex_chrom = _smooth_noise(rng, (size, size), 0.8).astype(np.float32)
    tex_er = _smooth_noise(rng, (size, size), 0.7).astype(np.float32)
    for cy, cx in centres.astype(np.float32):
        cell = _draw_cell(rng, m, infected_fraction, condense)
        patch = _cell_patch(cell, cy, cx, yy, xx, size)
        if patch is not None:
            _paint_cell(img, rng, cell, patch, tex_chrom, tex_er, condense)
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


def _check_screen_options(out: Path, *, plates: int, image_size: int, sites: int, replicates: int, controls: int,
                          uv_controls: int, doses: Sequence[float] | None, cell_types: Sequence[str],
                          infection: float, overwrite: bool) -> list[float]:
    """Raise for options that cannot make a screen or an ``out`` that is taken; return the doses."""
    if image_size < 32:
        raise ConfigError(f"option 'image_size' = {image_size}: use at least 32 px so fields hold whole cells.")
    for name, val in (("plates", plates), ("sites", sites), ("replicates", replicates), ("controls", controls)):
        if int(val) < 1:
            raise ConfigError(f"option '{name}' = {val} must be >= 1.")
    if int(uv_controls) < 0:
        raise ConfigError(f"option 'uv_controls' = {uv_controls} must be >= 0.")
    unknown = [c for c in cell_types if c not in _MORPHOLOGY]
    if unknown or not cell_types or len(set(cell_types)) != len(cell_types):
        raise ConfigError(f"option 'cell_types' = {list(cell_types)}: choose one or both of {list(CELL_TYPES)}, each once.")
    if not 0.0 < infection <= 1.0:
        raise ConfigError(f"option 'infection' = {infection} must be in (0, 1].")
    doses = list(doses) if doses is not None else default_doses()
    if len(doses) < 2 or not all(np.isfinite(d) and d > 0 for d in doses) or len(set(doses)) != len(doses):
        raise ConfigError(f"option 'doses' = {doses}: give at least two distinct positive concentrations (uM).")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file: choose a folder name for the screen.")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out} exists and is not empty: choose a new folder or pass overwrite=True (--overwrite).")
    return doses


def _plan_wells(cmpds: list[Compound], doses: list[float], *, seed: int, cell_types: Sequence[str], plates: int,
                controls: int, uv_controls: int, replicates: int) -> list[dict]:
    """One dict per well (role, condition, compound, dose, cell type, experiment, plate, well name),
    plate by plate in row-major well order."""
    plan: list[dict] = []
    for ct_i, ct in enumerate(cell_types):
        experiment = f"{ct}-1"
        for p in range(1, plates + 1):
            wells: list[dict] = []
            wells += [dict(role="positive", condition=MOCK, cmpd=None, conc=None) for _ in range(controls)]
            wells += [dict(role="positive", condition=UV, cmpd=None, conc=None) for _ in range(uv_controls)]
            wells += [dict(role="negative", condition=ACTIVE, cmpd=None, conc=None) for _ in range(controls)]
            for cp in cmpds:
                for conc in doses:
                    wells += [dict(role="treated", condition=ACTIVE, cmpd=cp, conc=conc) for _ in range(replicates)]
            names = _well_names(len(wells), np.random.default_rng([seed, ct_i, p, 1]))
            for w, name in zip(wells, names):
                w.update(cell_type=ct, experiment=experiment, plate=p, well=name, ct_index=ct_i)
            plan.extend(sorted(wells, key=lambda w: (_ROWS.index(w["well"][0]), int(w["well"][1:]))))
    return plan


def _write_well(root: Path, w: dict, effects: tuple, *, seed: int, sites: int, image_size: int,
                infection: float) -> tuple[list[dict], dict]:
    """Render and write one well's sites under ``root/images``; return its metadata.csv rows and its
    wells.csv row (the truth: rescue, infected fraction, viability)."""
    gain, offset, vignette = effects
    cp: Compound | None = w["cmpd"]
    rescue = cp.rescue(w["conc"]) if cp is not None else 0.0
    viability = cp.viability(w["conc"]) if cp is not None else 1.0
    q = 0.0 if w["role"] == "positive" else infection * (1.0 - rescue)
    folder = root / "images" / w["experiment"] / f"Plate{w['plate']}"
    folder.mkdir(parents=True, exist_ok=True)
    well_id = f"{w['experiment']}_{w['plate']}_{w['well']}"
    treatment, conc = (cp.name if cp else ""), ("" if cp is None else w["conc"])
    meta_rows = []
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
            "disease_condition": w["condition"], "treatment": treatment, "treatment_conc": conc,
        })
    well_row = {
        "experiment": w["experiment"], "plate": w["plate"], "well": w["well"], "cell_type": w["cell_type"],
        "disease_condition": w["condition"], "role": w["role"], "treatment": treatment, "treatment_conc": conc,
        "true_rescue": round(rescue, 6), "true_infected_fraction": round(q, 6),
        "true_viability": round(viability, 6),
    }
    return meta_rows, well_row


def _ground_truth_rows(cmpds: list[Compound]) -> list[dict]:
    return [{
        "treatment": c.name, "ec50_uM": "" if not np.isfinite(c.ec50_uM) else round(c.ec50_uM, 6),
        "hill": round(c.hill, 4), "efficacy": round(c.efficacy, 4), "active": c.active, "toxic": c.toxic,
        "tc50_uM": "" if not c.toxic else round(c.tc50_uM, 6),
    } for c in sorted(cmpds, key=lambda c: c.name)]


def make_screen_iter(
    out_dir: str | os.PathLike,
    *,
    plates: int = 2,
    seed: int = 0,
    image_size: int = 96,
    sites: int = 1,
    compounds: int = 8,
    replicates: int = 2,
    controls: int = 10,
    uv_controls: int = 2,
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
    uv_controls
        Wells per plate given UV-inactivated virus (``"UV Inactivated SARS-CoV-2"``): they look
        like Mock and are C+ (role ``positive``) as in RxRx19a; 0 for none.
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
    doses = _check_screen_options(out, plates=plates, image_size=image_size, sites=sites, replicates=replicates,
                                  controls=controls, uv_controls=uv_controls, doses=doses, cell_types=cell_types,
                                  infection=infection, overwrite=overwrite)
    cmpds = make_compounds(compounds, doses, np.random.default_rng(seed))
    plan = _plan_wells(cmpds, doses, seed=seed, cell_types=cell_types, plates=plates, controls=controls,
                       uv_controls=uv_controls, replicates=replicates)

    # Render beside the target (same file system, so the final rename is atomic); an old screen
    # being overwritten stays intact until the new one is complete.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.synth-", dir=out.parent))
    try:
        meta_rows, well_rows = [], []
        effects: dict[tuple[int, int], tuple] = {}  # plate effects per (cell type, plate)
        for i, w in enumerate(plan):
            key = (w["ct_index"], w["plate"])
            if key not in effects:
                effects[key] = _plate_effects(np.random.default_rng([seed, key[0], key[1], 2]), image_size)
            sites_rows, well_row = _write_well(tmp, w, effects[key], seed=seed, sites=sites, image_size=image_size,
                                               infection=infection)
            meta_rows += sites_rows
            well_rows.append(well_row)
            yield Progress(i + 1, len(plan), unit="wells", stage="synth", metrics={"sites": (i + 1) * sites})

        _write_csv(tmp / "metadata.csv", meta_rows)
        _write_csv(tmp / "wells.csv", well_rows)
        _write_csv(tmp / "ground_truth.csv", _ground_truth_rows(cmpds))
        (tmp / "README.txt").write_text(_readme(seed, plates, image_size, sites, compounds, replicates,
                                                controls, uv_controls, doses, cell_types, infection))
        if out.exists():
            shutil.rmtree(out)  # empty, or overwrite=True (checked above)
        os.chmod(tmp, default_file_mode(directory=True))  # mkdtemp makes it 0700
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


def _readme(seed, plates, image_size, sites, compounds, replicates, controls, uv_controls, doses, cell_types,
            infection) -> str:
    return f"""Synthetic GAN-DL screen (napari-gandl gandl_core.synth), seed {seed}.

Layout: RxRx19a-style. metadata.csv lists every site; images/<experiment>/Plate<p>/<well>_s<site>_w<k>.png
are 16-bit grayscale PNGs, {image_size}x{image_size} px; channels w1..w5 = {', '.join(CHANNEL_NAMES)}.

Cell types (one experiment each, {plates} plate(s) per experiment): {', '.join(cell_types)}.
  HRCE stand-in: large flat epithelial cells, round nuclei.  VERO stand-in: smaller spindle cells, denser.
Wells are placed at random on a 384-well plate (inner wells first), so position does not follow role.

Per plate: {controls} Mock wells (C+, uninfected), {uv_controls} UV Inactivated SARS-CoV-2 wells (C+, look like Mock),
{controls} Active SARS-CoV-2 untreated wells (C-),
and {compounds} compounds x {len(doses)} doses ({', '.join(str(d) for d in doses)} uM) x {replicates} replicate wells,
all on infected cells. {sites} site(s) per well.

Infection phenotype ({infection:.0%} of cells in C- wells): bright cytoplasmic RNA puncta (w4), rounder and
slightly larger cells with few actin stress fibres (w3), Golgi fragmented into scattered dots (w5), swollen ER (w2),
15% of infected cells fused into large multinucleate syncytia, ~20% fewer cells per field.
Compounds rescue a fraction rescue(c) = efficacy*c^h/(c^h+EC50^h) of the phenotype (ground_truth.csv): in a
treated well each cell is infected with probability infection*(1-rescue(c)). Inactive compounds have efficacy 0.
Toxic ones (toxic=True) leave a viable fraction 1 - c^2/(c^2+TC50^2): fewer cells and condensed, brighter nuclei.
Plate effects: per-plate per-channel gain/offset and radial illumination fall-off.

wells.csv gives every well's role (positive = C+, negative = C-, treated), dose and the true rescue,
infected fraction and viability.
"""
