"""The capture path every launch goes through: autolog's botocore handler and `ledger run` alike.

    capture_request   request -> pins, gaps and the request to send (image by digest, channels by snapshot)
    save_launch       append the record (or spool it when the database cannot be written)
    settle            a finished job's description -> its outcome entry

Sacred's observer rule holds: a failure before the launch becomes a gap (or, in strict mode, refuses the launch);
a failure after the launch only warns. Nothing here ever breaks a user's training job except strict mode.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ledger.config import Settings, load_settings
from ledger.errors import CaptureRefused
from ledger.record import (
    DataChannelPin,
    Gap,
    ImagePin,
    ModelArtifact,
    Outcome,
    Pins,
    RunRecord,
    SourceArchive,
    canonical_json,
)

TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")


@dataclass
class Capture:
    """What capture made of one request: the record to save, the request to send, blobs the record points at."""

    record: RunRecord
    request: dict[str, Any]  # to send: pinned, secrets intact (only the record is redacted)
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def gaps(self) -> list[Gap]:
        return self.record.pins.gaps


def _guard(gaps: list[Gap], what: str, fn: Callable[[], Any], default: Any) -> Any:
    """Run one capture source; an unexpected failure becomes a gap, never an exception for the user's job."""
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 - capture must not break the job
        gaps.append(Gap(what=what, why=f"capture failed: {type(error).__name__}: {error}",
                        fix="the job was sent without this pin; please report the error"))
        return default


def capture_request(
    request: dict[str, Any],
    *,
    session: Any = None,
    settings: Settings | None = None,
    project: str | None = None,
    workdir: str | os.PathLike | None = None,
    backend: str = "sagemaker",
    inherited: Pins | None = None,
) -> Capture:
    """Pin everything the request refers to and rewrite the moving references to immutable ones.

    `request` is left untouched; `Capture.request` is the one to send. Raises CaptureRefused only in strict mode.
    `inherited` (reproduce) carries the recorded data channels and code: those are what the relaunch reads, so
    they are not pinned again from the present state of the world; the SDK 3.x code channels are, from where the
    relaunch reads them (reproduce restores them first).
    """
    from ledger.capture import code, data, environment, hardware, image, secrets

    settings = settings or load_settings()
    sent = copy.deepcopy(request)
    gaps: list[Gap] = []
    pins = Pins()

    algorithm = sent.setdefault("AlgorithmSpecification", {})
    if backend == "local":
        # On this machine this Python environment stands in for the container: the pin keeps the requested image,
        # the environment's fingerprint as its digest (older records have only that), and what ran in `ran`.
        pins.environment = env = _guard(gaps, "environment", environment.capture_environment, pins.environment)
        pins.image = ImagePin(uri=algorithm.get("TrainingImage"), digest=env.fingerprint, source="environment",
                              ran=build_stand_in(sent, env))
    elif algorithm.get("TrainingImage"):
        pins.image, more = _guard(gaps, "image", lambda: image.capture_image(algorithm["TrainingImage"], session),
                                  (pins.image, []))
        gaps += more
        if pins.image.pinned_uri:
            algorithm["TrainingImage"] = pins.image.pinned_uri
    elif algorithm.get("AlgorithmName"):
        gaps.append(Gap(what="image", why=f"a marketplace algorithm ({algorithm['AlgorithmName']}) has no image "
                        "digest the ledger can see", fix="use an ECR image by digest"))

    code_channels = code.plan_code_channel_names(sent)
    stored_channels = _file_channels(sent) if backend == "local" else {}
    if settings.data_pin == "off":
        gaps.append(Gap(what="data", why="LEDGER_DATA_PIN=off: input channels were not pinned",
                        fix="unset LEDGER_DATA_PIN (or set it to versions or snapshot)"))
    else:
        known = dict(inherited.data) if inherited else {}
        skip = tuple(code_channels) + tuple(stored_channels) + tuple(known)
        pins.data, more = _guard(gaps, "data", lambda: data.capture_channels(sent, session, skip=skip), ({}, []))
        pins.data.update(known)
        stored_channels = {k: v for k, v in stored_channels.items() if k not in known}
        gaps += more
        for name, uri in stored_channels.items():  # kept in the content store, so a reproduction can read them
            pins.data[name], more = _guard(gaps, f"data channel {name}", lambda: _store_file_channel(uri, name),
                                           (DataChannelPin(uri=uri, kind="file"), []))
            gaps += more
        if settings.data_pin == "snapshot":
            gaps += _snapshot_channels(sent, pins, session)

    blobs: dict[str, bytes] = {}
    if inherited:
        pins.code = inherited.code.model_copy(deep=True)
    else:
        pin, more, diff = _guard(gaps, "code", lambda: code.capture_code(workdir, sent), (pins.code, [], b""))
        pins.code, blobs = pin, ({pin.diff_sha256: diff} if diff and pin.diff_sha256 else {})
        gaps += more
        archive, more = _guard(gaps, "source archive", lambda: _capture_source_archive(sent, session), (None, []))
        pins.code.source_archive = archive
        gaps += more
    remote_base = _remote_function_base(sent)
    if remote_base and not inherited:  # @remote: the pickled function and its arguments are the code
        pin, more = _guard(gaps, "@remote function", lambda: data.capture_s3_channel(
            "@remote function", remote_base.rstrip("/") + "/", "S3Prefix", session), (None, []))
        pins.code.remote_function = pin
        gaps += more
    if code_channels:  # a reproduction too: its record names the code it reads, not the original's
        kept: dict[str, bytes] = {}
        channels, more = _guard(gaps, "code channels", lambda: code.capture_code_channels(sent, session, keep=kept),
                                ({}, []))
        pins.code.code_channels = channels
        blobs.update(kept)  # saved as ledger blobs beside the record, so the code can be restored
        gaps += more

    pins.hardware, more = _guard(gaps, "hardware", lambda: hardware.capture_hardware(sent, backend),
                                 (pins.hardware, []))
    gaps += more
    if not pins.environment.fingerprint:
        pins.environment = _guard(gaps, "environment", environment.capture_environment, pins.environment)
    created_by = _guard(gaps, "created_by", lambda: environment.capture_caller(session), None)

    salt = secrets.new_salt()
    redaction = secrets.build_request_redaction(sent, salt)
    redacted, redacted_keys = redaction.request, redaction.redacted_keys
    redacted_original = redacted if request == sent else secrets.build_request_redaction(request).request
    # As the user wrote them: SDK 2.x framework estimators send each value JSON-encoded; the request keeps that.
    pins.hyperparameters = {k: code.build_hyperparameter_text(v)
                            for k, v in (redacted.get("HyperParameters") or {}).items()}
    pins.gaps = gaps
    record = RunRecord(
        project=project or _project_name(pins) or "default",
        job_name=sent.get("TrainingJobName") or "unnamed",
        backend=backend,
        created_by=created_by,
        request=redacted,
        original_request=None if redacted_original == redacted else redacted_original,
        pins=pins,
        redacted_keys=redacted_keys,
        **({"redactions": redaction.record_field(salt)} if redaction.values else {}),
    )
    if settings.strict and gaps:
        listed = "; ".join(f"{g.what}: {g.why} (fix: {g.fix})" if g.fix else f"{g.what}: {g.why}" for g in gaps)
        raise CaptureRefused(f"strict mode refused to launch {record.job_name}: {len(gaps)} pin gap(s): {listed}",
                             "fix the gaps, or unset LEDGER_STRICT to launch with them recorded")
    return Capture(record=record, request=sent, blobs=blobs)


def build_stand_in(request: dict[str, Any], env) -> dict[str, Any]:
    """Pure: what ran in place of the requested image on the local backend: this Python environment, running the
    entry point, or for a built-in algorithm the ledger's own implementation of it."""
    from ledger.backends.local import ALGORITHM_SCRIPTS, builtin_algorithm

    how = "the ledger's own Python environment"
    program = (request.get("HyperParameters") or {}).get("sagemaker_program")
    algorithm = builtin_algorithm((request.get("AlgorithmSpecification") or {}).get("TrainingImage"))
    if program:
        how += f", running the entry point {program.strip(chr(34))} with its interpreter"
    elif algorithm in ALGORITHM_SCRIPTS:
        how += f", running the ledger's {algorithm} stand-in (ledger/backends/{ALGORITHM_SCRIPTS[algorithm].name})"
    return {"kind": "python environment", "fingerprint": env.fingerprint, "python": env.python,
            "platform": env.platform, "how": how}


def _remote_function_base(request: dict[str, Any]) -> str | None:
    """The S3 base under which the SDK's @remote put the pickled function and arguments, if this is one."""
    arguments = (request.get("AlgorithmSpecification") or {}).get("ContainerArguments") or []
    if "--s3_base_uri" in arguments[:-1]:
        return arguments[arguments.index("--s3_base_uri") + 1]
    return None


def _file_channels(request: dict[str, Any]) -> dict[str, str]:
    """{channel: file:// URI} of a request's local channels."""
    found = {}
    for channel in request.get("InputDataConfig") or []:
        uri = ((channel.get("DataSource") or {}).get("S3DataSource") or {}).get("S3Uri", "")
        if uri.startswith("file://"):
            found[channel.get("ChannelName")] = uri
    return found


def _store_file_channel(uri: str, name: str) -> tuple[DataChannelPin, list[Gap]]:
    """The channel's files in the content store, and a gap naming the symbolic links that were not stored."""
    from ledger.content_store import pin_file_channel_and_refusals, plan_refused_links_gap

    pin, refused = pin_file_channel_and_refusals(uri)
    return DataChannelPin.model_validate(pin), [g for g in [plan_refused_links_gap(name, refused)] if g]


def _capture_source_archive(request: dict[str, Any], session: Any):
    """The code archive: one already in the content store (ledger run) is pinned by its digest as it is."""
    from ledger.capture import code
    from ledger.content_store import CAS_PREFIX, parse_cas_uri

    uri = code.plan_submit_directory(request)
    if uri and uri.startswith(CAS_PREFIX):
        return SourceArchive(uri=uri, sha256=parse_cas_uri(uri)), []
    return code.capture_source_archive(request, session)


def _snapshot_channels(sent: dict[str, Any], pins: Pins, session: Any) -> list[Gap]:
    """Copy each pinned S3 channel's recorded versions to an immutable prefix and point the channel there."""
    from ledger.capture import data

    gaps: list[Gap] = []
    for channel in sent.get("InputDataConfig") or []:
        pin = pins.data.get(channel.get("ChannelName"))
        source = (channel.get("DataSource") or {}).get("S3DataSource")
        if pin is None or source is None or pin.kind not in ("S3Prefix", "ManifestFile") or not pin.objects:
            continue
        uri, more = _guard(gaps, f"snapshot of {pin.uri}", lambda: data.snapshot_channel(pin, session), (None, []))
        gaps += more
        if uri:
            pin.snapshot_uri = uri
            source["S3Uri"] = uri
    return gaps


def _project_name(pins: Pins) -> str | None:
    url = pins.code.repo_url or pins.code.model_extra.get("repo_root")
    return Path(url.rstrip("/")).name.removesuffix(".git") if url else None


# --- saving ---------------------------------------------------------------------------------------------------


def spool_dir(settings: Settings) -> Path:
    return settings.home / "spool"


def save_launch(capture: Capture, settings: Settings | None = None, *, announce: bool = True) -> RunRecord:
    """Append the launch entry. When the database cannot be written, the record goes to a spool file with a gap
    saying so, and `ledger sync` appends it later: the job is never held up by the ledger."""
    from ledger.store.ledger import open_ledger

    settings = settings or load_settings()
    try:
        book = open_ledger(settings=settings)
        for blob in capture.blobs.values():
            book.put_blob(blob)
        saved = book.append(capture.record)
    except Exception as error:  # noqa: BLE001 - the job goes on; the record waits in the spool
        capture.record.pins.gaps.append(Gap(
            what="ledger database", why=f"the record could not be saved: {type(error).__name__}: {error}",
            fix="it was spooled; run `ledger sync` once the database is writable"))
        path = _spool(capture, settings)
        _say(f"ledger: could not save run {capture.record.run_id} ({error}); spooled to {path}")
        return capture.record
    if announce:
        _say(build_capture_line(saved))
    return saved


def _spool(capture: Capture, settings: Settings) -> Path:
    body = canonical_json({"record": capture.record.to_dict(),
                           "blobs": {k: base64.b64encode(v).decode() for k, v in capture.blobs.items()}})
    for directory in (spool_dir(settings), Path(tempfile.gettempdir()) / f"ledger-spool-{os.getuid()}"):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{capture.record.run_id}.json"
            path.write_text(body, encoding="utf-8")
            return path
        except OSError:
            continue
    raise OSError("no writable spool directory")


def import_spool(book, settings: Settings) -> list[str]:
    """Append every spooled record not yet in the ledger; remove each spool file once its record is safe."""
    imported = []
    for directory in (spool_dir(settings), Path(tempfile.gettempdir()) / f"ledger-spool-{os.getuid()}"):
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
            spooled = json.loads(path.read_text(encoding="utf-8"))
            record = RunRecord.from_dict(spooled["record"])
            for blob in spooled.get("blobs", {}).values():
                book.put_blob(base64.b64decode(blob))
            if not book.has_run(record.run_id):
                book.append(record)
                imported.append(record.run_id)
            path.unlink()
    return imported


def build_capture_line(record: RunRecord) -> str:
    """Pure: the one line a user sees on capture."""
    pins = record.pins
    pinned = []
    if pins.image.digest and pins.image.source == "environment":  # the image does not run here
        pinned.append(f"environment {pins.image.digest[:12]} standing in for the image")
    elif pins.image.digest:
        pinned.append(f"image {pins.image.digest[:19]}")
    if pins.data:
        objects = sum(c.object_count for c in pins.data.values())
        pinned.append(f"{len(pins.data)} channel(s), {objects} object(s)"
                      + (" (snapshot)" if any(c.snapshot_uri for c in pins.data.values()) else ""))
    if pins.code.commit:
        pinned.append(f"commit {pins.code.commit[:10]}" + (" +diff" if pins.code.dirty else ""))
    line = f"ledger: recorded {record.run_id} ({record.job_name}): " + (", ".join(pinned) or "nothing pinned")
    if pins.gaps:
        line += f"; {len(pins.gaps)} gap(s): " + "; ".join(f"{g.what}: {g.fix or g.why}" for g in pins.gaps[:3])
        if len(pins.gaps) > 3:
            line += f"; ... see: ledger show {record.run_id}"
    return line + f". Reproduce: ledger reproduce {record.run_id}"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- outcomes -------------------------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        from datetime import timezone

        value = value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return value.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return str(value)


def build_outcome(description: dict[str, Any], artifact: ModelArtifact | None = None) -> Outcome:
    """Pure: a DescribeTrainingJob response as an Outcome."""
    metrics = {m["MetricName"]: float(m["Value"]) for m in description.get("FinalMetricDataList") or []}
    uri = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    return Outcome(
        status=description.get("TrainingJobStatus"),
        arn=description.get("TrainingJobArn"),
        started_at=_iso(description.get("TrainingStartTime")),
        ended_at=_iso(description.get("TrainingEndTime")),
        billable_seconds=description.get("BillableTimeInSeconds"),
        failure_reason=description.get("FailureReason"),
        metrics=metrics,
        model_artifact=artifact or (ModelArtifact(uri=uri) if uri else None),
    )


def capture_model_artifact(uri: str, session: Any = None) -> ModelArtifact:
    """The model archive by version id, sha256 and the digest of its contents. A missing archive is not an error:
    the artifact keeps its URI and nothing else."""
    from ledger.capture import client_for
    from ledger.capture.data import parse_s3_uri
    from ledger.content_store import sha256_file, tree_sha256

    try:
        bucket, key = parse_s3_uri(uri)
        s3 = client_for(session, "s3")
        with tempfile.TemporaryDirectory(prefix="ledger-model-") as tmp:
            path = Path(tmp) / "model.tar.gz"
            response = s3.get_object(Bucket=bucket, Key=key)
            with open(path, "wb") as handle:
                for chunk in iter(lambda: response["Body"].read(1 << 20), b""):
                    handle.write(chunk)
            version = response.get("VersionId")
            return ModelArtifact(uri=uri, version_id=None if version in (None, "null") else version,
                                 sha256=sha256_file(path), tree_sha256=tree_sha256(path))
    except Exception:  # noqa: BLE001 - an artifact we cannot read is recorded by URI only
        return ModelArtifact(uri=uri)


def settle(book, run_id: str, description: dict[str, Any], session: Any = None) -> RunRecord:
    """Record the outcome of a job from its DescribeTrainingJob response (with the model artifact pinned)."""
    uri = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    artifact = capture_model_artifact(uri, session) if uri and description.get("TrainingJobStatus") == "Completed" \
        else None
    return book.record_outcome(run_id, build_outcome(description, artifact))


# --- settling runs in flight ------------------------------------------------------------------------------------


@dataclass
class SyncReport:
    imported: list[str] = field(default_factory=list)  # spooled records appended
    settled: list[str] = field(default_factory=list)  # runs whose final outcome was recorded
    in_flight: list[str] = field(default_factory=list)  # runs still running
    unreachable: list[str] = field(default_factory=list)  # runs SageMaker could not be asked about
    mirrored: list[str] = field(default_factory=list)  # runs pushed from the MLflow outbox
    mirror_pending: int = 0  # runs still in the MLflow outbox afterwards
    mirror_error: str | None = None  # why the MLflow outbox could not be pushed (it is kept for next time)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def sync_runs(book, settings: Settings | None = None, session: Any = None) -> SyncReport:
    """Append spooled records, then ask SageMaker, by job name, about every run not yet finished."""
    from botocore.exceptions import BotoCoreError, ClientError

    from ledger.capture import aws_error_code, client_for

    settings = settings or load_settings()
    report = SyncReport(imported=import_spool(book, settings))
    frame = book.runs(where="backend = 'sagemaker'")
    open_runs = frame[~frame["status"].isin(TERMINAL_STATUSES)] if not frame.empty else frame
    if open_runs.empty:
        return _push_mirror(book, report)
    sagemaker = client_for(session, "sagemaker")
    for run_id, job_name in zip(open_runs["run_id"], open_runs["job_name"]):
        try:
            description = sagemaker.describe_training_job(TrainingJobName=job_name)
        except ClientError as error:
            if aws_error_code(error) in ("ValidationException", "ResourceNotFound"):
                # The process died before the request reached SageMaker: there is no job of that name.
                book.record_outcome(run_id, Outcome(status="Failed", failure_reason=(
                    f"no training job {job_name} exists: the request never reached SageMaker")))
                report.settled.append(run_id)
            else:
                report.unreachable.append(run_id)
            continue
        except BotoCoreError:
            report.unreachable.append(run_id)
            continue
        if description.get("TrainingJobStatus") in TERMINAL_STATUSES:
            settle(book, run_id, description, session)
            report.settled.append(run_id)
        else:
            if book.get(run_id).outcome.arn is None:
                book.record_outcome(run_id, build_outcome(description))
            report.in_flight.append(run_id)
    return _push_mirror(book, report)


def _push_mirror(book, report: SyncReport) -> SyncReport:
    """Push the MLflow outbox (ledger.store.mlflow_sink); an MLflow failure is reported, never raised."""
    from ledger.store.mlflow_sink import push_outbox

    try:
        mirror = push_outbox(book)
    except Exception as error:  # noqa: BLE001 - the outbox keeps every run for the next sync
        report.mirror_error = f"{type(error).__name__}: {error}"
        return report
    report.mirrored, report.mirror_pending = mirror.mirrored, mirror.pending
    report.mirror_error = mirror.error or ("; ".join(f"{k}: {v}" for k, v in mirror.failed.items()) or None)
    return report
