"""Pruning: the slot-wise median pruner, and Optuna's LightGBM/XGBoost callbacks reporting into slots."""

from __future__ import annotations

import optuna
import pytest
from helpers.fake_table import make_fake_table
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from radspine.models.pruning import FOLD_STEP_BASE, SLOTS_PER_FOLD, SlotMedianPruner, fold_step
from radspine.models.tune import CVData, TuneConfig, align_grades, assign_folds, feature_sets, run_study

STRIDE = 101  # max_rounds 100 + 1


def _study_with(completed: list[dict[int, float]]) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    for k, iv in enumerate(completed):
        study.add_trial(create_trial(value=0.5 + k * 0.01, params={"x": 0.1}, distributions={"x": FloatDistribution(0, 1)},
                                     intermediate_values=iv))
    return study


def _running(iv: dict[int, float]):
    return create_trial(state=TrialState.RUNNING, params={"x": 0.1}, distributions={"x": FloatDistribution(0, 1)},
                        intermediate_values=iv)


def test_slot_pruner_compares_within_the_slot_only():
    # Slot 0 (fold 0, first model) has losses near 0.5, slot 1 (fold 0, second model) near 0.9.
    done = [{10: 0.55, 40: 0.50, STRIDE + 10: 0.95, STRIDE + 40: 0.90} for _ in range(4)]
    study = _study_with(done)
    p = SlotMedianPruner(STRIDE, n_startup_trials=3, n_warmup_steps=20, n_min_trials=3)
    # Worse than every other trial in slot 1 -> pruned. (Optuna's MedianPruner compares the trial's best over
    # all its steps, 0.50 from slot 0, with the others' 0.90 at this step, and would never prune it.)
    assert p.prune(study, _running({10: 0.55, 40: 0.50, STRIDE + 10: 1.2, STRIDE + 40: 1.1}))
    assert not optuna.pruners.MedianPruner(n_startup_trials=3).prune(
        study, _running({10: 0.55, 40: 0.50, STRIDE + 10: 1.2, STRIDE + 40: 1.1}))
    # As good as the others in slot 1 -> kept.
    assert not p.prune(study, _running({10: 0.55, 40: 0.50, STRIDE + 10: 0.95, STRIDE + 40: 0.89}))
    # Warm-up: the first rounds of a slot are never pruned.
    assert not p.prune(study, _running({STRIDE + 10: 5.0}))
    # Too few completed trials: no pruning.
    assert not SlotMedianPruner(STRIDE, n_startup_trials=5).prune(study, _running({40: 9.0}))
    # A trial that stopped early keeps its best value for later steps of the slot.
    study2 = _study_with([{10: 0.9, 30: 0.6} for _ in range(3)])
    assert p.prune(study2, _running({10: 0.9, 30: 0.8, 60: 0.7}))
    # Fold-level steps: each its own slot (no warm-up).
    study3 = _study_with([{fold_step(0): 0.6} for _ in range(3)])
    assert p.prune(study3, _running({fold_step(0): 0.7}))
    assert not p.prune(study3, _running({fold_step(0): 0.55}))


@pytest.mark.parametrize("backend", ["lightgbm", "xgboost"])
def test_pruning_callbacks_report_each_booster_into_its_own_slot(tmp_path, backend):
    table, labels = make_fake_table(12, seed=3, n_rad_noise=6, n_cnn=4)
    grades = align_grades(table, labels)
    data = CVData(table, grades, assign_folds(table, grades, 2, 0))
    feats = feature_sets(table)["merged"]
    cfg = TuneConfig(study_name="p", max_rounds=40, early_stopping_rounds=40, n_jobs=1, prune_report_every=5,
                     pruner_startup_trials=10)  # no pruning: every report of 2 trials is kept
    study = run_study(backend, data, feats, "per_group", cfg, 2, None, f"sqlite:///{tmp_path / 'o.db'}")
    stride = cfg.max_rounds + 1
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        steps = sorted(t.intermediate_values)
        in_training = [s for s in steps if s < FOLD_STEP_BASE]
        slots = {s // stride for s in in_training}
        # 2 folds x 3 groups, every 5th round reported
        assert slots == {f * SLOTS_PER_FOLD + g for f in range(2) for g in range(3)}
        assert all((s % stride + 1) % 5 == 0 for s in in_training)
        assert [s for s in steps if s >= FOLD_STEP_BASE] == [fold_step(0), fold_step(1)]
