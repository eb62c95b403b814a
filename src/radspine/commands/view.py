"""`radspine view`: a static study viewer (one HTML page per study + index.html) from predict's output."""

from __future__ import annotations

from pathlib import Path

import typer

from radspine.commands import dataset_root, setup_logging, user_errors


def register(app: typer.Typer) -> None:
    @app.command("view")
    def view_cmd(
        data: Path | None = typer.Option(None, "--data", help="Dataset root (competition layout)."),
        dicom: Path | None = typer.Option(None, "--dicom", help="Plain DICOM export (as given to `predict --dicom`) "
                                          "instead of --data."),
        series_types: Path | None = typer.Option(None, "--series-types", help="With --dicom: the override CSV "
                                                 "predict was given."),
        predictions: Path = typer.Option(..., "--predictions", help="Output folder of `radspine predict` "
                                         "(holds predictions.csv), or the predictions.csv itself."),
        out: Path = typer.Option(..., "--out", help="Viewer folder (study_<id>.html, index.html)."),
        study: list[int] = typer.Option(None, "--study", help="Study id (repeatable); default: every predicted study."),
        model: Path | None = typer.Option(None, "--model", help="Model bundle, for feature contributions "
                                          "(default: PREDICTIONS/model when present)."),
        split: str = typer.Option("test", "--split", help="Split the predictions are for."),
        features: Path | None = typer.Option(None, "--features", help="features.parquet predict used "
                                             "(default: found under PREDICTIONS)."),
        points: Path | None = typer.Option(None, "--points", help="Points CSV predict graded at (default: the one "
                                           "its predict_log.json names)."),
        max_px: int = typer.Option(512, "--max-px", min=64, max=2048, help="Longer side of the stored slices (px)."),
        image_format: str = typer.Option("webp", "--format", help="Stored slice format: webp or png."),
        quality: int = typer.Option(85, "--quality", min=1, max=100, help="WebP quality (100 = lossless)."),
        top_k: int = typer.Option(3, "--top-k", min=0, help="Features listed per row."),
        workers: int | None = typer.Option(None, "--workers", min=1, help="Local processes (default: cores)."),
        quiet: bool = typer.Option(False, "--quiet", help="Warnings only."),
    ) -> None:
        """Per-study pages to scroll every series, check each grade against its measurements, drag a wrong
        point and save the points CSV that `radspine predict --points` re-grades at (no server needed)."""
        setup_logging(quiet)
        with user_errors():
            from radspine.viewer import build_viewer

            root = dataset_root(data, dicom, series_types, out, split=split)
            res = build_viewer(root, predictions, out, model_dir=model, split=split, study_ids=study or None,
                               features=features, points=points, top_k=top_k, max_px=max_px,
                               image_format=image_format, quality=quality, workers=workers)
            extra = f", {len(res.failed)} failed (listed in the index)" if res.failed else ""
            typer.echo(f"{res.n} study page(s){extra} → {res.index}")
