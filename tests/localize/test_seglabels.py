"""Level points from sagittal masks (seglabels) and the SPIDER conversion script, on synthetic masks only."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from radspine.localize.seglabels import DISC_AP_MM, SEGMENT_MM, mask_levels

DISC, CANAL = 29, 150
GAP, DISC_W, CANAL_COL = 25, 31, 90  # px: disc centre spacing, disc AP extent, canal centre column
ROOT = Path(__file__).resolve().parents[2]


def spine_masks(n_discs: int = 7, slices: int = 5, rows: int = 220, cols: int = 160, drop: tuple[int, ...] = (),
                canal_rows: tuple[int, int] = (5, 215)) -> tuple[np.ndarray, list[int]]:  # fmt: skip
    """A sagittal label stack: ``n_discs`` flat discs GAP px apart (centre column 60) and a canal band behind
    them, widest on the middle slice; discs in ``drop`` (index from the top) are left unmasked on every slice."""
    m = np.zeros((slices, rows, cols), np.uint8)
    rr, cc = np.mgrid[:rows, :cols]
    disc_rows = [20 + GAP * i for i in range(n_discs)]
    for k in range(slices):
        half = 6 - abs(k - slices // 2) * 2  # canal narrower away from the midline
        if half > 0:
            m[k][(abs(cc - CANAL_COL) <= half) & (rr >= canal_rows[0]) & (rr < canal_rows[1])] = CANAL
        for i, r in enumerate(disc_rows):
            if i not in drop:
                m[k][((cc - 60) / (DISC_W / 2)) ** 2 + ((rr - r) / 3.5) ** 2 <= 1] = DISC
    return m, disc_rows


def test_levels_named_from_the_lowest_disc_with_canal_points_behind():
    m, rows = spine_masks()
    ml = mask_levels(m, DISC, CANAL)
    assert ml.mid == 2 and ml.n_discs == 7 and ml.problems == []
    assert list(ml.discs) == ["l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"]
    for lv, r in zip(ml.discs, rows[-5:], strict=True):
        assert ml.discs[lv] == pytest.approx((r, 60.0), abs=0.5)
        assert ml.canal[lv] == pytest.approx((r, CANAL_COL), abs=1.0)
    assert ml.gap_px == pytest.approx(GAP, abs=0.1)
    assert ml.width_px == pytest.approx(DISC_W, abs=1.0)
    expect = np.sqrt((SEGMENT_MM / GAP) * (DISC_AP_MM / ml.width_px))
    assert ml.pixel_mm() == pytest.approx(expect, rel=1e-6)


def test_a_disc_missing_from_the_masks_keeps_the_names_above():
    m, rows = spine_masks(drop=(5,))  # L4/L5 (second lowest) unmasked everywhere
    ml = mask_levels(m, DISC, CANAL)
    assert "l4_l5" not in ml.discs and any("l4_l5: disc not masked" in p for p in ml.problems)
    assert ml.discs["l5_s1"][0] == pytest.approx(rows[6], abs=0.5)
    assert ml.discs["l3_l4"][0] == pytest.approx(rows[4], abs=0.5)  # not renamed L4/L5
    assert ml.discs["l1_l2"][0] == pytest.approx(rows[2], abs=0.5)


def test_disc_masked_beside_the_midline_only_is_found():
    m, rows = spine_masks()
    m[1:4][m[1:4] == DISC] = 0  # the middle slices lose every disc; the outer slices keep them
    m[0][m[0] == DISC] = 0
    ml = mask_levels(m, DISC, CANAL)  # slice 4 lies within the ±2 band of the midline slice 2
    assert list(ml.discs) == ["l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"]


def test_canal_mask_stopping_short_is_estimated_and_said():
    m, rows = spine_masks(canal_rows=(5, rows_cut := 20 + GAP * 5 - 8))
    ml = mask_levels(m, DISC, CANAL)
    assert rows_cut < rows[5]
    for lv in ("l4_l5", "l5_s1"):
        assert ml.canal[lv] == pytest.approx((rows[LEVELS_IDX[lv]], CANAL_COL), abs=1.5)
        assert any(p.startswith(f"{lv}: canal mask stops short") for p in ml.problems)


LEVELS_IDX = {"l1_l2": 2, "l2_l3": 3, "l3_l4": 4, "l4_l5": 5, "l5_s1": 6}


def test_a_disc_split_by_a_seam_counts_once():
    m, rows = spine_masks()
    m[:, :, 58:60][m[:, :, 58:60] == DISC] = 0  # a vertical seam through every disc
    ml = mask_levels(m, DISC, CANAL)
    assert ml.n_discs == 7 and ml.discs["l5_s1"][0] == pytest.approx(rows[6], abs=0.5)


def test_conversion_script_writes_a_layout_the_localizer_reads(tmp_path):
    """Synthetic PNG slices in SPIDER's naming → Kaggle layout whose canal points resolve in world mm."""
    from PIL import Image

    from radspine.io.dataset import Dataset
    from radspine.io.volumes import load_study_volumes
    from radspine.localize.train import normalised_coordinates, resolve_truth

    spec = importlib.util.spec_from_file_location("spider_data", ROOT / "scripts" / "spider_localizer_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    src = tmp_path / "t2_SPACE"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    m, rows = spine_masks()
    for pid in (3, 4):
        for k in range(len(m)):
            name = f"{pid}_t2_SPACE_slice{40 + k}.png"
            Image.fromarray((m[k] > 0).astype(np.uint8) * 200 + 20).save(src / "images" / name)
            Image.fromarray(m[k]).save(src / "masks" / name)
    man = mod.convert(src, tmp_path / "out", holdout=1, seed=0, slice_mm=0.9)
    assert man["counts"] == {"train": {"studies": 1, "points": 5}, "holdout": {"studies": 1, "points": 5}}
    px = man["patients"]["3"]["pixel_mm"]
    ds = Dataset.open(tmp_path / "out" / "train")
    (st,) = ds.studies("train")
    vols = load_study_volumes(st)
    assert vols.sag_t2 is not None and vols.sag_t2.pixel_spacing == pytest.approx((px, px), abs=1e-4)
    truth = resolve_truth(vols, normalised_coordinates(ds.coordinates))
    z = [truth[("spinal_canal_stenosis", lv)].world[2] for lv in LEVELS_IDX]
    assert np.allclose(np.diff(z), -GAP * px, atol=0.05)  # head to feet, one disc gap apart in mm
    y = truth[("spinal_canal_stenosis", "l3_l4")].world[1]
    assert y == pytest.approx(CANAL_COL * px, abs=1.0 * px)  # columns run posterior (+y)
