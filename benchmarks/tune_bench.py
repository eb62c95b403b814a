"""Benchmark `radspine tune`: wall time of N Optuna trials on a feature table, and the score reached.

Prints one JSON object. Default: 50 trials (25 LightGBM + 25 XGBoost), 3 folds, 2 threads per model (run it
under `taskset -c 0,1` to pin to 2 cores). The table is either a real phantom feature table
(``--features WORKDIR --data DIR`` from `radspine extract-features`) or, by default, the tests' fake table
of ``--studies`` studies.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time


def main() -> None:
    """Run the benchmark and print JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--studies", type=int, default=300)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--out", default=None, help="MODELDIR to keep (default: a temporary folder)")
    ap.add_argument("--features", default=None, help="WORKDIR of extract-features (phantom table)")
    ap.add_argument("--data", default=None, help="dataset root with train.csv (with --features)")
    args = ap.parse_args()

    import sys
    from pathlib import Path

    import optuna

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake table is a test helper
    from helpers.fake_table import make_fake_table

    from radspine.commands.tune import load_labels
    from radspine.models.tune import TuneConfig, tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.features:
        from radspine.models.tune import load_features

        table, meta = load_features(args.features)
        labels = load_labels(args.data)
    else:
        table, labels = make_fake_table(args.studies, seed=args.seed)
        meta = {"config_hash": "bench", "backbone": "fake"}
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        t0 = time.perf_counter()
        rep = tune(
            table,
            labels,
            out,
            meta,
            TuneConfig(trials=args.trials, folds=args.folds, seed=args.seed, n_jobs=args.n_jobs),
        )
        wall = time.perf_counter() - t0
    abl = rep["ablations"]
    print(
        json.dumps(
            {
                "table": args.features or "fake",
                "studies": int(table["study_id"].nunique()),
                "rows": len(table),
                "features": rep["n_features"],
                "trials": args.trials,
                "folds": args.folds,
                "n_jobs": args.n_jobs,
                "cpu_affinity": len(os.sched_getaffinity(0)),
                "machine": platform.node(),
                "wall_s_total": round(wall, 1),
                "wall_s_trials": round(rep["timings"]["tuning_s"], 1),
                "timings": {k: round(v, 1) for k, v in rep["timings"].items()},
                "pruned": {b: t["n_pruned"] for b, t in rep["tuning"].items()},
                "mode": rep["mode_selection"]["winner"],
                "mode_margin": round(rep["mode_selection"]["margin"], 4),
                "calibration": rep["calibration"]["method"],
                "cv_score": round(rep["score"], 4),
                "score_unbiased": round(rep["score_unbiased"], 4),
                "score_selection": round(rep["score_selection"], 4),
                "selection_gap": round(rep["score_unbiased"] - rep["score_selection"], 4),
                "cv_before_calibration": round(abl["merged"]["before"]["score"], 4),
                "priors_only": round(rep["priors_only_score"], 4),
                "ablations_after": {k: round(v["after"]["score"], 4) for k, v in abl.items()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
