"""Merge per-row features into the per-level table: 25 rows per study plus context columns.

Context lets a tabular model use what a reader uses: the same condition at the neighbouring
levels, the other side at this level, and the canal at this level for the side conditions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from radspine.constants import (
    CONDITION_GROUP,
    CONDITION_SIDE,
    CONDITIONS,
    LEVELS,
    row_id,
)
from radspine.features.schema import KEY_COLUMNS

_OTHER_SIDE = {
    "left_neural_foraminal_narrowing": "right_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing": "left_neural_foraminal_narrowing",
    "left_subarticular_stenosis": "right_subarticular_stenosis",
    "right_subarticular_stenosis": "left_subarticular_stenosis",
}


def skeleton(study_ids: list[int]) -> pd.DataFrame:
    """The key columns of 25 rows per study, in competition order."""
    rows = [
        (int(s), c, lv, CONDITION_SIDE[c] or "none", CONDITION_GROUP[c], row_id(int(s), c, lv))
        for s in study_ids
        for c in CONDITIONS
        for lv in LEVELS
    ]
    return pd.DataFrame(rows, columns=list(KEY_COLUMNS))


def context_columns(table: pd.DataFrame, n_cnn: int = 4, extra: tuple[str, ...] = ()) -> list[str]:
    """Columns summarised into context: the first ``n_cnn`` CNN dims plus any ``extra`` columns present."""
    cnn = [f"cnn_{i}" for i in range(n_cnn) if f"cnn_{i}" in table.columns]
    return cnn + [c for c in extra if c in table.columns]


def add_context(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Add ``ctx_prev_*``, ``ctx_next_*`` (same condition, level ∓ 1), ``ctx_other_*`` (other side, same
    level; NaN for the canal) and ``ctx_canal_*`` (canal at this level) for every column in ``columns``."""
    if not columns:
        return table
    level_idx = table["level"].map({lv: i for i, lv in enumerate(LEVELS)}).to_numpy()
    keyed = table.set_index(["study_id", "condition", "level"])[columns]
    out = {}
    studies = table["study_id"].to_numpy()
    conds = table["condition"].to_numpy()

    def lookup(cond_arr: np.ndarray, lvl_arr: np.ndarray) -> np.ndarray:
        idx = pd.MultiIndex.from_arrays([studies, cond_arr, lvl_arr])
        return keyed.reindex(idx).to_numpy(dtype=np.float64)

    levels = np.array(LEVELS + (None,), dtype=object)
    prev_lvl = np.where(level_idx > 0, levels[np.maximum(level_idx - 1, 0)], None)
    next_lvl = np.where(level_idx < len(LEVELS) - 1, levels[np.minimum(level_idx + 1, len(LEVELS) - 1)], None)
    lvl = table["level"].to_numpy()
    other = np.array([_OTHER_SIDE.get(c) for c in conds], dtype=object)
    canal = np.where(conds == "spinal_canal_stenosis", None, "spinal_canal_stenosis")
    for name, c_arr, l_arr in (
        ("prev", conds, prev_lvl),
        ("next", conds, next_lvl),
        ("other", other, lvl),
        ("canal", canal, lvl),
    ):
        vals = lookup(c_arr, l_arr)
        for j, col in enumerate(columns):
            out[f"ctx_{name}_{col}"] = vals[:, j]
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(out)], axis=1)


def add_geometry(table: pd.DataFrame) -> pd.DataFrame:
    """Point-geometry features from the world coordinates ``pt_x/pt_y/pt_z`` (mm, LPS).

    ``geo_level_idx``; ``geo_gap_prev_mm`` / ``geo_gap_next_mm`` (distance to the same condition's point at the
    neighbouring level: disc spacing); ``geo_lateral_mm`` (|x − canal x| at this level, 0 for the canal).
    """
    t = table.copy()
    t["geo_level_idx"] = t["level"].map({lv: i for i, lv in enumerate(LEVELS)}).astype(float)
    if not {"pt_x", "pt_y", "pt_z"} <= set(t.columns):
        return t
    pts = t.set_index(["study_id", "condition", "level"])[["pt_x", "pt_y", "pt_z"]]
    li = t["geo_level_idx"].to_numpy().astype(int)
    me = t[["pt_x", "pt_y", "pt_z"]].to_numpy(dtype=np.float64)
    for name, shift in (("prev", -1), ("next", 1)):
        j = li + shift
        valid = (j >= 0) & (j < len(LEVELS))
        lv = np.array([LEVELS[k] if ok else "none" for k, ok in zip(j, valid)], dtype=object)
        idx = pd.MultiIndex.from_arrays([t["study_id"].to_numpy(), t["condition"].to_numpy(), lv])
        nb = pts.reindex(idx).to_numpy(dtype=np.float64)
        t[f"geo_gap_{name}_mm"] = np.linalg.norm(me - nb, axis=1)
    idx = pd.MultiIndex.from_arrays(
        [t["study_id"].to_numpy(), np.full(len(t), "spinal_canal_stenosis", dtype=object), t["level"].to_numpy()]
    )
    canal_x = pts.reindex(idx)["pt_x"].to_numpy(dtype=np.float64)
    t["geo_lateral_mm"] = np.abs(me[:, 0] - canal_x)
    return t
