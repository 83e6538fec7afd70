"""ledger.merkle against an independent reference written here (RFC 9162 section 2.1 transcribed).

The reference (`Ref`) is RFC 9162 section 2.1 transcribed literally: MTH by the
"k = largest power of two smaller than n" split, PATH (2.1.3.1) and
PROOF/SUBPROOF (2.1.4.1), with its own hashlib calls; it shares no code with
ledger/merkle.py.
"""

from __future__ import annotations

import hashlib
import random
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle as M

MAX_N = 100


# --- independent reference (RFC 9162 2.1, recursive definitions) ------------------------------------------------------

def _sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


class Ref:
    """MTH, PATH and PROOF over a fixed list of leaf data D."""

    def __init__(self, data: list[bytes]):
        self.D = data
        self._mth = lru_cache(maxsize=None)(self._mth_uncached)

    @staticmethod
    def k_for(n: int) -> int:           # largest power of two < n, n > 1
        k = 1
        while k * 2 < n:
            k *= 2
        return k

    def _mth_uncached(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return _sha(b"")
        if n == 1:
            return _sha(b"\x00" + self.D[lo])
        k = self.k_for(n)
        return _sha(b"\x01" + self._mth(lo, lo + k) + self._mth(lo + k, hi))

    def mth(self, lo: int, hi: int) -> bytes:
        return self._mth(lo, hi)

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = self.k_for(n)
        if m < k:
            return self.path(m, lo, lo + k) + [self.mth(lo + k, hi)]
        return self.path(m - k, lo + k, hi) + [self.mth(lo, lo + k)]

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = self.k_for(n)
        if m <= k:
            return self.subproof(m, lo, lo + k, b) + [self.mth(lo + k, hi)]
        return self.subproof(m - k, lo + k, hi, False) + [self.mth(lo, lo + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        return self.subproof(m, 0, n, True)

    def leaf(self, i: int) -> bytes:
        return _sha(b"\x00" + self.D[i])


def make_data(n: int, seed: int = 0) -> list[bytes]:
    rnd = random.Random(seed)
    # distinct, varied lengths (including empty), like JSON bodies would be
    return [i.to_bytes(4, "big") + rnd.randbytes(rnd.randrange(0, 40)) for i in range(n)]


class Store(dict):
    """In-memory tree_nodes table."""

    def get_node(self, level: int, idx: int) -> bytes:
        return self[(level, idx)]

    def put(self, rows):
        for level, idx, h in rows:
            assert (level, idx) not in self, "a perfect node is written twice"
            self[(level, idx)] = h


def build(data: list[bytes]) -> Store:
    s = Store()
    for i, d in enumerate(data):
        s.put(M.nodes_completed_by(i, M.leaf_hash(d), s.get_node))
    return s


DATA = make_data(MAX_N)
REF = Ref(DATA)
STORE = build(DATA)
G = STORE.get_node


def flip(b: bytes, bit: int) -> bytes:
    a = bytearray(b)
    a[bit // 8] ^= 1 << (bit % 8)
    return bytes(a)


# --------------------------------------------------------------------------
# Known-answer vectors: RFC 6962 test data as published in
# github.com/transparency-dev/merkle testonly/constants.go and
# proof/verify_test.go (leaf inputs, node hashes, roots, proofs).
# --------------------------------------------------------------------------

KAT_LEAVES = [bytes.fromhex(x) for x in [
    "", "00", "10", "2021", "3031", "40414243",
    "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
KAT_ROOTS = [bytes.fromhex(x) for x in [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]]
KAT_NODES = {
    (0, 0): "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    (0, 7): "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    (1, 1): "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    (1, 3): "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    (2, 1): "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    (3, 0): "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
# (0-based leaf index, size, proof)
KAT_INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
KAT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]


def test_kat_rfc6962_vectors():
    s = build(KAT_LEAVES)
    assert M.empty_root() == KAT_ROOTS[0]
    for n, want in enumerate(KAT_ROOTS):
        assert M.root_from(s.get_node, n) == want
    for node, want in KAT_NODES.items():
        assert s[node].hex() == want
    for idx, size, proof in KAT_INCLUSION:
        got = M.inclusion_proof(idx, size, s.get_node)
        assert [p.hex() for p in got] == proof
        assert M.verify_inclusion(M.leaf_hash(KAT_LEAVES[idx]), idx, size, got, KAT_ROOTS[size])
    for m, n, proof in KAT_CONSISTENCY:
        got = M.consistency_proof(m, n, s.get_node)
        assert [p.hex() for p in got] == proof
        assert M.verify_consistency(m, n, KAT_ROOTS[m], KAT_ROOTS[n], got)


# --- storage and roots ------------------------------------------------------------------------------------------------

def test_primitives():
    assert M.leaf_hash(b"x") == _sha(b"\x00x")
    assert M.node_hash(b"a" * 32, b"b" * 32) == _sha(b"\x01" + b"a" * 32 + b"b" * 32)
    assert M.empty_root() == _sha(b"")
    assert M.entry_leaf_hash('{"a":"é"}') == _sha(b"\x00" + '{"a":"é"}'.encode("utf-8"))


def test_stored_nodes_are_the_reference_perfect_subtrees():
    assert len(STORE) == M.stored_node_count(MAX_N) == 2 * MAX_N - bin(MAX_N).count("1")
    assert set(STORE) == set(M.iter_node_ids(MAX_N))
    for (level, idx), h in STORE.items():
        assert h == REF.mth(idx << level, (idx + 1) << level)


def test_roots_every_size():
    cr = M.CompactRange()
    assert cr.root() == M.root_from(G, 0) == REF.mth(0, 0)
    for n in range(1, MAX_N + 1):
        rows = cr.append(REF.leaf(n - 1))
        assert rows == M.nodes_completed_by(n - 1, REF.leaf(n - 1), G)
        want = REF.mth(0, n)
        assert M.root_from(G, n) == want
        assert cr.root() == want
        assert cr.nodes() == [(l, i, STORE[(l, i)]) for l, i in M.root_nodes(n)]
        assert len(M.root_nodes(n)) == bin(n).count("1")


def test_subtree_ranges():
    assert M.subtree_ranges(0, 0) == []
    assert M.subtree_ranges(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert M.subtree_ranges(8, 13) == [(2, 2), (0, 12)]
    assert M.subtree_ranges(16, 24) == [(3, 2)]
    for bad in [(1, 3), (6, 10), (2, 6), (3, 5), (4, 12)]:
        with pytest.raises(ValueError):
            M.subtree_ranges(*bad)
    for lo in range(0, 64):
        for hi in range(lo, 65):
            top = (hi - lo).bit_length() - 1
            if hi > lo and lo % (1 << top):
                continue
            got = M.fold([STORE[nd] for nd in M.subtree_ranges(lo, hi)]) if hi > lo else M.empty_root()
            assert got == REF.mth(lo, hi)


# --- inclusion proofs: every size 1..100, every index -----------------------------------------------------------------

def test_inclusion_every_size_every_index():
    for n in range(1, MAX_N + 1):
        root = REF.mth(0, n)
        for i in range(n):
            proof = M.inclusion_proof(i, n, G)
            assert proof == REF.path(i, 0, n), (i, n)
            groups = M.inclusion_proof_nodes(i, n)
            assert M.fold_groups(groups, {nd: STORE[nd] for nd in M.needed_nodes(groups)}) == proof
            assert all((idx + 1) << lvl <= n for g in groups for lvl, idx in g)
            lh = REF.leaf(i)
            assert M.verify_inclusion(lh, i, n, proof, root)
            # every single-bit flip of every proof element (all bits for small
            # trees, 8 spread bits per element otherwise)
            bits = range(256) if n <= 16 else range(i % 32, 256, 32)
            for j, p in enumerate(proof):
                for bit in bits:
                    bad = proof[:j] + [flip(p, bit)] + proof[j + 1:]
                    assert not M.verify_inclusion(lh, i, n, bad, root)
            for bit in (0, 255, (i * 7) % 256):
                assert not M.verify_inclusion(flip(lh, bit), i, n, proof, root)
                assert not M.verify_inclusion(lh, i, n, proof, flip(root, bit))
            # wrong index: no other index verifies with this leaf and proof
            for j in range(n):
                if j != i:
                    assert not M.verify_inclusion(lh, j, n, proof, root)
            # wrong size (probes as in transparency-dev/merkle verify_test.go)
            for n2 in {n * 2, n // 2}:
                if n2 != n and n2 > i:
                    assert not M.verify_inclusion(lh, i, n2, proof, root)
            # any other size, with the genuine root of that size, must fail
            for n2 in range(i + 1, MAX_N + 1):
                if n2 != n:
                    assert not M.verify_inclusion(lh, i, n2, proof, REF.mth(0, n2))
            assert not M.verify_inclusion(lh, i, i, proof, root)          # index >= size
            # truncated / extended / garbage-prefixed proofs
            if proof:
                assert not M.verify_inclusion(lh, i, n, proof[:-1], root)
            assert not M.verify_inclusion(lh, i, n, proof + [root], root)
            assert not M.verify_inclusion(lh, i, n, [root] + proof, root)


def test_inclusion_proof_for_size_n_with_root_of_n_and_smaller_size_is_a_known_ambiguity():
    # RFC 9162's verifier binds the proof to (index, size) only through the
    # proof's shape: the proof of leaf 0 in a tree of 8 also "verifies" for
    # size 7 against the size-8 root.  Harmless when (size, root) come from
    # the same signed checkpoint; documents why callers must never mix them.
    proof = M.inclusion_proof(0, 8, G)
    assert M.verify_inclusion(REF.leaf(0), 0, 7, proof, REF.mth(0, 8))
    assert not M.verify_inclusion(REF.leaf(0), 0, 7, proof, REF.mth(0, 7))


def test_inclusion_bad_inputs():
    root = REF.mth(0, 5)
    proof = M.inclusion_proof(2, 5, G)
    lh = REF.leaf(2)
    assert M.verify_inclusion(lh, 2, 5, proof, root)
    assert not M.verify_inclusion(lh[:31], 2, 5, proof, root)
    assert not M.verify_inclusion(lh, 2, 5, proof, root[:31])
    assert not M.verify_inclusion(lh, 2, 5, [proof[0][:31]] + proof[1:], root)
    assert not M.verify_inclusion(lh, -1, 5, proof, root)
    assert not M.verify_inclusion(lh, 2, 0, [], M.empty_root())
    assert not M.verify_inclusion(lh, True, 5, proof, root)
    for args in [(5, 5), (0, 0), (-1, 3)]:
        with pytest.raises(ValueError):
            M.inclusion_proof_nodes(*args)
    # single-leaf tree: empty proof, root == leaf hash
    assert M.inclusion_proof(0, 1, G) == []
    assert M.verify_inclusion(REF.leaf(0), 0, 1, [], REF.mth(0, 1))


# --- consistency proofs: every n in 1..100, every m <= n --------------------------------------------------------------

def test_consistency_every_pair():
    for n in range(1, MAX_N + 1):
        n_root = REF.mth(0, n)
        for m in range(0, n + 1):
            m_root = REF.mth(0, m)
            proof = M.consistency_proof(m, n, G)
            groups = M.consistency_proof_nodes(m, n)
            assert M.fold_groups(groups, STORE) == proof
            assert all((idx + 1) << lvl <= n for g in groups for lvl, idx in g)
            if 0 < m:
                assert proof == REF.proof(m, n), (m, n)
            else:
                assert proof == []
            assert M.verify_consistency(m, n, m_root, n_root, proof), (m, n)
            if m == 0 or m == n:
                assert not M.verify_consistency(m, n, m_root, n_root, [n_root])
                if m == n and n > 0:
                    assert not M.verify_consistency(m, n, m_root, flip(n_root, 3), [])
                if m == 0:
                    assert not M.verify_consistency(0, n, flip(m_root, 1), n_root, [])
                continue
            # 0 < m < n from here on
            bits = range(256) if n <= 12 else range((m + n) % 32, 256, 32)
            for j, p in enumerate(proof):
                for bit in bits:
                    bad = proof[:j] + [flip(p, bit)] + proof[j + 1:]
                    assert not M.verify_consistency(m, n, m_root, n_root, bad)
            for bit in (0, 255, (m * 13) % 256):
                assert not M.verify_consistency(m, n, flip(m_root, bit), n_root, proof)
                assert not M.verify_consistency(m, n, m_root, flip(n_root, bit), proof)
            assert not M.verify_consistency(m, n, n_root, m_root, proof)
            assert not M.verify_consistency(m, n, m_root, n_root, [])
            assert not M.verify_consistency(m, n, m_root, n_root, proof[:-1])
            assert not M.verify_consistency(m, n, m_root, n_root, proof + [m_root])
            assert not M.verify_consistency(m, n, m_root, n_root, [m_root] + proof)
            assert not M.verify_consistency(m, n, m_root, n_root, [proof[0]] + proof)
            assert not M.verify_consistency(n, m, n_root, m_root, proof)
            # wrong sizes, each with the genuine roots of the claimed sizes
            for m2 in range(1, n):
                if m2 != m:
                    assert not M.verify_consistency(m2, n, REF.mth(0, m2), n_root, proof) or \
                        proof == REF.proof(m2, n)
                    assert not M.verify_consistency(m2, n, m_root, n_root, proof) or \
                        proof == REF.proof(m2, n)
            for n2 in range(m + 1, MAX_N + 1):
                if n2 != n:
                    assert not M.verify_consistency(m, n2, m_root, REF.mth(0, n2), proof)


def test_consistency_bad_inputs():
    with pytest.raises(ValueError):
        M.consistency_proof_nodes(5, 4)
    r = REF.mth(0, 4)
    assert not M.verify_consistency(-1, 4, r, r, [])
    assert not M.verify_consistency(4, 4, r[:31], r[:31], [])
    assert M.verify_consistency(0, 0, M.empty_root(), M.empty_root(), [])
    assert not M.verify_consistency(0, 0, M.empty_root(), r, [])


# --- tampering --------------------------------------------------------------------------------------------------------

def test_tampering_one_leaf_changes_root_and_breaks_proofs():
    n, victim = 37, 21
    old_root = REF.mth(0, n)
    old_proof = M.inclusion_proof(victim, n, G)
    checkpoint_m = 30
    old_cp_root = REF.mth(0, checkpoint_m)

    data = list(DATA[:n])
    data[victim] = data[victim] + b" "         # one byte appended to the body
    tampered = build(data)
    new_root = M.root_from(tampered.get_node, n)
    assert new_root != old_root
    new_leaf = M.leaf_hash(data[victim])
    assert not M.verify_inclusion(new_leaf, victim, n, old_proof, old_root)
    assert not M.verify_inclusion(REF.leaf(victim), victim, n, old_proof, new_root)
    # (the victim's siblings did not change, so new_leaf + old_proof DOES
    # reproduce new_root: detection comes from the signed old root, not the proof)
    assert M.verify_inclusion(new_leaf, victim, n, old_proof, new_root)
    # every other leaf's old proof now fails against the new root
    for j in range(n):
        if j != victim:
            assert not M.verify_inclusion(REF.leaf(j), j, n, M.inclusion_proof(j, n, G), new_root)
    # the tampered tree cannot prove consistency with an earlier checkpoint
    cproof = M.consistency_proof(checkpoint_m, n, tampered.get_node)
    assert not M.verify_consistency(checkpoint_m, n, old_cp_root, new_root, cproof)
    # a streaming re-hash detects which stored rows disagree
    cr = M.CompactRange()
    mismatched = set()
    for i, d in enumerate(data):
        for level, idx, h in cr.append(M.leaf_hash(d)):
            if STORE[(level, idx)] != h:
                mismatched.add((level, idx))
    assert (0, victim) in mismatched
    assert all((idx << level) <= victim < ((idx + 1) << level) for level, idx in mismatched)


# --- batch appends and compact-range resume ---------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=8))
def test_batch_append_equals_single_appends(batch_sizes):
    data = make_data(sum(batch_sizes), seed=len(batch_sizes))
    store = Store()
    pos = 0
    for b in batch_sizes:
        rows = M.nodes_completed_by_batch(pos, [M.leaf_hash(d) for d in data[pos:pos + b]],
                                          store.get_node)
        store.put(rows)
        pos += b
    assert store == build(data)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=MAX_N), st.integers(min_value=0, max_value=MAX_N))
def test_compact_range_resume_from_saved_state(a, b):
    split, total = min(a, b), max(a, b)
    cr = M.stream_root(DATA[:split])
    size, state = cr.to_state()
    assert size == split
    # the saved state is exactly the stored right border at that size
    assert [(l, STORE[(l, i)]) for l, i in M.root_nodes(split)] == state
    resumed = M.CompactRange.from_state(size, state)
    M.stream_root(DATA[split:total], resumed)
    assert resumed.size == total
    assert resumed.root() == REF.mth(0, total) == M.root_from(G, total)
    assert M.CompactRange.from_store(total, G).root() == resumed.root()


def test_compact_range_state_validation():
    cr = M.stream_root(DATA[:6])
    size, state = cr.to_state()
    assert [l for l, _ in state] == [2, 1]
    with pytest.raises(ValueError):
        M.CompactRange.from_state(7, state)
    with pytest.raises(ValueError):
        M.CompactRange.from_state(6, [(2, b"x" * 31), (1, state[1][1])])


# --- node plans on large trees (structure only; no hashing) -----------------------------------------------------------

def _rfc_path_len(i: int, n: int) -> int:
    # length of PATH(i, D[n]) from the recursive definition
    length = 0
    while n > 1:
        k = Ref.k_for(n)
        if i < k:
            n = k
        else:
            i, n = i - k, n - k
        length += 1
    return length


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=1 << 40), st.data())
def test_node_plans_large_trees(n, data):
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    m = data.draw(st.integers(min_value=1, max_value=n))
    log = n.bit_length()
    g = M.inclusion_proof_nodes(i, n)
    assert len(g) == _rfc_path_len(i, n) <= log
    flat = [nd for grp in g for nd in grp]
    assert len(flat) <= 2 * log
    assert all((idx + 1) << lvl <= n for lvl, idx in flat)
    c = M.consistency_proof_nodes(m, n)
    cflat = [nd for grp in c for nd in grp]
    assert len(c) <= 2 * log and len(cflat) <= 3 * log
    assert all((idx + 1) << lvl <= n for lvl, idx in cflat)
    assert len(M.root_nodes(n)) == bin(n).count("1")


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_random_trees_against_reference(n, data):
    d = make_data(n, seed=n)
    ref, store = Ref(d), build(d)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    m = data.draw(st.integers(min_value=1, max_value=n))
    assert M.root_from(store.get_node, n) == ref.mth(0, n)
    assert M.inclusion_proof(i, n, store.get_node) == ref.path(i, 0, n)
    assert M.consistency_proof(m, n, store.get_node) == ref.proof(m, n)
