"""Masks of the narrowed structures (dural sac, neural foramen, lateral recess) segmented from the patch.

Every mask is grown on one resampled, robust-normalised patch plane (:class:`radspine.patches.Patch`,
millimetre spacing known) from seeds at/near the level point, with SimpleITK's ``ConnectedThreshold``.
The threshold is a fraction of a *bright reference* measured in the patch itself (a high percentile of
the lightly smoothed plane within a few millimetres of the point), so no absolute intensity is used:

* dural sac / CSF column (axial T2, mid-sagittal T2): CSF is the brightest tissue on T2; the fraction
  sits between CSF and epidural fat (fat is bright on fast spin-echo T2 too, ~0.8 of CSF), so the sac
  does not leak into the epidural fat and from there into the foramina;
* neural foramen (para-sagittal T1): the bright perineural fat around the dark root;
* lateral recess (axial T2): the CSF-bright space around the traversing root, with the point on the root.

Holes (nerve roots, cord, CSF flow voids) are filled: they lie inside the structure. The mask is bounded
by the patch (pixels that the patch grid sampled inside the volume) and by a disc of ``bound_mm`` around
the point; reaching that bound is a leak. Nothing here raises for image content: a constant patch, a dark
neighbourhood or a point outside the image give an empty mask and a flag.

Patch axes: a patch keeps its acquisition's in-plane axes (:mod:`radspine.patches`). DICOM axial
acquisitions run rows anterior→posterior and sagittal ones columns anterior→posterior (or reversed,
which no measurement here depends on); :data:`AP_AXIS` records that convention.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from radspine.patches import Patch

log = logging.getLogger(__name__)

__all__ = [
    "AP_AXIS",
    "FLAGS",
    "MaskConfig",
    "StructureSpec",
    "StructureMask",
    "segment",
    "dural_sac_mask",
    "foramen_mask",
    "recess_mask",
    "convex_hull",
]

Plane = Literal["axial", "sagittal"]
# Patch array axis that runs anterior-posterior, per acquisition plane (see the module docstring).
AP_AXIS: dict[str, int] = {"axial": 0, "sagittal": 1}

FLAGS: dict[str, str] = {
    "": "ok",
    "no patch": "no patch for this structure (series missing or point too far from a slice)",
    "outside image": "the point lies where the patch grid left the volume",
    "constant patch": "the patch plane has no contrast around the point",
    "empty": "nothing near the point is bright enough relative to the patch",
    "leak": "the region reached the bound around the point (merged with neighbouring tissue)",
    "touches border": "the region reached the edge of the patch or of the imaged volume",
    "too small": "the region is smaller than the structure's minimum area",
}


class StructureSpec(BaseModel):
    """Segmentation settings of one structure (lengths in mm, fractions of the bright reference)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    smooth_mm: float = Field(0.6, ge=0, description="Gaussian sigma before thresholding (noise)")
    ref_radius_mm: float = Field(8.0, gt=0, description="window around the point for the bright reference")
    ref_percentile: float = Field(95.0, gt=50, le=100, description="percentile of that window = bright reference")
    seed_radius_mm: float = Field(3.0, gt=0, description="bright pixels within this distance seed the region")
    threshold: float = Field(0.8, gt=0, lt=1, description="core region = pixels >= threshold x reference")
    dark_percentile: float = Field(5.0, ge=0, lt=50, description="percentile of the window = dark surroundings")
    edge_level: float = Field(0.5, gt=0, lt=1, description="edge between dark and reference (0.5 = half maximum)")
    grow_mm: float = Field(1.5, ge=0, description="the core extends to the edge level by at most this distance")
    convex: bool = Field(False, description="replace the region by its convex hull (roots lying on the wall)")
    leak_at_bound: bool = Field(True, description="reaching the bound disc flags a leak (else it only crops)")
    min_contrast: float = Field(1.5, gt=1, description="reference must exceed the plane's median by this factor")
    bound_mm: float = Field(20.0, gt=0, description="radius around the point the region may occupy")
    band_mm: float | None = Field(None, gt=0, description="sagittal column: half-height of the band kept along rows")
    close_mm: float = Field(1.5, ge=0, description="closing radius (roots touching the wall)")
    min_area_mm2: float = Field(4.0, ge=0, description="smaller regions are flagged 'too small'")


def _sac_axial() -> StructureSpec:
    return StructureSpec(seed_radius_mm=6.0, bound_mm=20.0)


def _sac_sagittal() -> StructureSpec:
    # A sagittal CSF column runs through the whole patch: keep a band of rows around the level and only
    # an anterior-posterior escape (into the disc or the posterior fat) counts as a leak.
    return StructureSpec(seed_radius_mm=6.0, bound_mm=20.0, band_mm=12.0)


def _foramen() -> StructureSpec:
    # Foraminal fat on T1 is bright against bone, disc and muscle (~0.3-0.6 of fat): a lower fraction.
    # The root (~2-3 mm) often touches the fat window's wall: a wider closing keeps it inside.
    return StructureSpec(threshold=0.7, ref_radius_mm=6.0, seed_radius_mm=3.0, bound_mm=18.0, close_mm=2.5)


def _recess() -> StructureSpec:
    # The point sits on the dark traversing root: seeds come from the CSF ring around it.
    # It opens into the sac, so the bound only crops (no leak flag).
    return StructureSpec(ref_radius_mm=6.0, seed_radius_mm=4.0, bound_mm=7.0, close_mm=1.0, min_area_mm2=2.0,
                         leak_at_bound=False)


class MaskConfig(BaseModel):
    """Segmentation settings per structure; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sac_axial: StructureSpec = Field(default_factory=_sac_axial)
    sac_sagittal: StructureSpec = Field(default_factory=_sac_sagittal)
    foramen: StructureSpec = Field(default_factory=_foramen)
    recess: StructureSpec = Field(default_factory=_recess)


@dataclass(frozen=True)
class StructureMask:
    """A segmented structure on one patch plane.

    ``mask`` (H, W) bool; ``flag`` "" when usable, else a key of :data:`FLAGS` (the mask may still hold the
    bounded region of a leak, for inspection); ``reference`` the bright reference intensity (NaN when
    none); ``smoothed`` the plane the region was grown on; ``spacing`` (row, column) mm; ``center`` the
    point's (row, column) index; ``plane`` "axial" or "sagittal".
    """

    mask: np.ndarray
    flag: str
    reference: float
    smoothed: np.ndarray
    spacing: tuple[float, float]
    center: tuple[float, float]
    plane: str

    @property
    def ok(self) -> bool:
        """True when the mask is usable for measurements."""
        return self.flag == ""

    @property
    def area_mm2(self) -> float:
        """Pixel area of the mask (mm²)."""
        return float(self.mask.sum()) * self.spacing[0] * self.spacing[1]


def _plane(patch: Patch, slice_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    k = patch.image.shape[0] // 2 if slice_index is None else int(slice_index)
    return np.asarray(patch.image[k], dtype=np.float32), np.asarray(patch.inside[k], dtype=bool)


def _empty(shape: tuple[int, ...], flag: str, smoothed: np.ndarray, spacing, center, plane, ref=np.nan):
    return StructureMask(np.zeros(shape, bool), flag, float(ref), smoothed, spacing, center, plane)


def _disk(radius_px: float) -> np.ndarray:
    r = max(int(np.floor(radius_px)), 0)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy**2 + xx**2) <= radius_px**2 + 1e-9


def convex_hull(mask: np.ndarray) -> np.ndarray:
    """The mask plus every pixel whose centre lies in the convex hull of its pixels' corners (scipy Qhull)."""
    from scipy.spatial import ConvexHull, QhullError

    edge = mask & ~ndimage.binary_erosion(mask)  # the hull only depends on the boundary pixels
    ys, xs = np.nonzero(edge)
    corners = np.concatenate([np.stack([ys + dy, xs + dx], 1) for dy in (-0.5, 0.5) for dx in (-0.5, 0.5)])
    try:
        eq = ConvexHull(corners).equations  # rows (a, b, c): inside where a*y + b*x + c <= 0
    except QhullError:  # collinear pixels: the mask is its own hull
        return mask
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    gy, gx = np.mgrid[y0:y1, x0:x1]
    pts = np.stack([gy.ravel(), gx.ravel()], 1).astype(float)
    inside = np.all(pts @ eq[:, :2].T + eq[:, 2] <= 1e-9, axis=1)
    out = mask.copy()
    out[y0:y1, x0:x1] |= inside.reshape(gy.shape)
    return out


def segment(
    patch: Patch,
    spec: StructureSpec,
    plane: Plane,
    *,
    slice_index: int | None = None,
) -> StructureMask:
    """Grow the bright structure at the patch centre on one plane (centre slice by default).

    Region growing is SimpleITK ``ConnectedThreshold`` (8-connected in 2D) on the Gaussian-smoothed
    plane, seeded by every pixel within ``seed_radius_mm`` of the point that passes the threshold, limited
    to the patch's in-volume pixels and a ``bound_mm`` disc (and, with ``band_mm``, to a band of rows);
    holes are then filled and small notches closed. Never raises for image content.
    """
    import SimpleITK as sitk

    img, inside = _plane(patch, slice_index)
    h, w = img.shape
    spacing = (float(patch.spacing[1]), float(patch.spacing[2]))
    center = ((h - 1) / 2.0, (w - 1) / 2.0)
    sig = [spec.smooth_mm / s for s in spacing]
    smooth = ndimage.gaussian_filter(img, sig, mode="nearest") if spec.smooth_mm > 0 else img.copy()
    ci, cj = int(round(center[0])), int(round(center[1]))
    if not inside[ci, cj]:
        return _empty(img.shape, "outside image", smooth, spacing, center, plane)
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.hypot((yy - center[0]) * spacing[0], (xx - center[1]) * spacing[1])
    window = inside & (dist <= spec.ref_radius_mm)
    vals = smooth[window]
    plane_vals = smooth[inside]
    if vals.size < 4 or not np.all(np.isfinite(vals)) or float(np.ptp(plane_vals)) <= 1e-6 * max(
        1.0, float(np.abs(plane_vals).max())
    ):
        return _empty(img.shape, "constant patch", smooth, spacing, center, plane)
    ref = float(np.percentile(vals, spec.ref_percentile))
    median = float(np.median(plane_vals))
    # Normalised intensities start at the series' low percentile (~air), so "bright" means a multiple of
    # the plane's median (a dark neighbourhood has no structure of this kind to segment).
    if not ref > spec.min_contrast * max(median, 1e-6):
        return _empty(img.shape, "empty", smooth, spacing, center, plane, ref)
    thr = spec.threshold * ref
    allowed = inside & (dist <= spec.bound_mm)
    if spec.band_mm is not None:
        allowed &= np.abs(yy - center[0]) * spacing[0] <= spec.band_mm
    seeds = allowed & (dist <= spec.seed_radius_mm) & (smooth >= thr)
    if not seeds.any():
        return _empty(img.shape, "empty", smooth, spacing, center, plane, ref)
    # Pixels outside the allowed area sit below the threshold so the region cannot cross them.
    grid = np.where(allowed, smooth, np.float32(thr - 1.0)).astype(np.float32)
    sitk_img = sitk.GetImageFromArray(grid)
    seed_list = [(int(x), int(y)) for y, x in zip(*np.nonzero(seeds))]  # SimpleITK indices are (x, y)
    grown = sitk.ConnectedThreshold(sitk_img, seedList=seed_list, lower=float(thr), upper=float(np.inf),
                                    replaceValue=1, connectivity=sitk.ConnectedThresholdImageFilter.FullConnectivity)
    region = sitk.GetArrayFromImage(grown).astype(bool)
    # Hysteresis: the bright core is extended to the half-maximum edge between the structure and its dark
    # surroundings (partial volume puts the true wall there), by at most grow_mm so that a bright
    # neighbour that only passes the low level (epidural or foraminal fat on T2) cannot be annexed.
    dark = float(np.percentile(vals, spec.dark_percentile))
    lo = dark + spec.edge_level * (ref - dark)
    if spec.grow_mm > 0 and lo < thr:
        steps = max(1, int(round(spec.grow_mm / min(spacing))))
        low = allowed & (smooth >= lo)
        region = ndimage.binary_dilation(region, structure=np.ones((3, 3), bool), iterations=steps, mask=low)
    # The region touching the bound disc (not the row band, which a column always crosses) is a leak.
    rim = allowed & ~ndimage.binary_erosion(inside & (dist <= spec.bound_mm), border_value=0)
    if spec.band_mm is not None:
        rim &= np.abs(yy - center[0]) * spacing[0] < spec.band_mm - spacing[0]
    if spec.close_mm > 0:
        fp = _disk(spec.close_mm / min(spacing))
        pad = fp.shape[0]
        region = ndimage.binary_closing(np.pad(region, pad), structure=fp)[pad:-pad, pad:-pad]
    region = ndimage.binary_fill_holes(region) & allowed
    if spec.convex and region.sum() >= 3:
        region = convex_hull(region) & allowed
    flag = ""
    touches_volume_edge = bool((region & ~ndimage.binary_erosion(inside, border_value=0)).any())
    if spec.leak_at_bound and bool((region & rim).any()):
        flag = "touches border" if touches_volume_edge else "leak"
    elif touches_volume_edge:
        flag = "touches border"
    elif float(region.sum()) * spacing[0] * spacing[1] < spec.min_area_mm2:
        flag = "too small"
    return StructureMask(region, flag, ref, smooth, spacing, center, plane)


def dural_sac_mask(patch: Patch, plane: Plane, cfg: MaskConfig | None = None) -> StructureMask:
    """Dural sac (CSF column) on an axial T2 or mid-sagittal T2 patch."""
    cfg = cfg or MaskConfig()
    return segment(patch, cfg.sac_axial if plane == "axial" else cfg.sac_sagittal, plane)


def foramen_mask(patch: Patch, cfg: MaskConfig | None = None) -> StructureMask:
    """Foraminal fat window (around the dark root) on a para-sagittal T1 patch."""
    cfg = cfg or MaskConfig()
    return segment(patch, cfg.foramen, "sagittal")


def recess_mask(patch: Patch, cfg: MaskConfig | None = None) -> StructureMask:
    """CSF-bright lateral recess around the traversing root on an axial T2 patch."""
    cfg = cfg or MaskConfig()
    return segment(patch, cfg.recess, "axial")
