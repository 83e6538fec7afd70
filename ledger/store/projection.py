"""Pure: the projection rows a run's record implies. Used by append, by `db rebuild` and by `verify`,
so that the three can never disagree about what a projection should hold."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlparse

from ledger.record import RunRecord, canonical_json

RUN_COLUMNS = (
    "run_id project job_name backend status created_at created_by image_digest code_commit gap_count "
    "reproduction_of verdict model_uri model_tree_sha256 params_json metrics_json last_seq last_hash"
).split()
PROJECTION_TABLES = {  # the tables of one row per item of a run, and their columns
    "params": ("run_id", "key", "value"),
    "metrics": ("run_id", "key", "value"),
    "data_objects": ("run_id", "channel", "key", "bucket", "version_id", "etag", "size"),
}


@dataclass(frozen=True)
class DataObjectRows:
    """A run's data_objects rows, made as they are read: a channel of a million objects is not also held as a
    million dicts. (channel, bucket, objects) for each S3 channel."""

    run_id: str
    channels: tuple[tuple[str, str, list], ...] = ()

    def __iter__(self) -> Iterator[dict]:
        for channel, bucket, objects in self.channels:
            for obj in objects:  # capture records full object keys, whatever the channel's prefix
                yield {"run_id": self.run_id, "channel": channel, "key": obj.key, "bucket": bucket,
                       "version_id": obj.version_id, "etag": obj.etag, "size": obj.size}


@dataclass
class ProjectionRows:
    run: dict
    params: list[dict] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)
    data_objects: Iterable[dict] = ()


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
    # lineage answers for S3 objects; file:// channels are pinned in the content store
    s3_channels = [(name, urlparse(pin.uri), pin.objects) for name, pin in sorted(pins.data.items())]
    rows.data_objects = DataObjectRows(record.run_id, tuple(
        (name, parsed.netloc, objects) for name, parsed, objects in s3_channels if parsed.scheme == "s3"))
    return rows


@dataclass
class FactUpdate:
    """What a later fact about a run changes in its projection: runs columns, and its metrics rows (None: as
    they are). The same values `build_projection` gives the folded record, without folding it."""

    run: dict
    metrics: list[dict] | None = None


def build_fact_update(kind: str, payload: dict, run_id: str, seq: int, entry_hash: str) -> FactUpdate:
    """Pure: the projection change of a run.finished, run.verdict or run.annotated entry at `seq`."""
    run: dict = {"last_seq": seq, "last_hash": entry_hash}
    metrics = None
    if kind == "run.finished":
        outcome = payload["outcome"]
        artifact = outcome.get("model_artifact") or {}
        values = {str(k): _finite(v) for k, v in (outcome.get("metrics") or {}).items()}
        run.update(status=outcome.get("status"), metrics_json=canonical_json(values), model_uri=artifact.get("uri"),
                   model_tree_sha256=artifact.get("tree_sha256"))
        metrics = [{"run_id": run_id, "key": k, "value": v} for k, v in sorted(values.items())]
    elif kind == "run.verdict":
        run["verdict"] = payload["verdict"]["result"]
    return FactUpdate(run, metrics)
