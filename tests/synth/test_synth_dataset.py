"""The shared phantom reads back through radspine.io and SimpleITK, and its labels sit on their anatomy."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radspine.constants import (
    AX_T2,
    CONDITION_KEYS,
    LABEL_COLUMNS,
    LEVEL_KEYS,
    SAG_T1,
    SAG_T2,
    SEVERITY_COLUMNS,
)
from radspine.geometry import instance_to_world
from radspine.io.dataset import Dataset
from radspine.io.dicom import read_series
from radspine.synth import QuirkConfig, make_dataset

# Every anatomical and acquisition variation on (half the sagittal series thin, so thick ones show partial
# volume too); reader click noise off so label points can be checked against their structures exactly
# (click noise is measured in test_phantom.py).
VARIED = dataclasses.replace(QuirkConfig.all_on(), click_noise_mm=0.0, thin_slices=0.5)


@pytest.fixture(scope="module")
def varied_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("varied") / "data"
    make_dataset(root, 5, 1, seed=3, size=96, quirks=VARIED)
    return root


@pytest.fixture(scope="module", params=["clean", "varied"])
def root(request: pytest.FixtureRequest) -> Path:
    """The shared clean phantom, then one with every variation on: label placement must hold on both."""
    return request.getfixturevalue("phantom_root" if request.param == "clean" else "varied_root")


@pytest.fixture(scope="module")
def ds(root: Path) -> Dataset:
    return Dataset.open(root)


@pytest.fixture(scope="module")
def volumes(ds: Dataset) -> dict[int, list]:
    out = {}
    for split in ("train", "test"):
        for st in ds.studies(split):
            for s in st.series:
                out[s.series_id] = read_series(s.path, study_id=st.study_id, series_id=s.series_id,
                                               description=s.description)
    return out


@pytest.fixture(scope="module")
def coords(root: Path) -> pd.DataFrame:
    c = pd.read_csv(root / "train_label_coordinates.csv")
    c["condition"] = c.condition.map(CONDITION_KEYS)
    c["level"] = c.level.map(LEVEL_KEYS)
    return c


@pytest.fixture(scope="module")
def landmarks(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "synth_landmarks.csv").set_index(["study_id", "level"])


def _stack_of(volumes, series_id: int, instance: int):
    return next(v for v in volumes[series_id] if instance in set(v.instance_numbers.tolist()))


def test_layout_and_csv_schemas(phantom_root: Path, phantom_build: dict):  # clean phantom only
    for name in ("train.csv", "train_label_coordinates.csv", "train_series_descriptions.csv",
                 "test_series_descriptions.csv", "sample_submission.csv", "test_solution.csv", "synth_truth.csv"):
        assert (phantom_root / name).is_file(), name
    assert list(pd.read_csv(phantom_root / "train.csv").columns) == ["study_id", *LABEL_COLUMNS]
    assert list(pd.read_csv(phantom_root / "train_label_coordinates.csv").columns) == [
        "study_id", "series_id", "instance_number", "condition", "level", "x", "y"]
    sol = pd.read_csv(phantom_root / "test_solution.csv")
    assert list(sol.columns) == ["row_id", *SEVERITY_COLUMNS, "study_id"]
    assert (sol[list(SEVERITY_COLUMNS)].sum(axis=1) == 1).all()
    assert set(sol.study_id) == set(phantom_build["test_study_ids"])
    sub = pd.read_csv(phantom_root / "sample_submission.csv")
    assert len(sub) == 25 * len(phantom_build["test_study_ids"]) and set(sol.row_id) <= set(sub.row_id)
    truth = pd.read_csv(phantom_root / "synth_truth.csv")
    assert list(truth.columns) == ["study_id", "condition", "level", "severity", "grade", "reader_grade"]
    assert (truth.grade == truth.reader_grade).all()  # the clean phantom has no reader noise
    assert len(truth) == 25 * 8
    ids = phantom_build["train_study_ids"] + phantom_build["test_study_ids"]
    assert all(10**6 <= i < 10**10 for i in ids)
    assert np.diff(sorted(ids)).min() > 1  # random, not sequential
    # Only image folders live under *_images; scoring files stay outside them.
    assert sorted(p.name for p in (phantom_root / "test_images").iterdir()) == sorted(
        str(i) for i in phantom_build["test_study_ids"])


def test_dataset_reads_back_clean(ds: Dataset, root: Path):
    ids = sorted(int(p.name) for p in (root / "train_images").iterdir())
    assert [s.study_id for s in ds.studies("train")] == ids
    assert ds.findings == []
    for st in ds.studies("train") + ds.studies("test"):
        types = sorted(s.description for s in st.series)
        assert types == sorted([AX_T2, SAG_T1, SAG_T2])
    assert len(ds.coordinates) == 25 * len(ids)
    lab = ds.labels_long()
    assert lab.grade.notna().all() and len(lab) == 25 * len(ids)


def test_series_geometry_is_realistic(volumes, root: Path):
    acq = pd.read_csv(root / "synth_acquisition.csv").set_index("series_id")
    for sid, stacks in volumes.items():
        v = stacks[0]
        if v.description.startswith("Sagittal"):
            assert len(stacks) == 1
            if acq.loc[sid, "slices"] >= 30:  # thin-slice protocol
                assert 30 <= v.shape[0] <= 80 and 1.0 <= v.slice_spacing <= 2.0 + 1e-6
            else:
                assert 15 <= v.shape[0] <= 17 and 3.5 <= v.slice_spacing <= 4.5 + 1e-6
            assert abs(v.normal[0]) > 0.99  # sagittal: normal along patient left/right
            # In-plane convention as written: columns run posterior (or anterior when flipped), rows along z.
            flip = acq.loc[sid, "flip"]
            assert np.sign(v.row_cosine[1]) == (-1 if flip == 1 else 1)
            assert v.col_cosine[2] == pytest.approx(1.0 if flip == 2 else -1.0, abs=1e-6)
        else:
            assert all(abs(s.normal[2]) > 0.85 for s in stacks)  # axial (possibly tilted) stacks
            assert len(stacks) in (1, 5)
            flip = acq.loc[sid, "flip"]
            assert np.sign(v.row_cosine[0]) == (-1 if flip == 1 else 1) and abs(v.row_cosine[0]) > 0.95
            assert np.sign(v.col_cosine[1]) == (-1 if flip == 2 else 1)
        assert v.pixels.dtype == np.float32 and v.pixels.max() > 20


def test_simpleitk_reads_same_geometry_and_pixels(ds: Dataset, volumes):  # both phantoms (flipped IOPs too)
    sitk = pytest.importorskip("SimpleITK")
    st = ds.studies("train")[0]
    for s in st.series:
        if s.description == AX_T2:
            continue  # multi-stack; ITK's series reader assumes one regular stack
        vol = volumes[s.series_id][0]
        reader = sitk.ImageSeriesReader()
        files = reader.GetGDCMSeriesFileNames(str(s.path))
        reader.SetFileNames(files)
        img = reader.Execute()
        arr = sitk.GetArrayFromImage(img).astype(np.float32)
        assert arr.shape == vol.shape
        direction = np.array(img.GetDirection()).reshape(3, 3)
        assert np.allclose(direction[:, 0], vol.row_cosine, atol=1e-5)
        assert np.allclose(direction[:, 1], vol.col_cosine, atol=1e-5)
        assert np.allclose(img.GetSpacing()[:2], vol.pixel_spacing[::-1], atol=1e-5)
        assert img.GetSpacing()[2] == pytest.approx(vol.slice_spacing, abs=1e-3)
        # ITK orders slices along its normal too; match the first slice's origin and pixels.
        k0 = 0 if np.allclose(img.GetOrigin(), vol.positions[0], atol=1e-3) else vol.shape[0] - 1
        assert np.allclose(img.GetOrigin(), vol.positions[k0], atol=1e-3)
        assert np.array_equal(arr[0], vol.pixels[k0])


def test_canal_points_are_csf_bright_on_mid_sagittal_t2(coords, volumes, landmarks, root):
    truth = pd.read_csv(root / "synth_truth.csv").set_index(["study_id", "condition", "level"])
    checked = 0
    for r in coords[coords.condition == "spinal_canal_stenosis"].itertuples():
        v = _stack_of(volumes, r.series_id, r.instance_number)
        assert v.description == SAG_T2
        k = v.slice_index(r.instance_number)
        # The nearest slice to the midline holds the label.
        # The slice nearest the midline holds the label (world x of the clicked point ~ midline).
        p = instance_to_world(v, r.x, r.y, r.instance_number)
        assert abs(p[0] - landmarks.loc[(r.study_id, r.level), "midline_x"]) <= v.slice_spacing / 2 + 1.5
        if truth.loc[(r.study_id, "spinal_canal_stenosis", r.level), "severity"] > 0.45 or r.level == "l1_l2":
            continue  # an effaced canal is no longer bright; the conus (cord) may fill the sac at L1/L2
        img = v.pixels[k]
        x, y = int(round(r.x)), int(round(r.y))
        at = img[y - 1 : y + 2, x - 1 : x + 2].mean()
        # 8 px either side along the image axis that runs anterior-posterior (columns, as a rule).
        ring = np.concatenate([img[y - 8 : y + 9, x - 8], img[y - 8 : y + 9, x + 8]])
        assert at > 1.4 * np.median(ring), (r.study_id, r.level)
        checked += 1
    assert checked >= 3 * len(set(coords.study_id))


def test_subarticular_points_lie_on_disc_plane_in_their_recess(coords, volumes, landmarks):
    rows = coords[coords.condition.str.contains("subarticular")]
    assert len(rows) == 2 * 5 * coords.study_id.nunique()
    for r in rows.itertuples():
        v = _stack_of(volumes, r.series_id, r.instance_number)
        assert v.description == AX_T2
        p = instance_to_world(v, r.x, r.y, r.instance_number)
        lm = landmarks.loc[(r.study_id, r.level)]
        c = lm[["x", "y", "z"]].to_numpy(float)
        n = lm[["nx", "ny", "nz"]].to_numpy(float)
        assert abs((p - c) @ n) < v.slice_spacing / 2 + 1.5  # nearest slice to the disc
        side = 1 if r.condition.startswith("left") else -1
        lateral = (p[0] - lm.midline_x) * side
        assert 4.0 < lateral < 16.0  # in that side's recess, left = +x


def test_foraminal_points_on_correct_side_para_sagittal_t1(coords, volumes, landmarks):
    rows = coords[coords.condition.str.contains("foraminal")]
    assert len(rows) == 2 * 5 * coords.study_id.nunique()
    for r in rows.itertuples():
        v = _stack_of(volumes, r.series_id, r.instance_number)
        assert v.description == SAG_T1
        p = instance_to_world(v, r.x, r.y, r.instance_number)
        lm = landmarks.loc[(r.study_id, r.level)]
        side = 1 if r.condition.startswith("left") else -1
        assert 12.0 < (p[0] - lm.midline_x) * side < 30.0
        # The foramen sits at its disc: within a vertebral half-height along the spine.
        c = lm[["x", "y", "z"]].to_numpy(float)
        n = lm[["nx", "ny", "nz"]].to_numpy(float)
        assert -3.0 < (p - c) @ n < 15.0
        # T1: foraminal fat is brighter than the slice's median.
        k = v.slice_index(r.instance_number)
        img = v.pixels[k]
        assert img[int(round(r.y)) - 1 : int(round(r.y)) + 2, int(round(r.x)) - 1 : int(round(r.x)) + 2].mean() \
            > np.median(img)
