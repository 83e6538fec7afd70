"""The capture path every launch goes through: autolog's botocore handler and `ledger run` alike.

    capture_request   request -> pins, gaps and the request to send (image by digest, channels by snapshot)
    save_launch       append the record (or spool it when the database cannot be written)

Sacred's observer rule holds: a failure before the launch becomes a gap (or, in strict mode, refuses the launch);
a failure after the launch only warns. Nothing here ever breaks a user's training job except strict mode.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ledger.backends.algorithms import ALGORITHM_SCRIPTS, builtin_algorithm
from ledger.capture import code, data, environment, hardware, image, secrets
from ledger.capture.content_store import (
    CAS_PREFIX,
    parse_cas_uri,
    pin_file_channel_and_refusals,
    plan_refused_links_gap,
)
from ledger.config import Settings, load_settings
from ledger.errors import CaptureRefused
from ledger.record import DataChannelPin, Gap, ImagePin, Pins, RunRecord, SourceArchive
from ledger.run import say
from ledger.run.spool import spool_record


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
    region: str | None = None,
) -> Capture:
    """Pin everything the request refers to and rewrite the moving references to immutable ones.

    `request` is left untouched; `Capture.request` is the one to send. Raises CaptureRefused only in strict mode.
    `inherited` (reproduce) carries the recorded data channels and code: those are what the relaunch reads, so
    they are not pinned again from the present state of the world; the SDK 3.x code channels are, from where the
    relaunch reads them (reproduce restores them first). `region` is the region of the client that
    sends the request (default: the session's): `ledger sync` asks there about a job whose ARN it never heard.
    """
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
    sent_to = {"region": region or _session_region(session)} if backend == "sagemaker" else {}

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
        **sent_to,
    )
    if settings.strict and gaps:
        listed = "; ".join(f"{g.what}: {g.why} (fix: {g.fix})" if g.fix else f"{g.what}: {g.why}" for g in gaps)
        raise CaptureRefused(f"strict mode refused to launch {record.job_name}: {len(gaps)} pin gap(s): {listed}",
                             "fix the gaps, or unset LEDGER_STRICT to launch with them recorded")
    return Capture(record=record, request=sent, blobs=blobs)


def build_stand_in(request: dict[str, Any], env) -> dict[str, Any]:
    """Pure: what ran in place of the requested image on the local backend: this Python environment, running the
    entry point, or for a built-in algorithm the ledger's own implementation of it."""
    how = "the ledger's own Python environment"
    program = (request.get("HyperParameters") or {}).get("sagemaker_program")
    algorithm = builtin_algorithm((request.get("AlgorithmSpecification") or {}).get("TrainingImage"))
    if program:
        how += f", running the entry point {program.strip(chr(34))} with its interpreter"
    elif algorithm in ALGORITHM_SCRIPTS:
        how += f", running the ledger's {algorithm} stand-in (ledger/backends/algorithms/{ALGORITHM_SCRIPTS[algorithm].name})"
    return {"kind": "python environment", "fingerprint": env.fingerprint, "python": env.python,
            "platform": env.platform, "how": how}


def _session_region(session: Any) -> str | None:
    """The region a client made from `session` (a boto3 Session, a client, or None: the default) talks to."""
    try:
        if session is None:
            import boto3

            session = boto3.Session()
        meta = getattr(session, "meta", None)
        return getattr(meta, "region_name", None) or getattr(session, "region_name", None)
    except Exception:  # noqa: BLE001 - no region known: sync then says it cannot tell where the job went
        return None


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
    pin, refused = pin_file_channel_and_refusals(uri)
    return DataChannelPin.model_validate(pin), [g for g in [plan_refused_links_gap(name, refused)] if g]


def _capture_source_archive(request: dict[str, Any], session: Any):
    """The code archive: one already in the content store (ledger run) is pinned by its digest as it is."""
    uri = code.plan_submit_directory(request)
    if uri and uri.startswith(CAS_PREFIX):
        return SourceArchive(uri=uri, sha256=parse_cas_uri(uri)), []
    return code.capture_source_archive(request, session)


def _snapshot_channels(sent: dict[str, Any], pins: Pins, session: Any) -> list[Gap]:
    """Copy each pinned S3 channel's recorded versions to an immutable prefix and point the channel there."""
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


def save_launch(book, capture: Capture, settings: Settings | None = None, *, announce: bool = True) -> RunRecord:
    """Append the launch entry to `book`. When the database cannot be written (or there is no `book`: it could not
    be opened), the record goes to a spool file with a gap saying so, and `ledger sync` appends it later: the job
    is never held up by the ledger."""
    settings = settings or (book.settings if book is not None else load_settings())
    try:
        if book is None:
            raise RuntimeError("the ledger could not be opened")
        for blob in capture.blobs.values():
            book.put_blob(blob)
        saved = book.append(capture.record)
    except Exception as error:  # noqa: BLE001 - the job goes on; the record waits in the spool
        capture.record.pins.gaps.append(Gap(
            what="ledger database", why=f"the record could not be saved: {type(error).__name__}: {error}",
            fix="it was spooled; run `ledger sync` once the database is writable"))
        path = spool_record(capture.record, capture.blobs, settings)
        say(f"ledger: could not save run {capture.record.run_id} ({error}); spooled to {path}")
        return capture.record
    if announce:
        say(build_capture_line(saved))
    return saved


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
