"""SeverityModel: the one blend formula, priors with fallbacks, partial labels, and tune on partial labels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers.fake_table import make_fake_table

from radspine.constants import CONDITION_GROUP, GROUPS, SEVERITY_COLUMNS, SEVERITY_WEIGHTS
from radspine.errors import ConfigError, DatasetError
from radspine.models.bundle import Bundle
from radspine.models.estimator import GradeClassifier, TableGrader
from radspine.models.severity import SeverityModel, blend, fit_blend, fit_priors
from radspine.models.tune import (
    TuneConfig,
    align_grades,
    feature_sets,
    label_coverage,
    load_tune_config,
    shape_radiomics_columns,
    tune,
)
from radspine.synth.label_stats import LABEL_COUNTS

SMALL = {"n_rad_noise": 4, "n_cnn": 3}


def test_blend_formula_probabilities_and_contributions():
    rng = np.random.default_rng(0)
    a, b = rng.random((6, 3)), rng.random((6, 3))
    groups = np.array(["spinal", "foraminal", "subarticular"] * 2)
    w = {"spinal": 1.0, "foraminal": 0.0, "subarticular": 0.25}
    out = blend({"lightgbm": a, "xgboost": b}, groups, w)
    np.testing.assert_allclose(out[0], a[0])
    np.testing.assert_allclose(out[1], b[1])
    np.testing.assert_allclose(out[2], 0.25 * a[2] + 0.75 * b[2])
    # Same formula on (n, 3, f) contribution arrays, broadcast over the trailing axes.
    c, d = rng.random((6, 3, 4)), rng.random((6, 3, 4))
    np.testing.assert_allclose(blend({"lightgbm": c, "xgboost": d}, groups, w)[2], 0.25 * c[2] + 0.75 * d[2])
    assert blend({"xgboost": b}, groups, w) is b
    with pytest.raises(ValueError, match="blend needs"):
        blend({"lightgbm": a, "catboost": b}, groups, w)


def test_fit_blend_picks_the_better_backend_per_group():
    rng = np.random.default_rng(1)
    n = 300
    y = rng.integers(0, 3, n).astype(float)
    groups = np.array(GROUPS)[np.arange(n) % 3]
    studies = np.arange(n) // 3
    good = np.full((n, 3), 0.05)
    good[np.arange(n), y.astype(int)] = 0.9
    bad = np.full((n, 3), 1 / 3)
    # LightGBM is the good one on spinal rows only; elsewhere XGBoost is.
    sp = groups == "spinal"
    lgb = np.where(sp[:, None], good, bad)
    xgb = np.where(sp[:, None], bad, good)
    w = fit_blend({"lightgbm": lgb, "xgboost": xgb}, y, groups, studies)
    assert w["spinal"] == 1.0 and w["foraminal"] == 0.0 and w["subarticular"] == 0.0


def _labels(table, grades):
    return table[["study_id", "condition", "level"]].assign(grade=grades)


def test_priors_fall_back_to_group_then_rsna_reference():
    table, labels = make_fake_table(20, seed=1, **SMALL)
    grades = align_grades(table, labels)
    g = table["group"].to_numpy()
    cond, lvl = table["condition"].to_numpy(), table["level"].to_numpy()
    # Foraminal: one cell blanked (→ group frequencies); subarticular: no labels at all (→ RSNA).
    hole = (cond == "left_neural_foraminal_narrowing") & (lvl == "l1_l2")
    grades = np.where(hole | (g == "subarticular"), np.nan, grades)
    priors, source = fit_priors(_labels(table, grades))
    assert len(priors) == 25 and np.allclose(priors[list(SEVERITY_COLUMNS)].sum(axis=1), 1)
    assert source["left_neural_foraminal_narrowing_l1_l2"] == "group"
    assert source["spinal_canal_stenosis_l4_l5"] == "labels"
    assert source["left_subarticular_stenosis_l4_l5"] == "rsna_reference"
    row = priors.set_index(["condition", "level"])
    fg = (g == "foraminal") & ~np.isnan(grades)
    expect = (np.bincount(grades[fg].astype(int), minlength=3) + 1.0) * SEVERITY_WEIGHTS
    np.testing.assert_allclose(
        row.loc[("left_neural_foraminal_narrowing", "l1_l2")].to_numpy(), expect / expect.sum()
    )
    ref = (np.asarray(LABEL_COUNTS["left_subarticular_stenosis_l4_l5"][:3], float) + 1.0) * SEVERITY_WEIGHTS
    np.testing.assert_allclose(row.loc[("left_subarticular_stenosis", "l4_l5")].to_numpy(), ref / ref.sum())
    # The real L4/L5 subarticular prior is far from flat (it was 1/7, 2/7, 4/7 before the fallback).
    assert abs(row.loc[("left_subarticular_stenosis", "l4_l5"), "severe"] - 4 / 7) > 0.05


def _quick_graders(feats):
    return {
        b: TableGrader(GradeClassifier(b, n_estimators=15, min_child_samples=5, random_state=0), feats)
        for b in ("lightgbm", "xgboost")
    }


def test_severity_model_predicts_priors_for_unmodelled_groups():
    table, labels = make_fake_table(16, seed=2, **SMALL)
    grades = align_grades(table, labels)
    g = table["group"].to_numpy()
    grades = np.where(g == "spinal", grades, np.nan)  # canal labels only
    folds = (table["study_id"].to_numpy() % 2).astype(int)
    feats = feature_sets(table)["merged"]
    m = SeverityModel(_quick_graders(feats), seed=0).fit(table, grades, folds)
    assert m.groups_ == ["spinal"]
    p = m.predict_proba(table)
    assert p.shape == (len(table), 3) and np.allclose(p.sum(axis=1), 1)
    prior = m.priors_.set_index(["condition", "level"])
    other = np.flatnonzero(g != "spinal")
    for i in other[:5]:
        r = table.iloc[i]
        np.testing.assert_allclose(p[i], prior.loc[(r["condition"], r["level"])].to_numpy())
    assert m.priors_source_["left_subarticular_stenosis_l1_l2"] == "rsna_reference"
    # Spinal rows are model predictions, not the priors, and SHAP is zero off the modelled group.
    assert not np.allclose(p[g == "spinal"][:5], p[g == "spinal"][0])
    sv = m.shap_values(table.iloc[:30])
    off = (table["group"].iloc[:30] != "spinal").to_numpy()
    assert (sv.drop(columns="row_id").to_numpy()[off] == 0).all()
    assert np.abs(sv.drop(columns="row_id").to_numpy()[~off]).max() > 0
    with pytest.raises(ValueError, match="folds"):
        SeverityModel(_quick_graders(feats)).fit(table, grades)
    with pytest.raises(ValueError, match="no labeled row"):
        SeverityModel(_quick_graders(feats), groups=["foraminal"]).fit(table, grades, folds)


def test_label_coverage_reasons():
    table, labels = make_fake_table(6, seed=3, **SMALL)
    grades = align_grades(table, labels)
    g, st = table["group"].to_numpy(), table["study_id"].to_numpy()
    folds = (st % 3).astype(int)
    grades = np.where(g == "subarticular", np.nan, grades)
    grades = np.where((g == "foraminal") & (st != st[0]), np.nan, grades)  # one labelled study
    cov = label_coverage(table, grades, folds)
    assert cov["spinal"]["status"] == "modelled"
    assert cov["subarticular"] == {
        "n_labelled_rows": 0, "n_labelled_studies": 0, "status": "priors_only", "reason": "no labels"
    }
    assert cov["foraminal"]["status"] == "priors_only" and "1 labelled studies" in cov["foraminal"]["reason"]


@pytest.mark.parametrize("only", ["foraminal", "spinal"])
def test_tune_on_one_labelled_group_predicts_every_row(tmp_path, only):
    table, labels = make_fake_table(14, seed=4, **SMALL)
    labels = labels.assign(
        grade=np.where(labels["condition"].map(CONDITION_GROUP) == only, labels["grade"], np.nan)
    )
    cfg = TuneConfig(trials=1, folds=2, seed=0, n_jobs=1, max_rounds=30, plots=False, ablations=False)
    rep = tune(table, labels, tmp_path, {"config_hash": "p"}, cfg)
    assert [g for g, e in rep["groups"].items() if e["status"] == "modelled"] == [only]
    assert all(e["reason"] == "no labels" for g, e in rep["groups"].items() if g != only)
    assert rep["score"] == rep["score_unbiased"] and rep["score_selection"] is not None
    on_disk = json.loads((tmp_path / "cv_report.json").read_text())
    assert on_disk["groups"] == rep["groups"]
    b = Bundle.load(tmp_path)
    pred = b.predict_proba(table)
    assert len(pred) == len(table) and not pred.isna().any().any()
    assert b.info["modelled_groups"] == [only]
    off = (table["group"] != only).to_numpy()
    prior = b.priors.set_index(["condition", "level"]).loc[
        pd.MultiIndex.from_frame(table.loc[off, ["condition", "level"]])
    ]
    np.testing.assert_allclose(pred.loc[off, list(SEVERITY_COLUMNS)].to_numpy(), prior.to_numpy())


def test_tune_refuses_with_one_line_when_no_group_is_coverable(tmp_path):
    table, labels = make_fake_table(4, seed=5, **SMALL)
    a, b = sorted(table["study_id"].unique())[:2]
    grp = labels["condition"].map(CONDITION_GROUP)
    # Spinal labels only in study a, foraminal only in study b: 2 labelled studies (enough for the 2
    # folds), but every group has 1, fewer than the 2 each needs.
    keep = ((labels["study_id"] == a) & (grp == "spinal")) | ((labels["study_id"] == b) & (grp == "foraminal"))
    labels = labels.assign(grade=labels["grade"].where(keep))
    cfg = TuneConfig(trials=0, folds=2, n_jobs=1, plots=False, ablations=False)
    with pytest.raises(DatasetError, match=r"no condition group has enough labels for 2-fold CV \(spinal: 1 "
                       r"labelled studies, fewer than the 2 needed; .*subarticular: no labels\)"):
        tune(table, labels, tmp_path, {"config_hash": "p"}, cfg)


def test_tune_config_yaml_equals_defaults_and_rejects_unknown_keys(tmp_path):
    assert load_tune_config() == TuneConfig()
    assert load_tune_config(trials=7, seed=None).trials == 7
    bad = tmp_path / "t.yaml"
    bad.write_text("trials: 3\ntrails: 4\n")
    with pytest.raises(ConfigError, match=r"t.yaml: trails"):
        load_tune_config(bad)
    bad.write_text("search_space:\n  common:\n    depth: {type: int, low: 1, high: 3}\n")
    with pytest.raises(ConfigError, match="not a GradeClassifier parameter"):
        load_tune_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_tune_config(tmp_path / "missing.yaml")


def test_only_the_cnn_ablation_keeps_the_cnn_context_columns():
    """ctx_* columns are shared by prefix, but the CNN's neighbour/side copies are CNN evidence."""
    from radspine.features.schema import is_cnn_column

    assert is_cnn_column("cnn_0") and is_cnn_column("ctx_prev_cnn_3") and is_cnn_column("has_cnn")
    assert not any(is_cnn_column(c) for c in ("has_cnn_patch", "ctx_study_mean", "rad_cnn_like", "cnn_"))
    table, _ = make_fake_table(2, seed=6, **SMALL)
    table = table.assign(ctx_prev_cnn_0=0.5, ctx_other_cnn_1=0.2, has_cnn=1.0, mor_canal_ap_mm=1.0)
    sets = feature_sets(table)
    for name in ("radiomics_only", "morphometry_only"):
        assert not [c for c in sets[name] if is_cnn_column(c)], name
        assert "ctx_study_mean" in sets[name]
    assert {"ctx_prev_cnn_0", "ctx_other_cnn_1", "has_cnn"} <= set(sets["cnn_only"]) <= set(sets["merged"])


def test_ablation_sets_include_morphometry_and_mask_radiomics_when_present():
    table, _ = make_fake_table(2, seed=6, **SMALL)
    sets = feature_sets(table)
    assert "morphometry_only" not in sets and "shape_radiomics_only" not in sets and shape_radiomics_columns(table) == []
    assert "without_narrowing" not in sets
    table = table.assign(mor_canal_ap_mm=1.0, rad_sagt2_mask_original_shape_Area=2.0,
                         rad_axt2_sac_original_firstorder_Mean=3.0)
    sets = feature_sets(table)
    assert "mor_canal_ap_mm" in sets["morphometry_only"]
    assert not any(c.startswith(("rad_", "cnn_")) for c in sets["morphometry_only"])
    assert "ctx_study_mean" in sets["morphometry_only"]
    assert set(shape_radiomics_columns(table)) == {"rad_sagt2_mask_original_shape_Area",
                                                   "rad_axt2_sac_original_firstorder_Mean"}
    assert "rad_sagt2_original_glcm_Contrast" not in sets["shape_radiomics_only"]
    # The same run's merged set less the structure-mask features.
    assert set(sets["merged"]) - set(sets["without_narrowing"]) == {
        "mor_canal_ap_mm", "rad_sagt2_mask_original_shape_Area", "rad_axt2_sac_original_firstorder_Mean"}
