"""`ledger sync`: spooled records appended, runs in flight settled, the MLflow outbox pushed."""

from __future__ import annotations

import typer

from ledger.cli.console import JSON_OPTION, open_book, out, print_json
from ledger.run.sync import sync_runs


def sync_command(as_json: bool = JSON_OPTION):
    """Append records spooled while the database could not be written (setting damaged ones aside), settle runs
    still in flight (SageMaker's in their own region and account; local ones whose launcher died), and push the
    MLflow outbox."""
    book = open_book()
    book.require_writable()  # a read-only ledger (a backup) is refused in one line, not half-synced
    report = sync_runs(book)
    if as_json:
        print_json(report.to_dict())
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


def register(app: typer.Typer) -> None:
    app.command("sync")(sync_command)
