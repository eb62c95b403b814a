"""``radspine score SOLUTION SUBMISSION``: the competition metric on two CSV files."""

from __future__ import annotations

from pathlib import Path

import typer

from radspine.commands import user_errors


def register(app: typer.Typer) -> None:
    """Add the ``score`` command to the app."""

    @app.command("score")
    def score_cmd(
        solution: Path = typer.Argument(
            ..., help="CSV with row_id + one-hot normal_mild/moderate/severe (or grade)."
        ),
        submission: Path = typer.Argument(..., help="CSV with row_id, normal_mild, moderate, severe."),
        as_json: bool = typer.Option(False, "--json", help="Print the score and its 4 terms as JSON."),
    ) -> None:
        """Score a submission with the RSNA 2024 LSDC metric (lower is better)."""
        with user_errors():
            import json

            from radspine.metrics import read_table, score

            res = score(
                read_table(str(solution), "solution"),
                read_table(str(submission), "submission"),
                solution_name=str(solution),
                submission_name=str(submission),
            )
            if as_json:
                typer.echo(json.dumps(res.as_dict(), indent=2))
            else:
                typer.echo(f"score {res.score:.5f}  ({res.n_rows} rows, {res.n_studies} studies)")
                for name, val in res.terms().items():
                    typer.echo(f"  {name:<18} {val:.5f}")
