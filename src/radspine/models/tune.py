"""``radspine tune``: Optuna-tuned LightGBM + XGBoost graders, blended and calibrated on out-of-fold predictions.

Pipeline: load features + labels → study-grouped, grade-stratified folds → CV decision per-group vs pooled
(default LightGBM params) → one Optuna TPE study per backend (objective = competition metric on OOF
predictions; the running metric is reported after every fold so the MedianPruner can stop bad trials) →
blend weights per group on OOF → calibration chosen by cross-fitted metric → ablations (priors-only,
radiomics-only, CNN-only, merged; before/after calibration) → final fit on all labeled rows → model bundle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from radspine.constants import (
    CONDITIONS,
    GROUPS,
    LABEL_COLUMNS,
    LEVELS,
    SEVERITY_COLUMNS,
)
from radspine.errors import DatasetError, ModelError
from radspine.features.schema import (
    FOLD_COLUMN,
    SHARED_PREFIXES,
    feature_columns,
    read_table,
)
from radspine.metrics import MetricResult, priors_predictions, priors_table, score_arrays
from radspine.models.calibrate import (
    expected_calibration_error,
    reliability_diagram,
    select_calibration,
)
from radspine.models.estimator import BACKENDS, GradeClassifier, TableGrader

log = logging.getLogger(__name__)



@dataclass
class TuneOptions:
    """Settings of one tuning run (CLI flags map 1:1)."""

    trials: int = 20  # total over both backends (split evenly, LightGBM gets the odd one)
    timeout: float | None = None  # seconds for all Optuna trials together
    storage: str | None = None  # Optuna storage URL; default sqlite:///MODELDIR/optuna.db
    study_name: str = "radspine"
    folds: int = 3
    seed: int = 0
    n_jobs: int = 2  # threads per model; 300-study phantom table, 50 trials: 1 → 736 s, 2 → 483 s (2 idle cores)
    backends: tuple[str, ...] = BACKENDS
    max_rounds: int = 300
    early_stopping_rounds: int = 20
    ablations: bool = True
    plots: bool = True


# ----------------------------------------------------------------------------------------------- inputs
def load_features(features_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read ``features.parquet`` (schema-checked) + ``meta.json`` from a workdir; DatasetError naming the file."""
    d = Path(features_dir)
    mp = d / "meta.json"
    table = read_table(d / "features.parquet")
    if not mp.is_file():
        raise DatasetError(f"{mp}: not found (run `radspine extract-features` first)")
    try:
        meta = json.loads(mp.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{mp}: invalid JSON: {err}") from None
    if "config_hash" not in meta:
        raise DatasetError(f"{mp}: missing 'config_hash'")
    return table, meta


def load_labels(data_dir: str | Path) -> pd.DataFrame:
    """Long labels ``[study_id, condition, level, grade]`` of a competition-layout folder (radspine.io).

    A folder holding only ``train.csv`` (no image folders) is accepted too: tuning needs nothing else.
    """
    from radspine.io.dataset import Dataset

    d = Path(data_dir)
    try:
        labels = Dataset.open(d).labels_long()
    except DatasetError:
        if not (d / "train.csv").is_file():
            raise
        return read_train_csv(d / "train.csv")
    if labels.empty:
        raise DatasetError(f"{d}: no labels (train.csv absent)")
    return labels[["study_id", "condition", "level", "grade"]]


def read_train_csv(path: str | Path) -> pd.DataFrame:
    """Competition ``train.csv`` → long labels with float grades 0/1/2 (NaN when blank), via radspine.io."""
    from radspine.io.dataset import read_train_csv as read_wide

    wide = read_wide(Path(path))
    long = wide.melt(id_vars="study_id", value_vars=list(LABEL_COLUMNS), var_name="col", value_name="grade")
    split = {f"{c}_{lv}": (c, lv) for c in CONDITIONS for lv in LEVELS}
    long["condition"] = long["col"].map(lambda c: split[c][0])
    long["level"] = long["col"].map(lambda c: split[c][1])
    long["study_id"] = long["study_id"].astype(int)
    return long[["study_id", "condition", "level", "grade"]]


def align_grades(table: pd.DataFrame, labels: pd.DataFrame) -> np.ndarray:
    """Grade per table row (float, NaN when unlabeled or the study has no labels)."""
    key = ["study_id", "condition", "level"]
    lab = labels[[*key, "grade"]].drop_duplicates(key)
    merged = table[key].merge(lab, on=key, how="left")
    return merged["grade"].to_numpy(dtype=float)


def feature_sets(table: pd.DataFrame) -> dict[str, list[str]]:
    """The ablation feature sets: merged, radiomics_only (rad+shared), cnn_only (cnn+shared); empty sets dropped."""
    sets = {
        "merged": feature_columns(table),
        "radiomics_only": feature_columns(table, ("rad_", *SHARED_PREFIXES)),
        "cnn_only": feature_columns(table, ("cnn_", *SHARED_PREFIXES)),
    }
    out = {"merged": sets["merged"]}
    if feature_columns(table, ("rad_",)):
        out["radiomics_only"] = sets["radiomics_only"]
    if feature_columns(table, ("cnn_",)):
        out["cnn_only"] = sets["cnn_only"]
    return out


def assign_folds(table: pd.DataFrame, grades: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold per row: the table's ``cv_fold`` (the folds the CNN embeddings were fitted on) when present,
    else studies kept whole and folds stratified by grade (:func:`radspine.folds.study_folds`).

    Reusing the extraction's folds is what keeps the CV honest: a grader's validation fold then never
    holds CNN features from a network that trained on its studies.
    """
    from radspine.folds import study_folds

    if FOLD_COLUMN in table.columns and table[FOLD_COLUMN].notna().all():
        folds = table[FOLD_COLUMN].to_numpy().astype(int)
        n = len(np.unique(folds))
        if n != k:
            log.warning("using the feature table's %d CNN folds (%s), not --folds %d", n, FOLD_COLUMN, k)
        lab_studies = np.unique(table["study_id"].to_numpy()[~np.isnan(grades)])
        if len(lab_studies) < n:
            raise DatasetError(f"need at least {n} labeled studies for {n}-fold CV, have {len(lab_studies)}")
        return folds
    return study_folds(table, grades, k, seed)


# --------------------------------------------------------------------------------------------- CV core
@dataclass
class CVData:
    """Everything a CV loop needs, computed once."""

    table: pd.DataFrame
    grades: np.ndarray  # float, NaN unlabeled
    folds: np.ndarray
    labeled: np.ndarray = field(init=False)
    groups: np.ndarray = field(init=False)
    studies: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.labeled = ~np.isnan(self.grades)
        self.groups = self.table["group"].to_numpy()
        self.studies = self.table["study_id"].to_numpy()

    def score(self, probs: np.ndarray, rows: np.ndarray | None = None) -> MetricResult:
        """Metric of (n, 3) ``probs`` (aligned with the table) on labeled rows (optionally a subset)."""
        m = self.labeled if rows is None else (self.labeled & rows)
        return score_arrays(self.grades[m].astype(int), probs[m], self.groups[m], self.studies[m])


def oof_predict(
    make_grader: Callable[[], TableGrader],
    data: CVData,
    on_fold: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
) -> np.ndarray:
    """Out-of-fold (n, 3) probabilities; ``on_fold(i, oof_so_far, done_mask)`` runs after each fold."""
    oof = np.full((len(data.table), 3), np.nan)
    done = np.zeros(len(data.table), bool)
    for i, k in enumerate(np.unique(data.folds)):
        te = data.folds == k
        tr = ~te & data.labeled
        grader = make_grader().fit(data.table[tr], data.grades[tr])
        oof[te] = grader.predict_proba(data.table[te])
        done |= te
        if on_fold is not None:
            on_fold(i, oof, done)
    return oof


def oof_priors(data: CVData) -> np.ndarray:
    """Out-of-fold priors-only predictions (priors fitted on the training folds' labels)."""
    oof = np.zeros((len(data.table), 3))
    for k in np.unique(data.folds):
        te = data.folds == k
        tr = ~te & data.labeled
        labels = data.table.loc[tr, ["study_id", "condition", "level"]].assign(grade=data.grades[tr])
        pred = priors_predictions(priors_table(labels), data.table.loc[te, "row_id"])
        oof[te] = pred[list(SEVERITY_COLUMNS)].to_numpy()
    return oof


def base_estimator(backend: str, params: dict, opts: TuneOptions) -> GradeClassifier:
    """A GradeClassifier with fixed run settings (threads, rounds, seed) and tuned ``params``."""
    est = GradeClassifier(
        backend=backend,
        n_estimators=opts.max_rounds,
        early_stopping_rounds=opts.early_stopping_rounds,
        n_jobs=opts.n_jobs,
        random_state=opts.seed,
    )
    return est.set_params(**params)


def search_space(trial, backend: str) -> dict:
    """Optuna search space per backend (names are GradeClassifier parameters)."""
    p = {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 7),
        "min_child_weight": trial.suggest_float("min_child_weight", 1e-3, 10.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample": trial.suggest_float("colsample", 0.3, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
        "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 10.0, log=True),
    }
    if backend == "lightgbm":
        p["num_leaves"] = trial.suggest_int("num_leaves", 4, 48, log=True)
        p["min_child_samples"] = trial.suggest_int("min_child_samples", 5, 80, log=True)
    return p


def _fingerprint(data: CVData, features: list[str], opts: TuneOptions) -> str:
    """Hash of what makes trial values comparable (rows, labels, folds, features, fixed settings)."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(data.table["row_id"], index=False).values.tobytes())
    h.update(np.nan_to_num(data.grades, nan=-1).tobytes())
    h.update(data.folds.tobytes())
    h.update(json.dumps([features, opts.max_rounds, opts.early_stopping_rounds, opts.seed]).encode())
    return h.hexdigest()[:16]


def run_study(
    backend: str,
    data: CVData,
    features: list[str],
    mode: str,
    opts: TuneOptions,
    n_trials: int,
    timeout: float | None,
    storage: str,
):
    """Create or resume the Optuna study ``<study_name>-<backend>`` and run ``n_trials`` more trials."""
    import optuna

    name = f"{opts.study_name}-{backend}"
    fp = _fingerprint(data, features, opts)
    probe = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
    old = probe.user_attrs.get("fingerprint")
    if old is not None and (old != fp or probe.user_attrs.get("mode") != mode):
        raise ModelError(
            f"study {name!r} in {storage} was run on other data/folds/settings; "
            "use a new --study-name (or the same inputs) to resume"
        )
    # Seed the sampler with the trial count so a resumed study does not replay the first random trials.
    sampler = optuna.samplers.TPESampler(seed=opts.seed + len(probe.trials), n_startup_trials=5)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    study.set_user_attr("fingerprint", fp)
    study.set_user_attr("mode", mode)
    study.set_user_attr("backend", backend)

    def objective(trial) -> float:
        params = search_space(trial, backend)

        def report(i: int, oof: np.ndarray, done: np.ndarray) -> None:
            trial.report(data.score(oof, done).score, step=i)
            if trial.should_prune():
                raise optuna.TrialPruned()

        oof = oof_predict(
            lambda: TableGrader(base_estimator(backend, params, opts), features, mode), data, report
        )
        res = data.score(oof)
        for t, v in res.terms().items():
            trial.set_user_attr(t, v)
        return res.score

    if n_trials > 0:
        study.optimize(objective, n_trials=n_trials, timeout=timeout, gc_after_trial=False)
    return study


def fit_blend(p_a: np.ndarray, p_b: np.ndarray, data: CVData, step: float = 0.05) -> dict[str, float]:
    """Weight of ``p_a`` per group (``p_b`` gets 1 − w) minimising the OOF metric on a grid.

    Groups are separable in the metric (the spinal weight also drives any_severe_spinal), so one pass of
    per-group grid search finds the joint optimum on the grid.
    """
    grid = np.round(np.arange(0.0, 1.0 + 1e-9, step), 4)
    weights = dict.fromkeys(GROUPS, 0.5)
    for g in GROUPS:
        best = (np.inf, 0.5)
        for w in grid:
            weights[g] = float(w)
            s = data.score(blend(p_a, p_b, data.groups, weights)).score
            if s < best[0] - 1e-12:
                best = (s, float(w))
        weights[g] = best[1]
    return weights


def blend(p_a: np.ndarray, p_b: np.ndarray, groups: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """Per-group convex combination w·p_a + (1 − w)·p_b."""
    w = np.array([weights.get(g, 0.5) for g in groups])[:, None]
    return w * p_a + (1 - w) * p_b


# -------------------------------------------------------------------------------------------- the run
def tune(
    table: pd.DataFrame,
    labels: pd.DataFrame,
    out_dir: str | Path,
    meta: dict,
    opts: TuneOptions | None = None,
) -> dict:
    """Tune, blend, calibrate, ablate, fit on all rows and write the model bundle to ``out_dir``.

    Returns:
        The ``cv_report.json`` content.
    """
    from threadpoolctl import threadpool_limits

    opts = opts or TuneOptions()
    # BLAS/OpenMP pools sized to the machine spin and crawl on a shared CPU; cap them to n_jobs.
    with threadpool_limits(limits=opts.n_jobs):
        return _tune(table, labels, out_dir, meta, opts)


def _tune(
    table: pd.DataFrame, labels: pd.DataFrame, out_dir: str | Path, meta: dict, opts: TuneOptions
) -> dict:
    from radspine.models.bundle import save_bundle

    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = opts.storage or f"sqlite:///{(out / 'optuna.db').resolve()}"
    grades = align_grades(table, labels)
    if np.isnan(grades).all():
        raise DatasetError("no labeled rows: features and labels share no (study_id, condition, level)")
    data = CVData(table, grades, assign_folds(table, grades, opts.folds, opts.seed))
    sets = feature_sets(table)
    features = sets["merged"]
    report: dict = {
        "n_studies": int(table["study_id"].nunique()),
        "n_labeled_rows": int(data.labeled.sum()),
        "folds": opts.folds,
        "seed": opts.seed,
        "backbone": meta.get("backbone"),
        "feature_config_hash": meta.get("config_hash"),
        "n_features": len(features),
        "storage": storage if opts.storage else "sqlite:///MODELDIR/optuna.db",
    }
    timings: dict[str, float] = {}

    # 1. one model per group vs one pooled model, same default LightGBM params.
    t0 = time.perf_counter()
    mode_scores = {
        mode: data.score(
            oof_predict(
                lambda mode=mode: TableGrader(base_estimator("lightgbm", {}, opts), features, mode), data
            )
        )
        for mode in ("per_group", "pooled")
    }
    mode = min(mode_scores, key=lambda m: mode_scores[m].score)
    other = "pooled" if mode == "per_group" else "per_group"
    report["mode_selection"] = {
        "compared_with": "LightGBM default params, OOF metric",
        **{m: r.as_dict() for m, r in mode_scores.items()},
        "winner": mode,
        "margin": mode_scores[other].score - mode_scores[mode].score,
    }
    timings["mode_selection_s"] = time.perf_counter() - t0
    log.info("mode: %s wins by %.4f", mode, report["mode_selection"]["margin"])

    # 2. Optuna per backend.
    t0 = time.perf_counter()
    backends = [b for b in BACKENDS if b in opts.backends]
    n_per = {
        b: opts.trials // len(backends) + (1 if i < opts.trials % len(backends) else 0)
        for i, b in enumerate(backends)
    }
    best_params: dict[str, dict] = {}
    report["tuning"] = {}
    for b in backends:
        tb = None if opts.timeout is None else opts.timeout * n_per[b] / max(opts.trials, 1)
        study = run_study(b, data, features, mode, opts, n_per[b], tb, storage)
        states = [t.state.name for t in study.trials]
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        best_params[b] = dict(study.best_trial.params) if complete else {}
        report["tuning"][b] = {
            "study_name": study.study_name,
            "n_trials_total": len(study.trials),
            "n_complete": states.count("COMPLETE"),
            "n_pruned": states.count("PRUNED"),
            "best_value": study.best_value if complete else None,
            "best_params": best_params[b],
        }
    timings["tuning_s"] = time.perf_counter() - t0

    # 3. OOF of the best params, blend, calibration.
    t0 = time.perf_counter()
    oofs = {
        b: oof_predict(lambda b=b: TableGrader(base_estimator(b, best_params[b], opts), features, mode), data)
        for b in backends
    }
    if len(backends) == 2:
        weights = fit_blend(oofs["lightgbm"], oofs["xgboost"], data)
        merged = blend(oofs["lightgbm"], oofs["xgboost"], data.groups, weights)
    else:
        weights = dict.fromkeys(GROUPS, 1.0 if backends[0] == "lightgbm" else 0.0)
        merged = oofs[backends[0]]
    report["blend"] = {
        "weight_lightgbm": weights,
        "note": "fitted on the same OOF predictions it is scored on",
    }

    lab = data.labeled
    g_lab = data.grades[lab].astype(int)

    def calibrated(p: np.ndarray):
        cal, res = select_calibration(
            p[lab], g_lab, data.groups[lab], data.studies[lab], data.folds[lab], seed=opts.seed
        )
        return cal, res

    calibrator, cal_scores = calibrated(merged)
    # Cross-fitted calibrated OOF (for ECE and plots), with the chosen method.
    from radspine.models.calibrate import fit_calibrator

    merged_cal = merged.copy()
    for k in np.unique(data.folds):
        te = (data.folds == k) & lab
        tr = (data.folds != k) & lab
        c = fit_calibrator(
            calibrator.method, merged[tr], data.grades[tr].astype(int), data.groups[tr], opts.seed
        )
        merged_cal[te] = c.transform(merged[te], data.groups[te])
    report["calibration"] = {
        "method": calibrator.method,
        "cv_score_by_method": {m: r.score for m, r in cal_scores.items()},
        "ece": {
            g: {
                "before": expected_calibration_error(
                    merged[lab & (data.groups == g)], data.grades[lab & (data.groups == g)]
                ),
                "after": expected_calibration_error(
                    merged_cal[lab & (data.groups == g)], data.grades[lab & (data.groups == g)]
                ),
            }
            for g in GROUPS
            if (lab & (data.groups == g)).any()
        },
        "ece_note": "top-label ECE on unweighted frequencies; models and calibrators minimise the 1/2/4-weighted "
        "loss, so predicted moderate/severe sit above observed frequencies by design",
        "temperatures": {g: float(v) for g, v in calibrator.params.items()}
        if calibrator.method == "temperature"
        else None,
    }
    timings["blend_calibration_s"] = time.perf_counter() - t0

    # 4. Ablations (tuned LightGBM params reused for the single-source sets: a fair, cheap comparison).
    t0 = time.perf_counter()
    abl: dict[str, dict] = {}

    def entry(p: np.ndarray, note: str = "") -> dict:
        _, res = calibrated(p)
        after = min(res.values(), key=lambda r: r.score)
        best_m = min(res, key=lambda m: res[m].score)
        d = {"before": data.score(p).as_dict(), "after": after.as_dict(), "calibration": best_m}
        if note:
            d["note"] = note
        return d

    abl["priors_only"] = entry(oof_priors(data), "weighted class frequencies per condition × level")
    abl["merged"] = {
        "before": data.score(merged).as_dict(),
        "after": cal_scores[calibrator.method].as_dict(),
        "calibration": calibrator.method,
        "note": "LightGBM + XGBoost blend",
    }
    for b in backends:
        abl[f"merged_{b}"] = entry(oofs[b])
    if opts.ablations:
        ab = "lightgbm" if "lightgbm" in backends else backends[0]
        for name, cols in sets.items():
            if name == "merged":
                continue
            p = oof_predict(
                lambda cols=cols: TableGrader(base_estimator(ab, best_params[ab], opts), cols, mode), data
            )
            abl[name] = entry(p, f"{ab} with the merged set's tuned params")
    report["ablations"] = abl
    report["score"] = abl["merged"]["after"]["score"]
    report["priors_only_score"] = abl["priors_only"]["before"]["score"]
    timings["ablations_s"] = time.perf_counter() - t0

    # 5. Final models on all labeled rows.
    t0 = time.perf_counter()
    models = {
        b: TableGrader(base_estimator(b, best_params[b], opts), features, mode).fit(
            table[lab], data.grades[lab]
        )
        for b in backends
    }
    report["importance_gain"] = {
        b: {k: dict(sorted(v.items(), key=lambda kv: -kv[1])[:25]) for k, v in m.importance().items()}
        for b, m in models.items()
    }
    timings["final_fit_s"] = time.perf_counter() - t0
    priors = priors_table(table.loc[lab, ["study_id", "condition", "level"]].assign(grade=data.grades[lab]))
    if opts.plots:
        plots = out / "plots"
        plots.mkdir(exist_ok=True)
        reliability_diagram(
            str(plots / "reliability_merged.png"),
            merged[lab],
            merged_cal[lab],
            g_lab,
            data.groups[lab],
            title=f"merged OOF, calibration: {calibrator.method}",
        )
        report["plots"] = ["plots/reliability_merged.png"]
    timings["total_s"] = time.perf_counter() - t_start
    report["timings"] = timings
    save_bundle(
        out,
        models=models,
        blend_weights=weights,
        calibrator=calibrator,
        features=features,
        mode=mode,
        priors=priors,
        meta=meta,
        report=report,
    )
    return report
