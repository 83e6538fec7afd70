"""Lineage: which runs read an S3 object (version), and what went into a model artifact.

Both answer from the projections (`data_objects`: which run read which object version; `runs`: which run made
which model artifact), so they stay fast however long the log is; the record of each
run that made an artifact is folded from the log for the full list of its inputs.

    runs_that_read(book, "s3://bucket/data/train.csv", version_id=None)   the runs, and the models they made
    inputs_of_artifact(book, "s3://bucket/out/job/output/model.tar.gz")   the runs that made it, and their inputs
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from sqlalchemy import text

from ledger.capture.data import parse_s3_uri
from ledger.errors import NotFound, UsageError
from ledger.store.engine import chunks, in_clause

HEX64 = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")
UPSTREAM_DEPTH = 5


def parse_object_uri(uri: str) -> tuple[str, str, bool]:
    """Pure: (bucket, key, is_prefix) of `s3://bucket/key`; a key ending in "/" (or none) names a prefix."""
    bucket, key = parse_s3_uri(uri)
    return bucket, key, key == "" or key.endswith("/")


def _like_prefix(key: str) -> str:
    return key.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


def runs_that_read(book, uri: str, version_id: str | None = None) -> dict:
    """The runs that read the object at `uri` (every object under it, for a prefix), oldest first; with
    `version_id`, only that version. Each run names what it read and the model artifact it made."""
    bucket, key, is_prefix = parse_object_uri(uri)
    if version_id and is_prefix:
        raise UsageError("--version-id names a version of one object, not of a prefix",
                         "give the object's full key: s3://bucket/path/to/object.csv")
    clauses, binds = ["d.bucket = :bucket"], {"bucket": bucket}
    if is_prefix:
        if key:
            clauses.append("d.key LIKE :prefix ESCAPE '!'")
            binds["prefix"] = _like_prefix(key)
    else:
        clauses.append("d.key = :key")
        binds["key"] = key
    if version_id:
        clauses.append("d.version_id = :version_id")
        binds["version_id"] = version_id
    sql = ("SELECT d.run_id, d.channel, d.key, d.version_id, d.etag, d.size, r.job_name, r.project, r.created_at, "
           "r.created_by, r.status, r.reproduction_of, r.verdict, r.model_uri, r.model_tree_sha256 "
           "FROM data_objects d JOIN runs r ON r.run_id = d.run_id "
           f"WHERE {' AND '.join(clauses)} ORDER BY r.created_at, d.run_id, d.channel, d.key")
    runs: dict[str, dict] = {}
    versions: dict[str | None, set[str]] = defaultdict(set)
    with book._reading() as conn:
        for row in conn.execute(text(sql), binds):
            (run_id, channel, obj_key, obj_version, etag, size, job_name, project, created_at, created_by, status,
             reproduction_of, verdict, model_uri, model_tree) = row
            run = runs.get(run_id)
            if run is None:
                run = runs[run_id] = {
                    "run_id": run_id, "job_name": job_name, "project": project, "created_at": created_at,
                    "created_by": created_by, "status": status, "reproduction_of": reproduction_of,
                    "verdict": verdict, "model": {"uri": model_uri, "tree_sha256": model_tree}, "read": [],
                }
            run["read"].append({"channel": channel, "uri": f"s3://{bucket}/{obj_key}", "key": obj_key,
                                "version_id": obj_version, "etag": etag, "size": size})
            if not is_prefix:
                versions[obj_version].add(run_id)
    return {
        "uri": uri,
        "bucket": bucket,
        "key": key,
        "prefix": is_prefix,
        "version_id": version_id,
        "runs": list(runs.values()),
        "versions": [{"version_id": v, "runs": len(r)} for v, r in
                     sorted(versions.items(), key=lambda item: (-len(item[1]), str(item[0])))],
    }


def _producers(conn, artifacts: list[str]) -> dict[str, list[tuple[str, str]]]:
    """{artifact uri or tree digest: [(run_id, model_uri)]} for the runs whose model artifact is one of these."""
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    digests = [HEX64.match(a.lower()).group(1) for a in artifacts if HEX64.match(a.lower())]
    uris = [a for a in artifacts if not HEX64.match(a.lower())]
    for column, values in (("model_uri", uris), ("model_tree_sha256", digests)):
        for chunk in chunks(values):
            marks, binds = in_clause("a", chunk)
            rows = conn.execute(text(f"SELECT run_id, model_uri, model_tree_sha256 FROM runs WHERE {column} IN "
                                     f"({marks}) ORDER BY created_at, run_id"), binds)
            for run_id, model_uri, tree in rows:
                found[model_uri if column == "model_uri" else tree].append((run_id, model_uri))
    return found


def describe_inputs(record, producers_of_inputs: dict[str, list[tuple[str, str]]]) -> dict:
    """Pure: what went into one run: image, code, data (every object version), hyperparameters, hardware, gaps."""
    pins, outcome = record.pins, record.outcome
    artifact = outcome.model_artifact
    data = []
    for name, channel in sorted(pins.data.items()):
        bucket = channel.uri[5:].split("/", 1)[0] if channel.uri.startswith("s3://") else None
        objects = []
        for obj in channel.objects:
            item = obj.model_dump(mode="json")
            if bucket:
                made_by = producers_of_inputs.get(f"s3://{bucket}/{obj.key}")
                if made_by:
                    item["made_by"] = [run_id for run_id, _ in made_by]
            objects.append(item)
        data.append({"channel": name, "uri": channel.uri, "kind": channel.kind, "object_count": channel.object_count,
                     "total_bytes": channel.total_bytes, "manifest_sha256": channel.manifest_sha256,
                     "pinned": channel.pinned, "snapshot_uri": channel.snapshot_uri, "objects": objects})
    return {
        "run_id": record.run_id,
        "job_name": record.job_name,
        "project": record.project,
        "created_at": record.created_at,
        "created_by": record.created_by,
        "status": outcome.status,
        "reproduction_of": record.reproduction_of,
        "verdict": record.verdict.result if record.verdict else None,
        "model_artifact": artifact.model_dump(mode="json") if artifact else None,
        "image": {"uri": pins.image.uri, "digest": pins.image.digest, "stood_in": pins.image.stood_in()},
        "code": {"repo_url": pins.code.repo_url, "commit": pins.code.commit, "dirty": pins.code.dirty,
                 "diff_sha256": pins.code.diff_sha256,
                 "source_archive_sha256": pins.code.source_archive.sha256 if pins.code.source_archive else None},
        "data": data,
        "hyperparameters": dict(sorted(pins.hyperparameters.items())),
        "hardware": {"instance_type": pins.hardware.instance_type, "instance_count": pins.hardware.instance_count,
                     "ran": pins.hardware.describe_ran(record.backend)},
        "gaps": [gap.model_dump(mode="json") for gap in pins.gaps],
        "chain": record.chain.model_dump(mode="json") if record.chain else None,
    }


def inputs_of_artifact(book, artifact: str, depth: int = UPSTREAM_DEPTH) -> dict:
    """What went into a model: the runs that made the artifact (by its URI as recorded, or its contents' tree
    sha256), each with its inputs; an input object that is itself another run's model is followed upstream."""
    artifact = (artifact or "").strip()
    if not artifact:
        raise UsageError("no artifact given", "give the model's URI as recorded (see ledger show RUN) or its "
                         "tree sha256")
    with book._reading() as conn:
        producers = _producers(conn, [artifact]).get(HEX64.match(artifact.lower()).group(1)
                                                     if HEX64.match(artifact.lower()) else artifact, [])
    if not producers:
        raise NotFound(f"no run in {book.where} recorded the model artifact {artifact}",
                       "give the URI exactly as `ledger show RUN` prints it, or the artifact's tree sha256")
    seen: set[str] = set()
    return {"artifact": artifact, "made_by": _explain_runs(book, [run_id for run_id, _ in producers], depth, seen)}


def _explain_runs(book, run_ids: list[str], depth: int, seen: set[str]) -> list[dict]:
    explained = []
    records = [book.get(run_id) for run_id in run_ids if run_id not in seen]
    seen.update(r.run_id for r in records)
    input_uris = sorted({f"s3://{c.uri[5:].split('/', 1)[0]}/{o.key}" for r in records
                         for c in r.pins.data.values() if c.uri.startswith("s3://") for o in c.objects})
    with book._reading() as conn:
        upstream = _producers(conn, input_uris) if input_uris else {}
    for record in records:
        item = describe_inputs(record, upstream)
        parents = sorted({run_id for channel in item["data"] for obj in channel["objects"]
                          for run_id in obj.get("made_by", [])} - seen)
        item["upstream"] = _explain_runs(book, parents, depth - 1, seen) if parents and depth > 1 else []
        if parents and depth <= 1:
            item["upstream_not_followed"] = parents
        explained.append(item)
    return explained


def summarize_reads(reads: list[dict], limit: int = 3) -> str:
    """Pure: 'train: abalone/train.csv@v3 (+2 more)' for a table cell."""
    shown = [f"{r['channel']}: {r['key']}" + (f"@{r['version_id']}" if r.get("version_id") else "")
             for r in reads[:limit]]
    more = len(reads) - limit
    return "; ".join(shown) + (f" (+{more} more)" if more > 0 else "")


def as_rows(result: dict) -> list[dict[str, Any]]:
    """Pure: one flat row per run of a `runs_that_read` result, for tables and CSV."""
    return [{"run_id": r["run_id"], "job_name": r["job_name"], "created_at": r["created_at"],
             "created_by": r["created_by"], "status": r["status"],
             "read": summarize_reads(r["read"]) if result["prefix"] else
             "; ".join(f"{x['channel']}: version {x['version_id'] or '(none)'}" for x in r["read"]),
             "model_uri": r["model"]["uri"], "model_tree_sha256": r["model"]["tree_sha256"]} for r in result["runs"]]
