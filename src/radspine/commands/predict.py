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
        model: Path = typer.Option(..., "--model", help="Model bundle from `radspine tune`."),
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
        quiet: bool = typer.Option(False, "--quiet", help="Warnings only (library warnings hidden), no progress bar."),
    ) -> None:
        """Localize → features → graders → calibrated submission.csv (always 25 rows per study).

        With --dicom, predictions.csv also carries each study's StudyInstanceUID (column study_uid).
        """
        setup_logging(quiet)
        with user_errors():
            import inspect

            from radspine.errors import RadspineError
            from radspine.predict import predict

            work_dir = work or out.parent / "predict_work"
            root = dataset_root(data, dicom, series_types, work_dir, split=split)
            params = inspect.signature(predict).parameters
            extra: dict = {}
            study_uids = None
            if dicom is not None:
                from radspine.io.export import read_study_uids

                study_uids = read_study_uids(root)
                if "study_uids" in params:
                    extra["study_uids"] = study_uids
            if points is not None:
                if "points" not in params:
                    raise RadspineError("--points: this radspine's predict() cannot grade at given points yet")
                extra["points"] = points
            s = predict(root, model, out, split=split, points_out=points_out, localizer_dir=localizer,
                        work_dir=work_dir, workers=workers, scheduler=scheduler, quiet=quiet, **extra)
            if study_uids is not None and "study_uids" not in extra:
                add_study_uids(out.parent / "predictions.csv", study_uids)
            typer.echo(
                f"{s['rows']} rows for {s['studies']} studies → {out} "
                f"({s['rows_from_priors']} rows from priors, {len(s['skipped'])} studies with problems; "
                f"{s['seconds']} s)"
            )
            if report_dir is not None:
                from radspine.report import render_reports

                n = render_reports(root, out.parent, report_dir, model_dir=model, split=split,
                                   features=work_dir / "features" / "features.parquet")
                typer.echo(f"{n} study reports → {report_dir / 'index.html'}")


def add_study_uids(predictions_csv: Path, study_uids: dict[int, str]) -> None:
    """Insert a ``study_uid`` column after ``study_id`` in predictions.csv (atomic rewrite, text kept as is)."""
    import pandas as pd

    from radspine.errors import RadspineError
    from radspine.fsutil import write_csv_atomic

    if not predictions_csv.is_file():
        raise RadspineError(f"{predictions_csv}: not written by predict; cannot add study_uid")
    # Strings in, strings out: the probabilities keep their exact text.
    df = pd.read_csv(predictions_csv, dtype=str, keep_default_na=False)
    if "study_uid" in df.columns:
        return
    if "study_id" not in df.columns:
        raise RadspineError(f"{predictions_csv}: no study_id column; cannot add study_uid")
    uid = df["study_id"].map(lambda v: study_uids.get(int(v), "") if v.isdigit() else "")
    df.insert(df.columns.get_loc("study_id") + 1, "study_uid", uid)
    write_csv_atomic(df, predictions_csv)
