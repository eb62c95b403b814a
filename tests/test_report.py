"""Per-study visual report: panels, point placement (rendered pixel colours), SHAP additivity, CLI, batch fallbacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radspine.constants import GROUPS, SEVERITY_COLUMNS, row_id

SEED = 0


def _fit_bundle(out: Path, features_table: pd.DataFrame, labels: pd.DataFrame) -> tuple[list[str], str]:
    """A small two-backend bundle (blend weights differ per group) fitted directly, no Optuna."""
    from helpers.fake_table import fit_quick_bundle

    feats = fit_quick_bundle(out, features_table, labels, n_estimators=25, min_child_samples=5, seed=SEED,
                             blend_weights={"spinal": 0.3, "foraminal": 0.6, "subarticular": 1.0},
                             meta={"config_hash": "fake-report"})
    return feats, "per_group"


def _remap(table: pd.DataFrame, ids: list[int]) -> pd.DataFrame:
    """Give a fake table the phantom's study ids (in order)."""
    old = sorted(table["study_id"].unique())
    m = dict(zip(old, ids, strict=True))
    t = table.copy()
    t["study_id"] = t["study_id"].map(m).astype("int64")
    t["row_id"] = [row_id(s, c, lv) for s, c, lv in zip(t["study_id"], t["condition"], t["level"], strict=True)]
    return t


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from helpers.fake_table import make_fake_table

    table, labels = make_fake_table(40, seed=SEED, n_rad_noise=6, n_cnn=4)
    d = tmp_path_factory.mktemp("report_model") / "model"
    _fit_bundle(d, table, labels)
    return d


@pytest.fixture(scope="module")
def pred_dir(tmp_path_factory, phantom_root: Path, model_dir: Path) -> Path:
    """A predict-shaped output for the phantom's train split: label coordinates as the points, bundle probabilities
    (grades rotated so every colour appears), features table where predict leaves it."""
    from helpers.fake_table import make_fake_table

    from radspine.geometry import instance_to_world
    from radspine.io.dataset import Dataset
    from radspine.io.dicom import read_series
    from radspine.models.bundle import Bundle
    from radspine.predict import expected_severity

    ds = Dataset.open(phantom_root)
    ids = [s.study_id for s in ds.studies("train")]
    table = _remap(make_fake_table(len(ids), seed=SEED + 1, n_rad_noise=6, n_cnn=4)[0], ids)
    out = tmp_path_factory.mktemp("report_pred")
    (out / "predict_work" / "features").mkdir(parents=True)
    table.to_parquet(out / "predict_work" / "features" / "features.parquet", index=False)
    (out / "predict_work" / "features" / "meta.json").write_text(json.dumps({"config_hash": "fake-report"}))
    probs = Bundle.load(model_dir).predict_proba(table)
    p = probs[list(SEVERITY_COLUMNS)].to_numpy()
    p = np.sort(p, axis=1)[:, ::-1]  # largest first, then rotate so row i's argmax is grade i % 3
    for i in range(len(p)):
        p[i] = np.roll(p[i], i % 3)
    probs[list(SEVERITY_COLUMNS)] = p
    probs["expected_severity"] = expected_severity(p)
    coords = ds.coordinates.copy()
    vols: dict[int, list] = {}
    world = []
    for r in coords.itertuples():
        if r.series_id not in vols:
            info = next(s for s in ds.study(r.study_id, "train").series if s.series_id == r.series_id)
            vols[r.series_id] = read_series(info.path, study_id=r.study_id, series_id=r.series_id)
        vol = next(v for v in vols[r.series_id] if r.instance_number in v.instance_numbers)
        world.append(instance_to_world(vol, r.x, r.y, r.instance_number))
    coords[["world_x", "world_y", "world_z"]] = np.array(world)
    coords["row_id"] = [row_id(s, c, lv) for s, c, lv in zip(coords["study_id"], coords["condition"], coords["level"])]
    coords["flag"] = ""
    preds = probs.merge(coords[["row_id", "series_id", "instance_number", "x", "y", "world_x", "world_y", "world_z", "flag"]],
                        on="row_id", how="left")
    _add_predict_details(preds, ids[0])
    preds.to_csv(out / "predictions.csv", index=False)
    return out


# What `radspine predict` adds per row (issue 11): measurements by condition group, source, confidence.
MEASURED = {"spinal": {"dural_sac_area_mm2": 82.0, "canal_ap_mm": 9.1, "disc_height_mm": 9.5},
            "foraminal": {"foramen_area_mm2": 41.0, "foramen_height_mm": 14.0, "disc_height_mm": 9.5},
            "subarticular": {"recess_depth_mm": 2.6, "disc_height_mm": 9.5}}


def _add_predict_details(preds: pd.DataFrame, sid: int) -> None:
    """Measurement columns (NaN where another group's, and the first study's L5/S1 dural sac unmeasured),
    ``graded_from`` / ``confidence``, one prior-graded row and one doubtful point in study ``sid``."""
    from radspine.constants import CONDITION_GROUP
    from radspine.predict import MEASUREMENT_COLUMNS

    group = preds["row_id"].map(lambda r: CONDITION_GROUP[r.split("_", 1)[1].rsplit("_", 2)[0]])
    for name in MEASUREMENT_COLUMNS:
        preds[name] = [MEASURED[g].get(name, np.nan) for g in group]
    preds.loc[preds["row_id"] == f"{sid}_spinal_canal_stenosis_l5_s1", "dural_sac_area_mm2"] = np.nan
    preds["graded_from"] = "model"
    preds.loc[preds["row_id"] == f"{sid}_right_subarticular_stenosis_l1_l2", "graded_from"] = (
        "priors: no subarticular labels in training")
    preds["confidence"] = 0.9
    preds.loc[preds["row_id"] == f"{sid}_left_neural_foraminal_narrowing_l2_l3", "flag"] = "doubtful: low confidence"


@pytest.fixture(scope="module")
def study_report(pred_dir: Path, phantom_root: Path, model_dir: Path, tmp_path_factory):
    from radspine.io.dataset import Dataset
    from radspine.report import contributions_for, load_predictions, render_study

    preds = load_predictions(pred_dir)
    sid = int(preds["study_id"].iloc[0])
    contribs, note = contributions_for(pred_dir, preds, model_dir, "train")
    assert note == ""
    out = tmp_path_factory.mktemp("report_out")
    rep = render_study(Dataset.open(phantom_root).study(sid, "train"), preds, out, contribs)
    return rep, preds[preds["study_id"] == sid], contribs


def test_plain_feature_names() -> None:
    from radspine.report import plain_feature_name as p

    assert p("rad_sagt2_original_glcm_Contrast") == "T2 sagittal · GLCM contrast"
    assert p("rad_axt2_original_glszm_ZoneEntropy") == "T2 axial · GLSZM zone entropy"
    assert p("rad_sagt1_log-sigma-1-0-mm-2D_firstorder_10Percentile") == "T1 sagittal · LoG σ 1.0 mm · first-order 10th percentile"
    assert p("rad_sagt1_wavelet-LLH_glcm_Idmn") == "T1 sagittal · wavelet LLH · GLCM IDMN"
    assert p("rad_axt2_original_glrlm_GrayLevelNonUniformityNormalized") == "T2 axial · GLRLM gray level non uniformity normalized"
    assert p("cnn_3") == "CNN embedding 3"
    assert p("ctx_prev_cnn_0") == "level above: CNN embedding 0"
    assert p("ctx_other_rad_sagt1_original_firstorder_Mean") == "other side: T1 sagittal · first-order mean"
    assert p("ctx_canal_cnn_2") == "canal at this level: CNN embedding 2"
    assert p("geo_gap_next_mm") == "gap to the level below (mm)"
    assert p("geo_plane_dist_spinal_axial") == "spinal axial patch: point-to-slice distance (mm)"
    assert p("has_axt2") == "T2 axial present"
    assert p("level_idx") == "level (L1/L2…L5/S1)"
    assert p("something_else") == "something_else"


def test_report_panels_and_files(study_report) -> None:
    from radspine.report import N_IMAGE_PANELS

    rep, preds, _ = study_report
    assert N_IMAGE_PANELS == 8
    assert len(rep.image_panels) == 8, [(p.name, p.kind) for p in rep.panels]
    assert [p.name for p in rep.panels if p.kind == "text"] == [f"text_{lv}" for lv in
                                                              ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")]
    assert rep.png.is_file() and rep.json.is_file()
    assert not list(rep.png.parent.glob(".*.tmp"))
    doc = json.loads(rep.json.read_text())
    assert len(doc["rows"]) == 25 and doc["study_id"] == rep.study_id
    # Every labelled point of the phantom study is drawn exactly once.
    drawn = [pt.row_id for p in rep.image_panels for pt in p.points]
    assert sorted(drawn) == sorted(preds["row_id"])
    counts = {p.name: len(p.points) for p in rep.image_panels}
    assert counts["sagittal_t2"] == 5 and counts["foramina_left"] == 5 and counts["foramina_right"] == 5
    assert all(counts[f"axial_{lv}"] == 2 for lv in ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"))


def test_points_drawn_at_predicted_pixels(study_report) -> None:
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    from radspine.report import GRADE_COLORS

    rep, preds, _ = study_report
    img = imread(rep.png)[..., :3]
    h, w = img.shape[:2]
    assert (w, h) == rep.size_px
    by_id = preds.set_index("row_id")
    n_exact = 0
    for panel in rep.image_panels:
        x0, y0, x1, y1 = panel.bbox_px
        (xa, xb), (ya, yb) = panel.xlim, panel.ylim
        for pt in panel.points:
            r = by_id.loc[pt.row_id]
            assert pt.grade == int(np.argmax(r[list(SEVERITY_COLUMNS)].to_numpy(float)))
            if int(r["instance_number"]) == panel.instance_number and int(r["series_id"]) == panel.series_id:
                # On its own slice a point sits exactly at its predicted pixel.
                assert (pt.x, pt.y) == (pytest.approx(r["x"]), pytest.approx(r["y"]))
                n_exact += 1
            else:
                # On a neighbouring slice of the same stack: same in-plane pixel, off the plane by a slice step.
                assert pt.x == pytest.approx(r["x"], abs=1e-6) and pt.y == pytest.approx(r["y"], abs=1e-6)
                assert abs(pt.off_plane_mm) > 0.5
            # data (column, row) → display pixel of the PNG, from the panel's extent and limits alone.
            px = x0 + (pt.x - xa) / (xb - xa) * (x1 - x0)
            py = h - (y0 + (pt.y - ya) / (yb - ya) * (y1 - y0))
            rgb = img[int(py), int(px)]
            assert np.allclose(rgb, to_rgb(GRADE_COLORS[pt.grade]), atol=1.5 / 255), (pt.row_id, rgb)
    assert n_exact >= 20
    # All three colours are in use (the fixture rotates grades).
    assert {pt.grade for p in rep.image_panels for pt in p.points} == {0, 1, 2}


def test_shap_values_sum_to_raw_model_output(model_dir: Path) -> None:
    import xgboost as xgb
    from helpers.fake_table import make_fake_table

    from radspine.models.bundle import Bundle
    from radspine.models.estimator import design_matrix

    b = Bundle.load(model_dir)
    table = make_fake_table(3, seed=SEED + 7, n_rad_noise=6, n_cnn=4)[0]
    w = b.info["blend_weight_lightgbm"]
    for k, col in enumerate(SEVERITY_COLUMNS):
        sv = b.shap_values(table, grade=col)
        total = sv.drop(columns="row_id").sum(axis=1).to_numpy()
        expected = np.zeros(len(table))
        for g in GROUPS:
            m = (table["group"] == g).to_numpy()
            X = design_matrix(table[m], b.features, b.info["mode"])
            lm = b.models["lightgbm"].models_[g]
            xm = b.models["xgboost"].models_[g]
            assert list(lm.classes_) == [0, 1, 2] and list(xm.classes_) == [0, 1, 2]
            raw_l = lm.booster_.predict(X, raw_score=True, num_iteration=lm.best_iteration_)[:, k]
            d = xgb.DMatrix(X, feature_names=[f"f{i}" for i in range(X.shape[1])])
            raw_x = xm.booster_.predict(d, output_margin=True, iteration_range=(0, xm.best_iteration_))[:, k]
            expected[m] = w[g] * raw_l + (1 - w[g]) * raw_x
        np.testing.assert_allclose(total, expected, rtol=1e-5, atol=1e-5)
        assert np.abs(total).max() > 0.1  # the models learned something, so the check is not 0 == 0


def test_top_contributions_rank_shap_of_predicted_grade(model_dir: Path) -> None:
    from helpers.fake_table import make_fake_table

    from radspine.models.bundle import Bundle
    from radspine.report import plain_feature_name, top_contributions

    b = Bundle.load(model_dir)
    table = make_fake_table(2, seed=SEED + 3, n_rad_noise=6, n_cnn=4)[0]
    top = top_contributions(b, table, top_k=3)
    grades = b.predict_proba(table)[list(SEVERITY_COLUMNS)].to_numpy().argmax(axis=1)
    assert set(top) == set(table["row_id"])
    for i in (0, 7, 30):
        rid = table["row_id"].iloc[i]
        sv = b.shap_values(table.iloc[[i]], grade=SEVERITY_COLUMNS[grades[i]]).drop(columns=["row_id", "bias"]).iloc[0]
        best = sv.abs().sort_values(ascending=False, kind="stable").index[:3].tolist()
        assert [c.feature for c in top[rid]] == best
        assert [c.value for c in top[rid]] == pytest.approx(sv[best].tolist())
        assert top[rid][0].plain == plain_feature_name(best[0])


def test_cli_batch_index_fallbacks_and_determinism(study_report, pred_dir: Path, phantom_root: Path,
                                                   model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from radspine.cli import app

    rep, _, _ = study_report
    preds = pd.read_csv(pred_dir / "predictions.csv")
    ids = sorted(preds["row_id"].str.split("_").str[0].astype(int).unique())
    other = next(i for i in ids if i != rep.study_id)
    # A study in the predictions but not in the dataset is skipped (logged, listed), the others render.
    ghost = preds[preds["row_id"].str.startswith(f"{rep.study_id}_")].copy()
    ghost["row_id"] = ghost["row_id"].str.replace(f"{rep.study_id}_", "77_", n=1, regex=False)
    # One row points at a series the study does not have (and no world position): its panel still renders.
    bad = preds.copy()
    j = bad.index[bad["row_id"] == f"{other}_spinal_canal_stenosis_l1_l2"][0]
    bad.loc[j, "series_id"] = 123
    bad.loc[j, ["world_x", "world_y", "world_z"]] = np.nan
    d = tmp_path / "pred"
    shutil.copytree(pred_dir, d)
    pd.concat([bad, ghost]).to_csv(d / "predictions.csv", index=False)
    out = tmp_path / "reports"
    args = ["report", "--data", str(phantom_root), "--predictions", str(d), "--split", "train", "--out", str(out),
            "--model", str(model_dir)]
    res = CliRunner().invoke(app, [*args, "--study", "77", "--study", str(rep.study_id), "--study", str(other)])
    assert res.exit_code == 0, res.output
    assert "2 study report(s)" in res.output
    failed = json.loads((out / "failed.json").read_text())
    assert list(failed) == ["77"] and "study 77" in failed["77"]
    html = (out / "index.html").read_text()
    assert f'href="study_{other}.png"' in html and f'href="study_{rep.study_id}.png"' in html and "not rendered" in html
    doc = json.loads((out / f"study_{other}.json").read_text())
    assert any("series 123" in n for n in doc["notes"])
    sag = next(p for p in doc["panels"] if p["name"] == "sagittal_t2")
    assert sag["kind"] == "image" and len(sag["points"]) == 4
    # Contributions came from the bundle and the features table found beside the predictions.
    assert all(r["top_features"] for r in doc["rows"])
    # Same inputs → the same bytes, whether rendered directly or through the CLI batch.
    assert (out / f"study_{rep.study_id}.png").read_bytes() == rep.png.read_bytes()
    # A user mistake: one line on stderr, exit code 2, no traceback.
    res = CliRunner().invoke(app, [*args, "--study", "5"])
    assert res.exit_code == 2
    assert "no predictions for study 5" in res.output and "Traceback" not in res.output


def test_bad_inputs_raise_clear_errors(pred_dir: Path, phantom_root: Path, tmp_path: Path) -> None:
    from radspine.errors import DatasetError
    from radspine.report import load_predictions, render_reports

    with pytest.raises(DatasetError, match="no predictions.csv"):
        load_predictions(tmp_path)
    (tmp_path / "predictions.csv").write_text("row_id,normal_mild\n1_x,0.5\n")
    with pytest.raises(DatasetError, match=r"predictions.csv: missing columns \['moderate', 'severe'\]"):
        load_predictions(tmp_path)
    with pytest.raises(DatasetError, match="no predictions for study 5"):
        render_reports(phantom_root, pred_dir, tmp_path / "r", split="train", study_ids=[5])


def test_wrong_model_bundle(pred_dir: Path, phantom_root: Path, model_dir: Path, tmp_path: Path) -> None:
    from radspine.errors import ModelError
    from radspine.report import render_reports

    with pytest.raises(ModelError, match="not a model bundle"):
        render_reports(phantom_root, pred_dir, tmp_path / "r", model_dir=tmp_path, split="train", study_ids=[])
    # A features table made with another feature config than the bundle's is refused, naming both.
    d = tmp_path / "pred"
    shutil.copytree(pred_dir, d)
    (d / "predict_work" / "features" / "meta.json").write_text(json.dumps({"config_hash": "other"}))
    with pytest.raises(ModelError, match="'other' differs from the model's 'fake-report'"):
        render_reports(phantom_root, d, tmp_path / "r", model_dir=model_dir, split="train", study_ids=[])


def _panel_text(rep, level: str) -> str:
    """A level's text panel as drawn, wrapped lines joined back (wrapping only replaced single spaces)."""
    panel = next(p for p in rep.panels if p.name == f"text_{level}")
    return " ".join(line.strip() for line in panel.lines)


def test_measurement_text_and_reference_cutoffs() -> None:
    from radspine.report import cutoff_text, measurement_text

    assert measurement_text("dural_sac_area_mm2", 82.0) == (
        "dural sac 82 mm² (ref. < 100 relative, < 75 absolute central stenosis)")
    assert measurement_text("canal_ap_mm", 9.12) == "canal AP 9.1 mm (ref. < 12 relative, < 10 absolute stenosis)"
    assert measurement_text("recess_depth_mm", 2.6) == "recess depth 2.6 mm (ref. < 3 suggestive of lateral recess stenosis)"
    assert measurement_text("foramen_area_mm2", 41.0) == "foramen 41 mm²"  # no published cut-off: none invented
    assert cutoff_text("disc_height_mm") == ""
    assert measurement_text("dural_sac_area_mm2", float("nan"), "no point") == "dural sac not measured (no point)"


def test_report_shows_measurements_source_and_flags(study_report, tmp_path: Path) -> None:
    from radspine.report import write_index

    rep, _, _ = study_report
    l4 = _panel_text(rep, "l4_l5")
    for text in ("dural sac 82 mm² (ref. < 100 relative, < 75 absolute central stenosis)",
                 "canal AP 9.1 mm (ref. < 12 relative, < 10 absolute stenosis)",
                 "foramen 41 mm², foramen height 14.0 mm (ref. < 15 suggestive of foraminal stenosis)",
                 "recess depth 2.6 mm (ref. < 3 suggestive of lateral recess stenosis)", "disc height 9.5 mm"):
        assert text in l4, text
    assert "not measured" not in l4
    # The first study's L5/S1 dural sac is NaN in predictions.csv: said so, with why, the rest still shown.
    l5 = _panel_text(rep, "l5_s1")
    assert "canal AP 9.1 mm" in l5 and "dural sac not measured (structure not measurable on the patch)" in l5
    l1, l2 = _panel_text(rep, "l1_l2"), _panel_text(rep, "l2_l3")
    assert "[PRIORS]" in l1 and "graded from the priors (no subarticular labels in training)" in l1
    assert "[DOUBTFUL]" in l2 and "point flagged: doubtful: low confidence" in l2
    assert "· model" in l4 and "conf 0.90" in l4
    doc = json.loads(rep.json.read_text())
    row = next(r for r in doc["rows"] if r["row_id"].endswith("spinal_canal_stenosis_l4_l5"))
    assert [m["name"] for m in row["measurements"]] == ["dural_sac_area_mm2", "canal_ap_mm", "disc_height_mm"]
    assert row["measurements"][0]["value"] == 82.0 and row["measurements"][0]["unit"] == "mm²"
    assert row["graded_from"] == "model"
    # index.html carries the same, per study and row.
    html = (write_index(rep.json.parent)).read_text()
    assert "dural sac 82 mm² (ref. &lt; 100 relative, &lt; 75 absolute central stenosis)" in html
    assert "graded from the priors (no subarticular labels in training)" in html and "image evidence:" in html
    assert "context, not the grade" in html


def test_explanation_puts_image_evidence_before_prior() -> None:
    from radspine.report import explain_values, row_lines

    names = ["geo_level_idx", "mor_dural_sac_area_mm2", "mor_canal_ap_mm", "ctx_other_cnn_0", "cnn_1", "has_axt2",
             "rad_axt2_sac_original_shape2D_Area"]
    e = explain_values(names, np.array([0.9, -0.8, -0.3, 0.2, 0.05, 0.01, 0.1]), 3, level="l4_l5",
                       condition="spinal_canal_stenosis")
    assert e.top[0].feature == "geo_level_idx"  # the level tops the row overall …
    assert [c.feature for c in e.image] == ["mor_dural_sac_area_mm2", "mor_canal_ap_mm", "rad_axt2_sac_original_shape2D_Area"]
    assert [c.feature for c in e.prior] == ["geo_level_idx", "ctx_other_cnn_0", "has_axt2"]
    row = {"condition": "spinal_canal_stenosis", "level": "l4_l5", "grade": 1, "normal_mild": 0.2, "moderate": 0.6,
           "severe": 0.2, "expected_severity": 0.5, "graded_from": "model", "flag": "", "series_id": 1, "x": 1.0,
           "dural_sac_area_mm2": 82.0, "canal_ap_mm": 9.1, "disc_height_mm": float("nan"),
           "disc_height_mm_reason": "no disc band"}
    header, body = row_lines(row, e, width=400)
    assert header.startswith("Spinal canal  Moderate") and header.endswith("· model")
    # … but the reader sees image evidence first, under its own heading, and the prior after it.
    assert [b.split(":")[0].strip() for b in body] == ["measured", "image evidence", "prior/context"]
    assert body[1].strip() == ("image evidence: dural sac area (−0.80), canal AP (−0.30), "
                               "T2 axial · dural sac mask · shape area (+0.10)")
    assert body[2].strip() == ("prior/context: level L4/L5 (+0.90), other side: CNN embedding 0 (+0.20), "
                               "T2 axial present (+0.01)")
    assert body[0].strip().endswith("disc height not measured (no disc band)")


def test_report_explanations_split_by_kind(study_report) -> None:
    rep, _, contribs = study_report
    doc = json.loads(rep.json.read_text())
    prior_graded = [r for r in doc["rows"] if r["graded_from"].startswith("priors")]
    assert len(prior_graded) == 1 and not prior_graded[0]["top_features"]  # no model explanation for it
    for r in (r for r in doc["rows"] if r["graded_from"] == "model"):
        assert r["image_evidence"] and all(c["feature"].startswith(("rad_", "mor_", "cnn_")) for c in r["image_evidence"])
        assert not any(c["feature"].startswith(("rad_", "mor_", "cnn_")) for c in r["prior_context"])
        assert [c["feature"] for c in r["top_features"]] == [c.feature for c in contribs[r["row_id"]].top]
    # Wherever a prior feature tops a row, the panel still lists that row's image evidence first.
    for lv in ("l2_l3", "l3_l4", "l5_s1"):
        text = _panel_text(rep, lv)
        assert text.count("image evidence:") == 5 and text.count("prior/context:") == 5
        assert text.index("image evidence:") < text.index("prior/context:")
    assert "image evidence / prior: none (the model did not grade this row)" in _panel_text(rep, "l1_l2")
    assert any(r["top_features"][0]["kind"] == "prior" for r in doc["rows"])


def test_legend_explains_colours_units_and_delta(study_report) -> None:
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    from radspine.report import GRADE_COLORS

    rep, _, _ = study_report
    doc = json.loads(rep.json.read_text())
    legend = " ".join(doc["legend"])
    for words in ("green Normal/Mild, orange Moderate, red Severe", "mm²", "Δ is its signed distance from the shown "
                  "slice plane in mm", "context only", "image evidence", "prior/context"):
        assert words in legend, words
    panel = next(p for p in rep.panels if p.kind == "legend")
    img = imread(rep.png)[..., :3]
    h = img.shape[0]
    x0, y0, x1, y1 = (int(v) for v in panel.bbox_px)
    box = img[h - y1:h - y0, x0:x1].reshape(-1, 3)
    for c in GRADE_COLORS:
        # Each grade's marker is in the legend, drawn in exactly the points' colour.
        assert (np.abs(box - np.array(to_rgb(c))).max(axis=1) < 1.5 / 255).sum() > 20, c
