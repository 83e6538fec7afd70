"""`ledger runs` and `ledger show`: the recorded runs, listed and whole."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ledger.cli.console import JSON_OPTION, open_book, out, print_json
from ledger.cli.views import render_record, render_runs


def runs_command(
    project: Optional[str] = typer.Option(None, help="Only runs of this project."),
    status: Optional[str] = typer.Option(None, help="Only runs with this status (Completed, Failed, ...)."),
    where: Optional[str] = typer.Option(None, help="A filter, e.g. \"params.max_depth = '5' and metrics.rmse < 2\"."),
    limit: int = typer.Option(50, help="At most this many runs, newest first (0: all)."),
    as_json: bool = JSON_OPTION,
):
    """List recorded runs, newest first."""
    frame = open_book().runs(project=project, status=status, where=where, limit=limit or None)
    if as_json:
        print_json(json.loads(frame.to_json(orient="records", date_format="iso")))
        return
    if frame.empty:
        out.print("No runs recorded yet. Record some with: ledger demo")
        return
    out.print(render_runs(frame))


def show_command(run: str = typer.Argument(..., help="Run id, a unique prefix of it, or the job name."),
                 as_json: bool = JSON_OPTION):
    """One run, whole: request, pins, outcome, chain."""
    record = open_book().get(run)
    if as_json:
        print_json(record.to_dict())
        return
    out.print(render_record(record))


def register(app: typer.Typer) -> None:
    app.command("runs")(runs_command)
    app.command("show")(show_command)
