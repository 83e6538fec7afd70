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


def test_the_first_command_from_a_fresh_clone_runs_the_demo(tmp_path):
    """The README's first command, verbatim, in a fresh clone with a new LEDGER_HOME, the system's PATH and no
    virtual environment: the demo completes and its runs are listed. (A clone holds what is committed: CI runs on a
    clean clone of main.)"""
    import json
    import os
    import subprocess

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "AWS_", "MLFLOW_", "VIRTUAL_ENV"))}
    env["LEDGER_HOME"] = str(tmp_path / "home")
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # the system's, as a new user's shell has it
    install_and_demo = _commands()[0]
    done = subprocess.run(["bash", "-c", install_and_demo], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "IDENTICAL" in done.stdout and "chain intact" in done.stdout
    listed = subprocess.run([str(clone / ".venv" / "bin" / "ledger"), "runs", "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    runs = json.loads(listed.stdout)
    assert len(runs) == 4 and {r["status"] for r in runs} == {"Completed"}
