"""The per-level table: skeleton order, context neighbours and point geometry on hand-built tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radspine.constants import CONDITIONS, LEVELS
from radspine.features.schema import feature_columns
from radspine.features.table import add_context, add_geometry, context_columns, skeleton


def _valued(study_ids: list[int]) -> pd.DataFrame:
    """Skeleton whose column ``v`` encodes (study, condition, level) so every lookup is checkable."""
    t = skeleton(study_ids)
    ci = t["condition"].map({c: i for i, c in enumerate(CONDITIONS)})
    li = t["level"].map({lv: i for i, lv in enumerate(LEVELS)})
    t["v"] = (t["study_id"] % 7) * 100.0 + ci * 10 + li
    return t


def _val(t: pd.DataFrame, study: int, cond: str, level: str, col: str) -> float:
    r = t[(t["study_id"] == study) & (t["condition"] == cond) & (t["level"] == level)]
    assert len(r) == 1
    return float(r[col].iloc[0])


def test_skeleton_order_and_keys() -> None:
    t = skeleton([7, 3])
    assert len(t) == 50 and list(t.columns) == ["study_id", "condition", "level", "side", "group", "row_id"]
    assert t["row_id"].iloc[0] == "7_spinal_canal_stenosis_l1_l2"
    assert t["row_id"].iloc[26] == "3_spinal_canal_stenosis_l2_l3"
    assert t["row_id"].is_unique
    side = dict(zip(t["condition"], t["side"]))
    assert side["spinal_canal_stenosis"] == "none" and side["left_neural_foraminal_narrowing"] == "left"
    assert side["right_subarticular_stenosis"] == "right"


def test_context_neighbours_hand_built() -> None:
    t = _valued([11, 22])
    shuffled = t.sample(frac=1.0, random_state=0)  # lookups must not depend on row order
    out = add_context(shuffled, ["v"])
    assert len(out) == 50 and list(out["row_id"]) == list(shuffled["row_id"])
    sp, lf, rf = "spinal_canal_stenosis", "left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"
    ls = "left_subarticular_stenosis"
    for s in (11, 22):
        # canal at the top level: no previous level, no other side, no canal-of-itself.
        assert np.isnan(_val(out, s, sp, "l1_l2", "ctx_prev_v"))
        assert _val(out, s, sp, "l1_l2", "ctx_next_v") == _val(t, s, sp, "l2_l3", "v")
        assert np.isnan(_val(out, s, sp, "l1_l2", "ctx_other_v"))
        assert np.isnan(_val(out, s, sp, "l3_l4", "ctx_canal_v"))
        # left foramen at L5/S1: previous level, no next, the right foramen, the canal at L5/S1.
        assert _val(out, s, lf, "l5_s1", "ctx_prev_v") == _val(t, s, lf, "l4_l5", "v")
        assert np.isnan(_val(out, s, lf, "l5_s1", "ctx_next_v"))
        assert _val(out, s, lf, "l5_s1", "ctx_other_v") == _val(t, s, rf, "l5_s1", "v")
        assert _val(out, s, lf, "l5_s1", "ctx_canal_v") == _val(t, s, sp, "l5_s1", "v")
        assert _val(out, s, rf, "l2_l3", "ctx_other_v") == _val(t, s, lf, "l2_l3", "v")
        assert _val(out, s, ls, "l3_l4", "ctx_canal_v") == _val(t, s, sp, "l3_l4", "v")
        assert _val(out, s, ls, "l3_l4", "ctx_prev_v") == _val(t, s, ls, "l2_l3", "v")
    # Neighbours come from the same study only (v encodes the study in its hundreds).
    for name in ("prev", "next", "other", "canal"):
        col = out[f"ctx_{name}_v"]
        ok = col.notna()
        assert ((col[ok] // 100) == (out.loc[ok, "study_id"] % 7)).all()
    # A missing neighbour value stays NaN, never another row's value.
    t2 = t.copy()
    t2.loc[(t2["study_id"] == 11) & (t2["condition"] == sp) & (t2["level"] == "l2_l3"), "v"] = np.nan
    out2 = add_context(t2, ["v"])
    assert np.isnan(_val(out2, 11, sp, "l1_l2", "ctx_next_v"))
    assert np.isnan(_val(out2, 11, lf, "l2_l3", "ctx_canal_v"))
    assert _val(out2, 22, lf, "l2_l3", "ctx_canal_v") == _val(t, 22, sp, "l2_l3", "v")


def test_context_columns_selection() -> None:
    t = skeleton([1]).assign(cnn_0=0.0, cnn_1=1.0, cnn_5=2.0, rad_x=3.0)
    assert context_columns(t, 4) == ["cnn_0", "cnn_1"]
    assert context_columns(t, 1, extra=("rad_x", "absent")) == ["cnn_0", "rad_x"]
    assert add_context(t, []) is t


def test_geometry_gaps_and_lateral_offset() -> None:
    t = skeleton([5])
    li = t["level"].map({lv: i for i, lv in enumerate(LEVELS)}).to_numpy()
    side = t["side"].map({"none": 0.0, "left": 12.0, "right": -12.0}).to_numpy()  # LPS: +x is left
    t["pt_x"], t["pt_y"], t["pt_z"] = side, 0.0, -35.0 * li
    t.loc[(t["condition"] == "left_subarticular_stenosis") & (t["level"] == "l3_l4"), ["pt_x", "pt_y", "pt_z"]] = np.nan
    g = add_geometry(t)
    assert list(g["geo_level_idx"][:5]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    sp = g[g["condition"] == "spinal_canal_stenosis"]
    assert np.isnan(sp["geo_gap_prev_mm"].iloc[0]) and np.isnan(sp["geo_gap_next_mm"].iloc[-1])
    np.testing.assert_allclose(sp["geo_gap_next_mm"].iloc[:-1], 35.0)
    np.testing.assert_allclose(sp["geo_lateral_mm"], 0.0)
    lf = g[g["condition"] == "left_neural_foraminal_narrowing"]
    np.testing.assert_allclose(lf["geo_lateral_mm"], 12.0)
    ls = g[g["condition"] == "left_subarticular_stenosis"].set_index("level")
    assert np.isnan(ls.loc["l3_l4", "geo_lateral_mm"]) and np.isnan(ls.loc["l2_l3", "geo_gap_next_mm"])
    assert ls.loc["l1_l2", "geo_gap_next_mm"] == pytest.approx(35.0)
    # Without points only the level index is added.
    assert [c for c in add_geometry(skeleton([5])).columns if c.startswith("geo_")] == ["geo_level_idx"]


def test_feature_columns_prefixes() -> None:
    t = skeleton([1]).assign(rad_a=1.0, cnn_0=1.0, ctx_prev_cnn_0=1.0, geo_level_idx=0.0, has_axt2=1.0, pt_x=0.0)
    assert feature_columns(t) == ["rad_a", "cnn_0", "ctx_prev_cnn_0", "geo_level_idx", "has_axt2"]
