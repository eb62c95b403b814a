"""`radspine demo`: the whole pipeline on the embedded phantom, scored on studies it never saw.

synth (train + held-out test) → train-localizer → extract-features → tune → predict → score → reports.
Every artifact stays in the output folder for the user to look at.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from radspine.fsutil import write_json_atomic

log = logging.getLogger(__name__)


# The two feature-set ablations the demo reports beside the merged model (each one cross-validated refit):
# whether the radiomics or the CNN embeddings alone already carry the grade.
DEMO_ABLATIONS: tuple[str, ...] = ("radiomics_only", "cnn_only")


@dataclass
class DemoOptions:
    """Sizes of the demo. The localizer is fine-tuned from the shipped one (a few epochs) rather than trained
    from scratch, and tune runs few trials with the column screen: the defaults aim at under 6 minutes on 2
    cores after the install."""

    train_studies: int = 60
    test_studies: int = 20
    size: int = 128
    trials: int = 6
    seed: int = 0
    workers: int | None = None
    localizer_epochs: int | None = 2  # the shipped net's loss on the demo phantom hardly moves after 2
    localizer_init: str | None = "shipped"  # fine-tune the packaged localizer; None: train from scratch
    cnn_epochs: int | None = None
    # The demo's CNN trains its last stage on cached, un-augmented activations (the package's earlier default):
    # the package default that real CV chose (radspine.features.embeddings: all but the stem and 2 stages, on
    # augmented patches) costs more minutes here, and on this phantom the CNN alone scores near the priors (the
    # cnn_only ablation). None: the package default.
    cnn_freeze_stages: int | None = 6
    ablations: bool | tuple[str, ...] = DEMO_ABLATIONS
    reports: bool = True
    quiet: bool = True


def run_demo(out: str | Path, opts: DemoOptions | None = None) -> dict:
    """Run the demo into ``out`` and return (and write ``out/demo_summary.json``) its summary.

    The training and prediction sequence is :mod:`radspine.pipeline`'s (the CLI's own); the demo adds the
    phantom, the held-out score and the per-study reports (``out/report/index.html``).
    """
    from radspine import pipeline
    from radspine.config import load_config
    from radspine.io.dataset import Dataset
    from radspine.metrics import priors_predictions, priors_table, score
    from radspine.models.tune import load_tune_config
    from radspine.parallel import default_workers
    from radspine.synth import make_dataset

    opts = opts or DemoOptions()
    out = Path(out)
    data, model, work = out / "data", out / "model", out / "work"
    timings: dict[str, float] = {}

    cores = default_workers() if opts.workers is None else max(1, opts.workers)
    t = time.perf_counter()
    if not (data / "test_solution.csv").is_file():
        # Byte-identical whatever the worker count (make_dataset's contract).
        make_dataset(data, opts.train_studies, opts.test_studies, seed=opts.seed, size=opts.size, workers=cores)
    timings["synth"] = round(time.perf_counter() - t, 1)

    cfg = load_config()
    if opts.localizer_epochs is not None:
        cfg.localizer = cfg.localizer.model_copy(update={"epochs": opts.localizer_epochs})
    emb = cfg.features.embeddings
    if opts.cnn_epochs is not None:
        emb = emb.model_copy(update={"epochs": opts.cnn_epochs})
    if opts.cnn_freeze_stages is not None:
        emb = emb.model_copy(update={"freeze_stages": opts.cnn_freeze_stages, "cache_frozen": True})
    # PCA needs at least as many training patches per fold as dimensions: a tiny demo (a handful of
    # studies) gets fewer CNN dims instead of an error.
    max_dims = max(1, int(opts.train_studies * 5 * (cfg.features.cnn_folds - 1) / cfg.features.cnn_folds) - 1)
    if emb.pca_dims and emb.pca_dims > max_dims:
        log.info("demo: %d training studies → CNN pca_dims %d (was %d)", opts.train_studies, max_dims, emb.pca_dims)
        emb = emb.model_copy(update={"pca_dims": max_dims})
    cfg.features = cfg.features.model_copy(update={"embeddings": emb})

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trained = pipeline.train(
        data, model, work / "train", config=cfg, workers=opts.workers, seed=opts.seed, quiet=opts.quiet,
        localizer_init=opts.localizer_init,
        # One thread per booster: the demo's ~1,500-row table gains little from a second OpenMP thread, and a
        # thread waiting for a busy core slows every boosting round down.
        tune_options=load_tune_config(trials=opts.trials, seed=opts.seed, ablations=opts.ablations, plots=True,
                                      progress=not opts.quiet, n_jobs=1),
    )
    timings.update(trained["seconds"])

    t = time.perf_counter()
    pred = pipeline.predict(data, model, out / "submission.csv", points_out=out / "points.csv",
                            work_dir=work / "test", workers=opts.workers, quiet=opts.quiet,
                            report_dir=out / "report" if opts.reports else None,
                            viewer_dir=out / "viewer" if opts.reports else None)  # fmt: skip
    timings["predict"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    solution = pd.read_csv(data / "test_solution.csv")
    sub = pd.read_csv(out / "submission.csv")
    ours = score(solution, sub)
    labels = Dataset.open(data).labels_long()
    priors = priors_predictions(priors_table(labels), sub["row_id"])
    base = score(solution, priors)
    timings["score"] = round(time.perf_counter() - t, 1)

    cv = trained["cv"]
    summary = {
        "test_studies": opts.test_studies,
        "train_studies": opts.train_studies,
        "score": {"radspine": ours.as_dict(), "priors_only": base.as_dict()},
        "cv": {k: v.get("after", v) for k, v in (cv.get("ablations") or cv.get("baselines", {})).items()},
        "cv_score_unbiased": cv.get("score_unbiased"),
        "cv_score_selection": cv.get("score_selection"),
        "localizer": trained.get("localizer", {}),
        "predict": pred,
        "reports": pred.get("reports"),
        "viewer": pred.get("viewer"),
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
    rep = summary.get("reports")
    if rep:
        lines.append(f"reports: {rep['n']} studies → {rep['index']} (one PNG per study beside it)")
    return "\n".join(lines)
