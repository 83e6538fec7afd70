"""A ledger made before the Merkle tree and small entries (schema 0004) is upgraded: its entries are not touched,
the tree is built from their bodies as they were written, and they verify and prove as new ones do."""

from __future__ import annotations

import json

from sqlalchemy import create_engine, text

from ledger.cli import main
from ledger.record import (
    ZERO_HASH,
    EnvironmentPin,
    Outcome,
    Pins,
    RunRecord,
    build_entry_body,
    chain_hash,
    launch_payload,
)
from ledger.store import migrate
from ledger.store.ledger import open_ledger, upgrade_database
from tests.test_proofs import rfc_root, rfc_verify_inclusion

PACKAGES = {f"package-{n}": f"{n}.0" for n in range(200)}


def old_ledger(url: str, runs: int = 5) -> list[tuple]:
    """Entries as schema 0004 ledgers wrote them: each body with its package list and metric series inline."""
    book = open_ledger(check_schema=False)
    migrate.upgrade(book.engine, "0004")
    rows, prev = [], ZERO_HASH
    for i in range(runs):
        record = RunRecord(job_name=f"old-{i}", pins=Pins(environment=EnvironmentPin(python="3.11", packages=PACKAGES),
                                                          hyperparameters={"max_depth": str(i)}))
        outcome = Outcome(status="Completed", metrics={"rmse": 1.0 + i},
                          metric_series=[{"name": "rmse", "step": s, "value": 2.0 - s / 10} for s in range(10)])
        for kind, payload in (("run.launched", launch_payload(record)),
                              ("run.finished", {"outcome": outcome.model_dump(mode="json")})):
            body = build_entry_body(kind, record.run_id, payload, "2026-01-01T00:00:00.000000Z")
            entry_hash = chain_hash(prev, body)
            rows.append((len(rows) + 1, record.run_id, kind, body, prev, entry_hash, "2026-01-01T00:00:00.000000Z"))
            prev = entry_hash
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO entries (seq, run_id, kind, body, prev_hash, entry_hash, recorded_at) "
                          "VALUES (:s, :r, :k, :b, :p, :h, :t)"),
                     [dict(zip("srkbpht", row)) for row in rows])
    engine.dispose()
    book.engine.dispose()
    return rows


def test_an_old_ledger_upgrades_and_its_entries_verify_and_prove(db_url, capsys):
    rows = old_ledger(db_url)
    before, after, rebuilt = upgrade_database(open_ledger(check_schema=False))
    assert (before, after, rebuilt) == ("0004", migrate.head_revision(), 5)
    book = open_ledger()
    assert [(e.seq, e.body, e.entry_hash) for e in book.entries()] == [(r[0], r[3], r[5]) for r in rows]
    report = book.verify()
    assert report.ok and report.entries == 10, report.problems
    leaves = [r[3].encode() for r in rows]
    assert bytes.fromhex(report.root_hash) == rfc_root(leaves)
    for seq in range(1, 11):
        _, path = book.inclusion_proof(seq)
        assert rfc_verify_inclusion(leaves[seq - 1], seq - 1, 10, path, rfc_root(leaves))
    old = book.get("old-3")
    assert old.pins.environment.packages == PACKAGES and len(old.outcome.metric_series) == 10
    # A run recorded after the upgrade keeps its package list and series in blobs: small, and the same record.
    new = book.append(RunRecord(job_name="new-0", pins=Pins(environment=EnvironmentPin(python="3.11",
                                                                                       packages=PACKAGES))))
    book.record_outcome(new.run_id, old.outcome)
    newer = book.entries(new.run_id)
    assert all(len(e.body) < 1_500 for e in newer), [len(e.body) for e in newer]
    assert len(rows[0][3]) > 5_000  # the same record, inline, as the old ledger wrote it
    again = book.get(new.run_id)
    assert again.pins.environment.packages == PACKAGES and again.outcome.metric_series == old.outcome.metric_series
    assert book.verify().ok
    assert main(["verify", "--full", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["root_hash"] == book.tree_root()[1].hex()


def test_the_tree_revision_is_not_undone_and_the_ledger_is_left_as_it_was(db_url):
    """A downgrade below 0005 would leave compressed blobs unmarked; it refuses, and the ledger still verifies."""
    import pytest

    from alembic import command

    book = open_ledger()
    run = book.append(RunRecord(job_name="kept", pins=Pins(environment=EnvironmentPin(python="3.11",
                                                                                      packages=PACKAGES))))
    with pytest.raises(RuntimeError, match="0005 is not undone"):
        with book.engine.begin() as conn:
            command.downgrade(migrate._alembic_config(conn), "0004")
    assert migrate.current_revision(book.engine) == migrate.head_revision()
    assert book.get(run.run_id).pins.environment.packages == PACKAGES and book.verify().ok
