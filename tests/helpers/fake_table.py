"""A realistic fake feature table + labels, FOR TESTS AND BENCHMARKS ONLY (never used on real data).

It mimics what ``radspine extract-features`` writes (25 rows per study, ``rad_* cnn_* ctx_* geo_* has_*``
columns, NaNs) with grades whose per condition × level frequencies and missing rates follow the real
RSNA 2024 label statistics (shared/reference/rsna2024_label_stats.json, copied below). Grades come from a
latent severity ``0.6·study factor + 0.8·noise`` cut at the real class frequencies, so levels of a study
are correlated (the any-severe term and context features matter). A few features per group see that latent
through noise; most are pure noise.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from radspine.constants import (
    CONDITION_GROUP,
    CONDITION_SIDE,
    CONDITIONS,
    LABEL_COLUMNS,
    LEVELS,
    SEVERITIES,
    row_id,
)

# (Normal/Mild, Moderate, Severe, missing) counts per train.csv column, 1975 real studies; one copy
# of the reference table lives with the phantom that must follow it.
from radspine.synth.label_stats import LABEL_COUNTS as REAL_LABEL_COUNTS  # noqa: E402

# Which group each informative radiomics column sees, and its noise sd (smaller = stronger signal).
_RAD_SIGNAL: dict[str, tuple[str, float]] = {
    "rad_sagt2_original_glcm_Contrast": ("spinal", 0.7),
    "rad_sagt1_original_firstorder_Mean": ("foraminal", 0.7),
    "rad_axt2_original_glszm_ZoneEntropy": ("subarticular", 0.7),
    "rad_axt2_original_shape_Area": ("spinal", 1.2),
}
_SERIES = ("sagt1", "sagt2", "axt2")
_CLASSES = ("firstorder", "glcm", "glrlm", "glszm", "ngtdm")


def make_fake_table(
    n_studies: int = 40,
    *,
    seed: int = 0,
    n_rad_noise: int = 30,
    n_cnn: int = 16,
    nan_rate: float = 0.02,
    first_study_id: int = 1000,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fake ``features.parquet`` table and long labels ``[study_id, condition, level, grade]``.

    Same arguments → identical outputs. ``cnn_0`` and ``cnn_1`` carry signal for every group, the other
    ``cnn_*`` are noise; ``ctx_*`` summarise noisy signals of the study / neighbouring levels.
    """
    rng = np.random.default_rng(seed)
    studies = np.arange(first_study_id, first_study_id + n_studies)
    keys = [(s, c, lv) for s in studies for c in CONDITIONS for lv in LEVELS]
    n = len(keys)
    df = pd.DataFrame(keys, columns=["study_id", "condition", "level"])
    df["side"] = df["condition"].map(lambda c: CONDITION_SIDE[c] or "none")
    df["group"] = df["condition"].map(CONDITION_GROUP)
    df["row_id"] = [row_id(s, c, lv) for s, c, lv in keys]
    study_idx = np.repeat(np.arange(n_studies), 25)

    u = rng.normal(size=n_studies)
    latent = 0.6 * u[study_idx] + 0.8 * rng.normal(size=n)
    col = [f"{c}_{lv}" for c, lv in zip(df["condition"], df["level"], strict=True)]
    counts = np.array([REAL_LABEL_COUNTS[c] for c in col], dtype=float)
    labeled_counts = counts[:, :3]
    frac = labeled_counts / labeled_counts.sum(axis=1, keepdims=True)
    t1 = norm.ppf(frac[:, 0])
    t2 = norm.ppf(frac[:, 0] + frac[:, 1])
    grade = (latent > t1).astype(float) + (latent > t2).astype(float)
    missing = rng.random(n) < counts[:, 3] / counts.sum(axis=1)
    grade[missing] = np.nan

    # Standardise the latent relative to each row's thresholds so features carry "how close to moderate".
    z = latent - t1
    has = {
        s: (rng.random(n_studies) > p).astype(float)
        for s, p in zip(_SERIES, (0.005, 0.005, 0.03), strict=True)
    }
    feats: dict[str, np.ndarray] = {}
    grp = df["group"].to_numpy()
    for name, (g, sd) in _RAD_SIGNAL.items():
        feats[name] = np.where(grp == g, z, 0.0) + rng.normal(scale=sd, size=n)
    for k in range(n_rad_noise):
        s = _SERIES[k % 3]
        feats[f"rad_{s}_original_{_CLASSES[k % 5]}_Noise{k}"] = rng.normal(size=n) * (1 + k % 4)
    for k in range(n_cnn):
        if k == 0:
            feats["cnn_0"] = z + rng.normal(scale=1.0, size=n)
        elif k == 1:
            feats["cnn_1"] = 0.5 * z + rng.normal(scale=1.0, size=n)
        else:
            feats[f"cnn_{k}"] = rng.normal(size=n)
    obs = z + rng.normal(scale=1.0, size=n)
    feats["ctx_study_mean"] = pd.Series(obs).groupby(study_idx).transform("mean").to_numpy()
    lvl = df["level"].map({lv: i for i, lv in enumerate(LEVELS)}).to_numpy()
    key = pd.DataFrame({"s": study_idx, "c": df["condition"], "l": lvl, "o": obs})
    nb = key.set_index(["s", "c", "l"])["o"]
    up = nb.reindex(pd.MultiIndex.from_arrays([study_idx, df["condition"], lvl - 1])).to_numpy()
    down = nb.reindex(pd.MultiIndex.from_arrays([study_idx, df["condition"], lvl + 1])).to_numpy()
    feats["ctx_neighbour_mean"] = np.nanmean(np.vstack([up, down]), axis=0)
    feats["geo_z_mm"] = (
        -35.0 * lvl + rng.normal(scale=3.0, size=n) + rng.normal(scale=10, size=n_studies)[study_idx]
    )
    feats["geo_x_mm"] = df["side"].map({"left": 15.0, "right": -15.0, "none": 0.0}).to_numpy() + rng.normal(
        scale=2.0, size=n
    )
    feats["geo_conf"] = rng.beta(5, 1, size=n)
    for s in _SERIES:
        feats[f"has_{s}"] = has[s][study_idx]

    out = pd.concat([df, pd.DataFrame(feats)], axis=1)
    num = [c for c in feats if not c.startswith("has_")]
    vals = out[num].to_numpy().copy()
    vals[rng.random(vals.shape) < nan_rate] = np.nan
    for s in _SERIES:
        # A missing series leaves its radiomics columns empty, as extract-features would.
        cols = [i for i, c in enumerate(num) if c.startswith(f"rad_{s}_")]
        absent = has[s][study_idx] == 0
        vals[np.ix_(absent, cols)] = np.nan
    out[num] = vals
    labels = df[["study_id", "condition", "level"]].copy()
    labels["grade"] = grade
    return out, labels


def labels_to_train_csv(labels: pd.DataFrame) -> pd.DataFrame:
    """Long labels → a competition-style wide ``train.csv`` frame (grade names, blank when NaN)."""
    lab = labels.copy()
    lab["col"] = lab["condition"] + "_" + lab["level"]
    lab["name"] = lab["grade"].map(lambda g: SEVERITIES[int(g)] if pd.notna(g) else np.nan)
    wide = lab.pivot(index="study_id", columns="col", values="name").reindex(columns=list(LABEL_COLUMNS))
    return wide.reset_index()


def write_fake_workdir(
    features_dir: Path, data_dir: Path, n_studies: int = 40, *, seed: int = 0, **kwargs: object
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``features.parquet`` + ``meta.json`` in ``features_dir`` and ``train.csv`` in ``data_dir``."""
    table, labels = make_fake_table(n_studies, seed=seed, **kwargs)  # type: ignore[arg-type]
    features_dir, data_dir = Path(features_dir), Path(data_dir)
    features_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    table.to_parquet(features_dir / "features.parquet", index=False)
    meta = {
        "config_hash": f"fake-{seed}",
        "radspine_version": "fake",
        "n_studies": n_studies,
        "backbone": "fake",
    }
    fd, tmp = tempfile.mkstemp(dir=features_dir, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(meta, fh)
    os.replace(tmp, features_dir / "meta.json")
    labels_to_train_csv(labels).to_csv(data_dir / "train.csv", index=False)
    return table, labels


def fit_quick_bundle(
    out: str | Path,
    table: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    n_estimators: int = 60,
    min_child_samples: int = 10,
    seed: int = 0,
    blend_weights: dict[str, float] | None = None,
    meta: dict | None = None,
    report: dict | None = None,
) -> list[str]:
    """Write a small untuned bundle (LightGBM + XGBoost per group, fixed params and blend, no calibration).

    For tests, examples and benchmarks only: a real bundle comes from :func:`radspine.models.tune.tune`.
    Returns the feature list.
    """
    from radspine.features.schema import feature_columns
    from radspine.models.bundle import save_bundle
    from radspine.models.estimator import GradeClassifier, TableGrader
    from radspine.models.severity import SeverityModel
    from radspine.models.tune import align_grades

    feats = feature_columns(table)
    graders = {
        b: TableGrader(
            GradeClassifier(b, n_estimators=n_estimators, num_leaves=7, max_depth=3,
                            min_child_samples=min_child_samples, n_jobs=1, random_state=seed),
            feats, "per_group",
        )
        for b in ("lightgbm", "xgboost")
    }
    weights = blend_weights or {g: 0.5 for g in ("spinal", "foraminal", "subarticular")}
    model = SeverityModel(graders, blend_weights=weights, calibration="none", seed=seed)
    model.fit(table, align_grades(table, labels))
    save_bundle(out, model=model, meta=meta or {"config_hash": "fake"}, report=report or {})
    return feats


def write_example_run(out: str | Path, n_train: int = 40, n_test: int = 10, seed: int = 0) -> Path:
    """A demo-shaped folder from FAKE feature tables: for tests and for trying the notebook without
    running the demo. Never real data; no images, so no study reports.

    Writes ``work/train/features.parquet`` + ``meta.json``, ``data/train.csv``, ``data/test_solution.csv``,
    ``model/`` (LightGBM + XGBoost per group, fitted directly with fixed small params, no calibration) and
    ``predictions.csv``. Same arguments → identical files.
    """
    from radspine.constants import SEVERITY_COLUMNS
    from radspine.fsutil import write_csv_atomic, write_json_atomic, write_parquet_atomic
    from radspine.metrics import solution_from_labels
    from radspine.models.bundle import Bundle
    from radspine.predict import expected_severity

    out = Path(out)
    train, labels = make_fake_table(n_train, seed=seed, n_rad_noise=12, n_cnn=8)
    test, test_labels = make_fake_table(n_test, seed=seed + 1, n_rad_noise=12, n_cnn=8,
                                        first_study_id=1000 + n_train)
    meta = {"config_hash": f"example-{seed}", "backbone": "fake", "n_studies": n_train}
    write_parquet_atomic(train, out / "work" / "train" / "features.parquet")
    write_json_atomic(out / "work" / "train" / "meta.json", meta)
    write_csv_atomic(labels_to_train_csv(labels), out / "data" / "train.csv")
    write_csv_atomic(solution_from_labels(test_labels), out / "data" / "test_solution.csv")
    fit_quick_bundle(out / "model", train, labels, n_estimators=60, seed=seed, meta=meta,
                     report={"note": "example run from fake tables"})
    probs = Bundle.load(out / "model").predict_proba(test)
    probs["expected_severity"] = expected_severity(probs[list(SEVERITY_COLUMNS)].to_numpy())
    probs = probs.merge(test[["row_id", "study_id", "condition", "level"]], on="row_id")
    write_csv_atomic(probs, out / "predictions.csv", float_format="%.6f")
    write_csv_atomic(probs[["row_id", *SEVERITY_COLUMNS]], out / "submission.csv", float_format="%.6f")
    return out
