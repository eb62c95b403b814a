"""`radspine demo`: the whole pipeline on the embedded phantom, scored on studies it never saw.

synth (train + held-out test) → train-localizer → extract-features → tune → predict → score.
Every artifact stays in the output folder for the user to look at.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from radspine.fsutil import write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class DemoOptions:
    """Sizes of the demo; the defaults finish in about 10 minutes on 2 CPU cores."""

    train_studies: int = 60
    test_studies: int = 20
    size: int = 128
    trials: int = 8
    seed: int = 0
    workers: int | None = None
    localizer_epochs: int | None = None
    cnn_epochs: int | None = None
    ablations: bool = True
    quiet: bool = True


def run_demo(out: str | Path, opts: DemoOptions | None = None) -> dict:
    """Run the demo into ``out`` and return (and write ``out/demo_summary.json``) its summary."""
    from radspine.config import load_config
    from radspine.features.extract import extract_features
    from radspine.io.dataset import Dataset
    from radspine.localize.train import train_localizer
    from radspine.metrics import priors_predictions, priors_table, score
    from radspine.models.bundle import package_features
    from radspine.models.tune import TuneOptions, tune
    from radspine.predict import predict
    from radspine.synth import make_dataset

    opts = opts or DemoOptions()
    out = Path(out)
    data, model, work = out / "data", out / "model", out / "work"
    timings: dict[str, float] = {}

    def step(name: str):
        log.info("demo: %s", name)
        timings[name] = time.perf_counter()

    def done(name: str) -> None:
        timings[name] = round(time.perf_counter() - timings[name], 1)

    step("synth")
    if not (data / "test_solution.csv").is_file():
        make_dataset(data, opts.train_studies, opts.test_studies, seed=opts.seed, size=opts.size)
    done("synth")

    step("train_localizer")
    lcfg = load_config().localizer
    if opts.localizer_epochs is not None:
        lcfg = lcfg.model_copy(update={"epochs": opts.localizer_epochs})
    loc_report = train_localizer(data, model / "localizer", lcfg, seed=opts.seed)
    done("train_localizer")

    step("extract_features")
    cfg = load_config().features
    if opts.cnn_epochs is not None:
        cfg = cfg.model_copy(update={"embeddings": cfg.embeddings.model_copy(update={"epochs": opts.cnn_epochs})})
    extract_features(data, "train", work / "train", cfg=cfg, workers=opts.workers, overwrite=True, quiet=opts.quiet)
    done("extract_features")

    step("tune")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = pd.read_parquet(work / "train" / "features.parquet")
    meta = json.loads((work / "train" / "meta.json").read_text())
    labels = Dataset.open(data).labels_long()
    cv = tune(table, labels, model, meta, TuneOptions(trials=opts.trials, seed=opts.seed, ablations=opts.ablations, plots=True))
    package_features(work / "train", model)
    done("tune")

    step("predict")
    pred = predict(data, model, out / "submission.csv", points_out=out / "points.csv",
                   work_dir=work / "test", workers=opts.workers, quiet=opts.quiet)
    done("predict")

    step("score")
    solution = pd.read_csv(data / "test_solution.csv")
    sub = pd.read_csv(out / "submission.csv")
    ours = score(solution, sub)
    priors = priors_predictions(priors_table(labels), sub["row_id"])
    base = score(solution, priors)
    done("score")

    summary = {
        "test_studies": opts.test_studies,
        "train_studies": opts.train_studies,
        "score": {"radspine": ours.as_dict(), "priors_only": base.as_dict()},
        "cv": {k: v.get("after", v) for k, v in cv.get("ablations", {}).items()},
        "localizer": loc_report,
        "predict": pred,
        "seconds": timings,
        "options": asdict(opts),
    }
    write_json_atomic(out / "demo_summary.json", summary)
    return summary


def format_summary(summary: dict) -> str:
    """A plain-text table of the demo result (what `radspine demo` prints)."""
    from radspine.metrics import TERMS

    s = summary["score"]
    lines = [
        f"held-out phantom test: {summary['test_studies']} studies never seen in training "
        f"(trained on {summary['train_studies']}); lower is better",
        f"{'':<14}{'score':>8}" + "".join(f"{t:>18}" for t in TERMS),
    ]
    for name in ("priors_only", "radspine"):
        r = s[name]
        lines.append(f"{name:<14}{r['score']:>8.4f}" + "".join(f"{r[t]:>18.4f}" for t in TERMS))
    loc = summary.get("localizer", {})
    per = loc.get("per_condition") or loc.get("conditions") or {}
    if per:
        lines.append("localizer on held-out training studies (3D error, mm):")
        from radspine.constants import CONDITIONS

        for cond in [c for c in (*CONDITIONS, "overall") if c in per]:
            m = per[cond]
            med = m.get("median_mm", m.get("median_error_mm"))
            w5 = m.get("within_5mm", m.get("frac_within_5mm"))
            w10 = m.get("within_10mm", m.get("frac_within_10mm"))
            lines.append(f"  {cond:<36} median {med:6.2f}  ≤5 mm {w5:5.1%}  ≤10 mm {w10:5.1%}")
    order = ("synth", "train_localizer", "extract_features", "tune", "predict", "score")
    secs = summary["seconds"]
    lines.append("seconds: " + ", ".join(f"{k} {secs[k]}" for k in order if k in secs))
    return "\n".join(lines)
