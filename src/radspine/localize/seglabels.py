"""Level points from sagittal segmentation masks (disc / spinal canal labels): localizer training data.

Public segmentation sets of real lumbar MRI (SPIDER's disc, vertebra and canal masks) carry no level names
and often no pixel spacing. This module turns a stack of sagittal label slices into what the localizer
trains on, the way a reader would: the midline slice (widest canal section), the discs on it counted up
from the sacrum (the lowest masked disc is L5/S1; the sacrum and its S1/S2 remnants are not masked as
discs), the canal point of each level in the canal straight behind its disc, and a pixel size from the
anatomy (the median distance between consecutive lumbar disc centres, ``SEGMENT_MM`` apart on average).
Numpy + scipy only, so it can be tested on synthetic masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from radspine.constants import LEVELS

# Mean distance (mm) between consecutive lumbar disc centres in adults (vertebral body ~27 mm + disc ~10 mm).
SEGMENT_MM = 37.0
# Mean anterior-posterior depth (mm) of a lumbar disc on the midline; on SPIDER's masks it measured the same
# number of pixels as the disc gap (median ratio 1.0 over 41 patients).
DISC_AP_MM = 37.0
# Consecutive disc components whose centre rows lie closer than this fraction of the median spacing are one disc.
MERGE_GAP_FRAC = 0.6
# A disc component smaller than this fraction of the median disc component is a fragment. Relative to the median,
# not the largest: a degenerated L5/S1 disc is a thin line a quarter the size of a healthy disc, and still L5/S1.
MIN_DISC_FRAC = 0.1


@dataclass
class MaskLevels:
    """Level points of one mask stack (pixel coordinates on the midline slice ``mid``).

    ``discs``/``canal``: level key → (row, col) (levels named from the lowest disc up; a level without a
    disc or without canal behind it is absent); ``n_discs``: disc components on the midline slice;
    ``gap_px``: median distance between consecutive lumbar disc centres (px); ``width_px``: median
    anterior-posterior extent of the lumbar discs (px); ``problems``: why a level is missing or estimated.
    """

    mid: int
    discs: dict[str, tuple[float, float]]
    canal: dict[str, tuple[float, float]]
    n_discs: int
    gap_px: float
    width_px: float = float("nan")
    problems: list[str] = field(default_factory=list)

    def pixel_mm(self) -> float:
        """In-plane pixel size (mm) implied by the anatomy: the geometric mean of ``SEGMENT_MM`` per median
        lumbar disc gap and ``DISC_AP_MM`` per median disc depth (two rulers: a collapsed disc shortens
        the first, a bulging one widens the second)."""
        est = [m / px for m, px in ((SEGMENT_MM, self.gap_px), (DISC_AP_MM, self.width_px)) if px > 0]
        return float(np.exp(np.mean(np.log(est)))) if est else float("nan")


def midline_slice(masks: np.ndarray, canal_code: int) -> int:
    """Index of the slice with the widest canal section (3-slice running mean of the canal area)."""
    area = (masks == canal_code).reshape(len(masks), -1).sum(axis=1).astype(np.float64)
    smooth = np.convolve(area, np.ones(3) / 3.0, mode="same") if len(area) >= 3 else area
    return int(np.argmax(smooth))


def disc_centres(mask2d: np.ndarray, disc_code: int) -> list[tuple[float, float, np.ndarray, float]]:
    """Disc components of one slice, head to feet: (row, col, unit AP axis pointing posterior = +col,
    extent along that axis in px).

    Fragments (< ``MIN_DISC_FRAC`` of the median component) are dropped; components whose rows overlap, or whose centre
    rows lie closer than ``MERGE_GAP_FRAC`` of the median spacing, are merged, so a disc split by a mask seam
    counts once.
    """
    lab, n = ndimage.label(mask2d == disc_code)
    if n == 0:
        return []
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    keep = [k + 1 for k in range(n) if sizes[k] >= MIN_DISC_FRAC * np.median(sizes)]
    pix = [np.argwhere(lab == k).astype(np.float64) for k in keep]
    pix.sort(key=lambda p: p[:, 0].mean())
    # Pieces of one disc (split by a mask seam) overlap in rows; neighbouring discs never do (a body lies between).
    merged = pix[:1]
    for p in pix[1:]:
        if p[:, 0].min() <= merged[-1][:, 0].max():
            merged[-1] = np.concatenate([merged[-1], p])
        else:
            merged.append(p)
    # Pieces of one tilted disc can also sit one above the other without overlapping: centres closer than
    # ``MERGE_GAP_FRAC`` of the median spacing are one disc (no two real discs lie that close).
    if len(merged) > 2:
        rows = np.array([p[:, 0].mean() for p in merged])
        near = np.diff(rows) < MERGE_GAP_FRAC * float(np.median(np.diff(rows)))
        pix = [merged[0]]
        for p, join in zip(merged[1:], near, strict=True):
            pix[-1] = np.concatenate([pix[-1], p]) if join else pix[-1]
            if not join:
                pix.append(p)
    else:
        pix = merged
    out = []
    for p in pix:
        c = p.mean(axis=0)
        # The disc's long axis (largest principal component) runs anterior-posterior; orient it posterior.
        w, v = np.linalg.eigh(np.cov((p - c).T) if len(p) > 2 else np.eye(2))
        ax = v[:, int(np.argmax(w))]
        ax = ax if ax[1] >= 0 else -ax
        along = (p - c) @ ax
        out.append((float(c[0]), float(c[1]), ax / np.linalg.norm(ax), float(np.ptp(along)) + 1.0))
    return out


def canal_behind(mask2d: np.ndarray, canal_code: int, disc: tuple, max_px: float) -> tuple[float, float] | None:
    """Centre of the first canal run met walking posterior along the disc's AP axis; the run must start within
    ``max_px`` of the disc centre (it may end beyond)."""
    r0, c0, ax = disc[:3]
    steps = np.arange(0.0, 3.0 * max_px, 0.5)
    rr = np.rint(r0 + steps * ax[0]).astype(int)
    cc = np.rint(c0 + steps * ax[1]).astype(int)
    ok = (rr >= 0) & (rr < mask2d.shape[0]) & (cc >= 0) & (cc < mask2d.shape[1])
    inside = np.zeros(len(steps), bool)
    inside[ok] = mask2d[rr[ok], cc[ok]] == canal_code
    idx = np.flatnonzero(inside)
    if idx.size == 0 or steps[idx[0]] > max_px:
        return None
    run_end = idx[0]
    while run_end + 1 < len(inside) and inside[run_end + 1]:
        run_end += 1
    t = 0.5 * (steps[idx[0]] + steps[run_end])
    return float(r0 + t * ax[0]), float(c0 + t * ax[1])


def mask_levels(masks: np.ndarray, disc_code: int, canal_code: int, band: int = 2) -> MaskLevels:
    """Level points of a sagittal label stack (S, R, C): see :class:`MaskLevels`.

    Discs are found on the union of the disc masks of the midline slice and ``band`` slices either side (a
    disc left unmasked on the midline slice is usually masked beside it) and named from the lowest up
    (L5/S1, L4/L5, …). A gap between consecutive discs of about k median gaps (k ≥ 2) means k − 1 discs are
    missing from the masks: the count skips them, so the discs above keep their true names, and the
    missing levels are absent. The canal point of a level is searched up to one disc gap behind the disc
    centre; where the canal mask stops short (a mask ending above the sacrum), it is placed at the study's
    median disc-to-canal distance along that disc's axis (``problems`` says so).
    """
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    mid = midline_slice(masks, canal_code)
    lo, hi = max(0, mid - band), min(len(masks), mid + band + 1)
    union = np.where((masks[lo:hi] == disc_code).any(axis=0), disc_code, 0)
    discs = disc_centres(union, disc_code)
    if len(discs) < 2:
        return MaskLevels(mid, {}, {}, len(discs), float("nan"), problems=[f"{len(discs)} disc(s) near the midline slice"])
    cents = np.array([d[:2] for d in discs])
    steps = np.linalg.norm(np.diff(cents, axis=0), axis=1)
    gap = float(np.median(steps[-(len(LEVELS) - 1):]))
    # Rank of each disc counted from the lowest (0 = L5/S1), skipping discs missing from the masks.
    rank = np.zeros(len(discs), int)
    for i in range(len(discs) - 2, -1, -1):
        rank[i] = rank[i + 1] + max(1, int(round(steps[i] / gap)))
    problems: list[str] = []
    named: dict[str, tuple] = {}
    for d, k in zip(discs, rank, strict=True):
        if k < len(LEVELS):
            named[LEVELS[len(LEVELS) - 1 - k]] = d
    for lv in LEVELS:
        if lv not in named and rank.max() >= LEVELS[::-1].index(lv):
            problems.append(f"{lv}: disc not masked")
    lumbar = [named[lv] for lv in LEVELS if lv in named]
    if len(lumbar) >= 2:
        lc = np.array([d[:2] for d in lumbar])
        gap = float(np.median(np.linalg.norm(np.diff(lc, axis=0), axis=1) / np.maximum(1, np.diff(
            [LEVELS.index(lv) for lv in LEVELS if lv in named]))))
    canal: dict[str, tuple[float, float]] = {}
    depth: list[float] = []
    for lv, d in named.items():
        pt = canal_behind(masks[mid], canal_code, d, gap)
        if pt is not None:
            canal[lv] = pt
            depth.append(float(np.hypot(pt[0] - d[0], pt[1] - d[1])))
    for lv, (r, c, ax, _) in named.items():
        if lv in canal:
            continue
        if len(depth) >= 2:
            t = float(np.median(depth))
            canal[lv] = (r + t * ax[0], c + t * ax[1])
            problems.append(f"{lv}: canal mask stops short, point placed at the median disc-to-canal distance")
        else:
            problems.append(f"{lv}: no canal behind the disc")
    if rank.max() < len(LEVELS) - 1:
        problems.append(f"only {rank.max() + 1} disc levels: the upper lumbar levels are absent")
    order = [lv for lv in LEVELS if lv in named]
    return MaskLevels(mid, {lv: (named[lv][0], named[lv][1]) for lv in order},
                      {lv: canal[lv] for lv in LEVELS if lv in canal}, len(discs), gap,
                      float(np.median([d[3] for d in lumbar])), problems)  # fmt: skip
