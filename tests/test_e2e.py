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
    assert ours["any_severe_spinal"] < base["any_severe_spinal"]


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
