"""``radspine synth``: write a labelled synthetic lumbar MRI phantom in the RSNA 2024 LSDC layout."""

from __future__ import annotations

from pathlib import Path

import typer

from radspine.commands import user_errors


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command to the app."""

    @app.command("synth")
    def synth_cmd(
        out: Path = typer.Option(..., "--out", help="Output folder (created; must be empty unless --overwrite)."),
        train_studies: int = typer.Option(..., "--train-studies", min=0, help="Number of labelled training studies."),
        test_studies: int = typer.Option(0, "--test-studies", min=0, help="Number of test studies (scored by test_solution.csv)."),
        seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical files."),
        size: int = typer.Option(256, "--size", help="Image rows/columns in pixels (e.g. 64 for tiny test studies)."),
        workers: int = typer.Option(1, "--workers", min=1, help="Processes rendering studies in parallel."),
        quirk: list[str] = typer.Option(
            [], "--quirk", help="Quirk/variation rate NAME=RATE (repeatable), e.g. --quirk no_axial=0.2 "
            "--quirk scoliosis=0.5 --quirk click_noise_mm=3; see QuirkConfig."
        ),
        no_quirks: bool = typer.Option(False, "--no-quirks",
                                       help="Turn every quirk, variation and reader noise off (clean studies)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace the images of an existing output folder."),
        preset: str = typer.Option("", "--preset", help="Series geometry preset: 'rsna' = real matrix sizes (incl. "
                                   "non-square), 260-400 mm sagittal FOV, 15-24 sagittal / 25-60 axial slices, 16-bit, "
                                   "some compressed series; --size is then unused. Default: small square phantom."),
        matrix_scale: float = typer.Option(1.0, "--matrix-scale", help="With --preset: shrink matrices by this "
                                           "factor in (0, 1], keeping the FOV (small test phantoms)."),
    ) -> None:
        """Render phantom studies (sagittal T1, sagittal T2/STIR, axial T2) with labels, coordinates and truth."""
        with user_errors():
            import dataclasses
            import json

            from radspine.commands import setup_logging
            from radspine.errors import ConfigError
            from radspine.synth import QuirkConfig, make_dataset

            setup_logging()
            base = QuirkConfig.none() if no_quirks else (QuirkConfig.rsna() if preset == "rsna" else QuirkConfig())
            rates = {f.name: getattr(base, f.name)
                     for f in dataclasses.fields(QuirkConfig)}
            for item in quirk:
                name, sep, value = item.partition("=")
                if not sep or name not in rates:
                    raise ConfigError(f"--quirk {item!r}: expected NAME=RATE with NAME one of {', '.join(rates)}")
                try:
                    rates[name] = float(value)
                except ValueError:
                    raise ConfigError(f"--quirk {item!r}: rate {value!r} is not a number") from None
            summary = make_dataset(out, train_studies, test_studies, seed=seed, size=size,
                                   quirks=QuirkConfig(**rates), workers=workers, overwrite=overwrite,
                                   preset=preset or None, matrix_scale=matrix_scale)
            summary.pop("train_study_ids")
            summary.pop("test_study_ids")
            typer.echo(json.dumps(summary))
