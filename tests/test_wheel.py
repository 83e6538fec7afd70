"""The built wheel, installed into a fresh virtual environment, migrates new PostgreSQL and SQLite databases.

This proves the migrations ship inside the wheel (alembic/ is mapped to ledger/migrations) and that the console
script works outside the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from ledger.store.migrate import head_revision

ROOT = Path(__file__).resolve().parents[1]


def _run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_wheel_installs_and_migrates_new_databases(tmp_path, pg_url):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)])
    wheel = next(dist.glob("sagemaker_ledger-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "ledger/migrations/env.py" in names and "ledger/migrations/versions/0001_log.py" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    # The runtime lock, from pip's cache: the same pins a user gets from the README's first command.
    _run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(ROOT / "requirements.lock"), str(wheel)])

    elsewhere = tmp_path / "elsewhere"  # not the source tree: nothing may come from the checkout
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_HOME"] = str(tmp_path / "home")
    for url in (pg_url, f"sqlite:///{tmp_path / 'new.db'}"):
        result = _run([str(venv / "bin" / "ledger"), "db", "upgrade"], cwd=elsewhere, env={**env, "LEDGER_DB_URL": url})
        assert f"Upgraded schema none -> {head_revision()}" in result.stdout
        located = _run([str(venv / "bin" / "python"), "-c", "import ledger.store.migrate as m; print(m.migrations_dir())"],
                       cwd=elsewhere, env=env)
        assert str(venv) in located.stdout  # the migrations came from the installed wheel
        result = _run([str(venv / "bin" / "ledger"), "verify"], cwd=elsewhere, env={**env, "LEDGER_DB_URL": url})
        assert "OK: 0 entries" in result.stdout
