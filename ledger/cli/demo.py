"""`ledger demo`: the main job, offline, with a progress display and a summary."""

from __future__ import annotations

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ledger.cli.console import open_book_to_record, out
from ledger.demo import run_demo


def demo_command():
    """Train XGBoost on abalone three ways on this machine, record them, reproduce one, verify the ledger."""
    book = open_book_to_record()  # a read-only ledger is refused here, before anything runs
    out.print(f"ledger demo: everything goes to LEDGER_HOME={book.settings.home}")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=out,
                  transient=False) as progress:
        current = {"task": None}

        def step(text: str) -> None:
            if current["task"] is not None:
                progress.update(current["task"], completed=1, total=1)
            current["task"] = progress.add_task(text, total=None)

        result = run_demo(book, step)
        progress.update(current["task"], completed=1, total=1)

    table = Table(title="Recorded runs", title_justify="left")
    for column in ("run id", "job name", "max_depth", "validation rmse", "status", "gaps", "verdict"):
        table.add_column(column, overflow="fold")
    reproduced = result.reproduction.record
    for run in [*result.runs, reproduced]:
        verdict = run.verdict.result if run.verdict else ""
        table.add_row(*map(Text, (run.run_id, run.job_name, run.pins.hyperparameters.get("max_depth", ""),
                                  f"{run.outcome.metrics.get('validation:rmse', float('nan')):.4f}",
                                  run.outcome.status or "-", str(len(run.pins.gaps)), verdict)))
    out.print(table)
    verified = result.verified
    out.print(f"Reproduction of {result.runs[0].job_name}: {result.reproduction.verdict.result}. "
              f"Ledger: {verified.entries} entries, chain {'intact' if verified.ok else 'BROKEN'}, "
              f"head {verified.head_hash[:16]}…", markup=False, highlight=False)
    out.print(f"Audit report: {result.report}", markup=False, highlight=False)
    first, second = result.runs[0].run_id, result.runs[1].run_id
    out.print("\nNext, try:")
    for command in (f"ledger show {first}", f"ledger diff {first} {second}", f"ledger reproduce {second}",
                    "ledger runs --where \"params.max_depth > 4\"", "ledger dashboard",
                    f"ledger audit {first} --format html -o audit.html", "ledger verify"):
        out.print(f"  {command}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
