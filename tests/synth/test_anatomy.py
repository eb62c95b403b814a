"""The 3D anatomy: spine coordinates invert, and each latent severity shrinks its own structure on its side."""

from __future__ import annotations

import numpy as np
import pytest

from radspine.constants import CONDITIONS, LEVELS
from radspine.synth.anatomy import LEVEL_DISC, Patient
from radspine.synth.labels import StudyLatents


def _patient(seed: int, cond: str | None, level: str = "l4_l5", sev: float = 0.95) -> Patient:
    """A patient with every severity 0.05 except ``cond`` at ``level`` (same seed -> same body)."""
    s = np.full((5, 5), 0.05)
    if cond is not None:
        s[CONDITIONS.index(cond), LEVELS.index(level)] = sev
    lat = StudyLatents(age=0.0, degeneration=np.zeros(5), severity=s, grade=(s * 3).astype(int).clip(0, 2),
                       blank=np.zeros((5, 5), bool))
    return Patient.sample(np.random.default_rng(seed), lat)


def _plane(center: np.ndarray, u: np.ndarray, v: np.ndarray, half: float = 14.0, step: float = 0.25) -> np.ndarray:
    g = np.arange(-half, half + 1e-9, step)
    a, b = np.meshgrid(g, g, indexing="ij")
    return center + a.reshape(-1, 1) * u + b.reshape(-1, 1) * v


def test_spine_coordinates_round_trip():
    p = _patient(0, None)
    rng = np.random.default_rng(1)
    sdl = np.stack([rng.uniform(-120, 120, 50), rng.uniform(-60, 80, 50), rng.uniform(-70, 70, 50)], 1)
    world = np.stack([p.to_world(*row) for row in sdl])
    s, d, lx = p.spine_coords(world)
    assert np.allclose(np.stack([s, d, lx], 1), sdl, atol=1e-9)
    # Tangent and posterior directions are orthonormal and the posterior one points to +y near the apex.
    t, n = p.tangent(0.0), p.posterior(0.0)
    assert abs(t @ n) < 1e-12 and n[1] > 0.99


def _foramen_fat_area(p: Patient, side: str) -> float:
    disc = LEVEL_DISC["l4_l5"]
    c = p.foramen_center(disc, side)
    s0 = p.s_disc[disc]
    pts = _plane(c, p.tangent(s0), p.posterior(s0))
    t1 = p.render(pts, "T1", 0.25)
    return float((t1 > 0.8).sum()) * 0.25**2  # mm^2 of fat-bright T1 signal


@pytest.mark.parametrize("seed", [0, 3])
def test_foraminal_severity_shrinks_that_sides_foramen(seed: int):
    base = _patient(seed, None)
    sick = _patient(seed, "left_neural_foraminal_narrowing")
    assert _foramen_fat_area(sick, "left") < 0.6 * _foramen_fat_area(base, "left")
    assert _foramen_fat_area(sick, "right") == pytest.approx(_foramen_fat_area(base, "right"), rel=0.15)


def _recess_csf_area(p: Patient, side: str) -> float:
    disc = LEVEL_DISC["l4_l5"]
    c = p.recess_center(disc, side)
    s0 = p.s_disc[disc]
    pts = _plane(c, np.array([1.0, 0.0, 0.0]), p.posterior(s0), half=5.0)
    t2 = p.render(pts, "T2", 0.25)
    return float((t2 > 0.9).sum()) * 0.25**2


def test_subarticular_severity_narrows_that_sides_recess():
    base = _patient(1, None)
    sick = _patient(1, "right_subarticular_stenosis")
    assert _recess_csf_area(sick, "right") < 0.5 * _recess_csf_area(base, "right")
    assert _recess_csf_area(sick, "left") == pytest.approx(_recess_csf_area(base, "left"), rel=0.15)


def test_canal_severity_narrows_only_its_level():
    base = _patient(2, None)
    sick = _patient(2, "spinal_canal_stenosis", "l3_l4")
    i34, i45 = LEVEL_DISC["l3_l4"], LEVEL_DISC["l4_l5"]
    assert sick.canal_ap_at(i34) < 0.55 * base.canal_ap_at(i34)
    assert sick.canal_ap_at(i45) == pytest.approx(base.canal_ap_at(i45), abs=1e-9)
