"""Tamper evidence beyond the chain: an edited HTML or Markdown report is caught by `ledger audit check`, a dropped
or disabled append-only trigger is a finding of `ledger verify`, and the Markdown report escapes HTML as the HTML
report does. The store parts run on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from sqlalchemy import create_engine, text

from ledger import audit
from ledger.record import Gap
from ledger.store.ledger import open_ledger
from tests.test_audit import make_outcome, make_run, run_cli, seed

# --- 13. an edited HTML or Markdown report ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["report.html", "report.md"])
def test_a_word_changed_in_a_signed_report_fails_check_as_it_fails_verify_key(db_url, tmp_path, capsys, name):
    book = open_ledger()
    runs = seed(book)
    key = tmp_path / "signing.key"
    assert run_cli(capsys, "audit", "keygen", str(key))[0] == 0
    report = tmp_path / name
    code, _, err = run_cli(capsys, "audit", runs["gappy"].run_id, "-o", str(report), "--sign", str(key))
    assert code == 0, err
    code, out, err = run_cli(capsys, "audit", "check", str(report))
    assert code == 0 and "not checked" not in out, err

    original = report.read_text(encoding="utf-8")
    edited = original.replace("ECR refused describe_images", "ECR allowed describe_images", 1)  # a gap's words
    assert edited != original
    report.write_text(edited, encoding="utf-8")
    code, _, err = run_cli(capsys, "audit", "verify", str(report), "--key", f"{key}.pub")
    assert code == 3 and "changed after it was signed" in err
    code, _, err = run_cli(capsys, "audit", "check", str(report))
    assert code == 3 and "changed after it was made" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("name", ["report.html", "report.md"])
def test_an_edit_inside_the_embedded_integrity_data_is_caught_too(db_url, tmp_path, capsys, name):
    book = open_ledger()
    runs = seed(book)
    report = tmp_path / name
    assert run_cli(capsys, "audit", runs["clean"].run_id, "-o", str(report))[0] == 0
    data = report.read_text(encoding="utf-8")
    made = re.search(r'"generated_at": "([^"]+)"', data).group(1)
    report.write_text(data.replace(f'"generated_at": "{made}"', '"generated_at": "2020-01-01T00:00:00Z"'),
                      encoding="utf-8")
    code, _, err = run_cli(capsys, "audit", "check", str(report))
    assert code == 3 and "changed after it was made" in err


def test_a_report_without_a_content_digest_says_its_text_was_not_checked(db_url, tmp_path, capsys):
    book = open_ledger()
    runs = seed(book)
    report = tmp_path / "report.html"
    assert run_cli(capsys, "audit", runs["clean"].run_id, "-o", str(report))[0] == 0
    older = re.sub(r', "content_sha256": "[0-9a-f]{64}"|"content_sha256": "[0-9a-f]{64}", ', "", report.read_text())
    assert "content_sha256" not in older
    report.write_text(older)  # as a ledger before the content digest wrote it
    code, out, _ = run_cli(capsys, "audit", "check", str(report))
    assert code == 0 and "not checked: the report's own text" in out
    code, out, _ = run_cli(capsys, "audit", "check", str(report), "--json")
    assert code == 0 and json.loads(out)["content_checked"] is False


def test_the_content_digest_is_the_sha256_of_the_file_with_it_zeroed():
    report = audit.build_report([make_run(2).model_copy(update={"outcome": make_outcome("churn-xgb-002")})])
    for rendered in (audit.render_html(report), audit.render_markdown(report)):
        sealed = re.findall(r'"content_sha256": "([0-9a-f]{64})"', rendered)
        assert len(sealed) == 1 and sealed[0] != audit.CONTENT_SEAL
        import hashlib

        zeroed = rendered.replace(sealed[0], audit.CONTENT_SEAL).encode("utf-8")
        assert hashlib.sha256(zeroed).hexdigest() == sealed[0]
        assert audit.plan_content_sha256(rendered.encode("utf-8"), sealed[0]) == sealed[0]


# --- 14. missing append-only guards -------------------------------------------------------------------------------


def _admin(url: str, *statements: str) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def _guard_findings(capsys) -> tuple[int, list[dict], str]:
    code, out, _ = run_cli(capsys, "verify", "--json")
    problems = json.loads(out)["problems"]
    _, _, err = run_cli(capsys, "verify")
    return code, [p for p in problems if p.get("kind") == "guard"], err


@pytest.fixture
def two_runs(db_url):
    book = open_ledger()
    book.append_many([make_run(1), make_run(2)])
    return book


def test_a_dropped_trigger_is_a_finding_of_verify_beside_an_intact_chain(two_runs, db_url, tmp_path, capsys):
    assert run_cli(capsys, "verify")[0] == 0
    dropped = "entries_append_only" if db_url.startswith("postgresql") else "entries_no_delete"
    _admin(db_url, f"DROP TRIGGER {dropped}" + (" ON entries" if db_url.startswith("postgresql") else ""))
    code, guards, err = _guard_findings(capsys)
    assert code == 3 and [g["guard"] for g in guards] == [dropped]
    assert "is missing" in guards[0]["problem"] and guards[0]["seq"] is None
    assert err.startswith(f"error: TAMPERED: the append-only guard {dropped} is missing") and err.count("\n") == 1
    report = two_runs.verify()
    assert not report.ok and report.entries == 2 and report.problems == guards  # the chain itself is intact
    for name in ("r.html", "r.md"):  # an audit report, and an anchor, say so too, naming no entry
        code, _, err = run_cli(capsys, "audit", "-o", str(tmp_path / name))
        assert code == 3 and f"did not verify: the append-only guard {dropped} is missing" in err
        assert f"the append-only guard {dropped} is missing" in (tmp_path / name).read_text()
        assert "entry None" not in (tmp_path / name).read_text()
    code, _, err = run_cli(capsys, "anchor", "--to", (tmp_path / "anchors").as_uri())
    assert code == 3 and "does not verify: the append-only guard" in err
    _admin(db_url, "DELETE FROM entries WHERE seq = 1")  # nothing refuses it now
    report = two_runs.verify()
    assert "entry 1 is missing" in report.first_bad["problem"] and report.first_bad.get("kind") is None
    assert any(p.get("kind") == "guard" for p in report.problems)


def test_a_disabled_or_neutered_trigger_is_a_finding(two_runs, db_url, capsys):
    if db_url.startswith("postgresql"):
        for how in ("DISABLE TRIGGER", "ENABLE REPLICA TRIGGER"):  # a replica trigger skips ordinary sessions
            _admin(db_url, f"ALTER TABLE entries {how} entries_append_only")
            code, guards, _ = _guard_findings(capsys)
            assert code == 3 and "does not fire in ordinary sessions" in guards[0]["problem"]
        _admin(db_url, "ALTER TABLE entries ENABLE TRIGGER entries_append_only",
               "CREATE OR REPLACE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN RETURN OLD; END $$")
        code, guards, _ = _guard_findings(capsys)
        assert code == 3 and "no longer raises" in guards[0]["problem"]
    else:
        _admin(db_url, "DROP TRIGGER entries_no_update",
               "CREATE TRIGGER entries_no_update BEFORE UPDATE OF run_id ON entries "
               "BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END")
        code, guards, _ = _guard_findings(capsys)
        assert code == 3 and [g["guard"] for g in guards] == ["entries_no_update"]
        assert "does not refuse every change" in guards[0]["problem"]


# --- 15. Markdown escapes HTML ------------------------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
IMAGE = '<img src=x onerror="alert(2)">'


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _hostile_report() -> dict:
    run = make_run(4, job_name=f"churn{SCRIPT}")
    run.pins.hyperparameters["note"] = IMAGE
    run.pins.gaps.append(Gap(what="code", why=f"the branch {SCRIPT} is not pushed", fix=f"push {IMAGE}"))
    run.request["Tags"].append({"Key": "owner", "Value": IMAGE})
    outcome = make_outcome(run.job_name)
    outcome.metrics[f"auc{IMAGE}"] = 0.5
    return audit.build_report([run.model_copy(update={"outcome": outcome})])


def test_markdown_reports_escape_html_as_the_html_form_does():
    from markdown_it import MarkdownIt

    report = _hostile_report()
    markdown = audit.render_markdown(report)
    assert "<script" not in markdown and "<img" not in markdown
    shown = Tags()
    shown.feed(MarkdownIt("commonmark").enable("table").render(markdown))  # raw HTML passes through CommonMark
    assert "script" not in shown.tags and "img" not in shown.tags
    words = "".join(shown.text)
    assert f"churn{SCRIPT}" in words and "the branch <script>alert(1)</script> is not pushed" in words
    assert 'alert(2)">' in words  # the hyperparameter, the tag, the fix and the metric name are shown as text

    page = Tags()
    page.feed(audit.render_html(report))
    assert page.tags.count("script") == 1 and "img" not in page.tags  # only the integrity data's JSON


def test_markdown_escaping_keeps_the_integrity_data_readable(db_url, tmp_path, capsys):
    book = open_ledger()
    (saved,) = book.append_many([make_run(5, job_name=f"churn{SCRIPT}")])
    report = tmp_path / "report.md"
    assert run_cli(capsys, "audit", saved.run_id, "-o", str(report))[0] == 0
    code, out, err = run_cli(capsys, "audit", "check", str(report))
    assert code == 0, err
    assert "&lt;script&gt;" in report.read_text()
