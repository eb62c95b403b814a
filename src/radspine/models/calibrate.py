"""Calibration of grade probabilities per condition group, fitted on out-of-fold predictions.

Methods are a registry (:data:`CALIBRATION_MAPS`) of small fit/transform classes, one map per group:
``none``, ``temperature`` (one temperature per group), ``isotonic`` (one-vs-rest per grade, sklearn
IsotonicRegression, renormalised) and ``dirichlet`` (multinomial logistic regression on log-probabilities,
i.e. Dirichlet calibration, via sklearn LogisticRegression). All fits use the metric's 1/2/4 weights.
:func:`select_calibration` cross-fits every method over the CV folds and keeps the best by the metric.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from radspine.constants import GROUPS, SEVERITY_WEIGHTS
from radspine.metrics import EPS, MetricResult, normalise_probs, score_arrays


def _weighted_nll(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(-np.log(np.clip(p[np.arange(len(y)), y], EPS, 1)) * w) / np.sum(w))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class CalibrationMap:
    """One group's map from normalised (n, 3) probabilities to calibrated ones; subclasses fill fit/transform."""

    method = "none"

    def fit(self, p: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int = 0) -> CalibrationMap:
        """Fit on normalised probs ``p``, true grades ``y`` (int 0/1/2) and weights ``w``; returns self."""
        return self

    def transform(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (rows sum to 1)."""
        return p


class TemperatureMap(CalibrationMap):
    """softmax(log p / T), T minimising the weighted NLL."""

    method = "temperature"

    def fit(self, p, y, w, seed=0):
        from scipy.optimize import minimize_scalar

        logp = np.log(p)
        # Hand-written (a 1-D weighted NLL minimisation): sklearn's temperature calibration wraps a fitted
        # estimator and cannot take precomputed out-of-fold probabilities per group.
        res = minimize_scalar(
            lambda lt: _weighted_nll(_softmax(logp / np.exp(lt)), y, w), bounds=(-3.0, 3.0), method="bounded"
        )
        self.temperature_ = float(np.exp(res.x))
        return self

    def transform(self, p):
        return _softmax(np.log(p) / self.temperature_)


class IsotonicMap(CalibrationMap):
    """One-vs-rest isotonic regression per grade, renormalised."""

    method = "isotonic"

    def fit(self, p, y, w, seed=0):
        from sklearn.isotonic import IsotonicRegression

        self.isotonic_ = [
            IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
                p[:, k], (y == k).astype(float), sample_weight=w
            )
            for k in range(3)
        ]
        return self

    def transform(self, p):
        cols = np.column_stack([iso.predict(p[:, k]) for k, iso in enumerate(self.isotonic_)])
        cols = np.clip(cols, 1e-4, None)  # isotonic can output exact zeros; keep log loss finite
        return cols / cols.sum(axis=1, keepdims=True)


class DirichletMap(CalibrationMap):
    """Multinomial logistic regression on log-probabilities (Dirichlet calibration)."""

    method = "dirichlet"

    def fit(self, p, y, w, seed=0):
        from sklearn.linear_model import LogisticRegression

        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError("dirichlet calibration needs at least two grades")
        self.lr_ = LogisticRegression(C=1.0, max_iter=500, random_state=seed).fit(np.log(p), y, sample_weight=w)
        self.classes_ = classes.astype(int)
        return self

    def transform(self, p):
        out = np.full((len(p), 3), 1e-4)
        out[:, self.classes_] = self.lr_.predict_proba(np.log(p))
        return out / out.sum(axis=1, keepdims=True)


CALIBRATION_MAPS: dict[str, type[CalibrationMap]] = {
    m.method: m for m in (CalibrationMap, TemperatureMap, IsotonicMap, DirichletMap)
}
METHODS: tuple[str, ...] = tuple(CALIBRATION_MAPS)


@dataclass
class Calibrator:
    """A fitted per-group calibration: ``maps[group]`` is that group's :class:`CalibrationMap`."""

    method: str
    maps: dict[str, CalibrationMap] = field(default_factory=dict)

    def transform(self, probs: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Calibrated, normalised probabilities; rows of groups without a fitted map pass through."""
        p = normalise_probs(probs)
        out = p.copy()
        groups = np.asarray(groups)
        for g, cmap in self.maps.items():
            m = groups == g
            if m.any():
                out[m] = cmap.transform(p[m])
        return out

    def temperatures(self) -> dict[str, float] | None:
        """Per-group temperature when the method is ``temperature`` (else None)."""
        if self.method != "temperature":
            return None
        return {g: float(m.temperature_) for g, m in self.maps.items()}  # type: ignore[attr-defined]


def fit_calibrator(
    method: str, probs: np.ndarray, grades: np.ndarray, groups: np.ndarray, seed: int = 0
) -> Calibrator:
    """Fit ``method`` per group on labeled rows (``grades`` int 0/1/2); groups with < 10 rows or one grade
    keep the identity."""
    if method not in CALIBRATION_MAPS:
        raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
    p = normalise_probs(probs)
    grades = np.asarray(grades, dtype=int)
    groups = np.asarray(groups)
    w = np.asarray(SEVERITY_WEIGHTS)[grades]
    maps: dict[str, CalibrationMap] = {}
    if method != "none":
        for g in GROUPS:
            m = groups == g
            if m.sum() >= 10 and len(np.unique(grades[m])) >= 2:
                maps[g] = CALIBRATION_MAPS[method]().fit(p[m], grades[m], w[m], seed)
    return Calibrator(method, maps)


def select_calibration(
    probs: np.ndarray,
    grades: np.ndarray,
    groups: np.ndarray,
    study_ids: np.ndarray,
    folds: np.ndarray,
    *,
    methods: tuple[str, ...] = METHODS,
    seed: int = 0,
) -> tuple[Calibrator, dict[str, MetricResult]]:
    """Pick the calibration method with the best cross-fitted metric on out-of-fold predictions.

    For each fold k a calibrator is fitted on the other folds' OOF rows and applied to fold k, so the score
    of each method is honest; the winner is then refitted on all rows. ``none`` is always a candidate.

    Returns:
        The refitted winner and the cross-fitted :class:`MetricResult` of every method.
    """
    from threadpoolctl import threadpool_limits

    grades = np.asarray(grades, dtype=int)
    groups = np.asarray(groups)
    folds = np.asarray(folds)
    results: dict[str, MetricResult] = {}
    # These are tiny (3-feature) fits: a multi-threaded BLAS only adds contention (measured 18x slower).
    with threadpool_limits(limits=1):
        for method in dict.fromkeys(("none", *methods)):
            cal = np.empty((len(grades), 3))
            for k in np.unique(folds):
                te = folds == k
                c = fit_calibrator(method, probs[~te], grades[~te], groups[~te], seed)
                cal[te] = c.transform(probs[te], groups[te])
            results[method] = score_arrays(grades, cal, groups, study_ids)
        best = min(results, key=lambda m: results[m].score)
        return fit_calibrator(best, probs, grades, groups, seed), results


def expected_calibration_error(probs: np.ndarray, grades: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE: |accuracy − confidence| averaged over equal-width confidence bins, by bin size.

    Hand-written: scikit-learn has calibration_curve but no ECE function.
    """
    p = normalise_probs(probs)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == np.asarray(grades, dtype=int)).astype(float)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def reliability_diagram(
    path: str,
    before: np.ndarray,
    after: np.ndarray,
    grades: np.ndarray,
    groups: np.ndarray,
    *,
    title: str = "",
    n_bins: int = 10,
) -> None:
    """Save a PNG with one panel per group: observed frequency vs predicted P(grade ≥ moderate) and
    P(severe), before and after calibration (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    grades = np.asarray(grades, dtype=int)
    groups = np.asarray(groups)
    fig, axes = plt.subplots(1, len(GROUPS), figsize=(4 * len(GROUPS), 4), squeeze=False)
    for ax, g in zip(axes[0], GROUPS, strict=True):
        m = groups == g
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        for name, p, ls in (("before", before, "--"), ("after", after, "-")):
            if not m.any():
                continue
            pn = normalise_probs(p[m])
            for label, y, q, color in (
                ("≥moderate", grades[m] >= 1, pn[:, 1] + pn[:, 2], "tab:blue"),
                ("severe", grades[m] == 2, pn[:, 2], "tab:red"),
            ):
                if y.all() or not y.any():
                    continue
                fy, fx = calibration_curve(y, np.clip(q, 0, 1), n_bins=n_bins, strategy="quantile")
                ax.plot(fx, fy, ls=ls, marker="o", ms=3, color=color, label=f"{label} {name}")
        ece_b = expected_calibration_error(before[m], grades[m]) if m.any() else float("nan")
        ece_a = expected_calibration_error(after[m], grades[m]) if m.any() else float("nan")
        ax.set_title(f"{g}: ECE {ece_b:.3f} → {ece_a:.3f}")
        ax.set_xlabel("predicted probability")
        ax.set_ylabel("observed frequency")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    # Write under a temporary name then rename, so a crash never leaves a half-written PNG.
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
