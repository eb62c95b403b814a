"""Latent severities and grades of the phantom, sampled without rendering any image.

Each study gets a latent severity in [0, 1] per condition x level. A Gaussian copula gives the
correlations seen in real spines (a per-patient age factor, per-level degeneration correlated between
neighbouring levels, a per-level factor shared by the left/right sides of a condition group); each
column's normal score is then mapped through that column's real grade frequencies
(:mod:`radspine.synth.label_stats`) so the grades follow the real per-column table exactly in
expectation, and the position inside a grade's third of [0, 1] is uniform.

Reader noise (``QuirkConfig.label_noise``): a reader's grade flips to the neighbouring grade across the
nearest threshold with a probability that peaks at the threshold and decays as exp(-distance / READER_WIDTH).
Flip probabilities are balanced per column and threshold (:func:`flip_scales`), so as many cells flip up
as down and the *reader's* grades -- what train.csv holds, like the real table -- still follow the real
per-column frequencies in expectation (tested within sampling error). Noise never changes the latent
severity or the anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr

from radspine.constants import CONDITION_GROUP, CONDITIONS, GROUPS, LEVELS, label_column
from radspine.synth.label_stats import LABEL_COUNTS, N_STUDIES
from radspine.synth.quirks import QuirkConfig

# Copula loadings: z = W_AGE*age + W_LEVEL*degeneration[level] + W_GROUP*group[level] + noise.
W_AGE, W_LEVEL, W_GROUP = 0.45, 0.5, 0.5
W_NOISE = float(np.sqrt(1.0 - W_AGE**2 - W_LEVEL**2 - W_GROUP**2))
LEVEL_RHO = 0.55  # AR(1) correlation of degeneration between neighbouring levels
READER_WIDTH = 0.08  # severity distance over which a reader's flip probability falls by e


def grade_probabilities() -> np.ndarray:
    """(5 conditions, 5 levels, 3 grades) real grade frequencies among non-blank cells."""
    p = np.zeros((len(CONDITIONS), len(LEVELS), 3))
    for i, c in enumerate(CONDITIONS):
        for j, lv in enumerate(LEVELS):
            counts = np.asarray(LABEL_COUNTS[label_column(c, lv)][:3], dtype=float)
            p[i, j] = counts / counts.sum()
    return p


def blank_rates() -> np.ndarray:
    """(5 conditions, 5 levels) real fraction of blank train.csv cells."""
    r = np.zeros((len(CONDITIONS), len(LEVELS)))
    for i, c in enumerate(CONDITIONS):
        for j, lv in enumerate(LEVELS):
            r[i, j] = LABEL_COUNTS[label_column(c, lv)][3] / N_STUDIES
    return r


def flip_scales(probs: np.ndarray, width: float = READER_WIDTH) -> np.ndarray:
    """(..., 2 thresholds, 2 directions [up, down]) factors on a reader's flip probability.

    Severities are uniform inside each grade's third, so the kernel-weighted mass of cells that can flip
    across a threshold is known per side: 3 p w (1 - exp(-span / w)), span 1/3 for an edge grade and 1/6
    for the middle grade's half. The more populous side's flips are scaled down to the other side's mass,
    so as many cells flip up as down (detailed balance) and the reader's grade frequencies stay the
    latent -- i.e. the real -- ones. A rare grade is thus rarely given by mistake, as readers calibrated to
    prevalence do.
    """
    def mass(p: np.ndarray, span: float) -> np.ndarray:
        return 3.0 * p * width * (1.0 - np.exp(-span / width))

    p0, p1, p2 = probs[..., 0], probs[..., 1], probs[..., 2]
    below = np.stack([mass(p0, 1 / 3), mass(p1, 1 / 6)], axis=-1)
    above = np.stack([mass(p1, 1 / 6), mass(p2, 1 / 3)], axis=-1)
    ratio = above / np.maximum(below, 1e-12)
    return np.stack([np.minimum(1.0, ratio), np.minimum(1.0, 1.0 / np.maximum(ratio, 1e-12))], axis=-1)


def flip_probability(severity: np.ndarray, peak: float, probs: np.ndarray) -> np.ndarray:
    """P(reader grade != latent grade) per cell: peak x exp(-distance to the nearest threshold / width)
    x the balancing factor of that threshold and direction (:func:`flip_scales`); ``probs`` broadcasts."""
    sev = np.asarray(severity, dtype=float)
    grade = np.minimum((sev * 3.0).astype(int), 2)
    dist = np.abs(sev[..., None] - np.array([1 / 3, 2 / 3]))
    near = np.argmin(dist, axis=-1)  # which threshold
    up = grade == near  # below the threshold -> the flip goes up
    scales = np.broadcast_to(flip_scales(probs), (*sev.shape, 2, 2))
    sc = np.take_along_axis(np.take_along_axis(scales, near[..., None, None], axis=-2)[..., 0, :],
                            np.where(up, 0, 1)[..., None], axis=-1)[..., 0]
    return peak * np.exp(-np.min(dist, axis=-1) / READER_WIDTH) * sc


def reader_grades(rng: np.random.Generator, severity: np.ndarray, peak: float,
                  probs: np.ndarray | None = None) -> np.ndarray:
    """Reader's grades of latent severities (n, 5, 5): thresholded, then flipped across the nearest
    threshold with :func:`flip_probability` (``probs``: per-column grade frequencies, default the real)."""
    probs = grade_probabilities() if probs is None else probs
    sev = np.asarray(severity, dtype=float)
    grade = np.minimum((sev * 3.0).astype(int), 2)
    u = rng.random(grade.shape)  # always drawn, so the stream does not depend on the rate
    if peak <= 0:
        return grade
    near = np.argmin(np.abs(sev[..., None] - np.array([1 / 3, 2 / 3])), axis=-1)
    across = np.where(grade == near, grade + 1, grade - 1)
    return np.where(u < flip_probability(sev, peak, probs), across, grade)


@dataclass(frozen=True)
class StudyLatents:
    """Latent variables of one study; arrays are indexed [condition, level] in constants order."""

    age: float  # standard-normal age-like factor (older -> more degeneration, fattier marrow)
    degeneration: np.ndarray  # (5,) standard-normal per-level degeneration (disc height/hydration)
    severity: np.ndarray  # (5, 5) latent severity in [0, 1]
    grade: np.ndarray  # (5, 5) int grade 0/1/2 from severity
    blank: np.ndarray  # (5, 5) bool: this train.csv cell is left blank
    reader: np.ndarray | None = None  # (5, 5) reader's (possibly flipped) grade; None = the latent grade

    @property
    def label(self) -> np.ndarray:
        """The grade a reader writes in train.csv / test_solution.csv."""
        return self.grade if self.reader is None else self.reader


def _severity_from_normal(z: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Map standard-normal scores (..., 5, 5) to severities whose grades have frequencies ``probs``."""
    u = ndtr(z)
    c0 = probs[..., 0]
    c1 = c0 + probs[..., 1]
    grade = np.where(u < c0, 0, np.where(u < c1, 1, 2))
    lo = np.choose(grade, [np.zeros_like(c0), c0, c1])
    width = np.choose(grade, [probs[..., 0], probs[..., 1], probs[..., 2]])
    frac = np.clip((u - lo) / np.maximum(width, 1e-12), 0.005, 0.995)
    return (grade + frac) / 3.0


def sample_latents(rng: np.random.Generator, n: int, quirks: QuirkConfig | None = None,
                   reader_rng: np.random.Generator | None = None) -> list[StudyLatents]:
    """Draw the latents of ``n`` studies from ``rng`` (vectorised; no images).

    With ``reader_rng`` each study also gets reader grades (``StudyLatents.reader``) drawn from it.
    """
    quirks = QuirkConfig() if quirks is None else quirks
    nc, nl = len(CONDITIONS), len(LEVELS)
    age = rng.standard_normal(n)
    deg = np.empty((n, nl))
    deg[:, 0] = rng.standard_normal(n)
    for j in range(1, nl):
        deg[:, j] = LEVEL_RHO * deg[:, j - 1] + np.sqrt(1 - LEVEL_RHO**2) * rng.standard_normal(n)
    group = rng.standard_normal((n, len(GROUPS), nl))
    gidx = np.array([GROUPS.index(CONDITION_GROUP[c]) for c in CONDITIONS])
    z = (
        W_AGE * age[:, None, None]
        + W_LEVEL * deg[:, None, :]
        + W_GROUP * group[:, gidx, :]
        + W_NOISE * rng.standard_normal((n, nc, nl))
    )
    sev = _severity_from_normal(z, grade_probabilities()[None])
    grade = np.minimum((sev * 3.0).astype(int), 2)
    blank = rng.random((n, nc, nl)) < np.clip(blank_rates() * quirks.blank_labels, 0, 1)[None]
    # Reader noise from its own stream so the latents above are the same whatever the noise rate.
    reader = reader_grades(reader_rng, sev, quirks.label_noise) if reader_rng is not None else None
    return [
        StudyLatents(age=float(age[i]), degeneration=deg[i], severity=sev[i], grade=grade[i], blank=blank[i],
                     reader=None if reader is None else reader[i])
        for i in range(n)
    ]


def sample_labels(n_studies: int, seed: int = 0, quirks: QuirkConfig | None = None) -> pd.DataFrame:
    """Labels of ``n_studies`` phantom studies without rendering: one row per study x condition x level.

    Columns: study (0-based index), condition, level, severity, grade (int, latent), reader_grade (int, what
    train.csv would hold), blank (bool). Fast enough for thousands of studies; used to check grade
    frequencies, reader noise and correlations.
    """
    rng = np.random.default_rng(seed)
    lat = sample_latents(rng, n_studies, quirks, reader_rng=np.random.default_rng([seed, 1]))
    sev = np.stack([s.severity for s in lat]) if lat else np.zeros((0, 5, 5))
    grade = np.stack([s.grade for s in lat]) if lat else np.zeros((0, 5, 5), int)
    blank = np.stack([s.blank for s in lat]) if lat else np.zeros((0, 5, 5), bool)
    reader = np.stack([s.label for s in lat]) if lat else np.zeros((0, 5, 5), int)
    nc, nl = len(CONDITIONS), len(LEVELS)
    return pd.DataFrame(
        {
            "study": np.repeat(np.arange(n_studies), nc * nl),
            "condition": np.tile(np.repeat(CONDITIONS, nl), n_studies),
            "level": np.tile(np.tile(LEVELS, nc), n_studies),
            "severity": sev.reshape(-1),
            "grade": grade.reshape(-1),
            "reader_grade": reader.reshape(-1),
            "blank": blank.reshape(-1),
        }
    )
