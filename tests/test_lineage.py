"""Lineage: which runs read an object (version), and what went into a model, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from ledger.capture.data import build_channel_pin
from ledger.errors import NotFound, UsageError
from ledger.record import DataObject
from ledger.store import lineage
from ledger.store.ledger import open_ledger
from tests.test_audit import make_outcome, make_run, run_cli

TRAIN = "churn/train/part-0001.csv"


@pytest.fixture
def book(db_url):
    """Seven runs: three read version 3Lg7wqs of the train data, two read 8Hh1pQe, one reads another bucket's
    object of the same key, one reads a prefix whose name starts like it (churn/train-old/)."""
    book = open_ledger()
    records = [make_run(i, train_version="3Lg7wqs") for i in range(3)]
    records += [make_run(i, train_version="8Hh1pQe") for i in range(3, 5)]
    records += [make_run(5, train_version="3Lg7wqs", bucket="other-bucket")]
    odd = make_run(6)
    odd.pins.data["train"] = build_channel_pin("s3://ml-data/churn/train-old/", "S3Prefix", [
        DataObject(key="churn/train-old/part-0001.csv", version_id="3Lg7wqs.1", etag="e", size=1)])
    records.append(odd)
    saved = book.append_many(records)
    for record in saved:
        book.record_outcome(record.run_id, make_outcome(record.job_name, launched=record.created_at))
    return book, saved


def test_three_runs_sharing_one_object_version_are_exactly_the_lineage(book, capsys):
    book, saved = book
    expected = {r.run_id for r in saved[:3]}
    result = lineage.runs_that_read(book, f"s3://ml-data/{TRAIN}", version_id="3Lg7wqs.1")
    assert {r["run_id"] for r in result["runs"]} == expected and len(result["runs"]) == 3
    for run in result["runs"]:
        assert run["read"] == [{"channel": "train", "uri": f"s3://ml-data/{TRAIN}", "key": TRAIN,
                                "version_id": "3Lg7wqs.1", "etag": run["read"][0]["etag"], "size": 1_250_001}]
        assert run["model"]["uri"] == f"s3://ml-artifacts/churn/{run['job_name']}/output/model.tar.gz"
    code, out, _ = run_cli(capsys, "lineage", f"s3://ml-data/{TRAIN}", "--version-id", "3Lg7wqs.1", "--json")
    assert code == 0 and {r["run_id"] for r in json.loads(out)["runs"]} == expected
    code, out, _ = run_cli(capsys, "lineage", f"s3://ml-data/{TRAIN}", "--version-id", "3Lg7wqs.1")
    assert code == 0 and "3 run(s) read" in out and all(run_id in out for run_id in expected)
    assert not any(r.run_id in out for r in saved[3:])


def test_every_version_of_an_object_and_every_object_under_a_prefix(book, capsys):
    book, saved = book
    result = lineage.runs_that_read(book, f"s3://ml-data/{TRAIN}")
    assert len(result["runs"]) == 5
    assert result["versions"] == [{"version_id": "3Lg7wqs.1", "runs": 3}, {"version_id": "8Hh1pQe.1", "runs": 2}]
    prefix = lineage.runs_that_read(book, "s3://ml-data/churn/train/")
    assert {r["run_id"] for r in prefix["runs"]} == {r.run_id for r in saved[:5]}  # not churn/train-old/
    assert all(len(r["read"]) == 3 for r in prefix["runs"])
    assert len(lineage.runs_that_read(book, "s3://ml-data/")["runs"]) == 6
    assert lineage.runs_that_read(book, f"s3://ml-data/{TRAIN}", version_id="nope")["runs"] == []
    code, out, _ = run_cli(capsys, "lineage", "s3://ml-data/nothing.csv")
    assert code == 0 and "No recorded run read" in out
    with pytest.raises(UsageError):
        lineage.runs_that_read(book, "s3://ml-data/churn/train/", version_id="3Lg7wqs.1")
    assert run_cli(capsys, "lineage", "ml-data/churn")[0] == 2
    assert run_cli(capsys, "lineage")[0] == 2


def test_what_went_into_a_model_follows_a_model_used_as_data_upstream(book, capsys):
    book, saved = book
    base = saved[0]
    base_model = f"s3://ml-artifacts/churn/{base.job_name}/output/model.tar.gz"
    tuned = make_run(9, job_name="churn-finetune-009")
    tuned.pins.data["base_model"] = build_channel_pin("s3://ml-artifacts/churn/", "S3Prefix", [
        DataObject(key=f"churn/{base.job_name}/output/model.tar.gz", version_id="m1.Qw", etag="x", size=9)])
    tuned = book.append(tuned)
    book.record_outcome(tuned.run_id, make_outcome(tuned.job_name, launched=tuned.created_at))
    tuned_model = f"s3://ml-artifacts/churn/{tuned.job_name}/output/model.tar.gz"
    result = lineage.inputs_of_artifact(book, tuned_model)
    made = result["made_by"][0]
    assert made["run_id"] == tuned.run_id and made["image"]["digest"] == tuned.pins.image.digest
    assert {c["channel"] for c in made["data"]} == {"train", "validation", "base_model"}
    train = next(c for c in made["data"] if c["channel"] == "train")
    assert [o["version_id"] for o in train["objects"]] == ["3Lg7wqs.0", "3Lg7wqs.1", "3Lg7wqs.2"]
    assert [p["run_id"] for p in made["upstream"]] == [base.run_id]
    assert made["upstream"][0]["model_artifact"]["uri"] == base_model
    tree = made["model_artifact"]["tree_sha256"]
    assert lineage.inputs_of_artifact(book, f"sha256:{tree}")["made_by"][0]["run_id"] == tuned.run_id
    code, out, _ = run_cli(capsys, "lineage", "--artifact", tuned_model)
    assert code == 0 and f"made by run {tuned.run_id}" in out and f"<- model of run {base.run_id}" in out
    assert f"an input was made by run {base.run_id}" in out
    with pytest.raises(NotFound):
        lineage.inputs_of_artifact(book, "s3://ml-artifacts/never/made.tar.gz")
    code, _, err = run_cli(capsys, "lineage", f"s3://ml-data/{TRAIN}", "--artifact", tuned_model)
    assert code == 2 and "not both" in err


def test_summarize_reads():
    reads = [{"channel": "train", "key": f"k{i}", "version_id": f"v{i}"} for i in range(5)]
    assert lineage.summarize_reads(reads) == "train: k0@v0; train: k1@v1; train: k2@v2 (+2 more)"
