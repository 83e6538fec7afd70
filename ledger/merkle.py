"""RFC 9162 (Certificate Transparency 2.0, section 2.1) Merkle tree over the ledger's entries. Pure: hashlib only.

Tree
----
Leaves in seq order, leaf index = seq - 1, leaf data = the entry body's UTF-8
bytes exactly as stored.

    leaf hash      = SHA-256(0x00 || data)
    interior hash  = SHA-256(0x01 || left || right)
    MTH({})        = SHA-256("")            (the empty tree)

Storage model ("perfect nodes")
-------------------------------
A stored node (level, idx) is the hash of the *complete* subtree over leaves
[idx * 2**level, (idx + 1) * 2**level).  It exists as soon as the tree has
(idx + 1) * 2**level leaves and never changes afterwards, so the table is
append-only, like the log.  Appending leaf i stores (0, i) plus one node per
trailing 1-bit of i (2 rows per leaf amortised, 2n - popcount(n) rows for n
leaves).  Nothing size-dependent ("ephemeral" right-edge nodes) is stored, so
roots and proofs can be produced for ANY historical tree size from the same
rows.

Every hash the RFC needs (a root, or an element of an inclusion or
consistency proof) is MTH(D[a:b]) for a range whose start is aligned
(a is a multiple of the largest power of two <= b - a).  Such an MTH is the
right fold of at most log2(n) stored perfect nodes (`subtree_ranges`).  The
`*_nodes` functions return WHICH stored nodes are needed, grouped per
result hash, so a caller can fetch all of them in one SQL query and then call
`fold_groups`.

Getter convention: `get(level, idx) -> bytes` returns the stored 32-byte
hash of perfect node (level, idx) and raises KeyError if it is absent.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable, Iterator, Mapping, Sequence

HASH_SIZE = 32

Node = tuple[int, int]            # (level, idx)
Row = tuple[int, int, bytes]      # (level, idx, hash)
Getter = Callable[[int, int], bytes]

_EMPTY_ROOT = hashlib.sha256(b"").digest()


# --- hashing primitives (RFC 9162 2.1.1) ------------------------------------------------------------------------------

def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def empty_root() -> bytes:
    """MTH of the empty tree: SHA-256 of the empty string."""
    return _EMPTY_ROOT


def entry_leaf_hash(body: str) -> bytes:
    """Leaf hash of a ledger entry: its body text encoded as UTF-8 (strict).

    The body must be hashed exactly as stored; never re-serialise the JSON.
    """
    return leaf_hash(body.encode("utf-8"))


# --- small integer helpers --------------------------------------------------------------------------------------------

def _check_size(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def _largest_pow2_below(n: int) -> int:
    """k = the largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# --- appending --------------------------------------------------------------------------------------------------------

def nodes_completed_by(index: int, leaf: bytes, get: Getter) -> list[Row]:
    """Rows to store when the leaf with hash `leaf` is appended at `index`.

    `leaf` is the LEAF HASH (leaf_hash(data)), not the data.  Returns
    [(0, index, leaf), (1, index >> 1, h1), ...]: the leaf row plus one row per
    level the new leaf completes.  Needs exactly the left siblings
    get(level, (index >> level) - 1) for each trailing 1-bit of index, which
    are already stored when leaves 0..index-1 are.
    """
    _check_size("index", index)
    if len(leaf) != HASH_SIZE:
        raise ValueError("leaf must be a 32-byte leaf hash")
    rows: list[Row] = [(0, index, leaf)]
    h, level, i = leaf, 0, index
    while i & 1:
        h = node_hash(get(level, i - 1), h)
        i >>= 1
        level += 1
        rows.append((level, i, h))
    return rows


def nodes_completed_by_batch(start: int, leaves: Iterable[bytes],
                             get: Getter) -> list[Row]:
    """Rows to store when `leaves` (leaf hashes) are appended at start, start+1, ...

    Reads only the popcount(start) <= log2(start)+1 stored nodes of the
    current right border (one small SQL query), then works in memory.
    """
    cr = CompactRange.from_store(start, get)
    rows: list[Row] = []
    for lh in leaves:
        rows.extend(cr.append(lh))
    return rows


# --- decomposition into stored perfect nodes --------------------------------------------------------------------------

def subtree_ranges(start: int, end: int) -> list[Node]:
    """The stored perfect nodes whose right fold is MTH(D[start:end]).

    Left to right, strictly decreasing levels (one per 1-bit of end-start).
    Requires start to be aligned: a multiple of the largest power of two
    <= end - start (always true for start = 0, and for every range RFC 9162's
    recursive definitions hash).  Empty list for start == end.
    """
    _check_size("start", start)
    _check_size("end", end)
    if end < start:
        raise ValueError(f"end {end} < start {start}")
    length = end - start
    out: list[Node] = []
    if length == 0:
        return out
    top = length.bit_length() - 1
    if start & ((1 << top) - 1):
        raise ValueError(f"[{start}, {end}) is not an aligned range")
    pos = start
    for level in range(top, -1, -1):
        if (length >> level) & 1:
            out.append((level, pos >> level))
            pos += 1 << level
    return out


def fold(hashes: Sequence[bytes]) -> bytes:
    """Right fold: H(h0, H(h1, ... H(h[-2], h[-1]))).  Empty -> MTH({})."""
    if not hashes:
        return _EMPTY_ROOT
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def root_nodes(size: int) -> list[Node]:
    """Stored nodes needed for the root of the tree of `size` leaves."""
    return subtree_ranges(0, size)


def root_from(get: Getter, size: int) -> bytes:
    """MTH(D[0:size]) from stored perfect nodes (<= log2(size)+1 reads)."""
    return fold([get(l, i) for l, i in root_nodes(size)])


# --- inclusion proofs (RFC 9162 2.1.3.1) ------------------------------------------------------------------------------

def inclusion_proof_nodes(index: int, size: int) -> list[list[Node]]:
    """Stored nodes for PATH(index, D[0:size]), one group per proof element.

    Groups are in RFC order (the leaf's sibling first, the root's child last);
    each group's right fold is one proof element.  Total nodes <= 2*log2(size).
    """
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise ValueError(f"index {index} out of range for tree size {size}")
    groups: list[list[Node]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _largest_pow2_below(hi - lo)
        if index < lo + k:                      # PATH(m, D[0:k]) : MTH(D[k:n])
            groups.append(subtree_ranges(lo + k, hi))
            hi = lo + k
        else:                                   # PATH(m-k, D[k:n]) : MTH(D[0:k])
            level = k.bit_length() - 1
            groups.append([(level, lo >> level)])
            lo += k
    groups.reverse()
    return groups


# --- consistency proofs (RFC 9162 2.1.4.1) ----------------------------------------------------------------------------

def consistency_proof_nodes(m: int, n: int) -> list[list[Node]]:
    """Stored nodes for PROOF(m, D[0:n]), one group per proof element.

    m == n -> [] (RFC: SUBPROOF(m, D[m], true) = {}).
    m == 0 -> [] by this module's definition (the RFC defines PROOF only for
    0 < m): every tree extends the empty tree; see verify_consistency.
    """
    _check_size("m", m)
    _check_size("n", n)
    if m > n:
        raise ValueError(f"m {m} > n {n}")
    if m == 0:
        return []
    groups: list[list[Node]] = []
    lo, hi, b = 0, n, True
    while True:
        if m == hi:                             # SUBPROOF(m, D[m], b)
            if not b:
                groups.append(subtree_ranges(lo, hi))
            break
        k = _largest_pow2_below(hi - lo)
        if m <= lo + k:                         # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            groups.append(subtree_ranges(lo + k, hi))
            hi = lo + k
        else:                                   # SUBPROOF(m-k, D[k:n], false) : MTH(D[0:k])
            level = k.bit_length() - 1
            groups.append([(level, lo >> level)])
            lo += k
            b = False
    groups.reverse()
    return groups


# --- turning node groups into hashes ----------------------------------------------------------------------------------

def needed_nodes(groups: Iterable[Iterable[Node]]) -> list[Node]:
    """Distinct nodes of some groups, in first-use order (for one SQL IN query)."""
    seen: dict[Node, None] = {}
    for g in groups:
        for node in g:
            seen.setdefault(node, None)
    return list(seen)


def fold_groups(groups: Iterable[Sequence[Node]],
                fetched: Mapping[Node, bytes] | Getter) -> list[bytes]:
    """One hash per group: the right fold of the group's stored hashes.

    `fetched` is either a mapping {(level, idx): hash} (e.g. the result of one
    SQL query over needed_nodes(groups)) or a getter get(level, idx).
    """
    if callable(fetched):
        get = fetched
    else:
        def get(level: int, idx: int) -> bytes:
            return fetched[(level, idx)]
    return [fold([get(l, i) for l, i in g]) for g in groups]


def inclusion_proof(index: int, size: int, get: Getter) -> list[bytes]:
    """RFC 9162 inclusion proof (PATH) of leaf `index` in the tree of `size`."""
    return fold_groups(inclusion_proof_nodes(index, size), get)


def consistency_proof(m: int, n: int, get: Getter) -> list[bytes]:
    """RFC 9162 consistency proof (PROOF) from size m to size n; [] if m in (0, n)."""
    return fold_groups(consistency_proof_nodes(m, n), get)


# --- verification (RFC 9162 2.1.3.2 and 2.1.4.2), for the product's clients -------------------------------------------

def _is_hash(h: object) -> bool:
    return isinstance(h, (bytes, bytearray)) and len(h) == HASH_SIZE


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def root_from_inclusion(leaf: bytes, index: int, size: int,
                        proof: Sequence[bytes]) -> bytes | None:
    """RFC 9162 2.1.3.2 steps 1-5 except the final root comparison.

    Returns the computed root, or None when the proof is malformed for
    (index, size) (wrong length, sn != 0 at the end, ...).
    """
    if not (_is_hash(leaf) and _is_count(index) and _is_count(size)):
        return None
    if index >= size:                                       # step 1
        return None
    if not all(_is_hash(p) for p in proof):
        return None
    fn, sn = index, size - 1                                # step 2
    r = bytes(leaf)                                         # step 3
    for p in proof:                                         # step 4
        if sn == 0:                                         # 4a
            return None
        if fn & 1 or fn == sn:                              # 4b
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1                                            # 4c
        sn >>= 1
    if sn != 0:                                             # step 5 (sn part)
        return None
    return r


def verify_inclusion(leaf: bytes, index: int, size: int,
                     proof: Sequence[bytes], root: bytes) -> bool:
    """True iff `proof` proves leaf hash `leaf` at `index` in the tree (size, root)."""
    if not _is_hash(root):
        return False
    r = root_from_inclusion(leaf, index, size, proof)
    return r is not None and r == bytes(root)


def verify_consistency(m: int, n: int, m_root: bytes, n_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """True iff `proof` proves the tree (n, n_root) extends the tree (m, m_root).

    Beyond RFC 9162 2.1.4.2 (defined for 0 < m < n):
      * m == n: valid iff proof is empty and m_root == n_root.
      * m == 0: valid iff proof is empty and m_root == MTH({}); for n > 0,
        n_root is not constrained (the empty tree is a prefix of every tree).
      * m > n, non-32-byte hashes, negative sizes: invalid.
    """
    if not (_is_count(m) and _is_count(n) and _is_hash(m_root) and _is_hash(n_root)):
        return False
    if not all(_is_hash(p) for p in proof):
        return False
    if m > n:
        return False
    if m == 0:
        return (len(proof) == 0 and bytes(m_root) == _EMPTY_ROOT
                and (n > 0 or bytes(n_root) == _EMPTY_ROOT))
    if m == n:
        return len(proof) == 0 and bytes(m_root) == bytes(n_root)
    path = [bytes(p) for p in proof]
    if not path:                                            # step 1
        return False
    if m & (m - 1) == 0:                                    # step 2
        path.insert(0, bytes(m_root))
    fn, sn = m - 1, n - 1                                   # step 3
    while fn & 1:                                           # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]                                       # step 5
    for c in path[1:]:                                      # step 6
        if sn == 0:                                         # 6a
            return False
        if fn & 1 or fn == sn:                              # 6b
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1                                            # 6c
        sn >>= 1
    return fr == bytes(m_root) and sr == bytes(n_root) and sn == 0   # step 7


# --- compact range: streaming root in O(log n) memory, resumable ------------------------------------------------------

class CompactRange:
    """The perfect subtrees covering leaves [0, size): one per 1-bit of size.

    `append(leaf_hash)` returns the rows that leaf completes (identical to
    nodes_completed_by), so a streaming verifier can both recompute the root
    and compare every stored tree_nodes row.  State = (size, [(level, hash)])
    with levels strictly decreasing; it is exactly the set of stored nodes
    subtree_ranges(0, size), so a saved state can be cross-checked against the
    store and resumed to hash only the leaves after it.
    """

    __slots__ = ("_size", "_levels", "_hashes")

    def __init__(self) -> None:
        self._size = 0
        self._levels: list[int] = []
        self._hashes: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> list[Row]:
        """Add the leaf hash for index `size`; return the rows it completes."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("leaf must be a 32-byte leaf hash")
        i = self._size
        rows: list[Row] = [(0, i, bytes(leaf))]
        h, level = bytes(leaf), 0
        levels, hashes = self._levels, self._hashes
        while i & 1:
            levels.pop()
            h = node_hash(hashes.pop(), h)
            i >>= 1
            level += 1
            rows.append((level, i, h))
        levels.append(level)
        hashes.append(h)
        self._size += 1
        return rows

    def extend(self, leaves: Iterable[bytes]) -> None:
        for lh in leaves:
            self.append(lh)

    def root(self) -> bytes:
        return fold(self._hashes)

    def nodes(self) -> list[Row]:
        """(level, idx, hash) of the border nodes, left to right."""
        return [(l, i, h) for (l, i), h in zip(subtree_ranges(0, self._size), self._hashes)]

    def to_state(self) -> tuple[int, list[tuple[int, bytes]]]:
        return self._size, list(zip(self._levels, self._hashes))

    @classmethod
    def from_state(cls, size: int, nodes: Sequence[tuple[int, bytes]]) -> "CompactRange":
        _check_size("size", size)
        want = [l for l, _ in subtree_ranges(0, size)]
        got = [l for l, _ in nodes]
        if got != want:
            raise ValueError(f"levels {got} do not match size {size} (want {want})")
        if not all(_is_hash(h) for _, h in nodes):
            raise ValueError("state hashes must be 32 bytes")
        cr = cls()
        cr._size = size
        cr._levels = list(want)
        cr._hashes = [bytes(h) for _, h in nodes]
        return cr

    @classmethod
    def from_store(cls, size: int, get: Getter) -> "CompactRange":
        return cls.from_state(size, [(l, get(l, i)) for l, i in subtree_ranges(0, size)])


def stream_root(leaf_data: Iterable[bytes], state: CompactRange | None = None) -> CompactRange:
    """Hash leaf data (e.g. entry bodies as bytes) into a compact range.

    Pass a CompactRange restored with from_state() to continue from a
    checkpoint: only the new leaves are hashed.
    """
    cr = state if state is not None else CompactRange()
    for data in leaf_data:
        cr.append(leaf_hash(data))
    return cr


def iter_node_ids(size: int) -> Iterator[Node]:
    """Every perfect node stored for a tree of `size` leaves (2*size - popcount(size))."""
    level = 0
    while (1 << level) <= size:
        for idx in range(size >> level):
            yield level, idx
        level += 1


def stored_node_count(size: int) -> int:
    return 2 * size - bin(size).count("1")
