"""Acquisition presets: series geometry drawn like the real RSNA 2024 LSDC images (``preset="rsna"``).

The matrix mix is the real Sagittal T1 one (``/work/shared/reference/rsna2024_image_facts.json``, 1,978 series;
the 53 series of rarer sizes are left out). The facts hold no counts for Sagittal T2/STIR or Axial T2, so those
series draw from the same mix: an assumption, stated here so it can be replaced when real counts exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radspine.errors import ConfigError

PRESETS: tuple[str, ...] = ("rsna",)

# (columns W, rows H): count of real Sagittal T1 series.
RSNA_MATRIX_COUNTS: dict[tuple[int, int], int] = {
    (512, 512): 816, (384, 384): 348, (320, 320): 311, (256, 256): 112, (640, 760): 89, (448, 448): 80,
    (768, 852): 29, (384, 540): 26, (512, 528): 26, (768, 768): 16, (512, 544): 16, (576, 640): 14,
    (640, 640): 13, (1024, 1024): 7, (512, 568): 6, (352, 352): 6, (336, 336): 5, (320, 340): 5,
}
_MATRICES = list(RSNA_MATRIX_COUNTS)
_P = np.array([RSNA_MATRIX_COUNTS[m] for m in _MATRICES], float)
_P /= _P.sum()

SAG_FOV_MM = (260.0, 400.0)  # real sagittal FOV (longer image side)
LARGE_FOV_MM = (400.0, 450.0)  # large_fov variation under the preset
AX_FOV_MM = (170.0, 260.0)
SAG_SLICES = (15, 24)
AX_SLICES = (25, 60)


@dataclass(frozen=True)
class SeriesGeom:
    """Preset geometry of one series slot: matrix (rows, cols), FOV (mm, longer side), slice count."""

    matrix: tuple[int, int]
    fov: float
    n_slices: int


def check_preset(preset: str | None) -> None:
    """Raise ConfigError for an unknown preset name (None = the default small square phantom)."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"synth: unknown preset {preset!r} (known: {', '.join(PRESETS)})")


def draw_geoms(rng: np.random.Generator, sagittal: list[bool], matrix_scale: float = 1.0) -> list[SeriesGeom]:
    """One :class:`SeriesGeom` per slot (``sagittal[i]`` says its kind); a fixed number of draws per slot.

    ``matrix_scale`` (0 < s <= 1) shrinks the matrix and keeps the FOV (bigger pixels): tiny test phantoms of
    the same geometry.
    """
    if not 0.0 < matrix_scale <= 1.0:
        raise ConfigError(f"synth: matrix_scale {matrix_scale} must lie in (0, 1]")
    out = []
    for sag in sagittal:
        idx = int(rng.choice(len(_MATRICES), p=_P))
        u_fov, u_n = rng.random(), rng.random()
        w, h = _MATRICES[idx]
        if not sag:  # axial: the longer side runs left-right (the body is wider than deep)
            w, h = h, w
        rows, cols = (max(16, int(round(h * matrix_scale))), max(16, int(round(w * matrix_scale))))
        lo, hi = SAG_FOV_MM if sag else AX_FOV_MM
        n_lo, n_hi = SAG_SLICES if sag else AX_SLICES
        out.append(SeriesGeom((rows, cols), lo + (hi - lo) * u_fov, n_lo + int(u_n * (n_hi - n_lo + 1))))
    return out


__all__ = ["PRESETS", "RSNA_MATRIX_COUNTS", "SeriesGeom", "check_preset", "draw_geoms"]
