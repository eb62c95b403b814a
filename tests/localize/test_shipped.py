"""The shipped pretrained localizer: checksum, loading, fallback, and localisation of a fresh phantom."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from radspine.constants import CONDITIONS
from radspine.errors import ModelError
from radspine.localize import Localizer, shipped_localizer_dir
from radspine.localize.train import evaluate, normalised_coordinates, resolve_truth

SHIPPED = shipped_localizer_dir()
# Bounds for a fresh phantom study (seed never used in training), measured with the committed weights
# (see shipped.json "report" and the benchmark); ~2x headroom, still far below a one-level slip (~35 mm).
CANAL_MEDIAN_MM = 8.0
FORAMEN_MEDIAN_MM = 12.0


def test_shipped_checksum_matches_metadata():
    meta = json.loads((SHIPPED / "shipped.json").read_text())
    digest = hashlib.sha256((SHIPPED / "localizer.pt").read_bytes()).hexdigest()
    assert digest == meta["sha256"]["localizer.pt"]
    assert (SHIPPED / "localizer.pt").stat().st_size < 8 * 2**20
    assert meta["seed"] == 0 and meta["config"]["device"] == "cpu"


def test_shipped_loads_and_predicts_every_condition():
    loc = Localizer.load(SHIPPED, device="cpu")
    assert loc.sag_net is not None and loc.ax_net is not None
    assert loc.conditions == list(CONDITIONS)
    assert set(loc.calibration) >= {"canal"}


def test_inference_settings_come_from_the_code_not_the_saved_model(tmp_path: Path):
    """A model saved (before custom inference settings were recorded) with an older plane step and fine window
    gets today's inference defaults on loading, while what the net learned (its training config) is kept; one
    saved before the axial slice search (no such key) keeps the nearest slice, since its axial net never
    learned to rank slices. A value the user chose is recorded and kept."""
    import torch

    from radspine.localize.config import LocalizerConfig
    from radspine.localize.infer import INFERENCE_ONLY, MODEL_FILE

    shipped = Localizer.load(SHIPPED)
    old = LocalizerConfig(**{**shipped.cfg.model_dump(), "slice_step_mm": 2.0, "sag_fine_window_mm": 200.0})
    Localizer(old, shipped.sag_net, shipped.ax_net, shipped.offsets, shipped.conditions).save(tmp_path / "m")
    assert Localizer.load(tmp_path / "m").cfg.slice_step_mm == 2.0  # the user's choice is kept
    assert Localizer.load(tmp_path / "m").cfg.sag_fine_window_mm == 200.0
    state = torch.load(tmp_path / "m" / MODEL_FILE, weights_only=True)
    assert state["inference_custom"] == {"slice_step_mm": 2.0, "sag_fine_window_mm": 200.0}
    del state["inference_custom"]  # as saved by an older version: the values are its era's defaults
    torch.save(state, tmp_path / "m" / MODEL_FILE)
    loc = Localizer.load(tmp_path / "m")
    assert loc.cfg.slice_step_mm == LocalizerConfig().slice_step_mm == 3.0
    for f in INFERENCE_ONLY:
        assert getattr(loc.cfg, f) == LocalizerConfig.model_fields[f].default
    assert loc.cfg.sag_size == old.sag_size and loc.cfg.base_channels == old.base_channels
    assert loc.cfg.ax_slice_search_mm == old.ax_slice_search_mm > 0

    state = torch.load(tmp_path / "m" / MODEL_FILE, weights_only=True)
    del state["config"]["ax_slice_search_mm"]
    torch.save(state, tmp_path / "m" / MODEL_FILE)
    assert Localizer.load(tmp_path / "m").cfg.ax_slice_search_mm == 0.0


def test_bundle_without_localizer_falls_back_to_shipped(tmp_path: Path):
    (tmp_path / "bundle").mkdir()
    loc = Localizer.load(tmp_path / "bundle" / "localizer", device="cpu")  # bundle exists, no localizer/ in it
    assert loc.conditions == list(CONDITIONS)
    with pytest.raises(ModelError, match="localizer model not found"):
        Localizer.load(tmp_path / "missing" / "model")
    with pytest.raises(ModelError, match="localizer model not found"):
        Localizer.load(tmp_path / "bundle", shipped_fallback=False)


def test_shipped_localizes_a_fresh_phantom(tmp_path: Path):
    from radspine.io.dataset import Dataset
    from radspine.io.volumes import load_study_volumes
    from radspine.synth import QuirkConfig, make_dataset

    make_dataset(tmp_path / "d", 1, 0, seed=777, size=96, quirks=QuirkConfig.none(), workers=1)
    ds = Dataset.open(tmp_path / "d")
    st = ds.studies("train")[0]
    vols = load_study_volumes(st)
    coords = normalised_coordinates(ds.coordinates)
    truth = resolve_truth(vols, coords[coords.study_id == st.study_id])
    pts = Localizer.load(SHIPPED, device="cpu").predict_volumes(st.study_id, vols)
    rep = evaluate(pts, {st.study_id: truth})
    assert rep["spinal_canal_stenosis"]["median_mm"] < CANAL_MEDIAN_MM, rep["spinal_canal_stenosis"]
    for cond in CONDITIONS[1:3]:
        assert rep[cond]["median_mm"] < FORAMEN_MEDIAN_MM, (cond, rep[cond])
    assert np.isfinite(pts.confidence).all() and pts.confidence.between(0, 1).all()


def test_cli_localize_without_model_uses_the_shipped_localizer(tmp_path: Path):
    import pandas as pd
    from typer.testing import CliRunner

    from radspine.cli import app
    from radspine.localize import read_points
    from radspine.synth import QuirkConfig, make_dataset

    make_dataset(tmp_path / "d", 0, 1, seed=778, size=96, quirks=QuirkConfig.none(), workers=1)
    res = CliRunner().invoke(app, ["localize", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "p.csv"), "-q"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == 25
    detail = read_points(tmp_path / "p_detail.csv")
    assert detail["level_confidence"].between(0, 1).all() and detail["level_confidence"].nunique() == 1


def test_shipped_metadata_credits_its_training_sources():
    meta = json.loads((SHIPPED / "shipped.json").read_text())
    spider = meta["sources"]["spider"]
    assert spider["licence"] == "CC BY 4.0" and "SPIDER" in spider["credit"] and "van der Graaf" in spider["credit"]
    assert not set(spider["train_patients"]) & set(spider["holdout_patients"])
    assert len(spider["holdout_patients"]) >= 8
    assert "rsna" not in json.dumps(meta["sources"]).lower()  # no RSNA-derived data trains the shipped weights
    assert json.loads((SHIPPED / "meta.json").read_text())["sources"] == meta["sources"]


def test_cli_predict_without_model_gives_shipped_points_and_reference_priors(tmp_path: Path):
    """Zero-shot predict: the shipped localizer's points, every grade from the real RSNA 2024 priors, said per row."""
    import pandas as pd
    from typer.testing import CliRunner

    from radspine.cli import app
    from radspine.synth import QuirkConfig, make_dataset

    make_dataset(tmp_path / "d", 0, 1, seed=779, size=96, quirks=QuirkConfig.none(), workers=1)
    out = tmp_path / "o" / "submission.csv"
    res = CliRunner().invoke(app, ["predict", "--data", str(tmp_path / "d"), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    sub, det = pd.read_csv(out), pd.read_csv(tmp_path / "o" / "predictions.csv")
    assert len(sub) == 25 and np.allclose(sub[["normal_mild", "moderate", "severe"]].sum(axis=1), 1.0)
    assert det["graded_from"].str.startswith("priors: no model given").all()
    assert det["series_id"].ge(0).all() and det["level_confidence"].between(0, 1).all()
    # Real-reference priors: L4/L5 subarticular is far more often Moderate/Severe than L1/L2 spinal.
    sev = det.set_index("row_id")["expected_severity"]
    sid = det["study_id"].iloc[0]
    assert sev[f"{sid}_left_subarticular_stenosis_l4_l5"] > 2 * sev[f"{sid}_spinal_canal_stenosis_l1_l2"]
