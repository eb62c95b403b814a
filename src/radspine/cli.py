"""The ``radspine`` command line: a Typer app whose commands are thin wrappers over library functions.

Each module in :mod:`radspine.commands` defines ``register(app)``; heavy imports stay inside the
command bodies so ``radspine --help`` is instant.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

import radspine.commands as _commands

app = typer.Typer(
    name="radspine",
    help="Grade lumbar spine degeneration on MRI (RSNA 2024 LSDC layout).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from radspine import __version__

        typer.echo(f"radspine {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Grade lumbar spine degeneration on MRI (RSNA 2024 LSDC layout)."""


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"radspine.commands.{info.name}")
        module.register(app)


_register_all()


def main() -> None:
    """Console-script entry point."""
    app()
