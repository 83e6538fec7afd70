"""Kills a local job's process group when the process that launched it dies. Started by local.run_process.

    python job_watchdog.py PGID

Standard library only, and nothing of the ledger imported, so it starts fast. Its stdin is a pipe whose other end
only the launcher holds: a byte on it means "the job ended, its group is gone: exit"; end of file without one
means the launcher died (kill -9 included), and the whole group is killed, children of the job too. It runs in a
session of its own, so a Ctrl-C or a signal to the launcher's group does not reach it.
"""

import os
import signal
import sys


def main() -> int:
    pgid = int(sys.argv[1])
    if os.read(0, 1):
        return 0
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
