"""Train/test skew experiment: which training points give the best held-out score at localizer points.

Trains the localizer on the phantom's train split, predicts the test split's points, then for each
variant extracts training features (at labeled points, jittered points, out-of-fold localizer points,
or with another radiomics/CNN setting), tunes graders with few trials and scores the held-out studies
whose features were extracted at the *localizer-predicted* points. Prints one JSON document.
Variants: labels, jitter<sigma>, oof, nolog (radiomics without LoG), nocnn, nonarrow (no structure masks:
no morphometry, no mask-ROI radiomics; ``--variants labels,nonarrow`` is the with/without comparison).

    python benchmarks/skew_experiment.py --data PHANTOM --work WORKDIR [--variants labels,jitter2,oof]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd


def _to_schema(points: pd.DataFrame, out_csv: Path) -> Path:
    """Localizer output → train_label_coordinates.csv format (CSV names, localised rows only)."""
    from radspine.constants import CONDITION_NAMES, LEVEL_NAMES
    from radspine.fsutil import write_csv_atomic

    ok = (points["series_id"] >= 0) & points["x"].notna() & points["y"].notna()
    p = points.loc[ok, ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]].copy()
    p["condition"] = p["condition"].map(lambda c: CONDITION_NAMES.get(c, c))
    p["level"] = p["level"].map(lambda v: LEVEL_NAMES.get(v, v))
    write_csv_atomic(p, out_csv)
    return out_csv


def prepare(data: Path, work: Path, loc_epochs: int = 10, oof: bool = False, init: str | None = None) -> dict:
    """Train the localizer on ``data``'s train split (cached in ``work``; ``init="shipped"`` fine-tunes the
    packaged one), write the test split's predicted points (and, with ``oof``, out-of-fold training points).
    Returns ``{"localizer_s": seconds}``."""
    from radspine.localize import LocalizerConfig, localize_dataset, oof_points, train_localizer

    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lcfg = LocalizerConfig(epochs=loc_epochs, device="cpu")
    loc_dir = work / "localizer"
    if not (loc_dir / "meta.json").exists():
        train_localizer(data, loc_dir, lcfg, seed=0, init=init)
    test_pts = work / "test_points.csv"
    if not test_pts.exists():
        _to_schema(localize_dataset(data, loc_dir, work / "test_points_raw.csv", split="test"), test_pts)
    oof_csv = work / "oof_points.csv"
    if oof and not oof_csv.exists():
        _to_schema(oof_points(data, lcfg, n_folds=3, seed=0), oof_csv)
    return {"localizer_s": round(time.perf_counter() - t0, 1)}


# Radiomics params without LoG (sagittal, axial), the ``nolog`` variant's default.
NOLOG_PARAMS = ("sagittal_2d_original.yaml", "axial_2d_original.yaml")


def variant_config(v: str, base, nolog_params: tuple[str, str] = NOLOG_PARAMS):
    """(features config, training points: "labels" or "oof") of a variant name."""
    if v.startswith("jitter"):
        sigma = float(v[len("jitter"):])
        return base.model_copy(update={"patches": base.patches.model_copy(update={"jitter_sigma_mm": sigma})}), "labels"
    if v == "oof":
        return base, "oof"
    if v == "nolog":
        nolog = base.radiomics.model_copy(update={"sagittal": nolog_params[0], "axial": nolog_params[1]})
        return base.model_copy(update={"radiomics": nolog}), "labels"
    if v == "nocnn":
        return base.model_copy(update={"cnn_enabled": False}), "labels"
    if v == "nonarrow":  # no structure masks: no mor_* columns and no mask-ROI radiomics
        return base.model_copy(update={"morphometry": base.morphometry.model_copy(update={"enabled": False}),
                                       "radiomics": base.radiomics.model_copy(update={"mask_rois": False})}), "labels"
    if v == "labels":
        return base, "labels"
    raise SystemExit(f"unknown variant {v}")


def run_variant(data: Path, work: Path, v: str, cfg, points: str, trials: int = 4, workers: int = 2) -> dict:
    """Extract the train split at ``points`` and the test split at the localizer's points (see
    :func:`prepare`), tune, and score the held-out studies."""
    from radspine.commands.tune import load_labels
    from radspine.features.extract import extract_features
    from radspine.metrics import score
    from radspine.models.bundle import Bundle
    from radspine.models.tune import TuneConfig as TuneOptions
    from radspine.models.tune import tune

    t1 = time.perf_counter()
    pts = work / "oof_points.csv" if points == "oof" else "labels"
    wd = work / v
    meta = extract_features(data, "train", wd, points=pts, cfg=cfg, workers=workers, overwrite=True)
    t_train = time.perf_counter() - t1
    emeta = extract_features(data, "test", wd / "test", points=work / "test_points.csv", cfg=cfg, workers=workers,
                             overwrite=True, embedders_dir=wd / "embedders")
    t_test = time.perf_counter() - t1 - t_train
    table = pd.read_parquet(wd / "features.parquet")
    tune(table, load_labels(data), wd / "model", meta,
         TuneOptions(trials=trials, folds=3, seed=0, n_jobs=1, ablations=False, plots=False))
    bundle = Bundle.load(wd / "model")
    pred = bundle.predict_proba(pd.read_parquet(wd / "test" / "features.parquet"))
    res = score(pd.read_csv(data / "test_solution.csv"), pred)
    return {
        "heldout_score": round(float(res.score), 4),
        "heldout_terms": {k: round(float(x), 4) for k, x in res.terms().items()},
        "n_features": meta["n_features"],
        "test_studies_failed": emeta["n_failed_studies"],
        "extract_train_s": round(t_train, 1),
        "extract_test_s": round(t_test, 1),
        "total_s": round(time.perf_counter() - t1, 1),
    }


def priors_score(data: Path) -> float:
    """Held-out score of the training labels' per-level priors (the baseline the ratios are taken to)."""
    from radspine.commands.tune import load_labels
    from radspine.metrics import priors_predictions, priors_table, score

    solution = pd.read_csv(data / "test_solution.csv")
    return round(float(score(solution, priors_predictions(priors_table(load_labels(data)), solution["row_id"])).score), 4)


def main() -> None:
    import torch

    from radspine.features.config import FeaturesConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--variants", default="labels,jitter2,oof,nolog")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--loc-epochs", type=int, default=10)
    ap.add_argument("--loc-init", default=None, help="'shipped': fine-tune the packaged localizer")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-cnn", action="store_true", help="radiomics/geometry features only (cheaper)")
    ap.add_argument("--nolog-sagittal", default=NOLOG_PARAMS[0], help="params without LoG")
    ap.add_argument("--nolog-axial", default=NOLOG_PARAMS[1])
    args = ap.parse_args()
    torch.set_num_threads(2)
    variants = args.variants.split(",")
    results: dict = prepare(args.data, args.work, args.loc_epochs, oof="oof" in variants, init=args.loc_init)
    results["priors_score"] = priors_score(args.data)
    base = FeaturesConfig(cnn_enabled=not args.no_cnn)
    for v in variants:
        cfg, points = variant_config(v, base, (args.nolog_sagittal, args.nolog_axial))
        results[v] = run_variant(args.data, args.work, v, cfg, points, args.trials, args.workers)
        print(json.dumps({v: results[v]}), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
