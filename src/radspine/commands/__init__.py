"""CLI command modules. Each defines ``register(app: typer.Typer)`` and imports only typer at module level."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import typer

log = logging.getLogger("radspine.commands")


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
    """Logs to stderr: rich on a terminal, plain unwrapped lines otherwise; --quiet shows warnings only.

    Redirected logs (files, CI, pipes) get one line per record so file paths are never broken across
    lines. ``quiet`` also silences Python warnings from libraries (e.g. sklearn's "least populated class"),
    in this process and, through PYTHONWARNINGS, in worker processes started later.
    """
    import os
    import sys
    import warnings

    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, console=Console(stderr=True),
                                               rich_tracebacks=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(asctime)s %(levelname)-7s %(message)s"
    logging.basicConfig(level=level, format=fmt, datefmt="%H:%M:%S", handlers=[handler], force=True)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    if quiet:
        warnings.simplefilter("ignore")
        os.environ["PYTHONWARNINGS"] = "ignore"


def dataset_root(data: Path | None, dicom: Path | None, series_types: Path | None, work: Path,
                 split: str = "test") -> Path:
    """The dataset root a command works on: ``--data`` as is, or a Kaggle-layout view of ``--dicom``.

    The view is (re)built at ``work/dicom_view`` from the export's headers (see :mod:`radspine.io.export`).

    Raises:
        DatasetError: neither or both of --data/--dicom, --series-types without --dicom, or a bad export.
    """
    from radspine.errors import DatasetError

    if (data is None) == (dicom is None):
        raise DatasetError("pass exactly one of --data DIR (Kaggle layout) or --dicom DIR (plain DICOM export)"
                           + (", not both" if data is not None else ""))
    if dicom is None:
        if series_types is not None:
            raise DatasetError("--series-types only applies with --dicom DIR")
        return Path(data)  # type: ignore[arg-type]
    from radspine.io.export import build_layout, scan_export

    scan = scan_export(dicom, overrides=series_types)
    s = scan.summary()
    if not s["usable"]:
        raise DatasetError(f"{dicom}: no series could be typed as {', '.join(s['series_per_type'])} "
                           "(see `radspine inspect --dicom`; override with --series-types CSV)")
    view = build_layout(scan, Path(work) / "dicom_view", split=split)
    log.info("%s: %d studies, %d series typed (%s), %d skipped, %d non-DICOM files ignored → view %s",
             dicom, s["studies"], s["series"] - s["series_skipped"],
             ", ".join(f"{k}: {v}" for k, v in s["series_per_type"].items()), s["series_skipped"],
             s["non_dicom_files"], view)
    return view
