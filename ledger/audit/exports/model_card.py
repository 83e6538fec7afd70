"""The content of a SageMaker Model Card for one run: what CreateModelCard takes as `Content` (a JSON string),
in SageMaker's model card schema (snake_case). Pure.

What the record knows goes in: the model (its artifact, its creator), the training details SageMaker itself fills
in from DescribeTrainingJob (the job ARN, the image, the datasets, the hyperparameters as sent, the final metrics),
and in `additional_information` the ledger's run id, the model's digests and, as caveats, every unpinned
dependency. What only people know (intended uses, risk rating, business details) is left for them to write.

SageMaker's limits (those of the SageMaker Python SDK's model card classes): at most 15 datasets and images, 50
metrics, 100 hyperparameters, 15 artifacts; free text at most 1,024 characters here; the whole content at most
100,000 characters.
"""

from __future__ import annotations

import json

from ledger.audit.exports.common import build_unpinned
from ledger.errors import LedgerError
from ledger.record import RunRecord

MAX_CONTENT_CHARS = 100_000
MAX_TEXT = 1024
LIMITS = {"training_datasets": 15, "container_image": 15, "training_metrics": 50, "hyper_parameters": 100}


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _listed(items: list, what: str, record: RunRecord) -> list:
    """Within SageMaker's limit, or an error naming what does not fit: a card that silently drops a dataset
    would misstate what the model was trained on."""
    if len(items) > LIMITS[what]:
        raise LedgerError(f"run {record.run_id} has {len(items)} {what.replace('_', ' ')}; a SageMaker model card "
                          f"holds at most {LIMITS[what]}", "export it as cyclonedx or slsa, which hold them all")
    return items


def build_model_card_content(record: RunRecord) -> dict:
    """The model card content (json.dumps it for CreateModelCard's `Content`)."""
    request, outcome, pins = record.request, record.outcome, record.pins
    artifact = outcome.model_artifact
    image = pins.image.pinned_uri or (request.get("AlgorithmSpecification") or {}).get("TrainingImage") \
        or pins.image.uri
    job_details = {
        "training_arn": outcome.arn,
        "training_datasets": _listed([pin.uri for _, pin in sorted(pins.data.items())], "training_datasets", record),
        "training_environment": {"container_image": [image]} if image else None,
        "training_metrics": _listed([{"name": name, "value": value} for name, value in sorted(outcome.metrics.items())
                                     if value is not None], "training_metrics", record),
        # as sent, as SageMaker's own card shows them (SDK 2.x framework estimators JSON-encode each value)
        "hyper_parameters": _listed([{"name": name, "value": str(value)}
                                     for name, value in sorted((request.get("HyperParameters") or {}).items())],
                                    "hyper_parameters", record),
    }
    observations = f"Recorded by sagemaker-ledger as run {record.run_id} ({record.backend} backend)."
    if image and pins.image.source == "environment":
        observations += f" {pins.image.stood_in()}."
    if record.reproduction_of:
        observations += (f" Reproduces run {record.reproduction_of}: "
                         f"{record.verdict.result if record.verdict else 'no verdict recorded'}.")
    unpinned = build_unpinned(record)
    caveats = ("Not pinned: " + "; ".join(f"{item['what']}: {item['why']}" for item in unpinned)) if unpinned else None
    content = {
        "model_overview": _present({
            "model_description": _clip(f"The model trained by the training job {record.job_name}"),
            "model_creator": record.created_by and _clip(record.created_by),
            "model_artifact": [artifact.uri] if artifact and artifact.uri else None,
        }),
        "training_details": {"training_observations": _clip(observations),
                             "training_job_details": _present(job_details)},
        "additional_information": _present({
            "caveats_and_recommendations": caveats and _clip(caveats),
            "custom_details": _present({
                "ledger_run_id": record.run_id,
                "model_sha256": artifact.sha256 if artifact else None,
                "model_tree_sha256": artifact.tree_sha256 if artifact else None,
                "ledger_entry_hash": record.chain.entry_hash if record.chain else None,
            }),
        }),
    }
    if len(json.dumps(content)) > MAX_CONTENT_CHARS:
        raise LedgerError(f"the model card of run {record.run_id} is longer than SageMaker's {MAX_CONTENT_CHARS} "
                          "characters", "export it as cyclonedx, which has no such limit")
    return content


def _present(mapping: dict) -> dict:
    """Only the fields that have a value: the schema has no nulls."""
    return {k: v for k, v in mapping.items() if v not in (None, [], {})}
