"""Nothing the repository tracks names the machine it was written on: no absolute path to this checkout, its
parent folder, a home directory or a Python environment. Executables are found beside sys.executable, data in the
package, files relative to the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ledger.capture.content_store import _checked_member
from ledger.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
# Prefixes every machine has, which name no one's machine (and /opt/ml is the SageMaker training contract).
SYSTEM_PREFIXES = {"/", "/usr", "/usr/local", "/opt", "/tmp", "/var", "/home", "/root"}


def machine_paths() -> set[str]:
    """Absolute paths that exist only where these tests run, and the workplace's own folder names."""
    found = {str(REPO), str(REPO.parent), str(Path.home()), sys.prefix, sys.base_prefix, sys.exec_prefix,
             os.path.dirname(sys.executable), os.environ.get("VIRTUAL_ENV", "")}
    found |= {f"/{folder}/" for folder in ("work", "root")}  # where the first sessions' environments lived
    return {path for path in found if path and path.rstrip("/") not in SYSTEM_PREFIXES and len(path) > 4}


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = []
    for name in names.decode().split("\0"):
        path = REPO / name
        if name and path.is_file() and not name.endswith(".lock"):  # locks name packages, never paths
            files.append(path)
    return files


def find_machine_paths(files: list[Path], paths: set[str]) -> list[str]:
    offenders = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
            offenders += [f"{shown}:{number}: {found}" for found in sorted(paths) if found in line]
    return offenders


def test_no_tracked_file_names_a_path_of_this_machine():
    if not (REPO / ".git").exists():
        pytest.fail("tests/test_portable.py needs the git checkout (it reads `git ls-files`)")
    offenders = find_machine_paths(tracked_text_files(), machine_paths())
    assert not offenders, "tracked files name a path of this machine:\n" + "\n".join(offenders)


def test_the_scan_catches_the_interpreter_and_the_checkout(tmp_path):
    planted = tmp_path / "bench.py"
    planted.write_text(f"# run with {sys.executable} bench.py\nDATA = '{REPO}/ledger/data/abalone.data'\n"
                       "print('no path here')\n")
    offenders = find_machine_paths([planted], machine_paths())
    assert any(line.startswith("bench.py:1:") for line in offenders), offenders
    assert any(line.startswith("bench.py:2:") for line in offenders), offenders
    assert not any(line.startswith("bench.py:3:") for line in offenders)


@pytest.mark.parametrize("name,kind,link", [("../evil", tarfile.REGTYPE, ""), ("/abs", tarfile.REGTYPE, ""),
                                            ("l", tarfile.SYMTYPE, "../../etc/passwd"), ("dev", tarfile.CHRTYPE, ""),
                                            ("h", tarfile.LNKTYPE, "/etc/shadow")])
def test_extraction_without_the_stdlib_filter_refuses_what_it_refuses(tmp_path, name, kind, link):
    """Python 3.11 before 3.11.4 (Debian 12's system Python) has no tarfile filters: the ledger's own check runs
    there and refuses what the 'data' filter refuses."""
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    with pytest.raises(UsageError, match="archive member"):
        _checked_member(member, tmp_path)


def test_extraction_without_the_stdlib_filter_keeps_files_and_drops_setuid(tmp_path):
    member = tarfile.TarInfo("bin/run.sh")
    member.mode = 0o4777
    assert _checked_member(member, tmp_path).mode == 0o755
    link = tarfile.TarInfo("bin/link")
    link.type, link.linkname = tarfile.SYMTYPE, "run.sh"
    assert _checked_member(link, tmp_path) is link
