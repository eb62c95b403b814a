"""Harder variations for localizer work (off-centre, large FOV, cropped spine, random contrast, lower-only
axials) and the tissue label maps of label_volumes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radspine.constants import AX_T2, LEVELS, SAG_T1, SAG_T2
from radspine.geometry import project_point
from radspine.io.dicom import read_series
from radspine.synth import TISSUE_LABELS, QuirkConfig, label_volumes, make_dataset
from radspine.synth.anatomy import LEVEL_DISC, TABLE_TISSUES, random_table, real_table
from radspine.synth.render import lumbar_points
from radspine.synth.write import _plan_study, _study_jobs

CLEAN = QuirkConfig.none()


def _plan(q: QuirkConfig, seed: int = 3, index: int = 0, preset: str | None = None, size: int = 64):
    job = _study_jobs(seed, index + 1, size, q, "", preset, 0.1, ["train"] * (index + 1))[index]
    return _plan_study(job)


def _sag(st, desc: str = SAG_T2):
    return next(p for p in st.plans if p.description == desc)


def test_new_rates_are_off_by_default_and_in_none() -> None:
    for name in ("spine_offcentre", "large_fov", "spine_cropped", "random_contrast", "axial_lower_only",
                 "compressed"):
        assert getattr(QuirkConfig(), name) == 0.0 and getattr(QuirkConfig.none(), name) == 0.0
        assert getattr(QuirkConfig.all_on(), name) == 0.0


@pytest.mark.parametrize("index", [0, 1, 2])
def test_offcentre_moves_the_canal_landmark_by_the_shift(index: int) -> None:
    a = _plan(CLEAN, index=index)
    b = _plan(dataclasses.replace(CLEAN, spine_offcentre=1.0), index=index)
    assert np.allclose(a.pat.s_disc, b.pat.s_disc)  # same patient
    pa, pb = _sag(a), _sag(b)
    pt = a.pat.canal_point(LEVEL_DISC["l3_l4"])
    ra, rb = project_point(pa.volumes()[0], pt), project_point(pb.volumes()[0], pt)
    shift_world = pb.positions[0] - pa.positions[0]
    assert abs(shift_world[0]) < 1e-9 and np.abs(shift_world[1:]).max() > 1.0
    assert np.abs(shift_world[1:]).max() <= 60.0 + 1e-9
    # Columns run posterior (row cosine ~ +y), rows inferior: the landmark moves against the FOV centre.
    dx_mm = (rb.x - ra.x) * pa.pixel_spacing[1]
    dy_mm = (rb.y - ra.y) * pa.pixel_spacing[0]
    assert dx_mm == pytest.approx(-(shift_world @ pa.row_cos[0]), abs=1e-6)
    assert dy_mm == pytest.approx(-(shift_world @ pa.col_cos[0]), abs=1e-6)
    normal = np.cross(pa.row_cos[0], pa.col_cos[0])
    assert rb.distance_mm - ra.distance_mm == pytest.approx(-(shift_world @ normal), abs=1e-6)


def test_large_fov_reaches_450_mm() -> None:
    fovs = []
    for i in range(6):
        st = _plan(dataclasses.replace(CLEAN, large_fov=1.0), index=i)
        fovs += [p.pixel_spacing[0] * max(p.rows, p.cols) for p in st.plans if p.description != AX_T2]
        pre = _plan(dataclasses.replace(CLEAN, large_fov=1.0), index=i, preset="rsna")
        assert all(400.0 <= p.pixel_spacing[0] * max(p.rows, p.cols) <= 450.0
                   for p in pre.plans if p.description != AX_T2)
    assert 300.0 <= min(fovs) and max(fovs) <= 450.0 and max(fovs) - min(fovs) > 30.0


def test_thin_protocol_reaches_many_slices() -> None:
    counts = [len(_sag(_plan(dataclasses.replace(CLEAN, thin_slices=1.0), index=i), d).positions)
              for i in range(8) for d in (SAG_T1, SAG_T2)]
    assert min(counts) >= 30 and max(counts) <= 80 and max(counts) > 55


@pytest.fixture(scope="module")
def cropped_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cropped") / "data"
    make_dataset(root, 3, 0, seed=8, size=48, quirks=dataclasses.replace(CLEAN, spine_cropped=1.0))
    return root


def test_cropped_study_has_no_lumbar_landmark_in_the_sagittal_fov(cropped_root: Path) -> None:
    desc = pd.read_csv(cropped_root / "train_series_descriptions.csv")
    land = pd.read_csv(cropped_root / "synth_landmarks.csv")
    coords = pd.read_csv(cropped_root / "train_label_coordinates.csv")
    for r in desc[desc.series_description != AX_T2].itertuples():
        (vol,) = read_series(cropped_root / "train_images" / str(r.study_id) / str(r.series_id))
        rows, cols = vol.pixels.shape[1:]
        pts = land[land.study_id == r.study_id][["x", "y", "z"]].to_numpy()
        assert len(pts) == len(LEVELS)
        for pt in pts:
            pr = project_point(vol, pt)
            assert not (-0.5 <= pr.y <= rows - 0.5)  # every disc centre above or below the images
        # The body is still imaged (a wrongly placed scan, not an empty one).
        assert vol.pixels.mean() > 0.05 * vol.pixels.max()
        assert r.series_id not in set(coords.series_id)  # no sagittal click: nothing to click on
    # Axial series still carry their subarticular points.
    assert set(coords.condition) == {"Left Subarticular Stenosis", "Right Subarticular Stenosis"}


def test_cropped_plan_misses_every_label_point() -> None:
    for i in range(4):
        st = _plan(dataclasses.replace(CLEAN, spine_cropped=1.0, spine_offcentre=1.0, large_fov=1.0), index=i)
        pts = lumbar_points(st.pat)
        for p in st.plans:
            if p.description == AX_T2:
                continue
            v = p.volumes()[0]
            assert all(not (-0.5 <= project_point(v, q).y <= p.rows - 0.5) for q in pts)


def test_random_tables_cover_real_like_and_random_orderings() -> None:
    rng = np.random.default_rng(0)
    tabs = [random_table(rng, "T2") for _ in range(200)]
    assert all(set(t) == set(TABLE_TISSUES) and min(t.values()) > 0 for t in tabs)
    real = real_table("T2")
    order_kept = [t["csf"] > t["muscle"] for t in tabs]
    assert 0.6 < np.mean(order_kept) < 0.95  # jittered tables keep CSF bright, random ones often do not
    assert np.std([t["fat"] for t in tabs]) > 0.15 and real["csf"] > real["muscle"]


def test_random_contrast_renders_the_table_on_the_labelled_tissue(tmp_path: Path) -> None:
    q = dataclasses.replace(CLEAN, random_contrast=1.0)
    make_dataset(tmp_path / "d", 1, 0, seed=4, size=96, quirks=q)
    labs = label_volumes(4, 0, size=96, quirks=q)
    st = _plan(q, seed=4, size=96)
    checked = 0
    for sl in labs:
        table = next(p for p in st.plans if p.series_id == sl.series_id).table
        assert table is not None
        folder = next((tmp_path / "d" / "train_images").glob(f"*/{sl.series_id}"))
        vols = read_series(folder)
        lab_vols = sl.volumes()
        for v, lv in zip(vols, lab_vols):
            np.testing.assert_allclose(v.positions, lv.positions, atol=1e-4)
            names, meds, vals = [], [], []
            for name, code in TISSUE_LABELS.items():
                m = lv.pixels == code
                if name in ("background", "nucleus", "marrow", "post_marrow") or m.sum() < 40:
                    continue  # nucleus darkens with dehydration, marrow is textured
                names.append(name)
                meds.append(np.median(v.pixels[m]))
                vals.append(table[name])
            if len(names) >= 5:
                rho = pd.Series(meds).rank().corr(pd.Series(vals).rank())
                assert rho > 0.7, (names, meds, vals)
                checked += 1
    assert checked >= 2


def test_axial_lower_only_covers_the_lowest_discs(tmp_path: Path) -> None:
    q = dataclasses.replace(CLEAN, axial_lower_only=1.0)
    make_dataset(tmp_path / "d", 2, 0, seed=6, size=48, quirks=q)
    coords = pd.read_csv(tmp_path / "d" / "train_label_coordinates.csv")
    sub = coords[coords.condition.str.contains("Subarticular")]
    assert len(sub) > 0 and set(sub.level) <= {"L3/L4", "L4/L5", "L5/S1"}
    assert "L5/S1" in set(sub.level)
    assert len(coords[~coords.condition.str.contains("Subarticular")]) == 2 * 15  # sagittal rows untouched
    for i in range(2):
        st = _plan(q, seed=6, index=i, size=48)
        (ax,) = [p for p in st.plans if p.description == AX_T2]
        assert ax.levels in (LEVELS[-2:], LEVELS[-3:])


def test_label_volumes_match_the_written_geometry_and_anatomy(phantom_root: Path, phantom_build: dict) -> None:
    labs = label_volumes(0, 0, size=96, quirks=CLEAN)  # the shared phantom: seed 0, 96 px, quirks off
    sid = phantom_build["train_study_ids"]
    assert labs[0].study_id in sid
    land = pd.read_csv(phantom_root / "synth_landmarks.csv")
    land = land[land.study_id == labs[0].study_id]
    for sl in labs:
        assert sl.labels.dtype == np.uint8 and sl.labels.shape == (len(sl.instance_numbers), sl.plan.rows, sl.plan.cols)
        assert set(np.unique(sl.labels)) <= set(TISSUE_LABELS.values())
        vols = read_series(phantom_root / "train_images" / str(sl.study_id) / str(sl.series_id))
        for v, lv in zip(vols, sl.volumes()):
            np.testing.assert_allclose(v.positions, lv.positions, atol=1e-4)
            np.testing.assert_allclose(v.row_cosine, lv.row_cosine, atol=1e-5)
            assert v.pixel_spacing == pytest.approx(lv.pixel_spacing, abs=1e-5)
            assert v.pixels.shape == lv.pixels.shape
            if sl.description == SAG_T2:
                # On T2, CSF is brighter than bone cortex wherever the labels say so.
                csf = v.pixels[lv.pixels == TISSUE_LABELS["csf"]]
                cortex = v.pixels[lv.pixels == TISSUE_LABELS["cortex"]]
                assert np.median(csf) > 3 * np.median(cortex)
        if sl.description == SAG_T2:
            (v,) = sl.volumes()
            for row in land.itertuples():
                pr = project_point(v, np.array([row.x, row.y, row.z]))
                k = int(np.argmin(np.abs(v.positions @ v.normal - np.array([row.x, row.y, row.z]) @ v.normal)))
                code = v.pixels[k, int(round(pr.y)), int(round(pr.x))]
                assert code in (TISSUE_LABELS["annulus"], TISSUE_LABELS["nucleus"])  # disc centre: disc


def test_label_volumes_follow_preset_and_reject_bad_index() -> None:
    labs = label_volumes(2, 1, preset="rsna", matrix_scale=0.08, quirks=CLEAN)
    assert {sl.description for sl in labs} == {SAG_T1, SAG_T2, AX_T2}
    sag = next(sl for sl in labs if sl.description == SAG_T1)
    assert 15 <= sag.labels.shape[0] <= 24
    from radspine.errors import ConfigError

    with pytest.raises(ConfigError):
        label_volumes(2, -1)
