"""`radspine predict`."""

from __future__ import annotations

from pathlib import Path

import typer

from radspine.commands import dataset_root, setup_logging, user_errors


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict_cmd(
        data: Path | None = typer.Option(None, "--data", help="Dataset root (competition layout)."),
        dicom: Path | None = typer.Option(
            None, "--dicom", help="Plain DICOM export (any folders/names; series typed from headers) instead of --data."
        ),
        series_types: Path | None = typer.Option(
            None, "--series-types", help="With --dicom: CSV series_id,series_description overriding the guessed types."
        ),
        model: Path | None = typer.Option(
            None, "--model", help="Model bundle from `radspine tune`. Without it: zero-shot points from the shipped "
            "localizer and every grade from the real RSNA 2024 priors (to see where radspine looks)."
        ),
        out: Path = typer.Option(..., "--out", help="submission.csv to write."),
        split: str = typer.Option("test", "--split", help="Split to predict."),
        points: Path | None = typer.Option(
            None, "--points", help="Grade at these points (train_label_coordinates.csv schema) instead of localizing."
        ),
        points_out: Path | None = typer.Option(None, "--points-out", help="Write the predicted points CSV here."),
        localizer: Path | None = typer.Option(None, "--localizer", help="Localizer model (default MODELDIR/localizer)."),
        work: Path | None = typer.Option(None, "--work", help="Intermediate files (default beside --out)."),
        workers: int | None = typer.Option(None, "--workers", help="Local processes (default: cores)."),
        scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address or 'local'."),
        report_dir: Path | None = typer.Option(None, "--report-dir", help="Also render a visual report per study."),
        viewer_dir: Path | None = typer.Option(None, "--viewer-dir", help="Also write the study viewer pages "
                                               "(see `radspine view`)."),
        quiet: bool = typer.Option(False, "--quiet", help="Warnings only (library warnings hidden), no progress bar."),
    ) -> None:
        """Localize → features → graders → calibrated submission.csv (always 25 rows per study).

        With --dicom, predictions.csv also carries each study's StudyInstanceUID (column study_uid).
        """
        setup_logging(quiet)
        with user_errors():
            from radspine.pipeline import predict

            work_dir = work or out.parent / "predict_work"
            root = dataset_root(data, dicom, series_types, work_dir, split=split)
            study_uids = None
            if dicom is not None:
                from radspine.io.export import read_study_uids

                study_uids = read_study_uids(root)
            s = predict(root, model, out, split=split, points=points, points_out=points_out, localizer_dir=localizer,
                        work_dir=work_dir, workers=workers, scheduler=scheduler, quiet=quiet, study_uids=study_uids,
                        report_dir=report_dir, viewer_dir=viewer_dir)  # fmt: skip
            typer.echo(
                f"{s['rows']} rows for {s['studies']} studies → {out} "
                f"({s['rows_from_priors']} rows from priors, {len(s['skipped'])} studies with problems; "
                f"{s['seconds']} s)"
            )
            if report_dir is not None:
                typer.echo(f"{s['reports']['n']} study reports → {s['reports']['index']}")
            if viewer_dir is not None:
                typer.echo(f"{s['viewer']['n']} study viewer pages → {s['viewer']['index']}")
