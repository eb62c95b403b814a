"""``radspine tune``: Optuna-tuned, blended and calibrated graders → a model bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from radspine.commands import setup_logging, user_errors


def register(app: typer.Typer) -> None:
    """Add the ``tune`` command to the app."""

    @app.command("tune")
    def tune_cmd(
        features: Path = typer.Option(..., "--features", help="WORKDIR with features.parquet + meta.json."),
        data: Path = typer.Option(..., "--data", help="Competition-layout folder (train.csv labels)."),
        out: Path = typer.Option(..., "--out", help="MODELDIR to write the bundle into."),
        trials: int = typer.Option(20, "--trials", min=0, help="Optuna trials, split over LightGBM/XGBoost."),
        timeout: float | None = typer.Option(
            None,
            "--timeout",
            min=1,
            help="Seconds for the Optuna trials (mode choice, ablations and final fit come on top).",
        ),
        storage: str | None = typer.Option(
            None, "--storage", help="Optuna storage URL (default sqlite:///MODELDIR/optuna.db)."
        ),
        study_name: str = typer.Option("radspine", "--study-name", help="Same name resumes the study."),
        folds: int = typer.Option(3, "--folds", min=2, help="CV folds (grouped by study)."),
        seed: int = typer.Option(0, "--seed"),
        n_jobs: int = typer.Option(2, "--n-jobs", min=1, help="Threads per model (use 1 on a CPU shared with other jobs)."),
        quiet: bool = typer.Option(False, "--quiet", "-q"),
    ) -> None:
        """Tune LightGBM + XGBoost graders with Optuna, blend, calibrate and write MODELDIR."""
        setup_logging(quiet=quiet)
        with user_errors():
            import optuna

            from radspine.models.tune import TuneOptions, load_features, load_labels, tune

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            table, meta = load_features(features)
            labels = load_labels(data)
            opts = TuneOptions(
                trials=trials,
                timeout=timeout,
                storage=storage,
                study_name=study_name,
                folds=folds,
                seed=seed,
                n_jobs=n_jobs,
            )
            rep = tune(table, labels, out, meta, opts)
            from radspine.models.bundle import package_features

            # The bundle carries its feature config and CNN embedders so `predict` needs nothing else.
            if (features / "features_config.json").is_file():
                package_features(features, out)
            else:
                typer.secho(f"warning: {features} has no features_config.json; `radspine predict` "
                            "cannot use this bundle", err=True)
            ab = rep["ablations"]
            typer.echo(
                f"wrote {out}  (mode {rep['mode_selection']['winner']}, calibration {rep['calibration']['method']})"
            )
            for name, e in ab.items():
                typer.echo(
                    f"  {name:<16} CV {e['before']['score']:.4f} → {e['after']['score']:.4f} calibrated"
                )
