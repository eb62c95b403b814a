"""The RSNA 2024 LSDC competition metric, written from its definition, plus a priors-only baseline.

Score = mean of four terms: a sample-weighted multiclass log loss for each condition group (spinal; both
foraminal sides; both subarticular sides) with weights 1/2/4 by the true grade, and ``any_severe_spinal``:
per study, label = any spinal level Severe, weight = the study's largest spinal sample weight, prediction =
the largest P(Severe) over its spinal levels. Submission rows are normalised to sum 1 and clipped;
rows without a true label are not scored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from radspine.constants import (
    CONDITION_GROUP,
    CONDITIONS,
    GROUPS,
    LEVELS,
    SEVERITY_COLUMNS,
    SEVERITY_WEIGHTS,
    parse_row_id,
    row_id,
)
from radspine.errors import RadspineError

PROB_COLUMNS: tuple[str, ...] = SEVERITY_COLUMNS
TERMS: tuple[str, ...] = (*GROUPS, "any_severe_spinal")
# Same clip as the competition's sklearn.log_loss (eps=1e-15) so scores are comparable to the leaderboard.
EPS = 1e-15


class MetricError(RadspineError):
    """A solution or submission table cannot be scored (missing rows, NaN, negative values...)."""


@dataclass(frozen=True)
class MetricResult:
    """Competition score and its four terms (lower is better)."""

    score: float
    spinal: float
    foraminal: float
    subarticular: float
    any_severe_spinal: float
    n_rows: int  # labeled rows scored
    n_studies: int  # studies in the any_severe_spinal term

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)

    def terms(self) -> dict[str, float]:
        """The four terms by name."""
        return {t: float(getattr(self, t)) for t in TERMS}


def _weighted_logloss(true_idx: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> float:
    """Weighted mean of -log p[true]; probs already normalised and clipped."""
    p = probs[np.arange(len(true_idx)), true_idx]
    return float(np.sum(-np.log(p) * weights) / np.sum(weights))


def normalise_probs(probs: np.ndarray) -> np.ndarray:
    """Rows divided by their sum, then clipped to [EPS, 1-EPS] (the competition's order)."""
    probs = np.asarray(probs, dtype=np.float64)
    s = probs.sum(axis=1, keepdims=True)
    # An all-zero row carries no information: treat it as uniform instead of dividing by zero.
    out = np.where(s > 0, probs / np.where(s > 0, s, 1.0), 1.0 / probs.shape[1])
    return np.clip(out, EPS, 1 - EPS)


def solution_from_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """Long labels ``[study_id, condition, level, grade]`` → solution ``[row_id, study_id, normal_mild, moderate, severe]``.

    Rows with NaN grade keep all-zero one-hot columns (unlabeled, not scored).
    """
    grades = pd.to_numeric(labels["grade"], errors="coerce").to_numpy()
    onehot = np.zeros((len(labels), 3))
    ok = ~np.isnan(grades)
    onehot[np.flatnonzero(ok), grades[ok].astype(int)] = 1.0
    out = pd.DataFrame(
        {
            "row_id": [
                row_id(s, c, lv)
                for s, c, lv in zip(labels["study_id"], labels["condition"], labels["level"], strict=True)
            ],
            "study_id": labels["study_id"].astype(int).to_numpy(),
        }
    )
    for j, col in enumerate(PROB_COLUMNS):
        out[col] = onehot[:, j]
    return out


def _solution_grades(solution: pd.DataFrame, name: str) -> np.ndarray:
    """Grade per solution row (float, NaN when unlabeled) from one-hot columns or a ``grade`` column."""
    if all(c in solution.columns for c in PROB_COLUMNS):
        oh = solution[list(PROB_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        oh = np.nan_to_num(oh, nan=0.0)
        if ((oh != 0) & (oh != 1)).any() or (oh.sum(axis=1) > 1).any():
            raise MetricError(f"{name}: solution columns {list(PROB_COLUMNS)} must be one-hot 0/1")
        g = np.where(oh.sum(axis=1) == 1, oh.argmax(axis=1), np.nan)
        return g.astype(float)
    if "grade" in solution.columns:
        g = pd.to_numeric(solution["grade"], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isnan(g) & ~np.isin(g, (0, 1, 2))
        if bad.any():
            raise MetricError(f"{name}: grade must be 0/1/2 or blank, got {g[bad][0]!r}")
        return g
    raise MetricError(f"{name}: solution needs columns {list(PROB_COLUMNS)} (one-hot) or 'grade'")


def score(
    solution: pd.DataFrame,
    submission: pd.DataFrame,
    *,
    solution_name: str = "solution",
    submission_name: str = "submission",
) -> MetricResult:
    """Competition score of ``submission`` against ``solution``.

    Args:
        solution: ``row_id`` + one-hot ``normal_mild, moderate, severe`` (all zero = unlabeled) or an int
            ``grade`` column (NaN = unlabeled); ``study_id`` optional (parsed from row_id otherwise).
        submission: ``row_id`` + the three probability columns; extra rows are ignored.
        solution_name, submission_name: names used in error messages (e.g. file paths).

    Raises:
        MetricError: missing columns, duplicate or missing row_ids, NaN/negative/infinite probabilities.
    """
    for df, name, need in (
        (solution, solution_name, ("row_id",)),
        (submission, submission_name, ("row_id", *PROB_COLUMNS)),
    ):
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise MetricError(f"{name}: missing columns {missing}")
        if df["row_id"].duplicated().any():
            dup = df.loc[df["row_id"].duplicated(), "row_id"].iloc[0]
            raise MetricError(f"{name}: duplicate row_id {dup!r}")
    grades = _solution_grades(solution, solution_name)
    labeled = ~np.isnan(grades)
    sol = solution.loc[labeled, ["row_id"]].copy()
    if len(sol) == 0:
        raise MetricError(f"{solution_name}: no labeled rows to score")
    sol["grade"] = grades[labeled].astype(int)
    try:
        parsed = [parse_row_id(r) for r in sol["row_id"]]
    except ValueError as err:
        raise MetricError(f"{solution_name}: {err}") from None
    sol["condition"] = [p[1] for p in parsed]
    if "study_id" in solution.columns:
        sol["study_id"] = solution.loc[labeled, "study_id"].astype(int).to_numpy()
    else:
        sol["study_id"] = [p[0] for p in parsed]

    sub = submission.set_index("row_id")
    missing_ids = sol.loc[~sol["row_id"].isin(sub.index), "row_id"]
    if len(missing_ids):
        raise MetricError(
            f"{submission_name}: {len(missing_ids)} labeled row_ids missing, e.g. {missing_ids.iloc[0]!r}"
        )
    raw = sub.loc[sol["row_id"], list(PROB_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = ~np.isfinite(raw)
    if bad.any():
        i = int(np.flatnonzero(bad.any(axis=1))[0])
        raise MetricError(
            f"{submission_name}: NaN or non-numeric probability in row {sol['row_id'].iloc[i]!r}"
        )
    if (raw < 0).any():
        i = int(np.flatnonzero((raw < 0).any(axis=1))[0])
        raise MetricError(f"{submission_name}: negative probability in row {sol['row_id'].iloc[i]!r}")
    return score_arrays(
        sol["grade"].to_numpy(),
        raw,
        sol["condition"].map(CONDITION_GROUP).to_numpy(),
        sol["study_id"].to_numpy(),
    )


def score_arrays(
    grades: np.ndarray, probs: np.ndarray, groups: np.ndarray, study_ids: np.ndarray
) -> MetricResult:
    """Fast core of :func:`score` on aligned arrays of labeled rows (used inside CV loops).

    Args:
        grades: (n,) int 0/1/2 true grades (labeled rows only).
        probs: (n, 3) non-negative scores; normalised and clipped here.
        groups: (n,) condition group of each row ("spinal"/"foraminal"/"subarticular").
        study_ids: (n,) study of each row (for any_severe_spinal).
    """
    grades = np.asarray(grades, dtype=int)
    groups = np.asarray(groups)
    p = normalise_probs(probs)
    w = np.asarray(SEVERITY_WEIGHTS)[grades]
    terms: dict[str, float] = {}
    for g in GROUPS:
        m = groups == g
        # A group with no labeled rows (tiny subsets) contributes nothing rather than NaN.
        terms[g] = _weighted_logloss(grades[m], p[m], w[m]) if m.any() else 0.0
    spinal = groups == "spinal"
    if spinal.any():
        df = pd.DataFrame(
            {
                "study": np.asarray(study_ids)[spinal],
                "y": grades[spinal] == 2,
                "w": w[spinal],
                "p": p[spinal, 2],
            }
        )
        agg = df.groupby("study", sort=True).agg(y=("y", "max"), w=("w", "max"), p=("p", "max"))
        y = agg["y"].to_numpy(bool)
        pa = np.clip(agg["p"].to_numpy(), EPS, 1 - EPS)
        ll = -(y * np.log(pa) + (~y) * np.log(1 - pa))
        terms["any_severe_spinal"] = float(np.sum(ll * agg["w"].to_numpy()) / agg["w"].sum())
        n_studies = len(agg)
    else:
        terms["any_severe_spinal"] = 0.0
        n_studies = 0
    # Terms without rows (tiny subsets) are left out of the mean instead of counting as zero.
    present = [t for t in GROUPS if (groups == t).any()] + (["any_severe_spinal"] if n_studies else [])
    total = float(np.mean([terms[t] for t in present]))
    return MetricResult(score=total, n_rows=len(grades), n_studies=n_studies, **terms)


def priors_table(labels: pd.DataFrame, *, weighted: bool = True, alpha: float = 1.0) -> pd.DataFrame:
    """Per condition × level class frequencies ``[condition, level, normal_mild, moderate, severe]``.

    Args:
        labels: long labels ``[study_id, condition, level, grade]`` (NaN grades ignored).
        weighted: multiply counts by the metric's 1/2/4 weights; the constant prediction that minimises a
            weighted log loss is proportional to weight × count, so this is the best priors-only submission.
        alpha: additive (Laplace) smoothing per class so no prior is exactly zero.
    """
    lab = labels.dropna(subset=["grade"])
    counts = (
        lab.assign(grade=lab["grade"].astype(int))
        .groupby(["condition", "level", "grade"])
        .size()
        .unstack("grade")
        .reindex(columns=[0, 1, 2])
        .fillna(0.0)
    )
    idx = pd.MultiIndex.from_product([CONDITIONS, LEVELS], names=["condition", "level"])
    counts = counts.reindex(idx).fillna(0.0).to_numpy() + alpha
    if weighted:
        counts = counts * np.asarray(SEVERITY_WEIGHTS)
    tot = counts.sum(axis=1, keepdims=True)
    # A condition × level never labeled (possible with alpha=0) gets a flat prior.
    probs = np.where(tot > 0, counts / np.where(tot > 0, tot, 1.0), 1.0 / 3.0)
    out = idx.to_frame(index=False)
    for j, col in enumerate(PROB_COLUMNS):
        out[col] = probs[:, j]
    return out


def priors_predictions(priors: pd.DataFrame, row_ids: pd.Series | list[str]) -> pd.DataFrame:
    """Submission ``[row_id, normal_mild, moderate, severe]`` giving every row its condition × level prior."""
    rid = pd.Series(list(row_ids), name="row_id")
    parsed = [parse_row_id(r) for r in rid]
    keys = pd.DataFrame({"row_id": rid, "condition": [p[1] for p in parsed], "level": [p[2] for p in parsed]})
    out = keys.merge(priors, on=["condition", "level"], how="left")
    return out[["row_id", *PROB_COLUMNS]]


def read_table(path: str, what: str) -> pd.DataFrame:
    """Read a CSV (or parquet) solution/submission; raises MetricError naming the file when unreadable."""
    try:
        if str(path).endswith(".parquet"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except FileNotFoundError:
        raise MetricError(f"{path}: {what} file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise MetricError(f"{path}: cannot read {what}: {str(err).splitlines()[0]}") from None
