"""A reproducibility ledger for SageMaker training jobs. Public API only.

    autolog(project=...)          record and pin every training job this process launches
    open_ledger()                 the ledger (LEDGER_DB_URL, else SQLite in LEDGER_HOME): runs, get, verify, ...
    reproduce(run, backend=...)   relaunch a recorded run with its pins, and record the verdict
    RunRecord                     what a run's record holds
"""

from ledger.config import VERSION
from ledger.record import RunRecord
from ledger.run.hooks import autolog
from ledger.store.ledger import Ledger, open_ledger

__version__ = VERSION


def reproduce(run: str, *, book: Ledger | None = None, **options):
    """Relaunch a recorded run (its id, a unique prefix of it, or its job name) with its pins, on its own backend
    or `backend=`, and record the verdict. Options are `ledger reproduce`'s: backend, dry_run, allow_drift,
    secrets, yes, tolerances, session, log. Returns the Reproduction (plan, record, verdict)."""
    from ledger.run.reproduce import reproduce as reproduce_run

    return reproduce_run(book if book is not None else open_ledger(), run, **options)


__all__ = ["Ledger", "RunRecord", "autolog", "open_ledger", "reproduce"]
