"""What every export format shares: times, digests and object URIs as the standards write them, the run's
unpinned dependencies, and the run's model files read from its archive.

    build_unpinned      pure: every dependency of a run that is not pinned, with why and how to pin it
    read_model_files    side effect: {path: sha256} of the files in a run's model archive, the archive checked
    extract_model       side effect: the archive's files unpacked into a folder, the archive checked
"""

from __future__ import annotations

import re
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from ledger.audit.report import build_unpinned_references
from ledger.capture.content_store import SYMLINK_MODE, cas_uri, extract_tar, sha256_file, tree_entries
from ledger.capture.outcome import fetch_model_archive
from ledger.errors import LedgerError, NotFound, TamperDetected
from ledger.record import DataObject, ModelArtifact, RunRecord

HEX64 = re.compile(r"[0-9a-f]{64}")


def rfc3339(value: str | None) -> str | None:
    """An ISO time as RFC 3339 in UTC with a Z, as protobuf timestamps and OpenLineage want it."""
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def bare_sha256(value: str | None) -> str | None:
    """The 64 hex digits of a sha256 written with or without its `sha256:` prefix; None for anything else."""
    digits = (value or "").removeprefix("sha256:")
    return digits if HEX64.fullmatch(digits) else None


def object_sha256(obj: DataObject) -> str | None:
    """An object's sha256 where the record has one: the content store names a file by it (its `etag`). An S3
    ETag is an MD5, or a digest of part digests: not a content digest to claim."""
    return bare_sha256((obj.etag or "").strip('"'))


def object_uri(channel_uri: str, obj: DataObject) -> str:
    """Where one object of a channel is, immutably where it can be: s3://bucket/key?versionId=V, or the content
    store's ledger-cas://sha256/<digest> for a local file; else the mutable location it was read from."""
    parts = urlsplit(channel_uri)
    if parts.scheme == "s3":
        uri = f"s3://{parts.netloc}/{quote(obj.key)}"
        return f"{uri}?versionId={quote(obj.version_id, safe='')}" if obj.version_id else uri
    sha = object_sha256(obj)
    return cas_uri(sha) if sha else channel_uri.rstrip("/") + "/" + quote(obj.key)


def build_unpinned(record: RunRecord) -> list[dict[str, str]]:
    """Pure: every dependency of the run that is not pinned: each gap the record names (what, why, fix), then what
    the record shows unpinned though no gap says so. An export lists them; it never leaves one out."""
    found = [{"what": gap.what, "why": gap.why, "fix": gap.fix} for gap in record.pins.gaps]
    found += [{"what": line, "why": "not pinned, though no gap was recorded when it ran", "fix": ""}
              for line in build_unpinned_references(record)]
    image = record.pins.image
    if (image.uri or image.source) and not image.digest and not find_unpinned(found, "image"):
        found.append({"what": f"image {image.uri}", "why": "no digest was recorded", "fix": ""})
    return found


def find_unpinned(unpinned: list[dict[str, str]], *names: str) -> dict[str, str] | None:
    """The first unpinned dependency named one of `names`, or that name and more ("data channel train" finds
    "data channel train (s3://…)", not "data channel training")."""
    return next((item for item in unpinned for name in names
                 if item["what"] == name or item["what"].startswith(name + " ")), None)


def unpinned_annotation(item: dict[str, str] | None) -> dict[str, Any]:
    """What a descriptor of an unpinned dependency carries: that it is not pinned, why, and the fix."""
    if item is None:
        return {}
    return {"pinned": False, "unpinnedWhy": item["why"], **({"unpinnedFix": item["fix"]} if item["fix"] else {})}


# --- the model's files: read from the archive the record names ----------------------------------------------


def require_model_artifact(record: RunRecord) -> ModelArtifact:
    """The run's model artifact with its recorded sha256, or NotFound saying why there is none to read."""
    artifact = record.outcome.model_artifact
    if artifact is None or not artifact.uri:
        raise NotFound(f"run {record.run_id} ({record.job_name}) has no model artifact (status "
                       f"{record.outcome.status or 'unknown'})",
                       "only a run that completed has a model to attest or sign; settle it with: ledger sync")
    if not artifact.sha256:
        raise NotFound(f"run {record.run_id} recorded no sha256 of its model artifact {artifact.uri} (it could "
                       "not be read when the job ended)", "an archive the record does not pin cannot be attested")
    return artifact


def fetch_checked_archive(artifact: ModelArtifact, dest: Path, session: Any = None) -> Path:
    """The recorded model archive copied to `dest` (S3 by its recorded version), its sha256 checked against the
    record's: another archive is an error that says so, never trusted."""
    where = artifact.uri + (f" (version {artifact.version_id})" if artifact.version_id else "")
    try:
        fetch_model_archive(artifact, dest, session)
    except Exception as error:  # noqa: BLE001 - any failure to read is one line naming the artifact
        raise LedgerError(f"cannot read the model artifact {where}: {type(error).__name__}: {error}",
                          "check that it still exists and that these credentials may read it") from None
    actual = sha256_file(dest)
    if actual != artifact.sha256:
        raise TamperDetected(f"the model artifact {where} is not the one recorded: its sha256 is {actual}, the "
                             f"record says {artifact.sha256}",
                             "it was changed or replaced after the job wrote it; do not attest or sign it")
    return dest


def read_model_files(artifact: ModelArtifact, session: Any = None) -> dict[str, str]:
    """{relative path: sha256} of the regular files in the recorded model archive (symbolic links are not files:
    the record's tree_sha256 counts them)."""
    with tempfile.TemporaryDirectory(prefix="ledger-export-") as tmp:
        archive = fetch_checked_archive(artifact, Path(tmp) / "model.tar.gz", session)
        try:
            entries = tree_entries(archive)
        except (tarfile.TarError, OSError) as error:
            raise LedgerError(f"the model artifact {artifact.uri} is not a readable tar archive ({error})",
                              "SageMaker writes model.tar.gz; check the recorded artifact") from None
    return {path: sha for path, (mode, sha) in sorted(entries.items()) if mode != SYMLINK_MODE}


def extract_model(artifact: ModelArtifact, dest: Path, session: Any = None) -> Path:
    """The recorded model archive's files unpacked into `dest` (a new or empty folder), the archive checked."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise LedgerError(f"{dest} exists and is not an empty folder", "give another --model-dir, or remove it")
    with tempfile.TemporaryDirectory(prefix="ledger-model-") as tmp:
        archive = fetch_checked_archive(artifact, Path(tmp) / "model.tar.gz", session)
        try:
            extract_tar(archive, dest)
        except (tarfile.TarError, OSError) as error:
            raise LedgerError(f"the model artifact {artifact.uri} cannot be unpacked ({error})",
                              "SageMaker writes model.tar.gz; check the recorded artifact") from None
    return dest
