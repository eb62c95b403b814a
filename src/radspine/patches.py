"""Millimetre-based patches around level points, with an ROI mask for radiomics.

A patch is sampled on a regular grid laid out along the *volume's own* in-plane axes
(``row_cosine`` for columns, ``col_cosine`` for rows) at a fixed target spacing, so a millimetre
means the same on every scanner and the patch keeps the acquisition's orientation (a sagittal
patch stays sagittal, an oblique axial stays oblique). Neighbouring slices are taken at
``±slice_step_mm`` along the slice normal. All world ↔ index math goes through
:func:`radspine.geometry.continuous_index`.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy import ndimage

from radspine.constants import AX_T2, CONDITION_GROUP, SAG_T1, SAG_T2, SERIES_TYPES
from radspine.geometry import continuous_index
from radspine.types import Volume

log = logging.getLogger(__name__)

__all__ = [
    "PatchSpec",
    "PatchConfig",
    "Patch",
    "extract_patch",
    "intensity_range",
    "normalize_volume",
    "jitter_points",
    "roi_mask",
]


class PatchSpec(BaseModel):
    """How to crop one condition family's patch from one series type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    series: str = Field(description="series type the patch is cut from (constants.SERIES_TYPES)")
    size_mm: tuple[float, float] = Field((48.0, 48.0), description="patch (height, width) in mm")
    neighbors: int = Field(0, ge=0, le=8, description="slices on each side of the centre slice")
    slice_step_mm: float = Field(3.5, gt=0, description="distance between patch slices along the normal")
    spacing_mm: float = Field(0.75, gt=0, description="target in-plane pixel spacing")
    roi_shape: Literal["ellipse", "rectangle"] = "ellipse"
    roi_size_mm: tuple[float, float] = Field((24.0, 24.0), description="ROI (height, width) in mm")

    @field_validator("series")
    @classmethod
    def _known_series(cls, v: str) -> str:
        if v not in SERIES_TYPES:
            raise ValueError(f"series must be one of {SERIES_TYPES}, got {v!r}")
        return v

    @field_validator("size_mm", "roi_size_mm")
    @classmethod
    def _positive(cls, v: tuple[float, float]) -> tuple[float, float]:
        if min(v) <= 0:
            raise ValueError(f"sizes must be > 0 mm, got {v}")
        return v

    @property
    def n_slices(self) -> int:
        """Number of slices in the patch (centre ± neighbors)."""
        return 2 * self.neighbors + 1

    @property
    def shape(self) -> tuple[int, int, int]:
        """Patch array shape (n_slices, H, W)."""
        h = max(1, int(round(self.size_mm[0] / self.spacing_mm)))
        w = max(1, int(round(self.size_mm[1] / self.spacing_mm)))
        return self.n_slices, h, w


class PatchConfig(BaseModel):
    """Patch settings of every condition family; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spinal_sagittal: PatchSpec = PatchSpec(
        series=SAG_T2, size_mm=(48.0, 48.0), neighbors=2, slice_step_mm=3.5, roi_size_mm=(16.0, 24.0)
    )
    spinal_axial: PatchSpec = PatchSpec(
        series=AX_T2, size_mm=(48.0, 48.0), neighbors=1, slice_step_mm=4.0, roi_size_mm=(20.0, 20.0)
    )
    # 36 mm at 0.5625 mm (64 px), chosen on real CV (benchmarks/real_nfn_cv.py, RSNA foraminal dev set, 3 folds):
    # merged 0.594 -> 0.585, radiomics + morphometry 0.608 -> 0.601, CNN alone 0.652 -> 0.649 against 48 mm at
    # 0.75 mm; on one split the CNN alone went 0.760 / 0.743 / 0.718 / 0.692x the prior for 96 / 72 / 48 / 36 mm.
    # 28 mm at 48 px scored the same merged (0.529) in 28 instead of 33 min, but the disc-height measurement
    # needs the vertebral bodies around the disc: at 28 mm it stopped tracking the phantom's truth
    # (Spearman 0.43, tests/features/test_morphometry.py), so the patch stays 36 mm.
    foraminal: PatchSpec = PatchSpec(
        series=SAG_T1, size_mm=(36.0, 36.0), spacing_mm=0.5625, neighbors=2, slice_step_mm=3.5,
        roi_size_mm=(20.0, 16.0),
    )
    subarticular: PatchSpec = PatchSpec(
        series=AX_T2, size_mm=(48.0, 48.0), neighbors=1, slice_step_mm=4.0, roi_size_mm=(16.0, 16.0)
    )
    percentiles: tuple[float, float] = (1.0, 99.0)
    jitter_sigma_mm: float = Field(0.0, ge=0, description="training-time point jitter (0 = off)")
    jitter_through_plane: bool = Field(
        False, description="also jitter along the patch series' slice normal; false = only within the slice plane"
    )

    @field_validator("percentiles")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] < v[1] <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lo < hi <= 100, got {v}")
        return v

    def specs_for(self, condition: str) -> dict[str, PatchSpec]:
        """Named specs used for a condition key, e.g. ``{"spinal_sagittal": ..., "spinal_axial": ...}``."""
        group = CONDITION_GROUP[condition]
        if group == "spinal":
            return {"spinal_sagittal": self.spinal_sagittal, "spinal_axial": self.spinal_axial}
        if group == "foraminal":
            return {"foraminal": self.foraminal}
        return {"subarticular": self.subarticular}


@dataclass(frozen=True, eq=False)
class Patch:
    """A resampled, normalised crop.

    ``image`` (n_slices, H, W) float32, 0 where the grid left the volume; ``mask`` (H, W) uint8 ROI of
    the centre slice restricted to pixels inside the volume; ``inside`` (n_slices, H, W) bool.
    ``spacing`` is (slice step, row, column) in mm.
    """

    image: np.ndarray
    mask: np.ndarray
    inside: np.ndarray
    inside_fraction: float
    spacing: tuple[float, float, float]
    center_world: np.ndarray

    @property
    def mask3d(self) -> np.ndarray:
        """ROI repeated over slices and restricted to in-volume voxels, (n_slices, H, W) uint8."""
        return (self.mask[None].astype(bool) & self.inside).astype(np.uint8)


# Percentile ranges cached per Volume object: computing them once per series keeps 25 patches cheap.
_RANGE_CACHE: weakref.WeakKeyDictionary[Volume, dict[tuple[float, float], tuple[float, float]]] = (
    weakref.WeakKeyDictionary()
)


_PERCENTILE_SAMPLE = 1_000_000


def _prime_at_least(n: int) -> int:
    """The smallest prime ≥ n (n small: a stride)."""
    n = max(int(n), 2)
    while any(n % d == 0 for d in range(2, int(n**0.5) + 1)):
        n += 1
    return n


def intensity_range(vol: Volume, percentiles: tuple[float, float] = (1.0, 99.0)) -> tuple[float, float]:
    """Robust (lo, hi) intensities of a volume (percentiles of its finite voxels), cached per volume.

    A flat volume gets ``hi = lo + 1`` so normalisation never divides by zero.
    """
    per_vol = _RANGE_CACHE.setdefault(vol, {})
    key = (float(percentiles[0]), float(percentiles[1]))
    if key not in per_vol:
        px = np.asarray(vol.pixels, dtype=np.float32).ravel()
        if px.size > 2 * _PERCENTILE_SAMPLE:
            # A prime stride (never a multiple of a row length) over ≥ 1M voxels pins the 1st/99th
            # percentiles far below a grey level, at a fifth of the cost on a 512² × 80 stack.
            px = px[:: _prime_at_least(px.size // _PERCENTILE_SAMPLE)]
        finite = px[np.isfinite(px)]
        if finite.size == 0:
            lo, hi = 0.0, 1.0
        else:
            lo, hi = (float(v) for v in np.percentile(finite, key))
        if not hi > lo:
            log.info("series %s: flat intensities (%.3g); normalising with unit range", vol.series_id, lo)
            hi = lo + 1.0
        per_vol[key] = (lo, hi)
    return per_vol[key]


def normalize_volume(vol: Volume, percentiles: tuple[float, float] = (1.0, 99.0)) -> Volume:
    """A copy of ``vol`` with pixels mapped linearly so the percentiles become 0 and 1 (not clipped)."""
    import dataclasses

    lo, hi = intensity_range(vol, percentiles)
    pixels = ((np.asarray(vol.pixels, dtype=np.float32) - lo) / (hi - lo)).astype(np.float32)
    meta = dict(vol.meta, intensity_range=(lo, hi), normalized=True)
    out = dataclasses.replace(vol, pixels=pixels, meta=meta)
    _RANGE_CACHE[out] = {(float(percentiles[0]), float(percentiles[1])): (0.0, 1.0)}
    return out


def roi_mask(spec: PatchSpec) -> np.ndarray:
    """The spec's ROI on the (H, W) patch grid, centred, uint8 (1 inside)."""
    _, h, w = spec.shape
    r = (np.arange(h) - (h - 1) / 2.0) * spec.spacing_mm
    c = (np.arange(w) - (w - 1) / 2.0) * spec.spacing_mm
    rr, cc = np.meshgrid(r, c, indexing="ij")
    a, b = spec.roi_size_mm[0] / 2.0, spec.roi_size_mm[1] / 2.0
    if spec.roi_shape == "ellipse":
        m = (rr / a) ** 2 + (cc / b) ** 2 <= 1.0
    else:
        m = (np.abs(rr) <= a) & (np.abs(cc) <= b)
    return m.astype(np.uint8)


def patch_grid(vol: Volume, center_world: np.ndarray, spec: PatchSpec) -> np.ndarray:
    """World coordinates (n_slices, H, W, 3) of the patch voxels, laid out on the volume's own axes."""
    n, h, w = spec.shape
    center = np.asarray(center_world, dtype=np.float64).reshape(3)
    s = (np.arange(n) - spec.neighbors) * spec.slice_step_mm
    r = (np.arange(h) - (h - 1) / 2.0) * spec.spacing_mm
    c = (np.arange(w) - (w - 1) / 2.0) * spec.spacing_mm
    return (
        center
        + s[:, None, None, None] * vol.normal
        + r[None, :, None, None] * np.asarray(vol.col_cosine, dtype=np.float64)
        + c[None, None, :, None] * np.asarray(vol.row_cosine, dtype=np.float64)
    )


def extract_patch(
    vol: Volume,
    center_world: np.ndarray,
    spec: PatchSpec,
    *,
    percentiles: tuple[float, float] = (1.0, 99.0),
    order: int = 1,
) -> Patch:
    """Resample a normalised patch of ``spec`` centred on a world point.

    Trilinear interpolation (``order=1``) between voxel centres and slice planes; the parts of the
    grid outside the stack are 0 after normalisation and reported through ``inside_fraction``
    (a flag for the caller, not an error).
    """
    center = np.asarray(center_world, dtype=np.float64).reshape(3)
    if not np.all(np.isfinite(center)):
        raise ValueError(f"series {vol.series_id}: patch centre is not finite: {center}")
    lo, hi = intensity_range(vol, percentiles)
    grid = patch_grid(vol, center, spec)
    idx = continuous_index(vol, grid.reshape(-1, 3))  # (N, 3) as (k, y, x)
    px = np.asarray(vol.pixels, dtype=np.float32)
    # mode="constant" (not "grid-constant") returns cval for every sample outside the voxel-centre
    # hull and interpolates only between real voxels inside it, so NaN marks exactly the outside.
    coords = np.nan_to_num(idx.T, nan=-1e6)
    vals = ndimage.map_coordinates(px, coords, order=order, mode="constant", cval=np.nan, prefilter=order > 1)
    vals = vals.reshape(spec.shape)
    inside = np.isfinite(vals)
    image = np.where(inside, (vals - lo) / (hi - lo), 0.0).astype(np.float32)
    mask = (roi_mask(spec).astype(bool) & inside[spec.neighbors]).astype(np.uint8)
    return Patch(
        image=image,
        mask=mask,
        inside=inside,
        inside_fraction=float(inside.mean()),
        spacing=(float(spec.slice_step_mm), float(spec.spacing_mm), float(spec.spacing_mm)),
        center_world=center,
    )


def jitter_points(
    points_world: np.ndarray, sigma_mm: float, rng: np.random.Generator, plane: tuple[Any, Any] | None = None
) -> np.ndarray:
    """Points (…, 3) plus Gaussian noise of ``sigma_mm`` per axis (train/test skew simulation).

    ``plane``: two orthonormal world directions (a volume's row and column cosines); the noise then stays in
    that plane, so a patch cut at the jittered point still samples the labelled slice instead of a blend of
    it and its neighbour.
    """
    pts = np.asarray(points_world, dtype=np.float64)
    if pts.shape[-1] != 3:
        raise ValueError(f"points must have shape (..., 3), got {pts.shape}")
    if sigma_mm < 0:
        raise ValueError(f"sigma_mm must be >= 0, got {sigma_mm}")
    if sigma_mm == 0:
        return pts.copy()
    if plane is None:
        return pts + rng.normal(0.0, sigma_mm, size=pts.shape)
    axes = np.asarray(plane, dtype=np.float64).reshape(2, 3)
    return pts + rng.normal(0.0, sigma_mm, size=(*pts.shape[:-1], 2)) @ axes
