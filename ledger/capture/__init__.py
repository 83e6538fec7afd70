"""Capture: one small module a source, each turning a moving reference into a pin.

Every `capture_*` function has a side effect (an AWS call, a git command, reading files) and never raises for a
problem of the world (a refused lookup, a missing bucket, no git repository): it returns what it could pin and a
list of `Gap(what, why, fix)`. Pure decisions (`parse_*`, `plan_*`, `build_*`) sit next to them and are tested
without fixtures. Functions take a boto3 Session (or a ready client) so the caller chooses credentials and
endpoints; boto3 itself is imported only where a client is made.

    image.py        capture_image            the tag resolved to a digest through ECR
    data.py         capture_s3_channel, capture_file_channel, capture_channels, snapshot_channel
    code.py         capture_code, capture_source_archive, capture_code_channels
    secrets.py      redact_request, build_request_redaction, redact_text (by name and by detect-secrets' patterns)
    environment.py  capture_environment, capture_caller
    hardware.py     capture_hardware
"""

from __future__ import annotations

from collections import Counter
from typing import Any


def client_for(session: Any, service: str, region_name: str | None = None, **client_kwargs: Any) -> Any:
    """A botocore client for `service`, from a boto3 Session, or `session` itself when it already is a client.

    None means a default boto3 Session (environment credentials, AWS_ENDPOINT_URL honoured by botocore).
    """
    if session is None:
        import boto3

        session = boto3.Session()
    if hasattr(session, "client"):
        kwargs = dict(client_kwargs)
        if region_name:
            kwargs["region_name"] = region_name
        return session.client(service, **kwargs)
    return session  # already a client: the caller chose everything


def aws_error_code(error: Exception) -> str:
    """The AWS error code of a botocore ClientError ('NoSuchBucket', 'AccessDenied'...), else the class name."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(error).__name__


class RequestCounter:
    """Counts AWS API calls by operation name, for tests and benchmarks.

    Attach to a boto3 Session *before* the clients are made (a client copies the session's handlers when it is
    created) or to a client directly. Counts calls, not HTTP retries.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def attach(self, session_or_client: Any, service: str = "s3") -> "RequestCounter":
        events = session_or_client.meta.events if hasattr(session_or_client, "meta") else session_or_client.events
        events.register(f"before-call.{service}", self._count)
        return self

    def _count(self, model: Any = None, **_: Any) -> None:
        self.calls[model.name if model is not None else "?"] += 1

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def reset(self) -> None:
        self.calls.clear()


# The public functions, re-exported lazily so that `import ledger.capture` stays cheap.
_EXPORTS = {
    "capture_image": "image",
    "parse_image_uri": "image",
    "build_pinned_image_uri": "image",
    "capture_s3_channel": "data",
    "capture_file_channel": "data",
    "capture_channels": "data",
    "snapshot_channel": "data",
    "plan_snapshot_prefix": "data",
    "plan_snapshot_uri": "data",
    "parse_s3_uri": "data",
    "hash_file_tree": "data",
    "capture_code": "code",
    "capture_source_archive": "code",
    "capture_code_channels": "code",
    "redact_request": "secrets",
    "capture_environment": "environment",
    "capture_caller": "environment",
    "capture_hardware": "hardware",
}


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'ledger.capture' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"ledger.capture.{module_name}"), name)


__all__ = ["client_for", "aws_error_code", "RequestCounter", *_EXPORTS]
