"""The log and its projections, on SQLite and on this machine's PostgreSQL (every test here runs on both)."""

from __future__ import annotations

import multiprocessing

import pytest
from sqlalchemy import create_engine, exc, text

from ledger.errors import NotFound, OutdatedSchema, StoreError, UsageError
from ledger.record import DataChannelPin, DataObject, Gap, Outcome, Pins, RunRecord, Verdict
from ledger.store import migrate
from ledger.store.ledger import open_ledger, upgrade_database


def make_record(i: int = 0, project: str = "abalone", **extra) -> RunRecord:
    return RunRecord(
        project=project,
        job_name=f"xgb-{i:04d}",
        backend="local",
        request={"TrainingJobName": f"xgb-{i:04d}", "HyperParameters": {"max_depth": str(3 + i % 4)}},
        pins=Pins(
            hyperparameters={"max_depth": str(3 + i % 4), "eta": "0.2", "objective": "reg:squarederror"},
            data={"train": DataChannelPin(uri="s3://data/abalone/train/", kind="S3Prefix", object_count=1,
                                          objects=[DataObject(key="abalone/train/a.csv", version_id=f"v{i % 3}",
                                                              etag="e", size=10)])},
            gaps=[Gap(what="image", why="refused", fix="use an ECR image")] if i % 5 == 0 else [],
        ),
        **extra,
    )


def tamper(url: str, *statements: str) -> None:
    """Change the database behind the ledger's back, as a careful administrator could: triggers off, SQL, triggers
    back on (verify reports a missing trigger by itself: tests/test_audit_tamper.py), so only the log gives it away."""
    from ledger.store.integrity import SQLITE_GUARDS

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE entries DISABLE TRIGGER entries_append_only"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS entries_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS entries_no_delete"))
        for statement in statements:
            sql, binds = statement if isinstance(statement, tuple) else (statement, {})
            conn.execute(text(sql), binds)
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE entries ENABLE TRIGGER entries_append_only"))
        else:
            for definition in SQLITE_GUARDS.values():
                conn.execute(text(definition))
    engine.dispose()


# --- records round-trip ---------------------------------------------------------------------------------------


def test_record_round_trips_through_the_database(db_url):
    ledger = open_ledger()
    record = make_record(1, request_extra={"nested": [3, 1, 2], "ü": "ünïcode"})
    saved = ledger.append(record)
    got = ledger.get(record.run_id)
    assert got.to_json() == saved.to_json()
    assert got.request == record.request
    assert got.to_dict()["request_extra"] == {"nested": [3, 1, 2], "ü": "ünïcode"}
    assert got.chain.seq == 1 and got.chain.prev_hash == "0" * 64


def test_later_facts_fold_into_the_record(db_url):
    ledger = open_ledger()
    run = ledger.append(make_record(2))
    ledger.record_outcome(run.run_id, Outcome(status="Completed", metrics={"rmse": 2.25}))
    repro = ledger.append(make_record(3, reproduction_of=run.run_id))
    ledger.record_verdict(repro.run_id, Verdict(result="IDENTICAL"))
    got = ledger.get(run.run_id)
    assert got.outcome.status == "Completed" and got.outcome.metrics == {"rmse": 2.25}
    assert got.chain.seq == 2
    assert ledger.get(repro.run_id).verdict.result == "IDENTICAL"
    assert ledger.reproductions_of(run.run_id) == [repro.run_id]
    body = ledger.entries(repro.run_id)[-1].body
    assert run.run_id in body  # the verdict entry names both runs


def test_a_run_is_named_by_id_prefix_or_job_name(db_url):
    ledger = open_ledger()
    runs = ledger.append_many([make_record(i) for i in range(3)])
    target = runs[1]
    assert ledger.resolve(target.run_id) == target.run_id
    ids = [r.run_id for r in runs]
    unique = next(target.run_id[:k] for k in range(1, 27) if [i for i in ids if i.startswith(target.run_id[:k])] == [target.run_id])
    assert ledger.resolve(unique.lower()) == target.run_id
    assert ledger.resolve("xgb-0001") == target.run_id
    with pytest.raises(UsageError, match="names 3 runs"):
        ledger.resolve(target.run_id[:2])
    with pytest.raises(NotFound, match="no run nope .*ledger runs"):
        ledger.resolve("nope")


def test_appending_the_same_run_twice_is_refused_and_writes_nothing(db_url):
    ledger = open_ledger()
    run = ledger.append(make_record(1))
    with pytest.raises(UsageError, match="already recorded"):
        ledger.append(run)
    assert ledger.head()[0] == 1


# --- queries -----------------------------------------------------------------------------------------------------


def test_runs_frame_filters(db_url):
    ledger = open_ledger()
    runs = ledger.append_many([make_record(i, project="a" if i < 6 else "b") for i in range(10)])
    for i, run in enumerate(runs):
        ledger.record_outcome(run.run_id, Outcome(status="Failed" if i == 9 else "Completed",
                                                  metrics={"rmse": 1.0 + i / 10}))
    frame = ledger.runs()
    assert len(frame) == 10
    assert list(frame["run_id"]) == sorted((r.run_id for r in runs), reverse=True)
    assert {"params.max_depth", "params.eta", "metrics.rmse"} <= set(frame.columns)
    assert len(ledger.runs(project="b")) == 4
    assert list(ledger.runs(status="Failed")["job_name"]) == ["xgb-0009"]
    deep = ledger.runs(where="params.max_depth >= 5")
    assert sorted(deep["job_name"]) == [f"xgb-{i:04d}" for i in range(10) if 3 + i % 4 >= 5]
    assert sorted(ledger.runs(where="params.max_depth = '3' and metrics.rmse < 1.45")["job_name"]) == [
        "xgb-0000", "xgb-0004"]
    assert len(ledger.runs(where="params.objective = 'reg:squarederror' and project = 'a'")) == 6
    assert len(ledger.runs(where="gap_count > 0")) == 2
    assert len(ledger.runs(limit=3)) == 3
    with pytest.raises(UsageError, match="unknown field"):
        ledger.runs(where="colour = 'red'")


# --- the chain ----------------------------------------------------------------------------------------------------


def _append_worker(args):
    url, worker = args
    ledger = open_ledger(url)
    for i in range(250):
        ledger.append(make_record(worker * 1000 + i, project=f"w{worker}"))
    ledger.engine.dispose()
    return worker


def test_four_processes_appending_at_once_leave_one_linear_chain(db_url):
    open_ledger().engine.dispose()  # the schema exists before the writers start
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert sorted(pool.map(_append_worker, [(db_url, w) for w in range(4)])) == [0, 1, 2, 3]
    ledger = open_ledger()
    entries = ledger.entries()
    assert [e.seq for e in entries] == list(range(1, 1001))
    assert all(b.prev_hash == a.entry_hash for a, b in zip(entries, entries[1:]))
    report = ledger.verify()
    assert report.ok and report.entries == 1000
    assert len(ledger.runs(limit=None)) == 1000


def test_the_database_refuses_a_fork_and_any_update_or_delete(db_url):
    ledger = open_ledger()
    ledger.append_many([make_record(i) for i in range(2)])
    first = ledger.entries()[0]
    with ledger.engine.begin() as conn, pytest.raises(exc.IntegrityError):
        conn.execute(text("INSERT INTO entries (seq, run_id, kind, body, prev_hash, entry_hash, recorded_at) "
                          "VALUES (99, 'x', 'run.launched', '{}', :p, :h, 'now')"),
                     {"p": first.prev_hash, "h": "f" * 64})
    for statement in ("UPDATE entries SET body = 'x' WHERE seq = 1", "DELETE FROM entries WHERE seq = 2"):
        with pytest.raises(exc.DBAPIError, match="append-only"):
            with ledger.engine.begin() as conn:
                conn.execute(text(statement))
    assert ledger.verify().ok


@pytest.fixture
def six_entries(db_url):
    ledger = open_ledger()
    runs = ledger.append_many([make_record(i) for i in range(4)])
    ledger.record_outcome(runs[0].run_id, Outcome(status="Completed", metrics={"rmse": 2.0}))
    ledger.record_outcome(runs[1].run_id, Outcome(status="Failed"))
    assert ledger.verify().ok
    return ledger, {e.seq: e for e in ledger.entries()}


def _first_bad(ledger):
    report = ledger.verify()
    assert not report.ok
    return report.first_bad


def test_verify_catches_a_changed_byte_in_a_body(six_entries, db_url):
    ledger, entries = six_entries
    body = entries[3].body.replace('"eta":"0.2"', '"eta":"0.3"')
    assert body != entries[3].body
    tamper(db_url, ("UPDATE entries SET body = :body WHERE seq = 3", {"body": body}))
    bad = _first_bad(ledger)
    assert (bad["seq"], bad["run_id"]) == (3, entries[3].run_id)
    assert "body or the hash" in bad["problem"]


def test_verify_catches_a_changed_hash(six_entries, db_url):
    ledger, entries = six_entries
    tamper(db_url, f"UPDATE entries SET entry_hash = '{'a' * 64}' WHERE seq = 4")
    bad = _first_bad(ledger)
    assert (bad["seq"], bad["run_id"]) == (4, entries[4].run_id)


def test_verify_catches_a_deleted_entry_in_the_middle(six_entries, db_url):
    ledger, entries = six_entries
    tamper(db_url, "DELETE FROM entries WHERE seq = 3")
    bad = _first_bad(ledger)
    assert (bad["seq"], bad["run_id"]) == (4, entries[4].run_id)
    assert "entry 3 is missing" in bad["problem"]


def test_verify_catches_two_swapped_entries(six_entries, db_url):
    ledger, entries = six_entries
    a, b = entries[2], entries[3]
    tamper(
        db_url,
        "UPDATE entries SET seq = -1 WHERE seq = 2",
        "UPDATE entries SET seq = 2 WHERE seq = 3",
        "UPDATE entries SET seq = 3 WHERE seq = -1",
    )
    bad = _first_bad(ledger)
    assert bad["seq"] == 2 and bad["run_id"] == b.run_id != a.run_id


def test_verify_catches_a_projection_row_that_disagrees_and_rebuild_repairs_it(six_entries, db_url):
    ledger, entries = six_entries
    run_id = entries[5].run_id  # the run whose outcome entry 5 recorded
    tamper(db_url, f"UPDATE runs SET status = 'Completed' WHERE run_id = '{entries[6].run_id}'",
           f"UPDATE params SET value = '9' WHERE run_id = '{run_id}' AND key = 'max_depth'")
    report = ledger.verify()
    assert not report.ok
    named = {(p["run_id"], p["seq"]) for p in report.problems}
    assert named == {(entries[6].run_id, 6), (run_id, 5)}
    assert any("status" in p["problem"] for p in report.problems)
    assert ledger.verify(check_projections=False).ok  # the chain itself is intact
    assert ledger.rebuild() == 4
    assert ledger.verify().ok


# --- schema versions and bad input ---------------------------------------------------------------------------------


def test_an_outdated_database_is_refused_until_upgraded(db_url):
    ledger = open_ledger(check_schema=False)
    migrate.upgrade(ledger.engine, "0001")
    with pytest.raises(OutdatedSchema, match="schema 0001.*ledger db upgrade"):
        open_ledger()
    before, after, _ = upgrade_database(open_ledger(check_schema=False))
    assert (before, after) == ("0001", migrate.head_revision())
    assert open_ledger().runs().empty


def test_upgrade_rebuilds_projections_of_an_old_log(db_url):
    ledger = open_ledger()
    runs = ledger.append_many([make_record(i) for i in range(3)])
    # Simulate a database from before the projections existed: drop them and go back to 0001.
    tamper(db_url, "DROP TABLE runs", "DROP TABLE params", "DROP TABLE metrics", "DROP TABLE data_objects",
           "DROP TABLE blobs", "UPDATE alembic_version SET version_num = '0001'")
    before, after, rebuilt = upgrade_database(open_ledger(check_schema=False))
    assert before == "0001" and rebuilt == 3
    assert open_ledger().get(runs[2].job_name).run_id == runs[2].run_id


def test_an_unreachable_database_is_a_one_line_error():
    with pytest.raises(StoreError) as caught:
        open_ledger("postgresql://postgres@127.0.0.1:1/nowhere")
    message = str(caught.value)
    assert "\n" not in message and "cannot open the database" in message and "LEDGER_DB_URL" in message


def test_blobs_are_content_addressed(db_url):
    ledger = open_ledger()
    digest = ledger.put_blob(b"diff --git a/x b/x\n")
    assert ledger.put_blob(b"diff --git a/x b/x\n") == digest
    assert ledger.get_blob(digest) == b"diff --git a/x b/x\n"
    with pytest.raises(NotFound):
        ledger.get_blob("0" * 64)


@pytest.mark.parametrize("statements", [
    ("DELETE FROM entries WHERE seq = 4",),  # at the boundary of the second of three segments
    ("DELETE FROM entries WHERE seq = 1",),
    ("UPDATE entries SET entry_hash = '" + "b" * 64 + "' WHERE seq = 3",),
    ("UPDATE entries SET seq = -1 WHERE seq = 3", "UPDATE entries SET seq = 3 WHERE seq = 4",
     "UPDATE entries SET seq = 4 WHERE seq = -1"),
    (),
])
def test_the_parallel_chain_check_finds_what_the_serial_one_finds(six_entries, db_url, monkeypatch, statements):
    from ledger.store import integrity

    ledger, _ = six_entries
    tamper(db_url, *statements)
    serial = integrity.check_chain(ledger.iter_entries())
    monkeypatch.setattr(integrity, "PARALLEL_FROM", 0)
    parallel = integrity.check_entries(ledger, 1, ledger.seq_range()[1], integrity.ZERO_HASH, workers=3)
    assert parallel[:3] == serial[:3]
    assert parallel[3][:1] == serial[3][:1]  # the same first bad entry, with the same words
    assert bool(parallel[3]) == bool(statements)


def test_a_later_fact_touches_only_the_projection_rows_it_changes(db_url):
    """A run.finished entry updates the run's row and replaces its metrics; its params and data objects, and every
    other run's rows, are not written."""
    from sqlalchemy import event

    book = open_ledger(db_url)
    run = book.append(make_record(1))
    other = book.append(make_record(2))
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_rest) -> None:
        statements.append(statement)

    event.listen(book.engine, "before_cursor_execute", seen)
    try:
        book.record_outcome(run.run_id, Outcome(status="Completed", metrics={"rmse": 1.5},
                                                metric_series=[{"name": "rmse", "step": s, "value": 2.0 - s / 10}
                                                               for s in range(5)]))
    finally:
        event.remove(book.engine, "before_cursor_execute", seen)
    writes = [s for s in statements if s.lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE")]
    touched = {s.split()[2] if s.lstrip().upper().startswith(("INSERT", "DELETE")) else s.split()[1] for s in writes}
    assert touched <= {"entries", "tree_nodes", "blobs", "runs", "metrics", "mlflow_outbox"}, writes
    assert not [s for s in writes if "params" in s or "data_objects" in s]
    assert sum(s.lstrip().upper().startswith("UPDATE RUNS") for s in writes) == 1
    assert book.get(run.run_id).outcome.metrics == {"rmse": 1.5}
    assert book.get(other.run_id).status == other.status
    report = book.verify()
    assert report.ok, report.problems
