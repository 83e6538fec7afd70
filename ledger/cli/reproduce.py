"""`ledger reproduce`: the preflight table, the pinned relaunch, and the verdict (exit 4 when DIVERGED)."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from ledger.cli.console import err, open_book, out, print_json, say
from ledger.cli.views import render_plan
from ledger.errors import Diverged, LedgerError, PlanFailed
from ledger.run.reproduce import parse_secrets, parse_tolerances, reproduce


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

    def confirm(plan) -> bool:
        return sys.stdin.isatty() and typer.confirm("Launch on SageMaker (this costs money)?", default=False)

    def show_plan(plan) -> None:  # before the relaunch, so the drift is read before the job's log
        if not as_json:
            out.print(render_plan(plan))

    log = (lambda line: err.print(line, markup=False, highlight=False)) if as_json else None
    book = open_book()
    if not dry_run:  # a read-only ledger (a backup) cannot record the relaunch: refuse before it starts
        book.require_writable()
    try:
        result = reproduce(book, run, backend=backend, dry_run=dry_run, allow_drift=allow_drift,
                           secrets=parse_secrets(secret), yes=yes, tolerances=parse_tolerances(tolerance),
                           log=log, confirm=confirm, show_plan=show_plan)
    except PlanFailed as failure:
        if as_json:
            print_json(failure.plan.to_dict())
        else:
            out.print(render_plan(failure.plan))
        raise
    if as_json:
        print_json(result.to_dict())
    elif result.verdict:
        say(f"{result.verdict.result}: {result.record.run_id} ({result.record.job_name}) reproduces "
            f"{result.plan.run_id}")
        for difference in result.verdict.differences:
            say(f"  differs: {difference}")
        for drift in result.verdict.explained_by:
            kind = drift.get("kind") or "drift"
            say(f"  {kind} that could explain it: {drift['pin']}: {drift['recorded']} -> {drift['now']}")
        for drift in result.verdict.compensated:
            say(f"  compensated drift: {drift['pin']}: {drift['recorded']} -> {drift['now']} ({drift['by']})")
    if result.verdict and result.verdict.result == "DIVERGED":
        raise Diverged(f"reproduction {result.record.run_id} DIVERGED from {result.plan.run_id}",
                       f"compare them with: ledger diff {result.plan.run_id} {result.record.run_id}")
    if result.verdict and result.verdict.result == "UNVERIFIABLE":  # could not check is not a success
        missing = [d.get("reason") or d["what"] for d in result.verdict.differences if "artifact" in d["what"]]
        raise LedgerError(f"reproduction {result.record.run_id} of {result.plan.run_id} is UNVERIFIABLE: "
                          + "; ".join(missing),
                          f"the verdict is recorded; see it with: ledger show {result.record.run_id}")


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce_command)
