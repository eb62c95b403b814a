"""`radspine report`: per-study PNG reports (points by grade + top features) and an index.html."""

from __future__ import annotations

from pathlib import Path

import typer

from radspine.commands import setup_logging, user_errors


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        data: Path = typer.Option(..., "--data", help="Dataset root (competition layout)."),
        predictions: Path = typer.Option(..., "--predictions", help="Output folder of `radspine predict` "
                                         "(holds predictions.csv), or the predictions.csv itself."),
        out: Path = typer.Option(..., "--out", help="Report folder (study_<id>.png/.json, index.html)."),
        study: list[int] = typer.Option(None, "--study", help="Study id (repeatable); default: every predicted study."),
        model: Path | None = typer.Option(None, "--model", help="Model bundle, for feature contributions "
                                          "(default: PREDICTIONS/model when present)."),
        split: str = typer.Option("test", "--split", help="Split the predictions are for."),
        features: Path | None = typer.Option(None, "--features", help="features.parquet predict used "
                                             "(default: found under PREDICTIONS)."),
        top_k: int = typer.Option(3, "--top-k", min=0, help="Features listed per row."),
        dpi: int = typer.Option(72, "--dpi", min=30, max=300, help="PNG resolution."),
        quiet: bool = typer.Option(False, "--quiet", help="Warnings only."),
    ) -> None:
        """Draw each study's predicted points on its slices, coloured by grade, with the top SHAP features."""
        setup_logging(quiet)
        with user_errors():
            from radspine.report import render_reports

            n = render_reports(data, predictions, out, model_dir=model, split=split, study_ids=study or None,
                               features=features, top_k=top_k, dpi=dpi)
            typer.echo(f"{n} study report(s) → {out / 'index.html'}")
