"""The README's test command is the one CI runs, and its first command is the demo."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = text.split("```bash\n")[1:3]
    return [next(line for line in block.splitlines() if line and not line.startswith("#")) for block in blocks]


def test_ci_runs_the_readme_test_command():
    install_and_demo, install_and_test = _commands()
    assert install_and_demo.endswith("ledger demo")
    assert install_and_test == "scripts/test"
    script = (ROOT / "scripts" / "test").read_text()
    assert "pip install -q -r requirements-test.lock -e ." in script and "python -m pytest" in script
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci_lines
