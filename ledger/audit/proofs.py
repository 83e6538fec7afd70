"""Proofs a reviewer checks without the database: checkpoints of the log, inclusion and consistency proofs.

    build_checkpoint         the C2SP tlog-checkpoint of the log (origin, size, root), signed with an Ed25519 key
    build_run_proof          every entry of a run with its RFC 9162 inclusion proof against one checkpoint
    build_consistency_proof  an RFC 9162 consistency proof that the log of N entries extends the log of M

The origin of a ledger's checkpoints is `sagemaker-ledger/` and the first 32 hex digits of its first entry's hash:
stable for the life of the log, and different for every log. A checkpoint is signed, as a C2SP signed note, with
the Ed25519 keys `ledger audit keygen` makes; the key's name in the note is the origin.
"""

from __future__ import annotations

from typing import Any

from ledger import checkpoint
from ledger.audit.signing import load_private_key
from ledger.errors import NotFound, UsageError
from ledger.store.entries import entries_by_seq

ORIGIN_PREFIX = "sagemaker-ledger/"


def plan_origin(genesis_hash: str) -> str:
    """Pure: the checkpoint origin of the log whose first entry has this hash."""
    return ORIGIN_PREFIX + genesis_hash[:32]


def origin_of(book) -> str:
    first = entries_by_seq(book, [1]).get(1)
    if first is None:
        raise NotFound(f"the ledger {book.where} is empty: it has no tree to sign", "record a run first")
    return plan_origin(first["entry_hash"])


def load_signer(key_path: str, origin: str) -> checkpoint.Signer:
    """The note signer for `origin` from an Ed25519 private key file (PEM or OpenSSH, from ledger audit keygen)."""
    return checkpoint.Signer.from_seed(origin, load_private_key(key_path).private_bytes_raw())


def build_checkpoint(book, size: int | None = None, key_path: str | None = None) -> dict[str, Any]:
    """{origin, tree_size, root_hash, checkpoint (the note text: signed when a key is given), verifier_key}."""
    origin = origin_of(book)
    size, root = book.tree_root(size)
    body = checkpoint.format_checkpoint(origin, size, root)
    signer = load_signer(key_path, origin) if key_path else None
    text = checkpoint.sign_note(body, [signer]).decode("utf-8") if signer else body
    return {"origin": origin, "tree_size": size, "root_hash": root.hex(), "checkpoint": text,
            "verifier_key": signer.verifier().encode() if signer else None}


def build_run_proof(book, run_ref: str, key_path: str | None = None) -> dict[str, Any]:
    """Every entry of the run, as stored, each with its inclusion proof in the tree of the whole log now."""
    run_id = book.resolve(run_ref)
    proven = build_checkpoint(book, key_path=key_path)
    size = proven["tree_size"]
    run_entries = [entry for entry in book.entries(run_id) if entry.seq <= size]  # not one appended since
    _, paths = book.inclusion_proofs([entry.seq for entry in run_entries], size)
    items = [{"seq": entry.seq, "leaf_index": entry.seq - 1, "body": entry.body,
              "audit_path": [node.hex() for node in paths[entry.seq]]} for entry in run_entries]
    return {"run_id": run_id, "tree_size": size, "root_hash": proven["root_hash"], "checkpoint": proven["checkpoint"],
            "verifier_key": proven["verifier_key"], "entries": items}


def build_consistency_proof(book, first: int, second: int | None = None) -> dict[str, Any]:
    second, path = book.consistency_proof(first, second)
    return {"first": first, "second": second, "first_hash": book.tree_root(first)[1].hex(),
            "second_hash": book.tree_root(second)[1].hex(), "path": [node.hex() for node in path]}


def parse_checkpoint_text(text: str, verifier_key: str | None = None) -> checkpoint.Checkpoint:
    """Pure: the checkpoint in a note text (a bare checkpoint, or a signed note). With a verifier key the note must
    carry a valid signature of that key; without one, its signatures are not checked (the caller says so)."""
    data = text.encode("utf-8")
    try:
        if verifier_key:
            parsed, _ = checkpoint.open_checkpoint(data, [checkpoint.Verifier.parse(verifier_key)])
            return parsed
        split = data.rfind(b"\n\n")
        return checkpoint.parse_checkpoint((data[:split + 1] if split >= 0 else data).decode("utf-8"))
    except checkpoint.NoteError as error:
        raise UsageError(f"the checkpoint does not verify: {error}", "check the verifier key and the checkpoint "
                         "text; a changed byte makes the signature fail") from None
