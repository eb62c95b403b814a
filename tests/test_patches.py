"""Patches: geometry on sagittal and oblique axial stacks, mm sizes across spacings, padding, determinism."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from pydantic import ValidationError

from radspine.constants import AX_T2, SAG_T1, SAG_T2
from radspine.geometry import pixel_to_world
from radspine.patches import (
    PatchConfig,
    PatchSpec,
    extract_patch,
    intensity_range,
    jitter_points,
    normalize_volume,
    roi_mask,
)
from radspine.types import Volume


def _volume(row_cos, col_cos, shape=(9, 80, 80), spacing=(1.0, 1.0), slice_gap=3.0, origin=(0.0, 0.0, 0.0)):
    row_cos = np.asarray(row_cos, float)
    col_cos = np.asarray(col_cos, float)
    normal = np.cross(row_cos, col_cos)
    positions = np.asarray(origin, float) + np.arange(shape[0])[:, None] * slice_gap * normal
    return Volume(
        pixels=np.zeros(shape, np.float32),
        positions=positions,
        row_cosine=row_cos,
        col_cosine=col_cos,
        pixel_spacing=spacing,
        instance_numbers=np.arange(1, shape[0] + 1),
        series_id=7,
    )


def _with_blob(
    vol: Volume, world: np.ndarray, sigma_mm: float = 2.0, only_slice: int | None = None
) -> Volume:
    """Gaussian blob (in-plane, on the slices nearest in normal distance) at a world point."""
    s, r, c = vol.shape
    yy, xx = np.meshgrid(np.arange(r), np.arange(c), indexing="ij")
    px = np.zeros(vol.shape, np.float32)
    for k in range(s):
        if only_slice is not None and k != only_slice:
            continue
        pts = pixel_to_world(vol, xx, yy, np.full_like(xx, k))
        d2 = np.sum((pts - world) ** 2, axis=-1)
        px[k] = 100.0 * np.exp(-d2 / (2 * sigma_mm**2))
    px += 1.0  # background, so percentiles are not degenerate
    px[0, 0, 0] = 0.0
    return replace(vol, pixels=px)


def _centroid(img2d: np.ndarray) -> np.ndarray:
    w = np.clip(img2d - np.median(img2d), 0, None)
    rr, cc = np.indices(img2d.shape)
    return np.array([(rr * w).sum(), (cc * w).sum()]) / w.sum()


SAGITTAL = ((0, 1, 0), (0, 0, -1))
t = np.deg2rad(20.0)
OBLIQUE_AXIAL = ((1, 0, 0), (0, np.cos(t), -np.sin(t)))


@pytest.mark.parametrize("axes", [SAGITTAL, OBLIQUE_AXIAL], ids=["sagittal", "oblique_axial"])
def test_bright_point_lands_at_patch_centre(axes):
    vol = _volume(*axes, spacing=(0.8, 0.8))
    k, y, x = 4, 37, 45
    world = pixel_to_world(vol, x, y, k)
    vol = _with_blob(vol, world, only_slice=k)
    spec = PatchSpec(series=SAG_T2, size_mm=(31.0, 31.0), spacing_mm=1.0, neighbors=1, slice_step_mm=3.0)
    p = extract_patch(vol, world, spec)
    assert p.image.shape == (3, 31, 31) and p.image.dtype == np.float32
    centre = p.image[1]
    assert np.unravel_index(np.argmax(centre), centre.shape) == (15, 15)
    np.testing.assert_allclose(_centroid(centre), [15.0, 15.0], atol=0.05)
    # The blob only exists on slice k, so neighbouring patch slices (±3 mm = ±1 slice) are dark.
    assert centre.max() > 0.9 and p.image[0].max() < 0.05 and p.image[2].max() < 0.05
    assert p.inside_fraction == 1.0
    assert p.spacing == (3.0, 1.0, 1.0)
    # Patch axes follow the volume's axes: centring 5 mm before the blob along row_cosine (columns) and
    # 3 mm before it along col_cosine (rows) moves the blob to column 15+5, row 15+3.
    shifted = world - 5.0 * vol.row_cosine - 3.0 * vol.col_cosine
    q = extract_patch(vol, shifted, spec).image[1]
    np.testing.assert_allclose(_centroid(q), [18.0, 20.0], atol=0.05)


def test_neighbour_slices_follow_the_normal():
    vol = _volume(*SAGITTAL)
    k = 5
    world_centre = pixel_to_world(vol, 40, 40, 4)
    # Blob on slice 5 at the same in-plane position: the patch slice +1 step (3 mm = 1 slice) sees it.
    vol = _with_blob(vol, pixel_to_world(vol, 40, 40, k), only_slice=k)
    spec = PatchSpec(series=SAG_T1, size_mm=(21.0, 21.0), spacing_mm=1.0, neighbors=1, slice_step_mm=3.0)
    p = extract_patch(vol, world_centre, spec)
    peaks = p.image.max(axis=(1, 2))
    assert np.argmax(peaks) == 2 and peaks[0] < 0.05


def test_mm_size_is_honoured_across_pixel_spacings():
    results = []
    for sp, n in [(0.5, 160), (1.25, 64)]:
        vol = _volume(*SAGITTAL, shape=(3, n, n), spacing=(sp, sp))
        centre = pixel_to_world(vol, (n - 1) / 2, (n - 1) / 2, 1)
        vol = _with_blob(vol, centre, sigma_mm=4.0)
        spec = PatchSpec(series=SAG_T2, size_mm=(40.0, 40.0), spacing_mm=0.8)
        p = extract_patch(vol, centre, spec)
        results.append(p.image[0])
    a, b = results
    assert a.shape == b.shape == (50, 50)
    # Same physical blob → same patch up to interpolation error and each volume's own percentile scale.
    np.testing.assert_allclose(a / a.max(), b / b.max(), atol=0.03)
    a, b = a / a.max(), b / b.max()
    assert abs(int((a > 0.5).sum()) - int((b > 0.5).sum())) <= 4


def test_outside_is_padded_and_flagged():
    vol = _volume(*SAGITTAL, shape=(3, 40, 40))
    vol = replace(vol, pixels=np.random.default_rng(0).uniform(10, 20, (3, 40, 40)).astype(np.float32))
    corner = pixel_to_world(vol, 0, 0, 1)  # top-left voxel centre: ~1/4 of the in-plane grid is inside
    spec = PatchSpec(series=SAG_T2, size_mm=(20.0, 20.0), spacing_mm=1.0, roi_size_mm=(20.0, 20.0))
    p = extract_patch(vol, corner, spec)
    assert 0.2 < p.inside_fraction < 0.3
    assert np.all(p.image[~p.inside] == 0.0)
    assert np.all(p.mask[~p.inside[0]] == 0) and p.mask.sum() > 0
    assert p.mask3d.shape == p.image.shape
    far = pixel_to_world(vol, 500, 500, 1)
    q = extract_patch(vol, far, spec)
    assert q.inside_fraction == 0.0 and not q.image.any() and not q.mask.any()


def test_large_volume_percentiles_come_from_a_strided_sample_that_matches_the_full_one():
    rng = np.random.default_rng(4)
    px = rng.gamma(2.0, 300.0, (12, 512, 512)).astype(np.float32)
    px[:, :, :40] = 0.0  # a dark band on the columns: a row-aligned stride would over- or under-sample it
    vol = replace(_volume(*SAGITTAL, shape=(12, 512, 512)), pixels=px)
    lo, hi = intensity_range(vol, (1, 99))
    flo, fhi = np.percentile(px, (1, 99))
    assert abs(lo - flo) <= 0.01 * (fhi - flo) and abs(hi - fhi) <= 0.01 * (fhi - flo)


def test_normalisation_uses_robust_percentiles_and_is_cached():
    rng = np.random.default_rng(1)
    vol = _volume(*SAGITTAL, shape=(4, 30, 30))
    px = rng.uniform(100, 200, (4, 30, 30)).astype(np.float32)
    px[0, 0, 0] = 1e6  # one outlier must not set the scale
    vol = replace(vol, pixels=px)
    lo, hi = intensity_range(vol, (1, 99))
    assert 100 <= lo < 105 and 195 < hi <= 200
    assert intensity_range(vol, (1, 99)) == (lo, hi)
    nv = normalize_volume(vol)
    assert nv.meta["intensity_range"] == (lo, hi)
    np.testing.assert_allclose(np.percentile(nv.pixels, [1, 99]), [0.0, 1.0], atol=1e-5)
    spec = PatchSpec(series=AX_T2, size_mm=(10.0, 10.0), spacing_mm=1.0)
    c = pixel_to_world(vol, 15, 15, 2)
    np.testing.assert_allclose(extract_patch(vol, c, spec).image, extract_patch(nv, c, spec).image, atol=1e-5)


def test_determinism_and_jitter():
    vol = _volume(*OBLIQUE_AXIAL, shape=(5, 50, 50))
    vol = replace(vol, pixels=np.random.default_rng(2).normal(size=(5, 50, 50)).astype(np.float32))
    spec = PatchConfig().subarticular
    c = pixel_to_world(vol, 20.3, 24.7, 2)
    a, b = extract_patch(vol, c, spec), extract_patch(vol, c, spec)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)

    pts = np.zeros((2000, 3))
    j1 = jitter_points(pts, 2.0, np.random.default_rng(5))
    j2 = jitter_points(pts, 2.0, np.random.default_rng(5))
    j3 = jitter_points(pts, 2.0, np.random.default_rng(6))
    assert np.array_equal(j1, j2) and not np.array_equal(j1, j3)
    assert abs(j1.std() - 2.0) < 0.1
    assert np.array_equal(jitter_points(pts[:3], 0.0, np.random.default_rng(0)), pts[:3])
    with pytest.raises(ValueError, match="sigma_mm"):
        jitter_points(pts, -1.0, np.random.default_rng(0))
    # Within a slice plane: no component along its normal, sigma along each in-plane axis.
    row, col = np.array([0.0, 0.6, 0.8]), np.array([0.0, 0.8, -0.6])
    jp = jitter_points(pts, 2.0, np.random.default_rng(5), plane=(row, col))
    assert np.allclose(jp @ np.cross(row, col), 0.0, atol=1e-12)
    assert abs((jp @ row).std() - 2.0) < 0.1 and abs((jp @ col).std() - 2.0) < 0.1


def test_config_and_roi():
    cfg = PatchConfig()
    assert set(cfg.specs_for("spinal_canal_stenosis")) == {"spinal_sagittal", "spinal_axial"}
    assert cfg.specs_for("left_neural_foraminal_narrowing")["foraminal"].series == SAG_T1
    assert cfg.specs_for("right_subarticular_stenosis")["subarticular"].series == AX_T2
    with pytest.raises(ValidationError):
        PatchConfig(unknown=1)
    with pytest.raises(ValidationError, match="series"):
        PatchSpec(series="Coronal T1")
    spec = PatchSpec(series=SAG_T2, size_mm=(40.0, 40.0), spacing_mm=0.5, roi_size_mm=(20.0, 10.0))
    m = roi_mask(spec)
    assert m.shape == (80, 80)
    # Ellipse area π·a·b in mm² → pixels at 0.25 mm² each.
    assert abs(m.sum() * 0.25 - np.pi * 10 * 5) / (np.pi * 50) < 0.03
    rect = roi_mask(spec.model_copy(update={"roi_shape": "rectangle"}))
    assert rect.sum() == 40 * 20


def test_default_foraminal_patch_is_36_mm_at_64_px():
    # the real-CV choice (see PatchConfig): 36 mm at 0.5625 mm, i.e. the CNN's 64 px input without resizing
    spec = PatchConfig().foraminal
    assert spec.shape == (5, 64, 64) and spec.size_mm == (36.0, 36.0)
    m = roi_mask(spec)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    # the 20 x 16 mm ellipse fits inside, centred, with margin on every side
    assert rows.min() > 0 and cols.min() > 0 and rows.max() < 63 and cols.max() < 63
    assert (rows.max() - rows.min() + 1) * spec.spacing_mm == pytest.approx(20.0, abs=1.2)
    assert (cols.max() - cols.min() + 1) * spec.spacing_mm == pytest.approx(16.0, abs=1.2)
