"""The one training and prediction sequence that the CLI and the demo both call.

``train()``: train-localizer → extract-features (train split) → tune → package the feature config and
CNN embedders into the bundle, so the model folder is complete and ``predict`` accepts it.
``predict()``: the bundle on a dataset (re-exported from :mod:`radspine.predict`), optionally with the
per-study visual reports and the study viewer pages.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd

from radspine.predict import predict as _predict

log = logging.getLogger(__name__)


def train(
    data_dir: str | Path,
    model_dir: str | Path,
    work_dir: str | Path,
    *,
    config=None,
    tune_options=None,
    localizer: bool = True,
    localizer_init: str | Path | None = "shipped",
    workers: int | None = None,
    scheduler: str | None = None,
    seed: int = 0,
    quiet: bool = True,
) -> dict:
    """Train a complete model bundle in ``model_dir`` from a labelled dataset; returns the stage reports.

    Args:
        config: a :class:`radspine.config.RadspineConfig` (default: the packaged default.yaml).
        tune_options: a :class:`radspine.models.tune.TuneConfig` (default: ``configs/tune.yaml``).
        localizer: also train the localizer into ``MODELDIR/localizer`` (False: predict uses the shipped
            one, or a localizer given at prediction time).
        localizer_init: fine-tune the localizer from ``"shipped"`` (the default: the packaged one, pretrained on
            real anatomy) or a localizer folder; None trains it from scratch.
    """
    from radspine.config import load_config
    from radspine.features.extract import extract_features
    from radspine.io.dataset import Dataset
    from radspine.models.bundle import localizer_dir, package_features
    from radspine.models.tune import load_tune_config, tune

    cfg = config or load_config()
    model_dir, work_dir = Path(model_dir), Path(work_dir)
    seconds: dict[str, float] = {}
    out: dict = {}
    if localizer:
        from radspine.localize.train import train_localizer

        t = time.perf_counter()
        out["localizer"] = train_localizer(Path(data_dir), localizer_dir(model_dir), cfg.localizer, seed=seed,
                                           init=localizer_init)
        seconds["train_localizer"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    out["features"] = extract_features(data_dir, "train", work_dir, cfg=cfg.features, workers=workers,
                                       scheduler=scheduler, overwrite=True, quiet=quiet)  # fmt: skip
    seconds["extract_features"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    table = pd.read_parquet(work_dir / "features.parquet")
    meta = json.loads((work_dir / "meta.json").read_text())
    labels = Dataset.open(data_dir).labels_long()
    out["cv"] = tune(table, labels, model_dir, meta, tune_options or load_tune_config())
    package_features(work_dir, model_dir)
    seconds["tune"] = round(time.perf_counter() - t, 1)
    out["seconds"] = seconds
    return out


def predict(
    data_dir: str | Path,
    model_dir: str | Path | None,
    out_csv: str | Path,
    *,
    report_dir: str | Path | None = None,
    viewer_dir: str | Path | None = None,
    split: str = "test",
    **kwargs,
) -> dict:
    """:func:`radspine.predict.predict`, then (with ``report_dir``) one report PNG per study + index.html and
    (with ``viewer_dir``) one study viewer page per study + index.html."""
    summary = _predict(data_dir, model_dir, out_csv, split=split, **kwargs)
    work = Path(kwargs.get("work_dir") or Path(out_csv).parent / "predict_work")
    if report_dir is not None:
        from radspine.report import render_reports

        t = time.perf_counter()
        n = render_reports(data_dir, Path(out_csv).parent, report_dir, model_dir=model_dir, split=split,
                           features=work / "features" / "features.parquet", workers=kwargs.get("workers"))  # fmt: skip
        summary["reports"] = {"n": n, "index": str(Path(report_dir) / "index.html"),
                              "seconds": round(time.perf_counter() - t, 1)}
    if viewer_dir is not None:
        from radspine.viewer import build_viewer

        t = time.perf_counter()
        res = build_viewer(data_dir, Path(out_csv).parent, viewer_dir, model_dir=model_dir, split=split,
                           features=work / "features" / "features.parquet", points=summary.get("points"),
                           workers=kwargs.get("workers"))
        summary["viewer"] = {"n": res.n, "index": str(res.index), "seconds": round(time.perf_counter() - t, 1)}
    return summary
