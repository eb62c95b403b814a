"""Benchmark `radspine tune`: wall time of N Optuna trials on a fake feature table, and the score reached.

Prints one JSON object. Default: 50 trials (25 LightGBM + 25 XGBoost), 300 studies, 3 folds, 1 thread per
model (run it under `taskset -c 0,1` to pin to 2 cores). Uses the tests' fake table generator.
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
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--out", default=None, help="MODELDIR to keep (default: a temporary folder)")
    args = ap.parse_args()

    import optuna

    from radspine.models.fake_table import make_fake_table
    from radspine.models.tune import TuneOptions, tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table, labels = make_fake_table(args.studies, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        t0 = time.perf_counter()
        rep = tune(
            table,
            labels,
            out,
            {"config_hash": "bench", "backbone": "fake"},
            TuneOptions(trials=args.trials, folds=args.folds, seed=args.seed, n_jobs=args.n_jobs),
        )
        wall = time.perf_counter() - t0
    abl = rep["ablations"]
    print(
        json.dumps(
            {
                "studies": args.studies,
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
                "cv_before_calibration": round(abl["merged"]["before"]["score"], 4),
                "priors_only": round(rep["priors_only_score"], 4),
                "ablations_after": {k: round(v["after"]["score"], 4) for k, v in abl.items()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
