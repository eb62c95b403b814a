"""``radspine inspect DATA_DIR``: validate a dataset folder and summarise it (the first command to run)."""

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
        data_dir: Path = typer.Argument(..., help="Dataset root in the RSNA 2024 LSDC layout."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary and every finding as JSON."),
        read_dicom: int = typer.Option(
            0, "--read-dicom", min=0, help="Also decode every series of the first N studies of each split."
        ),
    ) -> None:
        """Check CSV schemas and folders; list studies, series per type, label counts and findings.

        Exit code 0 when usable, 1 when no study has images, 2 when a CSV or the folder is broken.
        """
        with user_errors():
            import json

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
    t.add_column("series per type")
    for split, s in summary["splits"].items():
        per_type = ", ".join(f"{k}: {v}" for k, v in s["series_per_type"].items())
        t.add_row(split, str(s["studies"]), str(s["studies_with_images"]), str(s["series"]), per_type)
    console.print(t)

    if ds.labels is not None:
        t = Table(title=f"Labels (train.csv; {summary['coordinate_rows']} coordinate rows)")
        t.add_column("condition")
        for g in (*C.SEVERITIES, "missing"):
            t.add_column(g, justify="right")
        for cond, counts in summary["labels"].items():
            t.add_row(cond, *(str(counts[g]) for g in (*C.SEVERITIES, "missing")))
        console.print(t)
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
