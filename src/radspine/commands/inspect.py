"""``radspine inspect DATA_DIR`` / ``--dicom DIR``: validate a dataset folder or a plain DICOM export and
summarise it (the first command to run)."""

from __future__ import annotations

from pathlib import Path

import typer

from radspine.commands import user_errors

# Findings listed per kind in the human summary before "... and N more".
_SHOW_PER_KIND = 5


def register(app: typer.Typer) -> None:
    """Add the ``inspect`` command to the app."""

    @app.command("inspect")
    def inspect_cmd(
        data_dir: Path | None = typer.Argument(None, help="Dataset root in the RSNA 2024 LSDC layout."),
        dicom: Path | None = typer.Option(
            None, "--dicom", help="Instead: a plain DICOM export; list every series with the type radspine guesses."
        ),
        series_types: Path | None = typer.Option(
            None, "--series-types", help="With --dicom: CSV series_id,series_description overriding the guesses."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the summary and every finding as JSON."),
        read_dicom: int = typer.Option(
            0, "--read-dicom", min=0, help="Also decode every series of the first N studies of each split."
        ),
    ) -> None:
        """Check CSV schemas and folders; list studies, series per type, label counts and findings.

        With --dicom: one row per series (study, series, files, orientation, type, why).
        Exit code 0 when usable, 1 when no study has images (no typed series), 2 when a CSV or the folder is broken.
        """
        with user_errors():
            import json

            from radspine.errors import DatasetError

            if (data_dir is None) == (dicom is None):
                raise DatasetError("pass exactly one of DATA_DIR (Kaggle layout) or --dicom DIR (plain DICOM export)")
            if dicom is not None:
                return _inspect_dicom(dicom, series_types, as_json)
            if series_types is not None:
                raise DatasetError("--series-types only applies with --dicom DIR")
            if (data_dir / "bundle.json").is_file():
                return _inspect_model(data_dir, as_json)

            from radspine.io.dataset import Dataset, iter_studies

            ds = Dataset.open(data_dir)
            stacks: dict[str, int] = {}
            for split in ds.splits:
                studies = [st for st in ds.studies(split) if st.series][:read_dicom]
                for _, volumes, found in iter_studies(studies):
                    ds.findings.extend(found)
                    for vols in volumes.values():
                        key = f"{len(vols)} stack" + ("s" if len(vols) > 1 else "")
                        stacks[key] = stacks.get(key, 0) + 1
            summary = ds.summary()
            if read_dicom:
                summary["dicom_series_read"] = dict(sorted(stacks.items()))
            if as_json:
                summary["findings_list"] = [f.to_dict() for f in ds.findings]
                typer.echo(json.dumps(summary, indent=2, sort_keys=False))
            else:
                _print_summary(ds, summary)
            if not summary["usable"]:
                typer.secho(f"error: {data_dir}: no study with images; dataset unusable", fg=typer.colors.RED,
                            err=True)
                raise typer.Exit(code=1)


def _inspect_model(model_dir: Path, as_json: bool) -> None:
    """A model folder: versions it was trained with, feature config hash, CV scores, what it contains."""
    import json

    from radspine.models.bundle import Bundle, embedders_dir, localizer_dir

    b = Bundle.load(model_dir)
    report = b.report() if (model_dir / "cv_report.json").is_file() else {}
    manifest = embedders_dir(model_dir) / "embedders.json"
    info = {
        "model": str(model_dir),
        "versions": b.info.get("versions", {}),
        "feature_config_hash": b.feature_config_hash,
        "backbone": b.info.get("backbone"),
        "n_features": len(b.features),
        "score_unbiased": report.get("score_unbiased"),
        "score_selection": report.get("score_selection"),
        "priors_only_score": report.get("priors_only_score"),
        "cnn": json.loads(manifest.read_text()) if manifest.is_file() else None,
        "localizer": (localizer_dir(model_dir) / "meta.json").is_file(),
    }
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"model bundle {model_dir}")
    typer.echo("  trained with " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    typer.echo(f"  feature config {info['feature_config_hash']}, backbone {info['backbone']}, {info['n_features']} features")
    if info["score_unbiased"] is not None:
        typer.echo(f"  CV score {info['score_unbiased']:.4f} unbiased, {info['score_selection']:.4f} selection "
                   f"(priors only {info['priors_only_score']:.4f})")
    if info["cnn"]:
        typer.echo(f"  CNN families trained: {', '.join(info['cnn'].get('trained', [])) or 'none'}")
    typer.echo(f"  localizer: {'MODELDIR/localizer' if info['localizer'] else 'none (the shipped one is used)'}")


def _print_summary(ds, summary: dict) -> None:
    """Rich tables: splits, series types, label counts, findings grouped by kind."""
    from rich.console import Console
    from rich.table import Table

    from radspine import constants as C
    from radspine.io.dataset import FINDING_KINDS

    console = Console(width=120)
    console.print(f"[bold]Dataset[/bold] {summary['root']}")
    t = Table(title="Studies and series")
    t.add_column("split")
    t.add_column("studies", justify="right")
    t.add_column("with images", justify="right")
    t.add_column("series", justify="right")
    t.add_column("empty folders", justify="right")
    t.add_column("series per type")
    for split, s in summary["splits"].items():
        per_type = ", ".join(f"{k}: {v}" for k, v in s["series_per_type"].items())
        t.add_row(split, str(s["studies"]), str(s["studies_with_images"]), str(s["series"]),
                  str(s.get("empty_series_folders", 0)), per_type)
    console.print(t)

    if ds.labels is not None:
        t = Table(title=f"Labels (train.csv; {summary['coordinate_rows']} coordinate rows)")
        t.add_column("condition")
        for g in (*C.SEVERITIES, "missing"):
            t.add_column(g, justify="right")
        for cond, counts in summary["labels"].items():
            t.add_row(cond, *(str(counts[g]) for g in (*C.SEVERITIES, "missing")))
        console.print(t)
    for kind, per_cond in summary.get("label_coordinate_mismatches", {}).items():
        if per_cond:
            console.print(f"{kind.replace('_', ' ')}: {sum(per_cond.values())} ("
                          + ", ".join(f"{c}: {n}" for c, n in per_cond.items()) + ")",
                          markup=False, highlight=False, soft_wrap=True)  # fmt: skip
    if "dicom_series_read" in summary:
        console.print("DICOM series read: " + ", ".join(f"{v} with {k}" for k, v in summary["dicom_series_read"].items()))

    groups = ds.findings_by_kind()
    if not groups:
        console.print("[green]No findings.[/green]")
    for kind, items in groups.items():
        console.print(f"[yellow]{kind}[/yellow] ({len(items)}): {FINDING_KINDS.get(kind, '')}")
        for f in items[:_SHOW_PER_KIND]:
            console.print(f"  - {f.message}", markup=False, highlight=False, soft_wrap=True)
        if len(items) > _SHOW_PER_KIND:
            console.print(f"  ... and {len(items) - _SHOW_PER_KIND} more (see --json)")
    console.print("[green]usable[/green]" if summary["usable"] else "[red]unusable[/red]")


def _inspect_dicom(dicom: Path, series_types: Path | None, as_json: bool) -> None:
    """Scan a plain DICOM export and print every series with its typing decision."""
    import json

    from radspine.io.export import scan_export, scan_to_dict

    scan = scan_export(dicom, overrides=series_types)
    summary = scan.summary()
    if as_json:
        typer.echo(json.dumps(scan_to_dict(scan), indent=2, default=str))
    else:
        from rich.console import Console
        from rich.table import Table

        console = Console(width=160)
        console.print(f"[bold]DICOM export[/bold] {scan.root}", highlight=False)
        t = Table(title="Series")
        for col, just in (("study", "right"), ("series", "right"), ("files", "right"), ("orientation", "left"),
                          ("type", "left"), ("why", "left")):
            t.add_column(col, justify=just, overflow="fold")
        for se in scan.all_series():
            t.add_row(str(se.study_id), str(se.series_id), str(se.n_files), se.orientation,
                      se.series_type or "[dim]skipped[/dim]", se.why.removeprefix("skipped: "))
        console.print(t)
        per_type = ", ".join(f"{k}: {v}" for k, v in summary["series_per_type"].items())
        console.print(f"{summary['studies']} studies, {summary['series']} series ({per_type}; "
                      f"{summary['series_skipped']} skipped); {summary['images']} image files, "
                      f"{summary['non_dicom_files']} non-DICOM and {summary['non_image_dicom_files']} non-image "
                      f"files ignored, {summary['duplicate_files']} duplicates", highlight=False)
        for st in scan.studies:
            console.print(f"  study {st.study_id}: {st.study_uid} ({st.source})", highlight=False, soft_wrap=True)
        console.print("Fix a guess with --series-types CSV (series_id,series_description; "
                      "series_description 'skip' drops a series).", highlight=False)
    if not summary["usable"]:
        typer.secho(f"error: {dicom}: no series typed as {', '.join(summary['series_per_type'])}",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
