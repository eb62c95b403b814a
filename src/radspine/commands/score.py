"""``radspine score SOLUTION SUBMISSION``: the competition metric on two CSV files."""

from __future__ import annotations

from pathlib import Path

import typer

from radspine.commands import user_errors

_USAGE = "radspine score SOLUTION SUBMISSION"


def register(app: typer.Typer) -> None:
    """Add the ``score`` command to the app."""

    @app.command("score")
    def score_cmd(
        solution: Path = typer.Argument(
            ..., help="First: CSV with row_id + one-hot normal_mild/moderate/severe (or grade)."
        ),
        submission: Path = typer.Argument(..., help="Second: CSV with row_id, normal_mild, moderate, severe."),
        as_json: bool = typer.Option(False, "--json", help="Print the score and its 4 terms as JSON."),
    ) -> None:
        """Score a submission with the RSNA 2024 LSDC metric (lower is better). Order: SOLUTION then SUBMISSION."""
        with user_errors():
            import json

            from radspine.metrics import MetricError, read_table, score

            sol = read_table(str(solution), "solution")
            sub = read_table(str(submission), "submission")
            try:
                res = score(sol, sub, solution_name=str(solution), submission_name=str(submission))
            except MetricError as err:
                raise MetricError(f"{err} ({order_hint(sol, sub, solution, submission)})") from None
            if as_json:
                typer.echo(json.dumps(res.as_dict(), indent=2))
            else:
                typer.echo(f"score {res.score:.5f}  ({res.n_rows} rows, {res.n_studies} studies)")
                for name, val in res.terms().items():
                    typer.echo(f"  {name:<18} {val:.5f}")


def _kind(df) -> str:
    """'labels' (one-hot or grade), 'probabilities', or '' when neither."""
    import numpy as np
    import pandas as pd

    from radspine.constants import SEVERITY_COLUMNS

    if all(c in df.columns for c in SEVERITY_COLUMNS):
        v = df[list(SEVERITY_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        v = v[np.isfinite(v).all(axis=1)]
        if len(v) and np.isin(v, (0.0, 1.0)).all() and (v.sum(axis=1) <= 1).all():
            return "labels"
        return "probabilities" if len(v) else ""
    return "labels" if "grade" in df.columns else ""


def order_hint(sol, sub, solution: Path, submission: Path) -> str:
    """Name the argument order, and say so when the two files look swapped."""
    if _kind(sol) == "probabilities" and _kind(sub) == "labels":
        return (f"the files look swapped: {solution} holds probabilities and {submission} one-hot labels; "
                f"usage: {_USAGE}")
    return f"usage: {_USAGE}; got SOLUTION={solution}, SUBMISSION={submission}"
