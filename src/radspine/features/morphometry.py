"""Named measurements in millimetres from the structure masks of :mod:`radspine.features.masks`.

One entry point per feature-table row: :func:`measure` ``(condition, patches) -> {"mor_<name>": value}``
with every name of :data:`MEASUREMENTS` (NaN where the row's family has no such measurement or it could
not be measured); :func:`measure_detailed` adds the reason of each NaN and the masks.

Definitions (patch axes as in :mod:`radspine.features.masks`):

* ``dural_sac_area_mm2``: area of the CSF-bright sac (holes = roots/cord included) on the axial T2 patch.
* ``canal_ap_mm``: anterior-posterior extent of the sac through its centre, axial T2 when measurable,
  else mid-sagittal T2; ``canal_ap_sag_mm`` always from the sagittal T2 CSF column, measured at the
  level point perpendicular to the column's local axis.
* ``foramen_area_mm2`` / ``foramen_height_mm``: area and principal-axis length (cranio-caudal) of the
  bright foraminal fat window on the row's para-sagittal T1 patch (one side per row).
* ``recess_depth_mm``: diameter of the largest CSF-bright disc centred at the traversing root (the point)
  on the axial T2 patch: the free space left around the root.
* ``disc_height_mm``: full width at half depth of the dark disc band (endplate to endplate) along the
  cranio-caudal axis, next to the canal / foramen on the row's sagittal patch.
* ``disc_csf_t2_ratio``: median disc-band intensity over median CSF intensity on sagittal T2.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from radspine.constants import CONDITION_GROUP
from radspine.features.masks import (
    AP_AXIS,
    FLAGS,
    MaskConfig,
    StructureMask,
    convex_hull,
    dural_sac_mask,
    foramen_mask,
    recess_mask,
)
from radspine.patches import Patch

__all__ = [
    "MEASUREMENTS",
    "REFERENCE_CUTOFFS",
    "MorphometryConfig",
    "MorphometryResult",
    "measure",
    "measure_detailed",
    "columns",
]

MEASUREMENTS: tuple[str, ...] = (
    "dural_sac_area_mm2",
    "canal_ap_mm",
    "canal_ap_sag_mm",
    "foramen_area_mm2",
    "foramen_height_mm",
    "recess_depth_mm",
    "disc_height_mm",
    "disc_csf_t2_ratio",
)

# Which measurements a condition family has (others are NaN, reason "not applicable").
FAMILY_MEASUREMENTS: dict[str, tuple[str, ...]] = {
    "spinal": ("dural_sac_area_mm2", "canal_ap_mm", "canal_ap_sag_mm", "disc_height_mm", "disc_csf_t2_ratio"),
    "foraminal": ("foramen_area_mm2", "foramen_height_mm", "disc_height_mm"),
    "subarticular": ("recess_depth_mm", "disc_height_mm", "disc_csf_t2_ratio"),
}

# Published cut-offs for the report (values in the units of the measurement; "below" = stenotic).
REFERENCE_CUTOFFS: dict[str, list[dict[str, object]]] = {
    "dural_sac_area_mm2": [
        {"grade": "relative central stenosis", "below": 100.0,
         "source": "Schönström et al., Spine 1985 / Hamanishi et al., Spine 1994 (CT, dural sac CSA)"},
        {"grade": "absolute central stenosis", "below": 75.0,
         "source": "Schönström et al. 1985; Hamanishi et al. 1994"},
    ],
    "canal_ap_mm": [
        {"grade": "relative stenosis", "below": 12.0, "source": "Verbiest, JBJS Br 1954 / 1977 (mid-sagittal AP)"},
        {"grade": "absolute stenosis", "below": 10.0, "source": "Verbiest 1954; Steurer et al., BMC Musculoskelet Disord 2011 (review)"},
    ],
    "recess_depth_mm": [
        {"grade": "suggestive of lateral recess stenosis", "below": 3.0,
         "source": "Ciric et al., J Neurosurg 1980 (recess height); Steurer et al. 2011 (review)"},
    ],
    "foramen_height_mm": [
        {"grade": "suggestive of foraminal stenosis", "below": 15.0,
         "source": "Hasegawa et al., JBJS Am 1995 (foraminal height, with posterior disc height < 4 mm)"},
    ],
}


class MorphometryConfig(BaseModel):
    """Morphometry settings (composed into FeaturesConfig by the integrator); unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    masks: MaskConfig = Field(default_factory=MaskConfig)
    disc_band_offset_mm: float = Field(2.0, ge=0, description="disc band starts this far from the canal/foramen wall")
    disc_band_width_mm: float = Field(8.0, gt=0, description="width of the column band the disc profile averages")
    disc_search_mm: float = Field(5.0, gt=0, description="the disc's darkest row lies within this of the point")
    disc_max_mm: float = Field(24.0, gt=0, description="a dark band taller than this is not a disc")
    recess_center_mm: float = Field(1.5, ge=0, description="the recess disc's centre may sit this far from the point")


@dataclass
class MorphometryResult:
    """Values (``mor_<name>``), a reason per NaN value, and the masks that were segmented."""

    values: dict[str, float]
    reasons: dict[str, str]
    masks: dict[str, StructureMask] = field(default_factory=dict)


def columns() -> list[str]:
    """Output columns of :func:`measure`, in order."""
    return [f"mor_{m}" for m in MEASUREMENTS]


def measure(condition: str, patches: dict[str, Patch | None], cfg: MorphometryConfig | None = None) -> dict[str, float]:
    """``mor_<name>`` values of one feature row (condition key, patches by PatchConfig spec name)."""
    return measure_detailed(condition, patches, cfg).values


def measure_detailed(
    condition: str, patches: dict[str, Patch | None], cfg: MorphometryConfig | None = None
) -> MorphometryResult:
    """Measurements of one row plus the reason of every NaN (``"not applicable"``, a mask flag, …).

    ``patches`` maps spec names (``spinal_sagittal``, ``spinal_axial``, ``foraminal``, ``subarticular``) to
    patches or None. A sagittal patch of another family may be passed too (e.g. the level's
    ``spinal_sagittal`` for a subarticular row) for the disc measurements.
    """
    if condition not in CONDITION_GROUP:
        raise ValueError(f"unknown condition {condition!r}")
    cfg = cfg or MorphometryConfig()
    fam = CONDITION_GROUP[condition]
    vals = {m: math.nan for m in MEASUREMENTS}
    why = {m: "not applicable" for m in MEASUREMENTS}
    masks: dict[str, StructureMask] = {}
    wanted = FAMILY_MEASUREMENTS[fam]
    for m in wanted:
        why[m] = "no patch"

    def seg(name: str, fn) -> StructureMask | None:
        p = patches.get(name)
        if p is None:
            return None
        masks[name] = fn(p)
        return masks[name]

    def put(name: str, value: float, reason: str = "") -> None:
        ok = reason == "" and np.isfinite(value)
        vals[name] = float(value) if ok else math.nan
        why[name] = "" if ok else (reason or "not measurable")

    sag = None
    if fam == "spinal":
        ax = seg("spinal_axial", lambda p: dural_sac_mask(p, "axial", cfg.masks))
        sag = seg("spinal_sagittal", lambda p: dural_sac_mask(p, "sagittal", cfg.masks))
        if ax is not None:
            put("dural_sac_area_mm2", ax.area_mm2, ax.flag)
            # The cauda equina lies dependently on the posterior dura with no CSF behind it: the AP line
            # runs through the sac's convex hull, which puts those roots back inside.
            hull = dataclasses.replace(ax, mask=convex_hull(ax.mask)) if ax.mask.any() else ax
            put("canal_ap_mm", _ap_through_centre(hull), ax.flag)
        if sag is not None:
            put("canal_ap_sag_mm", _ap_sagittal(sag), sag.flag)
            if not np.isfinite(vals["canal_ap_mm"]):
                put("canal_ap_mm", vals["canal_ap_sag_mm"], why["canal_ap_sag_mm"])
    elif fam == "foraminal":
        fo = seg("foraminal", lambda p: foramen_mask(p, cfg.masks))
        if fo is not None:
            put("foramen_area_mm2", fo.area_mm2, fo.flag)
            put("foramen_height_mm", _major_extent(fo), fo.flag)
    else:
        rc = seg("subarticular", lambda p: recess_mask(p, cfg.masks))
        if rc is not None:
            put("recess_depth_mm", _inscribed_diameter(rc, cfg.recess_center_mm), rc.flag)

    # Disc: the row's own sagittal patch, else any sagittal patch passed for the level.
    disc_src = "spinal_sagittal" if patches.get("spinal_sagittal") is not None else "foraminal"
    p = patches.get(disc_src)
    if p is not None:
        wall = masks.get(disc_src)
        if wall is None:
            wall = dural_sac_mask(p, "sagittal", cfg.masks) if disc_src == "spinal_sagittal" else foramen_mask(p, cfg.masks)
            masks[disc_src] = wall
        height, ratio, reason = _disc(wall, cfg)
        put("disc_height_mm", height, reason)
        if "disc_csf_t2_ratio" in wanted:
            if disc_src == "spinal_sagittal":
                put("disc_csf_t2_ratio", ratio, reason)
            else:
                why["disc_csf_t2_ratio"] = "no sagittal T2 patch"
    for m in MEASUREMENTS:
        if m not in wanted:
            vals[m], why[m] = math.nan, "not applicable"
    return MorphometryResult({f"mor_{k}": v for k, v in vals.items()}, why, masks)


# ------------------------------------------------------------------------------------ measurements
def _ap_through_centre(m: StructureMask) -> float:
    """AP extent (mm) of the mask along the AP axis, through the mask's centroid (column band of ±1 px)."""
    if not m.mask.any():
        return math.nan
    ap = AP_AXIS[m.plane]
    other = 1 - ap
    idx = np.nonzero(m.mask)
    c = int(round(float(idx[other].mean())))
    lo, hi = max(c - 1, 0), min(c + 2, m.mask.shape[other])
    band = m.mask[:, lo:hi] if other == 1 else m.mask[lo:hi, :]
    along = np.nonzero(band.any(axis=other))[0]
    if along.size == 0:
        return math.nan
    return float(along.max() - along.min() + 1) * m.spacing[ap]


def _ap_sagittal(m: StructureMask) -> float:
    """AP width (mm) of the sagittal CSF column at the point, perpendicular to the column's local axis."""
    mask = m.mask
    if not mask.any():
        return math.nan
    ci = int(round(m.center[0]))
    rows = np.nonzero(mask.any(axis=1))[0]
    if ci not in set(rows.tolist()) or rows.size < 3:
        return math.nan
    # Column axis: least-squares line through each row's mid-point (between the outermost pixels, so a
    # dark cord or root inside the column does not bias it).
    mids = np.array([(np.nonzero(mask[r])[0].min() + np.nonzero(mask[r])[0].max()) / 2.0 for r in rows])
    slope = np.polyfit(rows * m.spacing[0], mids * m.spacing[1], 1)[0]
    cols = np.nonzero(mask[ci])[0]
    width = float(cols.max() - cols.min() + 1) * m.spacing[1]
    return width * math.cos(math.atan(slope))


def _major_extent(m: StructureMask) -> float:
    """Length (mm) of the mask along its principal axis (pixel-centre extent plus one pixel)."""
    idx = np.nonzero(m.mask)
    if idx[0].size < 3:
        return math.nan
    pts = np.stack([idx[0] * m.spacing[0], idx[1] * m.spacing[1]], 1)
    pts = pts - pts.mean(0)
    _, vecs = np.linalg.eigh(np.cov(pts.T))
    proj = pts @ vecs[:, -1]
    return float(proj.max() - proj.min()) + float(np.mean(m.spacing))


def _inscribed_diameter(m: StructureMask, center_mm: float) -> float:
    """Diameter (mm) of the largest disc inside the mask centred within ``center_mm`` of the point."""
    if not m.mask.any():
        return math.nan
    edt = ndimage.distance_transform_edt(np.pad(m.mask, 1), sampling=m.spacing)[1:-1, 1:-1]
    h, w = m.mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    near = np.hypot((yy - m.center[0]) * m.spacing[0], (xx - m.center[1]) * m.spacing[1]) <= max(center_mm, 0.0)
    best = float(edt[near].max()) if near.any() else 0.0
    # The EDT measures to the nearest background pixel centre: half a pixel beyond the wall.
    return 2.0 * best - float(np.mean(m.spacing)) if best > 0 else math.nan


def _disc(wall: StructureMask, cfg: MorphometryConfig) -> tuple[float, float, str]:
    """(disc height mm, disc/CSF intensity ratio, reason) from a sagittal patch's disc band.

    The band of columns just outside the canal / foramen wall on the side where the dark band is
    clearest (anterior: the disc; the posterior side has no dark band crossing the level), averaged
    along the columns; the height is the width at half depth of that profile, tilt-corrected.
    """
    if wall.flag:
        return math.nan, math.nan, f"disc: {wall.flag}"
    img, mask = wall.smoothed, wall.mask
    sr, sc = wall.spacing
    h, w = img.shape
    ci = int(round(wall.center[0]))
    cols_in = np.nonzero(mask[ci])[0] if mask[ci].any() else np.nonzero(mask.any(axis=0))[0]
    off, width = int(round(cfg.disc_band_offset_mm / sc)), max(int(round(cfg.disc_band_width_mm / sc)), 1)
    best = None
    for side in (-1, 1):
        edge = int(cols_in.min()) - off if side < 0 else int(cols_in.max()) + off
        a, b = (edge - width, edge) if side < 0 else (edge + 1, edge + 1 + width)
        a, b = max(a, 0), min(b, w)
        if b - a < 1:
            continue
        prof = img[:, a:b].mean(axis=1)
        res = _dark_band(prof, ci, sr, cfg)
        if res is not None and (best is None or res[2] > best[2]):
            best = (*res, (a, b))
    if best is None:
        return math.nan, math.nan, "no disc band"
    lo, hi, _, (a, b) = best
    height = (hi - lo) * sr
    # Tilt of the column (same line fit as the AP width) stretches a cranio-caudal profile.
    rows = np.nonzero(mask.any(axis=1))[0]
    if rows.size >= 3:
        mids = np.array([(np.nonzero(mask[r])[0].min() + np.nonzero(mask[r])[0].max()) / 2.0 for r in rows])
        height *= math.cos(math.atan(np.polyfit(rows * sr, mids * sc, 1)[0]))
    r0, r1 = int(math.ceil(lo)), int(math.floor(hi))
    band = img[r0 : r1 + 1, a:b]
    csf = float(np.median(img[mask])) if mask.any() else math.nan
    ratio = float(np.median(band)) / csf if band.size and csf > 0 else math.nan
    return height, ratio, ""


def _dark_band(prof: np.ndarray, ci: int, sr: float, cfg: MorphometryConfig) -> tuple[float, float, float] | None:
    """(lower, upper) sub-pixel rows of the dark band at ``ci`` and its relative depth, or None."""
    n = prof.size
    k = max(int(round(cfg.disc_search_mm / sr)), 1)
    lo_i, hi_i = max(ci - k, 0), min(ci + k + 1, n)
    if hi_i - lo_i < 1:
        return None
    m = lo_i + int(np.argmin(prof[lo_i:hi_i]))
    bottom = float(prof[m])
    reach = int(round(cfg.disc_max_mm / sr))

    def crossing(step: int) -> tuple[float, float] | None:
        peak = bottom
        j = m
        while 0 <= j + step < n and abs(j + step - m) <= reach:
            j += step
            peak = max(peak, float(prof[j]))
        if peak <= bottom:
            return None
        level = (bottom + peak) / 2.0
        j = m
        while 0 <= j + step < n and abs(j + step - m) <= reach:
            if prof[j + step] >= level:
                frac = (level - prof[j]) / (prof[j + step] - prof[j])
                return j + step * frac, peak
            j += step
        return None

    up, down = crossing(-1), crossing(1)
    if up is None or down is None:
        return None
    depth = (min(up[1], down[1]) - bottom) / max(min(up[1], down[1]), 1e-6)
    return up[0], down[0], depth


_ = FLAGS  # re-exported vocabulary of mask flags (reasons use the same words)
