"""radspine.geometry: voxel ↔ world round trips, projection between series, sides (LPS)."""

from __future__ import annotations

import numpy as np
import pytest

from radspine import geometry as G
from radspine.types import Volume


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def make_volume(
    row: np.ndarray, col: np.ndarray, origin: np.ndarray, *, n: int = 6, step: float = 3.3,
    spacing: tuple[float, float] = (0.7, 0.55), shape: tuple[int, int] = (20, 30), first_instance: int = 1,
    reverse_instances: bool = False,
) -> Volume:
    """A stack whose slice k sits at origin + k·step·(row × col)."""
    normal = np.cross(row, col)
    inst = np.arange(first_instance, first_instance + n)
    return Volume(
        pixels=np.zeros((n, *shape), np.float32),
        positions=origin + np.arange(n)[:, None] * step * normal,
        row_cosine=row, col_cosine=col, pixel_spacing=spacing,
        instance_numbers=inst[::-1].copy() if reverse_instances else inst,
    )


@pytest.fixture
def oblique() -> Volume:
    rot = _rotation(np.random.default_rng(0))
    return make_volume(rot[:, 0], rot[:, 1], np.array([-40.0, 12.5, 87.0]), reverse_instances=True)


def test_pixel_world_pixel_round_trip(oblique):
    rng = np.random.default_rng(1)
    for _ in range(50):
        x, y, k = rng.uniform(0, 30), rng.uniform(0, 20), int(rng.integers(0, 6))
        w = G.pixel_to_world(oblique, x, y, k)
        bx, by, bk = G.world_to_pixel(oblique, w)
        assert bk == k
        # 0.01 mm in world units on both in-plane axes.
        assert abs(bx - x) * oblique.pixel_spacing[1] < 0.01
        assert abs(by - y) * oblique.pixel_spacing[0] < 0.01
        np.testing.assert_allclose(G.pixel_to_world(oblique, bx, by, bk), w, atol=0.01)


def test_pixel_to_world_matches_definition_and_affine(oblique):
    row_mm, col_mm = oblique.pixel_spacing
    w = G.pixel_to_world(oblique, 4.0, 7.0, 3)
    expected = oblique.positions[3] + 4.0 * col_mm * oblique.row_cosine + 7.0 * row_mm * oblique.col_cosine
    np.testing.assert_allclose(w, expected, atol=1e-9)
    np.testing.assert_allclose((G.affine(oblique) @ [4.0, 7.0, 3, 1])[:3], w, atol=1e-9)
    # Vectorised form agrees with the scalar one.
    ws = G.pixel_to_world(oblique, np.array([4.0, 1.0]), np.array([7.0, 2.0]), np.array([3, 0]))
    np.testing.assert_allclose(ws[0], w)
    assert ws.shape == (2, 3)


def test_instance_numbers_map_through_geometry(oblique):
    # Instances run opposite to position: instance 6 is slice 0.
    assert oblique.slice_index(6) == 0 and oblique.slice_index(1) == 5
    w = G.instance_to_world(oblique, 2.0, 3.0, 1)
    np.testing.assert_allclose(w, G.pixel_to_world(oblique, 2.0, 3.0, 5))
    assert G.project_point(oblique, w).instance_number == 1
    with pytest.raises(KeyError):
        oblique.slice_index(99)


def test_projection_into_other_series_and_plane_distance(oblique):
    other = make_volume(np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([-60.0, -10.0, 70.0]),
                        n=12, step=2.0, spacing=(0.5, 0.5), first_instance=101)
    w = G.pixel_to_world(oblique, 10.0, 9.0, 2)
    pr = G.project_point(other, w)
    # Axial planes at z = 70 + 2k: nearest is round((z-70)/2), distance the remainder.
    kz = (w[2] - 70.0) / 2.0
    assert pr.slice_index == int(np.clip(np.rint(kz), 0, 11))
    assert pr.instance_number == 101 + pr.slice_index
    assert pr.distance_mm == pytest.approx(w[2] - (70.0 + 2.0 * pr.slice_index), abs=1e-9)
    assert pr.x == pytest.approx((w[0] + 60.0) / 0.5, abs=0.02)
    assert pr.y == pytest.approx((w[1] + 10.0) / 0.5, abs=0.02)
    # The projected pixel plus its signed plane distance along the normal gives the point back.
    back = G.pixel_to_world(other, pr.x, pr.y, pr.slice_index) + pr.distance_mm * other.normal
    np.testing.assert_allclose(back, w, atol=0.01)


def test_continuous_index_between_slices(oblique):
    w = G.pixel_to_world(oblique, 5.0, 6.0, 2) + 0.25 * oblique.slice_spacing * oblique.normal
    k, y, x = G.continuous_index(oblique, w)
    assert (k, y, x) == pytest.approx((2.25, 6.0, 5.0), abs=1e-6)


def test_grid_index_equals_continuous_index_of_the_grid_points(oblique):
    """The broadcast grid index is the index of the grid's world points, on an oblique stack with uneven
    slice spacing and a grid running past the stack (k outside [0, n − 1])."""
    uneven = Volume(
        pixels=oblique.pixels, positions=oblique.positions + np.array([0, 0.4, 1.1, 0.2, -0.3, 0])[:, None]
        * oblique.normal, row_cosine=oblique.row_cosine, col_cosine=oblique.col_cosine,
        pixel_spacing=oblique.pixel_spacing, instance_numbers=oblique.instance_numbers,
    )  # fmt: skip
    rng = np.random.default_rng(3)
    du, dv = rng.normal(size=3) * 1.7, rng.normal(size=3) * 0.9
    centre = G.volume_center(uneven) + 2.0 * uneven.normal
    rows, cols = 7, 11
    rs = np.arange(rows) - (rows - 1) / 2
    cs = np.arange(cols) - (cols - 1) / 2
    world = centre + cs[None, :, None] * du + rs[:, None, None] * dv
    got = G.grid_index(uneven, centre, du, dv, rows, cols)
    want = G.continuous_index(uneven, world)
    assert got.shape == (rows, cols, 3)
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert got[..., 0].min() < 0 or got[..., 0].max() > len(uneven.positions) - 1  # the grid leaves the stack


def test_volume_geometry_cache_is_read_only(oblique):
    """normal / slice offsets are computed once per Volume and cannot be changed through the cached arrays."""
    assert oblique.normal is oblique.normal
    with pytest.raises(ValueError):
        oblique.slice_offsets[0] = 0.0


def test_side_of_uses_world_x_only():
    # LPS: +x is patient left, whatever the array orientation.
    assert G.side_of(np.array([12.0, 0, 0]), 0.0) == "left"
    assert G.side_of(np.array([-3.0, 50, -9]), 0.0) == "right"
    assert G.side_of(np.array([5.0, 0, 0]), 10.0) == "right"
    flipped = make_volume(np.array([-1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([30.0, 0, 0]))
    # Column 0 of an x-flipped image is the patient's left side.
    assert G.side_of(G.pixel_to_world(flipped, 0, 5, 0), 15.0) == "left"
    assert G.side_of(G.pixel_to_world(flipped, 29, 5, 0), 15.0) == "right"


def test_orientation_and_centres():
    sag = make_volume(np.array([0, 1.0, 0]), np.array([0, 0, -1.0]), np.zeros(3), shape=(11, 21))
    assert G.orientation_of(sag) == "sagittal"
    np.testing.assert_allclose(G.plane_center(sag, 0), [0, 10 * 0.55, -5 * 0.7])
    np.testing.assert_allclose(G.volume_center(sag), [-(5 * 3.3) / 2, 10 * 0.55, -5 * 0.7])


def test_nearest_stack_prefers_a_slice_that_holds_the_point() -> None:
    x, y, z = np.eye(3)
    # Two axial stacks (normal +z): A's planes pass near the point but its grid lies far to the side;
    # B's planes are 2 mm further away but its grid contains the point in-plane.
    a = make_volume(x, y, np.array([200.0, 0.0, 0.0]), n=3, step=4.0)
    b = make_volume(x, y, np.array([0.0, 0.0, -2.0]), n=3, step=4.0)
    point = np.array([5.0, 5.0, 0.5])
    vol, pr, inside = G.nearest_stack([a, b], point)
    assert vol is b and inside
    assert pr.slice_index == 1 and pr.distance_mm == pytest.approx(-1.5)
    vol, pr, inside = G.nearest_stack([a], point)
    assert vol is a and not inside and pr.distance_mm == pytest.approx(0.5)
    assert G.nearest_stack([], point) is None


@pytest.mark.parametrize(
    ("tilt", "slab", "plane"),
    [(0, 150.0, "axial"), (30, 150.0, "axial"), (44, 150.0, "axial"), (55, 16.0, "axial"), (55, 80.0, "coronal"),
     (60, 20.0, "axial"), (65, 16.0, "coronal"), (90, 16.0, "coronal")],
)
def test_plane_of_follows_the_spine_not_the_dominant_axis(tilt, slab, plane):
    # An axial block tilted about x to follow a disc: a thin one stays axial up to 60°, a thick slab past 45°
    # is a coronal volume.
    t = np.deg2rad(tilt)
    normal = np.cross([1.0, 0, 0], [0, np.cos(t), -np.sin(t)])
    got, deg = G.plane_of(normal, slab)
    assert got == plane
    assert deg == pytest.approx(tilt if plane == "axial" else 90 - tilt, abs=1e-6)
    assert G.plane_of(-normal, slab)[0] == plane  # the normal's sign does not matter
    assert G.plane_of(np.array([0.9, 0.3, 0.3]), 5.0)[0] == "sagittal"
