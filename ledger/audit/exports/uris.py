"""The ledger's own URIs in the documents it exports, all under one base (README "Exports" lists them).

A URI here names a kind of thing (a build type, a predicate, a facet schema) and stays the same across releases,
apart from the version at its end; the base is the one place to change them all.
"""

from __future__ import annotations

from ledger.config import VERSION

BASE = "https://sagemaker-ledger.dev"
NAME = "sagemaker-ledger"

BUILD_TYPE = f"{BASE}/slsa/sagemaker-training-job/v1"  # SLSA buildDefinition.buildType
VERDICT_PREDICATE_TYPE = f"{BASE}/attestations/reproduction-verdict/v1"  # the second statement's predicateType
VERIFIER_ID = f"{BASE}/verifiers/reproduce/v1"  # who judged a reproduction: `ledger reproduce`
PRODUCER = f"{BASE}/releases/{VERSION}"  # OpenLineage `producer`: this ledger at this version
MANIFEST_MEDIA_TYPE = "application/vnd.sagemaker-ledger.manifest+json"  # a channel's object listing
URN = f"urn:{NAME}"  # names without a location: an environment by fingerprint, a log entry by hash


def builder_id(backend: str | None) -> str:
    """SLSA runDetails.builder.id: the platform that ran the job, as the ledger launched and observed it."""
    return f"{BASE}/builders/{backend or 'sagemaker'}/v1"


def facet_schema_url(facet: str) -> str:
    """The schemaURL of one of the ledger's OpenLineage custom facets."""
    return f"{BASE}/openlineage/facets/1-0-0/{facet}.json#/$defs/{facet}"
