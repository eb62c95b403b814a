"""Real-data development loop: study-grouped CV of the foraminal term on the real RSNA foraminal development set.

    .venv/bin/python benchmarks/real_nfn_cv.py [--data $TMPDIR/rsna_nfn_dev] [--work $TMPDIR/real_nfn_cv]
        [--config my.yaml] [--set embeddings.image_size=96 ...] [--folds 5] [--trials 8] [--skip-tune]
        [--reuse --drop REGEX ...]

The development set is real RSNA 2024 data (``../shared/realdata/README.md`` §1, built by ``build_dev.sh``): it
never enters the repository or the tests. This script runs what a user runs, ``extract-features`` (with the
packaged config, ``--config``, and ``--set section.key=value`` overrides of the feature config) and ``tune``,
and reports, on the same study folds (the feature table's ``cv_fold``, ``--folds`` of them):

- ``prior``: the best per-level prior, weighted grade frequencies per condition × level of the training folds;
- ``cnn``: the CNN alone, its out-of-fold grade probabilities (``cnn_0..2``) as they are;
- ``radiomics_morphometry``: ``tune`` on the table without any CNN evidence: the ``cnn_*`` columns, their
  neighbour/side context copies (``ctx_*_cnn_*``) and ``has_cnn`` (unbiased outer-fold score);
- ``merged``: ``tune`` on the whole table (unbiased outer-fold score);

each as the foraminal weighted log loss (weights 1/2/4) and as a multiple of the prior, with the seconds of
each stage (extraction per-stage profile from ``meta.json``). JSON on stdout and in ``WORK/real_nfn_cv.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FORAMINAL = ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing")


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def weighted_logloss(probs: np.ndarray, grades: np.ndarray) -> float:
    """The metric's per-group term: log loss with sample weights 1/2/4 by true grade, rows normalised."""
    from radspine.constants import SEVERITY_WEIGHTS

    p = np.clip(probs / probs.sum(axis=1, keepdims=True), 1e-15, 1.0)
    g = grades.astype(int)
    w = np.asarray(SEVERITY_WEIGHTS)[g]
    return float((-np.log(p[np.arange(len(g)), g]) * w).sum() / w.sum())


def fold_priors(cells: np.ndarray, grades: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Per row, the weighted grade frequencies of its condition × level cell in the other folds (Laplace +1)."""
    from radspine.constants import SEVERITY_WEIGHTS

    out = np.zeros((len(grades), 3))
    w = np.asarray(SEVERITY_WEIGHTS, dtype=np.float64)
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        for c in np.unique(cells[te]):
            counts = np.bincount(grades[tr & (cells == c)].astype(int), minlength=3) + 1.0
            out[te & (cells == c)] = counts * w / (counts * w).sum()
    return out


def parse_sets(items: list[str]) -> dict:
    """``["embeddings.image_size=96", ...]`` → nested dict of feature-config overrides (values read as YAML)."""
    import yaml

    out: dict = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep:
            _fail(f"--set {item!r}: expected section.key=value")
        d = out
        parts = key.split(".")
        for k in parts[:-1]:
            d = d.setdefault(k, {})
        d[parts[-1]] = yaml.safe_load(val)
    return out


def merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = merge(dict(base.get(k) or {}), v) if isinstance(v, dict) else v
    return base


def main() -> None:
    tmp = Path(tempfile.gettempdir())
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=tmp / "rsna_nfn_dev")
    ap.add_argument("--work", type=Path, default=tmp / "real_nfn_cv")
    ap.add_argument("--config", type=Path, default=None, help="radspine config YAML (its features section)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="features override section.key=value")
    ap.add_argument("--folds", type=int, default=5, help="study folds of the CNN and the graders (cnn_folds)")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reuse", action="store_true",
                    help="keep WORK/features when it was extracted with the same settings (re-run the graders only)")
    ap.add_argument("--skip-tune", action="store_true", help="only extract and score the CNN alone")
    ap.add_argument("--graders", nargs="+", choices=("radiomics_morphometry", "merged"),
                    default=["radiomics_morphometry", "merged"], help="which tuned graders to run")
    ap.add_argument("--drop", action="append", default=[], metavar="REGEX",
                    help="leave the feature columns matching this regex out of both graders (an ablation: with "
                         "--reuse, which columns earn their place without extracting again)")
    ap.add_argument("--cache-from", type=Path, default=None,
                    help="another run's work folder: hard-link its per-study cache (radiomics, masks, patches are "
                         "the same while only CNN settings change)")
    args = ap.parse_args()
    if not (args.data / "train_label_coordinates.csv").is_file():
        _fail(f"{args.data}: no real development set here (build it with ../shared/realdata/build_dev.sh)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")

    import pandas as pd

    from radspine.config import load_config
    from radspine.features.config import FeaturesConfig
    from radspine.features.extract import extract_features
    from radspine.features.schema import is_cnn_column
    from radspine.io.dataset import Dataset
    from radspine.models.tune import load_tune_config, tune

    cfg = load_config(args.config)
    feats = merge(cfg.features.model_dump(), {"cnn_folds": args.folds, **parse_sets(args.sets)})
    fcfg = FeaturesConfig.model_validate(feats)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"data": str(args.data), "folds": args.folds, "trials": args.trials, "overrides": parse_sets(args.sets),
                 "seconds": {}}  # fmt: skip
    if args.cache_from is not None and not (work / "features" / "cache").exists():
        import os
        import shutil

        src = args.cache_from / "features" / "cache"
        src = src if src.is_dir() else args.cache_from / "cache"
        shutil.copytree(src, work / "features" / "cache", copy_function=os.link)
    done_cfg = work / "features" / "features_config.json"
    # Compared as validated configs: a setting added since (at its default) still matches the old run's.
    if args.reuse and done_cfg.is_file() and FeaturesConfig.model_validate(json.loads(done_cfg.read_text())) == fcfg:
        # Same feature settings, finished table: only the graders run again (the CNN stage alone is ~40 min).
        meta = json.loads((work / "features" / "meta.json").read_text())
        res["seconds"]["extract"] = meta.get("seconds")
        res["extract_reused"] = True
    else:
        t0 = time.perf_counter()
        meta = extract_features(args.data, "train", work / "features", cfg=fcfg, workers=args.workers, quiet=True)
        res["seconds"]["extract"] = round(time.perf_counter() - t0, 1)
    res["extract_profile_s"] = {**(meta.get("profile_s") or {}), "studies": meta.get("seconds_studies")}
    table = pd.read_parquet(work / "features" / "features.parquet")
    # An ablation's graders and result get their own names: optuna refuses to resume a study on other columns.
    tag = "_drop-" + hashlib.sha1("\n".join(args.drop).encode()).hexdigest()[:8] if args.drop else ""
    if args.drop:
        import re

        try:
            pats = [re.compile(rx) for rx in args.drop]
        except re.error as err:
            _fail(f"--drop {err.pattern!r}: not a regular expression ({err})")
        gone = [c for c in table if any(p.search(c) for p in pats)]
        if not gone:
            _fail(f"--drop {args.drop}: matches no feature column")
        table = table.drop(columns=gone)
        res["dropped_columns"] = len(gone)
    labels = Dataset.open(args.data).labels_long()
    lab = labels.dropna(subset=["grade"])
    key = lab["study_id"].astype(str) + "_" + lab["condition"] + "_" + lab["level"]
    grade_of = dict(zip(key, lab["grade"], strict=True))
    rows = table[table["condition"].isin(FORAMINAL)].copy()
    rows["grade"] = rows["row_id"].map(grade_of)
    rows = rows.dropna(subset=["grade"])
    g = rows["grade"].to_numpy(int)
    folds = rows["cv_fold"].to_numpy()
    cells = (rows["condition"] + "_" + rows["level"]).to_numpy()
    prior = weighted_logloss(fold_priors(cells, g, folds), g)
    res["rows"] = len(rows)
    res["prior"] = round(prior, 4)

    def entry(v: float) -> dict:
        return {"foraminal": round(v, 4), "x_prior": round(v / prior, 3)}

    if {"cnn_0", "cnn_1", "cnn_2"} <= set(rows.columns):
        p = rows[["cnn_0", "cnn_1", "cnn_2"]].to_numpy(np.float64, copy=True)
        ok = np.isfinite(p).all(axis=1)
        p[~ok] = fold_priors(cells, g, folds)[~ok]  # no CNN probability at a row: its fold's prior
        res["cnn"] = {**entry(weighted_logloss(p, g)), "rows_without_cnn": int((~ok).sum())}
    if not args.skip_tune:
        meta_j = json.loads((work / "features" / "meta.json").read_text())
        opts = load_tune_config(trials=args.trials, seed=0, ablations=False, plots=False)
        for name, tab in (("radiomics_morphometry", table.drop(columns=[c for c in table if is_cnn_column(c)])),
                          ("merged", table)):  # fmt: skip
            if name not in args.graders:
                continue
            t = time.perf_counter()
            rep = tune(tab, labels, work / f"tune_{name}{tag}", meta_j, opts)
            res["seconds"][f"tune_{name}"] = round(time.perf_counter() - t, 1)
            # The unbiased outer-fold score's foraminal term (the only group this set grades).
            sel = (rep.get("baselines") or rep.get("ablations"))["merged"]["after"]
            unb = (rep.get("unbiased") or {}).get("after") or sel
            res[name] = {**entry(float(unb["foraminal"])), "selection": round(float(sel["foraminal"]), 4)}
    out = json.dumps(res, indent=1, default=str)
    print(out)
    (work / f"real_nfn_cv{tag}.json").write_text(out)


if __name__ == "__main__":
    main()
