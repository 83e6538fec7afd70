"""`ledger reproduce` and `ledger diff`."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

from ledger.errors import Diverged, LedgerError, PlanFailed


def render_plan(plan) -> Table:
    table = Table(title=f"Preflight for {plan.run_id} on {plan.backend}", title_justify="left")
    for column in ("pin", "recorded", "now", "action"):
        table.add_column(column, overflow="fold")
    style = {"ok": "", "drift": "yellow", "missing": "red", "unchecked": "red", "blocked": "red"}
    for check in plan.checks:
        table.add_row(Text(check.pin), Text(check.recorded), Text(check.now), Text(check.action),
                      style=style[check.status])
    return table


def reproduce_command(
    run: str = typer.Argument(..., help="Run id, a unique prefix of it, or the job name."),
    backend: Optional[str] = typer.Option(None, help="local | sagemaker (default: the run's own backend)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the preflight and stop."),
    allow_drift: bool = typer.Option(False, "--allow-drift", help="Go on when pins are missing; the verdict says so."),
    secret: List[str] = typer.Option([], "--secret", help="A redacted value NAME=VALUE to put back; repeat for more."),
    tolerance: List[str] = typer.Option([], "--tolerance", help="Relative tolerance METRIC=1e-4 ('*' for all)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Launch on SageMaker without asking."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan, run and verdict as JSON."),
):
    """Relaunch a recorded job with its pins, then say IDENTICAL, EQUIVALENT, DIVERGED (exit 4) or UNVERIFIABLE
    (exit 1: the original has no model artifact to compare)."""
    from ledger.cli import _print_json, err, out
    from ledger.reproduce import parse_secrets, parse_tolerances, reproduce

    def confirm(plan) -> bool:
        return sys.stdin.isatty() and typer.confirm("Launch on SageMaker (this costs money)?", default=False)

    def show_plan(plan) -> None:  # before the relaunch, so the drift is read before the job's log
        if not as_json:
            out.print(render_plan(plan))

    log = (lambda line: err.print(line, markup=False, highlight=False)) if as_json else None
    if not dry_run:  # a read-only ledger (a backup) cannot record the relaunch: refuse before it starts
        from ledger.cli import _open

        _open().require_writable()
    try:
        result = reproduce(run, backend=backend, dry_run=dry_run, allow_drift=allow_drift,
                           secrets=parse_secrets(secret), yes=yes, tolerances=parse_tolerances(tolerance),
                           log=log, confirm=confirm, show_plan=show_plan)
    except PlanFailed as failure:
        if as_json:
            _print_json(failure.plan.to_dict())
        else:
            out.print(render_plan(failure.plan))
        raise
    if as_json:
        _print_json(result.to_dict())
    else:
        if result.verdict:
            out.print(f"{result.verdict.result}: {result.record.run_id} ({result.record.job_name}) reproduces "
                      f"{result.plan.run_id}", markup=False, highlight=False)
            for difference in result.verdict.differences:
                out.print(f"  differs: {difference}", markup=False, highlight=False)
            for drift in result.verdict.explained_by:
                kind = drift.get("kind") or "drift"
                out.print(f"  {kind} that could explain it: {drift['pin']}: {drift['recorded']} -> {drift['now']}",
                          markup=False, highlight=False)
            for drift in result.verdict.compensated:
                out.print(f"  compensated drift: {drift['pin']}: {drift['recorded']} -> {drift['now']} ({drift['by']})",
                          markup=False, highlight=False)
    if result.verdict and result.verdict.result == "DIVERGED":
        raise Diverged(f"reproduction {result.record.run_id} DIVERGED from {result.plan.run_id}",
                       f"compare them with: ledger diff {result.plan.run_id} {result.record.run_id}")
    if result.verdict and result.verdict.result == "UNVERIFIABLE":  # could not check is not a success
        missing = [d.get("reason") or d["what"] for d in result.verdict.differences if "artifact" in d["what"]]
        raise LedgerError(f"reproduction {result.record.run_id} of {result.plan.run_id} is UNVERIFIABLE: "
                          + "; ".join(missing),
                          f"the verdict is recorded; see it with: ledger show {result.record.run_id}")


def diff_command(
    run_a: str = typer.Argument(..., help="The first run."),
    run_b: str = typer.Argument(..., help="The second run."),
    as_json: bool = typer.Option(False, "--json", help="Print the differences as JSON."),
):
    """Show what differs between two runs: request, pins and outcome, side by side."""
    from ledger.cli import _open, _print_json, out
    from ledger.diffing import diff_records

    book = _open()
    a, b = book.get(run_a), book.get(run_b)
    differences = diff_records(a, b)
    if as_json:
        _print_json({"a": a.run_id, "b": b.run_id, "differences": differences})
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
    app.command("reproduce")(reproduce_command)
    app.command("diff")(diff_command)
