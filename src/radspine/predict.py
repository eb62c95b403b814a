"""`radspine predict`: unlabeled studies → localize → patches → features → graders → submission.csv.

Every study gets its 25 rows: a study (or row) that fails at any stage is filled from the training
priors stored in the model bundle, and the reason is logged in ``predict_log.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from radspine.constants import CONDITION_KEYS, LEVEL_KEYS, SEVERITY_COLUMNS
from radspine.errors import RadspineError
from radspine.fsutil import write_csv_atomic, write_json_atomic

log = logging.getLogger(__name__)

# Expected severity on the 0–1 scale (Normal/Mild 0–0.33, Moderate 0.34–0.66, Severe 0.67–1):
# a certain grade maps to 0, 0.5 and 1, each inside its own band.
SEVERITY_SCALE = np.array([0.0, 0.5, 1.0])


def expected_severity(probs: np.ndarray) -> np.ndarray:
    """Continuous severity in [0, 1] of (n, 3) grade probabilities: P(Moderate)·0.5 + P(Severe)·1."""
    p = np.asarray(probs, dtype=np.float64)
    return p @ SEVERITY_SCALE / np.clip(p.sum(axis=1), 1e-12, None)


def predict(
    data_dir: str | Path,
    model_dir: str | Path,
    out_csv: str | Path,
    *,
    split: str = "test",
    points_out: str | Path | None = None,
    localizer_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    quiet: bool = True,
) -> dict:
    """Write a complete, validated submission for every study of ``split``; return a summary dict.

    Args:
        data_dir: dataset root (competition layout).
        model_dir: bundle from ``radspine tune`` (with ``features/`` and, unless given, ``localizer/``).
        out_csv: submission path (written atomically, 25 rows per study).
        points_out: where to write the predicted points CSV (default: beside the work files).
        localizer_dir: localizer model (default ``MODELDIR/localizer``).
        work_dir: intermediate files (default ``<out_csv folder>/predict_work``).
    """
    from radspine.features.extract import extract_features
    from radspine.io.dataset import Dataset
    from radspine.localize.infer import localize_dataset
    from radspine.models.bundle import embedders_dir, load_features_config
    from radspine.submission import build_submission, write_submission

    t0 = time.perf_counter()
    model_dir = Path(model_dir)
    out_csv = Path(out_csv)
    work = Path(work_dir) if work_dir else out_csv.parent / "predict_work"
    work.mkdir(parents=True, exist_ok=True)
    bundle, cfg = load_features_config(model_dir)
    ds = Dataset.open(data_dir)
    if not ds.has_split(split):
        raise RadspineError(f"{data_dir}: no {split} split (need {split}_series_descriptions.csv)")
    studies = ds.studies(split)
    study_ids = [s.study_id for s in studies]
    if not study_ids:
        raise RadspineError(f"{data_dir}: no studies in the {split} split")
    skipped: dict[str, str] = {}

    # 1. localize
    loc_dir = Path(localizer_dir) if localizer_dir else model_dir / "localizer"
    pts_path = Path(points_out) if points_out else work / "points.csv"
    t_loc = time.perf_counter()
    points = localize_dataset(data_dir, loc_dir, pts_path, split=split)
    t_loc = time.perf_counter() - t_loc
    for sid, flags in points.groupby("study_id")["flag"]:
        bad = [f for f in flags.fillna("").astype(str) if f]
        if bad:
            skipped[str(sid)] = f"localizer: {bad[0]}"
    # 2. features with the bundle's own config and CNN embedders
    t_feat = time.perf_counter()
    meta = extract_features(
        data_dir, split, work / "features", points=pts_path, cfg=cfg, workers=workers, scheduler=scheduler,
        overwrite=True, embedders_dir=embedders_dir(model_dir), quiet=quiet,
    )
    t_feat = time.perf_counter() - t_feat
    bundle.check_features_meta(meta, str(work / "features" / "meta.json"))
    table = pd.read_parquet(work / "features" / "features.parquet")

    # 3. graders; studies whose features failed entirely fall back to priors
    preds = bundle.predict_proba(table)
    failed = {int(s) for s, why in meta["problems"].items() if "has_point" in table and
              table.loc[table["study_id"] == int(s), "has_point"].fillna(0).eq(0).all()}
    for s in failed:
        skipped.setdefault(str(s), f"features: {meta['problems'][str(s)]}")
    keep = ~table["study_id"].isin(failed).to_numpy()
    sub, n_filled = build_submission(study_ids, preds[keep], bundle.priors)
    write_submission(sub, out_csv, study_ids)

    # 4. per-row details for people: probabilities, expected severity, the point used
    details = sub.copy()
    details["expected_severity"] = expected_severity(details[list(SEVERITY_COLUMNS)].to_numpy())
    keys = table[["row_id", "study_id", "condition", "level"]]
    details = details.merge(keys, on="row_id", how="left")
    pcols = [c for c in ("series_id", "instance_number", "x", "y", "world_x", "world_y", "world_z", "flag") if c in points]
    pts = points.assign(condition=points["condition"].map(lambda c: CONDITION_KEYS.get(c, c)),
                        level=points["level"].map(lambda v: LEVEL_KEYS.get(v, v)))
    details = details.merge(pts[["study_id", "condition", "level", *pcols]], on=["study_id", "condition", "level"], how="left")
    write_csv_atomic(details, out_csv.parent / "predictions.csv", float_format="%.6f")
    summary = {
        "studies": len(study_ids),
        "rows": int(len(sub)),
        "rows_from_priors": int(n_filled),
        "skipped": skipped,
        "seconds": round(time.perf_counter() - t0, 2),
        "seconds_localize": round(t_loc, 2),
        "seconds_features": round(t_feat, 2),
        "submission": str(out_csv),
        "points": str(pts_path),
    }
    write_json_atomic(work / "predict_log.json", summary)
    for sid, why in skipped.items():
        log.warning("study %s: %s", sid, why)
    return summary

