"""CLI command modules. Each defines ``register(app: typer.Typer)`` and imports only typer at module level."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import typer


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn RadspineError (a user mistake) into one line on stderr and exit code 2, no traceback."""
    from radspine.errors import RadspineError

    try:
        yield
    except RadspineError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        raise typer.Exit(code=130) from None


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Rich logging to stderr; --quiet shows warnings only."""
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, console=Console(stderr=True), rich_tracebacks=False)],
        force=True,
    )
    logging.getLogger("radiomics").setLevel(logging.ERROR)
