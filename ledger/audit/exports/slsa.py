"""SLSA provenance: an in-toto Statement v1 whose predicate is SLSA Provenance v1, one per run; for a reproduction,
a second statement with the verdict. Pure, but for `check_statement`, which parses with in-toto-attestation.

    build_provenance_statement   subjects: the model archive and each file in it; buildDefinition: the request as
                                 sent, the SDK and environment, every pinned (and unpinned) dependency; runDetails
    build_verdict_statement      subject: the reproduction's archive and files; predicate: the original, the result
    check_statement              parse a statement (and a provenance predicate) into in-toto-attestation's models

The JSON is written here, not through the protobuf bindings: their `Struct` holds every number as a double, so
`"InstanceCount": 1` would come out as `1.0` and the request would no longer be the one sent. The bindings check
what is written instead (check_statement, and the tests).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath
from urllib.parse import quote, urlsplit

from ledger.audit.exports import uris
from ledger.audit.exports.common import (
    bare_sha256,
    build_unpinned,
    find_unpinned,
    object_sha256,
    object_uri,
    rfc3339,
    unpinned_annotation,
)
from ledger.config import VERSION
from ledger.errors import LedgerError, UsageError
from ledger.record import DataChannelPin, ModelArtifact, RunRecord

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PROVENANCE_TYPE = "https://slsa.dev/provenance/v1"
SDK_PACKAGES = ("sagemaker", "sagemaker-core", "boto3", "botocore", uris.NAME)


def _compact(mapping: dict) -> dict:
    """The mapping without None values and empty containers: absent, not null, as the protobuf JSON form has it."""
    return {k: v for k, v in mapping.items() if v is not None and v != {} and v != []}


# --- subjects -------------------------------------------------------------------------------------------------


def build_dir_hash(files: dict[str, str]) -> str:
    """in-toto's `dirHash` digest of a set of files: the sha256 of their `sha256sum` lines (digest, two spaces,
    path), sorted by path's bytes. It counts files only; the ledger's tree_sha256 (with modes and links) goes in
    an annotation."""
    lines = "".join(f"{files[path]}  {path}\n" for path in sorted(files, key=lambda p: p.encode()))
    return hashlib.sha256(lines.encode()).hexdigest()


def build_subjects(artifact: ModelArtifact, files: dict[str, str]) -> list[dict]:
    """The archive (sha256, and dirHash of its files) and each file in it (sha256), named by its relative path."""
    archive = _compact({
        "name": PurePosixPath(urlsplit(artifact.uri).path).name or artifact.uri,
        "uri": artifact.uri,
        "digest": {"sha256": artifact.sha256, **({"dirHash": build_dir_hash(files)} if files else {})},
        "annotations": _compact({"ledgerTreeSha256": artifact.tree_sha256, "versionId": artifact.version_id}),
    })
    return [archive, *({"name": path, "digest": {"sha256": sha}} for path, sha in sorted(files.items()))]


# --- dependencies ---------------------------------------------------------------------------------------------


def build_image_purl(uri: str, digest: str | None) -> str:
    """The purl (type oci) of an image, by digest where there is one: an image reference such as
    ACCOUNT.dkr.ecr.REGION.amazonaws.com/repo:tag is not a URI by itself."""
    from packageurl import PackageURL

    reference = uri.split("@", 1)[0]
    repository, _, tag = reference.rpartition(":") if ":" in reference.rsplit("/", 1)[-1] else (reference, "", "")
    return PackageURL(type="oci", name=repository.rsplit("/", 1)[-1].lower(),
                      version=f"sha256:{digest}" if digest else None,
                      qualifiers=_compact({"repository_url": repository, "tag": tag or None})).to_string()


def build_image_dependency(record: RunRecord, unpinned: list[dict]) -> dict | None:
    """The image by digest; on the local backend, the Python environment that ran in its place."""
    image = record.pins.image
    if image.source == "environment":
        fingerprint = bare_sha256(image.digest)
        return _compact({
            "name": "environment", "uri": f"{uris.URN}:environment:{image.digest}",
            # the fingerprint is the sha256 of the canonical JSON of {python, platform, packages}, which
            # internalParameters.environment holds
            "digest": {"sha256": fingerprint} if fingerprint else None,
            "annotations": _compact({"standsInFor": image.uri, "how": (image.ran or {}).get("how")}),
        })
    if not image.uri:
        return None
    digest = bare_sha256(image.digest)
    return _compact({
        "name": "image", "uri": build_image_purl(image.uri, digest),
        "digest": {"sha256": digest} if digest else None,
        "annotations": _compact({"requested": image.uri, "pinnedUri": image.pinned_uri, "source": image.source,
                                 **unpinned_annotation(None if digest else find_unpinned(unpinned, "image"))}),
    })


def build_code_dependencies(record: RunRecord, unpinned: list[dict]) -> list[dict]:
    """The git commit, the uncommitted diff by digest, the code archive, and SDK 3.x code channel files."""
    code = record.pins.code
    found = []
    if code.commit:
        repo = code.repo_url or code.model_extra.get("repo_root") or ""
        repo = "file://" + repo if repo.startswith("/") else repo
        found.append(_compact({
            "name": "source", "uri": f"git+{repo}" + (f"@refs/heads/{code.branch}" if code.branch else ""),
            "digest": {"gitCommit": code.commit},
            "annotations": _compact({"dirty": code.dirty, "untracked": code.untracked,
                                     **unpinned_annotation(find_unpinned(unpinned, "code", "code in"))}),
        }))
    if code.dirty and bare_sha256(code.diff_sha256):
        found.append({"name": "source-diff", "digest": {"sha256": code.diff_sha256}, "mediaType": "text/x-diff",
                      "annotations": {"againstCommit": code.commit, "keptIn": "the ledger's blobs, redacted"}})
    archive = code.source_archive
    if archive and archive.uri:
        sha = bare_sha256(archive.sha256)
        gap = None if sha else find_unpinned(unpinned, f"source archive {archive.uri}")
        found.append(_compact({
            "name": "source-archive",
            "uri": archive.uri + (f"?versionId={quote(archive.version_id, safe='')}" if archive.version_id else ""),
            "digest": {"sha256": sha} if sha else None, "annotations": unpinned_annotation(gap),
        }))
    for name, channel in sorted((code.model_extra.get("code_channels") or {}).items()):
        for obj in channel.get("objects") or []:  # SDK 3.x: keys relative to the channel, each with its sha256
            version = f"?versionId={quote(obj['version_id'], safe='')}" if obj.get("version_id") else ""
            found.append(_compact({
                "name": f"code-channel:{name}/{obj.get('key')}",
                "uri": f"{(channel.get('uri') or '').rstrip('/')}/{quote(str(obj.get('key')))}{version}",
                "digest": {"sha256": obj["sha256"]} if bare_sha256(obj.get("sha256")) else None,
                "annotations": {"keptInLedger": bool(channel.get("kept"))},
            }))
    return found


def build_data_dependencies(name: str, pin: DataChannelPin, unpinned: list[dict]) -> list[dict]:
    """A channel's manifest (its sha256) and every object in it, by version id or content digest."""
    gap = unpinned_annotation(find_unpinned(unpinned, f"data channel {name}"))
    found = [_compact({
        "name": f"channel:{name}", "uri": pin.uri,
        "digest": {"sha256": pin.manifest_sha256} if bare_sha256(pin.manifest_sha256) else None,
        "mediaType": uris.MANIFEST_MEDIA_TYPE,
        "annotations": _compact({"kind": pin.kind, "objectCount": pin.object_count, "totalBytes": pin.total_bytes,
                                 "snapshotUri": pin.snapshot_uri, **({"pinned": True} if pin.pinned else gap)}),
    })]
    for obj in pin.objects:
        sha = object_sha256(obj)
        found.append(_compact({
            "name": f"channel:{name}/{obj.key}", "uri": object_uri(pin.uri, obj),
            "digest": {"sha256": sha} if sha else None,
            "annotations": _compact({"versionId": obj.version_id, "etag": None if sha else obj.etag,
                                     "size": obj.size, **_object_unpinned(pin, obj, sha, gap)}),
        }))
    return found


def _object_unpinned(pin: DataChannelPin, obj, sha: str | None, channel_gap: dict) -> dict:
    """An object named by neither a version id nor a content digest can have been overwritten since: say so on
    the object, with its channel's gap where there is one."""
    if obj.version_id or sha:
        return {}
    return channel_gap or unpinned_annotation({"why": f"no version id or content digest of {obj.key} was "
                                                      f"recorded in {pin.uri}", "fix": ""})


def build_dependencies(record: RunRecord, unpinned: list[dict]) -> list[dict]:
    image = build_image_dependency(record, unpinned)
    found = [image] if image else []
    found += build_code_dependencies(record, unpinned)
    remote = record.pins.code.model_extra.get("remote_function")
    if remote:
        found += build_data_dependencies("@remote function", DataChannelPin.model_validate(remote), unpinned)
    for name, pin in sorted(record.pins.data.items()):
        found += build_data_dependencies(name, pin, unpinned)
    return found


# --- statements -----------------------------------------------------------------------------------------------


def build_sdk_versions(environment) -> dict[str, str]:
    """Pure: the versions of the SDKs that launched the job: from the launching environment, which a local job's
    record keeps apart (`launcher`) from the environment the job ran in."""
    launcher = (environment.model_extra or {}).get("launcher") or {}
    packages = launcher.get("packages") or environment.packages
    return {name: packages[name] for name in SDK_PACKAGES if name in packages}


def build_provenance_statement(record: RunRecord, files: dict[str, str]) -> dict:
    """The SLSA provenance of the run's model: `files` are {path: sha256} of the files in its archive, which the
    caller read and checked against the recorded sha256 (common.read_model_files)."""
    artifact = record.outcome.model_artifact
    if artifact is None or not artifact.sha256:
        raise UsageError(f"run {record.run_id} has no model artifact digest to attest", "")
    environment, outcome = record.pins.environment, record.outcome
    unpinned = build_unpinned(record)
    predicate = {
        "buildDefinition": {
            "buildType": uris.BUILD_TYPE,
            "externalParameters": _compact({"request": record.request, "backend": record.backend,
                                            "redactedKeys": record.model_extra.get("redacted_keys")}),
            "internalParameters": _compact({
                "sdk": build_sdk_versions(environment),
                "environment": _compact({"python": environment.python, "platform": environment.platform,
                                         "fingerprint": environment.fingerprint,
                                         "packages": environment.packages}),
                "hardwareRequested": record.pins.hardware.requested or _compact({
                    "instance_type": record.pins.hardware.instance_type,
                    "instance_count": record.pins.hardware.instance_count}),
                "ledger": _compact({"version": VERSION, "runId": record.run_id, "project": record.project,
                                    "createdBy": record.created_by, "createdAt": record.created_at}),
                # every dependency that is not pinned, named, with why and the fix: never left out
                "unpinned": unpinned,
            }),
            "resolvedDependencies": build_dependencies(record, unpinned),
        },
        "runDetails": {
            "builder": {"id": uris.builder_id(record.backend), "version": {uris.NAME: VERSION}},
            "metadata": _compact({"invocationId": outcome.arn or record.job_name,
                                  "startedOn": rfc3339(outcome.started_at), "finishedOn": rfc3339(outcome.ended_at)}),
            "byproducts": [_ledger_entry(record)] if record.chain else [],
        },
    }
    predicate["runDetails"] = _compact(predicate["runDetails"])
    return {"_type": STATEMENT_TYPE, "subject": build_subjects(artifact, files), "predicateType": PROVENANCE_TYPE,
            "predicate": predicate}


def _ledger_entry(record: RunRecord) -> dict:
    """The log entry the export read the run from: `ledger audit check` and `ledger verify` vouch for it."""
    return {"name": "ledger-entry", "uri": f"{uris.URN}:entry:{record.chain.entry_hash}",
            "annotations": {"seq": record.chain.seq, "runId": record.run_id}}


def build_verdict_statement(reproduction: RunRecord, original: RunRecord, files: dict[str, str],
                            verdict_recorded_at: str | None) -> dict:
    """The second statement of a reproduction: its subject is the reproduction's model, its predicate names the
    original run and the result (IDENTICAL, EQUIVALENT, DIVERGED or UNVERIFIABLE) with what differed."""
    verdict = reproduction.verdict
    if verdict is None or reproduction.reproduction_of != original.run_id:
        raise UsageError(f"run {reproduction.run_id} has no verdict against {original.run_id}", "")
    artifact = reproduction.outcome.model_artifact
    if artifact is None or not artifact.sha256:
        raise UsageError(f"run {reproduction.run_id} has no model artifact digest to attest", "")
    predicate = {
        "verifier": {"id": uris.VERIFIER_ID, "version": {uris.NAME: VERSION}},
        "timeVerified": rfc3339(verdict_recorded_at),
        "original": _run_summary(original),
        "reproduction": _run_summary(reproduction),
        "result": verdict.result,
        "differences": verdict.differences,
        "explainedBy": verdict.explained_by,
        "compensated": verdict.compensated,
    }
    return {"_type": STATEMENT_TYPE, "subject": build_subjects(artifact, files),
            "predicateType": uris.VERDICT_PREDICATE_TYPE, "predicate": _compact(predicate)}


def _run_summary(record: RunRecord) -> dict:
    artifact = record.outcome.model_artifact
    return _compact({
        "runId": record.run_id, "jobName": record.job_name, "backend": record.backend,
        "invocationId": record.outcome.arn or record.job_name,
        "model": _compact({"uri": artifact.uri, "digest": {"sha256": artifact.sha256} if artifact.sha256 else None,
                           "ledgerTreeSha256": artifact.tree_sha256}) if artifact else None,
        "metrics": record.outcome.metrics,
    })


def check_statement(statement: dict) -> None:
    """Parse the statement into in-toto-attestation's models, strictly (an unknown or misspelt field fails), and
    validate it; a provenance predicate is parsed into SLSA Provenance v1's model too. A failure is a bug of the
    exporter: nothing is written."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    try:
        Statement.copy_from_pb(json_format.ParseDict(statement, statement_pb2.Statement())).validate()
        if statement["predicateType"] == PROVENANCE_TYPE:
            json_format.ParseDict(statement["predicate"], provenance_pb2.Provenance())
    except (json_format.ParseError, ValueError) as error:
        raise LedgerError(f"the exporter built an invalid in-toto statement: {error}",
                          "please report this; nothing was written") from None


def statement_bytes(statement: dict) -> bytes:
    """The bytes a DSSE envelope carries: any stable JSON (DSSE signs bytes, not a canonical form)."""
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
