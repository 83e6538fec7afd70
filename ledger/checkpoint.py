"""Checkpoints of the log: C2SP tlog-checkpoint bodies in C2SP signed-note envelopes, Ed25519 only. Pure.

References (behaviour matched, code written here):
  * c2sp.org/signed-note      (C2SP/C2SP signed-note.md)
  * c2sp.org/tlog-checkpoint  (C2SP/C2SP tlog-checkpoint.md)
  * golang.org/x/mod/sumdb/note (note.go: key string formats, Open/Sign rules)

Byte-level rules implemented
----------------------------
Signed note (whole message):
  * valid UTF-8; no character below U+0020 except "\\n" (so no "\\r", no tab).
  * message = text || "\\n" || signature lines.  The text ends with "\\n" and
    includes that final newline; the separating blank line is NOT part of the
    signed text.  The split is at the LAST "\\n\\n" of the message.
  * signature line = U+2014 (em dash) U+0020 <key name> U+0020 <base64> "\\n";
    every signature line ends with "\\n" (so the message ends with "\\n"); at
    least one signature line; no other lines after the blank line.
  * base64 = standard alphabet with padding (RFC 4648 section 4) of
    4-byte big-endian key ID || signature (Ed25519: 64 bytes -> 92 chars).
  * key name: non-empty, no Unicode White_Space, no "+".
  * key ID (Ed25519) = SHA-256(name || 0x0A || 0x01 || 32-byte pubkey)[:4].
  * verifiers: signatures whose (name, key ID) is unknown are ignored; a known
    key whose signature fails rejects the whole note; at least one known key
    must verify.  Repeated signatures by the same known key are ignored after
    the first; more than 100 signature lines -> malformed (Go's limit; the
    spec requires accepting at least 16).
Checkpoint (the note text):
  * at least three lines, every line non-empty (so no blank line anywhere in
    the body), each ending "\\n":
      origin            non-empty
      tree size         ASCII decimal, no sign, no leading zeros ("0" for empty)
      root hash         standard base64 of the 32-byte root (44 chars, one "=")
      [extension lines] optional, opaque, non-empty (NOT RECOMMENDED)
Key strings (golang.org/x/mod/sumdb/note):
  verifier key  "<name>+<8 hex key ID>+<base64(0x01 || 32-byte public key)>"
  signer key    "PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 || 32-byte seed)>"
  The base64 part may itself contain "+": split only at the first 1 (resp. 3)
  "+" characters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

ALG_ED25519 = 0x01
EM_DASH_PREFIX = "\u2014 "
MAX_SIGNATURES = 100
ROOT_HASH_SIZE = 32
_UINT64_MAX = (1 << 64) - 1

# Unicode White_Space property (what Go's unicode.IsSpace tests).
_WHITE_SPACE = frozenset(
    [chr(c) for c in range(0x09, 0x0E)]
    + ["\u0020", "\u0085", "\u00a0", "\u1680"]
    + [chr(c) for c in range(0x2000, 0x200B)]
    + ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
)
_SIZE_RE = re.compile(r"0|[1-9][0-9]*")
_HEX8_RE = re.compile(r"[0-9a-fA-F]{8}")


class NoteError(ValueError):
    """Malformed note, key or checkpoint."""


class InvalidNoteSignature(NoteError):
    """A signature from a known key did not verify (the note is rejected)."""


class UnverifiedNote(NoteError):
    """The note parsed, but no signature from a known key was present."""


# --- helpers ----------------------------------------------------------------------------------------------------------

def is_valid_name(name: str) -> bool:
    return (isinstance(name, str) and name != "" and "+" not in name
            and not any(ch in _WHITE_SPACE for ch in name)
            and _is_utf8_encodable(name))


def _is_utf8_encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:          # lone surrogates
        return False
    return True


def _b64decode(s: str) -> bytes:
    """Standard base64 with padding; rejects anything outside the alphabet."""
    try:
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as e:
        raise NoteError(f"bad base64: {s!r}") from e


def _b64encode(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def key_id(name: str, alg_and_key: bytes) -> int:
    """uint32 big-endian of SHA-256(name || "\\n" || alg byte || key)[:4]."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + alg_and_key).digest()
    return int.from_bytes(digest[:4], "big")


def _has_bad_controls(text: str) -> bool:
    return any(ord(ch) < 0x20 and ch != "\n" for ch in text)


# --- keys -------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: int
    public_key: bytes            # 32 raw Ed25519 bytes

    @classmethod
    def from_ed25519(cls, name: str, public_key: bytes) -> "Verifier":
        if not is_valid_name(name):
            raise NoteError(f"invalid key name {name!r}")
        if len(public_key) != 32:
            raise NoteError("Ed25519 public key must be 32 bytes")
        return cls(name, key_id(name, bytes([ALG_ED25519]) + public_key), bytes(public_key))

    @classmethod
    def parse(cls, vkey: str) -> "Verifier":
        """Parse "<name>+<hex key ID>+<base64(0x01 || pubkey)>"."""
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise NoteError("malformed verifier key")
        name, hex8, key64 = parts
        if not is_valid_name(name) or not _HEX8_RE.fullmatch(hex8):
            raise NoteError("malformed verifier key")
        raw = _b64decode(key64)
        if len(raw) == 0:
            raise NoteError("malformed verifier key")
        if int(hex8, 16) != key_id(name, raw):
            raise NoteError("verifier key ID does not match name and key")
        if raw[0] != ALG_ED25519:
            raise NoteError(f"unknown verifier algorithm {raw[0]}")
        if len(raw) != 33:
            raise NoteError("malformed verifier key")
        return cls(name, int(hex8, 16), raw[1:])

    def encode(self) -> str:
        return (f"{self.name}+{self.key_id:08x}+"
                f"{_b64encode(bytes([ALG_ED25519]) + self.public_key)}")

    def verify(self, msg: bytes, sig: bytes) -> bool:
        if len(sig) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(sig, msg)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    name: str
    key_id: int
    seed: bytes = field(repr=False)    # 32-byte Ed25519 private seed

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> "Signer":
        if not is_valid_name(name):
            raise NoteError(f"invalid key name {name!r}")
        if len(seed) != 32:
            raise NoteError("Ed25519 seed must be 32 bytes")
        pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
        return cls(name, key_id(name, bytes([ALG_ED25519]) + pub), bytes(seed))

    @classmethod
    def parse(cls, skey: str) -> "Signer":
        """Parse "PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>"."""
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise NoteError("malformed signer key")
        _, _, name, hex8, key64 = parts
        if not is_valid_name(name) or not _HEX8_RE.fullmatch(hex8):
            raise NoteError("malformed signer key")
        raw = _b64decode(key64)
        if len(raw) == 0:
            raise NoteError("malformed signer key")
        if raw[0] != ALG_ED25519:
            raise NoteError(f"unknown signer algorithm {raw[0]}")
        if len(raw) != 33:
            raise NoteError("malformed signer key")
        signer = cls.from_seed(name, raw[1:])
        # The key ID hashes the PUBLIC key: check it after deriving it.
        if signer.key_id != int(hex8, 16):
            raise NoteError("signer key ID does not match name and key")
        return signer

    def encode(self) -> str:
        return (f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+"
                f"{_b64encode(bytes([ALG_ED25519]) + self.seed)}")

    def public_key(self) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes_raw()

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key_id, self.public_key())

    def sign(self, msg: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(msg)


def generate_key(name: str) -> tuple[str, str]:
    """New Ed25519 key pair as (signer key string, verifier key string)."""
    priv = Ed25519PrivateKey.generate()
    signer = Signer.from_seed(name, priv.private_bytes_raw())
    return signer.encode(), signer.verifier().encode()


# --- signed notes -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Signature:
    name: str
    key_id: int
    b64: str          # base64(key ID || signature), as it appeared


@dataclass(frozen=True)
class Note:
    text: str
    sigs: tuple[Signature, ...]              # verified
    unverified_sigs: tuple[Signature, ...]   # from unknown keys


def _check_text(text: str) -> None:
    if not isinstance(text, str) or not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if _has_bad_controls(text) or not _is_utf8_encodable(text):
        raise NoteError("note text has control characters or is not UTF-8")


def sign_note(text: str, signers: Sequence[Signer],
              existing: Iterable[Signature] = ()) -> bytes:
    """text || "\\n" || existing signature lines || new signature lines.

    An existing signature by the same (name, key ID) as a signer is dropped.
    """
    _check_text(text)
    if not signers and not existing:
        raise NoteError("a note needs at least one signature")
    msg = text.encode("utf-8")
    new_ids = {(s.name, s.key_id) for s in signers}
    lines: list[str] = []
    for sig in existing:
        if (sig.name, sig.key_id) in new_ids:
            continue
        raw = _b64decode(sig.b64)
        if not is_valid_name(sig.name) or len(raw) < 5 or int.from_bytes(raw[:4], "big") != sig.key_id:
            raise NoteError("malformed existing signature")
        lines.append(f"{EM_DASH_PREFIX}{sig.name} {sig.b64}\n")
    for s in signers:
        if not is_valid_name(s.name):
            raise NoteError(f"invalid signer name {s.name!r}")
        blob = s.key_id.to_bytes(4, "big") + s.sign(msg)
        lines.append(f"{EM_DASH_PREFIX}{s.name} {_b64encode(blob)}\n")
    return msg + b"\n" + "".join(lines).encode("utf-8")


def open_note(msg: bytes, verifiers: Iterable[Verifier]) -> Note:
    """Parse and verify a signed note.  Raises NoteError (or a subclass)."""
    known: dict[tuple[str, int], Verifier] = {}
    for v in verifiers:
        k = (v.name, v.key_id)
        if k in known and known[k] != v:
            raise NoteError(f"ambiguous key {v.name}+{v.key_id:08x}")
        known[k] = v

    try:
        s = bytes(msg).decode("utf-8")
    except UnicodeDecodeError as e:
        raise NoteError("malformed note: not UTF-8") from e
    if _has_bad_controls(s):
        raise NoteError("malformed note: control character")

    split = msg.rfind(b"\n\n")
    if split < 0:
        raise NoteError("malformed note: no blank line before signatures")
    text_b, sigs_b = msg[:split + 1], msg[split + 2:]
    if not sigs_b or not sigs_b.endswith(b"\n"):
        raise NoteError("malformed note: signature block must end with a newline")

    verified: list[Signature] = []
    unverified: list[Signature] = []
    seen_known: set[tuple[str, int]] = set()
    seen_unknown: set[str] = set()
    lines = sigs_b[:-1].decode("utf-8").split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("malformed note: too many signatures")
    for line in lines:
        if not line.startswith(EM_DASH_PREFIX):
            raise NoteError("malformed note: bad signature line")
        name, sp, b64 = line[len(EM_DASH_PREFIX):].partition(" ")
        if not sp or not b64 or not is_valid_name(name):
            raise NoteError("malformed note: bad signature line")
        raw = _b64decode(b64)
        if len(raw) < 5:
            raise NoteError("malformed note: short signature")
        kid, sig = int.from_bytes(raw[:4], "big"), raw[4:]
        v = known.get((name, kid))
        if v is None:
            if line not in seen_unknown:
                seen_unknown.add(line)
                unverified.append(Signature(name, kid, b64))
            continue
        if (name, kid) in seen_known:
            continue
        seen_known.add((name, kid))
        if not v.verify(text_b, sig):
            raise InvalidNoteSignature(f"invalid signature for key {name}+{kid:08x}")
        verified.append(Signature(name, kid, b64))

    if not verified:
        raise UnverifiedNote("note has no verifiable signatures")
    return Note(text_b.decode("utf-8"), tuple(verified), tuple(unverified))


# --- checkpoints ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


def format_checkpoint(origin: str, size: int, root: bytes,
                      extensions: Sequence[str] = ()) -> str:
    """The checkpoint body (note text), every line ending in "\\n"."""
    for label, line in [("origin", origin), *[("extension", e) for e in extensions]]:
        if not isinstance(line, str) or line == "" or "\n" in line:
            raise NoteError(f"{label} line must be non-empty and single-line")
        if _has_bad_controls(line) or not _is_utf8_encodable(line):
            raise NoteError(f"{label} line has control characters")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= _UINT64_MAX:
        raise NoteError("tree size must be an int in [0, 2**64)")
    if len(root) != ROOT_HASH_SIZE:
        raise NoteError("root hash must be 32 bytes")
    lines = [origin, str(size), _b64encode(bytes(root)), *extensions]
    return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """Strictly parse a checkpoint body (the verified note text)."""
    if not text.endswith("\n"):
        raise NoteError("checkpoint must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("checkpoint needs origin, size and root hash lines")
    if any(line == "" for line in lines):
        raise NoteError("checkpoint lines must be non-empty")
    origin, size_s, root_s, *ext = lines
    if not _SIZE_RE.fullmatch(size_s):
        raise NoteError(f"bad tree size {size_s!r}")
    size = int(size_s)
    if size > _UINT64_MAX:
        raise NoteError("tree size exceeds uint64")
    root = _b64decode(root_s)
    if len(root) != ROOT_HASH_SIZE or _b64encode(root) != root_s:
        raise NoteError("root hash must be the canonical base64 of 32 bytes")
    return Checkpoint(origin, size, root, tuple(ext))


def sign_checkpoint(cp: Checkpoint, signers: Sequence[Signer]) -> bytes:
    return sign_note(format_checkpoint(cp.origin, cp.size, cp.root, cp.extensions), signers)


def open_checkpoint(msg: bytes, verifiers: Iterable[Verifier],
                    origin: str | None = None) -> tuple[Checkpoint, Note]:
    """Verify the note, then parse its text; check the origin if given.

    The text is parsed only AFTER a known signature verified (signed-note:
    the text MUST be ignored unless signed by a trusted key).
    """
    note = open_note(msg, verifiers)
    cp = parse_checkpoint(note.text)
    if origin is not None and cp.origin != origin:
        raise NoteError(f"checkpoint origin {cp.origin!r} != expected {origin!r}")
    return cp, note
