"""Exports: a run's facts in the standards other tools check, built from its record (and, where a format lists the
model's files, from its model archive, checked against the recorded sha256).

    slsa                  in-toto Statement v1 + SLSA Provenance v1 in DSSE envelopes; a reproduction's verdict too
    openlineage_events    OpenLineage 2-0-2 RunEvents, through openlineage-python's client and transports
    cyclonedx_bom         a CycloneDX 1.6 ML-BOM, through cyclonedx-python-lib, validated strictly
    model_card            the content of a SageMaker Model Card, ready for CreateModelCard
    common                what they share: times, digests, object URIs, unpinned dependencies, the model's files
    uris                  the ledger's own URIs (build type, builder ids, predicate type, producer, facet schemas)
    save                  build, write (file, stdout, endpoint), sign and record an export as a fact of each run

Each format module imports its standard's library when it is imported, so `ledger` starts without them.
"""

from ledger.audit.exports.save import (
    FORMATS,
    SUFFIXES,
    Export,
    build_autolog_exports,
    save_export,
    save_model_signature,
)

__all__ = ["FORMATS", "SUFFIXES", "Export", "build_autolog_exports", "save_export", "save_model_signature"]
