"""Pruning of bad Optuna trials inside the boosting rounds and between CV folds.

One trial fits many boosters: every CV fold, and per fold one model per condition group. Optuna's
LightGBM / XGBoost pruning callbacks (``optuna_integration``) report the early-stopping validation loss of
each round; :func:`fit_callbacks` gives every booster of a trial its own band of steps ("slot": fold ×
model), so a value is only ever compared with the same fold's same model in other trials.
Optuna's ``MedianPruner`` compares the trial's best value over *all* its steps with the others' values at
the current step, which mixes the loss scales of different models (a spinal model's loss is not a foraminal
model's); :class:`SlotMedianPruner` compares within the slot instead. The fold-level OOF score is reported
in its own slots (:func:`fold_step`).
"""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

# Model slots per CV fold (at most one model per condition group) and the first fold-level step.
SLOTS_PER_FOLD = 3
FOLD_STEP_BASE = 10_000_000


def fold_step(fold_index: int) -> int:
    """The step under which a trial reports its OOF score after ``fold_index`` + 1 folds."""
    return FOLD_STEP_BASE + fold_index


class SlotMedianPruner(BasePruner):
    """Prune a trial whose best value so far in the current slot is worse than the median of the completed
    trials' best values over the same steps of that slot.

    Args:
        stride: steps per slot (at least the boosting rounds).
        n_startup_trials: no pruning before this many trials completed.
        n_warmup_steps: no pruning in the first steps of a slot (slow learners start high).
        n_min_trials: completed trials with a value in the slot needed to prune.
    """

    def __init__(self, stride: int, n_startup_trials: int = 5, n_warmup_steps: int = 20, n_min_trials: int = 3):
        self.stride = stride
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.n_min_trials = n_min_trials

    def _band(self, step: int) -> int:
        """First step of the slot holding ``step`` (fold-level steps are a slot each)."""
        return step if step >= FOLD_STEP_BASE else step - step % self.stride

    @staticmethod
    def _best(trial: FrozenTrial, lo: int, hi: int) -> float:
        vals = [v for s, v in trial.intermediate_values.items() if lo <= s <= hi]
        return min(vals) if vals else math.nan

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < self.n_startup_trials:
            return False
        lo = self._band(step)
        if step < FOLD_STEP_BASE and step - lo < self.n_warmup_steps:
            return False
        mine = self._best(trial, lo, step)
        if math.isnan(mine):
            return True  # a NaN loss: the trial diverged
        others = [v for v in (self._best(t, lo, step) for t in done) if not math.isnan(v)]
        if len(others) < self.n_min_trials:
            return False
        return mine > float(np.median(others))


class _SlotTrial:
    """The trial as one booster's pruning callback sees it: steps shifted into the booster's slot and only
    every ``every``-th round reported (each report is a database write)."""

    def __init__(self, trial: optuna.Trial, offset: int, every: int):
        self._trial = trial
        self._offset = offset
        self._every = every
        self._due = False

    @property
    def study(self) -> optuna.Study:
        return self._trial.study

    def report(self, value: float, step: int) -> None:
        self._due = (step + 1) % self._every == 0
        if self._due:
            self._trial.report(float(value), self._offset + step)

    def should_prune(self) -> bool:
        return self._due and self._trial.should_prune()


def fit_callbacks(trial: optuna.Trial, stride: int, every: int):
    """``callbacks(fold_index, slot, backend, n_classes) -> list`` of Optuna pruning callbacks for one booster
    (the signature :func:`radspine.models.severity.oof_predict` passes on to the graders)."""
    from optuna_integration import LightGBMPruningCallback, XGBoostPruningCallback

    def make(fold_index: int, slot: int, backend: str, n_classes: int) -> list:
        offset = (fold_index * SLOTS_PER_FOLD + slot) * stride
        proxy = _SlotTrial(trial, offset, every)
        if backend == "lightgbm":
            metric = "binary_logloss" if n_classes == 2 else "multi_logloss"
            return [LightGBMPruningCallback(proxy, metric, valid_name="valid_0")]  # type: ignore[arg-type]
        key = "val-logloss" if n_classes == 2 else "val-mlogloss"
        return [XGBoostPruningCallback(proxy, key)]  # type: ignore[arg-type]

    return make


__all__ = ["FOLD_STEP_BASE", "SLOTS_PER_FOLD", "SlotMedianPruner", "fit_callbacks", "fold_step"]
