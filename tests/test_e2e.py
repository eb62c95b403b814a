"""End to end on a small phantom: unlabeled held-out studies → localize → features → graders → submission."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radspine.constants import CONDITIONS, LEVELS
from radspine.errors import ModelError
from radspine.submission import validate_submission


def _test_ids(root: Path) -> list[int]:
    return sorted(pd.read_csv(root / "data" / "test_series_descriptions.csv")["study_id"].unique().tolist())


def test_demo_beats_priors_on_unseen_studies(demo_run: dict) -> None:
    ours = demo_run["score"]["radspine"]
    base = demo_run["score"]["priors_only"]
    # 24 training studies at 96 px are enough for the phantom's geometric signal to show on 6 unseen
    # studies; the margin is well inside what repeated seeds gave (see issue notes), not a tuned number.
    assert ours["score"] < base["score"] - 0.05, (ours, base)
    assert ours["spinal"] < base["spinal"] - 0.05, (ours, base)
    # any_severe_spinal rests on 6 study-level outcomes here: the same code and seed gave 0.58 with one torch
    # thread and 0.74 with two (priors 0.68), so this only guards against a broken term; `make demo`'s 20
    # unseen studies are where it is compared (0.59 vs 0.70 priors).
    assert ours["any_severe_spinal"] < base["any_severe_spinal"] + 0.15, (ours, base)


def test_submission_is_complete_and_valid(demo_run: dict) -> None:
    root = Path(demo_run["out"])
    sub = pd.read_csv(root / "submission.csv")
    ids = _test_ids(root)
    validate_submission(sub, ids)
    assert len(sub) == 25 * len(ids)
    details = pd.read_csv(root / "predictions.csv")
    sev = details["expected_severity"].to_numpy()
    assert np.all((sev >= 0) & (sev <= 1))
    np.testing.assert_allclose(sev, 0.5 * details["moderate"] + details["severe"], atol=1e-5)


def test_localizer_error_is_bounded(demo_run: dict) -> None:
    overall = demo_run["localizer"]["per_condition"]["overall"]
    # Canonical sagittal grid is 4 mm/px: a median 3D error under 10 mm is about 2 grid pixels plus
    # slice choice, which keeps the patch centre (48 mm patches) on its level.
    assert overall["median_mm"] < 10.0, overall


def test_predicted_sides_follow_world_x(demo_run: dict) -> None:
    pts = pd.read_csv(Path(demo_run["out"]) / "points_detail.csv")
    pts = pts[pts["world_x"].notna()]
    by = pts.set_index(["study_id", "condition", "level"])["world_x"]
    checked = 0
    for sid in pts["study_id"].unique():
        for lv in ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"):
            for kind in ("Neural Foraminal Narrowing", "Subarticular Stenosis"):
                left, right = (sid, f"Left {kind}", lv), (sid, f"Right {kind}", lv)
                if left in by.index and right in by.index:
                    # Patient left is +x in LPS.
                    assert by[left] > by[right], (sid, kind, lv)
                    checked += 1
    assert checked >= 20


@pytest.fixture(scope="module")
def broken_data(demo_run: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """A copy of the demo's test split where one study has a corrupt series and another no axial series."""
    src = Path(demo_run["out"]) / "data"
    dst = tmp_path_factory.mktemp("broken") / "data"
    shutil.copytree(src / "test_images", dst / "test_images")
    desc = pd.read_csv(src / "test_series_descriptions.csv")
    ids = sorted(desc["study_id"].unique())
    corrupt, no_axial = int(ids[0]), int(ids[1])
    sag_t2 = desc[(desc.study_id == corrupt) & (desc.series_description == "Sagittal T2/STIR")]["series_id"].iloc[0]
    for f in (dst / "test_images" / str(corrupt) / str(sag_t2)).glob("*.dcm"):
        f.write_bytes(f.read_bytes()[:200])  # truncated files
    ax = desc[(desc.study_id == no_axial) & (desc.series_description == "Axial T2")]["series_id"]
    for s in ax:
        shutil.rmtree(dst / "test_images" / str(no_axial) / str(s))
    desc[~desc["series_id"].isin(ax)].to_csv(dst / "test_series_descriptions.csv", index=False)
    return dst, corrupt, no_axial


def test_predict_survives_corrupt_and_missing_series(demo_run: dict, broken_data, tmp_path: Path) -> None:
    from radspine.predict import predict

    data, corrupt, no_axial = broken_data
    model = Path(demo_run["out"]) / "model"
    out = tmp_path / "submission.csv"
    summary = predict(data, model, out, workers=1)
    sub = pd.read_csv(out)
    ids = sorted(pd.read_csv(data / "test_series_descriptions.csv")["study_id"].unique())
    validate_submission(sub, ids)
    for sid in (corrupt, no_axial):
        rows = sub[sub["row_id"].str.startswith(f"{sid}_")]
        assert len(rows) == 25
        assert {r.split("_", 1)[1] for r in rows["row_id"]} == {f"{c}_{lv}" for c in CONDITIONS for lv in LEVELS}
    log = json.loads((tmp_path / "predict_work" / "predict_log.json").read_text())
    assert str(corrupt) in log["skipped"] and str(no_axial) in log["skipped"], log["skipped"]
    assert summary["rows"] == 25 * len(ids)


def test_predict_refuses_other_feature_config(demo_run: dict, tmp_path: Path) -> None:
    from radspine.predict import predict

    model = tmp_path / "model"
    shutil.copytree(Path(demo_run["out"]) / "model", model)
    cfg_path = model / "features" / "features_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["patches"]["percentiles"] = [2.0, 98.0]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="feature config hash"):
        predict(Path(demo_run["out"]) / "data", model, tmp_path / "s.csv", workers=1)
    assert not (tmp_path / "s.csv").exists()


def test_demo_leaves_its_reports(demo_run: dict) -> None:
    root = Path(demo_run["out"])
    ids = _test_ids(root)
    assert (root / "report" / "index.html").is_file()
    pngs = sorted((root / "report").glob("*.png"))
    assert len(pngs) == len(ids) and all(p.stat().st_size > 10_000 for p in pngs)
    assert demo_run["reports"]["n"] == len(ids)


def test_predictions_carry_named_measurements(demo_run: dict) -> None:
    details = pd.read_csv(Path(demo_run["out"]) / "predictions.csv")
    names = ["dural_sac_area_mm2", "canal_ap_mm", "foramen_area_mm2", "foramen_height_mm", "recess_depth_mm",
             "disc_height_mm"]
    assert set(names) <= set(details.columns)
    spinal = details[details["group"] == "spinal"]
    fora = details[details["group"] == "foraminal"]
    # Each measurement only on its own condition's rows; measured on most of them on the clean phantom.
    assert spinal["foramen_area_mm2"].isna().all() and fora["dural_sac_area_mm2"].isna().all()
    assert spinal["dural_sac_area_mm2"].notna().mean() > 0.5 and fora["foramen_area_mm2"].notna().mean() > 0.5
    assert (spinal["dural_sac_area_mm2"].dropna() > 0).all()


def _points_copy(demo_run: dict, dst: Path) -> tuple[Path, pd.DataFrame]:
    src = Path(demo_run["out"]) / "points.csv"
    pts = pd.read_csv(src)
    dst.mkdir(parents=True, exist_ok=True)
    pts.to_csv(dst / "points.csv", index=False)
    return dst / "points.csv", pts


def test_predict_grades_at_given_points(demo_run: dict, tmp_path: Path) -> None:
    """`predict --points` skips the localizer for those studies: moving one point changes its features."""
    from radspine.predict import predict

    root = Path(demo_run["out"])
    path, pts = _points_copy(demo_run, tmp_path / "given")
    sid = int(pts["study_id"].iloc[0])
    row = pts.index[(pts["study_id"] == sid) & (pts["condition"] == "Spinal Canal Stenosis") & (pts["level"] == "L3/L4")][0]
    predict(root / "data", root / "model", tmp_path / "a" / "submission.csv", points=path, workers=1)
    moved = pts.copy()
    moved.loc[row, "y"] = moved.loc[row, "y"] + 12.0  # a person moved it in a viewer
    moved.to_csv(path, index=False)
    predict(root / "data", root / "model", tmp_path / "b" / "submission.csv", points=path, workers=1)
    fa = pd.read_parquet(tmp_path / "a" / "predict_work" / "features" / "features.parquet").set_index("row_id")
    fb = pd.read_parquet(tmp_path / "b" / "predict_work" / "features" / "features.parquet").set_index("row_id")
    rid = f"{sid}_spinal_canal_stenosis_l3_l4"
    rad = [c for c in fa.columns if c.startswith("rad_sagt2_original_firstorder")]
    assert not np.allclose(fa.loc[rid, rad].to_numpy(float), fb.loc[rid, rad].to_numpy(float), equal_nan=True)
    other = f"{sid}_spinal_canal_stenosis_l1_l2"
    np.testing.assert_allclose(fa.loc[other, rad].to_numpy(float), fb.loc[other, rad].to_numpy(float))
    det = pd.read_csv(tmp_path / "b" / "predictions.csv").set_index("row_id")
    assert det.loc[rid, "y"] == pytest.approx(moved.loc[row, "y"], abs=1e-3)


def test_doubtful_points_get_no_image_features(demo_run: dict, tmp_path: Path) -> None:
    """A point whose localizer flag says 'doubtful' is never graded from its patch (NaN, has_point=0)."""
    from radspine.points import detail_path
    from radspine.predict import predict

    root = Path(demo_run["out"])
    path, pts = _points_copy(demo_run, tmp_path / "given")
    det = pd.read_csv(detail_path(root / "points.csv"), dtype={"flag": str}, keep_default_na=False)
    sid = int(pts["study_id"].iloc[0])
    hit = (det["study_id"] == sid) & (det["condition"] == "Spinal Canal Stenosis") & (det["level"] == "L5/S1")
    det.loc[hit, "flag"] = "doubtful: 76 mm below L4/L5"
    det.to_csv(detail_path(path), index=False)
    predict(root / "data", root / "model", tmp_path / "o" / "submission.csv", points=path, workers=1)
    f = pd.read_parquet(tmp_path / "o" / "predict_work" / "features" / "features.parquet").set_index("row_id")
    rid = f"{sid}_spinal_canal_stenosis_l5_s1"
    assert f.loc[rid, "has_point"] == 0
    assert f.loc[rid, [c for c in f.columns if c.startswith("rad_")]].isna().all()
    assert f.loc[f"{sid}_spinal_canal_stenosis_l4_l5", "has_point"] == 1


def test_inspect_shows_a_model_folders_versions(demo_run: dict) -> None:
    from typer.testing import CliRunner

    from radspine.cli import app

    model = Path(demo_run["out"]) / "model"
    res = CliRunner().invoke(app, ["inspect", str(model), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["versions"]["lightgbm"] and info["feature_config_hash"] == json.loads(
        (model / "bundle.json").read_text())["feature_config_hash"]
    res = CliRunner().invoke(app, ["inspect", str(model)])
    assert "trained with" in res.stdout and "lightgbm" in res.stdout


def test_predict_decodes_each_series_once(demo_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Localize and features share one decode per study (a spy counts read_series calls)."""
    from collections import Counter

    import radspine.io.dicom as dicom
    from radspine.predict import predict

    calls: Counter = Counter()
    real = dicom.read_series

    def spy(folder, *a, **k):
        calls[str(folder)] += 1
        return real(folder, *a, **k)

    monkeypatch.setattr(dicom, "read_series", spy)
    root = Path(demo_run["out"])
    predict(root / "data", root / "model", tmp_path / "submission.csv", workers=1)  # serial: the spy sees all
    n_series = len(pd.read_csv(root / "data" / "test_series_descriptions.csv"))
    assert len(calls) == n_series and set(calls.values()) == {1}, calls
