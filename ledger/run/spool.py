"""The spool: records and outcomes the database could not take, kept whole until `ledger sync` appends them.

A spool file is written whole or not at all (temporary file, fsync, rename), mode 0600, in a folder of mode 0700
that is checked to be this user's; `import_spool_files` sets a damaged file aside and refuses one that is not
this user's, so nobody else can plant a record.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.capture.outcome import TERMINAL_STATUSES
from ledger.config import Settings
from ledger.errors import UsageError
from ledger.record import Outcome, RunRecord, canonical_json, sha256_hex
from ledger.run import say


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


def build_spool_body(record: RunRecord, blobs: dict[str, bytes], outcome: Outcome | None = None) -> str:
    """Pure: a spool file's text: the record, the blobs it points at, and its outcome once the job ended."""
    body = {"record": record.to_dict(), "blobs": {k: base64.b64encode(v).decode() for k, v in blobs.items()}}
    if outcome is not None:
        body["outcome"] = outcome.model_dump(mode="json")
    return canonical_json(body)


def spool_record(record: RunRecord, blobs: dict[str, bytes], settings: Settings) -> Path:
    """The record of a launch the database could not take, with the blobs it names, in its spool file."""
    return write_spool(record.run_id, build_spool_body(record, blobs), settings)


def write_spool(run_id: str, body: str, settings: Settings) -> Path:
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
        written = write_spool(record.run_id, build_spool_body(spooled[0], blobs, outcome), settings)
        if written != path:
            path.unlink(missing_ok=True)
        return written
    if record.chain is None:
        return None
    return write_spool(record.run_id, build_spool_body(record, {}, outcome), settings)


@dataclass
class SpoolImport:
    imported: list[str] = field(default_factory=list)  # run ids appended
    damaged: list[str] = field(default_factory=list)  # files set aside (renamed *.damaged)
    refused: list[str] = field(default_factory=list)  # files and folders that are not this user's


def import_spool_files(book) -> SpoolImport:
    """Append every spooled record not yet in the ledger, and remove each spool file once its record is safe.

    A file that cannot be read as a record is set aside (renamed *.damaged) with a one-line message, and the
    others go on. A file or folder that is not this user's is refused, also with a message: another local user
    must not be able to plant a record. A database error stops the import and keeps every file.
    """
    result = SpoolImport()
    for directory in spool_dirs(book.settings):
        if not os.path.lexists(directory):
            continue
        why = check_private_dir(directory)
        if why:
            say(f"ledger: refused the spool folder {directory}: {why}; nothing in it was imported")
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
        say(f"ledger: refused the spool file {path}: {error}; moved to {aside.name}, not imported")
        result.refused.append(str(path))
    except SpoolDamaged as error:
        aside = _set_aside(path, "damaged")
        say(f"ledger: the spool file {path} is damaged ({error}); set aside as {aside.name}")
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
