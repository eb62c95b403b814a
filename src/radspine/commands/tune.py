"""``radspine tune``: Optuna-tuned, blended and calibrated graders → a model bundle.

Reading the labels (radspine.io) happens here, in the command layer, so :mod:`radspine.models` never
imports :mod:`radspine.io`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

from radspine.commands import setup_logging, user_errors


def read_train_csv(path: str | Path) -> pd.DataFrame:
    """Competition ``train.csv`` → long labels with float grades 0/1/2 (NaN when blank), via radspine.io."""
    from radspine.io.dataset import read_train_csv as read_wide
    from radspine.models.tune import wide_to_long

    return wide_to_long(read_wide(Path(path)))


def load_labels(data_dir: str | Path) -> pd.DataFrame:
    """Long labels ``[study_id, condition, level, grade]`` of a competition-layout folder (radspine.io).

    A folder holding only ``train.csv`` (no image folders) is accepted too: tuning needs nothing else.
    """
    from radspine.errors import DatasetError
    from radspine.io.dataset import Dataset

    d = Path(data_dir)
    try:
        labels = Dataset.open(d).labels_long()
    except DatasetError:
        if not (d / "train.csv").is_file():
            raise
        return read_train_csv(d / "train.csv")
    if labels.empty:
        raise DatasetError(f"{d}: no labels (train.csv absent)")
    return labels[["study_id", "condition", "level", "grade"]]


def register(app: typer.Typer) -> None:
    """Add the ``tune`` command to the app."""

    @app.command("tune")
    def tune_cmd(
        features: Path = typer.Option(..., "--features", help="WORKDIR with features.parquet + meta.json."),
        data: Path = typer.Option(..., "--data", help="Competition-layout folder (train.csv labels)."),
        out: Path = typer.Option(..., "--out", help="MODELDIR to write the bundle into."),
        config: Path | None = typer.Option(
            None, "--config", help="Tune settings YAML (default: the packaged configs/tune.yaml)."
        ),
        trials: int | None = typer.Option(None, "--trials", min=0, help="Optuna trials, split over LightGBM/XGBoost [20]."),
        timeout: float | None = typer.Option(
            None,
            "--timeout",
            min=1,
            help="Seconds for the Optuna search (Optuna's timeout: the running trial finishes; mode choice, final "
            "fit, unbiased CV and ablations come on top).",
        ),
        ablations: bool | None = typer.Option(
            None, "--ablations/--no-ablations",
            help="Also score each feature set alone (radiomics_only, cnn_only, …): one cross-validated refit each "
            "(off by default).",
        ),
        storage: str | None = typer.Option(
            None, "--storage", help="Optuna storage URL (default sqlite:///MODELDIR/optuna.db)."
        ),
        study_name: str | None = typer.Option(None, "--study-name", help="Same name resumes the study [radspine]."),
        folds: int | None = typer.Option(None, "--folds", min=2, help="CV folds (grouped by study) [3]."),
        seed: int | None = typer.Option(None, "--seed", help="[0]"),
        n_jobs: int | None = typer.Option(
            None, "--n-jobs", min=1, help="Threads per model (use 1 on a CPU shared with other jobs) [2]."
        ),
        quiet: bool = typer.Option(
            False, "--quiet", "-q", help="No progress (a bar on a terminal, a line per trial in a log), warnings only."
        ),
    ) -> None:
        """Tune LightGBM + XGBoost graders with Optuna, blend, calibrate and write MODELDIR."""
        setup_logging(quiet=quiet)
        with user_errors():
            import optuna

            from radspine.models.bundle import package_features
            from radspine.models.tune import load_features, load_tune_config, tune

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            cfg = load_tune_config(
                config,
                trials=trials,
                timeout=timeout,
                storage=storage,
                study_name=study_name,
                folds=folds,
                seed=seed,
                n_jobs=n_jobs,
                ablations=ablations,
            )
            cfg = cfg.model_copy(update={"progress": not quiet})
            table, meta = load_features(features)
            labels = load_labels(data)
            rep = tune(table, labels, out, meta, cfg)
            # The bundle carries its feature config and CNN embedders so `predict` needs nothing else.
            if (features / "features_config.json").is_file():
                package_features(features, out)
            else:
                typer.secho(
                    f"warning: {features} has no features_config.json; `radspine predict` cannot use this bundle",
                    err=True,
                )
            scr = rep["screen"]
            typer.echo(
                f"wrote {out}  (mode {rep['mode_selection']['winner']}, calibration {rep['calibration']['method']}, "
                f"{scr['n_features_used']} of {rep['n_features']} feature columns used after the screen)"
            )
            for g, e in rep["groups"].items():
                if e["status"] != "modelled":
                    typer.echo(f"  {g}: priors only ({e['reason']})")
            for name, e in rep.get("ablations", rep["baselines"]).items():
                typer.echo(f"  {name:<20} CV {e['before']['score']:.4f} → {e['after']['score']:.4f} calibrated")
            if "ablations_note" in rep:
                typer.echo(f"  ({rep['ablations_note']})")
            ub = rep["score_unbiased"]
            typer.echo(
                f"  score: selection {rep['score_selection']:.4f}"
                + (f", unbiased (outer folds) {ub:.4f}" if ub is not None else "")
            )
