"""Benchmark `radspine tune`: today's defaults against the old ones on one table, in one run.

Prints one JSON object: per configuration the wall seconds of ``tune()`` (and of its stages), the peak
resident memory of the process that ran it, the CV score (unbiased outer folds; the selection score beside
it), trials complete / pruned and the feature columns the graders used; then the speed-up and the score
difference. Each configuration runs in a fresh process (no screen memo or allocator state carried over).

Configurations:
  old  the defaults before the column screen: 20 trials, every feature-set ablation, no screen, no in-training
       pruning (fold-level median pruning after 5 trials). It runs on today's code, so it also gets what
       today's code does for every configuration (the best trials' OOF predictions reused, no pooled-vs-per-group
       comparison with one modelled group): its time is a lower bound of the old code's.
  new  ``configs/tune.yaml`` as shipped.

The table: ``--features WORKDIR --data DIR`` (an ``extract-features`` output and the dataset with
``train.csv``; e.g. the real foraminal development set) or, without them, the tests' fake table of
``--studies`` studies. ``--trials N`` runs both configurations with N trials (a reduced run).

    python benchmarks/tune_bench.py --features /path/work --data /path/data --trials 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OLD_DEFAULTS: dict = {
    "trials": 20,
    "ablations": True,
    "screen": {"enabled": False},
    "prune_in_training": False,
    "pruner_startup_trials": 5,
}
CONFIGS: dict[str, dict] = {"old": OLD_DEFAULTS, "new": {}}


def _load(args: argparse.Namespace):
    """(table, labels, meta, source) from --features/--data or the fake table."""
    if args.features:
        from radspine.commands.tune import load_labels
        from radspine.models.tune import load_features

        table, meta = load_features(args.features)
        return table, load_labels(args.data), meta, str(args.features)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake table is a test helper
    from helpers.fake_table import make_fake_table

    table, labels = make_fake_table(args.studies, seed=args.seed)
    return table, labels, {"config_hash": "bench", "backbone": "fake"}, f"fake table, {args.studies} studies"


def run_child(args: argparse.Namespace) -> None:
    """Run one configuration (``--child NAME``) and print its JSON on the last line of stdout."""
    import resource

    import optuna

    from radspine.models.tune import load_tune_config, tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table, labels, meta, _ = _load(args)
    over = dict(CONFIGS[args.child])
    if args.trials is not None:
        over["trials"] = args.trials
    over.update(folds=args.folds, seed=args.seed, n_jobs=args.n_jobs, plots=False)
    screen = over.pop("screen", None)
    cfg = load_tune_config(None, **over)
    if screen is not None:
        cfg = cfg.model_copy(update={"screen": cfg.screen.model_copy(update=screen)})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rep = tune(table, labels, Path(tmp) / "model", meta, cfg)
        wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb = ru.ru_maxrss / 1024  # KiB on Linux
    out = {
        "seconds": round(wall, 1),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),  # whole process (table loading included)
        "peak_rss_mb": round(peak_mb),
        "cv_score": round(rep["score"], 4),
        "score_selection": round(rep["score_selection"], 4),
        "priors_only": round(rep["priors_only_score"], 4),
        "trials": cfg.trials,
        "complete": {b: t["n_complete"] for b, t in rep["tuning"].items()},
        "pruned": {b: t["n_pruned"] for b, t in rep["tuning"].items()},
        "n_features": rep["n_features"],
        "n_features_used": rep["screen"]["n_features_used"],
        "ablations": sorted(k for k in rep.get("ablations", {}) if k not in rep["baselines"]),
        "stages_s": {k: round(v, 1) for k, v in rep["timings"].items()},
        "mode": rep["mode_selection"]["winner"],
        "calibration": rep["calibration"]["method"],
        "settings": {k: v for k, v in cfg.model_dump().items() if k != "search_space"},
    }
    print(json.dumps(out))


def main() -> None:
    """Run every configuration in its own process and print the comparison as JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=Path, default=None, help="WORKDIR of extract-features (features.parquet)")
    ap.add_argument("--data", type=Path, default=None, help="dataset root with train.csv (with --features)")
    ap.add_argument("--studies", type=int, default=1500, help="fake-table size without --features")
    ap.add_argument("--trials", type=int, default=None, help="trials for every configuration (default: each its own)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--configs", default="old,new", help="comma-separated subset of " + ",".join(CONFIGS))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.features is not None:
        for need, what in ((args.features / "features.parquet", "--features"), (args.data, "--data")):
            if need is None or not Path(need).exists():
                sys.exit(f"tune_bench: {need if need is not None else '--data'} not found ({what}: the "
                         "extract-features folder and the dataset with train.csv)")
    if args.child:
        run_child(args)
        return
    names = [c for c in args.configs.split(",") if c]
    bad = [c for c in names if c not in CONFIGS]
    if bad:
        sys.exit(f"tune_bench: unknown configuration(s) {bad}; known: {', '.join(CONFIGS)}")
    import pandas as pd

    result: dict = {"table": str(args.features) if args.features else f"fake, {args.studies} studies"}
    if args.features:
        t = pd.read_parquet(args.features / "features.parquet", columns=["study_id"])
        result.update(studies=int(t["study_id"].nunique()), rows=len(t))
    result.update(folds=args.folds, n_jobs=args.n_jobs, cpu_affinity=len(os.sched_getaffinity(0)),
                  machine=platform.node(), configs={})  # fmt: skip
    for name in names:
        cmd = [sys.executable, __file__, "--child", name, "--folds", str(args.folds), "--seed", str(args.seed),
               "--n-jobs", str(args.n_jobs), "--studies", str(args.studies)]
        if args.features:
            cmd += ["--features", str(args.features), "--data", str(args.data)]
        if args.trials is not None:
            cmd += ["--trials", str(args.trials)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"tune_bench: configuration {name!r} failed (exit {proc.returncode}); see its stderr above")
        result["configs"][name] = {**json.loads(proc.stdout.strip().splitlines()[-1]),
                                   "process_seconds": round(time.perf_counter() - t0, 1)}
        print(f"tune_bench: {name} done: {result['configs'][name]['seconds']} s, "
              f"CV {result['configs'][name]['cv_score']}", file=sys.stderr, flush=True)
    if {"old", "new"} <= set(result["configs"]):
        old, new = result["configs"]["old"], result["configs"]["new"]
        result["speedup"] = round(old["seconds"] / new["seconds"], 2)
        result["cv_score_new_minus_old"] = round(new["cv_score"] - old["cv_score"], 4)
        result["target"] = "new >= 3x faster than old at a CV score within 0.005"
        result["target_met"] = bool(result["speedup"] >= 3 and result["cv_score_new_minus_old"] <= 0.005)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
