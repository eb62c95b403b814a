"""Canonical resampling and heatmap decoding: geometry invariances and sub-pixel accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from radspine.localize.canon import PlaneFrame, robust_normalise
from radspine.localize.net import decode_peak, gaussian_maps, refine_argmax_1d

from .toy import make_toy_study


def test_flipped_acquisition_gives_same_canonical_plane():
    """A study stored with reversed columns and slice order resamples to the same world-aligned image."""
    a, _, _ = make_toy_study(1, 5, flip=False)
    b, _, _ = make_toy_study(1, 5, flip=True)
    fa = PlaneFrame.build(a.sag_t2, "sagittal", 2.75, 64)
    fb = PlaneFrame.build(b.sag_t2, "sagittal", 2.75, 64)
    assert np.allclose(fa.normal, [1, 0, 0]) and np.allclose(fb.normal, [1, 0, 0])
    # Both frames must map the same world point to the same canonical (row, col) up to the origin shift.
    p = np.array([3.0, 15.0, 10.0])
    ia = fa.sample(np.array([fa.to_frame(p)[0]]), channel_offset=0.0)[0, 1]
    ib = fb.sample(np.array([fb.to_frame(p)[0]]), channel_offset=0.0)[0, 1]
    ra, rb = fa.to_frame(p)[1:], fb.to_frame(p)[1:]
    shift = np.round(rb - ra).astype(int)
    ib = np.roll(ib, tuple(-shift), axis=(0, 1))
    core = (slice(12, 52), slice(12, 52))
    corr = np.corrcoef(ia[core].ravel(), ib[core].ravel())[0, 1]
    assert corr > 0.9, corr


def test_frame_world_round_trip_and_columns_run_posterior():
    vols, _, _ = make_toy_study(2, 1)
    fr = PlaneFrame.build(vols.sag_t1, "sagittal", 2.0, 64)
    p = np.array([4.0, -12.0, 33.0])
    d, row, col = fr.to_frame(p)
    assert np.allclose(fr.to_world(d, row, col), p)
    # One column to the right is 2 mm posterior (+y); one row down is 2 mm towards the feet (−z).
    assert np.allclose(fr.to_world(d, row, col + 1) - p, [0, 2.0, 0])
    assert np.allclose(fr.to_world(d, row + 1, col) - p, [0, 0, -2.0])


def test_out_of_stack_planes_read_zero():
    vols, _, _ = make_toy_study(3, 2)
    fr = PlaneFrame.build(vols.sag_t2, "sagittal", 2.75, 32)
    lo, hi = fr.offset_range()
    img = fr.sample(np.array([hi + 20.0, (lo + hi) / 2]), channel_offset=0.0)
    assert np.all(img[0] == 0) and img[1].max() > 0.5


def test_coarse_grid_low_pass_matches_a_gaussian_and_reads_the_same_world_point():
    """The block-mean + Gaussian anti-alias filter of a coarse grid equals the Gaussian it stands in for:
    the 4 mm canonical image of a fine-matrix stack matches a plain Gaussian-filtered reference, and a
    rectangular grid reads the same pixels as the square one where they overlap."""
    from scipy import ndimage

    from radspine.localize.canon import _low_pass

    rng = np.random.default_rng(1)
    img = ndimage.gaussian_filter(rng.random((3, 240, 240)).astype(np.float32), (0, 3, 3))
    ratio = 5.0
    small, f = _low_pass(img, ratio)
    assert f == 4 and small.shape == (3, 60, 60)
    ref = ndimage.gaussian_filter(img, (0, 0.4 * ratio, 0.4 * ratio), mode="nearest")
    # Block centres sit at f·j + (f − 1)/2 in stack pixels.
    centres = np.arange(60) * f + (f - 1) / 2
    ref_at = ndimage.map_coordinates(ref[1], np.meshgrid(centres, centres, indexing="ij"), order=1)
    core = (slice(4, 56), slice(4, 56))
    span = ref_at[core].max() - ref_at[core].min()
    diff = np.abs(small[1][core] - ref_at[core]) / span
    assert np.sqrt(np.mean(diff**2)) < 0.02 and diff.max() < 0.08, (np.sqrt(np.mean(diff**2)), diff.max())
    assert np.corrcoef(small[1][core].ravel(), ref_at[core].ravel())[0, 1] > 0.99

    vols, _, _ = make_toy_study(4, 2)
    fr = PlaneFrame.build(vols.sag_t2, "sagittal", 2.0, 32)
    sq = fr.with_grid(2.0, 32)
    rect = fr.with_grid(2.0, 32, 16)
    d = np.array([float(np.mean(fr.offset_range()))])
    a, b = sq.sample(d, channel_offset=3.0), rect.sample(d, channel_offset=3.0)
    assert b.shape == (1, 3, 32, 16)
    np.testing.assert_allclose(a[..., 8:24], b, atol=1e-6)
    p = rect.to_world(d[0], 5.0, 7.0)
    assert np.allclose(rect.to_frame(p), [d[0], 5.0, 7.0])


def test_shared_channel_planes_are_sampled_once():
    """Planes one channel offset apart share their channel planes: the channels equal those of single
    samples, and each distinct plane is read once."""
    vols, _, _ = make_toy_study(5, 2)
    fr = PlaneFrame.build(vols.sag_t2, "sagittal", 2.0, 32)
    mid = float(np.mean(fr.offset_range()))
    ds = mid + 3.0 * np.arange(-2, 3)
    calls = []
    orig = fr._sample_planes

    def spy(d, s):
        calls.append(len(d))
        return orig(d, s)

    object.__setattr__(fr, "_sample_planes", spy)
    both = fr.sample(ds, channel_offset=3.0)
    assert calls == [len(ds) + 2]
    for i, d in enumerate(ds):
        np.testing.assert_allclose(both[i], fr.sample(np.array([d]), channel_offset=3.0)[0], atol=1e-6)


def test_robust_normalise_is_scale_invariant():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, (4, 16, 16)).astype(np.float32)
    assert np.allclose(robust_normalise(x), robust_normalise(x * 4000 + 100), atol=1e-5)


@pytest.mark.parametrize("row,col", [(10.3, 20.7), (31.5, 4.25)])
def test_decode_peak_sub_pixel(row, col):
    heat = gaussian_maps(40, np.array([row]), np.array([col]), np.array([0.8]), 1.5)[0]
    r, c, v = decode_peak(heat)
    assert abs(r - row) < 0.1 and abs(c - col) < 0.1 and 0.6 < v <= 0.8


def test_refine_argmax_1d_parabola():
    pos = np.arange(0, 20, 2.0)
    vals = -((pos - 7.0) ** 2)
    i, p = refine_argmax_1d(vals, pos)
    assert pos[i] in (6.0, 8.0) and abs(p - 7.0) < 1e-6


def test_assign_ordered_peaks_separates_levels_sharing_a_disc():
    """Channel 1 fires hardest on channel 0's disc; ordered assignment moves it to the next disc down."""
    from radspine.localize.net import assign_ordered_peaks

    discs = np.array([8.0, 18.0, 28.0])
    maps = np.zeros((2, 40, 20), np.float32)
    g = gaussian_maps(40, discs, np.full(3, 10.0), np.ones(3), 1.5)
    g = g[:, :, :20]
    maps[0] = 0.9 * g[0] + 0.1 * g[1]
    maps[1] = 0.8 * g[0] + 0.3 * g[1] + 0.05 * g[2]
    assert decode_peak(maps[1])[0] == pytest.approx(8.0, abs=0.1)  # naive argmax collides with level 0
    rc = assign_ordered_peaks(maps, min_sep_px=3)
    assert rc == [(8, 10), (18, 10)]
    assert assign_ordered_peaks(np.zeros((2, 10, 10), np.float32)) is None


def test_assign_ordered_peaks_counts_from_the_lowest_disc():
    """Six discs in view (a thoracic one above L1/L2). The level channels also answer on the disc above their own,
    so the summed response favours the chain one disc too high; counting from the lowest disc-like peak up
    gives the right chain, and a weak blob below the discs is not taken for one."""
    from radspine.localize.net import assign_ordered_peaks

    discs = np.array([6.0, 14.0, 22.0, 30.0, 38.0, 46.0, 54.0])  # the last is a weak blob in the sacrum
    g = gaussian_maps(64, discs, np.full(len(discs), 10.0), np.ones(len(discs)), 1.5)[:, :, :20]
    maps = np.zeros((5, 64, 20), np.float32)
    for ch in range(5):  # the true disc of channel ch is discs[ch + 1]; it also answers on discs[ch] a bit higher
        maps[ch] = 0.6 * g[ch + 1] + 0.7 * g[ch]
    maps[4] += 0.15 * g[6]
    rc = assign_ordered_peaks(maps, min_sep_px=3)
    assert [r for r, _ in rc] == [14, 22, 30, 38, 46]
    assert [r for r, _ in assign_ordered_peaks(maps, min_sep_px=3, floor_row=63.0)] == [14, 22, 30, 38, 46]
    # The image ends 2 px (< one 8 px disc gap) below the lowest disc: the sacrum may be out of view, so the
    # lowest disc is not taken for L5/S1 and the level responses decide.
    assert [r for r, _ in assign_ordered_peaks(maps, min_sep_px=3, floor_row=48.0)] == [6, 14, 22, 30, 38]


def test_choose_levels_margin_tells_a_clear_chain_from_an_ambiguous_one():
    """Six disc-like peaks: when the level channels answer only their own disc, the chosen chain beats the chain
    one disc up by a wide margin; when every channel answers its own disc and the one above equally (a sixth
    lumbar-type disc, or an S1/S2 remnant as bright as L5/S1), the shifted chain explains the maps as well."""
    from radspine.localize.net import choose_levels

    discs = np.array([6.0, 14.0, 22.0, 30.0, 38.0, 46.0])
    g = gaussian_maps(64, discs, np.full(len(discs), 10.0), np.ones(len(discs)), 1.5)[:, :, :20]
    clear = np.zeros((5, 64, 20), np.float32)
    ambiguous = np.zeros((5, 64, 20), np.float32)
    for ch in range(5):  # channel ch's own disc is discs[ch + 1]
        clear[ch] = g[ch + 1] + 0.05 * g[ch]
        ambiguous[ch] = g[ch + 1] + g[ch]
    for rule in ("count", "window"):
        a = choose_levels(clear, min_sep_px=3, rule=rule)
        b = choose_levels(ambiguous, min_sep_px=3, rule=rule)
        assert [r for r, _ in a.rows_cols] == [14, 22, 30, 38, 46] and (a.n_disc, b.n_disc) == (5, 6)
        assert a.margin > 0.9
        assert abs(b.margin) < 0.05


def test_window_rule_skips_a_bright_remnant_below_l5_s1():
    """An S1/S2 remnant that is disc-like in the max map but that no level channel claims as its own: counting
    from the lowest peak takes it for L5/S1; the window rule follows the level channels."""
    from radspine.localize.net import choose_levels

    discs = np.array([14.0, 22.0, 30.0, 38.0, 46.0, 54.0])  # the last is the remnant
    g = gaussian_maps(64, discs, np.full(len(discs), 10.0), np.ones(len(discs)), 1.5)[:, :, :20]
    maps = np.zeros((5, 64, 20), np.float32)
    for ch in range(5):
        maps[ch] = g[ch] + 0.1 * g[min(ch + 1, 5)]
    maps[0] += 0.9 * g[5]  # a channel far from home answers the remnant (it is disc-like in the max map)
    assert [r for r, _ in choose_levels(maps, min_sep_px=3, rule="count").rows_cols] == [22, 30, 38, 46, 54]
    win = choose_levels(maps, min_sep_px=3, rule="window")
    assert [r for r, _ in win.rows_cols] == [14, 22, 30, 38, 46] and win.rule == "window"


def test_sacrum_channel_stops_the_count_at_the_disc_above_it():
    """A disc-like S1/S2 remnant below L5/S1: counting from the lowest peak takes it for L5/S1; with a sacrum
    peak between L5/S1 and the remnant, L5/S1 is the lowest disc above the sacrum. A sacrum peak below every
    disc (the usual case) changes nothing, and a weak one is ignored."""
    from radspine.localize.net import choose_levels

    discs = np.array([14.0, 22.0, 30.0, 38.0, 46.0, 54.0])  # the last one is the remnant
    g = gaussian_maps(64, discs, np.full(len(discs), 10.0), np.ones(len(discs)), 1.5)[:, :, :20]
    maps = np.zeros((5, 64, 20), np.float32)
    for ch in range(5):
        maps[ch] = g[ch] + 0.6 * g[ch + 1]  # each channel also answers the disc below: the remnant is disc-like
    s1 = gaussian_maps(64, np.array([50.0]), np.array([10.0]), np.ones(1), 1.5)[0, :, :20]
    assert [r for r, _ in choose_levels(maps, min_sep_px=3).rows_cols] == [22, 30, 38, 46, 54]
    ch = choose_levels(maps, min_sep_px=3, sacrum=s1)
    assert [r for r, _ in ch.rows_cols] == [14, 22, 30, 38, 46] and ch.rule == "sacrum"
    low = gaussian_maps(64, np.array([60.0]), np.array([10.0]), np.ones(1), 1.5)[0, :, :20]
    assert [r for r, _ in choose_levels(maps, min_sep_px=3, sacrum=low).rows_cols] == [22, 30, 38, 46, 54]
    assert choose_levels(maps, min_sep_px=3, sacrum=0.2 * s1).rule == "sacrum count"


def test_sacrum_target_lies_below_l5_s1_on_every_sagittal_training_crop():
    """The sacrum channel's target: L5/S1 + 0.45 × (L5/S1 − L4/L5), on the crops' own grids; a model configured
    without the channel gets 10 channels and no such target."""
    from radspine.localize import LocalizerConfig
    from radspine.localize.infer import SACRUM, SACRUM_STEP
    from radspine.localize.train import normalised_coordinates, resolve_truth, study_samples
    from tests.localize.toy import make_toy_study

    vols, coords, truth = make_toy_study(3, seed=5)
    res = resolve_truth(vols, normalised_coordinates(coords))
    cfg = LocalizerConfig(device="cpu")
    sag, _ = study_samples(vols, res, cfg, seed=0)
    assert sag.peaks.shape[1] == 11 and sag.mask[:, SACRUM].all()
    l5, l4 = truth[("spinal_canal_stenosis", "l5_s1")], truth[("spinal_canal_stenosis", "l4_l5")]
    step = SACRUM_STEP * np.linalg.norm(l5 - l4)
    rows = sag.peaks[:, [4, SACRUM], 0, 0]  # row of L5/S1 and of the sacrum on each crop
    spacing = cfg.sigma_mm / sag.sigma  # each crop's grid spacing (sigma is sigma_mm / spacing)
    np.testing.assert_allclose((rows[:, 1] - rows[:, 0]) * spacing, step, rtol=0.02)  # below (rows run to the feet)
    plain, _ = study_samples(vols, res, LocalizerConfig(device="cpu", sacrum_channel=False), seed=0)
    assert plain.peaks.shape[1] == 10


def test_a_model_without_the_sacrum_channel_fine_tunes_into_one_with_it(tmp_path):
    """Older weights (10 channels) start an 11-channel net: their 10 heads are copied, the sacrum head starts at
    the untrained init; a saved 10-channel model still loads as one (its config says no sacrum channel)."""
    import torch

    from radspine.localize import Localizer, LocalizerConfig
    from radspine.localize.net import HeatmapUNet
    from radspine.localize.train import _fit_head

    torch.manual_seed(0)
    old, new = HeatmapUNet(3, 10, 4, 2), HeatmapUNet(3, 11, 4, 2)
    state = _fit_head(old.state_dict(), new)
    new.load_state_dict(state)
    assert torch.equal(new.head.weight[:10], old.head.weight) and torch.equal(new.head.bias[:10], old.head.bias)
    assert float(new.head.bias[10]) == -4.0
    offsets = {k: {lv: [0.0, 0.0, 0.0] for lv in ("l1_l2",)} for k in ("sub_mid", "sub_left", "sub_right")}
    cfg = LocalizerConfig(base_channels=4, sag_depth=2, sag_size=32, device="cpu")
    Localizer(cfg, old, None, offsets, ["spinal_canal_stenosis"]).save(tmp_path / "m")
    loaded = Localizer.load(tmp_path / "m")
    assert loaded.cfg.sacrum_channel is False and loaded.sag_net.head.out_channels == 10
