"""`radspine demo`."""

from __future__ import annotations

from pathlib import Path

import typer

from radspine.commands import setup_logging, user_errors


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for every artifact of the demo."),
        train_studies: int = typer.Option(60, "--train-studies", min=6,
                                          help="Phantom training studies (>= 6: 3 CV folds of 2)."),
        test_studies: int = typer.Option(20, "--test-studies", min=1),
        size: int = typer.Option(128, "--size", min=48, help="Phantom image size (px)."),
        trials: int = typer.Option(6, "--trials", min=1, help="Optuna trials."),
        localizer_epochs: int = typer.Option(2, "--localizer-epochs", min=1,
                                             help="Epochs of localizer training (fine-tuning unless --scratch)."),
        scratch: bool = typer.Option(False, "--scratch",
                                     help="Train the localizer from scratch instead of fine-tuning the shipped one "
                                     "(give it ~20 --localizer-epochs)."),
        cnn_default: bool = typer.Option(False, "--cnn-default", "--cnn-whole",
                                         help="Fine-tune the CNN as the package default does (all but its stem and "
                                         "first 2 stages, augmented patches; a few minutes more) instead of its "
                                         "last stage on cached activations."),
        seed: int = typer.Option(0, "--seed"),
        workers: int | None = typer.Option(None, "--workers", help="Local processes (default: cores)."),
        reports: bool = typer.Option(True, "--reports/--no-reports", help="Render the per-study reports and viewer pages."),
        quiet: bool = typer.Option(False, "--quiet", help="Logs only, no progress bars."),
    ) -> None:
        """Phantom end to end: synth → train-localizer → extract-features → tune → predict → score."""
        setup_logging(quiet)
        with user_errors():
            from radspine.demo import DemoOptions, format_summary, run_demo

            summary = run_demo(out, DemoOptions(train_studies=train_studies, test_studies=test_studies,
                                                size=size, trials=trials, seed=seed, workers=workers,
                                                localizer_epochs=localizer_epochs,
                                                localizer_init=None if scratch else "shipped",
                                                cnn_freeze_stages=None if cnn_default else 6,
                                                reports=reports, quiet=quiet))
            typer.echo(format_summary(summary))
            typer.echo(f"artifacts in {out}")
            if summary.get("viewer"):
                typer.echo(f"study viewer: {summary['viewer']['index']}")
