"""radspine.io.dataset: schemas, studies, labels, coordinates, findings, batch reading."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest
from dataset_builder import SERIES, edit_csv, write_dataset
from dicom_writer import ramp, write_series

from radspine import constants as C
from radspine.errors import DatasetError, DicomError
from radspine.io.dataset import Dataset, iter_studies, read_study


@pytest.fixture
def root(tmp_path):
    return write_dataset(tmp_path / "data")


def kinds(ds: Dataset) -> dict[str, list[tuple]]:
    return {k: sorted((f.study_id, f.series_id) for f in v) for k, v in ds.findings_by_kind().items()}


def test_clean_dataset(root):
    ds = Dataset.open(root)
    assert ds.splits == ("train", "test") and ds.has_split("train") and ds.has_split("test")
    assert [s.study_id for s in ds.studies("train")] == [101, 102]
    assert [s.study_id for s in ds.studies("test")] == [900]
    st = ds.study(102, "train")
    assert [s.series_id for s in st.series_of_type("Axial T2")] == [13, 14]
    assert st.series[0].path == root / "train_images" / "102" / "11"
    # The only problems in a clean dataset are real-data quirks: two axial series, a blank grade with a point.
    assert kinds(ds) == {"duplicate_series_type": [(102, None)], "blank_label_with_coordinates": [(101, 2)]}
    assert ds.usable
    assert ds.sample_submission is not None and len(ds.sample_submission) == 25


def test_labels_long_matches_train_csv(root):
    ds = Dataset.open(root)
    long = ds.labels_long()
    assert list(long.columns) == ["study_id", "condition", "level", "grade"]
    assert len(long) == 2 * 25
    wide = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False).set_index("study_id")
    for r in long.itertuples(index=False):
        text = wide.loc[str(r.study_id), C.label_column(r.condition, r.level)]
        if text == "":
            assert np.isnan(r.grade)
        else:
            assert r.grade == C.grade_index(text)
    assert long["grade"].isna().sum() == 1
    # Competition order: condition-major, level-minor, per study.
    first = long[long.study_id == 101]
    assert [C.label_column(c, lv) for c, lv in zip(first.condition, first.level, strict=True)] == list(C.LABEL_COLUMNS)


def test_coordinates_joined_to_series_type(root):
    ds = Dataset.open(root)
    co = ds.coordinates
    assert list(co.columns) == ["study_id", "series_id", "instance_number", "condition", "level", "x", "y",
                                "series_description"]
    assert len(co) == 50
    assert set(co.condition) == set(C.CONDITIONS) and set(co.level) == set(C.LEVELS)
    for r in co.itertuples(index=False):
        assert r.series_description == SERIES[r.study_id][r.series_id]
        assert r.series_description == C.CONDITION_SERIES[r.condition]
    assert co.x.dtype == np.float64 and co.instance_number.dtype == np.int64


def test_findings_for_real_data_problems(root):
    # Study in train.csv without images.
    edit_csv(root / "train.csv", lambda df: pd.concat([df, df.iloc[[0]].assign(study_id="103")]))
    # Image folder without a description row, in a study without labels.
    write_series(root / "train_images" / "104" / "41", ramp(1, 4, 4), origin=(0, 0, 0), row_cosine=(1, 0, 0),
                 col_cosine=(0, 1, 0))
    # Unknown description on a third series of 101.
    write_series(root / "train_images" / "101" / "4", ramp(1, 4, 4), origin=(0, 0, 0), row_cosine=(1, 0, 0),
                 col_cosine=(0, 1, 0))
    edit_csv(root / "train_series_descriptions.csv",
             lambda df: pd.concat([df, pd.DataFrame([["101", "4", "Coronal T2"]], columns=df.columns)]))

    def coords(df):
        df = df[~((df.study_id == "101") & (df.level == "L5/S1"))].copy()  # 101: only 20 rows
        spinal = (df.study_id == "102") & (df.condition == "Spinal Canal Stenosis") & (df.level == "L1/L2")
        df.loc[spinal, "series_id"] = "11"  # on the Sagittal T1 instead of T2/STIR
        return df

    edit_csv(root / "train_label_coordinates.csv", coords)
    (root / "test_images" / "900" / "notes.txt").write_text("x")
    ds = Dataset.open(root)
    got = kinds(ds)
    assert got["study_without_images"] == [(103, None)]
    assert got["series_without_description"] == [(104, 41)]
    assert got["study_without_labels"] == [(104, None)]
    assert got["unknown_description"] == [(101, 4)]
    assert got["duplicate_series_type"] == [(102, None)]
    assert got["coordinate_unexpected_series"] == [(102, 11)]
    assert got["few_coordinates"] == [(101, None), (103, None)]  # 20 rows; none at all
    assert got["stray_entry"] == [(900, None)]
    assert (104, None) in got["missing_series_type"]
    # 101 lost its L5/S1 points (one of them on the blank cell); 103 has grades but no point at all.
    graded = [(f.study_id, f.condition, f.level) for f in ds.findings if f.kind == "graded_without_coordinates"]
    assert graded == [(101, c, "l5_s1") for c in C.CONDITIONS[1:]] + [
        (103, c, lv) for c in C.CONDITIONS for lv in C.LEVELS if (c, lv) != (C.CONDITIONS[0], "l5_s1")]
    assert "blank_label_with_coordinates" not in got
    mism = ds.summary()["label_coordinate_mismatches"]
    assert mism["blank_label_with_coordinates"] == {}
    assert mism["graded_without_coordinates"] == {C.CONDITIONS[0]: 4, **{c: 6 for c in C.CONDITIONS[1:]}}
    # The study without images is still listed (downstream falls back), with no series.
    assert ds.study(103, "train").series == ()
    assert [s.study_id for s in ds.studies("train")] == [101, 102, 103, 104]
    msg = next(f.message for f in ds.findings if f.kind == "coordinate_unexpected_series")
    assert "'Sagittal T1'" in msg and "expected 'Sagittal T2/STIR'" in msg


def test_test_only_and_train_only(root):
    test_only = root.parent / "test_only"
    test_only.mkdir()
    shutil.copytree(root / "test_images", test_only / "test_images")
    shutil.copy(root / "test_series_descriptions.csv", test_only)
    ds = Dataset.open(test_only)
    assert ds.splits == ("test",) and not ds.has_split("train")
    assert len(ds.labels_long()) == 0 and len(ds.coordinates) == 0
    with pytest.raises(DatasetError, match="has no train split"):
        ds.studies("train")
    assert [s.study_id for s in ds.studies("test")] == [900]
    shutil.rmtree(root / "test_images")
    (root / "test_series_descriptions.csv").unlink()
    assert Dataset.open(root).splits == ("train",)


def test_unknown_study_and_split(root):
    ds = Dataset.open(root)
    with pytest.raises(DatasetError, match="study 5 is not in the train split"):
        ds.study(5, "train")
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        ds.studies("val")


def _set(col, row, value):
    def fn(df):
        df[col] = df[col].astype(object)
        df.loc[df.index[row], col] = value
        return df
    return fn


BAD_CSVS = [
    ("train.csv", lambda df: df.rename(columns={C.LABEL_COLUMNS[3]: "spinal_l4"}),
     r"train\.csv, column 'spinal_canal_stenosis_l4_l5': missing column"),
    ("train.csv", _set(C.LABEL_COLUMNS[7], 1, "Mild"),
     r"train\.csv, row 2 \(line 3\), column 'left_neural_foraminal_narrowing_l3_l4': unknown value 'Mild'"),
    ("train.csv", _set("study_id", 1, "101"), r"train\.csv, row 2 \(line 3\), column 'study_id': duplicate row"),
    ("train.csv", lambda df: df.assign(extra="1"), r"train\.csv, column 'extra': unexpected column"),
    ("train_label_coordinates.csv", _set("x", 7, "12,5"),
     r"train_label_coordinates\.csv, row 8 \(line 9\), column 'x': expected a number, got '12,5'"),
    ("train_label_coordinates.csv", _set("condition", 3, "Spinal Stenosis"),
     r"train_label_coordinates\.csv, row 4 \(line 5\), column 'condition': unknown value 'Spinal Stenosis'"),
    ("train_label_coordinates.csv", _set("level", 0, "L6/S1"),
     r"train_label_coordinates\.csv, row 1 \(line 2\), column 'level': unknown value 'L6/S1'"),
    ("train_label_coordinates.csv", _set("instance_number", 2, "3.5"),
     r"train_label_coordinates\.csv, row 3 \(line 4\), column 'instance_number': expected a non-negative integer"),
    ("sample_submission.csv", _set("row_id", 4, "900_spinal_canal_stenosis_l1_l2"),
     r"sample_submission\.csv, row 5 \(line 6\), column 'row_id': duplicate row"),
    ("sample_submission.csv", _set("row_id", 0, "900_spine_l1_l2"),
     r"sample_submission\.csv, row 1 \(line 2\), column 'row_id': malformed row_id"),
    ("test_series_descriptions.csv", _set("series_id", 2, "91"),
     r"test_series_descriptions\.csv, row 3 \(line 4\), column 'study_id\+series_id': duplicate row"),
]


@pytest.mark.parametrize(("name", "edit", "pattern"), BAD_CSVS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_CSVS)])
def test_bad_csv_is_one_line_error(root, name, edit, pattern):
    edit_csv(root / name, edit)
    with pytest.raises(DatasetError, match=pattern) as exc:
        Dataset.open(root)
    assert "\n" not in str(exc.value)


def test_empty_csv_and_missing_root(root, tmp_path):
    (root / "train.csv").write_text("")
    with pytest.raises(DatasetError, match=r"train\.csv: file is empty"):
        Dataset.open(root)
    with pytest.raises(DatasetError, match="dataset folder does not exist"):
        Dataset.open(tmp_path / "missing")
    (tmp_path / "bare").mkdir()
    with pytest.raises(DatasetError, match="no train or test split"):
        Dataset.open(tmp_path / "bare")


def test_batch_drops_bad_slices_skips_bad_series_and_goes_on(tmp_path):
    root = write_dataset(tmp_path / "data", with_dicom=True)
    (root / "train_images" / "101" / "2" / "1.dcm").write_bytes(b"not a dicom file at all" * 10)
    for name in ("1.dcm", "2.dcm"):  # every slice of 101/3 unreadable: the series is skipped
        (root / "train_images" / "101" / "3" / name).write_bytes(b"\x00" * 128 + b"DICM" + b"\x00" * 20)
    ds = Dataset.open(root)
    out = list(iter_studies(ds.studies("train")))
    assert [st.study_id for st, _, _ in out] == [101, 102]
    vols_101, found_101 = out[0][1], out[0][2]
    assert sorted(vols_101) == [1, 2]  # series 2 kept with its good slice, series 3 skipped
    assert vols_101[2][0].instance_numbers.tolist() == [2]
    assert [(f.kind, f.series_id) for f in found_101] == [("dropped_slice", 2), ("unreadable_series", 3)]
    drop, skip = found_101
    assert drop.file == str(root / "train_images" / "101" / "2" / "1.dcm")
    assert "1.dcm: not a DICOM file" in drop.message and "series 2 keeps 1 slice(s)" in drop.message
    assert "no readable DICOM slice among 2 files" in skip.message
    assert all("\n" not in f.message for f in found_101)
    vols_102 = out[1][1]
    assert sorted(vols_102) == [11, 12, 13, 14] and out[1][2] == []
    v = vols_102[13][0]
    assert (v.study_id, v.series_id, v.description, v.shape) == (102, 13, "Axial T2", (2, 8, 8))
    with pytest.raises(DicomError, match=r"101/3: no readable DICOM slice"):
        read_study(ds.study(101, "train"), skip_errors=False)
    # A dropped slice is not an error even without skip_errors: the series was read.
    st = ds.study(101, "train")
    _, found = read_study(dataclasses.replace(st, series=st.series[:2]), skip_errors=False)
    assert [f.kind for f in found] == ["dropped_slice"]


def test_empty_series_folders_are_no_images(tmp_path):
    root = write_dataset(tmp_path / "data", with_dicom=False)
    ds = Dataset.open(root)
    assert not ds.usable and ds.summary()["usable"] is False
    got = kinds(ds)
    assert got["study_without_images"] == [(101, None), (102, None), (900, None)]
    assert len(got["empty_series_folder"]) == 10
    assert "missing_series_type" not in got and "duplicate_series_type" not in got
    assert all(st.series == () for split in ds.splits for st in ds.studies(split))
    summ = ds.summary()["splits"]
    assert summ["train"]["studies_with_images"] == 0 and summ["train"]["empty_series_folders"] == 7
    assert summ["test"]["series"] == 0 and summ["test"]["empty_series_folders"] == 3
    msg = next(f.message for f in ds.findings if f.kind == "study_without_images" and f.study_id == 102)
    assert msg.startswith("train study 102: all 4 series folder(s) of ") and "hold no DICOM file" in msg

    # One study with images makes the dataset usable; a folder of non-DICOM files is still empty.
    write_series(root / "train_images" / "101" / "1", ramp(2, 4, 4), origin=(0, 0, 0), row_cosine=(1, 0, 0),
                 col_cosine=(0, 1, 0))
    (root / "train_images" / "101" / "2" / "1.dcm").write_bytes(b"\x00" * 200)
    (root / "train_images" / "101" / "2" / "2.dcm").write_bytes(b"")
    ds = Dataset.open(root)
    assert ds.usable
    assert [s.series_id for s in ds.study(101, "train").series] == [1]
    empty = {f.series_id: f.message for f in ds.findings if f.kind == "empty_series_folder" and f.study_id == 101}
    assert empty[2].endswith("101/2: series folder holds 2 file(s), none of them DICOM; treated as no images")
    assert empty[3].endswith("101/3: series folder is empty; treated as no images")
    assert {(f.kind, f.study_id) for f in ds.findings if f.kind == "missing_series_type"} == {
        ("missing_series_type", 101)}  # 101 now lacks its T2/STIR and axial series
    assert ds.summary()["splits"]["train"]["studies_with_images"] == 1
