"""The model bundle (MODELDIR): models, blend weights, calibrator, features, priors, versions, CV report.

Layout::

    MODELDIR/bundle.json     format, features, mode, blend weights, modelled groups, feature config hash, versions
    MODELDIR/models.joblib   {"format": 2, "model": SeverityModel} (graders + blend + calibrator + priors)
    MODELDIR/priors.csv      condition, level, normal_mild, moderate, severe
    MODELDIR/cv_report.json  CV scores, ablations, calibration, importance, tuned params
    MODELDIR/plots/*.png     reliability diagrams
    MODELDIR/optuna.db       Optuna storage (default)

    MODELDIR/features/       features_config.json (hash must match), meta.json, embedders/ (CNN per family)
    MODELDIR/localizer/      the localizer trained with the models (optional: the shipped one is the fallback)

This module owns that layout: nothing else builds paths inside a model folder.
``Bundle.load(dir).predict_proba(table)`` is the public prediction entry point (it delegates to the
pickled :class:`radspine.models.severity.SeverityModel`);
:func:`load_features_config` gives the feature config a bundle was trained with (hash-checked).
"""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import radspine
from radspine.constants import SEVERITY_COLUMNS
from radspine.errors import ModelError
from radspine.features.schema import KEY_COLUMNS
from radspine.fsutil import atomic_path, write_csv_atomic, write_json_atomic
from radspine.models.calibrate import Calibrator
from radspine.models.estimator import TableGrader
from radspine.models.severity import SeverityModel

log = logging.getLogger(__name__)

# 2: models.joblib holds one SeverityModel (format 1 held {"models", "calibrator"} and priors.csv apart).
BUNDLE_FORMAT = 2


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose objects are pickled in the bundle."""
    import lightgbm
    import sklearn
    import xgboost

    return {
        "radspine": radspine.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "lightgbm": lightgbm.__version__,
        "xgboost": xgboost.__version__,
    }


def save_bundle(
    out_dir: str | Path,
    *,
    model: SeverityModel,
    meta: dict,
    report: dict,
) -> None:
    """Write every bundle file atomically (bundle.json last, so a complete bundle.json means a complete bundle)."""
    import joblib

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "models.joblib") as tmp:
        joblib.dump({"format": BUNDLE_FORMAT, "model": model}, tmp)
    # priors.csv is a human-readable copy; prediction uses the model's own priors.
    write_csv_atomic(model.priors_, out / "priors.csv")
    write_json_atomic(out / "cv_report.json", report)
    write_json_atomic(
        out / "bundle.json",
        {
            "format": BUNDLE_FORMAT,
            "features": model.features,
            "mode": model.mode,
            "backends": list(model.graders_),
            "modelled_groups": list(model.groups_),
            "blend_weight_lightgbm": model.blend_weights_,
            "calibration": model.calibrator_.method,
            "feature_config_hash": meta.get("config_hash"),
            "backbone": meta.get("backbone"),
            "features_meta": meta,
            "versions": library_versions(),
        },
    )


@dataclass
class Bundle:
    """A loaded model bundle; use :meth:`load`."""

    path: Path
    info: dict
    model: SeverityModel

    @classmethod
    def load(cls, model_dir: str | Path) -> Bundle:
        """Load a bundle written by ``radspine tune``; raises ModelError naming the folder/file if unusable."""
        import joblib

        d = Path(model_dir)
        bj = d / "bundle.json"
        if not bj.is_file():
            raise ModelError(f"{d}: not a model bundle (no bundle.json; run `radspine tune`)")
        try:
            info = json.loads(bj.read_text())
        except json.JSONDecodeError as err:
            raise ModelError(f"{bj}: corrupt JSON: {err}") from None
        if info.get("format") != BUNDLE_FORMAT:
            raise ModelError(
                f"{bj}: bundle format {info.get('format')!r} was written by another radspine version "
                f"(this one reads format {BUNDLE_FORMAT}); re-run `radspine tune`"
            )
        try:
            blob = joblib.load(d / "models.joblib")
        except FileNotFoundError as err:
            raise ModelError(f"{d}: incomplete bundle, missing {Path(err.filename).name}") from None
        except Exception as err:  # unpickling failures come in many types
            raise ModelError(
                f"{d / 'models.joblib'}: cannot load models: {str(err).splitlines()[0]}"
            ) from None
        if not isinstance(blob, dict) or not isinstance(blob.get("model"), SeverityModel):
            raise ModelError(f"{d / 'models.joblib'}: not a format-{BUNDLE_FORMAT} model file; re-run `radspine tune`")
        now = library_versions()
        for lib in ("lightgbm", "xgboost", "scikit-learn"):
            if info["versions"].get(lib) != now[lib]:
                log.warning("%s: trained with %s %s, running %s", d, lib, info["versions"].get(lib), now[lib])
        return cls(d, info, blob["model"])

    @property
    def models(self) -> dict[str, TableGrader]:
        """Fitted graders per backend."""
        return self.model.graders_

    @property
    def calibrator(self) -> Calibrator:
        """The fitted calibrator."""
        return self.model.calibrator_

    @property
    def priors(self) -> pd.DataFrame:
        """Priors ``[condition, level, normal_mild, moderate, severe]`` (25 rows)."""
        return self.model.priors_

    @property
    def feature_config_hash(self) -> str | None:
        """``config_hash`` of the features the models were trained on."""
        return self.info.get("feature_config_hash")

    @property
    def features(self) -> list[str]:
        """Feature columns the models need."""
        return list(self.info["features"])

    def check_features_meta(self, meta: dict, source: str = "meta.json") -> None:
        """Raise ModelError if a features ``meta.json`` was produced with another feature config."""
        if meta.get("config_hash") != self.feature_config_hash:
            raise ModelError(
                f"{source}: feature config_hash {meta.get('config_hash')!r} differs from the model's "
                f"{self.feature_config_hash!r} ({self.path}); re-extract features or re-tune"
            )

    def _check_table(self, table: pd.DataFrame) -> None:
        missing = [c for c in (*KEY_COLUMNS, *self.features) if c not in table.columns]
        if missing:
            more = f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""
            raise ModelError(f"features table lacks columns required by {self.path}: {missing[:10]}{more}")

    def predict_raw(self, table: pd.DataFrame) -> np.ndarray:
        """Blended, uncalibrated (n, 3) probabilities."""
        self._check_table(table)
        return self.model.predict_raw(table)

    def predict_proba(self, table: pd.DataFrame) -> pd.DataFrame:
        """Calibrated probabilities ``[row_id, normal_mild, moderate, severe]`` for every table row
        (priors for rows of condition groups the bundle has no grader for).

        Raises:
            ModelError: the table lacks feature columns the models were trained on (names them).
        """
        self._check_table(table)
        p = self.model.predict_proba(table)
        out = pd.DataFrame({"row_id": table["row_id"].to_numpy()})
        for j, c in enumerate(SEVERITY_COLUMNS):
            out[c] = p[:, j]
        return out

    def shap_values(self, table: pd.DataFrame, grade: str = "severe") -> pd.DataFrame:
        """Per-feature TreeSHAP contributions to one grade's raw score; see
        :meth:`radspine.models.severity.SeverityModel.shap_values`."""
        self._check_table(table)
        return self.model.shap_values(table, grade)

    def report(self) -> dict:
        """The bundle's ``cv_report.json``."""
        return json.loads((self.path / "cv_report.json").read_text())


def package_features(workdir: str | Path, model_dir: str | Path) -> Path:
    """Copy what prediction needs from a training workdir into ``MODELDIR/features``.

    That is the feature config (its hash must match the models'), ``meta.json`` and the CNN embedders
    trained on all training studies, so a model bundle is self-contained.
    """
    import shutil

    src, dst = Path(workdir), Path(model_dir) / "features"
    if not (src / "features_config.json").is_file():
        raise ModelError(f"{src}: no features_config.json (run `radspine extract-features` first)")
    tmp = dst.with_name(".features.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in ("features_config.json", "meta.json"):
        shutil.copy2(src / name, tmp / name)
    if (src / "embedders").is_dir():
        shutil.copytree(src / "embedders", tmp / "embedders")
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return dst


def features_dir(model_dir: str | Path) -> Path:
    """Where a bundle keeps its feature config and CNN embedders."""
    return Path(model_dir) / "features"


def embedders_dir(model_dir: str | Path) -> Path:
    """The bundle's CNN embedders (one folder per family + embedders.json)."""
    return features_dir(model_dir) / "embedders"


def localizer_dir(model_dir: str | Path) -> Path:
    """The localizer trained with the bundle (``MODELDIR/localizer``)."""
    return Path(model_dir) / "localizer"


def load_features_config(model_dir: str | Path):
    """``(Bundle, FeaturesConfig)`` of a bundle; refuses one whose feature config hash differs from the models'.

    Raises:
        ModelError: not a bundle, no/invalid features_config.json, or a hash mismatch.
    """
    from radspine.features.config import FeaturesConfig, config_hash

    bundle = Bundle.load(model_dir)
    f = features_dir(model_dir) / "features_config.json"
    if not f.is_file():
        raise ModelError(f"{model_dir}: bundle has no features/features_config.json (re-run `radspine tune`)")
    try:
        cfg = FeaturesConfig.model_validate_json(f.read_text())
    except ValueError as err:
        raise ModelError(f"{f}: invalid feature config ({str(err).splitlines()[0]})") from None
    h = config_hash(cfg)
    if h != bundle.feature_config_hash:
        raise ModelError(
            f"{f}: feature config hash {h} differs from the models' {bundle.feature_config_hash}; "
            "the models were trained on other features — re-run extract-features and tune"
        )
    return bundle, cfg
