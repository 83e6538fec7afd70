"""The capture path every launch goes through: autolog's botocore handler and `ledger run` alike.

    capture_request   request -> pins, gaps and the request to send (image by digest, channels by snapshot)
    save_launch       append the record (or spool it when the database cannot be written)
    settle            a finished job's description -> its outcome entry

Sacred's observer rule holds: a failure before the launch becomes a gap (or, in strict mode, refuses the launch);
a failure after the launch only warns. Nothing here ever breaks a user's training job except strict mode.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import errno
import json
import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ledger.config import Settings, load_settings
from ledger.errors import CaptureRefused, UsageError
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
    sha256_hex,
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
    region: str | None = None,
) -> Capture:
    """Pin everything the request refers to and rewrite the moving references to immutable ones.

    `request` is left untouched; `Capture.request` is the one to send. Raises CaptureRefused only in strict mode.
    `inherited` (reproduce) carries the recorded data channels and code: those are what the relaunch reads, so
    they are not pinned again from the present state of the world; the SDK 3.x code channels are, from where the
    relaunch reads them (reproduce restores them first). `region` is the region of the client that
    sends the request (default: the session's): `ledger sync` asks there about a job whose ARN it never heard.
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


def fallback_spool_dir() -> Path:
    """Where records go when LEDGER_HOME cannot be written: $XDG_RUNTIME_DIR (private by its spec), else a
    per-user folder in the temporary directory, which is only used once it is checked to be this user's."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "ledger-spool"
    return Path(tempfile.gettempdir()) / f"ledger-spool-{os.getuid()}"


def spool_dirs(settings: Settings) -> list[Path]:
    return [spool_dir(settings), fallback_spool_dir()]


def check_private_dir(directory: Path) -> str | None:
    """Why `directory` cannot hold this user's spool (None when it can): it must be a real directory owned by
    this user. One that is ours but open to others is closed (0700): another user could read diffs in it."""
    info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a directory"
    if info.st_uid != os.getuid():
        return f"it is owned by uid {info.st_uid}, not this user (uid {os.getuid()})"
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)
    return None


def _private_dir(directory: Path) -> Path:
    """Make (0700) or check a spool directory; OSError saying why when it is not this user's."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    why = check_private_dir(directory)
    if why:
        raise OSError(f"{directory} is not a private folder: {why}")
    return directory


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


def build_spool_body(record: RunRecord, blobs: dict[str, bytes], outcome: Outcome | None = None) -> str:
    """Pure: a spool file's text: the record, the blobs it points at, and its outcome once the job ended."""
    body = {"record": record.to_dict(), "blobs": {k: base64.b64encode(v).decode() for k, v in blobs.items()}}
    if outcome is not None:
        body["outcome"] = outcome.model_dump(mode="json")
    return canonical_json(body)


def _spool(capture: Capture, settings: Settings) -> Path:
    return _write_spool(capture.record.run_id, build_spool_body(capture.record, capture.blobs), settings)


def _write_spool(run_id: str, body: str, settings: Settings) -> Path:
    """Write a spool file whole or not at all (temporary file, fsync, rename), in the first private folder that
    takes it: a full disk or a killed process leaves a hidden temporary file, never a damaged record."""
    problems = []
    for directory in spool_dirs(settings):
        try:
            path = _private_dir(directory) / f"{run_id}.json"
            _write_atomically(path, body.encode("utf-8"))
            return path
        except OSError as error:
            problems.append(f"{directory}: {error}")
    raise OSError("no private, writable spool folder: " + "; ".join(problems))


def _write_atomically(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a crash
    finally:
        os.close(folder)


def save_spooled_outcome(record: RunRecord, outcome: Outcome, settings: Settings) -> Path | None:
    """The outcome of a run whose launch was spooled goes into its spool file, so `ledger sync` records both; a
    run the ledger has (the database went away during the job) gets a spool file of its own. None when the
    launch's spool file is gone: `ledger sync` imported it meanwhile."""
    for directory in spool_dirs(settings):
        path = directory / f"{record.run_id}.json"
        try:
            spooled = parse_spool_file(_read_spool_file(path))
        except (OSError, SpoolDamaged, SpoolRefused):
            continue
        blobs = {sha256_hex(blob): blob for blob in spooled[1]}
        written = _write_spool(record.run_id, build_spool_body(spooled[0], blobs, outcome), settings)
        if written != path:
            path.unlink(missing_ok=True)
        return written
    if record.chain is None:
        return None
    return _write_spool(record.run_id, build_spool_body(record, {}, outcome), settings)


@dataclass
class SpoolImport:
    imported: list[str] = field(default_factory=list)  # run ids appended
    damaged: list[str] = field(default_factory=list)  # files set aside (renamed *.damaged)
    refused: list[str] = field(default_factory=list)  # files and folders that are not this user's


def import_spool_files(book, settings: Settings) -> SpoolImport:
    """Append every spooled record not yet in the ledger, and remove each spool file once its record is safe.

    A file that cannot be read as a record is set aside (renamed *.damaged) with a one-line message, and the
    others go on. A file or folder that is not this user's is refused, also with a message: another local user
    must not be able to plant a record. A database error stops the import and keeps every file.
    """
    result = SpoolImport()
    for directory in spool_dirs(settings):
        if not os.path.lexists(directory):
            continue
        why = check_private_dir(directory)
        if why:
            _say(f"ledger: refused the spool folder {directory}: {why}; nothing in it was imported")
            result.refused.append(str(directory))
            continue
        paths = sorted(directory.glob("*.json"))
        for start in range(0, len(paths), SPOOL_BATCH):
            good = [(path, spooled) for path in paths[start:start + SPOOL_BATCH]
                    if (spooled := _read_or_set_aside(path, result)) is not None]
            _import_batch(book, good, result)
    return result


SPOOL_BATCH = 500  # records appended in one transaction


def _read_or_set_aside(path: Path, result: SpoolImport) -> tuple[RunRecord, list[bytes], Outcome | None] | None:
    try:
        return parse_spool_file(_read_spool_file(path))
    except SpoolRefused as error:
        aside = _set_aside(path, "refused")
        _say(f"ledger: refused the spool file {path}: {error}; moved to {aside.name}, not imported")
        result.refused.append(str(path))
    except SpoolDamaged as error:
        aside = _set_aside(path, "damaged")
        _say(f"ledger: the spool file {path} is damaged ({error}); set aside as {aside.name}")
        result.damaged.append(str(path))
    return None


def _import_batch(book, good: list[tuple[Path, tuple[RunRecord, list[bytes], Outcome | None]]],
                  result: SpoolImport) -> None:
    """Blobs, then the new records in one transaction, then outcomes; each file removed once all of it is in."""
    for _, (_, blobs, _) in good:
        for blob in blobs:
            book.put_blob(blob)
    new = list({record.run_id: record for _, (record, _, _) in good if not book.has_run(record.run_id)}.values())
    try:
        if new:
            book.append_many(new)
        appended = {record.run_id for record in new}
    except UsageError:  # another `ledger sync` appended some of them first: one at a time
        appended = set()
        for record in new:
            with contextlib.suppress(UsageError):
                book.append(record)
                appended.add(record.run_id)
    result.imported += [record.run_id for record in new if record.run_id in appended]
    for path, (record, _, outcome) in good:
        status = record.outcome.status if record.run_id in appended else book.get(record.run_id).outcome.status
        if outcome is not None and status not in TERMINAL_STATUSES:
            book.record_outcome(record.run_id, outcome)
        path.unlink()


class SpoolDamaged(ValueError):
    """A spool file that is not a whole record."""


class SpoolRefused(ValueError):
    """A spool file that is not this user's."""


def _read_spool_file(path: Path) -> Any:
    """The parsed JSON of a spool file this user owns and nobody else could have written; else SpoolRefused or
    SpoolDamaged. Opened without following links, and checked on the open file, so it cannot be swapped."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise SpoolRefused("it is a symbolic link") from None
        raise
    with os.fdopen(handle, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SpoolRefused("it is not a regular file")
        if info.st_uid != os.getuid():
            raise SpoolRefused(f"it is owned by uid {info.st_uid}, not this user (uid {os.getuid()})")
        if info.st_mode & 0o022:
            raise SpoolRefused(f"other users may write to it (mode {stat.S_IMODE(info.st_mode):o})")
        data = file.read()
    if not data:
        raise SpoolDamaged("it is empty")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise SpoolDamaged(f"not JSON: {error}") from None


def parse_spool_file(spooled: Any) -> tuple[RunRecord, list[bytes], Outcome | None]:
    """Pure: (record, blobs, outcome) of a spool file's JSON; SpoolDamaged when it is not a whole record."""
    from pydantic import ValidationError

    if not isinstance(spooled, dict) or not isinstance(spooled.get("record"), dict):
        raise SpoolDamaged("it holds no record")
    try:
        record = RunRecord.from_dict(spooled["record"])
        blobs = [base64.b64decode(blob, validate=True) for blob in (spooled.get("blobs") or {}).values()]
        outcome = Outcome.model_validate(spooled["outcome"]) if spooled.get("outcome") else None
    except (ValidationError, ValueError, TypeError, AttributeError) as error:
        raise SpoolDamaged(f"not a valid record: {str(error).splitlines()[0]}") from None
    return record, blobs, outcome


def _set_aside(path: Path, why: str) -> Path:
    aside = path.with_name(f"{path.name}.{why}")
    number = 1
    while os.path.lexists(aside):
        number += 1
        aside = path.with_name(f"{path.name}.{why}.{number}")
    os.rename(path, aside)
    return aside


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
    from ledger.capture.data import build_version_id, parse_s3_uri
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
            return ModelArtifact(uri=uri, version_id=build_version_id(response.get("VersionId")),
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
    unreachable: list[str] = field(default_factory=list)  # runs whose backend could not be asked (see reasons)
    mirrored: list[str] = field(default_factory=list)  # runs pushed from the MLflow outbox
    mirror_pending: int = 0  # runs still in the MLflow outbox afterwards
    mirror_error: str | None = None  # why the MLflow outbox could not be pushed (it is kept for next time)
    damaged: list[str] = field(default_factory=list)  # spool files set aside as *.damaged
    refused: list[str] = field(default_factory=list)  # spool files and folders that are not this user's
    reasons: dict[str, str] = field(default_factory=dict)  # run id -> why it is unreachable, or why it Failed

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def sync_runs(book, settings: Settings | None = None, session: Any = None) -> SyncReport:
    """Append spooled records, then settle every run not yet finished by asking its backend: SageMaker, in the
    region and account the job was sent to; the local backend, through its launcher's lock. Each run is settled
    on its own (one that fails is reported, the others go on), and a run is marked Failed only on its backend's
    word."""
    settings = settings or load_settings()
    spooled = import_spool_files(book, settings)
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
                _sync_local_run(book, run_id, settings, report)
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
        from ledger.capture import client_for

        if region not in self.clients:
            self.clients[region] = client_for(self.session, "sagemaker", region_name=region)
        return self.clients[region]

    def account(self) -> tuple[str | None, str | None]:
        """(account, None), or (None, why STS did not say)."""
        from botocore.exceptions import BotoCoreError, ClientError

        from ledger.capture import client_for

        if self._account is None:
            try:
                self._account = (client_for(self.session, "sts").get_caller_identity()["Account"], None)
            except (BotoCoreError, ClientError, KeyError) as error:
                self._account = (None, f"{type(error).__name__}: {error}")
        return self._account


def _says_not_found(error: Exception) -> bool:
    from ledger.capture import aws_error_code

    message = str((getattr(error, "response", None) or {}).get("Error", {}).get("Message", "")).lower()
    return aws_error_code(error) in ("ValidationException", "ResourceNotFound") and any(
        words in message for words in ("not found", "could not find", "does not exist"))


def _sync_sagemaker_run(book, run_id: str, asker: _SageMakerAsker, session: Any, report: SyncReport) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from ledger.capture import aws_error_code

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
            book.record_outcome(run_id, build_outcome(description))
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


def _sync_local_run(book, run_id: str, settings: Settings, report: SyncReport) -> None:
    from ledger.launch import settle_lost_launch

    state, why = settle_lost_launch(book, settings, run_id)
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
    from ledger.store.mlflow_sink import push_outbox

    try:
        mirror = push_outbox(book)
    except Exception as error:  # noqa: BLE001 - the outbox keeps every run for the next sync
        report.mirror_error = f"{type(error).__name__}: {error}"
        return report
    report.mirrored, report.mirror_pending = mirror.mirrored, mirror.pending
    report.mirror_error = mirror.error or ("; ".join(f"{k}: {v}" for k, v in mirror.failed.items()) or None)
    return report
