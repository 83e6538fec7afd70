"""The command line: every command has help, reading commands speak JSON, errors are one line with their exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager

import pytest
import typer

from ledger.cli import app, main
from ledger.record import Outcome
from ledger.store import migrate
from ledger.store.ledger import open_ledger
from tests.test_store import make_record, tamper


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _all_commands(group=None, prefix=()):
    command = group or typer.main.get_command(app)
    for name, sub in getattr(command, "commands", {}).items():
        yield prefix + (name,)
        yield from _all_commands(sub, prefix + (name,))


def test_every_command_has_help(capsys):
    commands = list(_all_commands())
    assert {("runs",), ("show",), ("verify",), ("db", "upgrade"), ("db", "rebuild")} <= set(commands)
    for command in commands:
        code, out, _ = run_cli(capsys, *command, "--help")
        assert code == 0 and "Usage:" in out, command
        summary = typer.main.get_command(app)
        for part in command:
            summary = summary.commands[part]
        assert (summary.help or "").strip(), f"{' '.join(command)} has no help text"


@pytest.fixture
def seeded(db_url):
    ledger = open_ledger()
    runs = ledger.append_many([make_record(i) for i in range(3)])
    ledger.record_outcome(runs[0].run_id, Outcome(status="Completed", metrics={"rmse": 2.5}))
    return ledger, runs


def test_runs_lists_and_filters_as_table_and_json(seeded, capsys):
    ledger, runs = seeded
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0 and all(r.run_id in out for r in runs)
    code, out, _ = run_cli(capsys, "runs", "--json", "--status", "Completed")
    rows = json.loads(out)
    assert code == 0 and [r["run_id"] for r in rows] == [runs[0].run_id]
    assert rows[0]["metrics.rmse"] == 2.5 and rows[0]["params.max_depth"] == "3"
    code, out, _ = run_cli(capsys, "runs", "--json", "--where", "params.max_depth > 3")
    assert sorted(r["job_name"] for r in json.loads(out)) == ["xgb-0001", "xgb-0002"]


def test_show_prints_the_whole_record(seeded, capsys):
    ledger, runs = seeded
    code, out, _ = run_cli(capsys, "show", runs[0].job_name, "--json")
    assert code == 0 and json.loads(out) == ledger.get(runs[0].run_id).to_dict()
    code, out, _ = run_cli(capsys, "show", runs[0].run_id)
    assert code == 0 and runs[0].run_id in out and "rmse" in out and "Gaps (1)" in out


def test_verify_passes_then_names_the_tampered_entry_with_exit_3(seeded, capsys, db_url):
    ledger, runs = seeded
    code, out, _ = run_cli(capsys, "verify")
    assert code == 0 and "OK: 4 entries" in out
    entry = ledger.entries()[1]
    tamper(db_url, ("UPDATE entries SET body = :b WHERE seq = 2", {"b": entry.body.replace("xgb", "xgc")}))
    code, out, err = run_cli(capsys, "verify", "--full")  # a plain verify checks only the entries since the last
    assert code == 3
    assert f"entry 2 (run {entry.run_id})" in err and err.count("\n") == 1
    code, out, _ = run_cli(capsys, "verify", "--full", "--json")
    assert code == 3 and json.loads(out)["first_bad"]["seq"] == 2


@pytest.mark.parametrize(
    "args, exit_code, text",
    [
        (("show", "NOSUCHRUN"), 1, "no run NOSUCHRUN"),
        (("runs", "--where", "params.x ~ 3"), 2, "cannot read the condition"),
        (("runs", "--limit", "many"), 2, "Invalid value"),
    ],
)
def test_bad_input_is_one_line_with_its_exit_code(seeded, capsys, args, exit_code, text):
    code, out, err = run_cli(capsys, *args)
    assert code == exit_code and text in err
    assert out == ""


def test_an_ambiguous_run_is_a_usage_error(seeded, capsys):
    _, runs = seeded
    code, _, err = run_cli(capsys, "show", runs[0].run_id[:3])
    assert code == 2 and "names 3 runs" in err and err.count("\n") == 1


def test_outdated_schema_names_the_upgrade_command_and_upgrade_fixes_it(db_url, capsys):
    migrate.upgrade(open_ledger(check_schema=False).engine, "0001")
    code, _, err = run_cli(capsys, "runs")
    assert code == 1 and "ledger db upgrade" in err and err.count("\n") == 1
    code, out, _ = run_cli(capsys, "db", "upgrade")
    assert code == 0 and "Upgraded schema 0001" in out
    assert run_cli(capsys, "runs")[0] == 0


def test_an_unreachable_database_url_is_one_line(ledger_home, monkeypatch, capsys):
    monkeypatch.setenv("LEDGER_DB_URL", "postgresql://postgres@127.0.0.1:1/ledger")
    code, _, err = run_cli(capsys, "runs")
    assert code == 1 and "cannot open the database" in err and err.count("\n") == 1


@contextmanager
def read_only_directory(path):
    """A directory nobody may write, root included (tests run as root in CI: chattr +i binds root too)."""
    path.mkdir(parents=True)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            yield path
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)


def test_a_read_only_ledger_home_is_one_line_and_writes_nothing(ledger_home, capsys):
    with read_only_directory(ledger_home):
        code, _, err = run_cli(capsys, "runs")
        assert code == 1 and "not writable" in err and "LEDGER_HOME" in err and err.count("\n") == 1
        assert list(ledger_home.iterdir()) == []


def test_the_installed_console_script_runs(seeded):
    ledger_script = os.path.join(os.path.dirname(sys.executable), "ledger")
    result = subprocess.run([ledger_script, "runs", "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 3
