"""Anchors: the head copied out of the database catches a log whose newest entries were deleted; on S3 under
COMPLIANCE retention the anchor itself cannot be deleted (a real moto server)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from ledger.audit import anchor
from ledger.errors import UsageError
from ledger.store.ledger import open_ledger
from tests.test_audit import run_cli, seed
from tests.test_store import tamper

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


# --- pure -----------------------------------------------------------------------------------------------------


def test_parse_location():
    assert anchor.parse_location("s3://audit/ledger/anchors/") == anchor.Location("s3", bucket="audit",
                                                                                  key="ledger/anchors/")
    assert anchor.parse_location("s3://audit/a.json?versionId=V1").version_id == "V1"
    assert anchor.parse_location("file:///var/anchors/head.json").path == "/var/anchors/head.json"
    assert anchor.parse_location("file://anchors/").path == "anchors/"
    assert anchor.parse_location("./anchors/head.json") == anchor.Location("file", path="./anchors/head.json")
    for bad in ("", "s3:///key", "https://example.com/x"):
        with pytest.raises(UsageError):
            anchor.parse_location(bad)


def test_plan_retention_follows_the_bucket_unless_told():
    assert anchor.plan_retention(None, None, None, NOW) is None
    assert anchor.plan_retention({"ObjectLockConfiguration": {}}, None, None, NOW) is None
    default = {"ObjectLockConfiguration": {"ObjectLockEnabled": "Enabled",
                                           "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 30}}}}
    assert anchor.plan_retention(default, None, None, NOW) == {
        "mode": "GOVERNANCE", "days": 30, "retain_until": datetime(2026, 12, 27, 12, 0, tzinfo=timezone.utc)}
    assert anchor.plan_retention(default, "compliance", 2, NOW)["mode"] == "COMPLIANCE"
    bare = {"ObjectLockConfiguration": {"ObjectLockEnabled": "Enabled"}}
    assert anchor.plan_retention(bare, None, None, NOW)["days"] == anchor.DEFAULT_RETENTION_DAYS
    years = {"ObjectLockConfiguration": {"ObjectLockEnabled": "Enabled",
                                         "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 7}}}}
    assert anchor.plan_retention(years, None, None, NOW)["days"] == 7 * 365
    with pytest.raises(UsageError):
        anchor.plan_retention(bare, "FOREVER", None, NOW)


def test_plan_anchor_check():
    doc = {"seq": 8, "entry_hash": "a" * 64, "run_id": "R8", "anchored_at": "2026-11-27T00:00:00Z",
           "where": "file:///a.json", "source": "anchor"}
    assert anchor.plan_anchor_check(doc, {"run_id": "R8", "entry_hash": "a" * 64}, 9) is None
    cut = anchor.plan_anchor_check(doc, None, 6)
    assert cut["seq"] == 8 and cut["run_id"] == "R8" and "entries 7 to 8 were deleted" in cut["problem"]
    assert "entry 8 was deleted" in anchor.plan_anchor_check(doc, None, 7)["problem"]
    rewritten = anchor.plan_anchor_check(doc, {"run_id": "R8", "entry_hash": "b" * 64}, 9)
    assert "rewritten at or before entry 8" in rewritten["problem"]
    assert anchor.plan_anchor_name(12, "2026-11-27T20:18:51.123456Z") == "anchor-000000000012-20261127T201851123456Z.json"


# --- files ----------------------------------------------------------------------------------------------------


def _truncate(url: str, book, keep: int) -> None:
    """Delete the newest entries (and their Merkle tree nodes) as an administrator could, then rebuild the
    projections so that `ledger verify --full` on its own finds nothing wrong: a log cut short is still a valid
    chain and a valid tree."""
    tamper(url, ("DELETE FROM entries WHERE seq > :keep", {"keep": keep}),
           ("DELETE FROM tree_nodes WHERE ((idx + 1) << level) > :keep", {"keep": keep}))
    book.rebuild()


def test_truncation_after_an_anchor_is_caught(db_url, tmp_path, capsys, monkeypatch):
    book = open_ledger()
    seed(book)
    head_seq, head_hash = book.head()
    code, out, err = run_cli(capsys, "anchor", "--to", f"file://{tmp_path}/anchors/")
    assert code == 0 and f"Anchored entry {head_seq} {head_hash}" in out, err
    files = list((tmp_path / "anchors").glob("anchor-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["head"]["entry_hash"] == head_hash
    (tmp_path / "anchors" / "notes.json").write_text('{"not": "an anchor"}')  # other files there are skipped
    assert run_cli(capsys, "verify", "--anchor", str(tmp_path / "anchors"))[0] == 0
    newest = book.entries()[-1]
    _truncate(db_url, book, head_seq - 2)
    code, _, err = run_cli(capsys, "verify", "--full")  # this machine remembers the head it verified last
    assert code == 3 and f"entries {head_seq - 1} to {head_seq} were deleted" in err
    with monkeypatch.context() as elsewhere:  # a verifier with no memory of this ledger: the same database
        elsewhere.setenv("LEDGER_DB_URL", book.settings.db_url)
        elsewhere.setenv("LEDGER_HOME", str(tmp_path / "another-machine"))
        assert run_cli(capsys, "verify", "--full")[0] == 0  # the cut log verifies on its own
    code, out, err = run_cli(capsys, "verify", "--anchor", f"file://{tmp_path}/anchors/")
    assert code == 3
    assert f"TAMPERED at entry {head_seq} (run {newest.run_id})" in err
    assert f"the log ends at entry {head_seq - 2}" in err and f"entries {head_seq - 1} to {head_seq} were deleted" in err
    code, out, _ = run_cli(capsys, "verify", "--anchor", str(files[0]), "--json")
    result = json.loads(out)
    assert code == 3 and result["anchors"][0]["ok"] is False and result["first_bad"]["seq"] == head_seq


def test_an_audit_report_is_an_anchor_too(db_url, tmp_path, capsys):
    book = open_ledger()
    runs = seed(book)
    for name in ("report.json", "report.html"):
        assert run_cli(capsys, "audit", runs["clean"].run_id, "-o", str(tmp_path / name))[0] == 0
    book.annotate(runs["clean"].run_id, {"tags": {"reviewed": "yes"}})  # appended after: fine
    assert run_cli(capsys, "verify", "--anchor", str(tmp_path / "report.html"))[0] == 0
    _truncate(db_url, book, book.head()[0] - 3)
    code, _, err = run_cli(capsys, "verify", "--anchor", str(tmp_path / "report.json"))
    assert code == 3 and "the audit report at" in err and "were deleted" in err


def test_a_log_that_does_not_verify_is_not_anchored(db_url, tmp_path, capsys):
    book = open_ledger()
    seed(book)
    entry = book.entries()[0]
    tamper(db_url, ("UPDATE entries SET body = :b WHERE seq = 1", {"b": entry.body.replace("churn", "chirp")}))
    code, _, err = run_cli(capsys, "anchor", "--to", str(tmp_path / "head.json"))
    assert code == 3 and "refusing to anchor" in err and not (tmp_path / "head.json").exists()


def test_file_anchors_refuse_object_lock_options_and_an_empty_ledger(ledger_home, tmp_path, capsys):
    code, _, err = run_cli(capsys, "anchor", "--to", str(tmp_path / "a.json"))
    assert code == 1 and "is empty" in err
    seed(open_ledger())
    code, _, err = run_cli(capsys, "anchor", "--to", str(tmp_path / "a.json"), "--retain-days", "3")
    assert code == 2 and "S3 Object Lock only" in err
    code, _, err = run_cli(capsys, "verify", "--anchor", str(tmp_path / "missing"))
    assert code == 1 and "no anchor at" in err


# --- S3 with Object Lock (moto) -------------------------------------------------------------------------------


def _locked_bucket(s3, name: str = "audit-anchors", days: int = 1) -> str:
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": days}}})
    return name


def test_an_anchor_under_compliance_retention_cannot_be_deleted(aws, db_url, capsys):
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3")
    bucket = _locked_bucket(s3)
    book = open_ledger()
    seed(book)
    head_seq, head_hash = book.head()
    code, out, err = run_cli(capsys, "anchor", "--to", f"s3://{bucket}/ledger/anchors/", "--json")
    assert code == 0, err
    written = json.loads(out)
    key = written["location"].split(f"s3://{bucket}/", 1)[1]
    assert key.startswith("ledger/anchors/anchor-") and written["retention"]["mode"] == "COMPLIANCE"
    head = s3.head_object(Bucket=bucket, Key=key, VersionId=written["version_id"])
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] > datetime.now(timezone.utc)
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=written["version_id"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=written["version_id"], BypassGovernanceRetention=True)
    body = json.loads(s3.get_object(Bucket=bucket, Key=key, VersionId=written["version_id"])["Body"].read())
    assert body["head"] == {**body["head"], "seq": head_seq, "entry_hash": head_hash}
    # a plain DELETE only hides it behind a delete marker: the anchor version is still read and checked
    s3.delete_object(Bucket=bucket, Key=key)
    assert run_cli(capsys, "verify", "--anchor", f"s3://{bucket}/ledger/anchors/")[0] == 0
    _truncate(db_url, book, head_seq - 1)
    code, _, err = run_cli(capsys, "verify", "--anchor", f"s3://{bucket}/ledger/anchors/")
    assert code == 3 and f"entry {head_seq} was deleted" in err and f"s3://{bucket}/{key}" in err


def test_anchor_retention_can_be_chosen_and_a_bucket_without_lock_is_named(aws, ledger_home, capsys):
    import boto3

    s3 = boto3.client("s3")
    bucket = _locked_bucket(s3, "locked", days=1)
    seed(open_ledger())
    code, out, err = run_cli(capsys, "anchor", "--to", f"s3://{bucket}/head.json", "--mode", "GOVERNANCE",
                             "--retain-days", "2")
    assert code == 0 and "Object Lock: GOVERNANCE until" in out, err
    assert s3.head_object(Bucket=bucket, Key="head.json")["ObjectLockMode"] == "GOVERNANCE"
    s3.create_bucket(Bucket="plain")
    code, out, _ = run_cli(capsys, "anchor", "--to", "s3://plain/head.json")
    assert code == 0 and "has no Object Lock" in out
    code, _, err = run_cli(capsys, "anchor", "--to", "s3://plain/head.json", "--mode", "COMPLIANCE")
    assert code == 2 and "has no Object Lock" in err
    code, _, err = run_cli(capsys, "anchor", "--to", "s3://no-such-bucket/head.json")
    assert code == 1 and "NoSuchBucket" in err
    assert run_cli(capsys, "verify", "--anchor", "s3://plain/head.json")[0] == 0
