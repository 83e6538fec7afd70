"""The `blobs` table: content-addressed bytes that entries name by sha256 (git diffs, package lists, metric series,
large manifests, kept code files). Stored once however many entries name them; compressed with zlib where that
saves a tenth or more (`encoding`); a blob's sha256 and size are always those of its bytes, never of the stored
form, so whoever re-hashes it checks what the entry committed to."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from sqlalchemy import text

from ledger.store.engine import chunks, in_clause

IDENTITY, ZLIB = "identity", "zlib"


def encode_blob(data: bytes) -> tuple[bytes, str]:
    """Pure: (stored bytes, encoding) of a blob: zlib when that is at most nine tenths of the size."""
    packed = zlib.compress(data, 6)
    return (packed, ZLIB) if len(packed) <= len(data) * 0.9 else (data, IDENTITY)


def decode_blob(stored: bytes, encoding: str | None) -> bytes:
    """Pure: a blob's bytes from its stored form."""
    if encoding == ZLIB:
        return zlib.decompress(stored)
    if encoding in (None, IDENTITY):
        return bytes(stored)
    raise ValueError(f"unknown blob encoding {encoding!r}")


def save_blobs(conn, blobs: dict[str, bytes]) -> None:
    """Insert the blobs not stored yet ({sha256: bytes}), in the caller's transaction."""
    if not blobs:
        return
    stored = set()
    for chunk in chunks(sorted(blobs)):
        marks, binds = in_clause("h", chunk)
        stored.update(row[0] for row in conn.execute(text(f"SELECT sha256 FROM blobs WHERE sha256 IN ({marks})"),
                                                     binds))
    rows = []
    for digest in sorted(set(blobs) - stored):
        data, encoding = encode_blob(blobs[digest])
        rows.append({"h": digest, "n": len(blobs[digest]), "d": data, "e": encoding})
    if rows:
        conn.execute(text("INSERT INTO blobs (sha256, size, data, encoding) VALUES (:h, :n, :d, :e)"), rows)


def read_blobs(conn, digests: Iterable[str]) -> dict[str, bytes]:
    """{sha256: bytes} of the stored blobs among `digests` (missing ones are left out)."""
    found: dict[str, bytes] = {}
    for chunk in chunks(sorted(set(digests))):
        marks, binds = in_clause("h", chunk)
        for digest, data, encoding in conn.execute(
                text(f"SELECT sha256, data, encoding FROM blobs WHERE sha256 IN ({marks})"), binds):
            found[digest] = decode_blob(bytes(data), encoding)
    return found
