"""`radspine train-localizer` and `radspine localize`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the localizer commands to the CLI."""

    @app.command("train-localizer")
    def train_localizer_cmd(
        data: Path = typer.Option(..., "--data", help="Dataset root (competition layout, with train_label_coordinates.csv)."),
        out: Path = typer.Option(..., "--out", help="Model folder to write (localizer.pt, meta.json, localizer_report.json)."),
        epochs: int | None = typer.Option(None, "--epochs", min=1, help="Training epochs (default from config)."),
        config: Path | None = typer.Option(None, "--config", help="YAML config; its `localizer` section is used."),
        seed: int = typer.Option(0, "--seed", help="Random seed (same seed → same model)."),
        init: str = typer.Option(
            "shipped", "--init",
            help="Start from 'shipped' (the packaged localizer, pretrained on real SPIDER anatomy and the phantom: "
                 "fine-tuning it needs few real scans), a localizer folder, or 'none' (train from scratch).",
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings only (library warnings hidden)."),
    ) -> None:
        """Train the 25-point localizer from labelled coordinates and report held-out accuracy."""
        from radspine.commands import setup_logging, user_errors

        setup_logging(quiet=quiet)
        with user_errors():
            from radspine.config import load_config
            from radspine.localize import train_localizer

            cfg = load_config(config).localizer
            if epochs is not None:
                cfg = cfg.model_copy(update={"epochs": epochs})
            report = train_localizer(data, out, cfg, seed=seed, init=None if init == "none" else init)
            typer.echo(f"localizer written to {out} (trained in {report['train_seconds']:.0f} s)")
            per = report.get("per_condition")
            if per:
                for cond, m in per.items():
                    if m.get("n"):
                        typer.echo(
                            f"  {cond:34s} n={m['n']:3d} median {m['median_mm']:5.1f} mm  ≤5 mm {m['within_5mm']:.2f}"
                            + (f"  level acc {m['level_accuracy']:.2f}  slice acc {m['slice_accuracy']:.2f}" if "level_accuracy" in m else "")
                        )

    @app.command("localize")
    def localize_cmd(
        data: Path | None = typer.Option(None, "--data", help="Dataset root (competition layout)."),
        dicom: Path | None = typer.Option(
            None, "--dicom", help="Plain DICOM export (any folders/names; series typed from headers) instead of --data."
        ),
        series_types: Path | None = typer.Option(
            None, "--series-types", help="With --dicom: CSV series_id,series_description overriding the guessed types."
        ),
        model: Path | None = typer.Option(
            None, "--model", help="Folder written by train-localizer (default: the shipped pretrained localizer)."
        ),
        out: Path = typer.Option(..., "--out", help="Points CSV to write (train_label_coordinates.csv schema); <stem>_detail.csv adds world_*, flag."),
        split: str = typer.Option("test", "--split", help="Which split's studies to localise (train/test)."),
        work: Path | None = typer.Option(
            None, "--work", help="With --dicom: where the Kaggle-layout view is built (default <out folder>/localize_work)."
        ),
        workers: int | None = typer.Option(None, "--workers", help="Local processes (default: serial)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings only (library warnings hidden)."),
    ) -> None:
        """Predict the 25 points of every study of a split and write them as a CSV.

        With --dicom, study ids map to StudyInstanceUIDs in <work>/dicom_view/study_uids.csv.
        """
        from radspine.commands import dataset_root, setup_logging, user_errors

        setup_logging(quiet=quiet)
        with user_errors():
            # Argument mistakes first, before the (slow) torch import.
            root = dataset_root(data, dicom, series_types, work or out.parent / "localize_work", split=split)
            from radspine.localize import detail_path, localize_dataset
            from radspine.localize.infer import shipped_localizer_dir

            df = localize_dataset(root, model or shipped_localizer_dir(), out, split=split, workers=workers)
            flagged = int((df["flag"] != "").sum()) if len(df) else 0
            n_studies = df["study_id"].nunique() if len(df) else 0
            typer.echo(f"{n_studies} studies, {len(df)} points → {out} ({flagged} flagged; details in {detail_path(out)})")
            if dicom is not None:
                typer.echo(f"study ids ↔ StudyInstanceUID: {root / 'study_uids.csv'}")
