"""CycloneDX 1.6: a machine-learning BOM of one run's model, built with cyclonedx-python-lib and checked with its
strict JSON validator.

The model is the BOM's subject (`metadata.component`, type machine-learning-model) with its archive's SHA-256, an
external reference to its SLSA provenance, and a model card (datasets, final metrics, hyperparameters); each
channel is a `data` component; the environment's packages are libraries; the image is a container.

cyclonedx-python-lib 11 has no model of a component's `modelCard` or `data` (both are TODOs of CycloneDX 1.5 in
its component model), so the BOM is built and serialized by the library, those two fields are added to its
JSON, and the whole is validated against the library's bundled 1.6 schema before anything is written.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime

from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, Property, XsUri
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.lifecycle import LifecyclePhase, PredefinedLifecycle
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from ledger.audit.exports import uris
from ledger.audit.exports.common import bare_sha256, build_unpinned, find_unpinned, object_uri, rfc3339
from ledger.audit.exports.slsa import build_image_purl
from ledger.config import VERSION
from ledger.errors import LedgerError
from ledger.record import DataChannelPin, RunRecord


def _property(name: str, value) -> Property:
    return Property(name=f"{uris.NAME}:{name}", value=str(value))


def _properties(**values) -> list[Property]:
    return [_property(name, value) for name, value in values.items() if value is not None]


def build_bom(record: RunRecord, generated_at: str, provenance: dict | None = None) -> str:
    """The BOM of the run's model as JSON text, validated. `provenance` is the run's newest SLSA export
    ({"url", "sha256"}); without one the BOM says that none was exported rather than pointing nowhere."""
    unpinned = build_unpinned(record)
    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"{uris.BASE}/runs/{record.run_id}/cyclonedx/"
                                                           f"{generated_at}"))
    bom.metadata.timestamp = datetime.fromisoformat(rfc3339(generated_at).replace("Z", "+00:00"))
    bom.metadata.lifecycles.add(PredefinedLifecycle(phase=LifecyclePhase.POST_BUILD))
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name=uris.NAME, version=VERSION))
    bom.metadata.properties.update(_property("unpinned", f"{item['what']}: {item['why']}") for item in unpinned)
    model = _model_component(record, provenance)
    bom.metadata.component = model

    data = [_data_component(name, pin, unpinned) for name, pin in sorted(record.pins.data.items())]
    image = _image_component(record, unpinned)
    libraries = [_library(name, version) for name, version in sorted(record.pins.environment.packages.items())]
    parts = [*data, *([image] if image else []), *libraries]
    bom.components.update(parts)
    bom.register_dependency(model, parts)
    for part in parts:
        bom.register_dependency(part, [])

    document = json.loads(JsonV1Dot6(bom).output_as_string())
    document["metadata"]["component"]["modelCard"] = build_model_card(record, [c.bom_ref.value for c in data])
    for entry in document.get("components", []):
        if entry.get("type") == "data":
            entry["data"] = [build_component_data(entry["name"], record.pins.data[entry["name"]])]
    text = json.dumps(document, indent=2)
    check_bom(text)
    return text


def _model_component(record: RunRecord, provenance: dict | None) -> Component:
    outcome = record.outcome
    artifact = outcome.model_artifact
    references = []
    if artifact and artifact.uri:
        references.append(ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(artifact.uri),
                                            comment="the model archive the training job wrote"))
    if provenance:
        references.append(ExternalReference(
            type=ExternalReferenceType.ATTESTATION, url=XsUri(provenance["url"]),
            comment="SLSA provenance v1 of this model: in-toto statements in DSSE envelopes",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=provenance["sha256"])]))
    sha = bare_sha256(artifact.sha256) if artifact else None
    return Component(
        type=ComponentType.MACHINE_LEARNING_MODEL, bom_ref="model", name=record.job_name, version=record.run_id,
        description=f"The model trained by {record.job_name} ({record.backend} backend), as {uris.NAME} recorded it",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=sha)] if sha else None,
        external_references=references,
        properties=_properties(
            runId=record.run_id, project=record.project, backend=record.backend, status=outcome.status,
            trainingJobArn=outcome.arn, treeSha256=artifact.tree_sha256 if artifact else None,
            reproductionOf=record.reproduction_of, verdict=record.verdict.result if record.verdict else None,
            provenance=None if provenance else f"none exported yet: ledger export {record.run_id} --format slsa"))


def _data_component(name: str, pin: DataChannelPin, unpinned: list[dict]) -> Component:
    references = [ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(pin.uri))]
    if pin.snapshot_uri:
        references.append(ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(pin.snapshot_uri),
                                            comment="the recorded object versions, as the job read them"))
    gap = None if pin.pinned else find_unpinned(unpinned, f"data channel {name}")
    return Component(
        type=ComponentType.DATA, bom_ref=f"data:{name}", name=name, version=pin.manifest_sha256,
        external_references=references,
        properties=_properties(manifestSha256=pin.manifest_sha256, objectCount=pin.object_count,
                               totalBytes=pin.total_bytes, pinned=str(pin.pinned).lower(),
                               unpinned=f"{gap['why']} (fix: {gap['fix'] or 'none given'})" if gap else None))


def _image_component(record: RunRecord, unpinned: list[dict]) -> Component | None:
    image = record.pins.image
    if not image.uri:
        return None
    digest = bare_sha256(image.digest) if image.source in ("ecr", "registry") else None
    gap = None if digest or image.source == "environment" else find_unpinned(unpinned, "image")
    return Component(
        type=ComponentType.CONTAINER, bom_ref="image", name=image.uri.split("@", 1)[0],
        purl=PackageURL.from_string(build_image_purl(image.uri, digest)),
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest)] if digest else None,
        properties=_properties(
            imageSource=image.source, unpinned=gap["why"] if gap else None,
            # on the local backend the image did not run: the Python environment named here stood in for it
            standIn=image.stood_in(), environmentFingerprint=image.digest if image.source == "environment" else None))


def _library(name: str, version: str) -> Component:
    purl = PackageURL(type="pypi", name=re.sub(r"[-_.]+", "-", name).lower(), version=version)
    # the environment that launched the job (on SageMaker the job itself ran in the image)
    return Component(type=ComponentType.LIBRARY, name=name, version=version, purl=purl, bom_ref=str(purl),
                     properties=_properties(role="launch-environment"))


def build_model_card(record: RunRecord, dataset_refs: list[str]) -> dict:
    """Pure: the model card CycloneDX 1.6 can hold: datasets by reference, final metrics (values are strings
    there), and the hyperparameters, which 1.6 has no field for, as properties."""
    card: dict = {"bom-ref": "model-card"}
    if dataset_refs:
        card["modelParameters"] = {"datasets": [{"ref": ref} for ref in dataset_refs]}
    metrics = [{"type": name, "value": str(value), "slice": "final"}
               for name, value in sorted(record.outcome.metrics.items()) if value is not None]
    if metrics:
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    if record.pins.hyperparameters:
        card["properties"] = [{"name": f"{uris.NAME}:hyperparameter:{name}", "value": str(value)}
                              for name, value in sorted(record.pins.hyperparameters.items())]
    return card


def build_component_data(name: str, pin: DataChannelPin) -> dict:
    """Pure: a data component's `data`: the dataset and every object in it, by version id or content digest."""
    contents = {"url": pin.snapshot_uri or pin.uri,
                "properties": [{"name": f"{uris.NAME}:object", "value": object_uri(pin.uri, obj)}
                               for obj in pin.objects]}
    return {"type": "dataset", "name": name, "contents": {k: v for k, v in contents.items() if v}}


def check_bom(text: str) -> None:
    """Validate against CycloneDX 1.6 with the library's strict JSON validator; a failure is the exporter's bug."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise LedgerError(f"the exporter built an invalid CycloneDX 1.6 BOM: {error}",
                          "please report this; nothing was written")
