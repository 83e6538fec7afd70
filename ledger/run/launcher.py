"""The launcher's lock: how `ledger sync` tells a live local launch from a dead one.

While a launch runs, its process holds an exclusive flock on LEDGER_HOME/launchers/<run>.lock; the kernel frees it
when that process dies, however it dies. A local run with no outcome whose lock is free has lost its launcher.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ledger.capture.outcome import TERMINAL_STATUSES
from ledger.config import Settings
from ledger.record import Outcome, RunRecord, utc_now


def launcher_lock_path(settings: Settings, run_id: str) -> Path:
    return settings.home / "launchers" / f"{run_id}.lock"


@contextmanager
def hold_launcher_lock(settings: Settings, record: RunRecord) -> Iterator[Path | None]:
    """Hold an exclusive flock on LEDGER_HOME/launchers/<run>.lock while the launch runs. The kernel frees it
    when this process dies, however it dies (kill -9 included), so a free lock means the launcher is gone.
    A lock that cannot be made does not stop the launch: `ledger sync` then says it cannot tell."""
    path = launcher_lock_path(settings, record.run_id)
    handle = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(handle, json.dumps({"run_id": record.run_id, "job_name": record.job_name, "pid": os.getpid(),
                                     "host": socket.gethostname(), "since": utc_now()}).encode())
    except OSError:
        if handle is not None:
            os.close(handle)
        handle = None
    try:
        yield path if handle is not None else None
    finally:
        if handle is not None:
            path.unlink(missing_ok=True)  # before the lock is freed: a sync that wins the lock later sees no file
            os.close(handle)


def settle_lost_launch(book, run_id: str) -> tuple[str, str | None]:
    """For `ledger sync`, one local run without an outcome: ("running", None) while its launcher holds its lock;
    ("settled", reason) when the launcher is gone and recorded no outcome: the run is recorded Failed, naming
    why; ("done", None) when the launcher recorded the outcome meanwhile; ("unknown", why) when it cannot tell."""
    settings = book.settings
    path = launcher_lock_path(settings, run_id)
    try:
        handle = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        if book.get(run_id).outcome.status in TERMINAL_STATUSES:
            return "done", None
        return "unknown", (f"no launcher lock at {path}: it was launched with another LEDGER_HOME, on another "
                           "machine, or by an older ledger, so this sync cannot tell whether it still runs")
    try:
        try:
            launcher = json.loads(os.read(handle, 65536) or b"{}")
        except ValueError:
            launcher = {}
        host = launcher.get("host")
        if host and host != socket.gethostname():
            return "unknown", f"it was launched on host {host}; run `ledger sync` there"
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "running", None
        record = book.get(run_id)  # read again under the lock: the launcher records its outcome before freeing it
        if record.outcome.status in TERMINAL_STATUSES:
            return "done", None
        who = f"pid {launcher.get('pid', '?')} on {host or 'this host'}, since {launcher.get('since', '?')}"
        log = settings.home / "jobs" / record.job_name / "job.log"
        reason = (f"LauncherGone: the process that ran this job ({who}) ended without recording an outcome, and a "
                  "local job does not outlive its launcher; ledger sync found its lock free"
                  + (f"; the job's log: {log}" if log.is_file() else ""))
        book.record_outcome(run_id, Outcome(status="Failed", failure_reason=reason))
        path.unlink(missing_ok=True)
        return "settled", reason
    finally:
        os.close(handle)
