"""Side effects before and after a local job: the job root laid out, its data and code staged (from file://,
the content store or S3 by recorded version ids), its config files written and sealed, its artifacts packed and
saved where SageMaker would put them.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from ledger.backends.base import LogFn
from ledger.backends.local.contract import ChannelPlan, JobPlan, build_resource_config, s3_relative_path
from ledger.capture.content_store import (
    CAS_PREFIX,
    ContentStore,
    check_free_space,
    explain_no_space,
    extract_tar,
    local_path_of,
    manifest_digest,
    pack_tar_gz,
    parse_cas_uri,
    pin_file_channel_and_refusals,
    sha256_file,
    stage_cas_uri,
    stage_file_pin,
    tree_sha256,
)
from ledger.capture.data import parse_s3_uri
from ledger.capture.secrets import build_request_redaction, plan_known_secrets, redact_known
from ledger.errors import LedgerError, NotFound, UsageError

STAGING_WORKERS = 8  # parallel S3 downloads when staging a channel


class S3:
    """One boto3 S3 client for a launch, made on first use (boto3 honours AWS_ENDPOINT_URL and the profile)."""

    def __init__(self):
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def call(self, what: str, fn: Callable, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "404", "NotFound"}:
                raise NotFound(f"{what}: {code}", "check that the object (version) still exists") from None
            raise LedgerError(f"{what}: {exc}", "check the AWS credentials and permissions") from None
        except BotoCoreError as exc:
            raise LedgerError(f"{what}: {exc}", "check the AWS endpoint, region and credentials") from None

    def download(self, bucket: str, key: str, dest: Path, version_id: str | None = None) -> dict[str, Any]:
        """Write one object (one exact version when given) to dest; returns {version_id, etag, size}."""
        kwargs = {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
        what = f"reading s3://{bucket}/{key}" + (f" version {version_id}" if version_id else "")
        response = self.call(what, self.client.get_object, **kwargs)
        with explain_no_space(f"s3://{bucket}/{key}", dest, response.get("ContentLength")):
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as f:
                shutil.copyfileobj(response["Body"], f, 8 << 20)
        # ETags without their quotes, as capture records them, so the two manifests digest alike.
        return {"version_id": response.get("VersionId"), "etag": (response.get("ETag") or "").strip('"') or None,
                "size": response.get("ContentLength")}

    def list_objects(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        objects = []
        pages = self.call(f"listing s3://{bucket}/{prefix}", lambda: list(paginator.paginate(Bucket=bucket,
                                                                                              Prefix=prefix)))
        for page in pages:
            objects += [o for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        return objects

    def upload(self, path: Path, uri: str) -> str | None:
        """Put a file at uri; returns the new object's version id (None when the bucket has no versioning)."""
        bucket, key = parse_s3_uri(uri)
        with open(path, "rb") as body:
            response = self.call(f"writing {uri}", self.client.put_object, Bucket=bucket, Key=key, Body=body)
        return response.get("VersionId")


def _inside(dest: Path, relative: str) -> Path:
    target = (dest / relative).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise UsageError(f"object key {relative!r} would land outside its channel", "rename the object")
    return target


def stage_s3_channel(s3: S3, channel: ChannelPlan, dest: Path, log: LogFn) -> dict[str, Any]:
    """Download a channel: the pinned object versions when the pin has them, else the prefix's current objects.

    Returns a pin-shaped dict of what was read, with the version ids S3 reported for it.
    """
    pin = channel.pin or {}
    pinned_objects = pin.get("objects") or []
    bucket, prefix = parse_s3_uri(pin.get("uri") or channel.uri)
    if pinned_objects:
        wanted = [(o["key"], o.get("version_id"), o.get("etag")) for o in pinned_objects]
        needed = sum(o.get("size") or 0 for o in pinned_objects)
    else:
        sizes = {o["Key"]: o.get("Size") or 0 for o in s3.list_objects(bucket, prefix)}
        # A prefix that names an object exactly is that one object (as the SDK's local mode reads it).
        wanted = [(key, None, None) for key in ([prefix] if prefix in sizes else sizes)]
        needed = sum(sizes[key] for key, _, _ in wanted)
    what = f"channel {channel.name}"
    check_free_space(what, dest, needed)
    dest.mkdir(parents=True, exist_ok=True)

    def fetch(item: tuple[str, str | None, str | None]) -> dict[str, Any]:
        key, version_id, pinned_etag = item
        got = s3.download(bucket, key, _inside(dest, s3_relative_path(prefix, key)), version_id)
        if pinned_etag and not version_id and got["etag"] != pinned_etag:
            log(f"ledger: warning: s3://{bucket}/{key} changed since it was pinned (ETag {got['etag']}, "
                f"pinned {pinned_etag}) and its bucket keeps no versions")
        return {"key": key, **got}

    s3.client  # made once, before the threads share it
    with explain_no_space(what, dest, needed), ThreadPoolExecutor(max_workers=STAGING_WORKERS) as pool:
        objects = sorted(pool.map(fetch, wanted), key=lambda o: o["key"])  # S3 serves many GETs at once
    return {
        "uri": pin.get("uri") or channel.uri,
        "kind": "S3Prefix",
        "objects": objects,
        "object_count": len(objects),
        "total_bytes": sum(o["size"] or 0 for o in objects),
        "manifest_sha256": manifest_digest(objects),
        "pinned": bool(objects) and all(o["version_id"] for o in objects),
        "snapshot_uri": pin.get("snapshot_uri"),
    }


def stage_channel(channel: ChannelPlan, dest: Path, store: ContentStore, s3: S3, log: LogFn) -> dict[str, Any]:
    """Stage one channel into dest and return the pin of what was staged."""
    if channel.source == "s3":
        return stage_s3_channel(s3, channel, dest, log)
    if channel.source == "cas":
        pin, _ = stage_cas_uri(channel.uri, dest, store)
        return pin
    pin = channel.pin if channel.pin and channel.pin.get("kind") == "file" else None
    if pin is None:
        # Pin now: the job reads immutable copies, and the record can name exactly what it read.
        pin, refused = pin_file_channel_and_refusals(channel.uri, store)
        for link in refused:
            log(f"ledger: warning: channel {channel.name}: symbolic link {link}: not staged")
    stage_file_pin(pin, dest, store)
    return pin


def stage_code(plan: JobPlan, code_dir: Path, store: ContentStore, s3: S3) -> dict[str, Any] | None:
    """Put the source code in code_dir; returns {uri, version_id, sha256, tree_sha256} of what was staged.

    A full disk is a NoSpace error naming code_dir and the bytes the code needs (where they can be known first).
    """
    uri = plan.submit_dir
    if not uri:
        return None
    needed = None
    if uri.startswith(CAS_PREFIX) and store.has(parse_cas_uri(uri)):
        archive = store.path_of(parse_cas_uri(uri))
        needed = archive.stat().st_size + _unpacked_size(archive)  # a copy of it beside code_dir, then its files
        check_free_space(f"the code of {plan.job_name}", code_dir, needed)
    with explain_no_space(f"the code of {plan.job_name}", code_dir, needed):
        return _stage_code(plan, uri, code_dir, store, s3)


def _unpacked_size(archive: Path) -> int:
    """Bytes the files of an archive take once unpacked."""
    with tarfile.open(archive, "r:*") as tar:
        return sum(member.size for member in tar if member.isfile())


def _extract_code(archive: Path, code_dir: Path, what: str) -> None:
    """Unpack the code, after checking there is room for it."""
    check_free_space(what, code_dir, _unpacked_size(archive))
    extract_tar(archive, code_dir)


def _stage_code(plan: JobPlan, uri: str, code_dir: Path, store: ContentStore, s3: S3) -> dict[str, Any]:
    pinned = plan.source_archive if plan.source_archive and plan.source_archive.get("uri") == uri else {}
    version_id, sha256 = None, None
    if uri.startswith("s3://"):
        archive = code_dir.parent / "sourcedir.tar.gz"
        bucket, key = parse_s3_uri(uri)
        version_id = s3.download(bucket, key, archive, pinned.get("version_id"))["version_id"]
        sha256 = _checked_archive_digest(archive, pinned.get("sha256"), uri)
        _extract_code(archive, code_dir, f"the code of {plan.job_name}")
        archive.unlink()
    elif uri.startswith(CAS_PREFIX):
        sha256 = parse_cas_uri(uri)
        extract_tar(store.stage(sha256, code_dir.parent / "sourcedir.tar.gz"), code_dir)
        (code_dir.parent / "sourcedir.tar.gz").unlink()
    else:
        path = local_path_of(uri)
        if path.is_dir():
            check_free_space(f"the code of {plan.job_name}", code_dir,
                             sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))
            shutil.copytree(path, code_dir, dirs_exist_ok=True)
        else:
            sha256 = _checked_archive_digest(path, pinned.get("sha256"), uri)
            _extract_code(path, code_dir, f"the code of {plan.job_name}")
    return {"uri": uri, "version_id": version_id, "sha256": sha256, "tree_sha256": tree_sha256(code_dir)}


def _checked_archive_digest(archive: Path, expected: str | None, uri: str) -> str:
    digest = sha256_file(archive)
    if expected and digest != expected:
        raise LedgerError(f"the source archive {uri} is not the one pinned (sha256 {digest[:12]}…, "
                          f"pinned {expected[:12]}…)", "pin the source archive by version id, or launch anew")
    return digest


def check_local_inputs(plan: JobPlan) -> None:
    """Fail before anything runs when a local channel, source directory or entry point is missing."""
    for channel in plan.channels:
        if channel.source == "file" and not (channel.pin and channel.pin.get("kind") == "file"):
            if not local_path_of(channel.uri).exists():
                raise NotFound(f"channel {channel.name!r}: {channel.uri} does not exist",
                               "check the channel's path (file:///absolute/path or a path)")
    if plan.algorithm or plan.entrypoint:
        return
    if not plan.submit_dir:
        raise UsageError(f"the entry point {plan.program!r} has no source directory",
                         "set the hyperparameter sagemaker_submit_directory (ledger run --source-dir DIR)")
    if plan.submit_dir.startswith(("s3://", CAS_PREFIX)):
        return  # checked once staged, still before anything runs
    source = local_path_of(plan.submit_dir)
    if not source.exists():
        raise NotFound(f"source directory {plan.submit_dir} does not exist", "check --source-dir")
    if source.is_dir() and not (source / plan.program).is_file():
        raise NotFound(f"entry point {plan.program!r} is not in {source}",
                       "check the entry point's name, relative to the source directory")


def layout_job_root(root: Path) -> None:
    for sub in ("input/config", "input/data", "code", "model", "output/data", "output/intermediate"):
        (root / sub).mkdir(parents=True, exist_ok=True)


def write_config_files(plan: JobPlan, root: Path) -> None:
    config = root / "input" / "config"
    # The job reads its secrets here: only its owner may, and seal_config_files redacts them once it has ended.
    descriptor = os.open(config / "hyperparameters.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(descriptor, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(plan.hyperparameters, indent=2))
    (config / "resourceconfig.json").write_text(json.dumps(build_resource_config(plan.instance_type), indent=2))
    (config / "inputdataconfig.json").write_text(json.dumps({c.name: c.config for c in plan.channels}, indent=2))


def known_secrets(plan: JobPlan) -> list[str]:
    """The request's secrets, to clean what the job writes of them (it may print its own)."""
    return plan_known_secrets(build_request_redaction(
        {"HyperParameters": plan.hyperparameters, "Environment": plan.environment}).secrets)


def read_failure_text(root: Path, plan: JobPlan) -> str | None:
    text = _read_failure_file(root)
    return redact_known(text, known_secrets(plan)) if text else text


def seal_config_files(plan: JobPlan, root: Path) -> None:
    """After the job: hyperparameters.json keeps what the job read, with every secret redacted."""
    redacted = build_request_redaction({"HyperParameters": plan.hyperparameters}).request["HyperParameters"]
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(redacted, indent=2))


def save_artifact(source_dir: Path, name: str, plan: JobPlan, root: Path, s3: S3) -> dict[str, Any]:
    """Pack source_dir into <S3OutputPath>/<job>/output/<name>; returns {uri, version_id, sha256, tree_sha256}."""
    packed = root / "packed" / name
    sha256 = pack_tar_gz(source_dir, packed)
    uri = f"{plan.output_path.rstrip('/')}/{plan.job_name}/output/{name}"
    version_id = None
    if uri.startswith("s3://"):
        version_id = s3.upload(packed, uri)
    else:
        dest = local_path_of(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(packed, dest)
        uri = dest.as_uri()
    # The digest of the archive as stored (what a reader of the artifact gets), not of the directory it came from.
    return {"uri": uri, "version_id": version_id, "sha256": sha256, "tree_sha256": tree_sha256(packed)}


def damaged_inputs(root: Path) -> list[str]:
    """Staged inputs the job wrote into (their mtime moved from 0): the content store's copy changed with them."""
    data = root / "input" / "data"
    return [str(p.relative_to(data)) for p in data.rglob("*") if p.is_file() and p.stat().st_mtime != 0
            and p.stat().st_nlink > 1]


def _read_failure_file(root: Path) -> str | None:
    failure = root / "output" / "failure"
    return failure.read_text(errors="replace") if failure.is_file() else None


REQUIREMENTS = "requirements.txt"


def read_requirements(plan: JobPlan, store: ContentStore, s3: S3) -> str | None:
    """The job's requirements.txt, read from its source before anything is staged (its environment is built
    first, and recorded with the run); None when it has none. SDK 3.x names its file in sm_drivers/sourcecode.json."""
    if plan.entrypoint:
        return _read_sdk3_requirements(plan, s3)
    uri = plan.submit_dir
    if not uri:
        return None
    if uri.startswith(CAS_PREFIX):
        digest = parse_cas_uri(uri)
        return _read_member(store.path_of(digest), REQUIREMENTS) if store.has(digest) else None
    if uri.startswith("s3://"):
        import tempfile

        pinned = plan.source_archive if plan.source_archive and plan.source_archive.get("uri") == uri else {}
        bucket, key = parse_s3_uri(uri)
        with tempfile.TemporaryDirectory(prefix="ledger-source-") as tmp:
            archive = Path(tmp) / "sourcedir.tar.gz"
            s3.download(bucket, key, archive, pinned.get("version_id"))
            return _read_member(archive, REQUIREMENTS)
    path = local_path_of(uri)
    if path.is_dir():
        return (path / REQUIREMENTS).read_text() if (path / REQUIREMENTS).is_file() else None
    return _read_member(path, REQUIREMENTS) if path.is_file() else None


def _read_member(archive: Path, name: str) -> str | None:
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.isfile() and member.name.lstrip("./") == name:
                return tar.extractfile(member).read().decode("utf-8", "replace")
    return None


def _read_channel_file(s3: S3, uri: str, name: str) -> bytes | None:
    bucket, prefix = parse_s3_uri(uri)
    key = f"{prefix.rstrip('/')}/{name}" if prefix else name
    try:
        return s3.call(f"reading s3://{bucket}/{key}", s3.client.get_object, Bucket=bucket, Key=key)["Body"].read()
    except NotFound:
        return None


def check_sdk3_drivers(plan: JobPlan, s3: S3) -> None:
    """Before anything runs: SDK 3.x's drivers run here when they are what ModelTrainer uploads for SourceCode (an
    entry script or a command in sourcecode.json), on one host without a distributed driver (torchrun, MPI)."""
    drivers = {c.name: c.uri for c in plan.channels}.get("sm_drivers", "")
    why = None
    if not drivers.startswith("s3://"):
        why = "its sm_drivers channel is not in S3"
    else:
        source = json.loads(_read_channel_file(s3, drivers, "sourcecode.json") or b"{}")
        distributed = json.loads(_read_channel_file(s3, drivers, "distributed.json") or b"{}")
        if not (source.get("entry_script") or source.get("command")):
            why = "its sm_drivers/sourcecode.json names no entry_script or command to run"
        elif distributed:
            why = f"it asks for a distributed driver ({', '.join(sorted(distributed))}), which needs several hosts"
    if why:
        raise UsageError(f"the local backend cannot run this ContainerEntrypoint job: {why}",
                         "reproduce it on SageMaker: --backend sagemaker")


def _read_sdk3_requirements(plan: JobPlan, s3: S3) -> str | None:
    channels = {c.name: c.uri for c in plan.channels}
    drivers, code = channels.get("sm_drivers"), channels.get("code")
    if not (drivers and code and drivers.startswith("s3://") and code.startswith("s3://")):
        return None

    def read(uri: str, name: str) -> bytes | None:
        return _read_channel_file(s3, uri, name)

    source = json.loads(read(drivers, "sourcecode.json") or b"{}")
    name = source.get("requirements")
    if not name or name == "auto":
        name = REQUIREMENTS if name == "auto" else None
    text = read(code, name) if name else None
    return text.decode("utf-8", "replace") if text is not None else None
