"""`radspine tune` end to end on a tiny fake table, Optuna resume, folds, inputs, and the model bundle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers.fake_table import make_fake_table, write_fake_workdir
from typer.testing import CliRunner

from radspine.cli import app
from radspine.commands.tune import load_labels
from radspine.errors import DatasetError, ModelError
from radspine.models.bundle import Bundle
from radspine.models.estimator import GradeClassifier, TableGrader
from radspine.models.severity import oof_predict
from radspine.models.tune import (
    CVData,
    TuneConfig,
    align_grades,
    assign_folds,
    feature_sets,
    load_features,
    run_study,
)

N_STUDIES = 30
SMALL = {"n_rad_noise": 6, "n_cnn": 4}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One CLI run: 4 trials (2 per backend), 2 folds, on 30 fake studies, with the feature-set ablations."""
    root = tmp_path_factory.mktemp("tune")
    table, labels = write_fake_workdir(root / "work", root / "data", N_STUDIES, seed=5, **SMALL)
    out = root / "model"
    res = CliRunner().invoke(
        app,
        [
            "tune",
            "--features",
            str(root / "work"),
            "--data",
            str(root / "data"),
            "--out",
            str(out),
            "--trials",
            "4",
            "--folds",
            "2",
            "--seed",
            "1",
            "--n-jobs",
            "1",
            "--ablations",
        ],
    )
    assert res.exit_code == 0, res.output
    return {"root": root, "out": out, "table": table, "labels": labels, "output": res.output}


def test_report_shows_ablations_calibration_and_beats_priors(tuned):
    rep = json.loads((tuned["out"] / "cv_report.json").read_text())
    abl = rep["ablations"]
    assert {
        "priors_only",
        "radiomics_only",
        "cnn_only",
        "merged",
        "merged_lightgbm",
        "merged_xgboost",
    } <= set(abl)
    for entry in abl.values():
        assert set(entry["before"]) >= {"score", "spinal", "foraminal", "subarticular", "any_severe_spinal"}
        # calibration is chosen by cross-fitted metric with "none" a candidate, so it can never hurt
        assert entry["after"]["score"] <= entry["before"]["score"] + 1e-12
    assert abl["merged"]["after"]["score"] < abl["priors_only"]["after"]["score"] - 0.1
    ms = rep["mode_selection"]
    assert ms["winner"] in ("per_group", "pooled")
    loser = "pooled" if ms["winner"] == "per_group" else "per_group"
    assert ms["margin"] == pytest.approx(ms[loser]["score"] - ms[ms["winner"]]["score"])
    assert (
        rep["tuning"]["lightgbm"]["n_trials_total"] == 2 and rep["tuning"]["xgboost"]["n_trials_total"] == 2
    )
    assert set(rep["calibration"]["cv_score_by_method"]) == {"none", "temperature", "isotonic", "dirichlet"}
    assert set(rep["calibration"]["ece"]) == {"spinal", "foraminal", "subarticular"}
    assert rep["importance_gain"]["lightgbm"]
    assert (tuned["out"] / "plots" / "reliability_merged.png").stat().st_size > 1000
    assert (tuned["out"] / "optuna.db").is_file()
    assert "priors_only" in tuned["output"]
    # Progress (not --quiet) on a non-terminal (CliRunner's capture): a plain line per trial with the trial
    # number, the best value so far, elapsed and time left.
    lines = [ln for ln in tuned["output"].splitlines() if "tune: trial " in ln]
    assert len(lines) == 4, tuned["output"]
    assert "tune: trial 4 of 4 (xgboost #2 " in lines[-1] and "best so far 0." in lines[-1]
    assert all("elapsed " in ln and " left" in ln for ln in lines)
    assert "tune: unbiased outer fold 2 of 2 scored" in tuned["output"]
    # Honest CV: the unbiased (outer-fold) score is the headline, beside the selection score.
    assert rep["score"] == rep["score_unbiased"]
    assert rep["score_selection"] == pytest.approx(abl["merged"]["after"]["score"])
    assert rep["selection_gap"] == pytest.approx(rep["score_unbiased"] - rep["score_selection"])
    ub = rep["unbiased"]
    assert [f["fold"] for f in ub["folds"]] == [0, 1]
    assert all(f["mode"] in ("per_group", "pooled") and f["calibration"] in rep["calibration"]["cv_score_by_method"]
               for f in ub["folds"])
    assert "Optuna" in ub["not_re_selected"][0]
    assert ub["after"]["score"] < rep["priors_only_score"]
    assert all(e["status"] == "modelled" for e in rep["groups"].values())
    assert "unbiased (outer folds)" in tuned["output"]


def test_cli_rerun_with_same_study_name_resumes(tuned):
    root = tuned["root"]
    out = root / "model_resumed"
    shutil.copytree(tuned["out"], out)  # keep the fixture's bundle untouched for the other tests
    args = ["tune", "--features", str(root / "work"), "--data", str(root / "data"), "--out", str(out)]
    cfg = root / "tune2.yaml"
    cfg.write_text("trials: 2\nfolds: 2\nseed: 1\nn_jobs: 1\n")  # --config file instead of the flags
    res = CliRunner().invoke(app, [*args, "--config", str(cfg), "-q"])
    assert res.exit_code == 0, res.output
    assert "trial" not in res.output  # --quiet: no progress bar
    rep = json.loads((out / "cv_report.json").read_text())
    assert (
        rep["tuning"]["lightgbm"]["n_trials_total"] == 3 and rep["tuning"]["xgboost"]["n_trials_total"] == 3
    )
    # Same study, other folds: refused with a one-line error instead of mixing incomparable trials.
    res = CliRunner().invoke(app, [*args, "--trials", "2", "--folds", "3", "--seed", "1", "--n-jobs", "1", "-q"])
    assert res.exit_code == 2 and "new --study-name" in res.output


def test_bundle_round_trip(tuned):
    b = Bundle.load(tuned["out"])
    table = tuned["table"]
    assert b.feature_config_hash == "fake-5"
    pred = b.predict_proba(table)
    assert list(pred.columns) == ["row_id", "normal_mild", "moderate", "severe"]
    assert (pred["row_id"] == table["row_id"]).all()
    assert np.allclose(pred[["normal_mild", "moderate", "severe"]].sum(axis=1), 1)
    # Predictions are the saved calibrator applied to the saved models' blend.
    expect = b.calibrator.transform(b.predict_raw(table), table["group"].to_numpy())
    np.testing.assert_allclose(pred[["normal_mild", "moderate", "severe"]].to_numpy(), expect)
    assert list(b.priors.columns) == ["condition", "level", "normal_mild", "moderate", "severe"]
    assert len(b.priors) == 25
    shap = b.shap_values(table.iloc[:10])
    assert shap.shape[0] == 10 and shap.columns[0] == "row_id" and "bias" in shap.columns
    assert "cnn_0" in shap.columns
    with pytest.raises(ModelError, match="cnn_0"):
        b.predict_proba(table.drop(columns=["cnn_0"]))
    with pytest.raises(ModelError, match="config_hash"):
        b.check_features_meta({"config_hash": "other"})
    b.check_features_meta({"config_hash": "fake-5"})


def test_bundle_load_errors(tmp_path):
    with pytest.raises(ModelError, match="not a model bundle"):
        Bundle.load(tmp_path)
    (tmp_path / "bundle.json").write_text(json.dumps({"format": 1}))
    with pytest.raises(ModelError, match=r"bundle format 1 was written by another radspine version .*re-run"):
        Bundle.load(tmp_path)


def test_study_resumes_and_refuses_other_data(tmp_path):
    table, labels = make_fake_table(12, seed=3, **SMALL)
    grades = align_grades(table, labels)
    data = CVData(table, grades, assign_folds(table, grades, 2, 0))
    feats = feature_sets(table)["merged"]
    opts = TuneConfig(study_name="s", max_rounds=20, n_jobs=1)
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    first = [t.params for t in run_study("lightgbm", data, feats, "per_group", opts, 2, None, storage).trials]
    again = run_study("lightgbm", data, feats, "per_group", opts, 1, None, storage)
    assert len(again.trials) == 3
    assert [t.params for t in again.trials[:2]] == first
    # Trials differ: the resumed sampler does not replay the first random proposals.
    assert again.trials[2].params != again.trials[0].params
    other = CVData(table, grades, assign_folds(table, grades, 3, 0))
    with pytest.raises(ModelError, match="new --study-name"):
        run_study("lightgbm", other, feats, "per_group", opts, 1, None, storage)


def test_folds_keep_studies_whole_and_oof_is_deterministic():
    table, labels = make_fake_table(12, seed=4, **SMALL)
    grades = align_grades(table, labels)
    folds = assign_folds(table, grades, 3, 0)
    assert (pd.Series(folds).groupby(table["study_id"]).nunique() == 1).all()
    assert sorted(np.unique(folds)) == [0, 1, 2]
    feats = feature_sets(table)["merged"]
    g = TableGrader(GradeClassifier(n_estimators=10), feats, "per_group")
    a, b = oof_predict(g, table, grades, folds), oof_predict(g, table, grades, folds)
    np.testing.assert_array_equal(a, b)
    assert not np.isnan(a).any()


def test_input_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="features.parquet"):
        load_features(tmp_path)
    table, labels = write_fake_workdir(tmp_path / "w", tmp_path / "d", 3, seed=0, **SMALL)
    lab = load_labels(tmp_path / "d")
    np.testing.assert_array_equal(align_grades(table, lab), labels["grade"].to_numpy())
    bad = pd.read_csv(tmp_path / "d" / "train.csv")
    bad.iloc[0, 1] = "Awful"
    bad.to_csv(tmp_path / "d" / "train.csv", index=False)
    with pytest.raises(DatasetError, match="train.csv.*Awful"):
        load_labels(tmp_path / "d")
    res = CliRunner().invoke(
        app,
        ["tune", "--features", str(tmp_path), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "m")],
    )
    assert res.exit_code == 2 and "features.parquet" in res.output


def test_timeout_stops_the_search_and_writes_a_complete_bundle_without_ablations(tmp_path):
    # --trials 1000 with --timeout 2: Optuna stops starting trials after ~2 s, the rest of tune runs, and the
    # bundle is whole. Ablations are off by default: no ablation section, and the report says so.
    write_fake_workdir(tmp_path / "work", tmp_path / "data", 20, seed=7, **SMALL)
    out = tmp_path / "model"
    res = CliRunner().invoke(app, ["tune", "--features", str(tmp_path / "work"), "--data", str(tmp_path / "data"),
                                   "--out", str(out), "--trials", "1000", "--timeout", "2", "--folds", "2",
                                   "--n-jobs", "1"])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "cv_report.json").read_text())
    assert rep["tuning_timeout_s"] == 2
    n = {b: rep["tuning"][b]["n_trials_total"] for b in ("lightgbm", "xgboost")}
    assert 1 <= n["lightgbm"] < 500 and n["xgboost"] < 500, n
    assert rep["timings"]["tuning_s"] < 2 + 60  # the running trial finishes; no new one starts after the budget
    assert "ablations" not in rep and "not run" in rep["ablations_note"] and "--ablations" in rep["ablations_note"]
    assert {"priors_only", "merged", "merged_lightgbm", "merged_xgboost"} == set(rep["baselines"])
    assert "ablations not run" in res.output
    b = Bundle.load(out)  # complete: loads and predicts
    table = pd.read_parquet(tmp_path / "work" / "features.parquet")
    p = b.predict_proba(table)
    assert np.allclose(p[["normal_mild", "moderate", "severe"]].sum(axis=1), 1)
    assert rep["score"] < rep["priors_only_score"]
    # The screen ran inside every model and the report shows what it kept.
    assert 0 < rep["screen"]["n_features_used"] <= rep["n_features"]
    assert set(rep["screen"]["models"]) == {"spinal", "foraminal", "subarticular"} or set(
        rep["screen"]["models"]) == {"all"}
