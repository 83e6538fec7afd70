"""A ledger on read-only media (a backup, an evidence copy) is listed, shown, verified and reported on; only the
writing commands need a writable LEDGER_HOME, and they refuse in one line before any work starts.

SQLite media is made read-only for root too: `chattr +i` binds root, and a read-only bind mount is a read-only
file system. On PostgreSQL the session is what is read-only: a role granted SELECT only, or a database whose
sessions default to read-only transactions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from ledger.cli import main
from ledger.errors import ReadOnlyStore
from ledger.store.engine import plan_sqlite_access
from ledger.store.ledger import open_ledger
from tests.conftest import PG_ADMIN_URL
from tests.test_audit import seed


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@contextmanager
def immutable(*paths: Path):
    """Paths nobody may change, root included (chattr +i binds root; others get the write bits taken away)."""
    done = []
    try:
        for path in paths:
            if os.geteuid() == 0:
                subprocess.run(["chattr", "+i", str(path)], check=True)
            else:
                path.chmod(0o555 if path.is_dir() else 0o444)
            done.append(path)
        yield
    finally:
        for path in reversed(done):
            if os.geteuid() == 0:
                subprocess.run(["chattr", "-i", str(path)], check=True)
            else:
                path.chmod(0o755 if path.is_dir() else 0o644)


@contextmanager
def read_only_mount(source: Path, target: Path):
    """`source` seen through a read-only bind mount at `target`: a read-only file system, as a mounted backup is."""
    target.mkdir()
    made = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot bind-mount on this machine ({made.stderr.strip() or made.returncode}): needs root")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True, capture_output=True)
        yield target
    finally:
        import gc

        gc.collect()  # the commands' engines hold SQLite files open on the mount
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(target)], check=True)


def seeded_sqlite(home: Path) -> dict:
    """A ledger in `home`, closed as a finished process leaves it (the write-ahead log checkpointed away)."""
    book = open_ledger(f"sqlite:///{home / 'ledger.db'}")
    runs = seed(book)
    book.engine.dispose()
    return runs


def use_home(monkeypatch, home: Path) -> None:
    monkeypatch.setenv("LEDGER_HOME", str(home))
    monkeypatch.setenv("LEDGER_DB_URL", f"sqlite:///{home / 'ledger.db'}")


def a_script(tmp_path: Path) -> tuple[Path, Path]:
    """A training script that leaves a mark if it ever runs."""
    marker = tmp_path / "the-job-ran"
    script = tmp_path / "src" / "train.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return script, marker


def reading_commands_work(capsys, runs: dict, out_dir: Path) -> None:
    gappy = runs["gappy"]
    code, out, err = cli(capsys, "runs", "--json")
    assert code == 0, err
    assert {r["run_id"] for r in json.loads(out)} == {r.run_id for r in runs.values()}
    code, out, err = cli(capsys, "show", gappy.job_name, "--json")
    assert code == 0, err
    assert json.loads(out)["run_id"] == gappy.run_id
    code, out, err = cli(capsys, "verify", "--json")
    assert code == 0, err
    assert json.loads(out)["ok"] is True and json.loads(out)["entries"] == 12
    report = out_dir / "evidence-report.html"
    code, out, err = cli(capsys, "audit", gappy.run_id, "-o", str(report))
    assert code == 0, err
    assert "ledger intact" in out and gappy.job_name in report.read_text()
    code, out, err = cli(capsys, "audit", "check", str(report))
    assert code == 0, err


def writing_commands_refuse(capsys, tmp_path: Path) -> None:
    script, marker = a_script(tmp_path)
    code, out, err = cli(capsys, "run", str(script))
    assert code == 1 and "read-only" in err and "writable" in err and err.count("\n") == 1, err
    assert not marker.exists()  # refused before the job started, not recorded nowhere after it ran
    for command in (["db", "rebuild"], ["db", "upgrade"], ["sync"], ["reproduce", "churn-xgb-001", "--yes"],
                    ["demo"]):
        code, _, err = cli(capsys, *command)
        assert code == 1 and "read-only" in err and err.count("\n") == 1, (command, err)
    book = open_ledger()
    with pytest.raises(ReadOnlyStore, match="read-only"):
        book.annotate(book.runs()["run_id"][0], {"tags": {"reviewed": "yes"}})


# --- SQLite -----------------------------------------------------------------------------------------------------


def test_a_sqlite_ledger_on_immutable_media_is_read_and_nothing_is_written(ledger_home, tmp_path, monkeypatch,
                                                                           capsys):
    runs = seeded_sqlite(ledger_home)
    use_home(monkeypatch, ledger_home)
    before = sorted(p.name for p in ledger_home.iterdir())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with immutable(*ledger_home.iterdir(), ledger_home):
        reading_commands_work(capsys, runs, out_dir)
        writing_commands_refuse(capsys, tmp_path)
        assert sorted(p.name for p in ledger_home.iterdir()) == before  # no -wal, -shm or lock file appeared


def test_a_sqlite_ledger_on_a_read_only_file_system_is_read(ledger_home, tmp_path, monkeypatch, capsys):
    runs = seeded_sqlite(ledger_home)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with read_only_mount(ledger_home, tmp_path / "backup") as backup:
        use_home(monkeypatch, backup)
        reading_commands_work(capsys, runs, out_dir)
        writing_commands_refuse(capsys, tmp_path)


def test_a_copy_taken_while_a_writer_was_open_reads_its_write_ahead_log(ledger_home, tmp_path, monkeypatch,
                                                                         capsys):
    book = open_ledger(f"sqlite:///{ledger_home / 'ledger.db'}")
    runs = seed(book)  # the writer stays open: the newest entries are still in ledger.db-wal
    copy = tmp_path / "evidence"
    copy.mkdir()
    for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm"):
        shutil.copy2(ledger_home / name, copy / name)
    book.engine.dispose()
    assert (copy / "ledger.db-wal").stat().st_size > 0
    use_home(monkeypatch, copy)
    with immutable(*copy.iterdir(), copy):
        code, out, err = cli(capsys, "verify", "--json")
        assert code == 0, err
        assert json.loads(out)["entries"] == 12  # read without its -wal, the copy would look empty and "intact"
        code, out, _ = cli(capsys, "runs", "--json")
        assert {r["run_id"] for r in json.loads(out)} == {r.run_id for r in runs.values()}
    (copy / "ledger.db-shm").unlink()
    with immutable(*copy.iterdir(), copy):
        code, _, err = cli(capsys, "runs")
        assert code == 1 and "ledger.db-wal" in err and err.count("\n") == 1, err


def test_plan_sqlite_access():
    assert plan_sqlite_access(True, True, True, False, False) == "rw"
    assert plan_sqlite_access(False, True, True, False, False) == "rw"  # a new ledger is created
    assert plan_sqlite_access(False, False, False, False, False) == ""  # nowhere to create it
    assert plan_sqlite_access(True, False, False, False, False) == "immutable"
    assert plan_sqlite_access(True, True, False, False, False) == "immutable"
    assert plan_sqlite_access(True, False, True, True, True) == "ro"
    assert plan_sqlite_access(True, False, False, True, False) == ""


# --- PostgreSQL -------------------------------------------------------------------------------------------------


@pytest.fixture(params=["select-only role", "read-only transactions"])
def read_only_pg(request, pg_url, monkeypatch, ledger_home):
    """A seeded PostgreSQL ledger, then LEDGER_DB_URL as a session that may only read it."""
    import psycopg

    book = open_ledger(pg_url)
    runs = seed(book)
    book.engine.dispose()
    database = pg_url.rsplit("/", 1)[1]
    admin = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    role = None
    with psycopg.connect(admin, autocommit=True) as conn:
        if request.param == "select-only role":
            role = f"ledger_reader_{uuid.uuid4().hex[:8]}"
            conn.execute(f'CREATE ROLE "{role}" LOGIN')
            conn.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
            conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
            url = admin.replace("//postgres@", f"//{role}@", 1)
            assert role in url
        else:
            conn.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
            url = admin
    monkeypatch.setenv("LEDGER_DB_URL", url)
    yield runs
    if role:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            conn.execute(f'DROP OWNED BY "{role}"')
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{role}"')


def test_a_read_only_postgresql_session_reads_and_refuses_to_write(read_only_pg, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    reading_commands_work(capsys, read_only_pg, out_dir)
    writing_commands_refuse(capsys, tmp_path)
