"""What a finished SageMaker job became: its DescribeTrainingJob response as an Outcome, and its model artifact pinned.

    build_outcome_from_description   pure: a DescribeTrainingJob response -> Outcome
    capture_model_artifact           side effect: read the model archive, pin it by version id, sha256, contents
    fetch_model_archive              side effect: copy a recorded model archive here (S3 by its version id, or a file)

The local backend builds its outcome from the process it ran (`backends.local.contract.build_local_outcome`).
"""

from __future__ import annotations

import shutil
from datetime import timezone
from pathlib import Path
from typing import Any

from ledger.record import ModelArtifact, Outcome

TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        value = value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return value.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return str(value)


def build_outcome_from_description(description: dict[str, Any], artifact: ModelArtifact | None = None) -> Outcome:
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
    """The model archive by version id, sha256 and the digest of its contents, read once as it streams from S3
    (no copy on disk, memory bounded however large the archive). A missing archive is not an error: the artifact
    keeps its URI and nothing else; bytes that are not a tar archive keep their sha256 and no tree digest."""
    from ledger.capture import client_for
    from ledger.capture.content_store import digest_archive_stream
    from ledger.capture.data import build_version_id, parse_s3_uri

    try:
        bucket, key = parse_s3_uri(uri)
        response = client_for(session, "s3").get_object(Bucket=bucket, Key=key)
        sha256, tree = digest_archive_stream(response["Body"])
        return ModelArtifact(uri=uri, version_id=build_version_id(response.get("VersionId")), sha256=sha256,
                             tree_sha256=tree)
    except Exception:  # noqa: BLE001 - an artifact we cannot read is recorded by URI only
        return ModelArtifact(uri=uri)


def fetch_model_archive(artifact: ModelArtifact, dest: str | Path, session: Any = None) -> Path:
    """Copy the recorded model archive to `dest`: from S3 by its recorded version id (the object the job wrote,
    even if the key was written again since), or from a local path. Raises what the read raises; the caller
    checks the bytes against the recorded sha256."""
    from ledger.capture import client_for
    from ledger.capture.content_store import local_path_of
    from ledger.capture.data import parse_s3_uri

    if not artifact.uri:
        raise ValueError("the record names no model artifact")
    if artifact.uri.startswith("s3://"):
        bucket, key = parse_s3_uri(artifact.uri)
        extra = {"ExtraArgs": {"VersionId": artifact.version_id}} if artifact.version_id else {}
        client_for(session, "s3").download_file(bucket, key, str(dest), **extra)
    else:
        shutil.copyfile(local_path_of(artifact.uri), dest)
    return Path(dest)


def capture_finished_outcome(description: dict[str, Any], session: Any = None) -> Outcome:
    """The outcome of a job from its DescribeTrainingJob response, with the model artifact pinned when it
    Completed (SageMaker keeps no model of a failed job)."""
    uri = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    completed = description.get("TrainingJobStatus") == "Completed"
    artifact = capture_model_artifact(uri, session) if uri and completed else None
    return build_outcome_from_description(description, artifact)
