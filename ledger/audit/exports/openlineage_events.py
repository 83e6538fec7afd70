"""OpenLineage (spec 2-0-2): a START and a COMPLETE, FAIL or ABORT RunEvent for each run, built with
openlineage-python's own classes and sent through its client, with its file or HTTP transport.

    build_run_uuid        pure: the ledger's run id (a ULID) as a stable UUIDv7, OpenLineage's runId
    build_events          pure: [START, COMPLETE | FAIL | ABORT] for one run (START only while it runs)
    send_events           side effect: the events through OpenLineageClient and the given transport

The job is the recurring definition: the training job's name without the SDK's timestamp (and a reproduction's
-rN), so that a job's runs and its reproductions are runs of one job. Each channel is an input dataset whose
version is the channel's manifest sha256, with its objects; the model archive is the output.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    dataset_version_dataset,
    error_message_run,
    input_statistics_input_dataset,
    job_type_job,
    nominal_time_run,
    processing_engine_run,
    source_code_location_job,
)
from openlineage.client.generated.base import DatasetFacet, RunFacet

from ledger.audit.exports import uris
from ledger.audit.exports.common import build_unpinned, find_unpinned, object_uri, rfc3339
from ledger.config import VERSION
from ledger.errors import LedgerError
from ledger.record import DataChannelPin, RunRecord

FACET_PREFIX = "sagemakerLedger_"  # custom facets are named after their producer
TERMINAL_EVENTS = {"Completed": RunState.COMPLETE, "Failed": RunState.FAIL, "Stopped": RunState.ABORT}
_SDK_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}$")
_REPRODUCTION_SUFFIX = re.compile(r"-r\d+$")


# --- the ledger's custom facets ---------------------------------------------------------------------------------


@attr.define
class LedgerRunFacet(RunFacet):
    """The ledger's own run: its id, the training job, what it reproduces and the verdict, what is unpinned."""

    runId: str  # noqa: N815 - OpenLineage facets name their fields in camelCase
    trainingJobName: str  # noqa: N815
    backend: str | None = None
    trainingJobArn: str | None = None  # noqa: N815
    status: str | None = None
    entryHash: str | None = None  # noqa: N815
    reproductionOf: str | None = None  # noqa: N815
    reproductionOfRunUuid: str | None = None  # noqa: N815
    verdict: str | None = None
    unpinned: list = attr.field(factory=list)

    @staticmethod
    def _get_schema() -> str:
        return uris.facet_schema_url("LedgerRunFacet")


@attr.define
class LedgerObjectsDatasetFacet(DatasetFacet):
    """The objects a channel held when the job read it: each by version id or content digest."""

    channel: str
    pinned: bool
    objects: list = attr.field(factory=list)
    snapshotUri: str | None = None  # noqa: N815
    unpinnedWhy: str | None = None  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return uris.facet_schema_url("LedgerObjectsDatasetFacet")


@attr.define
class LedgerArtifactDatasetFacet(DatasetFacet):
    """The model archive as recorded: sha256, version id, and the digest of its contents."""

    sha256: str
    versionId: str | None = None  # noqa: N815
    treeSha256: str | None = None  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return uris.facet_schema_url("LedgerArtifactDatasetFacet")


# --- pure: the events -------------------------------------------------------------------------------------------


def build_run_uuid(run_id: str) -> str:
    """A stable RFC 9562 UUIDv7 for a ledger run id.

    A ULID is 48 bits of Unix milliseconds and 80 random bits; a UUIDv7 is 48 bits of Unix milliseconds, the
    version (7), 12 bits, the variant (0b10) and 62 bits. The milliseconds, the top 12 and the bottom 62 random
    bits are kept: the same run id gives the same UUID, which sorts by time as the ULID does (6 random bits are
    dropped). A run id that is a UUID already is kept as it is.
    """
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        pass
    from ulid import ULID

    value = int.from_bytes(ULID.from_str(run_id).bytes, "big")
    millis, random = value >> 80, value & ((1 << 80) - 1)
    top, bottom = (random >> 68) & 0xFFF, random & ((1 << 62) - 1)
    return str(uuid.UUID(int=(millis << 80) | (0x7 << 76) | (top << 64) | (0b10 << 62) | bottom))


def build_job_name(record: RunRecord) -> str:
    """The OpenLineage job of a run: its training job's name without a reproduction's -rN and the SDK's
    timestamp."""
    name = _REPRODUCTION_SUFFIX.sub("", record.job_name) if record.reproduction_of else record.job_name
    return _SDK_SUFFIX.sub("", name) or name


def build_dataset_name(uri: str) -> tuple[str, str]:
    """(namespace, name) of a dataset as OpenLineage's naming spec has them (openlineage.client.naming)."""
    from openlineage.client.naming import dataset as naming

    parts = urlsplit(uri)
    if parts.scheme == "s3":
        named = naming.S3(bucket_name=parts.netloc, object_key=parts.path.lstrip("/") or "/")
    elif parts.scheme in ("file", ""):
        named = naming.LocalFileSystem(path=parts.path or uri)
    else:  # ledger-cas://sha256/<digest>: the ledger's content store is its own namespace
        return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/") or parts.netloc
    return named.get_namespace(), named.get_name()


def _input(name: str, pin: DataChannelPin, unpinned: list[dict]) -> InputDataset:
    namespace, dataset = build_dataset_name(pin.uri)
    gap = None if pin.pinned else find_unpinned(unpinned, f"data channel {name}")
    facets: dict[str, Any] = {FACET_PREFIX + "objects": LedgerObjectsDatasetFacet(
        channel=name, pinned=pin.pinned, snapshotUri=pin.snapshot_uri, producer=uris.PRODUCER,
        unpinnedWhy=gap["why"] if gap else None,
        objects=[{k: v for k, v in {"key": o.key, "uri": object_uri(pin.uri, o), "versionId": o.version_id,
                                     "etag": o.etag, "size": o.size}.items() if v is not None}
                 for o in pin.objects])}
    if pin.manifest_sha256:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=pin.manifest_sha256, producer=uris.PRODUCER)
    statistics = input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
        size=pin.total_bytes, fileCount=pin.object_count, producer=uris.PRODUCER)
    return InputDataset(namespace=namespace, name=dataset, facets=facets, inputFacets={"inputStatistics": statistics})


def _outputs(record: RunRecord) -> list[OutputDataset]:
    artifact = record.outcome.model_artifact
    if artifact is None or not artifact.uri or not artifact.sha256:
        return []
    namespace, name = build_dataset_name(artifact.uri)
    return [OutputDataset(namespace=namespace, name=name, facets={
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=artifact.version_id or artifact.sha256, producer=uris.PRODUCER),
        FACET_PREFIX + "artifact": LedgerArtifactDatasetFacet(
            sha256=artifact.sha256, versionId=artifact.version_id, treeSha256=artifact.tree_sha256,
            producer=uris.PRODUCER),
    })]


def _job(record: RunRecord) -> Job:
    facets: dict[str, Any] = {"jobType": job_type_job.JobTypeJobFacet(
        processingType="BATCH", integration="SAGEMAKER", jobType="TRAINING_JOB", producer=uris.PRODUCER)}
    code = record.pins.code
    if code.commit:
        repo = code.repo_url or code.model_extra.get("repo_root") or ""
        url = "file://" + repo if repo.startswith("/") else repo  # the facet's url is a URI
        facets["sourceCodeLocation"] = source_code_location_job.SourceCodeLocationJobFacet(
            type="git", url=url, repoUrl=url, version=code.commit, branch=code.branch, producer=uris.PRODUCER)
    return Job(namespace=f"{uris.NAME}/{record.project}", name=build_job_name(record), facets=facets)


def _run_facets(record: RunRecord, unpinned: list[dict], final: bool) -> dict[str, Any]:
    outcome = record.outcome
    facets: dict[str, Any] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=VERSION, name=uris.NAME, producer=uris.PRODUCER),
        FACET_PREFIX + "run": LedgerRunFacet(
            runId=record.run_id, trainingJobName=record.job_name, backend=record.backend,
            trainingJobArn=outcome.arn, status=outcome.status if final else None,
            entryHash=record.chain.entry_hash if record.chain else None, reproductionOf=record.reproduction_of,
            reproductionOfRunUuid=build_run_uuid(record.reproduction_of) if record.reproduction_of else None,
            verdict=record.verdict.result if final and record.verdict else None, unpinned=unpinned,
            producer=uris.PRODUCER),
    }
    if outcome.started_at:
        facets["nominalTime"] = nominal_time_run.NominalTimeRunFacet(
            nominalStartTime=rfc3339(outcome.started_at),
            nominalEndTime=rfc3339(outcome.ended_at) if final else None, producer=uris.PRODUCER)
    if final and outcome.status == "Failed":
        facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=outcome.failure_reason or "the training job failed", programmingLanguage="PYTHON",
            producer=uris.PRODUCER)
    return facets


def build_events(record: RunRecord) -> list[RunEvent]:
    """[START, COMPLETE | FAIL | ABORT] RunEvents of one run; START only while it has no final status."""
    unpinned = build_unpinned(record)
    run_id, job = build_run_uuid(record.run_id), _job(record)
    inputs = [_input(name, pin, unpinned) for name, pin in sorted(record.pins.data.items())]
    outcome = record.outcome
    events = [RunEvent(eventType=RunState.START, eventTime=rfc3339(outcome.started_at or record.created_at),
                       run=Run(runId=run_id, facets=_run_facets(record, unpinned, final=False)), job=job,
                       inputs=inputs, outputs=[], producer=uris.PRODUCER)]
    terminal = TERMINAL_EVENTS.get(outcome.status or "")
    if terminal is not None:
        events.append(RunEvent(
            eventType=terminal, eventTime=rfc3339(outcome.ended_at or outcome.started_at or record.created_at),
            run=Run(runId=run_id, facets=_run_facets(record, unpinned, final=True)), job=job, inputs=inputs,
            outputs=_outputs(record) if terminal is RunState.COMPLETE else [], producer=uris.PRODUCER))
    return events


# --- side effect: through the client ----------------------------------------------------------------------------


def build_file_transport(path: str):
    from openlineage.client.transport.file import FileConfig, FileTransport

    return FileTransport(FileConfig(log_file_path=str(path), append=True))


def build_http_transport(url: str):
    """POSTs each event to URL/api/v1/lineage (Marquez's endpoint); retried up to three times, not the default five."""
    from openlineage.client.transport.http import HttpConfig, HttpTransport

    retry = {"total": 3, "connect": 3, "read": 3, "backoff_factor": 0.3, "status_forcelist": [500, 502, 503, 504],
             "allowed_methods": ["HEAD", "POST"]}
    try:
        return HttpTransport(HttpConfig(url=url, timeout=10.0, retry=retry))
    except ValueError as error:
        raise LedgerError(f"cannot send OpenLineage events to {url!r}: {error}",
                          "give the lineage server's base URL, e.g. http://localhost:5000") from None


def send_events(events: Iterable[RunEvent], transport) -> list[str]:
    """Emit the events through OpenLineageClient and `transport`; returns each as it was sent (JSON text).

    The explicit config keeps the client from adding the *exporting* process's git repository or environment
    variables to the events: they describe the training job, as recorded, not the machine that exports them.
    """
    from openlineage.client import OpenLineageClient
    from openlineage.client.serde import Serde

    client = OpenLineageClient(transport=transport, config={
        "facets": {"source_code_location": {"disabled": True}, "environment_variables": []}})
    if client.transport is not transport:  # OPENLINEAGE_DISABLED=true: the client would drop every event
        raise LedgerError("the OpenLineage client is disabled (OPENLINEAGE_DISABLED=true): nothing would be sent",
                          "unset OPENLINEAGE_DISABLED to export")
    sent = []
    try:
        for event in events:
            client.emit(event)
            sent.append(Serde.to_json(event))
    finally:
        client.close()
    return sent
