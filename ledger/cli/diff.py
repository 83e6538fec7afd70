"""`ledger diff`: what differs between two runs, request, pins and outcome, side by side."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from ledger.cli.console import open_book, out, print_json
from ledger.diffing import diff_records


def diff_command(
    run_a: str = typer.Argument(..., help="The first run."),
    run_b: str = typer.Argument(..., help="The second run."),
    as_json: bool = typer.Option(False, "--json", help="Print the differences as JSON."),
):
    """Show what differs between two runs: request, pins and outcome, side by side."""
    book = open_book()
    a, b = book.get(run_a), book.get(run_b)
    differences = diff_records(a, b)
    if as_json:
        print_json({"a": a.run_id, "b": b.run_id, "differences": differences})
        return
    if not differences:
        out.print(f"{a.run_id} and {b.run_id} do not differ in request, pins or outcome.")
        return
    table = Table(title=f"{len(differences)} difference(s)", title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column(f"{a.run_id[:10]}… {a.job_name}", overflow="fold")
    table.add_column(f"{b.run_id[:10]}… {b.job_name}", overflow="fold")
    for row in differences:
        table.add_row(Text(row["path"]), Text(_cell(row["a"])), Text(_cell(row["b"])))
    out.print(table)


def _cell(value) -> str:
    text = "—" if value is None else str(value)
    return text if len(text) <= 200 else text[:199] + "…"


def register(app: typer.Typer) -> None:
    app.command("diff")(diff_command)
