"""The house's rules: layers checked by import-linter, SQL only in the store, the ledger opened once a command.

`lint-imports` reads the contracts in pyproject.toml. A test breaks a copy of the package on purpose, to show the
contracts catch what they claim to, and counts how many times `ledger reproduce` opens the database.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import ledger
from ledger.cli import main
from ledger.store.ledger import Ledger

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
LAYER_CONTRACT = "Layers: a module imports only from the layers below its own"
SQL_CONTRACT = "SQL only in the store: nothing else imports a database library"
CIRCLE_CONTRACT = "No import circle between the modules of a package"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """lint-imports on the package as it is under `root` (its pyproject.toml, its ledger/ and dashboard/)."""
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=root, capture_output=True, text=True,
                          env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(root)}, timeout=300)


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (REPO / folder).rglob("*.py"))


def test_the_import_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    for contract in (LAYER_CONTRACT, SQL_CONTRACT, CIRCLE_CONTRACT):
        assert f"{contract} KEPT" in result.stdout, result.stdout
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, wrong_import, broken, says", [
    ("ledger/backends/base.py", "from ledger.store.ledger import open_ledger", LAYER_CONTRACT,
     "ledger.backends is not allowed to import ledger.store"),
    ("ledger/capture/image.py", "from ledger.run import hooks", LAYER_CONTRACT,
     "ledger.capture is not allowed to import ledger.run"),
    ("ledger/audit/report.py", "from sqlalchemy import text", SQL_CONTRACT, "ledger.audit.report -> sqlalchemy"),
    ("ledger/store/integrity.py", "from ledger.store import ledger", CIRCLE_CONTRACT, "No cycles are allowed in ledger.store"),
])
def test_a_wrong_import_breaks_a_contract(tmp_path, module, wrong_import, broken, says):
    for part in ("ledger", "dashboard"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / module, "a", encoding="utf-8") as handle:
        handle.write(f"\n{wrong_import}  # a deliberate wrong import\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert f"{broken} BROKEN" in result.stdout and says in result.stdout, result.stdout


SQL_STATEMENT = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\w+\s+SET|CREATE\s+(TABLE|INDEX|"
                           r"TRIGGER)|ALTER\s+TABLE|DROP\s+TABLE)\b", re.S)


def test_sql_text_appears_only_in_the_store():
    found = []
    for path in python_files("ledger", "dashboard"):
        if path.is_relative_to(REPO / "ledger" / "store"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_STATEMENT.search(node.value):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value[:60]!r}")
            if isinstance(node, ast.Attribute) and node.attr in ("_reading", "_writing", "_connect", "engine"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: .{node.attr}")
    assert not found, "\n".join(found)


# The edges that open the ledger: the library's public functions, a command, autolog, the dashboard.
EDGES = {"ledger/__init__.py", "ledger/cli/console.py", "ledger/run/hooks.py", "dashboard/data.py"}


def test_only_the_edges_open_the_ledger():
    callers = set()
    for path in python_files("ledger", "dashboard"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "open_ledger":
                callers.add(str(path.relative_to(REPO)))
    assert callers <= EDGES, sorted(callers - EDGES)
    assert "ledger/cli/console.py" in callers and "ledger/run/hooks.py" in callers


def test_no_layer_imports_the_root_package_or_the_demo():
    """`import ledger` from inside a layer would import autolog and the store with it (a circle through the root);
    the demo and the AWS stand-in are for the `ledger demo` command and the notebooks only."""
    graph = grimp.build_graph("ledger")
    assert graph.find_modules_that_directly_import("ledger") == set()
    demo = {m for m in graph.modules if m == "ledger.demo" or m.startswith("ledger.demo.")}
    importers = {m for d in demo for m in graph.find_modules_that_directly_import(d)} - demo
    assert importers == {"ledger.cli.demo"}


def test_the_public_names_stay():
    assert callable(ledger.autolog) and callable(ledger.open_ledger) and callable(ledger.reproduce)
    assert ledger.RunRecord.__name__ == "RunRecord" and ledger.__version__
    assert set(ledger.__all__) >= {"autolog", "open_ledger", "reproduce", "RunRecord"}


def count_ledgers_opened(monkeypatch) -> list[str]:
    """Every Ledger made from now on, by the database it opens."""
    opened: list[str] = []
    real_init = Ledger.__init__

    def counting_init(self, engine, settings, **kwargs):
        opened.append(str(engine.url))
        real_init(self, engine, settings, **kwargs)

    monkeypatch.setattr(Ledger, "__init__", counting_init)
    return opened


def test_reproduce_opens_the_database_once(workspace, db_url, capsys, monkeypatch):
    assert main(["run", "src/train.py", "--channel", "train=data", "--metric", "loss=loss: ([0-9.]+)",
                 "--job-name", "opened-once", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    opened = count_ledgers_opened(monkeypatch)
    code = main(["reproduce", run_id, "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["verdict"]["result"] == "IDENTICAL", result
    assert len(opened) == 1, opened


def test_a_run_and_each_reading_command_open_the_database_once(workspace, db_url, capsys, monkeypatch):
    opened = count_ledgers_opened(monkeypatch)
    assert main(["run", "src/train.py", "--channel", "train=data", "--job-name", "opened-once", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert len(opened) == 1, opened
    for command in (["show", run_id], ["runs"], ["verify"], ["diff", run_id, run_id], ["sync"]):
        opened.clear()
        assert main(command) == 0, capsys.readouterr()
        assert len(opened) == 1, (command, opened)
