"""Every stored fact is inside the proof (issue 12, item 7): the launched entry's body names each blob (the git
diff) by sha256, and `ledger verify` hashes every named blob again, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from sqlalchemy import text

from ledger.cli import main
from ledger.record import CodePin, Pins, RunRecord, sha256_hex
from ledger.store.ledger import open_ledger

DIFF = b"diff --git a/train.py b/train.py\n+lr = 0.2\n"


def record_with_a_diff(book) -> RunRecord:
    digest = book.put_blob(DIFF)
    return book.append(RunRecord(job_name="dirty-job", pins=Pins(code=CodePin(commit="c" * 40, dirty=True,
                                                                             diff_sha256=digest))))


def test_a_changed_diff_blob_is_tampering(db_url, capsys):
    book = open_ledger()
    saved = record_with_a_diff(book)
    body = json.loads(book.entries(saved.run_id)[0].body)
    assert body["payload"]["pins"]["code"]["diff_sha256"] == sha256_hex(DIFF)  # the chained body names it
    assert book.verify().ok
    with book.engine.begin() as conn:  # what a database owner could do: the blobs table is not chained
        conn.execute(text("UPDATE blobs SET data = :d WHERE sha256 = :h"),
                     {"d": DIFF.replace(b"0.2", b"0.9"), "h": saved.pins.code.diff_sha256})
    report = book.verify(check_projections=False)
    assert not report.ok
    assert report.first_bad["seq"] == saved.chain.seq and report.first_bad["run_id"] == saved.run_id
    assert "git diff blob" in report.first_bad["problem"] and "changed" in report.first_bad["problem"]
    capsys.readouterr()
    assert main(["verify", "--chain-only", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["first_bad"]["run_id"] == saved.run_id


def test_a_missing_diff_blob_is_tampering(db_url):
    book = open_ledger()
    saved = record_with_a_diff(book)
    # Only the pins' field names a blob: a hyperparameter called diff_sha256 is just a value.
    other = book.append(RunRecord(job_name="odd", pins=Pins(hyperparameters={"diff_sha256": "d" * 64})))
    with book.engine.begin() as conn:
        conn.execute(text("DELETE FROM blobs"))
    report = book.verify()
    assert not report.ok and len(report.problems) == 1
    problem = report.first_bad
    assert (problem["seq"], problem["run_id"]) == (saved.chain.seq, saved.run_id) != (other.chain.seq, other.run_id)
    assert "missing" in problem["problem"]


def test_a_changed_kept_code_file_is_tampering(db_url):
    """SDK 3.x code kept as blobs (an unversioned `code` channel) is inside the proof too: each kept file's
    sha256 is in the chained body, and verify hashes the blob again."""
    book = open_ledger()
    script = b"print('train')\n"
    digest = book.put_blob(script)
    channel = {"uri": "s3://bucket/job/code/", "object_count": 1, "total_bytes": len(script), "kept": True,
               "objects": [{"key": "train.py", "version_id": None, "etag": "e", "size": len(script),
                            "sha256": digest}]}
    saved = book.append(RunRecord(job_name="sdk3-job", pins=Pins(code=CodePin(code_channels={"code": channel}))))
    assert book.verify().ok
    with book.engine.begin() as conn:
        conn.execute(text("UPDATE blobs SET data = :d WHERE sha256 = :h"),
                     {"d": b"print('changed')\n", "h": digest})
    report = book.verify(check_projections=False)
    assert not report.ok and report.first_bad["run_id"] == saved.run_id
    assert "code channel code file train.py" in report.first_bad["problem"]
