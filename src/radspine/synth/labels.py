"""Latent severities and grades of the phantom, sampled without rendering any image.

Each study gets a latent severity in [0, 1] per condition x level. A Gaussian copula gives the
correlations seen in real spines (a per-patient age factor, per-level degeneration correlated between
neighbouring levels, a per-level factor shared by the left/right sides of a condition group); each
column's normal score is then mapped through that column's real grade frequencies
(:mod:`radspine.synth.label_stats`) so the grades follow the real per-column table exactly in
expectation, and the position inside a grade's third of [0, 1] is uniform.
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


@dataclass(frozen=True)
class StudyLatents:
    """Latent variables of one study; arrays are indexed [condition, level] in constants order."""

    age: float  # standard-normal age-like factor (older -> more degeneration, fattier marrow)
    degeneration: np.ndarray  # (5,) standard-normal per-level degeneration (disc height/hydration)
    severity: np.ndarray  # (5, 5) latent severity in [0, 1]
    grade: np.ndarray  # (5, 5) int grade 0/1/2 from severity
    blank: np.ndarray  # (5, 5) bool: this train.csv cell is left blank


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


def sample_latents(rng: np.random.Generator, n: int, quirks: QuirkConfig | None = None) -> list[StudyLatents]:
    """Draw the latents of ``n`` studies from ``rng`` (vectorised; no images)."""
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
    return [
        StudyLatents(age=float(age[i]), degeneration=deg[i], severity=sev[i], grade=grade[i], blank=blank[i])
        for i in range(n)
    ]


def sample_labels(n_studies: int, seed: int = 0, quirks: QuirkConfig | None = None) -> pd.DataFrame:
    """Labels of ``n_studies`` phantom studies without rendering: one row per study x condition x level.

    Columns: study (0-based index), condition, level, severity, grade (int), blank (bool). Fast enough for
    thousands of studies; used to check grade frequencies and correlations.
    """
    rng = np.random.default_rng(seed)
    lat = sample_latents(rng, n_studies, quirks)
    sev = np.stack([s.severity for s in lat]) if lat else np.zeros((0, 5, 5))
    grade = np.stack([s.grade for s in lat]) if lat else np.zeros((0, 5, 5), int)
    blank = np.stack([s.blank for s in lat]) if lat else np.zeros((0, 5, 5), bool)
    nc, nl = len(CONDITIONS), len(LEVELS)
    return pd.DataFrame(
        {
            "study": np.repeat(np.arange(n_studies), nc * nl),
            "condition": np.tile(np.repeat(CONDITIONS, nl), n_studies),
            "level": np.tile(np.tile(LEVELS, nc), n_studies),
            "severity": sev.reshape(-1),
            "grade": grade.reshape(-1),
            "blank": blank.reshape(-1),
        }
    )
