"""Ed25519 signatures of audit reports (`ledger audit --sign KEYFILE`, `ledger audit verify FILE --key PUBKEY`).

What is signed is a small statement: the report's digest (sha256 of its canonical JSON, printed in every form of
the report), the sha256 of the report file's bytes, the file's name and format, and when it was signed. The
signature and the statement go into a sidecar file, `REPORT.sig` (JSON), so that every format (HTML, PDF,
Markdown, JSON) is signed the same way and the report file itself stays byte for byte what `ledger audit` wrote.
Changing one byte of the report changes its sha256, and the signature no longer covers it.

Keys: PEM (PKCS#8 private, SubjectPublicKeyInfo public) or OpenSSH (`ssh-keygen -t ed25519`) files.
`ledger audit keygen KEYFILE` writes a new pair, KEYFILE (private, mode 0600) and KEYFILE.pub; with
`--algorithm ecdsa-p256`, an elliptic-curve pair for OpenSSF model signing (`ledger sign-model`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ledger.errors import NotFound, TamperDetected, UsageError
from ledger.record import canonical_bytes, utc_now

SIGNATURE_KIND = "ledger.audit-signature"
ALGORITHM = "Ed25519"


# --- keys -----------------------------------------------------------------------------------------------------


KEY_ALGORITHMS = ("ed25519", "ecdsa-p256")  # reports and SLSA exports; OpenSSF model signing (ledger sign-model)


def generate_keypair(path: str | Path, overwrite: bool = False, algorithm: str = "ed25519") -> tuple[Path, Path]:
    """Write a new key pair: PATH (private, PEM PKCS#8, mode 0600) and PATH.pub (public, PEM). Ed25519 signs
    reports and exports; OpenSSF model signing takes an elliptic-curve key (ecdsa-p256) instead."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if algorithm not in KEY_ALGORITHMS:
        raise UsageError(f"unknown key algorithm {algorithm!r}", f"use one of: {', '.join(KEY_ALGORITHMS)}")
    private_path = Path(path)
    public_path = private_path.with_name(private_path.name + ".pub")
    for existing in (private_path, public_path):
        if existing.exists() and not overwrite:
            raise UsageError(f"{existing} already exists", "choose another path; a key is never overwritten")
    key = Ed25519PrivateKey.generate() if algorithm == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def read_file(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise NotFound(f"cannot read the {what} {path}: {err.strerror}",
                       "make a key pair with: ledger audit keygen KEYFILE") from None


def load_private_key(path: str | Path):
    """An Ed25519 private key from a PEM or OpenSSH file (unencrypted)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = read_file(path, "private key")
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise UsageError(f"the private key {path} is encrypted", "give an unencrypted Ed25519 key") from None
    except ValueError as err:
        raise UsageError(f"{path} is not a private key ({err})",
                         "give an Ed25519 private key in PEM or OpenSSH form (ledger audit keygen KEYFILE)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is a {type(key).__name__.replace('_', '')}, not an Ed25519 key",
                         "make an Ed25519 key: ledger audit keygen KEYFILE (or ssh-keygen -t ed25519)")
    return key


def load_public_key(path: str | Path):
    """An Ed25519 public key from a PEM file, an OpenSSH `ssh-ed25519 …` line, or the private key itself."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = read_file(path, "public key")
    try:
        if data.lstrip().startswith(b"ssh-"):
            key = serialization.load_ssh_public_key(data.strip())
        elif b"PRIVATE KEY" in data:
            key = load_private_key(path).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as err:
        raise UsageError(f"{path} is not a public key ({err})",
                         "give the Ed25519 public key in PEM or OpenSSH form (KEYFILE.pub)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{path} is not an Ed25519 public key", "give the .pub file made with the signing key")
    return key


def public_key_raw(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key) -> str:
    """A short name for a public key: the first 16 hex digits of the sha256 of its raw bytes (an Ed25519 key's 32
    bytes; another key's SubjectPublicKeyInfo DER)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = public_key_raw(public_key) if isinstance(public_key, Ed25519PublicKey) else public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(raw).hexdigest()[:16]


# --- pure: the statement --------------------------------------------------------------------------------------


def build_statement(report_digest: str | None, file_name: str, file_sha256: str, fmt: str | None,
                    signed_at: str) -> dict:
    """Pure: what is signed. Its canonical JSON bytes are the message."""
    return {
        "kind": SIGNATURE_KIND,
        "algorithm": ALGORITHM,
        "report_digest": report_digest,
        "file": file_name,
        "file_sha256": file_sha256,
        "format": fmt,
        "signed_at": signed_at,
    }


def signature_path_for(report_path: str | Path) -> Path:
    path = Path(report_path)
    return path.with_name(path.name + ".sig")


# --- signing and verifying ------------------------------------------------------------------------------------


def sign_report_file(report_path: str | Path, key_path: str | Path, report_digest: str | None,
                     fmt: str | None = None, signed_at: str | None = None) -> Path:
    """Sign the report file at `report_path` with the Ed25519 key at `key_path`; writes REPORT.sig."""
    key = load_private_key(key_path)
    path = Path(report_path)
    data = read_file(path, "report")
    statement = build_statement(report_digest, path.name, hashlib.sha256(data).hexdigest(), fmt,
                                signed_at or utc_now())
    signature = key.sign(canonical_bytes(statement))
    public = key.public_key()
    document = {
        "statement": statement,
        "signature": base64.b64encode(signature).decode("ascii"),
        "public_key": base64.b64encode(public_key_raw(public)).decode("ascii"),
        "key_id": key_id(public),
    }
    out = signature_path_for(path)
    out.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


@dataclass
class SignatureCheck:
    ok: bool
    report: str
    signature_file: str
    key_id: str | None = None
    signed_by_key_id: str | None = None
    statement: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "report": self.report, "signature_file": self.signature_file,
                "key_id": self.key_id, "signed_by_key_id": self.signed_by_key_id, "statement": self.statement,
                "problems": self.problems}


def check_report_signature(report_path: str | Path, public_key_path: str | Path,
                           signature_path: str | Path | None = None) -> SignatureCheck:
    """Check REPORT against REPORT.sig with the given public key. Never raises for a bad signature: the
    result says what failed (the caller decides the exit code)."""
    from cryptography.exceptions import InvalidSignature

    path = Path(report_path)
    sig_path = Path(signature_path) if signature_path else signature_path_for(path)
    public = load_public_key(public_key_path)
    check = SignatureCheck(ok=False, report=str(path), signature_file=str(sig_path), key_id=key_id(public))
    data = read_file(path, "report")
    try:
        document = json.loads(read_file(sig_path, "signature file"))
        statement = document["statement"]
        signature = base64.b64decode(document["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as err:
        check.problems.append(f"{sig_path} is not a ledger signature file ({type(err).__name__}: {err})")
        return check
    check.statement = statement
    check.signed_by_key_id = document.get("key_id")
    try:
        public.verify(signature, canonical_bytes(statement))
    except InvalidSignature:
        if check.signed_by_key_id and check.signed_by_key_id != check.key_id:
            check.problems.append(f"the signature was made with key {check.signed_by_key_id}, not with the key "
                                  f"given ({check.key_id})")
        else:
            check.problems.append("the signature does not match its statement: the signature file was altered")
        return check
    actual = hashlib.sha256(data).hexdigest()
    if actual != statement.get("file_sha256"):
        check.problems.append(f"{path.name} changed after it was signed: its sha256 is {actual[:16]}…, the signed "
                              f"sha256 is {str(statement.get('file_sha256'))[:16]}…")
    embedded = _embedded_digest(data)
    if embedded and statement.get("report_digest") and embedded != statement["report_digest"]:
        check.problems.append(f"the report's digest {embedded[:16]}… is not the signed digest "
                              f"{statement['report_digest'][:16]}…")
    check.ok = not check.problems
    return check


def _embedded_digest(data: bytes) -> str | None:
    """The report digest a JSON (recomputed) or HTML/Markdown (as printed) report carries, where it can be read."""
    import re

    text = data.decode("utf-8", errors="replace")
    if text.lstrip().startswith("{"):
        try:
            from ledger.audit.report import report_digest

            return report_digest(json.loads(text))
        except (ValueError, AttributeError):
            return None
    match = re.search(r'"report_digest": ?"([0-9a-f]{64})"', text)
    return match.group(1) if match else None


def require_valid_signature(check: SignatureCheck) -> SignatureCheck:
    """Raise TamperDetected (exit 3) naming what failed, or return the check."""
    if not check.ok:
        raise TamperDetected(f"signature check FAILED for {check.report}: {check.problems[0]}",
                             "do not trust this report; ask its author for the original file and signature")
    return check

