"""record.py is pure: canonical JSON, digests and the fold of entries, tested without fixtures."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.record import (
    ZERO_HASH,
    DataChannelPin,
    DataObject,
    Gap,
    Outcome,
    Pins,
    RunRecord,
    build_entry_body,
    canonical_json,
    chain_hash,
    fold_entries,
    launch_payload,
    sha256_hex,
)

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20) | st.floats(
    allow_nan=False, allow_infinity=False
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@st.composite
def records(draw):
    objects = draw(
        st.lists(
            st.builds(DataObject, key=st.text(min_size=1, max_size=30), version_id=st.none() | st.text(max_size=32),
                      etag=st.none() | st.text(max_size=34), size=st.none() | st.integers(0, 2**40)),
            max_size=5,
        )
    )
    return RunRecord(
        job_name=draw(st.text(min_size=1, max_size=63)),
        project=draw(st.text(min_size=1, max_size=20)),
        request=draw(st.dictionaries(st.text(max_size=15), json_values, max_size=6)),
        pins=Pins(
            hyperparameters=draw(st.dictionaries(st.text(max_size=15), st.text(max_size=15), max_size=8)),
            data={"train": DataChannelPin(uri="s3://bucket/train/", objects=objects, object_count=len(objects))},
            gaps=draw(st.lists(st.builds(Gap, what=st.text(max_size=10), why=st.text(max_size=10)), max_size=3)),
        ),
        outcome=Outcome(status=draw(st.sampled_from([None, "Completed", "Failed"])),
                        metrics=draw(st.dictionaries(st.text(max_size=10), st.floats(allow_nan=False,
                                                                                      allow_infinity=False)))),
    )


def _reordered(value):
    """The same JSON value with every object's keys in reverse insertion order."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


@settings(max_examples=150, deadline=None)
@given(records())
def test_equal_records_have_byte_equal_canonical_form(record):
    data = record.to_dict()
    twin = RunRecord.from_dict(_reordered(data))  # equal record, built from differently ordered input
    assert twin == record
    assert twin.to_json().encode() == record.to_json().encode()
    assert twin.digest() == record.digest()


@settings(max_examples=150, deadline=None)
@given(records())
def test_record_round_trips_through_json_without_loss(record):
    text = record.to_json()
    again = RunRecord.from_json(text)
    assert again.to_json() == text
    assert json.loads(text) == record.to_dict()


@given(json_values)
def test_canonical_json_is_sorted_and_compact(value):
    text = canonical_json({"b": value, "a": 1})
    assert text.startswith('{"a":1,"b":')
    assert ": " not in text.replace('": "', "") or isinstance(value, str)  # no separator whitespace added
    assert json.loads(text) == {"a": 1, "b": value}


def test_canonical_json_is_utf8_not_escaped():
    assert canonical_json({"name": "abalone é"}) == '{"name":"abalone é"}'


def test_unknown_fields_survive_a_round_trip():
    data = RunRecord(job_name="j").to_dict()
    data["added_by_a_newer_ledger"] = {"x": [1, 2]}
    data["pins"]["image"]["added_too"] = "y"
    record = RunRecord.from_dict(data)
    assert record.to_dict()["added_by_a_newer_ledger"] == {"x": [1, 2]}
    assert record.to_dict()["pins"]["image"]["added_too"] == "y"


def test_chain_hash_is_sha256_of_prev_hash_and_body_digest():
    body = '{"a":1}'
    assert chain_hash(ZERO_HASH, body) == sha256_hex(ZERO_HASH + sha256_hex(body))
    assert chain_hash(ZERO_HASH, body) != chain_hash("1" * 64, body)


def test_fold_entries_applies_later_facts_in_order():
    record = RunRecord(job_name="j")
    run_id = record.run_id
    launched = build_entry_body("run.launched", run_id, launch_payload(record))
    first = build_entry_body("run.finished", run_id, {"outcome": {"status": "InProgress"}})
    second = build_entry_body("run.finished", run_id, {"outcome": {"status": "Completed", "metrics": {"rmse": 1.5}}})
    note = build_entry_body("run.annotated", run_id, {"mlflow_run_id": "abc"})
    folded = fold_entries([(1, launched, ZERO_HASH, "h1"), (2, first, "h1", "h2"), (3, second, "h2", "h3"),
                           (4, note, "h3", "h4")])
    assert folded.outcome.status == "Completed"
    assert folded.outcome.metrics == {"rmse": 1.5}
    assert folded.to_dict()["annotations"] == {"mlflow_run_id": "abc"}
    assert folded.chain.seq == 4 and folded.chain.entry_hash == "h4"


def test_the_package_list_blob_is_always_the_lists_own():
    """The last list's blob is reused only for an equal list: a list changed in place, or another, gets its own."""
    from ledger.record import blob_bytes, plan_small_payload, sha256_hex

    def launched(packages):
        return {"pins": {"environment": {"packages": packages}}}

    packages = {"numpy": "2.1.0", "pandas": "2.2.3"}
    first, blobs = plan_small_payload("run.launched", launched(packages))
    assert first["pins"]["environment"]["packages_sha256"] == sha256_hex(blob_bytes(packages))
    assert blobs == {sha256_hex(blob_bytes(packages)): blob_bytes(packages)}
    packages["numpy"] = "2.2.0"  # the caller's dict, changed after the first plan
    second, blobs = plan_small_payload("run.launched", launched(packages))
    assert second["pins"]["environment"]["packages_sha256"] == sha256_hex(blob_bytes(packages))
    assert second["pins"]["environment"]["packages_sha256"] != first["pins"]["environment"]["packages_sha256"]
    third, _ = plan_small_payload("run.launched", launched({"numpy": "2.1.0", "pandas": "2.2.3"}))
    assert third["pins"]["environment"]["packages_sha256"] == first["pins"]["environment"]["packages_sha256"]
