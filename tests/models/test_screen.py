"""The column screen: what it drops, and that inside a CV fold it only ever sees the training rows."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.fake_table import make_fake_table

from radspine.models.estimator import GradeClassifier, TableGrader
from radspine.models.screen import ColumnScreen, clear_cache, fit_screen
from radspine.models.severity import oof_predict
from radspine.models.tune import align_grades, assign_folds, feature_sets


def test_screen_drops_constant_duplicate_and_near_duplicate_columns():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 3, n)
    signal = y + rng.normal(scale=0.5, size=n)
    noise = rng.normal(size=n)
    noise[::7] = np.nan  # a missing series blanks every column of its family on the same rows
    X = np.column_stack([
        signal,                      # 0 kept
        np.full(n, 3.0),             # 1 constant
        np.full(n, np.nan),          # 2 all missing
        signal.copy(),               # 3 exact duplicate of 0
        np.exp(signal),              # 4 monotone transform of 0: Spearman 1
        noise,                       # 5 kept (no importance screen)
        2.0 * noise + 1.0,           # 6 same family, same missing rows: Spearman 1 where present
        noise + rng.normal(scale=2.0, size=n),  # 7 correlated but not a near-duplicate
    ])
    scr = ColumnScreen(max_features=None).fit(X, y)
    assert list(scr.reason_) == ["", "constant", "constant", "duplicate", "near_duplicate", "", "near_duplicate", ""]
    assert scr.keep_.tolist() == [True, False, False, False, False, True, False, True]
    rep = scr.report([f"c{i}" for i in range(8)])
    assert rep["n_in"] == 8 and rep["n_kept"] == 3
    assert rep["constant"] == {"n": 2, "examples": ["c1", "c2"]} and rep["duplicate"]["examples"] == ["c3"]
    # Importance screen: at most max_features columns, and the signal column is one of them.
    imp = ColumnScreen(max_features=1, random_state=0).fit(X, y)
    assert imp.keep_.sum() == 1 and imp.keep_[0]
    assert imp.reason_[5] == "low_importance" and imp.reason_[1] == "constant"
    # No near-duplicate step when switched off.
    assert ColumnScreen(near_duplicate=None, max_features=None).fit(X, y).reason_[4] == ""


def test_screen_memo_returns_the_same_result_for_the_same_data_only():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 6))
    X[:, 2] = X[:, 0]
    y = rng.integers(0, 3, 200)
    clear_cache()
    a = fit_screen(ColumnScreen(max_features=None), X, y)
    b = fit_screen(ColumnScreen(max_features=None), X, y)
    np.testing.assert_array_equal(a.keep_, b.keep_)
    X2 = X.copy()
    X2[::2, 2] = rng.normal(size=100)  # half the rows differ: neither a duplicate nor a near-duplicate now
    c = fit_screen(ColumnScreen(max_features=None), X2, y)
    assert not b.keep_[2] and c.keep_[2]


def test_screen_inside_the_folds_sees_only_training_rows():
    # Three planted columns that only look droppable / useful on one side of the split:
    #   rad_const_train: constant on the training rows, varying on the held-out fold;
    #   rad_dup_train:   a copy of cnn_0 on the training rows, different on the held-out fold;
    #   rad_leak:        the grade itself on the held-out fold, noise on the training rows.
    table, labels = make_fake_table(30, seed=11, n_rad_noise=6, n_cnn=4)
    grades = align_grades(table, labels)
    folds = assign_folds(table, grades, 3, 0)
    rng = np.random.default_rng(3)
    held = folds == 0
    table["rad_const_train"] = np.where(held, rng.normal(size=len(table)), 1.0)
    table["rad_dup_train"] = np.where(held, rng.normal(size=len(table)), table["cnn_0"])
    table["rad_leak"] = np.where(held, np.nan_to_num(grades, nan=0.0) * 10.0, rng.normal(size=len(table)))
    feats = feature_sets(table)["merged"]
    clear_cache()
    screen = ColumnScreen(max_features=8, random_state=0)
    g = TableGrader(GradeClassifier(n_estimators=20), feats, "per_group", screen=screen)
    tr = ~held
    fitted = g.fit(table[tr], np.where(tr, grades, np.nan)[tr])
    i_const, i_dup, i_leak = (feats.index(c) for c in ("rad_const_train", "rad_dup_train", "rad_leak"))
    for key, scr in fitted.screens_.items():
        assert scr.reason_[i_const] == "constant", key
        assert scr.reason_[i_dup] == "duplicate", key
        assert scr.reason_[i_leak] != "", key  # noise where the screen looks: never kept
        assert scr.keep_.sum() <= 8
        # The model is fitted on exactly the kept columns plus the level/side codes.
        assert fitted.models_[key].n_features_in_ == scr.keep_.sum() + 2
    # On all rows (held-out fold included) the same columns are no longer constant / duplicate: what the
    # training-fold screen decided came from the training rows alone.
    everything = TableGrader(GradeClassifier(n_estimators=20), feats, "per_group", screen=screen).fit(table, grades)
    assert all(s.reason_[i_const] != "constant" and s.reason_[i_dup] != "duplicate"
               for s in everything.screens_.values())
    # OOF with the screen: predictions for every row, contributions keep the full design width.
    oof = oof_predict(g, table, grades, folds)
    assert not np.isnan(oof).any() and np.allclose(oof.sum(axis=1), 1)
    contrib = fitted.contributions(table.iloc[:5])
    assert contrib.shape == (5, 3, len(feats) + 2 + 1)
    dropped = [i for i, k in enumerate(fitted.screens_["spinal"].keep_) if not k]
    spinal_rows = (table["group"].iloc[:5] == "spinal").to_numpy()
    assert np.all(contrib[spinal_rows][:, :, dropped] == 0)
    assert set(fitted.importance()["spinal"]) <= set(feats) | {"level_idx", "side_code"}


@pytest.mark.parametrize("mode", ["per_group", "pooled"])
def test_screened_grader_predicts_rows_that_sum_to_one(mode):
    table, labels = make_fake_table(12, seed=2, n_rad_noise=6, n_cnn=4)
    grades = align_grades(table, labels)
    g = TableGrader(GradeClassifier(n_estimators=10), feature_sets(table)["merged"], mode,
                    screen=ColumnScreen(max_features=5)).fit(table, grades)
    p = g.predict_proba(table)
    assert p.shape == (len(table), 3) and np.allclose(p.sum(axis=1), 1)
    assert 0 < len(g.used_features_) <= 5 * len(g.models_)
