"""The command line: parse, call the library, render. Errors are mapped to exit codes in `main()` only."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console

from ledger.errors import LedgerError, TamperDetected

app = typer.Typer(
    name="ledger",
    help="A reproducibility ledger for SageMaker training jobs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The database: migrations and projections.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _print_json(data) -> None:
    # Plain print, not Rich: JSON must reach pipes byte for byte, without markup or wrapping.
    print(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def _open():
    from ledger.store.ledger import open_ledger

    return open_ledger()


# --- reading commands ------------------------------------------------------------------------------------------


@app.command("runs")
def runs_command(
    project: Optional[str] = typer.Option(None, help="Only runs of this project."),
    status: Optional[str] = typer.Option(None, help="Only runs with this status (Completed, Failed, ...)."),
    where: Optional[str] = typer.Option(None, help="A filter, e.g. \"params.max_depth = '5' and metrics.rmse < 2\"."),
    limit: int = typer.Option(50, help="At most this many runs, newest first (0: all)."),
    as_json: bool = JSON_OPTION,
):
    """List recorded runs, newest first."""
    frame = _open().runs(project=project, status=status, where=where, limit=limit or None)
    if as_json:
        _print_json(json.loads(frame.to_json(orient="records", date_format="iso")))
        return
    if frame.empty:
        out.print("No runs recorded yet. Record some with: ledger demo")
        return
    from ledger.views import render_runs

    out.print(render_runs(frame))


@app.command("show")
def show_command(run: str = typer.Argument(..., help="Run id, a unique prefix of it, or the job name."),
                 as_json: bool = JSON_OPTION):
    """One run, whole: request, pins, outcome, chain."""
    record = _open().get(run)
    if as_json:
        _print_json(record.to_dict())
        return
    from ledger.views import render_record

    out.print(render_record(record))


@app.command("verify")
def verify_command(as_json: bool = JSON_OPTION,
                   chain_only: bool = typer.Option(False, "--chain-only", help="Skip the projection check."),
                   anchor: Optional[str] = typer.Option(None, "--anchor", help="Also check the log against the "
                                                        "anchors at file://PATH or s3://bucket/key (or an audit report).")):
    """Check the hash chain and every projection against the log. Exit 3 when something was altered."""
    from ledger.errors import DatabaseDamaged

    try:
        book = _open()
        report = book.verify(check_projections=not chain_only)
        if anchor:
            from ledger.anchor import check_anchors

            report = check_anchors(book, report, anchor)
    except DatabaseDamaged as error:
        error.exit_code = TamperDetected.exit_code  # a log that cannot be read cannot be vouched for
        raise
    if as_json:
        _print_json(report.to_dict())
    elif report.ok:
        out.print(f"OK: {report.entries} entries, chain intact; head seq {report.head_seq} {report.head_hash}")
    if not report.ok:
        bad = report.first_bad
        if bad.get("kind") == "guard":  # the chain may be intact, but nothing stops the next edit
            raise TamperDetected(f"TAMPERED: {bad['problem']}", "find out who removed it, then restore the "
                                 "trigger as the ledger's first migration (0001) creates it, and verify again")
        raise TamperDetected(
            f"TAMPERED at entry {bad['seq']} (run {bad['run_id']}): {bad['problem']}",
            "restore the database from a backup; `ledger db rebuild` repairs projections only",
        )


@app.command("sync")
def sync_command(as_json: bool = JSON_OPTION):
    """Append records spooled while the database could not be written (setting damaged ones aside), settle runs
    still in flight (SageMaker's in their own region and account; local ones whose launcher died), and push the
    MLflow outbox."""
    from ledger.recorder import sync_runs

    book = _open()
    book.require_writable()  # a read-only ledger (a backup) is refused in one line, not half-synced
    report = sync_runs(book)
    if as_json:
        _print_json(report.to_dict())
        return
    out.print(f"imported {len(report.imported)} spooled record(s); settled {len(report.settled)} run(s); "
              f"{len(report.in_flight)} still running; {len(report.unreachable)} could not be settled; "
              f"mirrored {len(report.mirrored)} run(s) to MLflow"
              + (f" ({report.mirror_pending} still queued: {report.mirror_error})" if report.mirror_pending else "")
              + (f"; set aside {len(report.damaged)} damaged spool file(s)" if report.damaged else "")
              + (f"; refused {len(report.refused)} spool file(s) or folder(s) not yours" if report.refused else ""),
              markup=False, highlight=False)
    for run_id, reason in report.reasons.items():  # one line a run: why it Failed, or why it was not asked
        out.print(f"{run_id}: {reason}", markup=False, highlight=False)


# --- the database ----------------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade_command():
    """Migrate the database to the newest schema, then rebuild projections. Entries are never changed."""
    from ledger.store.ledger import upgrade_database

    before, after, runs = upgrade_database()
    if before == after:
        out.print(f"Already at schema {after}.")
    else:
        out.print(f"Upgraded schema {before or 'none'} -> {after}; projections rebuilt for {runs} run(s).")


@db_app.command("rebuild")
def db_rebuild_command():
    """Rebuild every projection (runs, params, metrics, data objects) from the log."""
    count = _open().rebuild()
    out.print(f"Rebuilt projections for {count} run(s) from the log.")


# --- commands that live in their own modules (ledger/commands/*.py), each with register(app) -------------------

COMMAND_MODULES: tuple[str, ...] = ("run", "reproduce", "demo", "dashboard", "audit",)


def _register_command_modules() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"ledger.commands.{name}").register(app)


_register_command_modules()


# --- entry point -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map every LedgerError to a one-line message and its exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="ledger", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except LedgerError as error:
        err.print(f"error: {error}", markup=False, highlight=False)
        return error.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        return 1
    except typer.exceptions.TyperException as error:  # bad usage: typer prints it as click would
        error.show()
        return error.exit_code
    except typer.Exit as error:
        return error.exit_code


def run() -> None:
    sys.exit(main())
