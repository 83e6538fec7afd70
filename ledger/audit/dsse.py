"""DSSE envelopes (the Dead Simple Signing Envelope, secure-systems-lab/dsse, protocol v1) signed with the Ed25519
keys of `ledger audit keygen`: how `ledger export --format slsa --sign KEY` signs its in-toto statements.

The signature covers PAE(payloadType, payload), the pre-authentication encoding, so that neither the type nor
the bytes can be changed without the signature failing. `keyid` is the signing key's id (signing.key_id): a hint
that names the key, never a reason to trust one.

A bundle of envelopes is JSON Lines, one envelope a line (the in-toto attestation bundle); a bundle of one is also
a plain envelope file.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable

from ledger.audit.signing import key_id
from ledger.errors import TamperDetected, UsageError

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def build_pae(payload_type: str, payload: bytes) -> bytes:
    """Pure: "DSSEv1" SP LEN(type) SP type SP LEN(payload) SP payload, lengths in bytes as ASCII decimal."""
    kind = payload_type.encode("utf-8")
    return b" ".join([b"DSSEv1", str(len(kind)).encode(), kind, str(len(payload)).encode(), payload])


def build_envelope(payload: bytes, private_key=None, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> dict:
    """The envelope of `payload`, with one Ed25519 signature when a key is given (else none: an unsigned
    envelope, which a verifier rejects, as it should)."""
    signatures = []
    if private_key is not None:
        signature = private_key.sign(build_pae(payload_type, payload))
        signatures.append({"keyid": key_id(private_key.public_key()),
                           "sig": base64.b64encode(signature).decode("ascii")})
    return {"payloadType": payload_type, "payload": base64.b64encode(payload).decode("ascii"),
            "signatures": signatures}


def build_bundle(envelopes: Iterable[dict]) -> bytes:
    """Pure: JSON Lines, one envelope a line."""
    return b"".join(json.dumps(e, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n" for e in envelopes)


def _b64decode(text: str) -> bytes:
    """DSSE lets a signer use standard or URL-safe base64, with or without padding: a verifier takes both."""
    text = text.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def verify_envelope(envelope: dict, public_key, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> bytes:
    """The payload of an envelope that `public_key` signed, or TamperDetected naming what failed."""
    from cryptography.exceptions import InvalidSignature

    try:
        payload = _b64decode(envelope["payload"])
        signatures = [_b64decode(s["sig"]) for s in envelope["signatures"]]
        signed_type = envelope["payloadType"]
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"not a DSSE envelope ({type(error).__name__}: {error})",
                         "give a file written by ledger export --format slsa") from None
    if not signatures:
        raise TamperDetected("the envelope is not signed", "export it again with --sign KEY")
    for signature in signatures:
        try:
            public_key.verify(signature, build_pae(signed_type, payload))
        except InvalidSignature:
            continue
        if signed_type != payload_type:
            raise TamperDetected(f"the envelope holds {signed_type!r}, not {payload_type!r}", "")
        return payload
    raise TamperDetected(f"no signature in the envelope is key {key_id(public_key)}'s over its payload: the payload, "
                         "its type or the signature was changed, or another key signed it",
                         "do not trust this statement; ask its author for the original")


def is_bundle(data: bytes) -> bool:
    """Whether a file's first line is a DSSE envelope (what `ledger audit verify` checks as a bundle)."""
    try:
        first = json.loads(data.lstrip().split(b"\n", 1)[0])
    except ValueError:
        return False
    return isinstance(first, dict) and "payloadType" in first and "signatures" in first


def verify_bundle(data: bytes, public_key, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> list[dict]:
    """The statements of a bundle every envelope of which `public_key` signed; TamperDetected naming the first
    envelope (by line) that fails."""
    statements = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            statements.append(json.loads(verify_envelope(json.loads(line), public_key, payload_type)))
        except ValueError:
            raise TamperDetected(f"line {number} of the bundle is not a JSON envelope", "") from None
        except TamperDetected as error:
            raise TamperDetected(f"envelope {number}: {error.message}", error.hint) from None
    if not statements:
        raise UsageError("the bundle holds no envelope", "give a file written by ledger export --format slsa")
    return statements
