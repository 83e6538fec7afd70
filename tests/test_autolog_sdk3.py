"""autolog() with the SageMaker SDK 3.x, run by the main test command.

The two SDK majors cannot share one environment (FIELD-NOTES.md), and the main test environment has SDK 2.x. So
this test makes a second virtual environment, `.venv-sdk3` at the repository's root, from requirements-sdk3.lock
(sagemaker==3.27.0 and what the ledger's capture imports; the ledger itself installed with --no-deps -e), and runs
tests/sdk3 inside it as a subprocess. The environment is reused while the lock file's digest is unchanged; only
the package index is needed to make it (once: about a minute with pip, seconds with uv when there is one).

The main run does not collect tests/sdk3 (its conftest.py ignores its modules where SDK 3.x is not installed).
Set LEDGER_SKIP_SDK3=1 to skip this test on a machine that cannot reach a package index.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-sdk3"
LOCK = REPO / "requirements-sdk3.lock"
PYTHON = VENV / "bin" / "python"
LOCK_MARKER = VENV / "requirements-sdk3.lock.sha256"  # written last: a half-made environment has none
PROJECT_MARKER = VENV / "pyproject.toml.sha256"  # the editable install of the ledger follows pyproject.toml
INSTALL_TIMEOUT = 900
RUN_TIMEOUT = 600


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(*args: str | os.PathLike, timeout: int = INSTALL_TIMEOUT, env: dict | None = None) -> None:
    done = subprocess.run([str(a) for a in args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout[-4000:]}"
                           f"\n{done.stderr[-4000:]}")


def _usable() -> bool:
    if not PYTHON.exists():
        return False
    return subprocess.run([str(PYTHON), "-c", "import sagemaker.train, ledger"], cwd=REPO,
                          capture_output=True, timeout=120).returncode == 0


def _clean_env() -> dict[str, str]:
    """The caller's environment without what ties a Python process to the main virtual environment."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTEST_ADDOPTS", "__PYVENV_LAUNCHER__")}
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _uv() -> str | None:
    """uv, when the main environment or PATH has it: it makes the environment in seconds where pip takes a minute."""
    return shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


def _install(env: dict, *requirements: str | os.PathLike) -> None:
    """pip install into .venv-sdk3 (with uv when there is one, else, or if uv fails, with pip)."""
    uv = _uv()
    if uv:
        try:
            _run(uv, "pip", "install", "--quiet", "--python", PYTHON, *requirements, env=env)
            return
        except (RuntimeError, subprocess.TimeoutExpired) as error:  # e.g. an index only pip.conf knows: use pip
            print(f"uv could not install {requirements}; trying pip: {error}", file=sys.stderr)
    # --no-compile: byte-compiling ~180 packages is a third of pip's time; Python compiles what it imports
    _run(PYTHON, "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check", *requirements, env=env)


def ensure_sdk3_venv() -> Path:
    """Make .venv-sdk3 from the lock file, or reuse it when the lock is unchanged. Serialized across processes."""
    lock_file = Path(tempfile.gettempdir()) / f"ledger-venv-sdk3-{hashlib.sha256(bytes(REPO)).hexdigest()[:12]}.lock"
    with open(lock_file, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        env = _clean_env()
        lock_digest = _sha256(LOCK)
        fresh = not (LOCK_MARKER.exists() and LOCK_MARKER.read_text().strip() == lock_digest and _usable())
        if fresh:
            shutil.rmtree(VENV, ignore_errors=True)
            _run(sys.executable, "-m", "venv", VENV, env=env)
            _install(env, "-r", LOCK)
        project_digest = _sha256(REPO / "pyproject.toml")
        if fresh or not PROJECT_MARKER.exists() or PROJECT_MARKER.read_text().strip() != project_digest:
            _install(env, "--no-deps", "-e", REPO)
            PROJECT_MARKER.write_text(project_digest + "\n")
        if fresh:
            LOCK_MARKER.write_text(lock_digest + "\n")
    return PYTHON


@pytest.mark.timeout(INSTALL_TIMEOUT + RUN_TIMEOUT)
def test_model_trainer_jobs_are_captured_in_the_sdk3_environment():
    if os.environ.get("LEDGER_SKIP_SDK3") == "1":
        pytest.skip("LEDGER_SKIP_SDK3=1: the SageMaker SDK 3.x tests (tests/sdk3) were not run")
    python = ensure_sdk3_venv()
    done = subprocess.run([str(python), "-m", "pytest", "tests/sdk3", "-q"], cwd=REPO, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, env=_clean_env())
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, f"tests/sdk3 failed in {VENV}:\n{report}"
    summary = done.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 4, f"tests/sdk3 did not run its tests: {summary}"
    assert not re.search(r"skipped|deselected|xfail", summary), summary


def test_the_sdk3_lock_pins_sdk3_and_what_capture_imports():
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", LOCK.read_text(), flags=re.M))
    assert pins["sagemaker"] == "3.27.0"
    for name in ("boto3", "sqlmodel", "sqlalchemy", "alembic", "typer", "rich", "pandas", "gitpython",
                 "python-ulid", "pytest", "moto"):
        assert name in pins, f"requirements-sdk3.lock lacks {name}: regenerate it (see tests/sdk3/requirements.in)"
