"""The record: pure data, canonical JSON and digests. No I/O here.

A `RunRecord` is what `ledger show RUN --json` prints (DESIGN.md, schema version 1). Every model keeps fields it
does not know (`extra="allow"`), so a record written by a newer ledger round-trips through an older one unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from ulid import ULID

SCHEMA_VERSION = 1
ZERO_HASH = "0" * 64
REDACTED = "***REDACTED***"

EntryKind = Literal["run.launched", "run.finished", "run.verdict", "run.annotated"]
ENTRY_KINDS: tuple[str, ...] = ("run.launched", "run.finished", "run.verdict", "run.annotated")


# --- canonical form -------------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> str:
    """Sorted keys, no insignificant whitespace, UTF-8 text; NaN and Infinity refused (JSON has neither)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_bytes(obj: Any) -> bytes:
    return canonical_json(obj).encode("utf-8")


def iter_canonical_list(items: Iterable[Any]) -> Iterator[bytes]:
    """The bytes of canonical_bytes(list(items)) in pieces, an item at a time: for a list of a million objects,
    which is then never held twice (joined, or hashed as it goes)."""
    yield b"["
    for n, item in enumerate(items):
        if n:
            yield b","
        yield canonical_bytes(item)
    yield b"]"


def canonical_list_bytes(items: Iterable[Any]) -> bytes:
    """canonical_bytes(list(items)), built one item at a time (b"".join would hold every piece besides)."""
    out = bytearray()
    for piece in iter_canonical_list(items):
        out += piece
    return bytes(out)


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj`."""
    return sha256_hex(canonical_bytes(obj))


def chain_hash(prev_hash: str, body: str) -> str:
    """entry_hash = sha256(prev_hash + sha256(body)), both as lowercase hex text."""
    return sha256_hex(prev_hash + sha256_hex(body))


def new_run_id() -> str:
    """A ULID: 26 characters, sortable by creation time."""
    return str(ULID())


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# --- the parts of a record ------------------------------------------------------------------------------------


class Part(BaseModel):
    """Base of every record part: keeps unknown fields, and compares by value."""

    model_config = ConfigDict(extra="allow")


class Gap(Part):
    """A reference that could not be pinned, why, and how to pin it next time."""

    what: str
    why: str
    fix: str = ""


class ImagePin(Part):
    """The image the request names (`uri`), by digest. With source "environment" (a local run) the image did not
    run: `digest` is the fingerprint of the environment that stood in for it, and `ran` says what that was
    ({kind, fingerprint, python, how}; since job environments: lock_sha256, origin "image profile" | "recorded set",
    profile, image, python_exact, image_python, requirements {sha256, installed_on_top}, deviations, built_with,
    namespace, packages); records made before `ran` existed lack it."""

    uri: str | None = None
    digest: str | None = None
    pinned_uri: str | None = None
    source: str | None = None  # "ecr" | "registry" | "environment"
    ran: dict[str, Any] | None = None

    def stood_in(self) -> str | None:
        """One line, '<environment> stood in for <image>', when an environment ran in place of the image."""
        if self.source != "environment":
            return None
        ran = self.ran or {}
        if ran.get("lock_sha256"):  # a job environment of its own, built from a lock
            return f"{ran.get('how')} (environment lock {ran['lock_sha256'][:12]}…) stood in for {self.uri or 'no image'}"
        fingerprint = ran.get("fingerprint") or self.digest
        how = ran.get("how") or "the ledger's own Python environment"  # the only stand-in older ledgers had
        named = f"Python environment {fingerprint[:12]}…" if fingerprint else "a Python environment"
        return f"{named} ({how}) stood in for {self.uri or 'no image'}"


class SourceArchive(Part):
    uri: str | None = None
    version_id: str | None = None
    sha256: str | None = None


class CodePin(Part):
    repo_url: str | None = None
    commit: str | None = None
    branch: str | None = None
    dirty: bool | None = None
    diff_sha256: str | None = None
    untracked: list[str] = Field(default_factory=list)
    source_archive: SourceArchive | None = None


class DataObject(Part):
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None


DATA_OBJECTS = TypeAdapter(list[DataObject])  # a manifest blob read straight into objects


class DataChannelPin(Part):
    uri: str
    kind: str | None = None  # "S3Prefix" | "ManifestFile" | "file"
    objects: list[DataObject] = Field(default_factory=list)
    object_count: int = 0
    total_bytes: int = 0
    manifest_sha256: str | None = None
    pinned: bool = False
    snapshot_uri: str | None = None


class EnvironmentPin(Part):
    python: str | None = None
    platform: str | None = None
    packages: dict[str, str] = Field(default_factory=dict)
    fingerprint: str | None = None


class HardwarePin(Part):
    """What was requested apart from what ran.

    The top-level fields are the request as older records have it: the instance type, count and volume, and the
    type's figures from the instance catalogue (for the `local` types, this machine's). `requested` says the same
    explicitly, with where the figures came from; `ran` is the machine a local run ran on, observed
    ({host, instance_count, vcpu, memory_gib, gpu, gpu_count, os, how}); `ran_source` says why `ran` is absent
    (SageMaker runs the requested type and reports no hardware of its own)."""

    instance_type: str | None = None
    instance_count: int | None = None
    volume_gb: int | None = None
    vcpu: int | None = None
    memory_gib: float | None = None
    gpu: str | None = None
    gpu_count: int | None = None
    host: str | None = None
    requested: dict[str, Any] | None = None
    ran: dict[str, Any] | None = None
    ran_source: str | None = None

    def describe_requested(self) -> str | None:
        """One line: what the request asked for, and where its figures come from."""
        if not self.instance_type and not self.model_extra.get("instance_groups"):
            return None
        groups = self.model_extra.get("instance_groups") or []
        if not self.instance_type:
            text = ", ".join(f"{g.get('instance_count')} × {g.get('instance_type')}" for g in groups)
        else:
            text = f"{self.instance_count or 1} × {self.instance_type}"
        source = (self.requested or {}).get("figures_from") or (
            "this machine" if self.instance_type in ("local", "local_gpu") else
            "the instance catalogue" if self.model_extra.get("catalogued") else None)
        if self.vcpu is not None or self.memory_gib is not None:
            text += f": {_machine_figures(self.vcpu, self.memory_gib, self.gpu, self.gpu_count)}"
        if source:
            text += f" ({source})"
        return text + (f"; {self.volume_gb} GB volume" if self.volume_gb else "")

    def describe_ran(self, backend: str | None) -> str:
        """One line: the machine the job ran on, or why the record cannot say."""
        if self.ran:
            ran = self.ran
            return (f"{ran.get('host') or 'this machine'}: "
                    f"{_machine_figures(ran.get('vcpu'), ran.get('memory_gib'), ran.get('gpu'), ran.get('gpu_count'))}"
                    + (f"; {ran['os']}" if ran.get("os") else ""))
        if self.ran_source:
            return self.ran_source
        if backend != "local":
            return "as requested from SageMaker: it reports no hardware of its own"
        if self.instance_type in ("local", "local_gpu"):  # older records put this machine's figures at the top
            figures = _machine_figures(self.vcpu, self.memory_gib, self.gpu, self.gpu_count)
            return f"{self.host or 'this machine'}: {figures}"
        return ("not recorded: an older ledger recorded only the requested type's figures, not this machine's"
                + (f" ({self.host})" if self.host else ""))


def _machine_figures(vcpu: Any, memory_gib: Any, gpu: Any, gpu_count: Any) -> str:
    cpus = f"{vcpu} vCPU" if vcpu is not None else "vCPU unknown"
    memory = f"{memory_gib} GiB" if memory_gib is not None else "memory unknown"
    gpus = f"{gpu_count} × {gpu}" if gpu else ("no GPU" if gpu_count == 0 else "GPU unknown")
    return f"{cpus}, {memory}, {gpus}"


class Pins(Part):
    image: ImagePin = Field(default_factory=ImagePin)
    code: CodePin = Field(default_factory=CodePin)
    data: dict[str, DataChannelPin] = Field(default_factory=dict)
    hyperparameters: dict[str, str] = Field(default_factory=dict)
    environment: EnvironmentPin = Field(default_factory=EnvironmentPin)
    hardware: HardwarePin = Field(default_factory=HardwarePin)
    gaps: list[Gap] = Field(default_factory=list)


class ModelArtifact(Part):
    uri: str | None = None
    version_id: str | None = None
    sha256: str | None = None
    tree_sha256: str | None = None


class Outcome(Part):
    status: str | None = None  # InProgress | Completed | Failed | Stopped
    arn: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    billable_seconds: int | None = None
    failure_reason: str | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    model_artifact: ModelArtifact | None = None


class Verdict(Part):
    """IDENTICAL: equal model contents and equal final metrics. EQUIVALENT: every final metric within tolerance.
    DIVERGED: anything else. UNVERIFIABLE: a model artifact to compare is missing (the differences say which).
    `explained_by`: what could explain a difference (uncompensated drift, substitutions); `compensated`: drift
    the pinned relaunch made up for (older verdicts lack it)."""

    result: Literal["IDENTICAL", "EQUIVALENT", "DIVERGED", "UNVERIFIABLE"]
    differences: list[Any] = Field(default_factory=list)
    explained_by: list[Any] = Field(default_factory=list)
    compensated: list[Any] = Field(default_factory=list)


class ChainRef(Part):
    seq: int
    entry_hash: str
    prev_hash: str


class RunRecord(Part):
    run_id: str = Field(default_factory=new_run_id)
    schema_version: int = SCHEMA_VERSION
    project: str = "default"
    job_name: str
    backend: str = "sagemaker"  # "sagemaker" | "local"
    created_at: str = Field(default_factory=utc_now)
    created_by: str | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    original_request: dict[str, Any] | None = None
    pins: Pins = Field(default_factory=Pins)
    outcome: Outcome = Field(default_factory=Outcome)
    reproduction_of: str | None = None
    verdict: Verdict | None = None
    chain: ChainRef | None = None

    # -- canonical form --

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; fields left at None are kept, so the shape is the same for every record."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    def digest(self) -> str:
        return sha256_hex(self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunRecord":
        return cls.model_validate(data)

    @classmethod
    def from_json(cls, text: str) -> "RunRecord":
        return cls.model_validate_json(text)

    @property
    def status(self) -> str | None:
        return self.outcome.status


# --- log entries: what each kind carries, and how a run's entries fold into its record -----------------------


# Parts of a record kept as content-addressed blobs (the `blobs` table), each named in the entry by its sha256:
# repeated across runs (the package list), or long (metric series, manifests of many objects, the git diff). The
# entry commits to each blob by its digest, and verify hashes every blob an entry names again. Entries written
# before a part moved out still hold it inline; folding reads both. (what, path of the digest in the payload)
BLOB_REFERENCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("git diff", ("pins", "code", "diff_sha256")),
    ("package list", ("pins", "environment", "packages_sha256")),
    ("metric series", ("outcome", "metric_series_sha256")),
)
INLINE_OBJECTS = 100  # a channel manifest of more objects than this is kept as a blob, not in the entry


def launch_payload(record: RunRecord) -> dict[str, Any]:
    """What a run.launched entry carries: the whole record, without `chain` (which exists once the entry does)."""
    payload = record.to_dict()
    payload.pop("chain", None)
    return payload


def plan_launch_entry(record: RunRecord) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Pure: the payload of a run.launched entry and {sha256: bytes} of its blobs, as `plan_small_payload` makes
    them from `launch_payload(record)`, but with a large channel's objects written straight into their manifest
    blob: a listing of a million objects is held once (as the record's), never again as dicts."""
    large = {name: pin for name, pin in record.pins.data.items() if len(pin.objects) > INLINE_OBJECTS}
    exclude: dict[str, Any] = {"chain": True}
    if large:
        exclude["pins"] = {"data": {name: {"objects"} for name in large}}
    payload = record.model_dump(mode="json", exclude=exclude)
    manifests = {}
    for name, pin in large.items():
        data = canonical_list_bytes(obj.model_dump(mode="json") for obj in pin.objects)
        digest = sha256_hex(data)
        manifests[digest] = data
        payload["pins"]["data"][name].update(objects_sha256=digest, objects=[])
    payload, blobs = plan_small_payload("run.launched", payload)
    return payload, {**manifests, **blobs}


def blob_bytes(value: Any) -> bytes:
    """The canonical JSON bytes a part of a record is kept as: its blob's sha256 is theirs."""
    return canonical_bytes(value)


_last_package_blob: tuple[dict, bytes, str] = ({}, b"", "")


def _package_blob(packages: dict[str, str]) -> tuple[bytes, str]:
    """(bytes, sha256) of a package list's blob. Every run of a process names the same list: the last one's bytes
    are kept (compared whole, so never another list's), which spares a quarter of an append's JSON encoding."""
    global _last_package_blob
    last, data, digest = _last_package_blob
    if last != packages:
        data = blob_bytes(packages)
        digest = sha256_hex(data)
        _last_package_blob = (dict(packages), data, digest)
    return data, digest


def plan_small_payload(kind: str, payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Pure: the payload an entry of `kind` stores, with its package list, metric series and large manifests moved
    into blobs it names by sha256, and {sha256: bytes} of those blobs. The entry stays small however many runs
    repeat a package list or however long a series is; the blobs are stored once each."""
    blobs: dict[str, bytes] = {}

    def keep(part: Any) -> str:
        data = blob_bytes(part)
        digest = sha256_hex(data)
        blobs[digest] = data
        return digest

    # A copy of each dict on the way to what moves out, the rest shared: the caller's payload is left as it was.
    payload = dict(payload)
    outcome = payload.get("outcome") if kind in ("run.launched", "run.finished") else None
    if isinstance(outcome, dict) and outcome.get("metric_series"):
        outcome = payload["outcome"] = dict(outcome)
        outcome["metric_series_sha256"] = keep(outcome.pop("metric_series"))
    pins = payload.get("pins") if kind == "run.launched" else None
    if isinstance(pins, dict):
        pins = payload["pins"] = dict(pins)
        environment = pins.get("environment") or {}
        if environment.get("packages"):
            environment = pins["environment"] = dict(environment)
            data, digest = _package_blob(environment.pop("packages"))
            blobs[digest] = data
            environment["packages_sha256"] = digest
            environment["packages"] = {}
        data = pins.get("data") or {}
        large = [name for name, channel in data.items() if len(channel.get("objects") or []) > INLINE_OBJECTS]
        if large:
            data = pins["data"] = dict(data)
            for name in large:
                channel = data[name] = dict(data[name])
                channel["objects_sha256"] = keep(channel.pop("objects"))
                channel["objects"] = []
    return payload, blobs


def plan_blob_refs(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """Pure: (what, sha256) of each blob an entry's payload names: the git diff, the package list, the metric
    series, large manifests, and each file of an SDK 3.x code channel whose bytes the ledger kept."""
    refs = []
    for what, path in BLOB_REFERENCES:
        value: Any = payload
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and value:
            refs.append((what, value))
    pins = payload.get("pins") or {}
    for name, channel in sorted((pins.get("data") or {}).items()):
        if isinstance(channel, dict) and isinstance(channel.get("objects_sha256"), str):
            refs.append((f"manifest of data channel {name}", channel["objects_sha256"]))
    code = pins.get("code") or {}
    for name, channel in sorted((code.get("code_channels") or {}).items()):
        if isinstance(channel, dict) and channel.get("kept") is True:
            refs += [(f"code channel {name} file {o.get('key')}", o["sha256"]) for o in channel.get("objects") or []
                     if isinstance(o, dict) and o.get("sha256")]
    return refs


# Text that a body naming a blob holds: a body without any is not parsed (verify runs at hashing speed).
BLOB_MARKS: tuple[bytes, ...] = tuple(f'"{path[-1]}":"'.encode() for _, path in BLOB_REFERENCES) + (
    b'"objects_sha256":"', b'"kept":true')


def plan_inflation(record: RunRecord, parts: tuple[str, ...] = ("packages", "series", "objects")) -> list[str]:
    """Pure: the digests of the blobs a folded record names for these parts (those not inline already)."""
    wanted = []
    if "packages" in parts and record.pins.environment.model_extra.get("packages_sha256") \
            and not record.pins.environment.packages:
        wanted.append(record.pins.environment.model_extra["packages_sha256"])
    if "series" in parts and record.outcome.model_extra.get("metric_series_sha256") \
            and "metric_series" not in record.outcome.model_extra:
        wanted.append(record.outcome.model_extra["metric_series_sha256"])
    if "objects" in parts:
        wanted += [pin.model_extra["objects_sha256"] for pin in record.pins.data.values()
                   if pin.model_extra.get("objects_sha256") and not pin.objects]
    return wanted


def inflate_record(record: RunRecord, blobs: dict[str, bytes]) -> RunRecord:
    """Pure: the record with the parts its entries keep as blobs put back from `blobs` ({sha256: bytes}); a part
    whose blob is not given stays out (its digest still names it)."""
    record = record.model_copy(deep=True)
    environment, outcome = record.pins.environment, record.outcome
    digest = environment.model_extra.get("packages_sha256")
    if digest in blobs and not environment.packages:
        environment.packages = json.loads(blobs[digest])
    digest = outcome.model_extra.get("metric_series_sha256")
    if digest in blobs and "metric_series" not in outcome.model_extra:
        outcome.metric_series = json.loads(blobs[digest])
    for pin in record.pins.data.values():
        digest = pin.model_extra.get("objects_sha256")
        if digest in blobs and not pin.objects:
            pin.objects = DATA_OBJECTS.validate_json(blobs[digest])  # no list of dicts on the way
    return record


def build_entry_body(kind: str, run_id: str, payload: dict[str, Any], recorded_at: str | None = None) -> str:
    """The canonical body text of one log entry. Every column of the entry is derivable from it.

    run.launched carries the record (`launch_payload`); run.finished {"outcome"}; run.verdict {"verdict",
    "reproduction_of"}; run.annotated free facts that later entries may add to.
    """
    if kind not in ENTRY_KINDS:
        raise ValueError(f"unknown entry kind {kind!r}")
    if not run_id:
        raise ValueError("an entry needs a run_id")
    return canonical_json(
        {"kind": kind, "run_id": run_id, "payload": payload, "recorded_at": recorded_at or utc_now()}
    )


def merge_annotation(annotations: dict[str, Any], facts: dict[str, Any]) -> None:
    """Merge one run.annotated payload into a run's annotations: a later value wins, except that a mapping merges
    key by key into the mapping before it, so that facts that accumulate (each export of a run under `exports`)
    are each one entry, and no entry is rewritten to add to them."""
    for key, value in facts.items():
        before = annotations.get(key)
        annotations[key] = {**before, **value} if isinstance(before, dict) and isinstance(value, dict) else value


def fold_entries(entries: list[tuple[int, str, str, str]]) -> RunRecord:
    """Fold one run's entries, as (seq, body, prev_hash, entry_hash) in seq order, into its current record.

    Later facts win: the newest run.finished gives the outcome, the newest run.verdict the verdict; annotations
    are merged into `annotations` (`merge_annotation`). `chain` names the newest entry folded, whose hash covers
    all the others.
    """
    record: dict[str, Any] | None = None
    annotations: dict[str, Any] = {}
    last: tuple[int, str, str, str] | None = None
    for seq, body, prev_hash, entry_hash in entries:
        entry = json.loads(body)
        kind, payload = entry["kind"], entry["payload"]
        if kind == "run.launched":
            record = dict(payload)
        elif record is None:
            continue  # a fact about a run whose launch is not in this list: ignore, verify reports it
        elif kind == "run.finished":
            record["outcome"] = payload["outcome"]
        elif kind == "run.verdict":
            record["verdict"] = payload["verdict"]
        elif kind == "run.annotated":
            merge_annotation(annotations, payload)
        last = (seq, body, prev_hash, entry_hash)
    if record is None or last is None:
        raise ValueError("no run.launched entry among these entries")
    if annotations:
        record["annotations"] = {**record.get("annotations", {}), **annotations}
    record["chain"] = {"seq": last[0], "entry_hash": last[3], "prev_hash": last[2]}
    return RunRecord.from_dict(record)
