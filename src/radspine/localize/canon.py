"""Resampling of a Volume onto canonical, world-aligned planes at fixed mm spacing.

A :class:`PlaneFrame` fixes, for one stack, a unit normal ``n`` (sign-fixed towards a world axis),
in-plane axes ``u`` (columns) and ``v`` (rows) that are the projections of chosen world axes onto
the slice plane, and an origin (the stack centre). A plane at signed offset ``d`` (mm along ``n``)
with in-plane shift ``(su, sv)`` is sampled on a ``size × width`` grid (rows × columns). Voxel lookups go through
:func:`radspine.geometry.grid_index`, so flipped or oblique acquisitions land on the same grid.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from radspine.geometry import grid_index, volume_center
from radspine.types import Volume

_AXES = {"x": np.array([1.0, 0.0, 0.0]), "y": np.array([0.0, 1.0, 0.0]), "z": np.array([0.0, 0.0, 1.0])}

# (normal reference, column axis, row axis) per canonical view; sagittal normal points to patient left.
VIEWS: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
    "sagittal": (_AXES["x"], _AXES["y"], -_AXES["z"]),
    "axial": (_AXES["z"], _AXES["x"], _AXES["y"]),
}


def robust_normalise(pixels: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """Map intensities to ~[0, 1] by robust percentiles of the whole series (scanner-scale invariant)."""
    flat = pixels.ravel()
    if flat.size > 200_000:  # a strided subsample is enough for percentiles and keeps this fast
        flat = flat[:: flat.size // 200_000]
    lo, hi = np.percentile(flat, [lo_pct, hi_pct])
    scale = float(hi - lo) if hi > lo else 1.0
    return np.clip((pixels.astype(np.float32) - np.float32(lo)) / np.float32(scale), 0.0, 1.0)


def _low_pass(pixels: np.ndarray, ratio: float) -> tuple[np.ndarray, int]:
    """In-plane anti-alias filter for sampling at ``ratio`` × the pixel spacing: (filtered pixels, factor).

    Equivalent (to the Gaussian approximation of a box) to a Gaussian of sigma 0.4·ratio px: a block mean by
    f = ⌊ratio / 1.25⌋ (variance (f² − 1) / 12 px²) and a Gaussian for the remaining variance on the f× smaller
    grid. Edge pixels that do not fill a block are dropped (under f px of a border that reads as 0 anyway).
    """
    f = max(1, int(ratio / 1.25))  # keeps (f² − 1) / 12 below the target variance for any ratio
    var = (0.4 * ratio) ** 2
    if f > 1:
        k, r, c = pixels.shape
        r, c = (r // f) * f, (c // f) * f
        pixels = pixels[:, :r, :c].reshape(k, r // f, f, c // f, f).mean(axis=(2, 4), dtype=np.float32)
        var = max(var - (f * f - 1) / 12.0, 0.0) / (f * f)
    sigma = float(np.sqrt(var))
    out = ndimage.gaussian_filter(pixels, (0, sigma, sigma), mode="nearest") if sigma > 0.3 else pixels
    return np.ascontiguousarray(out, dtype=np.float32), f


def _in_plane(ref: np.ndarray, normal: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """Unit vector of ``ref`` with its components along ``normal`` and ``others`` removed (Gram-Schmidt)."""
    vec = ref - (ref @ normal) * normal
    for o in others:
        vec = vec - (vec @ o) * o
    norm = np.linalg.norm(vec)
    if norm < 1e-6:
        raise ValueError("reference axis is parallel to the slice normal")
    return vec / norm


@dataclass(frozen=True, eq=False)
class PlaneFrame:
    """A normalised stack plus its canonical frame (see module docstring)."""

    vol: Volume
    pixels: np.ndarray  # robust-normalised copy of vol.pixels
    normal: np.ndarray
    u: np.ndarray
    v: np.ndarray
    origin: np.ndarray
    spacing: float
    size: int  # grid rows
    _blurred: dict | None = None  # spacing bin (mm) -> (low-passed pixels, block factor), shared by with_grid copies
    _factor: int = 1  # in-plane block-mean factor of ``pixels`` relative to the stack's pixel grid
    cols: int = 0  # grid columns (0 = square, ``size``)

    @property
    def width(self) -> int:
        """Grid columns (``cols``, or ``size`` for a square grid)."""
        return self.cols or self.size

    @classmethod
    def build(cls, vol: Volume, view: str, spacing: float, size: int) -> PlaneFrame:
        """Frame of ``vol`` for ``view`` ("sagittal" | "axial")."""
        n_ref, u_ref, v_ref = VIEWS[view]
        n = vol.normal.astype(np.float64)
        n = n if n @ n_ref >= 0 else -n
        u = _in_plane(u_ref, n)
        v = _in_plane(v_ref, n, u)
        return cls(vol, robust_normalise(vol.pixels), n, u, v, volume_center(vol), float(spacing), int(size))

    @property
    def offsets(self) -> np.ndarray:
        """Signed offset (mm along the frame normal) of each slice plane of the stack."""
        return (self.vol.positions - self.origin) @ self.normal

    def with_grid(self, spacing: float, size: int, cols: int = 0) -> PlaneFrame:
        """The same stack and axes sampled on another ``size`` × ``cols`` grid (0 = square; pixels shared, not
        re-normalised).

        When the grid is much coarser than the pixels (a 1024 px matrix sampled at 4 mm), the pixels are
        low-passed in-plane first so the canonical image does not alias: a block mean by an integer factor
        (cheap, and it shrinks what the Gaussian and the interpolation then touch) followed by the rest of a
        Gaussian of sigma 0.4 × (grid / pixel spacing), cached per 1 mm spacing bin and shared by copies.
        """
        cache = self._blurred if self._blurred is not None else {}
        if self._blurred is None:
            object.__setattr__(self, "_blurred", cache)
        raw = cache.setdefault("raw", (self.pixels, 1))  # set by the first (full-resolution) frame
        pix = min(self.vol.pixel_spacing)
        key = max(1, int(round(float(spacing))))
        ratio = key / max(pix, 1e-6)
        if ratio > 1.5:
            if key not in cache:
                cache[key] = _low_pass(raw[0], ratio)
            pixels, factor = cache[key]
        else:
            pixels, factor = raw
        return replace(self, pixels=pixels, spacing=float(spacing), size=int(size), cols=int(cols),
                       _blurred=cache, _factor=factor)  # fmt: skip

    def extent(self) -> tuple[float, float, float, float]:
        """In-plane extent of the stack in mm relative to the origin: (u_min, u_max, v_min, v_max)."""
        vol = self.vol
        rows, cols = vol.pixels.shape[1:]
        dr, dc = vol.pixel_spacing
        corners = []
        for pos in (vol.positions[0], vol.positions[-1]):
            for y in (0, rows - 1):
                for x in (0, cols - 1):
                    corners.append(pos + x * dc * vol.row_cosine + y * dr * vol.col_cosine)
        rel = np.asarray(corners) - self.origin
        cu, cv = rel @ self.u, rel @ self.v
        return float(cu.min()), float(cu.max()), float(cv.min()), float(cv.max())

    def offset_range(self) -> tuple[float, float]:
        """Lowest and highest slice-plane offset (mm)."""
        off = self.offsets
        return float(off.min()), float(off.max())

    def sample(self, ds: np.ndarray, shifts: np.ndarray | None = None, channel_offset: float = 0.0) -> np.ndarray:
        """Images (len(ds), 3, size, width) float32: planes at d − o, d, d + o for each offset d.

        Points farther than half a slice outside the stack, or outside the image, read as 0.
        """
        ds = np.asarray(ds, dtype=np.float64).reshape(-1)
        shifts = np.zeros((len(ds), 2)) if shifts is None else np.asarray(shifts, dtype=np.float64)
        # Each channel plane is sampled once even when neighbouring offsets share it (a scan whose plane step
        # equals the channel offset reads every plane once instead of three times).
        keys = np.array([(d + o, s[0], s[1]) for d, s in zip(ds, shifts, strict=True)
                         for o in (-channel_offset, 0.0, channel_offset)]).round(6)  # fmt: skip
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        planes = self._sample_planes(uniq[:, 0], uniq[:, 1:])
        return planes[inverse.reshape(-1)].reshape(len(ds), 3, self.size, self.width)

    def _sample_planes(self, ds: np.ndarray, shifts: np.ndarray) -> np.ndarray:
        """Single planes (len(ds), size, width) float32 at offsets ``ds`` with in-plane shifts (see :meth:`sample`)."""
        du, dv = self.spacing * self.u, self.spacing * self.v
        idx = np.stack(
            [
                grid_index(self.vol, self.origin + d * self.normal + s[0] * self.u + s[1] * self.v,
                           du, dv, self.size, self.width)  # fmt: skip
                for d, s in zip(ds, shifts, strict=True)
            ]
        )  # (..., 3) = (k, y, x)
        if self._factor > 1:  # block-mean pixels: block j covers stack pixels j·f … j·f + f − 1
            idx[..., 1:] = (idx[..., 1:] - (self._factor - 1) / 2.0) / self._factor
        n_slices = self.pixels.shape[0]
        k = idx[..., 0]
        outside = ~np.isfinite(k) | (k < -0.5) | (k > n_slices - 0.5)
        idx[..., 0] = np.clip(np.nan_to_num(k), 0, n_slices - 1)
        out = ndimage.map_coordinates(self.pixels, np.moveaxis(idx, -1, 0), order=1, mode="constant", cval=0.0)
        out[outside] = 0.0
        return out.astype(np.float32, copy=False)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """(…, 3) world points → (…, 3) = (d mm, row px, col px) on the unshifted canonical grid."""
        rel = np.asarray(points, dtype=np.float64) - self.origin
        cr, cc = (self.size - 1) / 2.0, (self.width - 1) / 2.0
        return np.stack(
            [rel @ self.normal, rel @ self.v / self.spacing + cr, rel @ self.u / self.spacing + cc], axis=-1
        )

    def to_world(self, d: float, row: float, col: float, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """World point of canonical (row, col) on the plane at offset d with centre shift (su, sv)."""
        cr, cc = (self.size - 1) / 2.0, (self.width - 1) / 2.0
        return (
            self.origin
            + d * self.normal
            + (shift[0] + (col - cc) * self.spacing) * self.u
            + (shift[1] + (row - cr) * self.spacing) * self.v
        )
