"""`radspine predict`."""

from __future__ import annotations

from pathlib import Path

import typer

from radspine.commands import setup_logging, user_errors


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict_cmd(
        data: Path = typer.Option(..., "--data", help="Dataset root (competition layout)."),
        model: Path = typer.Option(..., "--model", help="Model bundle from `radspine tune`."),
        out: Path = typer.Option(..., "--out", help="submission.csv to write."),
        split: str = typer.Option("test", "--split", help="Split to predict."),
        points_out: Path | None = typer.Option(None, "--points-out", help="Write the predicted points CSV here."),
        localizer: Path | None = typer.Option(None, "--localizer", help="Localizer model (default MODELDIR/localizer)."),
        work: Path | None = typer.Option(None, "--work", help="Intermediate files (default beside --out)."),
        workers: int | None = typer.Option(None, "--workers", help="Local processes (default: cores)."),
        scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address or 'local'."),
        report_dir: Path | None = typer.Option(None, "--report-dir", help="Also render a visual report per study."),
        quiet: bool = typer.Option(False, "--quiet", help="Logs only, no progress bar."),
    ) -> None:
        """Localize → features → graders → calibrated submission.csv (always 25 rows per study)."""
        setup_logging(quiet)
        with user_errors():
            from radspine.predict import predict

            s = predict(data, model, out, split=split, points_out=points_out, localizer_dir=localizer,
                        work_dir=work, workers=workers, scheduler=scheduler, quiet=quiet)
            typer.echo(
                f"{s['rows']} rows for {s['studies']} studies → {out} "
                f"({s['rows_from_priors']} rows from priors, {len(s['skipped'])} studies with problems; "
                f"{s['seconds']} s)"
            )
            if report_dir is not None:
                from radspine.report import render_reports

                work_dir = work or out.parent / "predict_work"
                n = render_reports(data, out.parent, report_dir, model_dir=model, split=split,
                                   features=work_dir / "features" / "features.parquet")
                typer.echo(f"{n} study reports → {report_dir / 'index.html'}")
