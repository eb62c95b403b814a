"""Partial training labels (canal only, foramina only, lower-level axials) and the doubtful-flag vocabulary."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from radspine.constants import CONDITION_NAMES, LEVELS
from radspine.localize import POINT_COLUMNS, Localizer, LocalizerConfig
from radspine.localize.infer import CANAL, FORA, SUBS, untrained_flag
from radspine.localize.train import _train_on, _TrainData
from radspine.points import DETAIL_COLUMNS, is_unusable

from .toy import make_toy_study

TOY = LocalizerConfig(sag_size=48, sag_depth=3, ax_size=32, ax_depth=2, base_channels=6, epochs=12, batch_size=8,
                      device="cpu", strong_augment=False, holdout_frac=0.0, sag_spacing_mm=4.0,
                      sag_fine_spacing_mm=3.0, sag_fine_window_mm=192.0, jitter_mm=25.0)  # fmt: skip
TOY_IDS = (21, 22, 23, 24, 25, 26)


def _variant(kind: str, sid: int):
    """A toy study restricted like a real partial set: 'canal' (T2 only, canal labels), 'foramina' (T1 only,
    foraminal labels), 'lower_axial' (axial stacks only at L4/L5 and L5/S1)."""
    vols, coords, truth = make_toy_study(sid, sid)
    if kind == "canal":
        vols = replace(vols, sag_t1=None, axial=[], problems={"Sagittal T1": "no Sagittal T1 series",
                                                              "Axial T2": "no Axial T2 series"})  # fmt: skip
        coords = coords[coords.condition == CANAL]
    elif kind == "foramina":
        vols = replace(vols, sag_t2=None, axial=[], problems={"Sagittal T2/STIR": "no Sagittal T2/STIR series",
                                                              "Axial T2": "no Axial T2 series"})  # fmt: skip
        coords = coords[coords.condition.isin(FORA)]
    elif kind == "lower_axial":
        keep = [v for v in vols.axial if v.stack_index >= 3]
        vols = replace(vols, axial=keep)
        ax_ids = {int(n) for v in keep for n in v.instance_numbers}
        sub = coords.condition.isin(SUBS)
        coords = coords[~sub | coords.instance_number.isin(ax_ids)]
    return vols, coords.reset_index(drop=True), truth


def _train(kind: str, tmp: Path) -> tuple[Localizer, dict, dict]:
    torch.set_num_threads(1)
    toys = {sid: _variant(kind, sid) for sid in TOY_IDS}
    coords = pd.concat([t[1] for t in toys.values()])
    data = _TrainData({sid: (lambda s=sid: toys[s][0]) for sid in toys}, coords, TOY, seed=0, source="toy")
    _train_on(data, tmp, TOY, 0)
    import json

    return Localizer.load(tmp), json.loads((tmp / "meta.json").read_text()), toys


def _rows(pts: pd.DataFrame, cond: str) -> pd.DataFrame:
    return pts[pts.condition == CONDITION_NAMES[cond]]


@pytest.fixture(scope="module")
def canal_only(tmp_path_factory):
    return _train("canal", tmp_path_factory.mktemp("canal"))


def test_point_columns_are_detail_plus_both_confidences():
    assert POINT_COLUMNS == (*DETAIL_COLUMNS, "confidence", "level_confidence")


def test_canal_only_training_predicts_canal_and_flags_the_rest(canal_only):
    loc, meta, toys = canal_only
    assert meta["conditions"] == [CANAL]
    assert set(meta["not_predicted"]) == set(FORA + SUBS)
    sid = TOY_IDS[0]
    full, _, truth = make_toy_study(sid, sid)  # the study with every series: the other heads still not guessed
    pts = loc.predict_volumes(sid, full)
    assert len(pts) == 25 and list(pts.columns) == list(POINT_COLUMNS)
    for cond in FORA + SUBS:
        r = _rows(pts, cond)
        assert (r.flag == untrained_flag(cond)).all() and (r.series_id == -1).all() and r.x.isna().all()
        assert r.flag.map(is_unusable).all() and (r.confidence == 0).all()
    canal = _rows(pts, CANAL)
    assert (canal.series_id == full.sag_t2.series_id).all() and canal.confidence.between(0, 1).all()
    # In-plane (AP) and left-right placement.
    wx = canal.world_x.to_numpy()
    assert np.all(np.abs(wx - truth[(CANAL, LEVELS[0])][0]) < 8.0), wx


def test_canal_only_training_level_accuracy(canal_only):
    """The canal-only toy model (6 studies, T2 only) slipped one level (~33 mm) until levels were counted
    from the sacrum up."""
    loc, _, _ = canal_only
    sid = TOY_IDS[0]
    full, _, truth = make_toy_study(sid, sid)
    canal = _rows(loc.predict_volumes(sid, full), CANAL)
    err = [np.linalg.norm(canal.iloc[i][["world_x", "world_y", "world_z"]].to_numpy(float) - truth[(CANAL, lv)])
           for i, lv in enumerate(LEVELS)]  # fmt: skip
    assert np.median(err) < 8.0, err


def test_study_without_sagittal_is_not_localised(canal_only):
    loc, _, toys = canal_only
    vols = replace(toys[TOY_IDS[0]][0], sag_t2=None, sag_t1=None)
    pts = loc.predict_volumes(1, vols)
    assert pts.flag.str.startswith("not localised").all() and (pts.series_id == -1).all()


def test_foramina_only_training_from_t1(tmp_path):
    loc, meta, toys = _train("foramina", tmp_path)
    assert meta["conditions"] == list(FORA)
    sid = TOY_IDS[1]
    vols, _, truth = toys[sid]
    pts = loc.predict_volumes(sid, vols)
    assert (_rows(pts, CANAL).flag == untrained_flag(CANAL)).all()
    for cond in FORA:
        r = _rows(pts, cond)
        assert (r.series_id == vols.sag_t1.series_id).all()
        err = [np.linalg.norm(r.iloc[i][["world_x", "world_y", "world_z"]].to_numpy(float) - truth[(cond, lv)])
               for i, lv in enumerate(LEVELS)]  # fmt: skip
        assert np.median(err) < 12.0, (cond, err)
        # Sides by world x: the toy's foramina sit at x = x_off ± 20 mm.
        wx = r.world_x.to_numpy()
        assert (wx > 0).all() if cond.startswith("left") else (wx < 0).all(), (cond, wx)


def test_lower_level_axials_flag_upper_subarticular_doubtful(tmp_path):
    loc, meta, toys = _train("lower_axial", tmp_path)
    assert set(SUBS) <= set(meta["conditions"])
    sid = TOY_IDS[2]
    vols, _, _ = toys[sid]
    pts = loc.predict_volumes(sid, vols)
    for cond in SUBS:
        r = _rows(pts, cond).set_index("level")
        for lv in ("L1/L2", "L2/L3"):  # ≥ 30 mm from the nearest axial slice
            assert r.loc[lv, "flag"].startswith("doubtful: axial slice"), r.loc[lv, "flag"]
            assert is_unusable(r.loc[lv, "flag"]) and r.loc[lv, "confidence"] <= 0.5
        assert not is_unusable(r.loc["L5/S1", "flag"]), r.loc["L5/S1", "flag"]


def test_gap_check_marks_a_far_level_doubtful(canal_only):
    loc, _, _ = canal_only
    z = {lv: np.array([0.0, 0.0, 70.0 - 33.0 * i]) for i, lv in enumerate(LEVELS)}
    z[LEVELS[4]] = z[LEVELS[3]] - np.array([0, 0, 76.0])  # 76 mm below L4/L5, median gap 33 mm
    scores = {lv: 0.8 for lv in LEVELS} | {LEVELS[4]: 0.1}
    doubts = loc._gap_doubts(z, scores)
    assert list(doubts) == [LEVELS[4]] and doubts[LEVELS[4]].startswith("doubtful:")
    assert loc._gap_doubts({lv: np.array([0, 0, -33.0 * i]) for i, lv in enumerate(LEVELS)}, scores) == {}


def test_training_data_keeps_points_not_decoded_volumes():
    """Once a study's crops are cut, nothing in the training data refers to its decoded stacks (200 real-size
    studies held ~14 GB that way): the volumes can be freed, and are."""
    import gc
    import weakref

    vols, coords, _ = make_toy_study(3, 3)
    refs = [weakref.ref(v) for v in vols.all()]
    holder = {"vols": vols}
    data = _TrainData({3: lambda: holder.pop("vols")}, coords, TOY, 0, source="toy")
    del vols
    gc.collect()
    assert data.truth[3] and all(p.vol is None for p in data.truth[3].values())
    assert all(r() is None for r in refs)


def test_no_labels_at_all_is_a_clear_error():
    from radspine.errors import DatasetError

    vols, coords, _ = make_toy_study(3, 3)
    data = _TrainData({3: lambda: vols}, coords, TOY, 0, source="toy")
    data.samples[3] = tuple(type(s)(s.x[:0], s.peaks[:0], s.mask[:0], s.sigma[:0]) for s in data.samples[3])
    with pytest.raises(DatasetError, match="no labelled training points"):
        data.fit([3], TOY, 0)


def test_fine_tune_from_shipped_keeps_unlabelled_heads(tmp_path):
    """init="shipped": the sagittal net is fine-tuned on canal labels; the axial head has no labels here and
    keeps the shipped weights, so subarticular points are still predicted (foramina are not claimed)."""
    import json

    from radspine.localize.train import load_init

    init, cfg = load_init("shipped", TOY.model_copy(update={"epochs": 1}))
    assert cfg.sag_depth == init.cfg.sag_depth and cfg.base_channels == init.cfg.base_channels
    toys = {sid: _variant("canal", sid) for sid in TOY_IDS[:3]}
    coords = pd.concat([t[1] for t in toys.values()])
    data = _TrainData({sid: (lambda s=sid: toys[s][0]) for sid in toys}, coords, cfg, seed=0, source="toy")
    _train_on(data, tmp_path, cfg, 0, init=init, init_name="shipped")
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["init"] == "shipped" and meta["conditions"] == [CANAL, *SUBS]
    loc = Localizer.load(tmp_path)
    assert torch.equal(loc.ax_net.state_dict()["head.weight"], init.ax_net.state_dict()["head.weight"])
    assert not torch.equal(loc.sag_net.state_dict()["head.weight"], init.sag_net.state_dict()["head.weight"])
