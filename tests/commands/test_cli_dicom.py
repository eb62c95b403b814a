"""``--dicom`` on inspect / localize / predict: plain exports go through a Kaggle-layout view."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from radspine import constants as C
from radspine.cli import app

runner = CliRunner()


def test_inspect_dicom_prints_every_series(hospital):
    res = runner.invoke(app, ["inspect", "--dicom", str(hospital["root"])])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    header = next(line for line in lines if "orientation" in line)
    for col in ("study", "series", "files", "orientation", "type", "why"):
        assert col in header
    rows = [line for line in lines if line.startswith("│")]  # header cells use ┃
    assert len(rows) == 8
    assert sum("Sagittal T2/STIR" in r for r in rows) == 2
    assert sum("skipped" in r and "mixed" in r and "3 orientations" in r for r in rows) == 2
    assert any("TR 3500 / TE 95" in r for r in rows)
    assert "2 non-DICOM" in res.stdout
    for uid in hospital["study_uids"]:
        assert uid in res.stdout


def test_inspect_dicom_json_and_override(hospital, tmp_path):
    res = runner.invoke(app, ["inspect", "--dicom", str(hospital["root"]), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["series_per_type"] == {C.SAG_T1: 2, C.SAG_T2: 2, C.AX_T2: 2}
    assert out["series_skipped"] == 2 and out["non_dicom_files"] == 2
    assert len(out["series_list"]) == 8
    ax = next(s for s in out["series_list"] if s["series_type"] == C.AX_T2)
    csv = tmp_path / "types.csv"
    csv.write_text(f"series_id,series_description\n{ax['series_uid']},skip\n")
    res = runner.invoke(app, ["inspect", "--dicom", str(hospital["root"]), "--series-types", str(csv), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["series_per_type"][C.AX_T2] == 1 and out["series_skipped"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect"], "pass exactly one of DATA_DIR"),
        (["inspect", "x", "--dicom", "y"], "pass exactly one of DATA_DIR"),
        (["localize", "--model", "m", "--out", "o.csv"], "pass exactly one of --data DIR"),
        (["predict", "--data", "d", "--dicom", "e", "--model", "m", "--out", "o.csv"], "not both"),
        (["predict", "--data", "d", "--series-types", "t.csv", "--model", "m", "--out", "o.csv"],
         "--series-types only applies with --dicom"),
        (["inspect", "--dicom", "/no/such/export"], "/no/such/export: DICOM folder does not exist"),
    ],
)
def test_data_and_dicom_are_exclusive_with_one_line_errors(args, message):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.output


def test_inspect_dicom_without_usable_series_exits_1(hospital, tmp_path):
    scan = json.loads(runner.invoke(app, ["inspect", "--dicom", str(hospital["root"]), "--json"]).stdout)
    csv = tmp_path / "types.csv"
    pd.DataFrame({"series_id": [s["series_uid"] for s in scan["series_list"]], "series_description": "skip"}).to_csv(
        csv, index=False)
    res = runner.invoke(app, ["inspect", "--dicom", str(hospital["root"]), "--series-types", str(csv)])
    assert res.exit_code == 1
    assert "no series typed" in res.stderr


# ---------------------------------------------------------------- predict wiring (fake predict)


def _fake_predict(calls: list):
    def predict(data_dir, model_dir, out_csv, **kw):
        calls.append({"data_dir": Path(data_dir), **kw})
        from radspine.io.dataset import Dataset

        ids = [s.study_id for s in Dataset.open(data_dir).studies("test")]
        Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
        return {"rows": 25 * len(ids), "studies": len(ids), "rows_from_priors": 0, "skipped": {}, "seconds": 0.0}

    return predict


def test_predict_passes_study_uids_and_points(hospital, tmp_path, monkeypatch):
    import radspine.pipeline

    calls: list = []
    monkeypatch.setattr(radspine.pipeline, "predict", _fake_predict(calls))
    out = tmp_path / "submission.csv"
    pts = tmp_path / "points.csv"
    res = runner.invoke(app, ["predict", "--dicom", str(hospital["root"]), "--model", "m", "--out", str(out),
                              "--points", str(pts), "--work", str(tmp_path / "w")])
    assert res.exit_code == 0, res.output
    (call,) = calls
    assert call["points"] == pts
    assert sorted(call["study_uids"].values()) == sorted(hospital["study_uids"])
    assert call["data_dir"] == tmp_path / "w" / "dicom_view"
    uids = pd.read_csv(call["data_dir"] / "study_uids.csv", dtype={"study_uid": str}).set_index("study_id")["study_uid"]
    assert call["study_uids"] == uids.to_dict()


# ---------------------------------------------------------------- end to end with the demo model


@pytest.mark.slow
def test_predict_dicom_end_to_end_with_demo_model(demo_run, hospital, tmp_path):
    model = Path(demo_run["out"]) / "model"
    out = tmp_path / "submission.csv"
    t0 = time.perf_counter()
    res = runner.invoke(app, ["predict", "--dicom", str(hospital["root"]), "--model", str(model), "--out", str(out),
                              "--workers", "1", "--quiet"])
    seconds = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    view = tmp_path / "predict_work" / "dicom_view"
    uids = pd.read_csv(view / "study_uids.csv")
    sub = pd.read_csv(out)
    assert len(sub) == 25 * len(uids) == 50
    assert set(sub["row_id"].str.split("_").str[0].astype(int)) == set(uids["study_id"])
    pred = pd.read_csv(tmp_path / "predictions.csv")
    assert "study_uid" in pred.columns
    assert (pred["study_uid"] == pred["study_id"].map(dict(zip(uids["study_id"], uids["study_uid"])))).all()
    assert sorted(pred["study_uid"].unique()) == sorted(hospital["study_uids"])
    print(f"predict --dicom end to end: {seconds:.1f} s")
    # The viewer reads the same export (its own view of it gives the same ids) and shows each study's UID.
    res = runner.invoke(app, ["view", "--dicom", str(hospital["root"]), "--predictions", str(tmp_path), "--out",
                              str(tmp_path / "viewer"), "--quiet"])
    assert res.exit_code == 0, res.output
    pages = sorted((tmp_path / "viewer").glob("study_*.html"))
    index = (tmp_path / "viewer" / "index.html").read_text()
    assert len(pages) == 2 and all(uid in index for uid in hospital["study_uids"])
    assert not any("not among the readable stacks" in p.read_text() for p in pages)
