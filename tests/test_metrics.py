"""The competition metric on hand-computed cases, its validation errors, priors, and `radspine score`."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from radspine.cli import app
from radspine.metrics import (
    MetricError,
    priors_predictions,
    priors_table,
    score,
    solution_from_labels,
)

S = "spinal_canal_stenosis"
LF = "left_neural_foraminal_narrowing"
RS = "right_subarticular_stenosis"


def _frames(rows):
    """rows: (study, condition, level, grade or None, [p0, p1, p2])."""
    sol = pd.DataFrame(
        {
            "row_id": [f"{s}_{c}_{lv}" for s, c, lv, _, _ in rows],
            "grade": [np.nan if g is None else g for _, _, _, g, _ in rows],
        }
    )
    sub = pd.DataFrame([p for *_, p in rows], columns=["normal_mild", "moderate", "severe"])
    sub.insert(0, "row_id", sol["row_id"])
    return sol, sub


def test_hand_computed_single_study():
    sol, sub = _frames(
        [
            (1, S, "l1_l2", 0, [0.8, 0.1, 0.1]),
            (1, S, "l2_l3", 2, [0.2, 0.3, 0.5]),
            (1, LF, "l1_l2", 1, [0.5, 0.5, 0.0]),
            (1, RS, "l1_l2", 0, [2.0, 1.0, 1.0]),  # unnormalised: becomes [0.5, 0.25, 0.25]
            (1, RS, "l2_l3", None, [np.nan, np.nan, np.nan]),  # unlabeled: ignored, even with NaN
        ]
    )
    res = score(sol, sub)
    spinal = (-math.log(0.8) * 1 + -math.log(0.5) * 4) / 5
    assert res.spinal == pytest.approx(spinal)
    assert res.foraminal == pytest.approx(-math.log(0.5))
    assert res.subarticular == pytest.approx(-math.log(0.5))
    # any severe: label 1, weight max(1, 4) = 4, prediction max(0.1, 0.5) = 0.5
    assert res.any_severe_spinal == pytest.approx(-math.log(0.5))
    assert res.score == pytest.approx((spinal + 3 * -math.log(0.5)) / 4)
    assert res.n_rows == 4 and res.n_studies == 1


def test_any_severe_term_weights_studies_by_largest_spinal_weight():
    sol, sub = _frames(
        [
            (1, S, "l1_l2", 0, [0.9, 0.0, 0.1]),
            (1, S, "l2_l3", 1, [0.2, 0.6, 0.2]),  # study 1: no severe, weight 2, p = 0.2
            (2, S, "l1_l2", 0, [0.7, 0.0, 0.3]),
            (2, S, "l2_l3", 0, [0.95, 0.0, 0.05]),  # study 2: no severe, weight 1, p = 0.3
        ]
    )
    res = score(sol, sub)
    assert res.any_severe_spinal == pytest.approx((2 * -math.log(0.8) + 1 * -math.log(0.7)) / 3)
    assert res.n_studies == 2


def test_zero_probability_is_clipped_not_infinite():
    sol, sub = _frames([(1, LF, "l1_l2", 2, [1.0, 0.0, 0.0])])
    assert score(sol, sub).foraminal == pytest.approx(-math.log(1e-15))


def test_one_hot_solution_equals_grade_solution():
    labels = pd.DataFrame(
        {
            "study_id": [7, 7, 7],
            "condition": [S, S, LF],
            "level": ["l1_l2", "l2_l3", "l1_l2"],
            "grade": [0, 2, np.nan],
        }
    )
    onehot = solution_from_labels(labels)
    assert onehot[["normal_mild", "moderate", "severe"]].to_numpy().tolist() == [
        [1, 0, 0],
        [0, 0, 1],
        [0, 0, 0],
    ]
    sub = onehot[["row_id"]].assign(
        normal_mild=[0.6, 0.3, 0.1], moderate=[0.3, 0.3, 0.1], severe=[0.1, 0.4, 0.8]
    )
    grade_sol = onehot[["row_id"]].assign(grade=labels["grade"])
    assert score(onehot, sub).score == pytest.approx(score(grade_sol, sub).score)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.iloc[1:], "labeled row_ids missing"),
        (lambda s: s.assign(moderate=[np.nan, 0.2]), "NaN"),
        (lambda s: s.assign(severe=[-0.1, 0.2]), "negative"),
        (lambda s: s.drop(columns="severe"), "missing columns"),
        (lambda s: pd.concat([s, s.iloc[:1]]), "duplicate row_id"),
    ],
)
def test_bad_submissions_raise_clear_errors(edit, message):
    sol, sub = _frames([(1, S, "l1_l2", 0, [0.8, 0.1, 0.1]), (1, S, "l2_l3", 1, [0.2, 0.6, 0.2])])
    with pytest.raises(MetricError, match=message) as err:
        score(sol, edit(sub), submission_name="sub.csv")
    assert "sub.csv" in str(err.value)


def test_priors_table_weighted_and_unweighted():
    labels = pd.DataFrame(
        {
            "study_id": [1, 2, 3, 4, 5],
            "condition": [S] * 5,
            "level": ["l1_l2"] * 5,
            "grade": [0, 0, 0, 1, np.nan],
        }
    )
    w = priors_table(labels, weighted=True, alpha=0.0)
    row = w[(w.condition == S) & (w.level == "l1_l2")][["normal_mild", "moderate", "severe"]].to_numpy()[0]
    assert row == pytest.approx([3 / 5, 2 / 5, 0.0])  # counts 3,1,0 times weights 1,2,4
    u = priors_table(labels, weighted=False, alpha=1.0)
    row = u[(u.condition == S) & (u.level == "l1_l2")][["normal_mild", "moderate", "severe"]].to_numpy()[0]
    assert row == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert len(w) == 25 and np.allclose(w[["normal_mild", "moderate", "severe"]].sum(axis=1), 1)
    pred = priors_predictions(w, ["9_spinal_canal_stenosis_l1_l2"])
    assert pred.iloc[0]["normal_mild"] == pytest.approx(0.6)


def test_score_cli_json_and_error(tmp_path):
    sol, sub = _frames([(1, S, "l1_l2", 0, [0.8, 0.1, 0.1]), (1, LF, "l1_l2", 1, [0.5, 0.5, 0.0])])
    sol.to_csv(tmp_path / "sol.csv", index=False)
    sub.to_csv(tmp_path / "sub.csv", index=False)
    res = CliRunner().invoke(app, ["score", str(tmp_path / "sol.csv"), str(tmp_path / "sub.csv"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["spinal"] == pytest.approx(-math.log(0.8))
    assert set(out) >= {"score", "spinal", "foraminal", "subarticular", "any_severe_spinal"}
    sub.iloc[:1].to_csv(tmp_path / "short.csv", index=False)
    res = CliRunner().invoke(app, ["score", str(tmp_path / "sol.csv"), str(tmp_path / "short.csv")])
    assert res.exit_code == 2
    assert "short.csv" in res.output and "missing" in res.output
