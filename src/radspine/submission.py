"""Build, validate and write submission.csv: exactly 25 rows per study, always complete.

Rows a model could not produce are filled from training priors, so a failed study never loses rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from radspine.constants import CONDITIONS, LEVELS, SEVERITY_COLUMNS, row_id
from radspine.errors import RadspineError
from radspine.fsutil import write_csv_atomic

log = logging.getLogger(__name__)

SUBMISSION_COLUMNS = ("row_id", *SEVERITY_COLUMNS)


def uniform_priors() -> pd.DataFrame:
    """Flat priors (1/3 each) for every condition × level; the last-resort fallback."""
    rows = [(c, lv, 1 / 3, 1 / 3, 1 / 3) for c in CONDITIONS for lv in LEVELS]
    return pd.DataFrame(rows, columns=["condition", "level", *SEVERITY_COLUMNS])


def build_submission(
    study_ids: Iterable[int],
    predictions: pd.DataFrame | None,
    priors: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, int]:
    """Assemble the submission in competition row order for ``study_ids``.

    Args:
        study_ids: every study that must appear (25 rows each).
        predictions: row_id + normal_mild/moderate/severe for the rows the models produced (may be partial).
        priors: condition, level + the three columns, used for rows missing from ``predictions`` or invalid.

    Returns:
        (submission DataFrame, number of rows filled from priors).
    """
    priors = uniform_priors() if priors is None else priors
    prior_map = {
        (r.condition, r.level): np.array([getattr(r, c) for c in SEVERITY_COLUMNS], dtype=np.float64)
        for r in priors.itertuples(index=False)
    }
    pred_map: dict[str, np.ndarray] = {}
    if predictions is not None and len(predictions):
        vals = predictions[list(SEVERITY_COLUMNS)].to_numpy(dtype=np.float64)
        for rid, v in zip(predictions["row_id"].astype(str), vals):
            if np.all(np.isfinite(v)) and np.all(v >= 0) and v.sum() > 0:
                pred_map[rid] = v / v.sum()
    rows: list[list] = []
    filled = 0
    for sid in dict.fromkeys(int(s) for s in study_ids):
        for cond in CONDITIONS:
            for lv in LEVELS:
                rid = row_id(sid, cond, lv)
                v = pred_map.get(rid)
                if v is None:
                    v = prior_map.get((cond, lv), np.full(3, 1 / 3))
                    v = v / v.sum()
                    filled += 1
                rows.append([rid, *v.tolist()])
    return pd.DataFrame(rows, columns=list(SUBMISSION_COLUMNS)), filled


def validate_submission(sub: pd.DataFrame, study_ids: Iterable[int] | None = None, *, name: str = "submission") -> None:
    """Raise RadspineError (one line) unless ``sub`` is a well-formed submission for ``study_ids``."""
    missing_cols = [c for c in SUBMISSION_COLUMNS if c not in sub.columns]
    if missing_cols:
        raise RadspineError(f"{name}: missing columns {missing_cols}")
    dup = sub["row_id"][sub["row_id"].duplicated()]
    if len(dup):
        raise RadspineError(f"{name}: duplicate row_id {dup.iloc[0]!r}")
    vals = sub[list(SEVERITY_COLUMNS)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(vals).all(axis=1) | (vals < 0).any(axis=1)
    if bad.any():
        raise RadspineError(f"{name}: invalid probabilities in row_id {sub['row_id'].iloc[int(np.argmax(bad))]!r}")
    if not np.allclose(vals.sum(axis=1), 1.0, atol=1e-6):
        i = int(np.argmax(np.abs(vals.sum(axis=1) - 1.0)))
        raise RadspineError(f"{name}: probabilities of row_id {sub['row_id'].iloc[i]!r} do not sum to 1")
    if study_ids is not None:
        expected = {row_id(int(s), c, lv) for s in study_ids for c in CONDITIONS for lv in LEVELS}
        got = set(sub["row_id"].astype(str))
        if expected - got:
            raise RadspineError(f"{name}: missing row_id {sorted(expected - got)[0]!r}")
        if got - expected:
            raise RadspineError(f"{name}: unexpected row_id {sorted(got - expected)[0]!r}")


def write_submission(sub: pd.DataFrame, path: str | Path, study_ids: Iterable[int] | None = None) -> None:
    """Validate then write atomically (never a half-written file)."""
    validate_submission(sub, study_ids, name=str(path))
    write_csv_atomic(sub, path, float_format="%.6f")
