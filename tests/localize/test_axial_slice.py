"""Which axial slice a subarticular point sits on: neighbour-slice training targets and the slice search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radspine.constants import AX_T2, LEVELS
from radspine.localize import LocalizerConfig
from radspine.localize.infer import Localizer
from radspine.localize.train import _ax_samples, normalised_coordinates, resolve_truth
from radspine.types import Volume
from tests.localize.toy import make_toy_study


@pytest.mark.parametrize("search", [0.0, 6.0])
def test_axial_training_crops_cover_neighbour_slices_with_fading_targets(search: float):
    vols, coords, _ = make_toy_study(5, seed=3)  # 5 axial slices per level, 4 mm apart, labels on the middle one
    truth = resolve_truth(vols, normalised_coordinates(coords))
    cfg = LocalizerConfig(ax_slice_search_mm=search)
    s = _ax_samples(truth, cfg, np.random.default_rng(0), n_per_level=2)
    per_level = 2 + (2 if search else 0)  # ±4 mm lie within 6 mm; ±8 mm do not
    assert len(s.x) == per_level * len(LEVELS)
    amp = s.peaks[:, :, 0, 2].reshape(len(LEVELS), per_level, 2)
    np.testing.assert_allclose(amp[:, :2], 1.0, atol=1e-6)  # the labelled slice
    if search:
        # Neighbours 4 mm away: exp(-d^2 / (2 sigma^2)) with sigma_slice_mm = 3.
        np.testing.assert_allclose(amp[:, 2:], np.exp(-16.0 / 18.0), rtol=1e-3)


class _BrightestSliceNet(torch.nn.Module):
    """Stub axial net: both recess channels peak at the centre pixel with a strength rising with the
    centre channel's mean intensity, so the slice search must pick the brightest candidate slice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full((x.shape[0], 2, x.shape[2], x.shape[3]), -8.0)
        c = x.shape[2] // 2
        out[:, :, c, c] = 8.0 * x[:, 1].mean(dim=(1, 2))[:, None] - 4.0
        return out


def _axial_stack(levels: list[float]) -> Volume:
    n = len(levels)
    pix = np.stack([np.full((40, 40), v, np.float32) for v in levels])
    return Volume(pixels=pix, positions=np.array([[-50.0, -50.0, 4.0 * k] for k in range(n)]),
                  row_cosine=np.array([1.0, 0, 0]), col_cosine=np.array([0, 1.0, 0]), pixel_spacing=(2.5, 2.5),
                  instance_numbers=np.arange(1, n + 1), series_id=3, description=AX_T2)  # fmt: skip


@pytest.mark.parametrize(("search", "expected"), [(0.0, 3), (8.0, 2)])
def test_axial_search_takes_the_strongest_slice_within_the_radius(search: float, expected: int):
    # Slices every 4 mm; the level's expected plane is z = 12 mm (slice 3). Slice 2 is the brightest within
    # 8 mm; slice 7 is brighter still but 16 mm away, outside the search.
    vol = _axial_stack([100, 200, 900, 300, 400, 350, 250, 2000, 150])
    offsets = {k: {lv: [0.0, 0.0, 0.0] for lv in LEVELS} for k in ("sub_mid", "sub_left", "sub_right")}
    loc = Localizer(LocalizerConfig(ax_slice_search_mm=search, device="cpu"), None, _BrightestSliceNet(), offsets)
    _, k, left, right, dist, _ = loc._axial([vol], np.array([0.0, 0.0, 12.0]))
    assert k == expected
    assert dist == pytest.approx(abs(4.0 * expected - 12.0))
    assert left[2] == pytest.approx(4.0 * expected) and right[2] == pytest.approx(4.0 * expected)


class _OneSidedBrightestNet(torch.nn.Module):
    """Stub axial net: peaks grow with the slice's brightness, but on the brightest slice of the batch both
    recess channels peak on the same side of the centre (a slice through the wrong structure)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full((x.shape[0], 2, x.shape[2], x.shape[3]), -8.0)
        c = x.shape[2] // 2
        m = x[:, 1].mean(dim=(1, 2))
        for b in range(x.shape[0]):
            v = 8.0 * m[b] - 4.0
            cols = (c + 5, c + 7) if m[b] == m.max() else (c + 5, c - 5)
            out[b, 0, c, cols[0]] = v
            out[b, 1, c, cols[1]] = v
        return out


def test_axial_search_prefers_a_slice_whose_recesses_straddle_the_canal():
    from radspine.localize.infer import straddles

    vol = _axial_stack([100, 200, 900, 300, 400, 350, 250, 2000, 150])
    offsets = {k: {lv: [0.0, 0.0, 0.0] for lv in LEVELS} for k in ("sub_mid", "sub_left", "sub_right")}
    loc = Localizer(LocalizerConfig(ax_slice_search_mm=8.0, device="cpu"), None, _OneSidedBrightestNet(), offsets)
    centre = np.array([0.0, 0.0, 12.0])
    _, k, left, right, _, _ = loc._axial([vol], centre)
    # Slice 2 is the brightest within 8 mm but puts both points on one side; slice 4 is the next brightest.
    assert k == 4
    assert straddles(left, right, centre)
    assert abs(left[0] - right[0]) == pytest.approx(10 * loc.cfg.ax_spacing_mm, abs=0.5)
    assert not straddles(np.array([5.0, 0, 0]), np.array([2.0, 0, 0]), centre)
