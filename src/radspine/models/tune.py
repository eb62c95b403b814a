"""``radspine tune``: Optuna-tuned LightGBM + XGBoost graders, blended and calibrated on out-of-fold predictions.

Pipeline: features + long labels → label coverage per condition group (groups without enough labelled
studies get priors only) → study-grouped, grade-stratified folds (the table's ``cv_fold`` when present) →
CV decision per-group vs pooled (default LightGBM params; skipped with one modelled group, where they are
the same model) → one Optuna TPE study per backend (objective = competition metric on OOF predictions;
bad trials pruned inside the boosting rounds and after each fold, :mod:`radspine.models.pruning`; a
``timeout`` next to the trial count) → :class:`~radspine.models.severity.SeverityModel` fit: blend weights
per group and calibration chosen on OOF (the best trials' own OOF predictions, not recomputed), graders
refitted on all labelled rows → unbiased outer-fold score → baselines (priors, each backend) and, on
request, the feature-set ablations → model bundle.

Every grader screens its columns on its own training rows (:mod:`radspine.models.screen`: constant,
duplicate and near-duplicate columns, then a quick importance screen), so inside a CV loop the screen never
sees the held-out fold, and the screened columns are part of what the unbiased score measures.

Two scores land in ``cv_report.json``:

* ``score_selection``: the cross-fitted calibrated OOF metric of the final pipeline. The mode, the Optuna
  best trial, the blend weights and the calibration method were all chosen on these same OOF rows, so it
  is optimistic.
* ``score_unbiased`` (= ``score``): for each CV fold k, the cheap choices — pooled vs per-group (on inner
  OOF with default LightGBM params, when ``reselect_mode``), the blend weights, the calibration method and
  the calibrator — are re-made on inner OOF predictions of the other folds only, the graders are refitted
  on the other folds, and fold k is predicted. None of those choices saw fold k. NOT re-selected: the Optuna
  hyper-parameters (one search on all folds, as re-running it per fold costs K× the trials); their
  selection bias is therefore still in ``score_unbiased``, usually the smallest of the four with few trials.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from radspine.constants import CONDITIONS, GROUPS, LEVELS, SEVERITY_COLUMNS
from radspine.errors import ConfigError, DatasetError, ModelError
from radspine.features.schema import FOLD_COLUMN, SHARED_PREFIXES, feature_columns, is_cnn_column, read_table
from radspine.metrics import MetricResult, priors_predictions, priors_table, score_arrays
from radspine.models.calibrate import (
    METHODS,
    expected_calibration_error,
    reliability_diagram,
    select_calibration,
)
from radspine.models.estimator import BACKENDS, MODES, GradeClassifier, TableGrader
from radspine.models.severity import SeverityModel, oof_predict

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- config
class ParamSpec(BaseModel):
    """One Optuna search dimension."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["float", "int"]
    low: float
    high: float
    log: bool = False


def _default_space() -> dict[str, dict[str, ParamSpec]]:
    f, i = "float", "int"
    return {
        "common": {
            "learning_rate": ParamSpec(type=f, low=0.02, high=0.3, log=True),
            "max_depth": ParamSpec(type=i, low=2, high=7),
            "min_child_weight": ParamSpec(type=f, low=1e-3, high=10.0, log=True),
            "subsample": ParamSpec(type=f, low=0.5, high=1.0),
            "colsample": ParamSpec(type=f, low=0.3, high=1.0),
            "reg_lambda": ParamSpec(type=f, low=1e-3, high=30.0, log=True),
            "reg_alpha": ParamSpec(type=f, low=1e-3, high=10.0, log=True),
        },
        "lightgbm": {
            "num_leaves": ParamSpec(type=i, low=4, high=48, log=True),
            "min_child_samples": ParamSpec(type=i, low=5, high=80, log=True),
        },
        "xgboost": {},
    }


class ScreenConfig(BaseModel):
    """The column screen fitted inside every grader on its training rows (:mod:`radspine.models.screen`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    near_duplicate: float | None = Field(0.98, gt=0, le=1)  # |Spearman r| that makes a column a near-duplicate
    # 96, not 200: on the real foraminal set (1,578 studies, 1,306 columns) it cut tune from 197 to 125 s at the
    # same CV (0.5940 vs 0.5948; benchmarks/tune_bench.py).
    max_features: int | None = Field(96, ge=1)  # importance screen: top columns by quick-fit gain (null: off)
    importance_rounds: int = Field(30, ge=1)
    corr_rows: int = Field(3000, ge=10)


# The feature-set ablations tune can run (see feature_sets); `ablations: true` runs every one the table has.
ABLATION_SETS: tuple[str, ...] = (
    "radiomics_only", "cnn_only", "morphometry_only", "shape_radiomics_only", "without_narrowing",
)


class TuneConfig(BaseModel):
    """Settings of one tuning run: ``configs/tune.yaml`` (same defaults) with CLI flags on top."""

    model_config = ConfigDict(extra="forbid")

    trials: int = Field(20, ge=0)  # total over the backends (LightGBM gets the odd one)
    timeout: float | None = Field(None, gt=0)  # seconds for all Optuna trials together (Optuna's own timeout)
    storage: str | None = None  # Optuna storage URL; default sqlite:///MODELDIR/optuna.db
    study_name: str = "radspine"
    folds: int = Field(3, ge=2)
    seed: int = 0
    n_jobs: int = Field(2, ge=1)  # 300-study phantom table, 50 trials: 1 → 736 s, 2 → 483 s (2 idle cores)
    backends: tuple[str, ...] = BACKENDS
    max_rounds: int = Field(300, ge=1)
    early_stopping_rounds: int = Field(20, ge=1)
    ablations: bool | tuple[str, ...] = False  # True: every feature-set ablation; a list: those sets
    screen: ScreenConfig = Field(default_factory=ScreenConfig)
    prune_in_training: bool = True  # Optuna's LightGBM/XGBoost pruning callbacks on the boosting rounds
    prune_report_every: int = Field(25, ge=1)  # rounds between two pruning reports (each is a storage write)
    pruner_warmup_rounds: int = Field(30, ge=0)  # rounds of each booster before it may be pruned
    plots: bool = True
    progress: bool = False
    unbiased: bool = True
    reselect_mode: bool = True
    blend_step: float = Field(0.05, gt=0, le=1)
    calibration_methods: tuple[str, ...] = METHODS
    sampler_startup_trials: int = Field(5, ge=0)
    pruner_startup_trials: int = Field(4, ge=0)  # complete trials of a backend before pruning starts
    min_labelled_studies: int | None = Field(None, ge=1)
    search_space: dict[str, dict[str, ParamSpec]] = Field(default_factory=_default_space)

    @field_validator("backends")
    @classmethod
    def _backends(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [b for b in v if b not in BACKENDS]
        if bad or not v:
            raise ValueError(f"backends must be a non-empty subset of {BACKENDS}, got {list(v)}")
        return tuple(b for b in BACKENDS if b in v)  # fixed order: trial split and blend are order-free

    @field_validator("ablations")
    @classmethod
    def _ablations(cls, v: bool | tuple[str, ...]) -> bool | tuple[str, ...]:
        if isinstance(v, bool):
            return v
        bad = [a for a in v if a not in ABLATION_SETS]
        if bad:
            raise ValueError(f"ablations: unknown sets {bad}; known {list(ABLATION_SETS)}")
        return tuple(v)

    @field_validator("calibration_methods")
    @classmethod
    def _methods(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [m for m in v if m not in METHODS]
        if bad:
            raise ValueError(f"calibration_methods: unknown {bad}; known {list(METHODS)}")
        return v

    @field_validator("search_space")
    @classmethod
    def _space(cls, v: dict[str, dict[str, ParamSpec]]) -> dict[str, dict[str, ParamSpec]]:
        bad = [k for k in v if k not in ("common", *BACKENDS)]
        if bad:
            raise ValueError(f"search_space: unknown sections {bad}; use common / {' / '.join(BACKENDS)}")
        params = set(GradeClassifier().get_params())
        for sec, dims in v.items():
            for name, spec in dims.items():
                if name not in params:
                    raise ValueError(f"search_space.{sec}.{name}: not a GradeClassifier parameter")
                if spec.low > spec.high or (spec.log and spec.low <= 0):
                    raise ValueError(f"search_space.{sec}.{name}: bad range [{spec.low}, {spec.high}]")
        return v


# Old name (demo.py, benchmarks): the dataclass it replaces took the same keyword arguments.
TuneOptions = TuneConfig


def default_tune_config_path() -> Path:
    """The packaged ``configs/tune.yaml``."""
    from radspine.resources import config_dir

    return config_dir() / "tune.yaml"


def load_tune_config(path: str | Path | None = None, **overrides: object) -> TuneConfig:
    """Read a tune YAML (default: the packaged one) and apply ``overrides`` (None values are ignored).

    Raises:
        ConfigError: missing file, bad YAML, or a key/value the schema rejects (names the file).
    """
    import yaml
    from pydantic import ValidationError

    p = Path(path) if path is not None else default_tune_config_path()
    if not p.is_file():
        raise ConfigError(f"{p}: tune config not found")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: invalid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of settings")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TuneConfig.model_validate(raw)
    except ValidationError as err:
        e = err.errors()[0]
        raise ConfigError(f"{p}: {'.'.join(map(str, e['loc']))}: {e['msg']}") from None


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


def wide_to_long(wide: pd.DataFrame) -> pd.DataFrame:
    """Wide ``[study_id, <25 label columns>]`` float grades → long ``[study_id, condition, level, grade]``."""
    cols = [f"{c}_{lv}" for c in CONDITIONS for lv in LEVELS]
    long = wide.melt(id_vars="study_id", value_vars=cols, var_name="col", value_name="grade")
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


def shape_radiomics_columns(table: pd.DataFrame) -> list[str]:
    """Radiomics columns of the structure-mask ROIs: ``rad_<series>_mask_…`` (and the ROI-tag form
    ``rad_<series>_<sac|foramen|recess>_…``); empty when the table has none."""
    import re

    pat = re.compile(r"^rad_[^_]+_(mask|sac|foramen|recess)_")
    return [c for c in feature_columns(table, ("rad_",)) if pat.match(c)]


def feature_sets(table: pd.DataFrame) -> dict[str, list[str]]:
    """The ablation feature sets; every ``*_only`` set adds the shared columns (less the CNN's context copies,
    except in cnn_only) and is dropped when its own source is absent: radiomics_only, cnn_only,
    morphometry_only (``mor_``), shape_radiomics_only (mask-ROI radiomics). ``without_narrowing`` is ``merged``
    less the structure-mask features (``mor_`` and mask-ROI radiomics), so one run shows what those add."""
    shared = feature_columns(table, SHARED_PREFIXES)
    out = {"merged": feature_columns(table)}
    own = {
        "radiomics_only": feature_columns(table, ("rad_",)),
        "cnn_only": feature_columns(table, ("cnn_",)),
        "morphometry_only": feature_columns(table, ("mor_",)),
        "shape_radiomics_only": shape_radiomics_columns(table),
    }
    for name, cols in own.items():
        if cols:
            # The CNN's context copies are shared columns by prefix, but CNN evidence: only cnn_only keeps them.
            keep = set(cols) | {c for c in shared if name == "cnn_only" or not is_cnn_column(c)}
            out[name] = [c for c in out["merged"] if c in keep]  # table order, like feature_columns
    narrowing = set(own["morphometry_only"]) | set(own["shape_radiomics_only"])
    if narrowing:
        out["without_narrowing"] = [c for c in out["merged"] if c not in narrowing]
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


def label_coverage(
    table: pd.DataFrame, grades: np.ndarray, folds: np.ndarray, min_studies: int | None = None
) -> dict[str, dict]:
    """Per condition group: labelled rows/studies and whether it gets a grader, with the reason if not.

    A group is modelled when it has at least ``min_studies`` (default: the number of folds) labelled
    studies and a labelled study in every fold, so every CV training split and validation fold holds some.
    """
    lab = ~np.isnan(grades)
    group, studies = table["group"].to_numpy(), table["study_id"].to_numpy()
    k = len(np.unique(folds))
    need = min_studies or k
    out: dict[str, dict] = {}
    for g in GROUPS:
        m = lab & (group == g)
        n_st = len(np.unique(studies[m]))
        n_folds = len(np.unique(folds[m]))
        e = {"n_labelled_rows": int(m.sum()), "n_labelled_studies": n_st, "status": "modelled"}
        if n_st == 0:
            e.update(status="priors_only", reason="no labels")
        elif n_st < need:
            e.update(status="priors_only", reason=f"{n_st} labelled studies, fewer than the {need} needed")
        elif n_folds < k:
            e.update(status="priors_only", reason=f"labelled studies in only {n_folds} of {k} CV folds")
        out[g] = e
    return out


# --------------------------------------------------------------------------------------------- CV core
@dataclass
class CVData:
    """Everything a CV loop needs, computed once."""

    table: pd.DataFrame
    grades: np.ndarray  # float, NaN unlabeled (or in a group that is not modelled)
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


def base_estimator(backend: str, params: dict, cfg: TuneConfig) -> GradeClassifier:
    """A GradeClassifier with fixed run settings (threads, rounds, seed) and tuned ``params``."""
    est = GradeClassifier(
        backend=backend,
        n_estimators=cfg.max_rounds,
        early_stopping_rounds=cfg.early_stopping_rounds,
        n_jobs=cfg.n_jobs,
        random_state=cfg.seed,
    )
    return est.set_params(**params)


def column_screen(cfg: TuneConfig):
    """The unfitted :class:`~radspine.models.screen.ColumnScreen` of the config (None when disabled)."""
    from radspine.models.screen import ColumnScreen

    sc = cfg.screen
    if not sc.enabled:
        return None
    return ColumnScreen(near_duplicate=sc.near_duplicate, max_features=sc.max_features,
                        importance_rounds=sc.importance_rounds, corr_rows=sc.corr_rows,
                        random_state=cfg.seed, n_jobs=cfg.n_jobs)  # fmt: skip


def grader(backend: str, params: dict, features: list[str], mode: str, cfg: TuneConfig) -> TableGrader:
    """An unfitted TableGrader of ``backend`` with ``params`` (and the config's column screen)."""
    return TableGrader(base_estimator(backend, params, cfg), features, mode, screen=column_screen(cfg))


def search_space(trial, backend: str, cfg: TuneConfig | None = None) -> dict:
    """Sample GradeClassifier parameters from the config's search space (common, then backend's own)."""
    cfg = cfg or TuneConfig()
    p: dict = {}
    for sec in ("common", backend):
        for name, s in cfg.search_space.get(sec, {}).items():
            if s.type == "int":
                p[name] = trial.suggest_int(name, int(s.low), int(s.high), log=s.log)
            else:
                p[name] = trial.suggest_float(name, s.low, s.high, log=s.log)
    return p


def _fingerprint(data: CVData, features: list[str], cfg: TuneConfig) -> str:
    """Hash of what makes trial values comparable (rows, labels, folds, features, fixed settings)."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(data.table["row_id"], index=False).values.tobytes())
    h.update(np.nan_to_num(data.grades, nan=-1).tobytes())
    h.update(data.folds.tobytes())
    h.update(json.dumps([features, cfg.max_rounds, cfg.early_stopping_rounds, cfg.seed,
                         cfg.screen.model_dump()]).encode())
    return h.hexdigest()[:16]


class TrialProgress:
    """Progress of the Optuna search: a rich bar on a terminal, else one plain log line per trial
    (trial k of n, its result, best so far, elapsed, time left), so a redirected log shows the search."""

    def __init__(self, enabled: bool, total: int, timeout: float | None = None):
        from radspine.progress import stderr_is_terminal

        self.style = None if not enabled or total <= 0 else ("bar" if stderr_is_terminal() else "lines")
        self.total = total
        self.timeout = timeout
        self.n = 0
        self.best: dict[str, float] = {}
        self.t0 = time.perf_counter()
        self._bar = None
        self._task = None

    def __enter__(self) -> TrialProgress:
        self.t0 = time.perf_counter()
        if self.style == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("best {task.fields[best]}"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("trials", total=self.total, best="-")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def time_left(self) -> float:
        """Seconds the search still needs: the mean trial time so far × trials left, capped by the timeout."""
        el = time.perf_counter() - self.t0
        left = el / self.n * (self.total - self.n) if self.n else float("nan")
        if self.timeout is not None:
            left = min(left, max(0.0, self.timeout - el)) if left == left else max(0.0, self.timeout - el)
        return left

    def trial_done(self, backend: str, study, trial) -> None:
        """Record one finished trial of ``backend``'s study and show it."""
        from radspine.progress import format_seconds

        self.n += 1
        try:
            self.best[backend] = study.best_value
        except ValueError:  # no complete trial yet
            pass
        if self.style is None:
            return
        best = min(self.best.items(), key=lambda kv: kv[1]) if self.best else None
        best_s = f"{best[1]:.4f} ({best[0]})" if best else "-"
        if self._bar is not None:
            self._bar.update(self._task, advance=1, best=best_s, description=f"{backend} trial {trial.number + 1}")
            return
        state = trial.state.name.lower()
        value = f" {trial.value:.4f}" if state == "complete" and trial.value is not None else ""
        left = self.time_left()
        log.info(
            "tune: trial %d of %d (%s #%d %s%s), best so far %s, elapsed %s, %s left",
            self.n, self.total, backend, trial.number + 1, state, value, best_s,
            format_seconds(time.perf_counter() - self.t0), "?" if left != left else f"~{format_seconds(left)}",
        )


def run_study(
    backend: str,
    data: CVData,
    features: list[str],
    mode: str,
    cfg: TuneConfig,
    n_trials: int,
    timeout: float | None,
    storage: str,
    progress: TrialProgress | None = None,
    best_oof: dict | None = None,
):
    """Create or resume the Optuna study ``<study_name>-<backend>`` and run ``n_trials`` more trials.

    Bad trials are pruned inside the boosting rounds (Optuna's LightGBM/XGBoost pruning callbacks, when
    ``cfg.prune_in_training``) and after each CV fold (:class:`radspine.models.pruning.SlotMedianPruner`).
    ``timeout``: Optuna's own (no trial starts after it; the running one finishes).
    ``progress``: told after each trial. ``best_oof``: filled with ``{"number", "value", "oof"}`` of the best
    trial this call ran, so the final fit does not recompute its out-of-fold predictions.
    """
    import optuna

    from radspine.models.pruning import SlotMedianPruner, fit_callbacks, fold_step

    name = f"{cfg.study_name}-{backend}"
    fp = _fingerprint(data, features, cfg)
    probe = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
    old = probe.user_attrs.get("fingerprint")
    if old is not None and (old != fp or probe.user_attrs.get("mode") != mode):
        raise ModelError(
            f"study {name!r} in {storage} was run on other data/folds/settings; "
            "use a new --study-name (or the same inputs) to resume"
        )
    # Seed the sampler with the trial count so a resumed study does not replay the first random trials.
    sampler = optuna.samplers.TPESampler(
        seed=cfg.seed + len(probe.trials), n_startup_trials=cfg.sampler_startup_trials
    )
    stride = cfg.max_rounds + 1
    pruner = SlotMedianPruner(stride, n_startup_trials=cfg.pruner_startup_trials,
                              n_warmup_steps=cfg.pruner_warmup_rounds)  # fmt: skip
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    study.set_user_attr("fingerprint", fp)
    study.set_user_attr("mode", mode)
    study.set_user_attr("backend", backend)

    def objective(trial) -> float:
        params = search_space(trial, backend, cfg)

        def report(i: int, oof: np.ndarray, done: np.ndarray) -> None:
            trial.report(data.score(oof, done).score, step=fold_step(i))
            if trial.should_prune():
                raise optuna.TrialPruned()

        cbs = fit_callbacks(trial, stride, cfg.prune_report_every) if cfg.prune_in_training else None
        g = grader(backend, params, features, mode, cfg)
        oof = oof_predict(g, data.table, data.grades, data.folds, report, fit_callbacks=cbs)
        res = data.score(oof)
        for t, v in res.terms().items():
            trial.set_user_attr(t, v)
        if best_oof is not None and res.score < best_oof.get("value", np.inf):
            best_oof.update(number=trial.number, value=res.score, oof=oof)
        return res.score

    callbacks = [lambda st, tr: progress.trial_done(backend, st, tr)] if progress is not None else []
    if n_trials > 0 and (timeout is None or timeout > 0):
        study.optimize(objective, n_trials=n_trials, timeout=timeout, gc_after_trial=False, callbacks=callbacks)
    return study


def n_modelled_groups(data: CVData) -> int:
    """Condition groups with a labelled row (the graders' groups)."""
    return len(np.unique(data.groups[data.labeled]))


# The pooled-vs-per-group comparison: GradeClassifier's default LightGBM params at a learning rate of 0.1, so
# it costs half the boosting rounds of the defaults' 0.05 (it runs once, and again in every outer fold).
MODE_PARAMS: dict = {"learning_rate": 0.1}


def select_mode(data: CVData, features: list[str], cfg: TuneConfig) -> tuple[str, dict[str, MetricResult]]:
    """Pooled vs per-group by OOF metric with default LightGBM params (:data:`MODE_PARAMS`; ties → per_group).

    With one modelled group the two are the same model (pooled only adds the condition code, which within
    one group is the side code the design already has), so nothing is fitted: ``per_group``, no scores.
    """
    if n_modelled_groups(data) < 2:
        return "per_group", {}
    scores = {
        mode: data.score(oof_predict(grader("lightgbm", MODE_PARAMS, features, mode, cfg), data.table, data.grades,
                                     data.folds))
        for mode in MODES
    }
    return min(scores, key=lambda m: scores[m].score), scores


def fit_composite(
    table: pd.DataFrame,
    grades_all: np.ndarray,
    folds: np.ndarray,
    features: list[str],
    mode: str,
    best_params: dict[str, dict],
    cfg: TuneConfig,
    groups: list[str],
    oof_by_backend: dict[str, np.ndarray] | None = None,
) -> SeverityModel:
    """The SeverityModel of the final pipeline fitted on ``table`` (blend + calibration learned on OOF).

    ``oof_by_backend``: the graders' OOF predictions when already computed (the best Optuna trials').
    """
    graders = {b: grader(b, best_params[b], features, mode, cfg) for b in cfg.backends}
    model = SeverityModel(
        graders,
        calibration="auto",
        calibration_methods=cfg.calibration_methods,
        groups=groups,
        blend_step=cfg.blend_step,
        seed=cfg.seed,
    )
    return model.fit(table, grades_all, folds, oof_by_backend=oof_by_backend)


def unbiased_cv(
    data: CVData,
    grades_all: np.ndarray,
    features: list[str],
    mode: str,
    best_params: dict[str, dict],
    cfg: TuneConfig,
    groups: list[str],
) -> dict:
    """Outer-fold score of the whole fit procedure (see the module docstring for what is re-selected).

    Inner folds are the remaining outer folds; with only one left (2-fold CV) they are re-split into 2
    study-grouped folds (:func:`radspine.folds.study_folds`).
    """
    from radspine.folds import study_folds

    pred = np.full((len(data.table), 3), np.nan)
    raw = np.full((len(data.table), 3), np.nan)
    per_fold = []
    outer = np.unique(data.folds)
    for i, k in enumerate(outer):
        t0 = time.perf_counter()
        te, tr = data.folds == k, data.folds != k
        sub = data.table[tr].reset_index(drop=True)
        inner = data.folds[tr]
        if len(np.unique(inner)) < 2:
            inner = study_folds(sub, data.grades[tr], 2, cfg.seed)
        sub_data = CVData(sub, data.grades[tr], inner)
        mode_k = select_mode(sub_data, features, cfg)[0] if cfg.reselect_mode else mode
        model = fit_composite(sub, grades_all[tr], inner, features, mode_k, best_params, cfg, groups)
        pred[te] = model.predict_proba(data.table[te])
        raw[te] = model.predict_raw(data.table[te])
        per_fold.append(
            {
                "fold": int(k),
                "mode": mode_k,
                "calibration": model.calibrator_.method,
                "blend_weight_lightgbm": model.blend_weights_,
                "score": data.score(pred, te).score,
            }
        )
        log.info("tune: unbiased outer fold %d of %d scored %.4f (%.0f s)", i + 1, len(outer),
                 per_fold[-1]["score"], time.perf_counter() - t0)  # fmt: skip
    return {"after": data.score(pred).as_dict(), "before": data.score(raw).as_dict(), "folds": per_fold}


def ablation_names(cfg: TuneConfig, sets: dict[str, list[str]]) -> list[str]:
    """The feature sets to ablate: none, all the table has (``True``), or the listed ones the table has."""
    if cfg.ablations is False:
        return []
    want = ABLATION_SETS if cfg.ablations is True else cfg.ablations
    return [n for n in want if n in sets]


# -------------------------------------------------------------------------------------------- the run
def tune(
    table: pd.DataFrame,
    labels: pd.DataFrame,
    out_dir: str | Path,
    meta: dict,
    opts: TuneConfig | None = None,
) -> dict:
    """Tune, blend, calibrate, score, ablate, fit on all rows and write the model bundle to ``out_dir``.

    ``labels``: long ``[study_id, condition, level, grade]`` (the command layer reads them). Condition
    groups without enough labelled studies get priors only (``cv_report.json["groups"]`` says why).

    Returns:
        The ``cv_report.json`` content.
    """
    from threadpoolctl import threadpool_limits

    cfg = opts or TuneConfig()
    # BLAS/OpenMP pools sized to the machine spin and crawl on a shared CPU; cap them to n_jobs.
    with threadpool_limits(limits=cfg.n_jobs):
        return _tune(table, labels, out_dir, meta, cfg)


def _tune(table: pd.DataFrame, labels: pd.DataFrame, out_dir: str | Path, meta: dict, cfg: TuneConfig) -> dict:
    from radspine.models.bundle import save_bundle

    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = cfg.storage or f"sqlite:///{(out / 'optuna.db').resolve()}"
    grades_all = align_grades(table, labels)
    if np.isnan(grades_all).all():
        raise DatasetError("no labeled rows: features and labels share no (study_id, condition, level)")
    folds = assign_folds(table, grades_all, cfg.folds, cfg.seed)
    coverage = label_coverage(table, grades_all, folds, cfg.min_labelled_studies)
    groups = [g for g, e in coverage.items() if e["status"] == "modelled"]
    if not groups:
        why = "; ".join(f"{g}: {e['reason']}" for g, e in coverage.items())
        raise DatasetError(f"no condition group has enough labels for {len(np.unique(folds))}-fold CV ({why})")
    for g, e in coverage.items():
        if e["status"] != "modelled":
            log.warning("%s: priors only (%s)", g, e["reason"])
    # Graders and every score see only the modelled groups; the priors use all labels.
    grades = np.where(np.isin(table["group"].to_numpy(), groups), grades_all, np.nan)
    data = CVData(table, grades, folds)
    sets = feature_sets(table)
    features = sets["merged"]
    report: dict = {
        "n_studies": int(table["study_id"].nunique()),
        "n_labeled_rows": int(data.labeled.sum()),
        "folds": cfg.folds,
        "seed": cfg.seed,
        "backbone": meta.get("backbone"),
        "feature_config_hash": meta.get("config_hash"),
        "n_features": len(features),
        "storage": storage if cfg.storage else "sqlite:///MODELDIR/optuna.db",
        "groups": coverage,
    }
    timings: dict[str, float] = {}
    log.info("tune: %d labelled rows of %d studies, %d feature columns, %d folds, groups %s",
             report["n_labeled_rows"], report["n_studies"], len(features), len(np.unique(folds)), ", ".join(groups))

    # 1. one model per group vs one pooled model, same default LightGBM params.
    t0 = time.perf_counter()
    mode, mode_scores = select_mode(data, features, cfg)
    if mode_scores:
        other = "pooled" if mode == "per_group" else "per_group"
        report["mode_selection"] = {
            "compared_with": f"LightGBM default params with {MODE_PARAMS}, OOF metric",
            **{m: r.as_dict() for m, r in mode_scores.items()},
            "winner": mode,
            "margin": mode_scores[other].score - mode_scores[mode].score,
        }
    else:
        report["mode_selection"] = {"winner": mode, "margin": None,
                                    "note": "one modelled group: pooled and per_group are the same model, not compared"}
    timings["mode_selection_s"] = time.perf_counter() - t0
    log.info("tune: mode %s (%s, %.0f s)", mode, "one group" if not mode_scores
             else f"wins by {report['mode_selection']['margin']:.4f}", timings["mode_selection_s"])  # fmt: skip

    # 2. Optuna per backend; a --timeout is shared out by trial count, what one backend leaves goes on.
    t0 = time.perf_counter()
    backends = list(cfg.backends)
    n_per = {
        b: cfg.trials // len(backends) + (1 if i < cfg.trials % len(backends) else 0)
        for i, b in enumerate(backends)
    }
    deadline = None if cfg.timeout is None else t0 + cfg.timeout
    best_params: dict[str, dict] = {}
    best_oof: dict[str, np.ndarray] = {}
    report["tuning"] = {}
    with TrialProgress(cfg.progress, cfg.trials, cfg.timeout) as progress:
        for i, b in enumerate(backends):
            tb = None
            if deadline is not None:
                still = sum(n_per[c] for c in backends[i:])
                tb = max(0.0, deadline - time.perf_counter()) * n_per[b] / max(still, 1)
            kept: dict = {}
            study = run_study(b, data, features, mode, cfg, n_per[b], tb, storage, progress, kept)
            states = [t.state.name for t in study.trials]
            complete = [t for t in study.trials if t.state.name == "COMPLETE"]
            best_params[b] = dict(study.best_trial.params) if complete else {}
            if complete and kept.get("number") == study.best_trial.number:
                best_oof[b] = kept["oof"]
            report["tuning"][b] = {
                "study_name": study.study_name,
                "n_trials_total": len(study.trials),
                "n_complete": states.count("COMPLETE"),
                "n_pruned": states.count("PRUNED"),
                "best_value": study.best_value if complete else None,
                "best_params": best_params[b],
            }
            if not complete:
                report["tuning"][b]["note"] = "no complete trial (timeout or all pruned): default parameters"
    report["tuning_timeout_s"] = cfg.timeout
    timings["tuning_s"] = time.perf_counter() - t0

    # 3. The composite model: OOF of the best params (the best trials' own, when this run made them) → blend
    #    → calibration; graders refitted on all rows.
    t0 = time.perf_counter()
    model = fit_composite(table, grades_all, folds, features, mode, best_params, cfg, groups, oof_by_backend=best_oof)
    oofs, merged, merged_cal = model.oof_by_backend_, model.oof_, model.oof_calibrated_
    calibrator, cal_scores = model.calibrator_, model.calibration_scores_
    report["blend"] = {
        "weight_lightgbm": model.blend_weights_,
        "note": "fitted on the same OOF predictions the selection score is computed on",
    }
    lab = data.labeled
    g_lab = data.grades[lab].astype(int)
    report["calibration"] = {
        "method": calibrator.method,
        "cv_score_by_method": {m: r.score for m, r in cal_scores.items()},
        "ece": {
            g: {
                "before": expected_calibration_error(merged[lab & (data.groups == g)], data.grades[lab & (data.groups == g)]),
                "after": expected_calibration_error(merged_cal[lab & (data.groups == g)], data.grades[lab & (data.groups == g)]),
            }
            for g in GROUPS
            if (lab & (data.groups == g)).any()
        },
        "ece_note": "top-label ECE on unweighted frequencies; models and calibrators minimise the 1/2/4-weighted "
        "loss, so predicted moderate/severe sit above observed frequencies by design",
        "temperatures": calibrator.temperatures(),
    }
    first = model.graders_[backends[0]]
    report["screen"] = {
        "settings": cfg.screen.model_dump(),
        "note": "fitted per model on its training rows only (inside every CV fold); counts of the final models",
        "models": first.screen_report(),
        "n_features_used": len(first.used_features_),
    }
    timings["blend_calibration_s"] = time.perf_counter() - t0
    log.info("tune: final graders fitted, calibration %s (%.0f s)", calibrator.method, timings["blend_calibration_s"])

    # 4. Unbiased score: the cheap choices re-made per outer fold without it.
    score_selection = cal_scores[calibrator.method].score
    if cfg.unbiased:
        t0 = time.perf_counter()
        ub = unbiased_cv(data, grades_all, features, mode, best_params, cfg, groups)
        ub["re_selected_per_outer_fold"] = [
            *(["mode (pooled vs per_group)"] if cfg.reselect_mode and mode_scores else []),
            "blend weights",
            "calibration method",
            "calibrator fit",
            "column screen",
            "grader fit",
        ]
        ub["not_re_selected"] = ["Optuna hyper-parameters (one search on all folds)"]
        report["unbiased"] = ub
        score_unbiased = ub["after"]["score"]
        timings["unbiased_s"] = time.perf_counter() - t0
    else:
        score_unbiased = None

    # 5. Baselines (priors, each backend alone) and, on request, the feature-set ablations (tuned LightGBM
    #    params reused for the other sets: a fair, cheap comparison; each one a cross-validated refit).
    t0 = time.perf_counter()

    def entry(p: np.ndarray, note: str = "") -> dict:
        _, res = select_calibration(
            p[lab], g_lab, data.groups[lab], data.studies[lab], data.folds[lab],
            methods=cfg.calibration_methods, seed=cfg.seed,
        )
        best_m = min(res, key=lambda m: res[m].score)
        d = {"before": data.score(p).as_dict(), "after": res[best_m].as_dict(), "calibration": best_m}
        if note:
            d["note"] = note
        return d

    base: dict[str, dict] = {}
    base["priors_only"] = entry(oof_priors(data), "weighted class frequencies per condition × level")
    base["merged"] = {
        "before": data.score(merged).as_dict(),
        "after": cal_scores[calibrator.method].as_dict(),
        "calibration": calibrator.method,
        "note": " + ".join(backends) + " blend (selection score: choices made on these OOF rows)",
    }
    for b in backends:
        base[f"merged_{b}"] = entry(oofs[b])
    report["baselines"] = base
    names = ablation_names(cfg, sets)
    if names:
        abl = dict(base)
        ab = "lightgbm" if "lightgbm" in backends else backends[0]
        for k, name in enumerate(names):
            p = oof_predict(grader(ab, best_params[ab], sets[name], mode, cfg), data.table, data.grades, data.folds)
            abl[name] = entry(p, f"{ab} with the merged set's tuned params")
            log.info("tune: ablation %d of %d, %s: %.4f", k + 1, len(names), name, abl[name]["after"]["score"])
        report["ablations"] = abl
    else:
        report["ablations_note"] = (
            "feature-set ablations not run (tune --ablations runs them: one cross-validated refit per set)"
        )
    report["score_selection"] = score_selection
    report["score_unbiased"] = score_unbiased
    report["score"] = score_unbiased if score_unbiased is not None else score_selection
    report["selection_gap"] = None if score_unbiased is None else score_unbiased - score_selection
    report["priors_only_score"] = base["priors_only"]["before"]["score"]
    timings["baselines_ablations_s"] = time.perf_counter() - t0

    report["importance_gain"] = {
        b: {k: dict(sorted(v.items(), key=lambda kv: -kv[1])[:25]) for k, v in m.importance().items()}
        for b, m in model.graders_.items()
    }
    report["priors_source"] = model.priors_source_
    if cfg.plots:
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
    save_bundle(out, model=model, meta=meta, report=report)
    log.info("tune: done in %.0f s, score %.4f (unbiased outer folds)" if score_unbiased is not None
             else "tune: done in %.0f s, score %.4f (selection)", timings["total_s"], report["score"])  # fmt: skip
    return report
