"""Settling what is still open: outcomes of jobs that ended, runs in flight asked about, spooled records appended,
the MLflow outbox pushed.

    settle      a finished job's DescribeTrainingJob response -> its outcome entry (the model artifact pinned)
    sync_runs   `ledger sync`: the spool, then every run not yet finished, each on its own, then the outbox
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.capture import aws_error_code, client_for
from ledger.capture.outcome import TERMINAL_STATUSES, build_outcome_from_description, capture_finished_outcome
from ledger.record import Outcome, RunRecord
from ledger.run.launcher import settle_lost_launch
from ledger.run.observers import notify_finished
from ledger.run.spool import import_spool_files
from ledger.store.mlflow_sink import push_outbox


def settle(book, run_id: str, description: dict[str, Any], session: Any = None) -> RunRecord:
    """Record the outcome of a job from its DescribeTrainingJob response (with the model artifact pinned), and
    tell the observers of finished runs."""
    record = book.record_outcome(run_id, capture_finished_outcome(description, session))
    notify_finished(book, record)
    return record


@dataclass
class SyncReport:
    imported: list[str] = field(default_factory=list)  # spooled records appended
    settled: list[str] = field(default_factory=list)  # runs whose final outcome was recorded
    in_flight: list[str] = field(default_factory=list)  # runs still running
    unreachable: list[str] = field(default_factory=list)  # runs whose backend could not be asked (see reasons)
    mirrored: list[str] = field(default_factory=list)  # runs pushed from the MLflow outbox
    mirror_pending: int = 0  # runs still in the MLflow outbox afterwards
    mirror_error: str | None = None  # why the MLflow outbox could not be pushed (it is kept for next time)
    damaged: list[str] = field(default_factory=list)  # spool files set aside as *.damaged
    refused: list[str] = field(default_factory=list)  # spool files and folders that are not this user's
    reasons: dict[str, str] = field(default_factory=dict)  # run id -> why it is unreachable, or why it Failed

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def sync_runs(book, session: Any = None) -> SyncReport:
    """Append spooled records, then settle every run not yet finished by asking its backend: SageMaker, in the
    region and account the job was sent to; the local backend, through its launcher's lock. Each run is settled
    on its own (one that fails is reported, the others go on), and a run is marked Failed only on its backend's
    word."""
    spooled = import_spool_files(book)
    report = SyncReport(imported=spooled.imported, damaged=spooled.damaged, refused=spooled.refused)
    frame = book.runs()
    if frame.empty:
        return _push_mirror(book, report)
    open_runs = frame[~frame["status"].isin(TERMINAL_STATUSES) & frame["backend"].isin(("sagemaker", "local"))]
    sagemaker = _SageMakerAsker(session)
    for run_id, backend in zip(open_runs["run_id"], open_runs["backend"]):
        try:
            if backend == "sagemaker":
                _sync_sagemaker_run(book, run_id, sagemaker, session, report)
            else:
                _sync_local_run(book, run_id, report)
        except Exception as error:  # noqa: BLE001 - one run's failure must not keep the others unsettled
            report.unreachable.append(run_id)
            report.reasons[run_id] = f"could not be settled: {type(error).__name__}: {error}"
    return _push_mirror(book, report)


def plan_job_location(record: RunRecord) -> tuple[str | None, str | None]:
    """Pure: (region, account) a SageMaker run's job was sent to: those of its ARN; without one, the region
    recorded at capture and the account of the caller who captured it (None where the record does not say)."""
    if record.outcome.arn:
        parts = record.outcome.arn.split(":", 5)
        if len(parts) == 6 and parts[0] == "arn":
            return parts[3] or None, parts[4] or None
    parts = (record.created_by or "").split(":", 5)
    account = parts[4] if len(parts) == 6 and parts[0] == "arn" and parts[4] else None
    return record.model_extra.get("region"), account


class _SageMakerAsker:
    """SageMaker clients by region, and the account these credentials belong to, each made once a sync."""

    def __init__(self, session: Any):
        self.session = session
        self.clients: dict[str | None, Any] = {}
        self._account: tuple[str | None, str | None] | None = None

    def client(self, region: str | None) -> Any:
        if region not in self.clients:
            self.clients[region] = client_for(self.session, "sagemaker", region_name=region)
        return self.clients[region]

    def account(self) -> tuple[str | None, str | None]:
        """(account, None), or (None, why STS did not say)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._account is None:
            try:
                self._account = (client_for(self.session, "sts").get_caller_identity()["Account"], None)
            except (BotoCoreError, ClientError, KeyError) as error:
                self._account = (None, f"{type(error).__name__}: {error}")
        return self._account


def _says_not_found(error: Exception) -> bool:
    message = str((getattr(error, "response", None) or {}).get("Error", {}).get("Message", "")).lower()
    return aws_error_code(error) in ("ValidationException", "ResourceNotFound") and any(
        words in message for words in ("not found", "could not find", "does not exist"))


def _sync_sagemaker_run(book, run_id: str, asker: _SageMakerAsker, session: Any, report: SyncReport) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    record = book.get(run_id)
    region, account = plan_job_location(record)
    mine, why_not = asker.account()
    if account and mine and account != mine:
        report.unreachable.append(run_id)
        report.reasons[run_id] = (f"its job is in account {account}; these credentials are of account {mine}: run "
                                  "`ledger sync` with credentials of that account")
        return
    client = asker.client(region)
    asked = client.meta.region_name if hasattr(client, "meta") else region
    try:
        description = client.describe_training_job(TrainingJobName=record.job_name)
    except ClientError as error:
        said = f"{aws_error_code(error)}: {(error.response.get('Error') or {}).get('Message', '')}".strip()
        doubt = _why_not_proof(record, region, account, mine, why_not) if _says_not_found(error) else said
        if doubt is None:
            book.record_outcome(run_id, Outcome(status="Failed", failure_reason=(
                f"no training job {record.job_name} exists in {region} (account {account}), where it was sent: the "
                f"request never reached SageMaker (DescribeTrainingJob: {said})")))
            report.settled.append(run_id)
            return
        report.unreachable.append(run_id)
        report.reasons[run_id] = (f"DescribeTrainingJob in {asked}: {said}" if doubt == said else
                                  f"DescribeTrainingJob in {asked} found no job {record.job_name}, but {doubt}: "
                                  "not marked Failed")
        return
    except BotoCoreError as error:
        report.unreachable.append(run_id)
        report.reasons[run_id] = f"DescribeTrainingJob in {asked}: {type(error).__name__}: {error}"
        return
    if description.get("TrainingJobStatus") in TERMINAL_STATUSES:
        settle(book, run_id, description, session)
        report.settled.append(run_id)
    else:
        if record.outcome.arn is None:
            book.record_outcome(run_id, build_outcome_from_description(description))
        report.in_flight.append(run_id)


def _why_not_proof(record: RunRecord, region: str | None, account: str | None, mine: str | None,
                   why_not: str | None) -> str | None:
    """Pure: why "no such job" from SageMaker does not prove the request never reached it (None: it does)."""
    if record.outcome.arn:
        return f"SageMaker had created it ({record.outcome.arn})"
    if not region:
        return "the record does not say which region it was sent to"
    if not account:
        return "the record does not say which account sent it"
    if mine != account:
        return f"the account of these credentials could not be checked ({why_not})"
    return None


def _sync_local_run(book, run_id: str, report: SyncReport) -> None:
    state, why = settle_lost_launch(book, run_id)
    if state == "running":
        report.in_flight.append(run_id)
    elif state == "settled":
        report.settled.append(run_id)
        report.reasons[run_id] = why
    elif state == "unknown":
        report.unreachable.append(run_id)
        report.reasons[run_id] = why


def _push_mirror(book, report: SyncReport) -> SyncReport:
    """Push the MLflow outbox (ledger.store.mlflow_sink); an MLflow failure is reported, never raised."""
    try:
        mirror = push_outbox(book)
    except Exception as error:  # noqa: BLE001 - the outbox keeps every run for the next sync
        report.mirror_error = f"{type(error).__name__}: {error}"
        return report
    report.mirrored, report.mirror_pending = mirror.mirrored, mirror.pending
    report.mirror_error = mirror.error or ("; ".join(f"{k}: {v}" for k, v in mirror.failed.items()) or None)
    return report
