"""`radspine extract-features`."""

from __future__ import annotations

from pathlib import Path

import typer

from radspine.commands import setup_logging, user_errors


def register(app: typer.Typer) -> None:
    @app.command("extract-features")
    def extract_features_cmd(
        data: Path = typer.Option(..., "--data", help="Dataset root (competition layout)."),
        split: str = typer.Option("train", "--split", help="train or test."),
        out: Path = typer.Option(..., "--out", help="Work directory for features.parquet, meta.json, cache."),
        points: str = typer.Option("labels", "--points", help="'labels' or a points CSV (train_label_coordinates format)."),
        config: Path | None = typer.Option(None, "--config", help="YAML config (default: packaged default.yaml)."),
        workers: int | None = typer.Option(None, "--workers", help="Local processes (default: number of cores)."),
        scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address, or 'local'."),
        embedders: Path | None = typer.Option(None, "--embedders", help="Trained CNN embedders (test split)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Recompute instead of resuming / refusing."),
        quiet: bool = typer.Option(False, "--quiet", help="Logs only, no progress bar."),
    ) -> None:
        """Patches around the level points → radiomics + CNN embeddings → WORKDIR/features.parquet."""
        setup_logging(quiet)
        with user_errors():
            from radspine.config import load_config
            from radspine.features.extract import extract_features

            cfg = load_config(config).features
            meta = extract_features(
                data, split, out, points=points, cfg=cfg, workers=workers, scheduler=scheduler,
                overwrite=overwrite, embedders_dir=embedders, quiet=quiet,
            )
            typer.echo(
                f"{meta['n_rows']} rows × {meta['n_features']} features for {meta['n_studies']} studies "
                f"({meta['n_failed_studies']} failed) in {meta['seconds']} s → {out / 'features.parquet'}"
            )
