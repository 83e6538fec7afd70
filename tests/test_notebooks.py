"""The notebooks in notebooks/: each runs from a clean kernel, offline, and is committed without outputs.

A notebook runs the way a user runs it: in its own directory, in a fresh kernel of the environment it is written
for, with no AWS credentials anywhere (so it starts the local AWS stand-in) and no LEDGER_* settings (so it makes
its own temporary ledger). Any cell that raises fails the test, with the cell's traceback.

  quickstart.ipynb        SageMaker SDK 2.x: a kernel of the interpreter running these tests
  quickstart_sdk3.ipynb   SageMaker SDK 3.x: a kernel in .venv-sdk3 (tests/test_autolog_sdk3.py makes it)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT = 240  # seconds, per cell
SDK3_NOTEBOOKS = {"quickstart_sdk3.ipynb"}
# What a notebook kernel in the SDK 3.x environment needs beyond requirements-sdk3.lock: the kernel itself, and the
# xgboost package the local backend's built-in XGBoost algorithm trains with. Versions as in requirements-test.lock.
SDK3_KERNEL_EXTRAS = {"ipykernel": "ipykernel", "xgboost-cpu": "xgboost"}


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("**/*.ipynb"))


# --- committed without outputs --------------------------------------------------------------------------------


def find_outputs(notebook: dict) -> list[str]:
    """Pure: where a notebook holds outputs or execution counts ('cell 3: 2 output(s)')."""
    found = []
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            found.append(f"cell {index}: {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            found.append(f"cell {index}: execution count {cell['execution_count']}")
    return found


def test_find_outputs_names_outputs_and_execution_counts():
    clean = {"cells": [{"cell_type": "markdown", "source": "x"},
                       {"cell_type": "code", "source": "1", "outputs": [], "execution_count": None}]}
    run = {"cells": [{"cell_type": "code", "source": "1", "execution_count": 4,
                      "outputs": [{"output_type": "execute_result", "data": {"text/plain": "1"}}]}]}
    assert find_outputs(clean) == []
    assert find_outputs(run) == ["cell 0: 1 output(s)", "cell 0: execution count 4"]


def test_notebooks_are_committed_without_outputs():
    paths = notebook_paths()
    assert paths, f"no notebooks under {NOTEBOOKS}"
    dirty = {str(p.relative_to(REPO)): find_outputs(json.loads(p.read_text())) for p in paths}
    dirty = {path: found for path, found in dirty.items() if found}
    assert not dirty, (f"notebooks with outputs: {dirty}; clear them before committing, e.g. "
                       "jupyter nbconvert --clear-output --inplace notebooks/*.ipynb")


# --- executed, offline ----------------------------------------------------------------------------------------


def offline_environment(tmp_path: Path, python: Path) -> dict[str, str]:
    """The caller's environment with every AWS credential source, LEDGER_* setting and virtualenv tie removed."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "LEDGER_", "SAGEMAKER_", "MLFLOW_"))
           and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTEST_ADDOPTS", "JPY_PARENT_PID")}
    nowhere = tmp_path / "no-aws"
    env.update({
        "AWS_SHARED_CREDENTIALS_FILE": str(nowhere / "credentials"),
        "AWS_CONFIG_FILE": str(nowhere / "config"),
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata probe: the notebook sees no credentials at once
        "TMPDIR": str(tmp_path),  # the notebook's temporary ledger goes where pytest cleans up
        "PATH": f"{python.parent}{os.pathsep}{env.get('PATH', '')}",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    })
    return env


def kernel_manager(python: Path, tmp_path: Path):
    """A kernel of exactly this interpreter, whatever kernelspecs the machine has installed."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = tmp_path / "kernels" / "notebook-under-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({python})", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False)
    return KernelManager(kernel_name="notebook-under-test", kernel_spec_manager=specs)


def execute_notebook(path: Path, python: Path, tmp_path: Path):
    """Run every cell in a fresh kernel; nbclient's CellExecutionError (with the cell and its traceback) on a
    failure. The executed copy is written to tmp_path, to read after a failure."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, km=kernel_manager(python, tmp_path), timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.monotonic()
    try:
        client.execute(env=offline_environment(tmp_path, python))
    finally:
        nbformat.write(notebook, tmp_path / f"executed-{path.name}")
    return notebook, time.monotonic() - started


def outputs_text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", "") or "".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def read_pins(lock: Path) -> dict[str, str]:
    """{normalized name: version} of a `uv pip compile` lock file."""
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


def build_kernel_constraints(test_pins: dict[str, str], sdk3_pins: dict[str, str]) -> list[str]:
    """Pure: pins for what the SDK 3.x kernel adds, taken from the main test lock, for every package the SDK 3.x
    lock does not pin already (those stay exactly as that lock has them)."""
    return sorted(f"{name}=={version}" for name, version in test_pins.items() if name not in sdk3_pins)


def test_kernel_constraints_never_override_the_sdk3_lock():
    constraints = build_kernel_constraints({"ipykernel": "7.4.0", "boto3": "1.44.0", "pyzmq": "27.3.0"},
                                           {"boto3": "1.40.0", "sagemaker": "3.27.0"})
    assert constraints == ["ipykernel==7.4.0", "pyzmq==27.3.0"]


def sdk3_python(tmp_path: Path) -> Path:
    """.venv-sdk3 (made by tests/test_autolog_sdk3.py from requirements-sdk3.lock), with a kernel in it.

    requirements-sdk3.lock has neither ipykernel nor xgboost; until it does, they are added here, at the versions
    requirements-test.lock pins, without changing anything the SDK 3.x lock pins."""
    if os.environ.get("LEDGER_SKIP_SDK3") == "1":
        pytest.skip("LEDGER_SKIP_SDK3=1: the SageMaker SDK 3.x notebook was not run")
    from tests.test_autolog_sdk3 import LOCK, _clean_env, _install, ensure_sdk3_venv

    python = ensure_sdk3_venv()
    check = [str(python), "-c", f"import {', '.join(SDK3_KERNEL_EXTRAS.values())}"]
    if subprocess.run(check, check=False, capture_output=True, timeout=120).returncode == 0:
        return python
    # The same lock as ensure_sdk3_venv, so that no rebuild of the environment runs under this install.
    venv_lock = Path(tempfile.gettempdir()) / f"ledger-venv-sdk3-{hashlib.sha256(bytes(REPO)).hexdigest()[:12]}.lock"
    with open(venv_lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        test_pins = read_pins(REPO / "requirements-test.lock")
        constraints = tmp_path / "sdk3-kernel-constraints.txt"
        constraints.write_text("\n".join(build_kernel_constraints(test_pins, read_pins(LOCK))) + "\n")
        _install(_clean_env(), *(f"{name}=={test_pins[name]}" for name in SDK3_KERNEL_EXTRAS), "-c", constraints)
    return python


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", [p.name for p in notebook_paths()])
def test_notebook_runs_offline_from_a_clean_kernel(name, tmp_path):
    path = NOTEBOOKS / name
    python = sdk3_python(tmp_path) if name in SDK3_NOTEBOOKS else Path(sys.executable)
    notebook, seconds = execute_notebook(path, python, tmp_path)
    text = outputs_text(notebook)
    assert "LocalAWS stand-in for AWS" in text, "the notebook did not start the local AWS stand-in"
    assert "IDENTICAL" in text
    print(f"{name}: {seconds:.1f} s")
