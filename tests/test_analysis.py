"""radspine.analysis: the numbers behind the notebook, on the fake-table example run and hand-made cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def shared_example_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One example run per test session, shared by this module and test_notebook (built on first use)."""
    from helpers.fake_table import write_example_run

    root = tmp_path_factory.getbasetemp() / "radspine_example_run"
    if not (root / "predictions.csv").is_file():  # predictions.csv is written last
        write_example_run(root, n_train=30, n_test=8, seed=0)
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from radspine.analysis import load_run

    return load_run(shared_example_run(tmp_path_factory))


@pytest.fixture(scope="module")
def importance(run):
    from radspine.analysis import feature_importance

    return feature_importance(run)


def test_load_run(run) -> None:
    assert run.train["study_id"].nunique() == 30 and len(run.train) == 750
    assert run.labeled["grade"].isin([0, 1, 2]).all()
    assert run.predictions is not None and run.predictions["study_id"].nunique() == 8
    assert run.predictions["true_grade"].notna().sum() > 150
    assert run.truth is None


def test_load_run_names_missing_folder(tmp_path: Path) -> None:
    from radspine.analysis import load_run
    from radspine.errors import DatasetError

    with pytest.raises(DatasetError, match=r"no work/train/features.parquet"):
        load_run(tmp_path)


def test_importance_finds_the_planted_signal(importance) -> None:
    from radspine.analysis import top_features

    assert set(importance["group"]) == {"spinal", "foraminal", "subarticular"}
    assert (importance[["gain", "shap"]] >= 0).all().all()
    # fake_table plants one radiomic signal per group; it must be that group's top radiomic feature.
    planted = {"spinal": "rad_sagt2_original_glcm_Contrast", "foraminal": "rad_sagt1_original_firstorder_Mean",
               "subarticular": "rad_axt2_original_glszm_ZoneEntropy"}
    for g, f in planted.items():
        assert top_features(importance[importance["group"] == g], n=1, prefix="rad_") == [f]
        for by in ("gain", "shap"):
            rad = importance[(importance["group"] == g) & importance["feature"].str.startswith("rad_")]
            assert rad.loc[rad[by].idxmax(), "feature"] == f, (g, by)
    # Gains are normalised per model, so a group's gains sum to at most 1.
    assert (importance.groupby("group")["gain"].sum() <= 1 + 1e-9).all()
    assert importance.loc[importance["feature"] == "rad_sagt2_original_glcm_Contrast", "plain"].iloc[0] == \
        "T2 sagittal · GLCM contrast"


def test_correlation_clusters_group_near_duplicates() -> None:
    from radspine.analysis import cluster_summary, correlation_clusters

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(size=200)
    t = pd.DataFrame({"rad_sagt2_original_glcm_Contrast": a, "cnn_0": 2 * a + 0.05 * rng.normal(size=200),
                      "cnn_1": b, "cnn_2": np.ones(200)})
    cl = correlation_clusters(t, list(t.columns), threshold=0.8)
    assert "cnn_2" not in set(cl["feature"])  # constant: no correlation
    by = cl.set_index("feature")
    assert by.loc["cnn_0", "cluster"] == by.loc["rad_sagt2_original_glcm_Contrast", "cluster"]
    assert by.loc["cnn_0", "size"] == 2 and by.loc["cnn_1", "size"] == 1
    assert by.loc["cnn_1", "cluster"] != by.loc["cnn_0", "cluster"]
    summ = cluster_summary(cl)
    assert summ[["size", "representative", "other members"]].values.tolist() == [
        [2, "CNN embedding 0", "T2 sagittal · GLCM contrast"]]


def test_embedding_projection(run) -> None:
    from radspine.analysis import embedding_projection

    p = embedding_projection(run, "pca", seed=0)
    assert len(p) == len(run.labeled) and list(p.columns[:3]) == ["c1", "c2", "grade"]
    ex = p.attrs["explained"]
    assert 0 < ex[1] <= ex[0] < 1
    again = embedding_projection(run, "pca", seed=0)
    np.testing.assert_array_equal(p[["c1", "c2"]].to_numpy(), again[["c1", "c2"]].to_numpy())
    with pytest.raises(ValueError, match="pca' or 'tsne"):
        embedding_projection(run, "umap")


def test_calibration_table(run) -> None:
    from radspine.analysis import calibration_table

    cal = calibration_table(run)
    assert set(cal["group"]) <= {"spinal", "foraminal", "subarticular"} and len(cal) > 0
    assert cal[["mean_predicted", "observed", "ece"]].apply(lambda c: c.between(0, 1).all()).all()
    assert "Normal/Mild" in set(cal["grade"])


def _hand_run(preds: pd.DataFrame, truth: pd.DataFrame | None = None):
    from radspine.analysis import RunData

    return RunData(Path("hand"), pd.DataFrame(), None, preds, truth)


def test_errors_by_level_and_side_by_hand() -> None:
    from radspine.analysis import errors_by

    preds = pd.DataFrame({
        "row_id": ["1_spinal_canal_stenosis_l1_l2", "1_left_subarticular_stenosis_l1_l2", "1_right_subarticular_stenosis_l5_s1"],
        "study_id": 1, "condition": ["spinal_canal_stenosis", "left_subarticular_stenosis", "right_subarticular_stenosis"],
        "level": ["l1_l2", "l1_l2", "l5_s1"],
        "normal_mild": [0.5, 0.5, 0.2], "moderate": [0.25, 0.25, 0.2], "severe": [0.25, 0.25, 0.6],
        "true_grade": [0.0, 2.0, 2.0],
    })
    preds["expected_severity"] = preds["moderate"] * 0.5 + preds["severe"]
    lv = errors_by(_hand_run(preds), "level")
    assert list(lv.index) == ["L1/L2", "L5/S1"]
    assert lv.loc["L1/L2", "weighted_logloss"] == pytest.approx((math.log(2) + 4 * math.log(4)) / 5)
    assert lv.loc["L1/L2", "accuracy"] == 0.5 and lv.loc["L5/S1", "accuracy"] == 1.0
    assert lv.loc["L5/S1", "mean_abs_severity_error"] == pytest.approx(1 - 0.7)
    side = errors_by(_hand_run(preds), "side")
    assert side.loc["none", "n"] == 1 and side.loc["left", "weighted_logloss"] == pytest.approx(math.log(4))
    with pytest.raises(ValueError, match="by must be"):
        errors_by(_hand_run(preds), "vendor")


def test_severity_agreement_by_hand() -> None:
    from radspine.analysis import severity_agreement
    from radspine.errors import DatasetError

    sev = np.array([0.1, 0.2, 0.5, 0.6, 0.9])
    preds = pd.DataFrame({"study_id": 1, "condition": "spinal_canal_stenosis",
                          "level": ["l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"],
                          "expected_severity": [0.05, 0.25, 0.45, 0.6, 0.8]})
    truth = preds[["study_id", "condition", "level"]].assign(severity=sev)
    ag = severity_agreement(_hand_run(preds, truth))
    assert ag.loc["spinal", "spearman"] == pytest.approx(1.0)
    assert ag.loc["spinal", "in_true_band"] == pytest.approx(1.0)
    assert ag.loc["spinal", "mae"] == pytest.approx(np.mean(np.abs(preds["expected_severity"] - sev)))
    with pytest.raises(DatasetError, match="synth_truth.csv"):
        severity_agreement(_hand_run(preds, None))
    assert "synth_truth.csv" in severity_agreement(_hand_run(preds, None), missing_ok=True)["note"].iloc[0]


def test_plots_render_png(run, importance) -> None:
    from radspine.analysis import plot_importance

    png = plot_importance(importance, top=5)._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_relative_demo_dir_is_the_callers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `RADSPINE_DEMO_DIR=runs/demo jupyter nbconvert --execute notebooks/x.ipynb` from the repository root: the
    # kernel runs in notebooks/, the shell's directory ($PWD, inherited) is the root.
    from radspine.analysis import demo_dir_from_env

    (tmp_path / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.setenv("RADSPINE_DEMO_DIR", "runs/demo")
    assert demo_dir_from_env() == tmp_path / "runs" / "demo"
    (tmp_path / "notebooks" / "runs" / "demo").mkdir(parents=True)  # one beside the kernel wins
    assert demo_dir_from_env().resolve() == (tmp_path / "notebooks" / "runs" / "demo").resolve()
    monkeypatch.setenv("RADSPINE_DEMO_DIR", str(tmp_path / "abs"))
    assert demo_dir_from_env() == tmp_path / "abs"
