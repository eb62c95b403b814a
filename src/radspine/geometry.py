"""All voxel ↔ world geometry (DICOM LPS, mm) in one place.

Conventions: a point in a series is ``(x, y, k)`` = (column, row, slice index), or
``(x, y, instance_number)`` for label files. Patient left is +x in LPS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radspine.types import Volume


@dataclass(frozen=True)
class Projection:
    """A world point projected into a series: nearest slice and in-plane pixel position."""

    slice_index: int
    instance_number: int
    x: float  # column
    y: float  # row
    distance_mm: float  # signed distance of the point from that slice's plane, along the normal


def pixel_to_world(vol: Volume, x: float | np.ndarray, y: float | np.ndarray, k: int | np.ndarray) -> np.ndarray:
    """World point(s) (…, 3) of pixel column x, row y on slice index k (integer slices)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    k = np.asarray(k, dtype=np.int64)
    row_mm, col_mm = vol.pixel_spacing
    origin = vol.positions[k]
    return (
        origin
        + (x * col_mm)[..., None] * vol.row_cosine
        + (y * row_mm)[..., None] * vol.col_cosine
    )


def instance_to_world(vol: Volume, x: float, y: float, instance_number: int) -> np.ndarray:
    """World point of a label (x, y on InstanceNumber)."""
    return pixel_to_world(vol, x, y, vol.slice_index(instance_number))


def continuous_index(vol: Volume, points: np.ndarray) -> np.ndarray:
    """Continuous array index (k, y, x) of world point(s) (…, 3), for interpolation.

    k is interpolated between slice planes (handles uneven spacing); in-plane position is
    taken relative to slice 0's origin projected along the normal, which is exact for a stack
    of parallel slices sharing one in-plane grid.
    """
    pts = np.asarray(points, dtype=np.float64)
    row_mm, col_mm = vol.pixel_spacing
    k = slice_coordinate(vol, pts @ vol.normal)
    rel = pts - vol.positions[0]
    x = rel @ vol.row_cosine / col_mm
    y = rel @ vol.col_cosine / row_mm
    return np.stack([k, y, x], axis=-1)


def grid_index(vol: Volume, centre: np.ndarray, du: np.ndarray, dv: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """Continuous index (n_rows, n_cols, 3) = (k, y, x) of the planar grid ``centre + (c − c0)·du + (r − r0)·dv``
    (r0, c0 = the grid's centre pixel), equal to :func:`continuous_index` of its world points but computed
    per axis by broadcasting, without materialising the (rows, cols, 3) world points."""
    centre, du, dv = (np.asarray(a, dtype=np.float64) for a in (centre, du, dv))
    cs = np.arange(n_cols, dtype=np.float64) - (n_cols - 1) / 2.0
    rs = np.arange(n_rows, dtype=np.float64) - (n_rows - 1) / 2.0
    row_mm, col_mm = vol.pixel_spacing
    rel = centre - vol.positions[0]
    out = np.empty((n_rows, n_cols, 3), dtype=np.float64)
    d = (centre @ vol.normal) + cs[None, :] * (du @ vol.normal) + rs[:, None] * (dv @ vol.normal)
    out[..., 0] = slice_coordinate(vol, d)
    for j, (axis, mm) in ((1, (vol.col_cosine, row_mm)), (2, (vol.row_cosine, col_mm))):
        out[..., j] = ((rel @ axis) + cs[None, :] * (du @ axis) + rs[:, None] * (dv @ axis)) / mm
    return out


def slice_coordinate(vol: Volume, d: np.ndarray) -> np.ndarray:
    """Continuous slice index of plane offsets ``d`` (mm along the normal, as ``point @ vol.normal``).

    Interpolated between slice planes (uneven spacing); up to half a slice (and beyond, linearly) outside
    the stack so edge slices are reachable."""
    d = np.asarray(d, dtype=np.float64)
    offsets = vol.slice_offsets
    if len(offsets) > 1:
        k = np.interp(d, offsets, np.arange(len(offsets), dtype=np.float64), left=np.nan, right=np.nan)
        # Allow half a slice outside the stack (extrapolate linearly) so edge slices are reachable.
        sp = vol.slice_spacing or 1.0
        below = d < offsets[0]
        above = d > offsets[-1]
        k = np.where(below, (d - offsets[0]) / sp, k)
        k = np.where(above, len(offsets) - 1 + (d - offsets[-1]) / sp, k)
    else:
        sp = vol.slice_thickness or 1.0
        k = (d - offsets[0]) / sp
    return k


def project_point(vol: Volume, point: np.ndarray) -> Projection:
    """Project a world point into ``vol``: nearest slice, its InstanceNumber, pixel x/y, plane distance."""
    p = np.asarray(point, dtype=np.float64)
    offsets = vol.slice_offsets
    d = float(p @ vol.normal)
    k = int(np.argmin(np.abs(offsets - d)))
    rel = p - vol.positions[k]
    row_mm, col_mm = vol.pixel_spacing
    return Projection(
        slice_index=k,
        instance_number=int(vol.instance_numbers[k]),
        x=float(rel @ vol.row_cosine / col_mm),
        y=float(rel @ vol.col_cosine / row_mm),
        distance_mm=d - float(offsets[k]),
    )


def world_to_pixel(vol: Volume, point: np.ndarray) -> tuple[float, float, int]:
    """(x, y, slice index) of the slice nearest a world point; inverse of :func:`pixel_to_world`."""
    pr = project_point(vol, point)
    return pr.x, pr.y, pr.slice_index


def side_of(point: np.ndarray, midline_x: float) -> str:
    """"left" or "right" of a world point relative to the patient's midline at world x = midline_x.

    Patient left is +x in LPS, so this never depends on array index or display flips.
    """
    return "left" if float(np.asarray(point)[0]) > midline_x else "right"


def plane_center(vol: Volume, k: int) -> np.ndarray:
    """World position of the centre of slice k."""
    rows, cols = vol.pixels.shape[1:]
    return pixel_to_world(vol, (cols - 1) / 2.0, (rows - 1) / 2.0, k)


def volume_center(vol: Volume) -> np.ndarray:
    """World position of the centre of the stack."""
    return (plane_center(vol, 0) + plane_center(vol, len(vol.positions) - 1)) / 2.0


# An axial slab may tilt this far from the patient's axial plane (about the left-right axis) to follow a disc:
# lumbosacral discs often sit 30-45° and up to ~60° from it.
MAX_AXIAL_TILT_DEG = 60.0
# Past 45° the normal points more antero-posterior than cranio-caudal; such a stack is still axial when it
# is a short slab across the column (one disc's block), while a thick one is a coronal volume.
TILTED_AXIAL_MAX_SLAB_MM = 40.0


def plane_of(normal: np.ndarray, slab_mm: float | None = None) -> tuple[str, float]:
    """("sagittal" | "axial" | "coronal", tilt in degrees from that plane) of a stack of parallel slices,
    relative to the spine rather than to the dominant axis.

    Sagittal when the normal is mostly left-right. Otherwise axial up to 45° from the patient's axial plane,
    and up to :data:`MAX_AXIAL_TILT_DEG` for a slab no thicker than :data:`TILTED_AXIAL_MAX_SLAB_MM`
    (``slab_mm``: extent along the normal; None = unknown, counted as thin); else coronal.
    """
    n = np.abs(np.asarray(normal, dtype=np.float64))
    n = n / np.linalg.norm(n)
    if n[0] >= max(n[1], n[2]):
        return "sagittal", float(np.degrees(np.arccos(min(1.0, n[0]))))
    tilt = float(np.degrees(np.arccos(min(1.0, n[2]))))
    thin = slab_mm is None or slab_mm <= TILTED_AXIAL_MAX_SLAB_MM
    if tilt <= 45.0 or (tilt <= MAX_AXIAL_TILT_DEG and thin):
        return "axial", tilt
    return "coronal", float(np.degrees(np.arccos(min(1.0, n[1]))))


def orientation_of(vol: Volume) -> str:
    """"sagittal", "axial" or "coronal" of a stack by :func:`plane_of` (an axial block tilted to follow
    L5/S1 is axial)."""
    offsets = vol.slice_offsets
    slab = float(offsets[-1] - offsets[0]) if len(offsets) > 1 else 0.0
    return plane_of(vol.normal, slab)[0]


def affine(vol: Volume) -> np.ndarray:
    """4×4 matrix mapping homogeneous (x, y, k, 1) to world, for a regularly spaced stack."""
    row_mm, col_mm = vol.pixel_spacing
    m = np.eye(4)
    m[:3, 0] = vol.row_cosine * col_mm
    m[:3, 1] = vol.col_cosine * row_mm
    m[:3, 2] = vol.normal * vol.slice_spacing
    m[:3, 3] = vol.positions[0]
    return m


def nearest_stack(vols: list[Volume], point: np.ndarray) -> tuple[Volume, Projection, bool] | None:
    """The stack whose nearest slice best holds a world point, across series and stacks.

    Stacks whose slice contains the point in-plane (within the pixel edges) win over those that do
    not; among them the smallest plane distance wins. Returns ``(volume, projection, inside)``, or
    None for no stacks.
    """
    best = None
    for vol in vols:
        pr = project_point(vol, point)
        rows, cols = vol.pixels.shape[1:]
        inside = -0.5 <= pr.x <= cols - 0.5 and -0.5 <= pr.y <= rows - 0.5
        key = (not inside, abs(pr.distance_mm))
        if best is None or key < best[0]:
            best = (key, vol, pr, inside)
    return None if best is None else best[1:]
