"""The ledger's Merkle tree and its proofs, on real SQLite and PostgreSQL ledgers, checked by verifiers written here.

`rfc_root`, `rfc_verify_inclusion` and `rfc_verify_consistency` are RFC 9162's definitions (2.1.1) and verification
algorithms (2.1.3.2, 2.1.4.2) transcribed in this file, sharing nothing with ledger.merkle: the proofs the ledger
hands out must pass them for every tree of 1 to 100 entries, every entry and every earlier size.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from ledger.cli import main
from ledger.store.ledger import open_ledger
from tests.test_store import make_record, tamper


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def rfc_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) (RFC 9162 2.1.1): the empty string's hash, a leaf's 0x00-prefixed hash, or split at the largest
    power of two smaller than n."""
    if not leaves:
        return sha256(b"")
    if len(leaves) == 1:
        return sha256(b"\x00" + leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return sha256(b"\x01" + rfc_root(leaves[:k]) + rfc_root(leaves[k:]))


def rfc_verify_inclusion(leaf_data: bytes, leaf_index: int, tree_size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2, step by step."""
    if leaf_index >= tree_size:
        return False
    fn, sn = leaf_index, tree_size - 1
    r = sha256(b"\x00" + leaf_data)
    for p in path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = sha256(b"\x01" + p + r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn, sn = fn // 2, sn // 2
        else:
            r = sha256(b"\x01" + r + p)
        fn, sn = fn // 2, sn // 2
    return sn == 0 and r == root


def rfc_verify_consistency(first: int, second: int, first_hash: bytes, second_hash: bytes,
                           path: list[bytes]) -> bool:
    """RFC 9162 2.1.4.2, step by step (first == second: an empty proof and equal hashes)."""
    if first == second:
        return not path and first_hash == second_hash
    if not path:
        return False
    if first & (first - 1) == 0:  # an exact power of two
        path = [first_hash, *path]
    fn, sn = first - 1, second - 1
    while fn % 2 == 1:
        fn, sn = fn // 2, sn // 2
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr, sr = sha256(b"\x01" + c + fr), sha256(b"\x01" + c + sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn, sn = fn // 2, sn // 2
        else:
            sr = sha256(b"\x01" + sr + c)
        fn, sn = fn // 2, sn // 2
    return fr == first_hash and sr == second_hash and sn == 0


def bodies_of(book) -> list[bytes]:
    return [entry.body.encode("utf-8") for entry in book.entries()]


@pytest.fixture
def hundred(db_url):
    """A ledger of 100 entries, appended one at a time: each size from 1 to 100 was once the whole log."""
    book = open_ledger()
    for i in range(100):
        book.append(make_record(i))
    return book


def test_every_proof_of_every_tree_up_to_100_entries_verifies(hundred):
    book, leaves = hundred, bodies_of(hundred)
    assert book.tree_root()[1] == rfc_root(leaves)
    for size in range(1, 101):
        root = rfc_root(leaves[:size])
        assert book.tree_root(size) == (size, root)
        for seq in range(1, size + 1):
            _, path = book.inclusion_proof(seq, size)
            assert rfc_verify_inclusion(leaves[seq - 1], seq - 1, size, path, root), (seq, size)
            assert not rfc_verify_inclusion(leaves[seq - 1] + b" ", seq - 1, size, path, root)
        for first in range(1, size + 1):
            _, path = book.consistency_proof(first, size)
            assert rfc_verify_consistency(first, size, rfc_root(leaves[:first]), root, path), (first, size)
            if first < size:
                assert not rfc_verify_consistency(first, size, rfc_root(leaves[:first - 1] + [b"x"]), root, path)


def test_the_proof_command_prints_what_any_verifier_checks(hundred, capsys):
    run = hundred.get("xgb-0042")
    hundred.record_outcome(run.run_id, {"status": "Completed", "metrics": {"rmse": 1.5}})
    leaves = bodies_of(hundred)
    assert main(["proof", run.run_id, "--json"]) == 0
    proof = json.loads(capsys.readouterr().out)
    assert proof["tree_size"] == 101 and bytes.fromhex(proof["root_hash"]) == rfc_root(leaves)
    assert [e["seq"] for e in proof["entries"]] == [43, 101]
    origin, size, root64 = proof["checkpoint"].splitlines()
    assert origin.startswith("sagemaker-ledger/") and size == "101"
    assert base64.b64decode(root64) == rfc_root(leaves)
    for entry in proof["entries"]:
        assert entry["leaf_index"] == entry["seq"] - 1 and entry["body"].encode() == leaves[entry["seq"] - 1]
        path = [bytes.fromhex(h) for h in entry["audit_path"]]
        assert rfc_verify_inclusion(entry["body"].encode(), entry["leaf_index"], 101, path, rfc_root(leaves))
        assert len(json.dumps(entry["audit_path"])) < 2048
    assert main(["proof", "--consistency", "37", "--json"]) == 0
    consistency = json.loads(capsys.readouterr().out)
    assert (consistency["first"], consistency["second"]) == (37, 101)
    assert rfc_verify_consistency(37, 101, bytes.fromhex(consistency["first_hash"]),
                                  bytes.fromhex(consistency["second_hash"]),
                                  [bytes.fromhex(h) for h in consistency["path"]])
    assert bytes.fromhex(consistency["first_hash"]) == rfc_root(leaves[:37])


def test_a_signed_checkpoint_verifies_with_its_key_and_fails_when_changed(hundred, tmp_path, capsys):
    from ledger import checkpoint

    assert main(["audit", "keygen", str(tmp_path / "key")]) == 0
    capsys.readouterr()
    assert main(["checkpoint", "--sign", str(tmp_path / "key"), "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    verifier = checkpoint.Verifier.parse(made["verifier_key"])
    parsed, _ = checkpoint.open_checkpoint(made["checkpoint"].encode(), [verifier], origin=made["origin"])
    assert parsed.size == 100 and parsed.root == rfc_root(bodies_of(hundred))
    changed = made["checkpoint"].replace("\n100\n", "\n99\n")
    with pytest.raises(checkpoint.InvalidNoteSignature):
        checkpoint.open_checkpoint(changed.encode(), [verifier])


def test_a_tampered_body_fails_its_own_proof(db_url, capsys):
    book = open_ledger()
    records = [book.append(make_record(i)) for i in range(6)]
    victim = records[3]
    body = book.entries(victim.run_id)[0].body
    tamper(db_url, ("UPDATE entries SET body = :b WHERE seq = 4",
                    {"b": body.replace('"xgb-0003"', '"xgb-9999"')}))
    assert main(["proof", victim.run_id, "--json"]) == 0
    proof = json.loads(capsys.readouterr().out)
    [entry] = proof["entries"]
    path = [bytes.fromhex(h) for h in entry["audit_path"]]
    assert not rfc_verify_inclusion(entry["body"].encode(), 3, 6, path, bytes.fromhex(proof["root_hash"]))
    assert main(["verify", "--full"]) == 3


@pytest.mark.parametrize("args, says", [
    (["proof", "NOSUCHRUN"], "no run NOSUCHRUN"),
    (["proof", "--consistency", "5", "200"], "no tree of 200"),
    (["proof", "--consistency", "0"], "no consistency proof from 0"),
    (["proof", "--consistency", "3", "x7"], "not a tree size"),
    (["proof"], "no run given"),
])
def test_bad_proof_requests_are_one_line(hundred, capsys, args, says):
    assert main(args) in (1, 2)
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err


def test_an_empty_ledger_has_no_checkpoint(db_url, capsys):
    open_ledger()
    assert main(["checkpoint"]) == 1
    assert "is empty" in capsys.readouterr().err
