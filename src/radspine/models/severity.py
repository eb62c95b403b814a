"""The composite severity model: graders (one per backend) + per-group blend + calibrator + priors.

:class:`SeverityModel` is the one place that knows how the pieces combine:

* every grader's ``(n, 3)`` probabilities are blended per condition group with :func:`blend`
  (w·LightGBM + (1 − w)·XGBoost — the ONLY copy of that formula; SHAP contributions use it too);
* the blend's out-of-fold predictions choose the blend weights (:func:`fit_blend`) and the calibration
  method (cross-fitted, :func:`radspine.models.calibrate.select_calibration`); the calibrator is fitted on
  those OOF predictions and applied to the graders refitted on all rows;
* rows of a condition group without a grader (no / too few labels) get the priors (:func:`fit_priors`).

``fit`` is what both the final model and each outer fold of the unbiased CV in :mod:`radspine.models.tune`
run, so the reported unbiased score measures exactly the procedure that produced the bundle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import clone

from radspine.constants import CONDITION_GROUP, GROUPS, SEVERITY_COLUMNS, SEVERITY_WEIGHTS
from radspine.metrics import MetricResult, priors_table, score_arrays
from radspine.models.calibrate import METHODS, Calibrator, fit_calibrator, select_calibration
from radspine.models.estimator import TableGrader, design_names

BLEND_BACKENDS: tuple[str, str] = ("lightgbm", "xgboost")


# ------------------------------------------------------------------------------------------------ blend
def blend(arrays: Mapping[str, np.ndarray], groups: np.ndarray, weights: Mapping[str, float]) -> np.ndarray:
    """Per-group convex combination ``w·lightgbm + (1 − w)·xgboost`` of arrays with rows first.

    Works for probabilities (n, 3) and SHAP contributions (n, 3, f) alike. One array: returned as is.
    ``weights[group]`` is LightGBM's weight (0.5 for a group not in ``weights``).
    """
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    if set(arrays) != set(BLEND_BACKENDS):
        raise ValueError(f"blend needs {BLEND_BACKENDS}, got {sorted(arrays)}")
    a, b = arrays["lightgbm"], arrays["xgboost"]
    w = np.array([weights.get(g, 0.5) for g in np.asarray(groups)], dtype=float)
    w = w.reshape((-1,) + (1,) * (a.ndim - 1))
    return w * a + (1 - w) * b


def fit_blend(
    arrays: Mapping[str, np.ndarray],
    grades: np.ndarray,
    groups: np.ndarray,
    studies: np.ndarray,
    step: float = 0.05,
) -> dict[str, float]:
    """LightGBM weight per group minimising the metric of the blended ``arrays`` on labeled rows (grid).

    Groups are separable in the metric (the spinal weight also drives any_severe_spinal), so one pass of
    per-group grid search finds the joint optimum on the grid. Groups without labeled rows keep 0.5.
    """
    lab = ~np.isnan(grades)
    arrays = {k: v[lab] for k, v in arrays.items()}
    y, grp, st = grades[lab].astype(int), np.asarray(groups)[lab], np.asarray(studies)[lab]
    weights = dict.fromkeys(GROUPS, 0.5)
    if len(arrays) == 1:
        return dict.fromkeys(GROUPS, 1.0 if "lightgbm" in arrays else 0.0)
    grid = np.round(np.arange(0.0, 1.0 + 1e-9, step), 4)
    for g in GROUPS:
        if not (grp == g).any():
            continue
        best = (np.inf, 0.5)
        for w in grid:
            weights[g] = float(w)
            s = score_arrays(y, blend(arrays, grp, weights), grp, st).score
            if s < best[0] - 1e-12:
                best = (s, float(w))
        weights[g] = best[1]
    return weights


# ----------------------------------------------------------------------------------------------- priors
def _reference_counts() -> dict[str, tuple[float, float, float]]:
    """Real RSNA 2024 (Normal/Mild, Moderate, Severe) counts per train.csv column (the packaged copy)."""
    from radspine.synth.label_stats import LABEL_COUNTS

    return {k: tuple(float(x) for x in v[:3]) for k, v in LABEL_COUNTS.items()}


def fit_priors(labels: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Weighted class frequencies per condition × level with fallbacks for cells without labels.

    A cell with labels uses :func:`radspine.metrics.priors_table` (1/2/4-weighted, Laplace-smoothed). A
    cell with none takes its condition group's pooled frequencies when the group has labels, else the real
    RSNA 2024 frequencies of that cell (:mod:`radspine.synth.label_stats`), both weighted the same way.

    Returns:
        ``[condition, level, normal_mild, moderate, severe]`` (25 rows) and the source per cell
        (``"<condition>_<level>"`` → "labels" / "group" / "rsna_reference").
    """
    lab = labels.dropna(subset=["grade"])
    table = priors_table(labels)
    n_cell = lab.groupby(["condition", "level"]).size()
    weights = np.asarray(SEVERITY_WEIGHTS)
    lab_group = lab.assign(group=lab["condition"].map(CONDITION_GROUP))
    ref = _reference_counts()
    source: dict[str, str] = {}
    for i, (c, lv) in enumerate(zip(table["condition"], table["level"], strict=True)):
        if n_cell.get((c, lv), 0) > 0:
            source[f"{c}_{lv}"] = "labels"
            continue
        g = lab_group[lab_group["group"] == CONDITION_GROUP[c]]
        if len(g):
            counts = np.bincount(g["grade"].astype(int), minlength=3)[:3] + 1.0
            source[f"{c}_{lv}"] = "group"
        else:
            counts = np.asarray(ref[f"{c}_{lv}"]) + 1.0
            source[f"{c}_{lv}"] = "rsna_reference"
        p = counts * weights
        table.loc[i, list(SEVERITY_COLUMNS)] = p / p.sum()
    return table, source


def priors_for(priors: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    """(n, 3) prior probabilities of each table row's condition × level."""
    keyed = table[["condition", "level"]].merge(priors, on=["condition", "level"], how="left")
    return keyed[list(SEVERITY_COLUMNS)].to_numpy(dtype=float)


# ------------------------------------------------------------------------------------------------- OOF
def oof_predict(
    grader: TableGrader,
    table: pd.DataFrame,
    grades: np.ndarray,
    folds: np.ndarray,
    on_fold: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    fit_callbacks: Callable[[int, int, str, int], list] | None = None,
) -> np.ndarray:
    """Out-of-fold (n, 3) probabilities of clones of ``grader``; ``on_fold(i, oof_so_far, done_mask)``
    runs after each fold (Optuna pruning); ``fit_callbacks(i, slot, backend, n_classes)`` gives the
    training callbacks of each booster of fold ``i`` (Optuna's in-training pruning)."""
    oof = np.full((len(table), 3), np.nan)
    done = np.zeros(len(table), bool)
    labeled = ~np.isnan(grades)
    for i, k in enumerate(np.unique(folds)):
        te = folds == k
        tr = ~te & labeled
        cb = None
        if fit_callbacks is not None:
            def cb(slot: int, backend: str, n_classes: int, _i: int = i) -> list:
                return fit_callbacks(_i, slot, backend, n_classes)
        oof[te] = clone(grader).fit(table[tr], grades[tr], callbacks=cb).predict_proba(table[te])
        done |= te
        if on_fold is not None:
            on_fold(i, oof, done)
    return oof


# ------------------------------------------------------------------------------------------ the model
class SeverityModel:
    """Graders + per-group blend + calibrator + priors, fitted as one unit.

    Args:
        graders: unfitted :class:`TableGrader` per backend ("lightgbm" and/or "xgboost").
        blend_weights: LightGBM weight per group; None → fitted on OOF predictions (:func:`fit_blend`).
        calibration: a method of :data:`radspine.models.calibrate.METHODS`, or "auto" to choose among
            ``calibration_methods`` by cross-fitted metric on the OOF blend.
        calibration_methods: candidates for "auto" ("none" is always one).
        groups: condition groups that get graders; None → every group with a labeled row. Rows of the
            other groups are predicted with the priors.
        blend_step: grid step of the blend weights.
        seed: seed of the calibrators.

    Learned: ``graders_`` (backend → TableGrader fitted on all labeled rows), ``blend_weights_``,
    ``calibrator_``, ``priors_`` (+ ``priors_source_``), ``groups_``; when OOF predictions were needed also
    ``oof_by_backend_``, ``oof_`` (blended, uncalibrated), ``oof_calibrated_`` (cross-fitted) and
    ``calibration_scores_`` (method → MetricResult of the cross-fitted calibrated OOF).
    """

    def __init__(
        self,
        graders: Mapping[str, TableGrader],
        *,
        blend_weights: Mapping[str, float] | None = None,
        calibration: str = "auto",
        calibration_methods: Sequence[str] = METHODS,
        groups: Sequence[str] | None = None,
        blend_step: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.graders = graders
        self.blend_weights = blend_weights
        self.calibration = calibration
        self.calibration_methods = calibration_methods
        self.groups = groups
        self.blend_step = blend_step
        self.seed = seed

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        table: pd.DataFrame,
        grades: np.ndarray,
        folds: np.ndarray | None = None,
        oof_by_backend: Mapping[str, np.ndarray] | None = None,
    ) -> SeverityModel:
        """Fit on ``table`` rows with grades (float, NaN unlabeled); ``folds`` (n,) are needed whenever the
        blend weights or the calibration are learned (study-grouped CV folds). Returns self.

        ``oof_by_backend``: out-of-fold predictions of these very graders on these folds and grades, when
        the caller already has them (tuning computed them for its best trial); backends missing from it
        are computed.

        Raises:
            ValueError: no graders / unknown backend or method, shapes differ, folds missing, or no
                labeled row in the modelled groups.
        """
        if not self.graders or set(self.graders) - set(BLEND_BACKENDS):
            raise ValueError(f"graders must be a non-empty dict over {BLEND_BACKENDS}, got {list(self.graders)}")
        if self.calibration != "auto" and self.calibration not in METHODS:
            raise ValueError(f"calibration must be 'auto' or one of {METHODS}, got {self.calibration!r}")
        grades = np.asarray(grades, dtype=float)
        if grades.shape != (len(table),):
            raise ValueError(f"grades has shape {grades.shape}, table has {len(table)} rows")
        group_of = table["group"].to_numpy()
        labels = table[["study_id", "condition", "level"]].assign(grade=grades)
        self.priors_, self.priors_source_ = fit_priors(labels)
        present = [g for g in GROUPS if (~np.isnan(grades) & (group_of == g)).any()]
        self.groups_ = [g for g in (self.groups if self.groups is not None else present) if g in present]
        if not self.groups_:
            raise ValueError("no labeled row in the modelled condition groups")
        # Graders see only the modelled groups' labels; the others only feed the priors.
        g_fit = np.where(np.isin(group_of, self.groups_), grades, np.nan)
        lab = ~np.isnan(g_fit)
        need_oof = self.calibration != "none" or (self.blend_weights is None and len(self.graders) > 1)
        studies = table["study_id"].to_numpy()
        if need_oof:
            if folds is None or len(np.unique(np.asarray(folds)[lab])) < 2:
                raise ValueError("learning blend weights or calibration needs folds with >= 2 labeled folds")
            folds = np.asarray(folds)
            given = dict(oof_by_backend or {})
            self.oof_by_backend_ = {
                b: given[b] if b in given else oof_predict(g, table, g_fit, folds) for b, g in self.graders.items()
            }
        if self.blend_weights is not None:
            self.blend_weights_ = {g: float(self.blend_weights.get(g, 0.5)) for g in GROUPS}
        elif len(self.graders) == 1:
            self.blend_weights_ = dict.fromkeys(GROUPS, 1.0 if "lightgbm" in self.graders else 0.0)
        else:
            self.blend_weights_ = fit_blend(self.oof_by_backend_, g_fit, group_of, studies, self.blend_step)
        if need_oof:
            self.oof_ = blend(self.oof_by_backend_, group_of, self.blend_weights_)
            y = g_fit[lab].astype(int)
            methods = tuple(self.calibration_methods) if self.calibration == "auto" else (self.calibration,)
            self.calibrator_, self.calibration_scores_ = select_calibration(
                self.oof_[lab], y, group_of[lab], studies[lab], folds[lab], methods=methods, seed=self.seed
            )
            if self.calibration != "auto":
                # select_calibration always scores "none" too; a fixed method is kept even if "none" wins.
                self.calibrator_ = fit_calibrator(self.calibration, self.oof_[lab], y, group_of[lab], self.seed)
            self.oof_calibrated_ = self.oof_.copy()
            for k in np.unique(folds[lab]):
                te, tr = lab & (folds == k), lab & (folds != k)
                c = fit_calibrator(
                    self.calibrator_.method, self.oof_[tr], g_fit[tr].astype(int), group_of[tr], self.seed
                )
                self.oof_calibrated_[te] = c.transform(self.oof_[te], group_of[te])
        else:
            self.calibrator_ = Calibrator("none")
        self.graders_ = {b: clone(g).fit(table, g_fit) for b, g in self.graders.items()}
        return self

    # -------------------------------------------------------------- predict
    def _modelled(self, table: pd.DataFrame) -> np.ndarray:
        return np.isin(table["group"].to_numpy(), self.groups_)

    def predict_raw(self, table: pd.DataFrame) -> np.ndarray:
        """Blended, uncalibrated (n, 3) probabilities (priors for rows of unmodelled groups)."""
        groups = table["group"].to_numpy()
        raw = blend({b: m.predict_proba(table) for b, m in self.graders_.items()}, groups, self.blend_weights_)
        m = self._modelled(table)
        if not m.all():
            raw[~m] = priors_for(self.priors_, table[~m])
        return raw

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        """Calibrated (n, 3) probabilities; rows of groups without a grader get their condition × level prior."""
        p = self.calibrator_.transform(self.predict_raw(table), table["group"].to_numpy())
        m = self._modelled(table)
        if not m.all():
            p[~m] = priors_for(self.priors_, table[~m])
        return p

    @property
    def features(self) -> list[str]:
        """Feature columns the graders use."""
        return list(next(iter(self.graders_.values())).features_)

    @property
    def mode(self) -> str:
        """Grader mode ("per_group" / "pooled")."""
        return next(iter(self.graders_.values())).mode

    def shap_values(self, table: pd.DataFrame, grade: str = "severe") -> pd.DataFrame:
        """Per-feature TreeSHAP contributions to one grade's raw score (before softmax and calibration).

        The backends' contributions are combined with :func:`blend` and the blend weights, which is exact
        for a blend of margins and an approximation for the probability blend used in prediction; good
        enough to rank which features drove a row. Rows of unmodelled groups (priors) are all zero.
        Columns: ``row_id``, the design features (incl. ``level_idx`` etc.) and ``bias``.
        """
        k = list(SEVERITY_COLUMNS).index(grade)
        contrib = {b: m.contributions(table)[:, k, :] for b, m in self.graders_.items()}
        total = blend(contrib, table["group"].to_numpy(), self.blend_weights_)
        total = np.where(self._modelled(table)[:, None], total, 0.0)
        out = pd.DataFrame(total, columns=[*design_names(self.features, self.mode), "bias"])
        out.insert(0, "row_id", table["row_id"].to_numpy())
        return out


def score_rows(grades: np.ndarray, probs: np.ndarray, table: pd.DataFrame) -> MetricResult:
    """Competition metric of ``probs`` on the table's labeled rows."""
    lab = ~np.isnan(grades)
    return score_arrays(
        grades[lab].astype(int), probs[lab], table["group"].to_numpy()[lab], table["study_id"].to_numpy()[lab]
    )


__all__ = [
    "SeverityModel",
    "blend",
    "fit_blend",
    "fit_priors",
    "oof_predict",
    "priors_for",
    "score_rows",
]
