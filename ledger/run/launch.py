"""Launch a job through the capture path and record what happened: `ledger run`, `reproduce` and the demo.

    build_request        pure: the CreateTrainingJob request `ledger run` sends, from its options
    launch_job           capture -> save the launch -> run it on a backend -> save the outcome
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ledger.backends import get_backend
from ledger.capture.content_store import local_path_of
from ledger.capture.environment import LAUNCHER_PACKAGES, build_environment_pin
from ledger.errors import CaptureRefused, LedgerError, NotFound, UsageError
from ledger.record import Gap, Outcome, Pins, RunRecord
from ledger.run import say
from ledger.run.hooks import already_captured
from ledger.run.launcher import hold_launcher_lock
from ledger.run.observers import notify_finished
from ledger.run.recorder import capture_request, save_launch
from ledger.run.spool import save_spooled_outcome

ALGORITHMS = {"xgboost": "xgboost:1.7-1"}  # each built-in algorithm's image, as a framework NAME:VERSION
DEFAULT_ROLE = "arn:aws:iam::000000000000:role/ledger-local"  # the local backend needs none; the API wants one


def build_job_name(base: str, now: datetime | None = None) -> str:
    """`<base>-YYYY-MM-DD-HH-MM-SS-mmm`, as the SageMaker SDK names jobs (at most 63 characters)."""
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y-%m-%d-%H-%M-%S-") + f"{now.microsecond // 1000:03d}"
    base = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-")[: 63 - len(stamp) - 1] or "job"
    return f"{base}-{stamp}"


def parse_assignments(values: list[str], what: str) -> dict[str, str]:
    """`k=v` strings as a dict; a malformed one is a UsageError naming it."""
    parsed = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {value!r} is not NAME=VALUE", f"write it like: {what} max_depth=5")
        parsed[key.strip()] = rest
    return parsed


def build_request(
    *,
    job_name: str,
    entry_point: str | None,
    source_uri: str | None,
    hyperparameters: dict[str, str],
    channels: dict[str, str],
    metrics: dict[str, str],
    instance_type: str,
    instance_count: int = 1,
    image: str,
    role: str,
    output_path: str,
    max_runtime: int = 86400,
    environment: dict[str, str] | None = None,
    content_types: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Pure: a CreateTrainingJob request in the shape the SageMaker SDK 2.x sends (script mode names its program
    and code in JSON-quoted hyperparameters)."""
    hps = {str(k): str(v) for k, v in hyperparameters.items()}
    if entry_point:
        hps["sagemaker_program"] = json.dumps(entry_point)
        hps["sagemaker_submit_directory"] = json.dumps(source_uri)
    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "AlgorithmSpecification": {
            "TrainingImage": image,
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": n, "Regex": r} for n, r in metrics.items()],
        },
        "RoleArn": role,
        "HyperParameters": hps,
        "InputDataConfig": [
            {"ChannelName": name, "ContentType": (content_types or {}).get(name, "text/csv"),
             "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                             "S3DataDistributionType": "FullyReplicated"}}}
            for name, uri in channels.items()
        ],
        "OutputDataConfig": {"S3OutputPath": output_path},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": instance_count, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
    }
    if not request["AlgorithmSpecification"]["MetricDefinitions"]:
        del request["AlgorithmSpecification"]["MetricDefinitions"]
    if environment:
        request["Environment"] = dict(environment)
    return request


CONTENT_TYPES = {"csv": "text/csv", "libsvm": "text/libsvm", "parquet": "application/x-parquet"}


def parse_content_types(values: list[str], channels: list[str]) -> dict[str, str]:
    """`--content-type TYPE` (every channel) or `CHANNEL=TYPE`, as the ContentType each channel is sent with."""
    found: dict[str, str] = {}
    for value in values:
        channel, sep, kind = value.rpartition("=")
        kind = kind.strip().lower()
        if kind not in CONTENT_TYPES:
            raise UsageError(f"--content-type {value!r}: {kind!r} is not a content type the local backend reads",
                             f"use one of: {', '.join(CONTENT_TYPES)} (for every channel, or CHANNEL=TYPE)")
        if sep and channel not in channels:
            raise UsageError(f"--content-type {value!r} names no channel of this job",
                             f"name one of: {', '.join(channels) or '(no --channel given)'}")
        for name in ([channel] if sep else channels):
            found[name] = CONTENT_TYPES[kind]
    return found


def build_framework_image(framework: str, region: str) -> str:
    """The image SageMaker would use for a framework `NAME:VERSION` in `region`; a UsageError for an unknown one."""
    from ledger.backends.local.environments import build_image_uri, find_profile

    return build_image_uri(find_profile(framework), region)


def build_algorithm_image(algorithm: str, region: str) -> str:
    """The image of a built-in algorithm in `region`: its account differs from region to region, as in the SDK."""
    return build_framework_image(ALGORITHMS[algorithm], region)


def as_file_uri(path_or_uri: str, channel: str = "") -> str:
    """A channel given as a local path becomes file:///abs/path; other URIs are kept as they are.

    An empty value (which would resolve to the working directory), a path that does not exist and a directory
    with no files are refused before anything is recorded, as SageMaker refuses a channel with no data.
    """
    what = f"channel {channel}" if channel else "channel"
    if not path_or_uri.strip():
        raise UsageError(f"{what} names no path", "write it like: --channel train=data/train")
    is_uri = re.match(r"^[a-z][a-z0-9+.-]*://", path_or_uri)
    if is_uri and not path_or_uri.startswith("file://"):
        return path_or_uri
    if is_uri:
        path = local_path_of(path_or_uri).resolve()
    else:
        path = Path(path_or_uri).expanduser().resolve()
    if not path.exists():
        raise NotFound(f"channel path {path_or_uri} does not exist", "give an existing file or directory, or an s3:// URI")
    if path.is_dir() and not any(entry.is_file() for entry in path.rglob("*")):
        raise NotFound(f"{what}: {path} holds no files", "SageMaker refuses a channel with no data: put the data "
                       "there, or name another directory")
    return path.as_uri()


def launch_job(
    book,
    request: dict[str, Any],
    *,
    backend: str = "local",
    project: str | None = None,
    workdir: str | os.PathLike | None = None,
    reproduction_of: str | None = None,
    session: Any = None,
    log: Callable[[str], None] | None = None,
    extra: dict[str, Any] | None = None,
    inherited: Any = None,
) -> RunRecord:
    """Capture and pin the request, record the launch in `book`, run it on `backend`, record the outcome; the final
    record.

    A request the backend refuses before running (a missing entry point, say) is recorded as Failed with the
    reason, and the LedgerError is raised again: nothing is recorded as a success that did not run. Any other
    failure is recorded as Failed too, and raised as a LedgerError naming it; an interrupt as Stopped.
    """
    settings = book.settings
    runner = get_backend(backend, home=settings.home, session=session)
    capture = capture_request(request, session=session, settings=settings, project=project, workdir=workdir,
                              backend=backend, inherited=inherited)
    prepared = prepare_on_backend(runner, capture, inherited, log, strict=settings.strict)  # before the record: what ran is in it
    capture.record.reproduction_of = reproduction_of
    for key, value in (extra or {}).items():
        setattr(capture.record, key, value)
    with hold_launcher_lock(settings, capture.record):  # from before the run is recorded until its outcome is
        record = save_launch(book, capture, announce=log is None)
        book.release_connections()  # the outcome is written hours later, through a connection made then
        pins = {name: pin.model_dump(mode="json") for name, pin in record.pins.data.items()}
        archive = record.pins.code.source_archive
        try:
            with already_captured():  # captured above: autolog must not record the backend's own API call again
                result = runner.launch(capture.request, log=log, pins=pins,
                                       source_archive=archive.model_dump(mode="json") if archive else None,
                                       **({"prepared": prepared} if prepared is not None else {}))
        except LedgerError as error:
            _record_outcome(book, record, Outcome(status="Failed", failure_reason=str(error)))
            raise
        except Exception as error:  # an OSError (E2BIG, ENOSPC), a bug: the run still gets its final status
            reason = f"{type(error).__name__}: {error}"
            _record_outcome(book, record, Outcome(status="Failed", failure_reason=reason))
            raise LedgerError(f"launching {record.job_name} failed: {reason}",
                              f"the run is recorded as Failed; see: ledger show {record.run_id}") from error
        except BaseException:  # Ctrl-C or SystemExit before the job ran (the backend stops a running job itself)
            _record_outcome(book, record, Outcome(status="Stopped", failure_reason=(
                "Stopped: the launch was interrupted before the job ended")))
            raise
        outcome = result.outcome
        if result.series:
            outcome.metric_series = result.series
        if result.log_path:
            outcome.log_path = str(result.log_path)
        return _record_outcome(book, record, outcome)


def plan_recorded_set(pins: Pins) -> tuple[str | None, dict[str, str]] | None:
    """Pure: a run's recorded package set, (Python, packages), for its relaunch: the set its job environment was
    made of, or (records made before job environments) the launching environment's."""
    was = pins.image.ran or {}
    if was.get("recorded_set"):
        return was.get("python"), was["recorded_set"]
    return (pins.environment.python, pins.environment.packages) if pins.environment.packages else None


def prepare_on_backend(runner, capture, inherited: Pins | None, log: Callable[[str], None] | None, *,
                       strict: bool = False):
    """A backend that builds what a job runs in (the local one: its environment, its namespace) does it here, before
    the run is recorded: a job it cannot run leaves no record, and the record names what ran in place of the image
    (pins.image.ran) and any gap (no namespace). A reproduction asks for the original's image (by tag, where the
    request names a digest) and, for an image without a profile, the original's recorded package set."""
    prepare = getattr(runner, "prepare", None)
    if prepare is None:
        return None
    record = capture.record
    pins = {name: pin.model_dump(mode="json") for name, pin in record.pins.data.items()}
    archive = record.pins.code.source_archive
    recorded = plan_recorded_set(inherited) if inherited else None
    prepared = prepare(capture.request, pins=pins, source_archive=archive.model_dump(mode="json") if archive else None,
                       image=(inherited.image.uri if inherited else None) or record.pins.image.uri,
                       recorded=recorded, log=log or say)
    ran = prepared.describe()
    # The job's environment is the record's environment: what the job ran with. What launched it (the SDKs and the
    # ledger, by version) is kept beside it: a different fact.
    launcher = record.pins.environment
    environment = build_environment_pin(ran["python"], launcher.platform, prepared.packages)
    environment.launcher = {"python": launcher.python, "packages": {
        name: launcher.packages[name] for name in LAUNCHER_PACKAGES if name in launcher.packages}}
    record.pins.environment = environment
    ran["fingerprint"] = environment.fingerprint  # of what the job ran with; `lock_sha256` names what it was built from
    record.pins.image = record.pins.image.model_copy(update={"digest": environment.fingerprint, "ran": ran})
    gaps = [Gap(**gap) for gap in prepared.gaps]
    record.pins.gaps += gaps
    if gaps and strict:
        raise CaptureRefused(f"strict mode refused to launch {record.job_name}: {gaps[0].what}: {gaps[0].why}",
                             "fix the gap, or unset LEDGER_STRICT to launch with it recorded")
    return prepared


def _record_outcome(book, record: RunRecord, outcome: Outcome) -> RunRecord:
    """Record the outcome in the ledger; when it cannot be written (or the launch itself was spooled), in the
    run's spool file, which `ledger sync` appends: an outcome, once observed, is not lost. The observers of
    finished runs are told of a recorded outcome; of a reproduction's, once its verdict is (reproduce)."""
    try:
        if record.chain is not None or book.has_run(record.run_id):
            return _told(book, book.record_outcome(record.run_id, outcome))
    except Exception as error:  # noqa: BLE001 - the outcome waits in the spool
        say(f"ledger: could not record the outcome of run {record.run_id} ({error}); spooling it")
    path = save_spooled_outcome(record, outcome, book.settings)
    if path is None:  # `ledger sync` imported the launch meanwhile: the ledger has the run now
        return _told(book, book.record_outcome(record.run_id, outcome))
    return record.model_copy(update={"outcome": outcome})


def _told(book, record: RunRecord) -> RunRecord:
    if not record.reproduction_of:
        notify_finished(book, record)
    return record
