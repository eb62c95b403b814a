"""Localizer end to end on a phantom: accuracy, sides by world x, missing/thin series, CSV schema, batch safety."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from radspine.constants import AX_T2, CONDITION_NAMES, CONDITIONS, SAG_T2
from radspine.errors import ModelError
from radspine.localize import (
    POINT_COLUMNS,
    Localizer,
    LocalizerConfig,
    detail_path,
    localize_dataset,
    read_points,
)
from radspine.localize.infer import load_study_volumes
from radspine.localize.net import HeatmapUNet
from radspine.localize.train import (
    Samples,
    evaluate,
    fit_heatmap_net,
    normalised_coordinates,
    resolve_truth,
    sag_channels,
    study_samples,
)
from radspine.types import Volume

from .toy import make_toy_study

# Bounds from this fixture (24 training / 6 held-out studies, 20 epochs). Measured held-out medians:
# training seeds 0-2 on the phantom of 21:15 UTC: canal 1.6-1.8 mm, foramina 1.5-3.2, subarticular
# 0.7-1.3, level accuracy 0.97-1.0; seed 0 on the phantom revised at 21:30 (harder axials): canal 1.5,
# foramina 2.6, subarticular 4.0-4.5, level accuracy 0.87-0.93. The bounds leave ~2x headroom over the
# worst value for seed/BLAS/phantom drift, yet a broken geometry (wrong side, wrong slice frame,
# swapped axes) or a systematic one-level shift (~35 mm) fails them.
CANAL_MEDIAN_MM = 5.0
FORAMEN_MEDIAN_MM = 8.0
SUBARTICULAR_MEDIAN_MM = 9.0
LEVEL_ACCURACY = 0.7


@pytest.fixture(scope="module")
def loc(loc_model: Path) -> Localizer:
    return Localizer.load(loc_model, device="cpu")


@pytest.fixture(scope="module")
def dataset(loc_root: Path):
    from radspine.io.dataset import Dataset

    return Dataset.open(loc_root)


def test_heldout_report_accuracy(loc_report: dict):
    per = loc_report["per_condition"]
    assert loc_report["n_holdout_studies"] >= 4
    assert per["spinal_canal_stenosis"]["median_mm"] < CANAL_MEDIAN_MM
    for cond in ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"):
        assert per[cond]["median_mm"] < FORAMEN_MEDIAN_MM, (cond, per[cond])
    for cond in ("left_subarticular_stenosis", "right_subarticular_stenosis"):
        assert per[cond]["median_mm"] < SUBARTICULAR_MEDIAN_MM, (cond, per[cond])
    for cond in CONDITIONS:
        m = per[cond]
        assert m["n"] > 0 and 0 <= m["within_5mm"] <= m["within_10mm"] <= 1
        assert m["level_accuracy"] >= LEVEL_ACCURACY, (cond, m)


def test_sides_land_on_correct_side_in_world_x(loc: Localizer, dataset, loc_root: Path):
    marks = pd.read_csv(loc_root / "synth_landmarks.csv")
    for study in dataset.studies("test"):
        pts = loc.predict_study(study)
        assert len(pts) == 25 and list(pts.columns) == list(POINT_COLUMNS)
        midline = float(marks.loc[marks.study_id == study.study_id, "midline_x"].iloc[0])
        for cond in CONDITIONS[1:]:
            wx = pts.loc[pts.condition == CONDITION_NAMES[cond], "world_x"].to_numpy()
            # Patient left is +x (LPS): left points must lie at larger world x than the midline.
            if cond.startswith("left"):
                assert np.all(wx > midline + 2), (cond, wx, midline)
            else:
                assert np.all(wx < midline - 2), (cond, wx, midline)


def test_study_without_axial_still_gets_25_flagged_rows(loc: Localizer, dataset):
    study = dataset.studies("test")[0]
    full = loc.predict_study(study)
    no_ax = replace(study, series=tuple(s for s in study.series if s.description != AX_T2))
    pts = loc.predict_study(no_ax)
    assert len(pts) == 25
    sub = pts.condition.str.contains("Subarticular")
    assert pts.loc[sub, "flag"].str.contains("no Axial T2").all()
    assert (pts.loc[~sub, "flag"] == "").all()
    # Sagittal conditions do not depend on the axial series; subarticular points are still inferred.
    pd.testing.assert_frame_equal(pts[~sub].reset_index(drop=True), full[~sub].reset_index(drop=True))
    assert np.isfinite(pts.loc[sub, ["world_x", "world_y", "world_z"]].to_numpy()).all()


def test_study_without_sagittal_series_gets_flagged_fallback_rows(loc: Localizer):
    from radspine.localize.infer import StudyVolumes

    pts = loc.predict_volumes(5, StudyVolumes(problems={SAG_T2: "no Sagittal T2/STIR series"}))
    assert len(pts) == 25 and (pts.series_id == -1).all() and pts.x.isna().all()
    assert pts.flag.str.startswith("not localised: no Sagittal T2/STIR series").all()


def _thin(vol: Volume, factor: int, scale: float) -> Volume:
    """Linearly interpolated thin-slice version of a stack (factor× the slices), other intensity scale."""
    n = (len(vol.positions) - 1) * factor + 1
    kf = np.linspace(0, len(vol.positions) - 1, n)
    lo = np.minimum(np.floor(kf).astype(int), len(vol.positions) - 2)
    w = (kf - lo)[:, None, None]
    pix = (1 - w) * vol.pixels[lo] + w * vol.pixels[lo + 1]
    pos = (1 - w[:, :, 0]) * vol.positions[lo] + w[:, :, 0] * vol.positions[lo + 1]
    return replace(vol, pixels=(pix * scale + 300).astype(np.float32), positions=pos,
                   instance_numbers=np.arange(1, n + 1), slice_thickness=vol.slice_spacing / factor)  # fmt: skip


def test_thin_slice_study_still_localises(loc: Localizer, dataset, loc_report: dict):
    coords = normalised_coordinates(dataset.coordinates)
    sid = loc_report["holdout_study_ids"][0]
    vols = load_study_volumes(dataset.study(sid, "train"))
    truth = resolve_truth(vols, coords[coords.study_id == sid])
    thin = replace(vols, sag_t2=_thin(vols.sag_t2, 3, 7.5), sag_t1=_thin(vols.sag_t1, 3, 0.2))
    assert thin.sag_t2.shape[0] >= 40
    pts = loc.predict_volumes(sid, thin)
    sag = ~pts.condition.str.contains("Subarticular")  # a subarticular slice may be flagged far from its level
    assert len(pts) == 25 and (pts.flag[sag] == "").all(), pts.flag.tolist()
    assert pts.loc[pts.series_id == vols.sag_t2.series_id, "instance_number"].max() > 16
    rep = evaluate(pts, {sid: truth})
    assert rep["spinal_canal_stenosis"]["median_mm"] < CANAL_MEDIAN_MM
    for cond in CONDITIONS[:3]:
        assert rep[cond]["median_mm"] < FORAMEN_MEDIAN_MM, rep[cond]


def test_points_csv_round_trips_through_coordinates_schema(loc_model: Path, loc_root: Path, tmp_path: Path):
    from radspine.io.dataset import read_coordinates

    out = tmp_path / "points.csv"
    df = localize_dataset(loc_root, loc_model, out, split="test")
    assert len(df) == 25 * 2 and (df.groupby("study_id").size() == 25).all()
    back = read_coordinates(out)  # the competition's own schema validator (exact columns, int ids)
    assert len(back) == len(df)
    assert back.condition.map(CONDITION_NAMES).tolist() == df.condition.tolist()
    assert (back.series_id.to_numpy() == df.series_id.to_numpy()).all()
    assert (back.instance_number.to_numpy() == df.instance_number.to_numpy()).all()
    assert np.allclose(back[["x", "y"]].to_numpy(), df[["x", "y"]].to_numpy(), atol=1e-6)
    detail = read_points(detail_path(out))
    pd.testing.assert_frame_equal(detail, df, check_exact=False, atol=1e-6)


def test_batch_survives_broken_studies(loc_model: Path, loc_root: Path, tmp_path: Path, monkeypatch, caplog):
    from radspine.io.dataset import Dataset

    root = tmp_path / "data"
    shutil.copytree(loc_root, root)
    ds = Dataset.open(root)
    a, b = ds.studies("test")[:2]
    t2 = a.series_of_type(SAG_T2)[0].path
    for f in t2.iterdir():  # every Sagittal T2 file truncated: unreadable series
        f.write_bytes(b"not a dicom")
    real = Localizer.predict_study

    def flaky(self, study):
        if study.study_id == b.study_id:
            raise RuntimeError("boom")
        return real(self, study)

    monkeypatch.setattr(Localizer, "predict_study", flaky)
    df = localize_dataset(root, loc_model, tmp_path / "p.csv", split="test")
    assert (df.groupby("study_id").size() == 25).all()
    ra, rb = df[df.study_id == a.study_id], df[df.study_id == b.study_id]
    canal = ra.condition == CONDITION_NAMES["spinal_canal_stenosis"]
    assert ra.loc[canal, "flag"].str.contains("canal from Sagittal T1").all()
    assert np.isfinite(ra.loc[canal, "x"]).all()
    assert rb.flag.str.startswith("failed: RuntimeError: boom").all() and (rb.series_id == -1).all()
    assert "boom" in caplog.text
    # The schema CSV omits the unlocalisable rows but keeps everything else.
    assert len(pd.read_csv(tmp_path / "p.csv")) == 25


def test_cli_localize_and_missing_model(loc_model: Path, loc_root: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from radspine.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["localize", "--data", str(loc_root), "--model", str(tmp_path / "nope"),
                              "--out", str(tmp_path / "x.csv")])  # fmt: skip
    assert res.exit_code == 2 and "localizer model not found" in res.output
    res = runner.invoke(app, ["localize", "--data", str(loc_root), "--model", str(loc_model),
                              "--out", str(tmp_path / "pts.csv"), "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "pts.csv")) == 50


def test_cli_train_localizer_writes_bundle_and_report(loc_root: Path, tmp_path: Path):
    import json

    from typer.testing import CliRunner

    from radspine.cli import app

    res = CliRunner().invoke(app, ["train-localizer", "--data", str(loc_root), "--out", str(tmp_path / "m"),
                                   "--epochs", "1", "--seed", "3", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "m" / "localizer_report.json").read_text())
    assert rep["epochs"] == 1 and rep["seed"] == 3 and set(rep["per_condition"]) >= set(CONDITIONS)
    assert rep["init"] == "shipped"  # fine-tunes the shipped localizer unless told otherwise
    assert Localizer.load(tmp_path / "m").cfg.epochs == 1
    res = CliRunner().invoke(app, ["train-localizer", "--data", str(loc_root), "--out", str(tmp_path / "s"),
                                   "--epochs", "1", "--init", "none", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "s" / "localizer_report.json").read_text())["init"] is None
    res = CliRunner().invoke(app, ["train-localizer", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m2")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_corrupt_model_is_a_model_error(tmp_path: Path):
    (tmp_path / "localizer.pt").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="corrupt localizer model"):
        Localizer.load(tmp_path)


def test_training_is_deterministic():
    torch.set_num_threads(1)
    # No neighbour-slice axial crops: two per labelled level (their count is tested in test_axial_slice.py).
    cfg = LocalizerConfig(sag_size=32, ax_size=32, sag_depth=2, ax_depth=2, base_channels=4, batch_size=4,
                          ax_slice_search_mm=0.0)  # fmt: skip
    vols, coords, _ = make_toy_study(7, 3, size=48)
    truth = resolve_truth(vols, coords)
    s1, a1 = study_samples(vols, truth, cfg, seed=5)
    s2, _ = study_samples(vols, truth, cfg, seed=5)
    assert np.array_equal(s1.x, s2.x) and np.array_equal(s1.peaks, s2.peaks, equal_nan=True)
    nets = [fit_heatmap_net(s1, sag_channels(cfg), 2, cfg, seed=1, epochs=2) for _ in range(2)]
    for (k, v1), v2 in zip(nets[0].state_dict().items(), nets[1].state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k
    assert isinstance(nets[0], HeatmapUNet) and isinstance(a1, Samples) and len(a1.x) == 10


def test_oof_points_cover_every_study_once():
    from radspine.localize.train import _oof, _TrainData

    cfg = LocalizerConfig(sag_size=32, ax_size=32, sag_depth=2, ax_depth=2, base_channels=4, epochs=1)
    toys = {i: make_toy_study(i, i, size=48) for i in (11, 12, 13, 14)}
    coords = pd.concat([t[1] for t in toys.values()])
    data = _TrainData({i: (lambda i=i: toys[i][0]) for i in toys}, coords, cfg, seed=0, source="toy")
    out = _oof(data, cfg, n_folds=2, seed=0, source="toy")
    assert out.study_id.tolist() == [sid for sid in sorted(toys) for _ in range(25)]
    assert list(out.columns) == list(POINT_COLUMNS) and (out.series_id >= 0).all()
    with pytest.raises(Exception, match="n_folds=9"):
        _oof(data, cfg, n_folds=9, seed=0, source="toy")


def test_an_ambiguous_level_chain_is_marked_and_still_graded(loc_model: Path, dataset, monkeypatch):
    """A study whose chain one disc up explains the heatmaps as well (margin ≤ 0) gets a low level confidence
    and "levels may be shifted" on every point; the points stay usable (graded), unlike a "doubtful" one."""
    import radspine.localize.infer as infer
    from radspine.points import is_unusable

    study = dataset.studies("train")[0]
    vols = load_study_volumes(study)
    clear = Localizer.load(loc_model, device="cpu").predict_volumes(study.study_id, vols)
    assert clear["level_confidence"].nunique() == 1 and list(clear.columns) == list(POINT_COLUMNS)
    real = infer.choose_levels
    monkeypatch.setattr(infer, "choose_levels", lambda *a, **k: replace(real(*a, **k), margin=-0.2))
    amb = Localizer.load(loc_model, device="cpu").predict_volumes(study.study_id, vols)
    conf = float(amb["level_confidence"].iloc[0])
    assert conf < Localizer.load(loc_model).cfg.level_shift_below <= float(clear["level_confidence"].iloc[0])
    located = amb[amb.series_id >= 0]
    assert located.flag.str.contains(f"levels may be shifted (level confidence {conf:.2f})", regex=False).all()
    assert not clear.flag.str.contains("levels may be shifted").any()
    assert [is_unusable(f) for f in located.flag] == [is_unusable(f) for f in clear[clear.series_id >= 0].flag]
    # A chain that fits worse than its shifted neighbour (transitional anatomy): doubtful, not graded.
    monkeypatch.setattr(infer, "choose_levels", lambda *a, **k: replace(real(*a, **k), margin=-1.0))
    bad = Localizer.load(loc_model, device="cpu").predict_volumes(study.study_id, vols)
    assert float(bad["level_confidence"].iloc[0]) < Localizer.load(loc_model).cfg.level_doubt_below
    located = bad[bad.series_id >= 0]
    assert located.flag.str.contains("doubtful: level count", regex=False).all()
    assert all(is_unusable(f) for f in located.flag)
