"""An audit report checked with no database at all (`ledger audit check FILE --offline`): its checkpoint, signed with
the ledger operator's key, and every included entry's RFC 9162 inclusion proof, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from ledger import checkpoint
from ledger.audit.report import report_digest
from tests.test_audit import run_cli, seed
from tests.test_proofs import rfc_verify_inclusion
from tests.test_store import tamper


@pytest.fixture
def signed_reports(db_url, tmp_path, capsys):
    """A ledger, a key, and the same report as JSON, HTML and Markdown, its checkpoint signed with the key."""
    from ledger.store.ledger import open_ledger

    book = open_ledger()
    runs = seed(book)
    assert run_cli(capsys, "audit", "keygen", str(tmp_path / "key"))[0] == 0
    paths = {}
    for name in ("report.json", "report.html", "report.md"):
        code, _, err = run_cli(capsys, "audit", runs["gappy"].run_id, "-o", str(tmp_path / name), "--sign",
                               str(tmp_path / "key"))
        assert code == 0, err
        paths[name] = tmp_path / name
    report = json.loads(paths["report.json"].read_text())
    return book, runs, paths, report["integrity"]["checkpoint"]["verifier_key"]


def without_database(monkeypatch, tmp_path):
    """No ledger can be opened from here on: an offline check must not need one."""
    monkeypatch.setenv("LEDGER_DB_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    monkeypatch.setenv("LEDGER_HOME", str(tmp_path / "no-ledger-here"))


def test_every_form_checks_offline_with_the_operators_key(signed_reports, monkeypatch, tmp_path, capsys):
    book, runs, paths, key = signed_reports
    report = json.loads(paths["report.json"].read_text())
    checkpoint_text = report["integrity"]["checkpoint"]["checkpoint"]
    parsed, _ = checkpoint.open_checkpoint(checkpoint_text.encode(), [checkpoint.Verifier.parse(key)])
    for entry in report["integrity"]["included_entries"]:  # what the test's own RFC 9162 verifier says
        path = [bytes.fromhex(h) for h in entry["audit_path"]]
        assert rfc_verify_inclusion(entry["body"].encode(), entry["seq"] - 1, parsed.size, path, parsed.root)
    without_database(monkeypatch, tmp_path)
    for path in paths.values():
        code, out, err = run_cli(capsys, "audit", "check", str(path), "--offline", "--key", key, "--json")
        result = json.loads(out)
        assert code == 0 and result["ok"] and result["offline"], (path.name, err, result["problems"])
        assert result["entries_checked"] == len(report["integrity"]["included_entries"])
        assert result["checkpoint"]["signature"] == "verified with the key given"
    assert json.loads(run_cli(capsys, "audit", "check", str(paths["report.json"]), "--offline", "--json")[1])[
        "sections_checked"] == len(report["runs"])


def test_a_wrong_key_fails_the_checkpoint(signed_reports, tmp_path, capsys):
    _, _, paths, _ = signed_reports
    other, _ = checkpoint.generate_key(json.loads(paths["report.json"].read_text())["integrity"]["checkpoint"]["origin"])
    wrong = checkpoint.Signer.parse(other).verifier().encode()
    code, _, err = run_cli(capsys, "audit", "check", str(paths["report.html"]), "--offline", "--key", wrong)
    assert code == 2 and "the checkpoint does not verify" in err


def test_a_body_changed_in_the_database_fails_its_proof_in_the_report(db_url, tmp_path, monkeypatch, capsys):
    from ledger.store.ledger import open_ledger

    book = open_ledger()
    runs = seed(book)
    launched = book.entries(runs["clean"].run_id)[0]
    tamper(db_url, ("UPDATE entries SET body = :b WHERE seq = :s",
                    {"b": launched.body.replace("credit-risk", "marketing"), "s": launched.seq}))
    assert run_cli(capsys, "audit", runs["clean"].run_id, "-o", str(tmp_path / "report.html"))[0] == 3  # verify
    without_database(monkeypatch, tmp_path)
    code, _, err = run_cli(capsys, "audit", "check", str(tmp_path / "report.html"), "--offline")
    assert code == 3 and f"entry {launched.seq}" in err and "not in the log the checkpoint describes" in err


def test_a_forged_report_fails_offline(signed_reports, tmp_path, monkeypatch, capsys):
    """A forger edits a body in the JSON report and recomputes the report's digest: the body no longer hashes to
    its leaf; with the leaf recomputed too, the proof no longer reaches the signed root."""
    _, runs, paths, key = signed_reports
    report = json.loads(paths["report.json"].read_text())
    entry = next(e for e in report["integrity"]["included_entries"] if e["kind"] == "run.finished")
    entry["body"] = entry["body"].replace("0.912", "0.962")
    report["digest"] = report_digest(report)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(report))
    without_database(monkeypatch, tmp_path)
    code, _, err = run_cli(capsys, "audit", "check", str(forged), "--offline", "--key", key)
    assert code == 3 and f"entry {entry['seq']}" in err and "does not hash to its leaf" in err
    from ledger import merkle

    entry["leaf_hash"] = merkle.entry_leaf_hash(entry["body"]).hex()
    report["digest"] = report_digest(report)
    forged.write_text(json.dumps(report))
    code, _, err = run_cli(capsys, "audit", "check", str(forged), "--offline", "--key", key)
    assert code == 3 and "does not hash to its entry hash" in err


def test_a_section_that_does_not_say_what_its_entries_say_fails(signed_reports, tmp_path, capsys):
    _, runs, paths, key = signed_reports
    report = json.loads(paths["report.json"].read_text())
    section = next(r for r in report["runs"] if r["run_id"] == runs["gappy"].run_id)
    section["hyperparameters"]["max_depth"] = "9"
    report["digest"] = report_digest(report)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(report))
    code, _, err = run_cli(capsys, "audit", "check", str(forged), "--offline", "--key", key)
    assert code == 3 and "hyperparameters" in err


def test_a_report_without_a_checkpoint_says_how_to_check_it(signed_reports, tmp_path, capsys):
    _, _, paths, _ = signed_reports
    report = json.loads(paths["report.json"].read_text())
    report["integrity"]["checkpoint"] = None
    report["digest"] = report_digest(report)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(report))
    code, _, err = run_cli(capsys, "audit", "check", str(old), "--offline")
    assert code == 2 and "carries no checkpoint" in err and len(err.strip().splitlines()) == 1
