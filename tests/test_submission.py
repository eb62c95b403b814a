"""submission.csv: 25 rows per study in competition order, prior fallback, validation, atomic write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radspine.constants import CONDITIONS, LEVELS, SEVERITY_COLUMNS, row_id
from radspine.errors import RadspineError
from radspine.submission import build_submission, uniform_priors, validate_submission, write_submission


def _priors() -> pd.DataFrame:
    p = uniform_priors()
    p.loc[:, list(SEVERITY_COLUMNS)] = [2.0, 1.0, 1.0]  # unnormalised on purpose
    return p


def test_build_fills_missing_and_invalid_rows_from_priors() -> None:
    preds = pd.DataFrame({
        "row_id": [row_id(1, "spinal_canal_stenosis", "l1_l2"), row_id(1, "spinal_canal_stenosis", "l2_l3"),
                   row_id(9, "spinal_canal_stenosis", "l1_l2")],
        "normal_mild": [2.0, np.nan, 0.1], "moderate": [1.0, 0.5, 0.1], "severe": [1.0, 0.5, 0.8],
    })  # fmt: skip
    sub, filled = build_submission([1, 2, 1], preds, _priors())
    assert len(sub) == 50 and filled == 49  # study 1 listed twice counts once; NaN row → prior
    assert list(sub["row_id"][:5]) == [row_id(1, "spinal_canal_stenosis", lv) for lv in LEVELS]
    assert sub["row_id"].iloc[25] == row_id(2, CONDITIONS[0], LEVELS[0])
    np.testing.assert_allclose(sub.iloc[0, 1:].to_numpy(float), [0.5, 0.25, 0.25])  # normalised prediction
    np.testing.assert_allclose(sub.iloc[1, 1:].to_numpy(float), [0.5, 0.25, 0.25])  # prior, normalised
    assert row_id(9, "spinal_canal_stenosis", "l1_l2") not in set(sub["row_id"])  # not a requested study
    validate_submission(sub, [1, 2])


def test_build_without_predictions_uses_uniform() -> None:
    sub, filled = build_submission([4], None)
    assert filled == 25
    np.testing.assert_allclose(sub[list(SEVERITY_COLUMNS)].to_numpy(), 1 / 3)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.drop(columns=["severe"]), "missing columns"),
        (lambda s: pd.concat([s, s.iloc[:1]]), "duplicate row_id"),
        (lambda s: s.assign(severe=np.where(s.index == 3, -0.1, s["severe"])), "invalid probabilities in row_id"),
        (lambda s: s.assign(severe=s["severe"] + 0.1), "do not sum to 1"),
        (lambda s: s.iloc[1:], "missing row_id"),
    ],
)
def test_validate_rejects(mutate, message: str) -> None:
    sub, _ = build_submission([1], None)
    with pytest.raises(RadspineError, match=message):
        validate_submission(mutate(sub), [1], name="sub.csv")


def test_validate_unexpected_study() -> None:
    sub, _ = build_submission([1, 2], None)
    with pytest.raises(RadspineError, match="unexpected row_id '2_"):
        validate_submission(sub, [1])


def test_write_is_validated_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "submission.csv"
    sub, _ = build_submission([3], None)
    write_submission(sub, path, [3])
    back = pd.read_csv(path)
    assert list(back.columns) == ["row_id", *SEVERITY_COLUMNS] and len(back) == 25
    before = path.read_bytes()
    with pytest.raises(RadspineError, match="submission.csv: missing row_id"):
        write_submission(sub.iloc[1:], path, [3])
    assert path.read_bytes() == before  # a rejected submission never replaces the good one
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


def test_atomic_path_keeps_target_on_error(tmp_path: Path) -> None:
    from radspine.fsutil import atomic_path, write_json_atomic

    target = tmp_path / "meta.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]
