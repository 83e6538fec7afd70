"""Running a job's process as a container runs: its own process group, stopped past its time limit (SIGTERM,
then SIGKILL), its output line by line, and dead with its launcher however the launcher dies.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

WATCHDOG_SCRIPT = Path(__file__).with_name("job_watchdog.py")


@dataclass(frozen=True)
class ProcessEnd:
    exit_code: int | None
    stopped_by: str | None  # "max_runtime" | "interrupt" | None


def _pump_lines(stream, on_line: Callable[[str], None]) -> None:
    for raw in iter(stream.readline, b""):
        try:
            on_line(raw.decode("utf-8", "replace").rstrip("\n"))
        except Exception:  # a broken log sink must not stop the pipe being drained, or the job would block
            pass
    stream.close()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when its parent dies (Linux prctl PR_SET_PDEATHSIG); None
    elsewhere. prctl is looked up here, before the fork: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was asked for
            os.kill(os.getpid(), signal.SIGKILL)

    return set_parent_death_signal


def _start_watchdog(pgid: int) -> subprocess.Popen | None:
    """job_watchdog.py, which kills the group `pgid` if this process dies before it says the job is over."""
    try:
        return subprocess.Popen([sys.executable, "-I", "-S", str(WATCHDOG_SCRIPT), str(pgid)], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return None  # the job still dies with its launcher (parent-death signal); its children may not


def _stop_watchdog(watchdog: subprocess.Popen | None) -> None:
    if watchdog is None:
        return
    try:
        watchdog.stdin.write(b"x")  # the job is over: the watchdog must not kill a group id that may be reused
        watchdog.stdin.close()
    except OSError:
        pass
    watchdog.wait()


def run_process(
    argv: list[str], *, cwd: Path, env: dict[str, str], max_runtime: float, stop_grace: float,
    on_line: Callable[[str], None],
) -> ProcessEnd:
    """Run argv in its own process group, stdout and stderr merged line by line into on_line.

    Past max_runtime the group gets SIGTERM, then SIGKILL after stop_grace seconds, as SageMaker stops a job.
    When the main process ends, whatever it left running in its group is killed, as when a container ends.
    The job dies with this process, however this process dies: the job's main process by a parent-death signal,
    the rest of its group by job_watchdog.py.
    """
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent())
    watchdog = _start_watchdog(proc.pid)
    pump = threading.Thread(target=_pump_lines, args=(proc.stdout, on_line), daemon=True)
    pump.start()
    stopped_by = None
    try:
        proc.wait(timeout=max_runtime)
    except subprocess.TimeoutExpired:
        stopped_by = "max_runtime"
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    if stopped_by:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=stop_grace)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    _stop_watchdog(watchdog)
    pump.join(timeout=10)
    return ProcessEnd(proc.returncode, stopped_by)


def count_gpus() -> int:
    """GPUs as the toolkit counts them (nvidia-smi --list-gpus); 0 without nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))
