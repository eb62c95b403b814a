"""Feature analysis behind ``notebooks/feature_analysis.ipynb``: every number and plot of the notebook.

The notebook only calls these functions on a demo output folder (``radspine demo --out DIR``)::

    DIR/work/train/features.parquet   training features (OOF CNN embeddings)
    DIR/data/train.csv                training grades
    DIR/model/                        model bundle (gain importance, TreeSHAP)
    DIR/predictions.csv               held-out predictions (probabilities, expected severity)
    DIR/data/test_solution.csv        held-out grades (phantom only)
    DIR/data/synth_truth.csv          the phantom's continuous latent severity (optional)

Plots are returned as :class:`NotebookFigure` (a matplotlib Figure that notebooks display; no pyplot state), coloured with the
report's fixed grade colours (:data:`radspine.report.GRADE_COLORS`).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from radspine.constants import (
    CONDITION_GROUP,
    CONDITION_SIDE,
    GROUPS,
    LEVEL_NAMES,
    LEVELS,
    SEVERITIES,
    SEVERITY_COLUMNS,
    SEVERITY_THRESHOLDS,
    SEVERITY_WEIGHTS,
)
from radspine.errors import DatasetError
from radspine.report import GRADE_COLORS, plain_feature_name

ENV_VAR = "RADSPINE_DEMO_DIR"


class NotebookFigure(Figure):
    """A matplotlib Figure that IPython shows as a PNG by itself, so no pyplot (global figure state) is needed."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=80)
        return buf.getvalue()


@dataclass
class RunData:
    """What the notebook reads from a demo output folder."""

    root: Path
    train: pd.DataFrame  # training features table with a float ``grade`` column (NaN unlabeled)
    bundle: object  # radspine.models.bundle.Bundle
    predictions: pd.DataFrame | None  # held-out rows (report.load_predictions) with ``true_grade``
    truth: pd.DataFrame | None  # synth_truth.csv rows of the predicted studies (continuous severity)

    @property
    def labeled(self) -> pd.DataFrame:
        """Training rows with a grade."""
        return self.train[self.train["grade"].notna()]


def demo_dir_from_env(default: str | Path = "demo") -> Path:
    """The demo output folder: ``$RADSPINE_DEMO_DIR`` or ``default``.

    A relative path is the caller's: ``jupyter nbconvert --execute`` runs the kernel in the notebook's
    folder, so a path given from the repository root is looked up against the launching shell's directory
    (``$PWD``, which the kernel inherits) when it does not exist from the kernel's own.
    """
    p = Path(os.environ.get(ENV_VAR, str(default))).expanduser()
    if p.is_absolute() or p.exists():
        return p
    shell = os.environ.get("PWD")
    if shell and (Path(shell) / p).exists():
        return Path(shell) / p
    return p


def _grades_from_solution(path: Path) -> pd.Series:
    """row_id → true grade (float, NaN unlabeled) from a one-hot solution CSV."""
    sol = pd.read_csv(path)
    missing = [c for c in ("row_id", *SEVERITY_COLUMNS) if c not in sol.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}")
    oh = sol[list(SEVERITY_COLUMNS)].to_numpy(dtype=float)
    g = np.where(oh.sum(axis=1) == 1, oh.argmax(axis=1), np.nan)
    return pd.Series(g, index=sol["row_id"].astype(str))


def load_run(root: str | Path) -> RunData:
    """Read a demo output folder (layout in the module docstring); DatasetError names what is missing."""
    from radspine.io.dataset import read_train_csv
    from radspine.models.bundle import Bundle
    from radspine.models.tune import align_grades, wide_to_long
    from radspine.report import load_predictions

    root = Path(root)
    fp = root / "work" / "train" / "features.parquet"
    if not fp.is_file():
        raise DatasetError(f"{root}: no work/train/features.parquet (run `radspine demo --out {root}`)")
    train = pd.read_parquet(fp)
    train["grade"] = align_grades(train, wide_to_long(read_train_csv(root / "data" / "train.csv")))
    bundle = Bundle.load(root / "model")
    preds = truth = None
    if (root / "predictions.csv").is_file():
        preds = load_predictions(root)
        sol = root / "data" / "test_solution.csv"
        preds["true_grade"] = (
            _grades_from_solution(sol).reindex(preds["row_id"]).to_numpy() if sol.is_file() else np.nan
        )
        tp = root / "data" / "synth_truth.csv"
        if tp.is_file():
            t = pd.read_csv(tp)
            truth = t[t["study_id"].isin(set(preds["study_id"]))].reset_index(drop=True)
    return RunData(root, train, bundle, preds, truth)


def summary(run: RunData) -> pd.DataFrame:
    """One-line-per-item overview: studies, rows, labeled rows, features, held-out rows."""
    items = {
        "training studies": run.train["study_id"].nunique(),
        "training rows (labeled)": int(run.train["grade"].notna().sum()),
        "model features": len(run.bundle.features),
        "grader mode": run.bundle.info.get("mode"),
        "backends": ", ".join(run.bundle.models),
        "held-out studies": 0 if run.predictions is None else run.predictions["study_id"].nunique(),
        "held-out rows with truth": 0 if run.predictions is None else int(run.predictions["true_grade"].notna().sum()),
    }
    return pd.DataFrame({"value": items})


# ----------------------------------------------------------------------------------------- importance
def feature_importance(run: RunData, max_rows: int = 1500, seed: int = 0) -> pd.DataFrame:
    """Gain and mean |TreeSHAP| per condition group and feature.

    ``gain``: each backend's split gain normalised to sum 1 per model, averaged over backends (a pooled
    model's gain is repeated for every group). ``shap``: mean over the three grades of the mean absolute
    contribution to the raw score, on at most ``max_rows`` training rows per group (seeded sample).
    Columns: ``group, feature, plain, gain, shap``.
    """
    b = run.bundle
    rng = np.random.default_rng(seed)
    gains: dict[tuple[str, str], list[float]] = {}
    for grader in b.models.values():
        for key, imp in grader.importance().items():
            tot = sum(imp.values()) or 1.0
            for g in GROUPS if key == "all" else (key,):
                for f, v in imp.items():
                    gains.setdefault((g, f), []).append(v / tot)
    rows = []
    for g in GROUPS:
        sub = run.train[run.train["group"] == g]
        if sub.empty:
            continue
        if len(sub) > max_rows:
            sub = sub.iloc[np.sort(rng.choice(len(sub), max_rows, replace=False))]
        shap = None
        for col in SEVERITY_COLUMNS:
            sv = b.shap_values(sub, grade=col).drop(columns=["row_id", "bias"]).abs().mean()
            shap = sv if shap is None else shap + sv
        shap = shap / len(SEVERITY_COLUMNS)
        for f, v in shap.items():
            rows.append((g, f, plain_feature_name(f), float(np.mean(gains.get((g, f), [0.0]))), float(v)))
    out = pd.DataFrame(rows, columns=["group", "feature", "plain", "gain", "shap"])
    return out.sort_values(["group", "shap"], ascending=[True, False], kind="stable").reset_index(drop=True)


def top_features(importance: pd.DataFrame, n: int = 6, prefix: str = "rad_", by: str = "shap") -> list[str]:
    """The ``n`` features with ``prefix`` of largest importance ``by`` (summed over groups)."""
    imp = importance[importance["feature"].str.startswith(prefix)]
    return imp.groupby("feature")[by].sum().sort_values(ascending=False, kind="stable").index[:n].tolist()


def plot_importance(importance: pd.DataFrame, top: int = 10):
    """Per group: the top features by SHAP, with gain beside them (both normalised to the group's max)."""
    groups = [g for g in GROUPS if g in set(importance["group"])]
    fig = NotebookFigure(figsize=(15, 0.42 * top + 1.5))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, g in zip(axes, groups, strict=True):
        d = importance[importance["group"] == g].nlargest(top, "shap")[::-1]
        y = np.arange(len(d))
        ax.barh(y + 0.2, d["shap"] / max(d["shap"].max(), 1e-12), height=0.4, color="#0072B2", label="mean |SHAP|")
        ax.barh(y - 0.2, d["gain"] / max(d["gain"].max(), 1e-12), height=0.4, color="#999999", label="gain")
        ax.set_yticks(y, [p if len(p) < 48 else p[:47] + "…" for p in d["plain"]], fontsize=7)
        ax.set_title(f"{g}: top {len(d)} by mean |SHAP|")
        ax.set_xlabel("relative to the group's largest")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------------------------- distributions
def plot_feature_distributions(run: RunData, features: list[str], importance: pd.DataFrame | None = None):
    """Box plots of each feature by true grade, on the condition group where it matters most (by SHAP)."""
    lab = run.labeled
    n = len(features)
    cols = min(3, max(n, 1))
    rows = int(np.ceil(n / cols)) if n else 1
    fig = NotebookFigure(figsize=(5 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, f in zip(axes, features, strict=False):
        group = None
        if importance is not None:
            imp = importance[importance["feature"] == f]
            group = imp.loc[imp["shap"].idxmax(), "group"] if not imp.empty else None
        d = lab if group is None else lab[lab["group"] == group]
        data = [d.loc[d["grade"] == k, f].dropna().to_numpy() for k in range(3)]
        bp = ax.boxplot(data, patch_artist=True, showfliers=False)
        ax.set_xticks([1, 2, 3], [f"{s}\n(n={len(v)})" for s, v in zip(SEVERITIES, data, strict=True)], fontsize=7)
        for patch, c in zip(bp["boxes"], GRADE_COLORS, strict=True):
            patch.set_facecolor(c)
            patch.set_alpha(0.6)
        ax.set_title(f"{plain_feature_name(f)}\n{group or 'all'} rows", fontsize=8)
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def grade_separation(run: RunData, features: list[str]) -> pd.DataFrame:
    """Spearman correlation of each feature with the grade (all labeled rows and per group)."""
    from scipy.stats import spearmanr

    lab = run.labeled
    out = {}
    for f in features:
        row = {}
        for g in ("all", *GROUPS):
            d = lab if g == "all" else lab[lab["group"] == g]
            d = d[[f, "grade"]].dropna()
            row[g] = float(spearmanr(d[f], d["grade"]).statistic) if len(d) > 2 and d[f].nunique() > 1 else np.nan
        out[plain_feature_name(f)] = row
    return pd.DataFrame(out).T


# -------------------------------------------------------------------------------------- correlations
def correlation_clusters(table: pd.DataFrame, features: list[str], threshold: float = 0.8) -> pd.DataFrame:
    """Hierarchical clusters of features whose |Spearman ρ| ≥ ``threshold`` (average linkage, scipy).

    Columns: ``feature, plain, cluster, size`` sorted by cluster size then name; a cluster of size > 1 is a
    group of near-redundant features (keep one when pruning).
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    # Derived design columns (level_idx…) are not in the table; constant columns have no correlation.
    feats = [f for f in features if f in table.columns and table[f].notna().sum() > 2 and table[f].nunique() > 1]
    if len(feats) < 2:
        return pd.DataFrame({"feature": feats, "plain": [plain_feature_name(f) for f in feats],
                             "cluster": range(1, len(feats) + 1), "size": 1})
    rho = table[feats].corr(method="spearman").abs().fillna(0.0).to_numpy()
    dist = np.clip(1.0 - rho, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    z = linkage(squareform(dist, checks=False), method="average")
    cl = fcluster(z, t=1.0 - threshold, criterion="distance")
    out = pd.DataFrame({"feature": feats, "plain": [plain_feature_name(f) for f in feats], "cluster": cl})
    out["size"] = out.groupby("cluster")["cluster"].transform("size")
    return out.sort_values(["size", "cluster", "feature"], ascending=[False, True, True]).reset_index(drop=True)


def cluster_summary(clusters: pd.DataFrame, max_members: int = 4) -> pd.DataFrame:
    """One row per multi-feature cluster of :func:`correlation_clusters`: size, a representative (the
    first member by name) and a few other members in plain words; largest clusters first."""
    multi = clusters[clusters["size"] > 1].sort_values(["size", "cluster", "plain"], ascending=[False, True, True])
    rows = []
    for cl, d in multi.groupby("cluster", sort=False):
        names = d["plain"].tolist()
        more = f" (+{len(names) - 1 - max_members} more)" if len(names) - 1 > max_members else ""
        rows.append({"cluster": int(cl), "size": len(names), "representative": names[0],
                     "other members": "; ".join(names[1 : 1 + max_members]) + more})
    return pd.DataFrame(rows, columns=["cluster", "size", "representative", "other members"])


def plot_correlation(table: pd.DataFrame, features: list[str]):
    """|Spearman ρ| heatmap with features ordered by the clustering dendrogram."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    # Derived design columns (level_idx…) are not in the table; constant columns have no correlation.
    feats = [f for f in features if f in table.columns and table[f].notna().sum() > 2 and table[f].nunique() > 1]
    rho = table[feats].corr(method="spearman").abs().fillna(0.0)
    order = feats
    if len(feats) > 2:
        dist = np.clip(1.0 - rho.to_numpy(), 0.0, None)
        np.fill_diagonal(dist, 0.0)
        order = [feats[i] for i in leaves_list(linkage(squareform(dist, checks=False), method="average"))]
    m = rho.loc[order, order].to_numpy()
    size = min(14, 3 + 0.22 * len(order))
    fig = NotebookFigure(figsize=(size + 2, size))
    ax = fig.subplots()
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
    labels = [plain_feature_name(f)[:40] for f in order]
    ax.set_xticks(range(len(order)), labels, rotation=90, fontsize=5)
    ax.set_yticks(range(len(order)), labels, fontsize=5)
    fig.colorbar(im, ax=ax, label="|Spearman ρ|")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------- CNN projection
def embedding_projection(run: RunData, method: str = "pca", max_rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """2D projection of the ``cnn_*`` embeddings of labeled training rows (median-imputed, standardised).

    ``method``: "pca" (sklearn PCA) or "tsne" (sklearn TSNE, PCA-initialised). Columns: ``c1, c2, grade,
    group, condition, level``; ``attrs["explained"]`` holds PCA's explained variance ratios.
    """
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.manifold import TSNE
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cols = [c for c in run.train.columns if c.startswith("cnn_")]
    if len(cols) < 2:
        raise DatasetError(f"{run.root}: fewer than 2 cnn_* columns in the training features (CNN disabled?)")
    lab = run.labeled
    if len(lab) > max_rows:
        lab = lab.iloc[np.sort(np.random.default_rng(seed).choice(len(lab), max_rows, replace=False))]
    x = make_pipeline(SimpleImputer(strategy="median"), StandardScaler()).fit_transform(lab[cols].to_numpy(float))
    if method == "pca":
        pca = PCA(n_components=2, random_state=seed)
        xy = pca.fit_transform(x)
        explained = [float(v) for v in pca.explained_variance_ratio_]
    elif method == "tsne":
        xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, max(5.0, len(x) / 10))).fit_transform(x)
        explained = []
    else:
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    out = pd.DataFrame({"c1": xy[:, 0], "c2": xy[:, 1], "grade": lab["grade"].astype(int).to_numpy(),
                        "group": lab["group"].to_numpy(), "condition": lab["condition"].to_numpy(),
                        "level": lab["level"].to_numpy()})
    out.attrs["explained"] = explained
    out.attrs["method"] = method
    return out


def plot_embedding_projection(proj: pd.DataFrame):
    """Scatter of the projection per condition group, coloured by grade (severe drawn on top)."""
    fig = NotebookFigure(figsize=(15, 4.6))
    axes = fig.subplots(1, len(GROUPS))
    ex = proj.attrs.get("explained") or []
    for ax, g in zip(axes, GROUPS, strict=True):
        d = proj[proj["group"] == g]
        for k in range(3):
            s = d[d["grade"] == k]
            ax.scatter(s["c1"], s["c2"], s=8 + 6 * k, color=GRADE_COLORS[k], alpha=0.7, label=f"{SEVERITIES[k]} ({len(s)})")
        ax.set_title(g)
        ax.legend(fontsize=7)
        m = proj.attrs.get("method", "pca").upper()
        ax.set_xlabel(f"{m} 1" + (f" ({ex[0]:.0%})" if ex else ""))
        ax.set_ylabel(f"{m} 2" + (f" ({ex[1]:.0%})" if ex else ""))
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------- calibration
def _heldout(run: RunData) -> pd.DataFrame:
    if run.predictions is None or run.predictions["true_grade"].notna().sum() == 0:
        raise DatasetError(f"{run.root}: no held-out predictions with true grades (predictions.csv + data/test_solution.csv)")
    p = run.predictions[run.predictions["true_grade"].notna()].copy()
    p["group"] = p["condition"].map(CONDITION_GROUP)
    p["side"] = p["condition"].map(lambda c: CONDITION_SIDE[c] or "none")
    return p


def calibration_table(run: RunData, n_bins: int = 6) -> pd.DataFrame:
    """Reliability of held-out probabilities per group and grade (one-vs-rest, quantile bins, sklearn).

    Columns: ``group, grade, mean_predicted, observed, ece`` where ``ece`` is the group's top-label
    expected calibration error (:func:`radspine.models.calibrate.expected_calibration_error`).
    """
    from sklearn.calibration import calibration_curve

    from radspine.models.calibrate import expected_calibration_error

    p = _heldout(run)
    rows = []
    for g in GROUPS:
        d = p[p["group"] == g]
        if len(d) < 2:
            continue
        ece = expected_calibration_error(d[list(SEVERITY_COLUMNS)].to_numpy(), d["true_grade"].to_numpy())
        for k, col in enumerate(SEVERITY_COLUMNS):
            y = (d["true_grade"] == k).astype(int).to_numpy()
            if y.min() == y.max():
                continue  # a grade absent (or alone) in the held-out rows has no curve
            obs, pred = calibration_curve(y, d[col].to_numpy(), n_bins=n_bins, strategy="quantile")
            rows.extend((g, SEVERITIES[k], float(m), float(o), ece) for o, m in zip(obs, pred, strict=True))
    return pd.DataFrame(rows, columns=["group", "grade", "mean_predicted", "observed", "ece"])


def plot_calibration(cal: pd.DataFrame):
    """Reliability curves: one panel per group, one line per grade; the diagonal is perfect calibration."""
    fig = NotebookFigure(figsize=(15, 4.6))
    axes = fig.subplots(1, len(GROUPS))
    for ax, g in zip(axes, GROUPS, strict=True):
        ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
        for k, s in enumerate(SEVERITIES):
            d = cal[(cal["group"] == g) & (cal["grade"] == s)]
            if not d.empty:
                ax.plot(d["mean_predicted"], d["observed"], marker="o", color=GRADE_COLORS[k], label=s)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        e = cal.loc[cal["group"] == g, "ece"]
        ax.set_title(f"{g} (held-out)" + (f" · top-label ECE {e.iloc[0]:.3f}" if len(e) else ""))
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed frequency")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------------------------------- errors
def row_errors(run: RunData) -> pd.DataFrame:
    """Held-out rows with per-row weighted log loss (metric weights 1/2/4), hit (argmax = truth) and grade error."""
    from radspine.metrics import normalise_probs

    p = _heldout(run)
    probs = normalise_probs(p[list(SEVERITY_COLUMNS)].to_numpy())
    t = p["true_grade"].astype(int).to_numpy()
    p["weight"] = np.asarray(SEVERITY_WEIGHTS)[t]
    p["logloss"] = -np.log(probs[np.arange(len(t)), t])
    p["hit"] = probs.argmax(axis=1) == t
    p["abs_error"] = np.abs(p["expected_severity"].to_numpy() - _grade_centre(t))
    return p


def _grade_centre(g: np.ndarray) -> np.ndarray:
    """The continuous-severity value of a certain grade (0, 0.5, 1), as predict's expected severity uses."""
    from radspine.predict import SEVERITY_SCALE

    return SEVERITY_SCALE[np.asarray(g, dtype=int)]


def errors_by(run: RunData, by: str) -> pd.DataFrame:
    """Held-out error summary grouped by ``by`` ("level", "side", "group" or "condition").

    Columns: ``n, weighted_logloss`` (Σw·loss / Σw, the metric's per-row form), ``accuracy``,
    ``mean_abs_severity_error`` (|expected severity − grade centre|) and ``severe_rate``.
    """
    e = row_errors(run)
    if by not in ("level", "side", "group", "condition"):
        raise ValueError(f"by must be level, side, group or condition, got {by!r}")
    g = e.groupby(by, sort=False)
    out = pd.DataFrame({
        "n": g.size(),
        "weighted_logloss": g.apply(lambda d: float((d["weight"] * d["logloss"]).sum() / d["weight"].sum()),
                                    include_groups=False),
        "accuracy": g["hit"].mean(),
        "mean_abs_severity_error": g["abs_error"].mean(),
        "severe_rate": g["true_grade"].apply(lambda s: float((s == 2).mean())),
    })
    if by == "level":
        out = out.reindex([lv for lv in LEVELS if lv in out.index]).rename(index=LEVEL_NAMES)
    return out


def plot_errors(by_level: pd.DataFrame, by_side: pd.DataFrame):
    """Weighted log loss and accuracy by level and by side."""
    fig = NotebookFigure(figsize=(13, 4))
    axes = fig.subplots(1, 2)
    for ax, d, title in ((axes[0], by_level, "by level"), (axes[1], by_side, "by side")):
        x = np.arange(len(d))
        ax.bar(x - 0.2, d["weighted_logloss"], width=0.4, color="#0072B2", label="weighted log loss")
        ax2 = ax.twinx()
        ax2.bar(x + 0.2, d["accuracy"], width=0.4, color="#999999", label="accuracy")
        ax2.set_ylim(0, 1)
        ax.set_xticks(x, [f"{i}\n(n={n})" for i, n in zip(d.index, d["n"], strict=True)], fontsize=8)
        ax.set_ylabel("weighted log loss (lower is better)")
        ax2.set_ylabel("accuracy")
        ax.set_title(f"held-out errors {title}")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------------------- continuous severity
def severity_agreement(run: RunData, missing_ok: bool = False) -> pd.DataFrame:
    """Expected severity vs the phantom's latent severity per group: Spearman ρ, MAE, and the share of rows
    whose expected severity falls in the true grade's band (0–1/3, 1/3–2/3, 2/3–1).

    Without ``data/synth_truth.csv`` (real data, example runs): DatasetError, or with ``missing_ok`` a
    one-cell table (column ``note``) that says why.
    """
    from scipy.stats import spearmanr

    if run.predictions is None or run.truth is None or run.truth.empty:
        why = f"{run.root}: no data/synth_truth.csv for the predicted studies (phantom demo only)"
        if not missing_ok:
            raise DatasetError(why)
        empty = pd.DataFrame({"note": ["no data/synth_truth.csv for these studies (phantom demo only)"]})
        empty.attrs.update(note=why, rows=pd.DataFrame())
        return empty
    m = run.predictions.merge(run.truth[["study_id", "condition", "level", "severity"]],
                              on=["study_id", "condition", "level"], how="inner")
    m["group"] = m["condition"].map(CONDITION_GROUP)
    lo, hi = SEVERITY_THRESHOLDS
    band = np.digitize(m["expected_severity"], [lo, hi])
    true_band = np.digitize(m["severity"], [lo, hi])
    m["in_band"] = band == true_band
    rows = {}
    for g in ("all", *GROUPS):
        d = m if g == "all" else m[m["group"] == g]
        if len(d) < 3:
            continue
        rows[g] = {
            "n": len(d),
            "spearman": float(spearmanr(d["expected_severity"], d["severity"]).statistic),
            "mae": float(np.abs(d["expected_severity"] - d["severity"]).mean()),
            "in_true_band": float(d["in_band"].mean()),
        }
    out = pd.DataFrame(rows).T
    out.attrs["rows"] = m
    return out


def plot_severity(agreement: pd.DataFrame):
    """Scatter of expected vs latent severity per group, with the grade bands drawn."""
    m = agreement.attrs["rows"]
    fig = NotebookFigure(figsize=(15, 4.6))
    if m.empty:
        fig.text(0.5, 0.5, agreement.attrs.get("note", "no data"), ha="center", va="center")
        return fig
    axes = fig.subplots(1, len(GROUPS))
    lo, hi = SEVERITY_THRESHOLDS
    for ax, g in zip(axes, GROUPS, strict=True):
        d = m[m["group"] == g]
        grade = np.digitize(d["severity"], [lo, hi])
        ax.scatter(d["severity"], d["expected_severity"], s=10, c=[GRADE_COLORS[k] for k in grade], alpha=0.7)
        for t in (lo, hi):
            ax.axvline(t, color="gray", linewidth=0.8, linestyle=":")
            ax.axhline(t, color="gray", linewidth=0.8, linestyle=":")
        ax.plot([0, 1], [0, 1], color="gray", linewidth=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        rho = agreement.loc[g, "spearman"] if g in agreement.index else float("nan")
        ax.set_title(f"{g}: Spearman ρ {rho:.2f}")
        ax.set_xlabel("phantom latent severity (truth)")
        ax.set_ylabel("predicted expected severity")
    fig.tight_layout()
    return fig
