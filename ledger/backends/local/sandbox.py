"""A private mount namespace per job, where /opt/ml is that job's tree, as it is in a SageMaker container.

    find_sandbox              side effects (once a process): can a namespace be made here, and how
    build_unshare_prefix      pure: the unshare command for a user id (root, or any other through a user namespace)
    build_sandboxed_command   pure: the job's argv wrapped so it runs in its own namespace

As root, `unshare --mount`; otherwise `unshare --user --map-root-user --mount` (a user namespace, where the job is
"root" over its own mounts only and its files stay the user's). Inside, /opt is an overlay of the real /opt whose
writable layer is a tmpfs (so the job sees the host's /opt, and anything it writes there vanishes with it), the
job's tree is bound at /opt/ml, and the job's environment is bound read-only over itself (several jobs share one
cached environment: none may change it). Nothing is mounted, created or left on the host: a mount namespace dies
with its last process. Where no namespace can be made, the caller runs the job at its LEDGER_HOME paths and
records that as a gap.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

OPT_ML = Path("/opt/ml")
BASH = "/bin/bash"

# $1: a scratch directory (for the tmpfs), $2: the job's tree, $3: the working directory, $4...: read-only paths,
# then "--", then the job's argv. Every mount is this namespace's own (propagation private).
MOUNT_SCRIPT = r"""
set -e
scratch=$1; tree=$2; workdir=$3; shift 3
mount -t tmpfs -o mode=700 ledger-job "$scratch"
mkdir "$scratch/upper" "$scratch/scratch"
mount -t overlay ledger-opt -o "lowerdir=/opt,upperdir=$scratch/upper,workdir=$scratch/scratch" /opt
mkdir -p /opt/ml
mount --bind "$tree" /opt/ml
while [ "$1" != "--" ]; do
    mount --bind "$1" "$1"
    mount -o remount,bind,ro "$1"
    shift
done
shift
cd "$workdir"
exec "$@"
"""


@dataclass(frozen=True)
class Sandbox:
    """How this machine makes a job's namespace: `prefix` (the unshare command), or why it cannot (`why_not`)."""

    prefix: tuple[str, ...] = ()
    why_not: str | None = None

    @property
    def available(self) -> bool:
        return bool(self.prefix)

    @property
    def how(self) -> str:
        return " ".join(self.prefix[:-2]) if self.prefix else "none"


def build_unshare_prefix(unshare: str, euid: int) -> tuple[str, ...]:
    user = () if euid == 0 else ("--user", "--map-root-user")
    # bash, not sh: dash drops variables whose names are no shell identifiers (SM_HP_LEARNING-RATE) from what it
    # passes on, and the toolkit's SM_HP_* keep the hyperparameter's own name
    return (unshare, *user, "--mount", "--propagation", "private", BASH, "-c")


@functools.lru_cache(maxsize=1)
def find_sandbox() -> Sandbox:
    """Try the whole recipe once (an empty tree, `true` as the job): the answer holds for this process."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return Sandbox(why_not="unshare (util-linux) is not on PATH")
    if not Path(BASH).is_file():
        return Sandbox(why_not=f"{BASH} is not on this machine")
    if not Path("/opt").is_dir():
        return Sandbox(why_not="this machine has no /opt to lay /opt/ml into")
    prefix = build_unshare_prefix(unshare, os.geteuid())
    with tempfile.TemporaryDirectory(prefix="ledger-ns-probe-") as probe:
        tree, scratch = Path(probe, "tree"), Path(probe, "scratch")
        tree.mkdir()
        scratch.mkdir()
        argv = build_sandboxed_command(Sandbox(prefix=prefix), ["/bin/sh", "-c", "test -d /opt/ml"], tree=tree,
                                       scratch=scratch, workdir=OPT_ML, readonly=[])
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as error:
            return Sandbox(why_not=f"{' '.join(prefix[:-2])}: {error}")
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return Sandbox(why_not=f"{' '.join(prefix[:-2])} failed: {reason}")
    return Sandbox(prefix=prefix)


def build_sandboxed_command(sandbox: Sandbox, argv: list[str], *, tree: Path, scratch: Path, workdir: Path,
                            readonly: list[Path]) -> list[str]:
    """Pure: `argv` run in a new mount namespace with `tree` at /opt/ml and `readonly` paths read-only."""
    return [*sandbox.prefix, MOUNT_SCRIPT, "ledger-job", str(scratch), str(tree), str(workdir),
            *[str(p) for p in readonly], "--", *argv]
