"""The Merkle tree over the log (RFC 9162, section 2.1), kept beside it in `tree_nodes`.

Leaves are the entries in seq order (leaf index seq - 1), a leaf's data is the body exactly as stored, and a row
(level, idx, hash) is a complete subtree. Appending writes the rows the new leaves complete (about two an entry),
in the transaction of the entries themselves; roots, inclusion proofs and consistency proofs, of any tree size the
log has had, are folds of at most a few dozen rows read in one query (ledger.merkle says which).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text

from ledger import merkle
from ledger.errors import NotFound, UsageError
from ledger.store.engine import insert_many

NODE_COLUMNS = ("level", "idx", "hash")


def read_nodes(conn, nodes: Iterable[merkle.Node]) -> dict[merkle.Node, bytes]:
    """{(level, idx): hash} of these stored nodes, in one query that looks each up by its key (a join with a
    VALUES list: SQLite scans the table for a row-value IN list)."""
    wanted = list(dict.fromkeys(nodes))
    if not wanted:
        return {}
    values = ", ".join(f"(:l{n}, :i{n})" for n in range(len(wanted)))
    binds = {**{f"l{n}": level for n, (level, _) in enumerate(wanted)},
             **{f"i{n}": idx for n, (_, idx) in enumerate(wanted)}}
    rows = conn.execute(text(f"WITH want(l, i) AS (VALUES {values}) SELECT t.level, t.idx, t.hash FROM want "
                             "JOIN tree_nodes t ON t.level = want.l AND t.idx = want.i"), binds)
    return {(level, idx): bytes(digest) for level, idx, digest in rows}


def _getter(found: dict[merkle.Node, bytes], size: int):
    def get(level: int, idx: int) -> bytes:
        try:
            return found[(level, idx)]
        except KeyError:
            raise NotFound(f"the Merkle tree has no node ({level}, {idx}) for {size} entries",
                           "the tree is damaged or was never built: run `ledger verify --full`") from None
    return get


def append_leaves(conn, size: int, bodies: Iterable[str]) -> None:
    """Store the nodes that the entries with these bodies complete, appended after `size` leaves."""
    border = read_nodes(conn, merkle.root_nodes(size))
    tree = merkle.CompactRange.from_store(size, _getter(border, size))
    rows = [row for body in bodies for row in tree.append(merkle.entry_leaf_hash(body))]
    insert_many(conn, "tree_nodes", NODE_COLUMNS, [dict(zip(NODE_COLUMNS, row)) for row in rows])


def root(conn, size: int) -> bytes:
    """The root (RFC 9162 MTH) of the tree of the first `size` entries."""
    found = read_nodes(conn, merkle.root_nodes(size))
    return merkle.root_from(_getter(found, size), size)


def _proof(conn, groups: list[list[merkle.Node]], size: int) -> list[bytes]:
    found = read_nodes(conn, merkle.needed_nodes(groups))
    return merkle.fold_groups(groups, _getter(found, size))


def inclusion_proof(conn, seq: int, size: int) -> list[bytes]:
    """RFC 9162 2.1.3 inclusion proof of entry `seq` (leaf seq - 1) in the tree of the first `size` entries."""
    if not 1 <= seq <= size:
        raise UsageError(f"entry {seq} is not in a tree of {size} entries", "give a seq from 1 to the tree size")
    return _proof(conn, merkle.inclusion_proof_nodes(seq - 1, size), size)


def inclusion_proofs(conn, seqs: Iterable[int], size: int, batch: int = 200) -> dict[int, list[bytes]]:
    """{seq: inclusion proof} for many entries in the tree of the first `size`, a batch of entries a query."""
    proofs: dict[int, list[bytes]] = {}
    wanted = sorted(set(seqs))
    for start in range(0, len(wanted), batch):
        groups = {seq: merkle.inclusion_proof_nodes(seq - 1, size) for seq in wanted[start:start + batch]
                  if 1 <= seq <= size}
        found = read_nodes(conn, [node for g in groups.values() for node in merkle.needed_nodes(g)])
        proofs.update({seq: merkle.fold_groups(g, _getter(found, size)) for seq, g in groups.items()})
    return proofs


def consistency_proof(conn, first: int, second: int) -> list[bytes]:
    """RFC 9162 2.1.4 consistency proof that the tree of `second` entries extends the tree of `first`."""
    if not 0 < first <= second:
        raise UsageError(f"no consistency proof from {first} to {second} entries",
                         "give 0 < M <= N, N at most the log's size")
    return _proof(conn, merkle.consistency_proof_nodes(first, second), second)
