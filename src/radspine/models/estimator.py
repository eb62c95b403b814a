"""Graders: a scikit-learn-style gradient-boosting classifier (LightGBM or XGBoost) and a per-table wrapper.

:class:`GradeClassifier` follows the estimator rules (``__init__`` only stores, ``fit`` validates and returns
self, learned attributes end in ``_``), so ``clone``/``set_params(**trial.params)`` work. It multiplies sample
weights by the metric's 1/2/4 grade weights so the boosting loss is the scored loss.

:class:`TableGrader` turns a features table into three-column grade probabilities, either with one model per
condition group (``mode="per_group"``) or one pooled model with the condition as a feature (``"pooled"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from radspine.constants import CONDITIONS, GROUPS, LEVELS, SEVERITY_WEIGHTS

BACKENDS: tuple[str, ...] = ("lightgbm", "xgboost")
MODES: tuple[str, ...] = ("per_group", "pooled")


class GradeClassifier(ClassifierMixin, BaseEstimator):
    """Gradient-boosted multiclass classifier over LightGBM or XGBoost native training.

    Args:
        backend: "lightgbm" or "xgboost".
        n_estimators: boosting rounds (an upper bound when early stopping is on).
        learning_rate: shrinkage.
        num_leaves: LightGBM leaves per tree (ignored by XGBoost).
        max_depth: tree depth limit (<= 0: LightGBM unlimited; XGBoost uses 6).
        min_child_samples: LightGBM minimum rows per leaf.
        min_child_weight: minimum hessian sum per leaf.
        subsample: row fraction per tree.
        colsample: feature fraction per tree.
        reg_lambda, reg_alpha: L2 / L1 leaf regularisation.
        early_stopping_rounds: if set, hold out ``validation_fraction`` of the training rows (stratified;
            whole ``groups`` when ``fit`` gets them, so rows of one study never sit on both sides) and stop
            when the weighted log loss stops improving.
        validation_fraction: held-out share for early stopping.
        grade_weights: per-class weight multipliers applied when the classes are grades 0/1/2 (the metric's
            1/2/4); None to train unweighted.
        max_bin: histogram bins per feature (small = faster, little accuracy cost on tabular features).
        n_jobs: threads. Default 1: on a shared, oversubscribed CPU, OpenMP with 2 threads measured
            20x slower than 1 thread here; the project caps this at 2.
        random_state: seed for the booster and the early-stopping split.
    """

    def __init__(
        self,
        backend: str = "lightgbm",
        n_estimators: int = 200,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        max_depth: int = 4,
        min_child_samples: int = 20,
        min_child_weight: float = 1e-3,
        subsample: float = 0.8,
        colsample: float = 0.8,
        reg_lambda: float = 1.0,
        reg_alpha: float = 0.0,
        early_stopping_rounds: int | None = None,
        validation_fraction: float = 0.15,
        grade_weights: tuple[float, ...] | None = SEVERITY_WEIGHTS,
        max_bin: int = 63,
        n_jobs: int = 1,
        random_state: int = 0,
    ) -> None:
        self.backend = backend
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_child_samples = min_child_samples
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample = colsample
        self.reg_lambda = reg_lambda
        self.reg_alpha = reg_alpha
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.grade_weights = grade_weights
        self.max_bin = max_bin
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __sklearn_tags__(self):  # noqa: D105 - sklearn protocol
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, sample_weight=None, groups=None, callbacks=None) -> GradeClassifier:
        """Fit on ``X`` (n, f) with NaN allowed and class labels ``y``; returns self.

        ``groups`` (n,), e.g. study ids, keeps each group whole on one side of the early-stopping split.
        ``callbacks``: extra training callbacks of the backend (LightGBM callables or XGBoost
        ``TrainingCallback``), e.g. Optuna's pruning callbacks; they see the early-stopping validation set
        (LightGBM ``valid_0``, XGBoost ``val``).
        """
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64)
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        w = _check_sample_weight(sample_weight, X, dtype=np.float64)
        w = w * self._class_multipliers()[y_enc]
        k = len(self.classes_)
        self.n_boosted_classes_ = k
        if k == 1:
            # Nothing to learn: predict the only class with certainty.
            self.booster_ = None
            self.best_iteration_ = 0
            return self
        fit_idx = np.arange(len(y_enc))
        val_idx = None
        if self.early_stopping_rounds:
            fit_idx, val_idx = self._early_stopping_split(y_enc, groups)
        extra = list(callbacks or [])
        if self.backend == "lightgbm":
            self._fit_lightgbm(X, y_enc, w, fit_idx, val_idx, k, extra)
        else:
            self._fit_xgboost(X, y_enc, w, fit_idx, val_idx, k, extra)
        return self

    def _early_stopping_split(self, y_enc: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
        """Train/validation row indices for early stopping: stratified by class, grouped when ``groups``."""
        idx = np.arange(len(y_enc))
        if groups is None:
            counts = np.bincount(y_enc)
            strat = y_enc if counts.min() >= 2 else None
            return tuple(
                train_test_split(
                    idx, test_size=self.validation_fraction, random_state=self.random_state, stratify=strat
                )
            )
        from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

        groups = np.asarray(groups)
        if len(groups) != len(y_enc):
            raise ValueError(f"groups has {len(groups)} entries for {len(y_enc)} rows")
        n_splits = max(2, int(round(1.0 / self.validation_fraction)))
        if len(np.unique(groups)) >= n_splits and np.bincount(y_enc).min() >= n_splits:
            # First fold of a stratified group k-fold: ~validation_fraction of the groups, classes balanced.
            cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state)
        else:
            cv = GroupShuffleSplit(n_splits=1, test_size=self.validation_fraction, random_state=self.random_state)
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            tr, va = next(iter(cv.split(idx, y_enc, groups)))
        return tr, va

    def _class_multipliers(self) -> np.ndarray:
        """Grade weight per encoded class (1 when classes are not grades or weighting is off)."""
        mult = np.ones(len(self.classes_))
        if self.grade_weights is None:
            return mult
        for i, c in enumerate(self.classes_):
            if isinstance(c, (int, np.integer, float, np.floating)) and float(c) in (0.0, 1.0, 2.0):
                mult[i] = self.grade_weights[int(c)]
        return mult

    def _fit_lightgbm(self, X, y, w, fit_idx, val_idx, k, extra: list) -> None:
        import lightgbm as lgb

        params = {
            "objective": "binary" if k == 2 else "multiclass",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth if self.max_depth > 0 else -1,
            "min_data_in_leaf": self.min_child_samples,
            "min_sum_hessian_in_leaf": self.min_child_weight,
            "bagging_fraction": self.subsample,
            "bagging_freq": 1 if self.subsample < 1 else 0,
            "feature_fraction": self.colsample,
            "lambda_l2": self.reg_lambda,
            "lambda_l1": self.reg_alpha,
            "num_threads": self.n_jobs,
            "max_bin": self.max_bin,
            "seed": self.random_state,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }
        if k > 2:
            params["num_class"] = k
        train = lgb.Dataset(X[fit_idx], y[fit_idx], weight=w[fit_idx], free_raw_data=True)
        callbacks = []
        valid_sets = []
        if val_idx is not None:
            valid_sets = [lgb.Dataset(X[val_idx], y[val_idx], weight=w[val_idx], reference=train)]
            callbacks = [lgb.early_stopping(self.early_stopping_rounds, verbose=False), *extra]
        booster = lgb.train(params, train, self.n_estimators, valid_sets=valid_sets, callbacks=callbacks)
        self.booster_ = booster
        self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())

    def _fit_xgboost(self, X, y, w, fit_idx, val_idx, k, extra: list) -> None:
        import xgboost as xgb

        params = {
            "objective": "binary:logistic" if k == 2 else "multi:softprob",
            "eval_metric": "logloss" if k == 2 else "mlogloss",
            "eta": self.learning_rate,
            "max_depth": self.max_depth if self.max_depth > 0 else 6,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample,
            "lambda": self.reg_lambda,
            "alpha": self.reg_alpha,
            "nthread": self.n_jobs,
            "max_bin": self.max_bin,
            "seed": self.random_state,
            "tree_method": "hist",
            "verbosity": 0,
        }
        if k > 2:
            params["num_class"] = k
        # No feature names: XGBoost re-reads and re-checks every name of the eval set on every boosting round
        # (a third of tune's time with ~1,300 features); unnamed features are "f0", "f1", … in get_score anyway.
        dtrain = xgb.DMatrix(X[fit_idx], label=y[fit_idx], weight=w[fit_idx], nthread=self.n_jobs)
        evals = []
        es = None
        callbacks = None
        if val_idx is not None:
            evals = [(xgb.DMatrix(X[val_idx], label=y[val_idx], weight=w[val_idx], nthread=self.n_jobs), "val")]
            es = self.early_stopping_rounds
            callbacks = extra or None
        booster = xgb.train(
            params, dtrain, self.n_estimators, evals=evals, early_stopping_rounds=es, verbose_eval=False,
            callbacks=callbacks,
        )
        self.booster_ = booster
        best = getattr(booster, "best_iteration", None) if es else None
        self.best_iteration_ = int(best + 1) if best is not None else self.n_estimators

    # ------------------------------------------------------------ predict
    def _dmatrix(self, X: np.ndarray):
        """Prediction DMatrix; named like the booster when it was trained with names (older bundles)."""
        import xgboost as xgb

        return xgb.DMatrix(X, feature_names=self.booster_.feature_names, nthread=self.n_jobs)

    def _margins(self, X: np.ndarray) -> np.ndarray:
        """Raw scores (n, k) whose softmax are the probabilities (binary: [-m/2, m/2])."""
        n = len(X)
        k = self.n_boosted_classes_
        if self.booster_ is None:
            return np.zeros((n, 1))
        if self.backend == "lightgbm":
            m = self.booster_.predict(X, num_iteration=self.best_iteration_, raw_score=True)
        else:
            d = self._dmatrix(X)
            m = self.booster_.predict(d, output_margin=True, iteration_range=(0, self.best_iteration_))
        m = np.asarray(m, dtype=np.float64)
        if k == 2:
            m = m.reshape(n)
            return np.column_stack([-m / 2, m / 2])
        return m.reshape(n, k)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n, n_classes) in ``classes_`` order; rows sum to 1."""
        check_is_fitted(self, "classes_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        m = self._margins(X)
        m = m - m.max(axis=1, keepdims=True)
        e = np.exp(m)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """Most probable class label per row."""
        proba = self.predict_proba(X)  # first: raises NotFittedError before classes_ is touched
        return self.classes_[np.argmax(proba, axis=1)]

    def contributions(self, X) -> np.ndarray:
        """Per-feature additive contributions to the raw scores, shape (n, n_classes, n_features + 1).

        The last slot is the bias. Uses LightGBM ``pred_contrib`` / XGBoost ``pred_contribs`` (TreeSHAP);
        for binary models the single margin m is split as [-m/2, m/2] like :meth:`predict_proba`.
        """
        check_is_fitted(self, "classes_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        n, f = X.shape
        k = self.n_boosted_classes_
        if self.booster_ is None:
            return np.zeros((n, 1, f + 1))
        if self.backend == "lightgbm":
            c = np.asarray(self.booster_.predict(X, num_iteration=self.best_iteration_, pred_contrib=True))
        else:
            d = self._dmatrix(X)
            c = np.asarray(
                self.booster_.predict(d, pred_contribs=True, iteration_range=(0, self.best_iteration_))
            )
        if k == 2:
            c = c.reshape(n, f + 1)
            return np.stack([-c / 2, c / 2], axis=1)
        return c.reshape(n, k, f + 1)

    def feature_importance_gain(self) -> np.ndarray:
        """Total split gain per input feature (zeros when nothing was learned)."""
        check_is_fitted(self, "classes_")
        f = self.n_features_in_
        if self.booster_ is None:
            return np.zeros(f)
        if self.backend == "lightgbm":
            return np.asarray(
                self.booster_.feature_importance("gain", iteration=self.best_iteration_), dtype=float
            )
        score = self.booster_.get_score(importance_type="total_gain")
        return np.array([float(score.get(f"f{i}", 0.0)) for i in range(f)])


# ---------------------------------------------------------------------------------------------------------
DERIVED_FEATURES: tuple[str, ...] = ("level_idx", "side_code")
POOLED_FEATURES: tuple[str, ...] = ("condition_idx", "group_idx")


def design_matrix(table: pd.DataFrame, features: Sequence[str], mode: str) -> np.ndarray:
    """Numeric design matrix: ``features`` + level/side codes (+ condition/group codes when pooled)."""
    cols = [table[list(features)].to_numpy(dtype=np.float64)]
    cols.append(table["level"].map({lv: i for i, lv in enumerate(LEVELS)}).to_numpy(dtype=float)[:, None])
    cols.append(table["side"].map({"left": 1.0, "right": -1.0}).fillna(0.0).to_numpy(dtype=float)[:, None])
    if mode == "pooled":
        cols.append(table["condition"].map({c: i for i, c in enumerate(CONDITIONS)}).to_numpy(float)[:, None])
        cols.append(table["group"].map({g: i for i, g in enumerate(GROUPS)}).to_numpy(float)[:, None])
    return np.hstack(cols)


def design_names(features: Sequence[str], mode: str) -> list[str]:
    """Column names of :func:`design_matrix`."""
    return [*features, *DERIVED_FEATURES, *(POOLED_FEATURES if mode == "pooled" else ())]


class TableGrader(BaseEstimator):
    """Grades rows of a features table with one model per group or one pooled model.

    Args:
        base: an unfitted :class:`GradeClassifier` (cloned per model; None → default GradeClassifier).
        features: feature columns used (derived level/side codes are added).
        mode: "per_group" or "pooled".
        screen: an unfitted :class:`radspine.models.screen.ColumnScreen` fitted per model on that model's
            training rows only (None: every feature column goes to the model).

    Learned: ``models_`` (model key → fitted GradeClassifier; keys are groups, or "all" when pooled),
    ``features_`` (the feature list as fitted), ``columns_`` (model key → indices of the design columns the
    model was fitted on; absent in bundles written before the screen = all columns), ``screens_`` (model key →
    fitted ColumnScreen, when screening).
    """

    # Floor for a grade absent from a model's training rows (tiny folds), so log loss stays finite.
    MISSING_CLASS_PROB = 1e-3

    def __init__(
        self,
        base: GradeClassifier | None = None,
        features: Sequence[str] = (),
        mode: str = "per_group",
        screen=None,
    ) -> None:
        self.base = base
        self.features = features
        self.mode = mode
        self.screen = screen

    def __setstate__(self, state: dict) -> None:
        state.setdefault("screen", None)  # bundles written before the column screen
        super().__setstate__(state)

    def _keys(self, table: pd.DataFrame) -> np.ndarray:
        return table["group"].to_numpy() if self.mode == "per_group" else np.full(len(table), "all")

    def model_keys(self, table: pd.DataFrame, grades: np.ndarray) -> list[str]:
        """The model keys :meth:`fit` fits on these rows, in fitting order (groups with a labelled row)."""
        keys = self._keys(table)
        lab = ~np.isnan(np.asarray(grades, dtype=float))
        return [str(k) for k in np.unique(keys) if (lab & (keys == k)).any()]

    def fit(self, table: pd.DataFrame, grades: np.ndarray, callbacks=None) -> TableGrader:
        """Fit on rows with a non-NaN grade; returns self. Early stopping holds out whole studies.

        ``callbacks``: optional ``callbacks(slot, backend, n_classes) -> list`` giving the training callbacks
        of the ``slot``-th model fitted (in :meth:`model_keys` order), e.g. Optuna pruning callbacks.

        Raises:
            ValueError: unknown mode, no features, a missing column, or ``grades`` of the wrong length.
        """
        from radspine.models.screen import fit_screen

        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        features = list(self.features)
        if not features:
            raise ValueError("TableGrader needs at least one feature column")
        missing = [c for c in ("study_id", "group", "level", "side", *features) if c not in table.columns]
        if missing:
            raise ValueError(f"table lacks columns {missing[:10]}")
        grades = np.asarray(grades, dtype=float)
        if grades.shape != (len(table),):
            raise ValueError(f"grades has shape {grades.shape}, table has {len(table)} rows")
        base = self.base if self.base is not None else GradeClassifier()
        keys = self._keys(table)
        X = design_matrix(table, features, self.mode)
        n_feat = len(features)
        derived = np.arange(n_feat, X.shape[1])
        studies = table["study_id"].to_numpy()
        self.features_ = features
        self.models_: dict[str, GradeClassifier] = {}
        self.columns_: dict[str, np.ndarray] = {}
        self.screens_: dict = {}
        for slot, key in enumerate(self.model_keys(table, grades)):
            m = (keys == key) & ~np.isnan(grades)
            y = grades[m].astype(int)
            cols = np.arange(X.shape[1])
            if self.screen is not None:
                # Screened on this model's training rows only; the level/side (group) codes always stay.
                scr = fit_screen(clone(self.screen), X[m][:, :n_feat], y)
                self.screens_[key] = scr
                cols = np.concatenate([np.flatnonzero(scr.keep_), derived])
            extra = callbacks(slot, base.backend, len(np.unique(y))) if callbacks is not None else None
            self.columns_[key] = cols
            self.models_[key] = clone(base).fit(X[m][:, cols], y, groups=studies[m], callbacks=extra)
        return self

    def _cols(self, key: str, width: int) -> np.ndarray:
        cols = getattr(self, "columns_", {}).get(key)  # bundles saved before the screen: every column
        return np.arange(width) if cols is None else cols

    @property
    def used_features_(self) -> list[str]:
        """Feature columns at least one model uses (all of ``features_`` without a screen)."""
        check_is_fitted(self, "models_")
        n = len(self.features_)
        used = sorted({int(i) for k in self.models_ for i in self._cols(k, n) if i < n})
        return [self.features_[i] for i in used]

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        """(n, 3) grade probabilities; rows of a group with no model get uniform probabilities."""
        check_is_fitted(self, "models_")
        keys = self._keys(table)
        X = design_matrix(table, self.features_, self.mode)
        out = np.full((len(table), 3), 1.0 / 3.0)
        for key, model in self.models_.items():
            m = keys == key
            if not m.any():
                continue
            p = np.full((int(m.sum()), 3), self.MISSING_CLASS_PROB)
            p[:, model.classes_.astype(int)] = model.predict_proba(X[m][:, self._cols(key, X.shape[1])])
            out[m] = p / p.sum(axis=1, keepdims=True)
        return out

    def contributions(self, table: pd.DataFrame) -> np.ndarray:
        """(n, 3, n_design + 1) raw-score contributions per grade (zeros for grades a model never saw and for
        columns the screen dropped)."""
        check_is_fitted(self, "models_")
        keys = self._keys(table)
        X = design_matrix(table, self.features_, self.mode)
        width = X.shape[1]
        out = np.zeros((len(table), 3, width + 1))
        for key, model in self.models_.items():
            m = keys == key
            if m.any() and model.booster_ is not None:
                cols = self._cols(key, width)
                c = model.contributions(X[m][:, cols])  # (n_m, k, len(cols) + 1), bias last
                full = np.zeros((c.shape[0], c.shape[1], width + 1))
                full[:, :, cols] = c[:, :, :-1]
                full[:, :, width] = c[:, :, -1]
                out[np.ix_(m, model.classes_.astype(int))] = full
        return out

    def importance(self) -> dict[str, dict[str, float]]:
        """Gain importance per model key (group or "all"), by design column name (columns a model uses)."""
        check_is_fitted(self, "models_")
        names = design_names(self.features_, self.mode)
        return {
            key: dict(zip([names[i] for i in self._cols(key, len(names))], map(float, model.feature_importance_gain()),
                          strict=True))
            for key, model in self.models_.items()
        }

    def screen_report(self) -> dict[str, dict]:
        """Per model key: what the screen kept and dropped (:meth:`ColumnScreen.report`); {} without a screen."""
        check_is_fitted(self, "models_")
        return {k: s.report(list(self.features_)) for k, s in getattr(self, "screens_", {}).items()}
