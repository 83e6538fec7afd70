"""Pure: the projection rows a run's record implies. Used by append, by `db rebuild` and by `verify`,
so that the three can never disagree about what a projection should hold."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlparse

from ledger.record import RunRecord, canonical_json, fold_entries

RUN_COLUMNS = (
    "run_id project job_name backend status created_at created_by image_digest code_commit gap_count "
    "reproduction_of verdict model_uri model_tree_sha256 params_json metrics_json last_seq last_hash"
).split()
PROJECTION_TABLES = {  # the tables of one row per item of a run, and their columns
    "params": ("run_id", "key", "value"),
    "metrics": ("run_id", "key", "value"),
    "data_objects": ("run_id", "channel", "key", "bucket", "version_id", "etag", "size"),
}


@dataclass
class ProjectionRows:
    run: dict
    params: list[dict] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)
    data_objects: list[dict] = field(default_factory=list)


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def build_projection(record: RunRecord) -> ProjectionRows:
    pins, outcome = record.pins, record.outcome
    params = {str(k): str(v) for k, v in pins.hyperparameters.items()}
    metrics = {str(k): _finite(v) for k, v in outcome.metrics.items()}
    artifact = outcome.model_artifact
    chain = record.chain
    run = {
        "run_id": record.run_id,
        "project": record.project,
        "job_name": record.job_name,
        "backend": record.backend,
        "status": outcome.status,
        "created_at": record.created_at,
        "created_by": record.created_by,
        "image_digest": pins.image.digest,
        "code_commit": pins.code.commit,
        "gap_count": len(pins.gaps),
        "reproduction_of": record.reproduction_of,
        "verdict": record.verdict.result if record.verdict else None,
        "model_uri": artifact.uri if artifact else None,
        "model_tree_sha256": artifact.tree_sha256 if artifact else None,
        "params_json": canonical_json(params),
        "metrics_json": canonical_json(metrics),
        "last_seq": chain.seq if chain else 0,
        "last_hash": chain.entry_hash if chain else "",
    }
    rows = ProjectionRows(run=run)
    rows.params = [{"run_id": record.run_id, "key": k, "value": v} for k, v in sorted(params.items())]
    rows.metrics = [{"run_id": record.run_id, "key": k, "value": v} for k, v in sorted(metrics.items())]
    for channel, pin in sorted(pins.data.items()):
        parsed = urlparse(pin.uri)
        if parsed.scheme != "s3":
            continue  # lineage answers for S3 objects; file:// channels are pinned in the content store
        for obj in pin.objects:  # capture records full object keys, whatever the channel's prefix
            rows.data_objects.append(
                {
                    "run_id": record.run_id,
                    "channel": channel,
                    "key": obj.key,
                    "bucket": parsed.netloc,
                    "version_id": obj.version_id,
                    "etag": obj.etag,
                    "size": obj.size,
                }
            )
    return rows


def fold_all(entries: Iterable[tuple]) -> Iterator[RunRecord]:
    """Pure: every run's current record, from (seq, run_id, kind, body, prev_hash, entry_hash, ...) in seq order."""
    by_run: dict[str, list[tuple]] = defaultdict(list)
    for seq, run_id, _kind, body, prev_hash, entry_hash, *_ in entries:
        by_run[run_id].append((seq, body, prev_hash, entry_hash))
    for run_entries in by_run.values():
        try:
            yield fold_entries(run_entries)
        except ValueError:
            continue  # facts without a launch: the chain check or the projection check reports them
