"""Structure masks on synthetic planes: hole filling, bounds, relative thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from radspine.features.masks import FLAGS, convex_hull, dural_sac_mask, foramen_mask, recess_mask
from radspine.patches import Patch


def _patch(image: np.ndarray) -> Patch:
    image = np.asarray(image, np.float32)[None]
    inside = np.ones(image.shape, bool)
    return Patch(image=image, mask=np.ones(image.shape[1:], np.uint8), inside=inside, inside_fraction=1.0,
                 spacing=(3.5, 0.75, 0.75), center_world=np.zeros(3))


def _ring_with_root(scale: float) -> np.ndarray:
    yy, xx = np.mgrid[0:64, 0:64]
    r = np.hypot(yy - 31.5, xx - 31.5) * 0.75
    img = np.where(r <= 7.0, 1.0, 0.2) * scale
    img[r <= 2.0] = 0.3 * scale  # a dark root at the point
    return img + np.random.default_rng(3).normal(0, 0.01 * scale, img.shape)


@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_root_hole_is_filled_and_threshold_is_relative(scale):
    # The same anatomy at any intensity scale gives the same mask (thresholds follow the patch's own
    # bright reference), and the dark root at the point lies inside it.
    m = dural_sac_mask(_patch(_ring_with_root(scale)), "axial")
    assert m.flag == ""
    assert m.mask[31:33, 31:33].all()
    assert abs(m.area_mm2 - np.pi * 49) / (np.pi * 49) < 0.1
    ref = dural_sac_mask(_patch(_ring_with_root(1.0)), "axial")
    np.testing.assert_array_equal(m.mask, ref.mask)


def test_recess_is_cropped_to_its_bound_without_leak_flag():
    img = np.full((64, 64), 0.2)
    img[20:44, :] = 1.0  # bright space running off sideways (the recess opens into the sac)
    m = recess_mask(_patch(img))
    assert m.flag in ("", "touches border")
    yy, xx = np.nonzero(m.mask)
    assert (np.hypot(yy - 31.5, xx - 31.5) * 0.75 <= 7.0 + 1e-6).all()


def test_sagittal_column_band_does_not_count_as_leak():
    img = np.full((64, 64), 0.2)
    img[:, 24:40] = 1.0  # a vertical CSF column through the whole patch
    m = dural_sac_mask(_patch(img), "sagittal")
    assert m.flag == ""
    rows = np.nonzero(m.mask.any(axis=1))[0]
    assert (np.abs(rows - 31.5) * 0.75 <= 12.0 + 1e-6).all()
    assert foramen_mask(_patch(img)).flag in ("leak", "touches border")


def test_convex_hull_and_flag_vocabulary():
    m = np.zeros((9, 9), bool)
    m[2, 2] = m[2, 6] = m[6, 2] = m[6, 6] = True
    h = convex_hull(m)
    assert h[2:7, 2:7].all() and h.sum() == 25
    assert set(FLAGS) >= {"", "empty", "leak", "touches border", "constant patch", "outside image"}
