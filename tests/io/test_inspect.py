"""``radspine inspect``: human and JSON summaries, exit codes for unusable or broken datasets."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from dataset_builder import edit_csv, write_dataset
from typer.testing import CliRunner

from radspine.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("insp") / "data", with_dicom=True)


def test_json_summary_counts(root):
    res = runner.invoke(app, ["inspect", str(root), "--json", "--read-dicom", "1"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["splits"]["train"]["studies"] == 2
    assert out["splits"]["train"]["series_per_type"] == {"Axial T2": 3, "Sagittal T1": 2, "Sagittal T2/STIR": 2}
    assert out["splits"]["test"]["studies"] == 1
    wide = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    spinal = wide[[c for c in wide.columns if c.startswith("spinal")]].to_numpy().ravel().tolist()
    assert out["labels"]["spinal_canal_stenosis"] == {
        "Normal/Mild": spinal.count("Normal/Mild"), "Moderate": spinal.count("Moderate"),
        "Severe": spinal.count("Severe"), "missing": spinal.count(""),
    }
    assert out["coordinate_rows"] == 50
    assert out["findings"] == {"duplicate_series_type": 1, "blank_label_with_coordinates": 1}
    assert out["label_coordinate_mismatches"] == {
        "blank_label_with_coordinates": {"spinal_canal_stenosis": 1}, "graded_without_coordinates": {}}
    blank = next(f for f in out["findings_list"] if f["kind"] == "blank_label_with_coordinates")
    assert (blank["study_id"], blank["condition"], blank["level"]) == (101, "spinal_canal_stenosis", "l5_s1")
    assert out["findings_list"][0]["study_id"] == 102
    # First study of each split decoded: 3 train series + 3 test series, one stack each.
    assert out["dicom_series_read"] == {"1 stack": 6}
    assert out["usable"] is True


def test_human_summary_lists_findings(root, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(root, data)
    (data / "train_images" / "101" / "2" / "1.dcm").write_bytes(b"garbage" * 40)
    res = runner.invoke(app, ["inspect", str(data), "--read-dicom", "5"])
    assert res.exit_code == 0, res.output
    assert "Studies and series" in res.stdout and "spinal_canal_stenosis" in res.stdout
    assert "duplicate_series_type (1)" in res.stdout
    # One bad slice costs that slice, not the series.
    assert "unreadable_series" not in res.stdout
    assert "dropped_slice (1)" in res.stdout and "1.dcm: not a DICOM file" in res.stdout
    assert "series 2 keeps 1 slice(s)" in res.stdout
    assert "usable" in res.stdout


def test_broken_csv_exits_2_with_one_line(root, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(root, data)
    edit_csv(data / "train.csv", lambda df: df.assign(spinal_canal_stenosis_l1_l2="Bad"))
    res = runner.invoke(app, ["inspect", str(data)])
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert "train.csv, row 1 (line 2), column 'spinal_canal_stenosis_l1_l2': unknown value 'Bad'" in lines[0]


def test_only_empty_series_folders_is_unusable(tmp_path):
    root = write_dataset(tmp_path / "data", with_dicom=False)
    res = runner.invoke(app, ["inspect", str(root), "--json", "--read-dicom", "3"])
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["usable"] is False
    assert out["splits"]["train"]["studies_with_images"] == 0 and out["splits"]["train"]["empty_series_folders"] == 7
    assert out["findings"]["empty_series_folder"] == 10 and out["findings"]["study_without_images"] == 3
    assert "no study with images" in res.stderr


def test_no_studies_is_unusable(tmp_path):
    (tmp_path / "test_images").mkdir()
    res = runner.invoke(app, ["inspect", str(tmp_path), "--json"])
    assert res.exit_code == 1
    assert json.loads(res.stdout)["usable"] is False
    assert "no study with images" in res.stderr
    res = runner.invoke(app, ["inspect", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "dataset folder does not exist" in res.stderr
