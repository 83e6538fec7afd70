"""A reproducibility ledger for SageMaker training jobs. Public API only.

    autolog(project=...)          record and pin every training job this process launches (export=: and export it)
    open_ledger()                 the ledger (LEDGER_DB_URL, else SQLite in LEDGER_HOME): runs, get, verify, ...
    reproduce(run, backend=...)   relaunch a recorded run with its pins, and record the verdict
    export(runs, format, ...)     a run's facts as SLSA provenance, OpenLineage, CycloneDX or a SageMaker Model Card
    sign_model(run, key=...)      the run's model files signed with OpenSSF model signing
    RunRecord                     what a run's record holds
"""

from typing import Any

from ledger.config import VERSION
from ledger.record import RunRecord
from ledger.run import hooks
from ledger.store.ledger import Ledger, open_ledger

__version__ = VERSION

AUTOLOG_EXPORTS = "export "  # the names of the observers autolog(export=...) adds (ledger.run.observers)


def autolog(project: str | None = None, boto_session: Any = None, strict: bool | None = None,
            data_pin: str | None = None, disable: bool = False, export: Any = None) -> None:
    """Record and pin every SageMaker training job this process launches from now on.

    project:      the name runs are filed under (default: the git repository's name)
    boto_session: a sagemaker.Session, boto3 Session or client made before this call, to capture through it too
    strict:       refuse to launch a job with a pin gap (default: LEDGER_STRICT)
    data_pin:     'versions' | 'snapshot' | 'off' (default: LEDGER_DATA_PIN, else 'versions')
    disable:      remove every handler autolog installed (and its exports)
    export:       write each run's exports as it finishes: a format ('slsa', 'openlineage', 'cyclonedx',
                  'model-card'), a list of them, or {"formats": [...], "dir": DIR, "sign": KEY, "to": URL}
                  (files go to DIR, default LEDGER_HOME/exports; OpenLineage events to URL when given). An export
                  that fails is one line on stderr: the run is recorded all the same.
    """
    from ledger.run.observers import add_observer, remove_observers

    observers = {}
    if export is not None and not disable:
        from ledger.audit.exports import build_autolog_exports

        observers = build_autolog_exports(export)  # bad options fail here, before anything is installed
    hooks.autolog(project=project, boto_session=boto_session, strict=strict, data_pin=data_pin, disable=disable)
    remove_observers(AUTOLOG_EXPORTS)
    for name, observer in observers.items():
        add_observer(name, observer)


def reproduce(run: str, *, book: Ledger | None = None, **options):
    """Relaunch a recorded run (its id, a unique prefix of it, or its job name) with its pins, on its own backend
    or `backend=`, and record the verdict. Options are `ledger reproduce`'s: backend, dry_run, allow_drift,
    secrets, yes, tolerances, session, log. Returns the Reproduction (plan, record, verdict)."""
    from ledger.run.reproduce import reproduce as reproduce_run

    return reproduce_run(book if book is not None else open_ledger(), run, **options)


def export(runs: str | list[str], format: str, *, output: str | None = None, sign: str | None = None,
           to: str | None = None, book: Ledger | None = None, session: Any = None):
    """Export runs as `ledger export` does: format 'slsa' | 'openlineage' | 'cyclonedx' | 'model-card'; to the file
    `output`, to the OpenLineage endpoint `to`, or (neither) into the result's `data`; `sign` an Ed25519 private
    key. The export is recorded as a fact of each run. Returns the Export (destination, sha256, data, ...)."""
    from ledger.audit.exports import save_export

    return save_export(book if book is not None else open_ledger(), [runs] if isinstance(runs, str) else list(runs),
                       format, output=output, sign=sign, to=to, session=session)


def sign_model(run: str, *, key: str, model_dir: str | None = None, signature: str | None = None,
               book: Ledger | None = None, session: Any = None):
    """Sign the run's model files as `ledger sign-model` does (OpenSSF model signing; `key` an EC private key)."""
    from ledger.audit.exports import save_model_signature

    return save_model_signature(book if book is not None else open_ledger(), run, key, model_dir=model_dir,
                                signature=signature, session=session)


__all__ = ["Ledger", "RunRecord", "autolog", "export", "open_ledger", "reproduce", "sign_model"]
