"""Column screen: drop feature columns that carry nothing before a grader is fitted.

A features table holds ~1,300 columns, most of them radiomics families that repeat one another (a
firstorder Mean and Median, the same texture at two LoG scales) or carry no signal at all. Every boosting
round pays for every column, so :class:`ColumnScreen` removes, in order:

1. constant columns (no variance among the non-missing values, or all missing; sklearn's
   ``VarianceThreshold``),
2. exact duplicates (same values and the same missing rows as an earlier column),
3. near-duplicates: absolute Spearman correlation >= ``near_duplicate`` with an earlier kept column,
   measured on up to ``corr_rows`` rows,
4. a cheap importance screen: a short LightGBM fit (``importance_rounds`` rounds, the metric's 1/2/4 grade
   weights) keeps at most ``max_features`` columns with non-zero split gain (sklearn's ``SelectFromModel``).

The screen is fitted by :class:`radspine.models.estimator.TableGrader` on the rows it is fitted on, so inside
a cross-validation it only ever sees the training folds. Fits repeat on the same training rows (every Optuna
trial refits the same folds), so results are memoised on a fingerprint of the data (:func:`fit_screen`).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import numpy as np
from sklearn.base import BaseEstimator

# Reasons a column was dropped, in screening order (report keys).
REASONS: tuple[str, ...] = ("constant", "duplicate", "near_duplicate", "low_importance")


class ColumnScreen(BaseEstimator):
    """Select informative columns of a numeric matrix (NaN allowed) for one grader.

    Args:
        near_duplicate: drop a column whose |Spearman r| with an earlier kept column reaches this
            (None: keep near-duplicates).
        max_features: keep at most this many columns by gain of a quick LightGBM fit (None: no importance
            screen). Columns without any gain are dropped too.
        importance_rounds: boosting rounds of that quick fit.
        corr_rows: rows sampled (seeded) for the correlation.
        random_state: seed of the row sample and the quick fit.
        n_jobs: threads of the quick fit.

    Learned: ``keep_`` (bool per input column), ``reason_`` (per column: "" kept, else one of
    :data:`REASONS`), ``n_features_in_``.
    """

    def __init__(
        self,
        near_duplicate: float | None = 0.98,
        max_features: int | None = 200,
        importance_rounds: int = 30,
        corr_rows: int = 3000,
        random_state: int = 0,
        n_jobs: int = 1,
    ) -> None:
        self.near_duplicate = near_duplicate
        self.max_features = max_features
        self.importance_rounds = importance_rounds
        self.corr_rows = corr_rows
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> ColumnScreen:
        """Screen the columns of ``X`` (n, f); ``y`` (class labels) is needed for the importance step."""
        X = np.asarray(X, dtype=np.float64)
        n, f = X.shape
        self.n_features_in_ = f
        reason = np.full(f, "", dtype=object)
        reason[_constant(X)] = "constant"
        live = np.flatnonzero(reason == "")
        reason[live[_duplicates(X[:, live])]] = "duplicate"
        if self.near_duplicate is not None:
            live = np.flatnonzero(reason == "")
            rng = np.random.default_rng(self.random_state)
            rows = np.sort(rng.choice(n, self.corr_rows, replace=False)) if n > self.corr_rows else slice(None)
            reason[live[_near_duplicates(X[rows][:, live], self.near_duplicate)]] = "near_duplicate"
        live = np.flatnonzero(reason == "")
        if self.max_features is not None and y is not None and len(live) and len(np.unique(y)) > 1:
            keep = self._important(X[:, live], np.asarray(y))
            reason[live[~keep]] = "low_importance"
        self.reason_ = reason
        self.keep_ = reason == ""
        return self

    def _important(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bool over ``X``'s columns: the top ``max_features`` by gain of a quick LightGBM fit, gain > 0."""
        from sklearn.feature_selection import SelectFromModel

        from radspine.models.estimator import GradeClassifier

        quick = GradeClassifier(
            "lightgbm", n_estimators=self.importance_rounds, learning_rate=0.1, num_leaves=15, max_depth=5,
            min_child_samples=10, colsample=0.3, subsample=0.8, n_jobs=self.n_jobs, random_state=self.random_state,
        )
        sel = SelectFromModel(
            quick, threshold=1e-12, max_features=min(self.max_features, X.shape[1]),
            importance_getter=lambda m: m.feature_importance_gain(),
        )
        return sel.fit(X, y).get_support()

    def report(self, names: list[str]) -> dict:
        """Counts per drop reason and the kept column count, with a few example names per reason."""
        out: dict = {"n_in": int(self.n_features_in_), "n_kept": int(self.keep_.sum())}
        for r in REASONS:
            idx = np.flatnonzero(self.reason_ == r)
            out[r] = {"n": len(idx), "examples": [names[i] for i in idx[:5]]}
        return out


def _constant(X: np.ndarray) -> np.ndarray:
    """Bool per column: all missing, or a single value among the non-missing rows."""
    import warnings

    from sklearn.feature_selection import VarianceThreshold

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: nanvar/ptp warn, they are dropped
        vt = VarianceThreshold(0.0)
        try:
            return ~vt.fit(X).get_support()
        except ValueError:  # "No feature in X meets the variance threshold"
            return np.ones(X.shape[1], bool)


def _duplicates(X: np.ndarray) -> np.ndarray:
    """Bool per column: identical (values and missing rows) to an earlier column."""
    seen: set[bytes] = set()
    dup = np.zeros(X.shape[1], bool)
    cols = np.ascontiguousarray(X.T)
    for j in range(cols.shape[0]):
        h = hashlib.blake2b(memoryview(cols[j]).cast("B"), digest_size=16).digest()
        dup[j] = h in seen
        seen.add(h)
    return dup


def _near_duplicates(X: np.ndarray, threshold: float) -> np.ndarray:
    """Bool per column: |Spearman r| >= ``threshold`` with an earlier column that is itself kept.

    Ranks are taken over the non-missing rows and missing values set to the mean rank, so two columns
    that agree where both are present and are missing on the same rows correlate fully.
    """
    from scipy.stats import rankdata

    n, f = X.shape
    if f < 2 or n < 3:
        return np.zeros(f, bool)
    r = rankdata(X, axis=0, nan_policy="omit")
    mean = np.nanmean(r, axis=0)
    r = np.where(np.isnan(r), mean, r) - mean
    sd = np.sqrt((r**2).sum(axis=0))
    z = np.divide(r, sd, out=np.zeros_like(r), where=sd > 0)
    c = np.abs(z.T @ z)
    drop = np.zeros(f, bool)
    kept: list[int] = []
    for j in range(f):
        # Greedy in column order (hand-written: sklearn has no correlation filter); compares against kept
        # columns only, so a chain a~b~c with a !~ c keeps a and c.
        if kept and c[j, kept].max() >= threshold:
            drop[j] = True
        else:
            kept.append(j)
    return drop


# --------------------------------------------------------------------------------------------- memo
_CACHE: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_CACHE_SIZE = 64


def _fingerprint(X: np.ndarray, y: np.ndarray, screen: ColumnScreen) -> str:
    """Cheap, content-based key: shape, per-column sums and missing counts, every 97th row, labels, params."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(X.shape, dtype=np.int64).tobytes())
    h.update(np.nansum(X, axis=0).tobytes())
    h.update(np.isnan(X).sum(axis=0).tobytes())
    h.update(np.ascontiguousarray(X[::97]).tobytes())
    h.update(np.asarray(y, dtype=np.float64).tobytes())
    h.update(json.dumps(screen.get_params(), sort_keys=True, default=str).encode())
    return h.hexdigest()


def fit_screen(screen: ColumnScreen, X: np.ndarray, y: np.ndarray) -> ColumnScreen:
    """``screen.fit(X, y)``, memoised per process on the content of ``X``/``y`` and the screen's params.

    Tuning refits graders on the same training folds many times (every trial, both backends, the final
    model); the screen of a fold is computed once. The memo holds only the result masks.
    """
    key = _fingerprint(X, y, screen)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        screen.keep_, screen.reason_ = hit[0].copy(), hit[1].copy()
        screen.n_features_in_ = X.shape[1]
        return screen
    screen.fit(X, y)
    _CACHE[key] = (screen.keep_.copy(), screen.reason_.copy())
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return screen


def clear_cache() -> None:
    """Forget memoised screens (tests, benchmarks that time a cold run)."""
    _CACHE.clear()


__all__ = ["REASONS", "ColumnScreen", "clear_cache", "fit_screen"]
