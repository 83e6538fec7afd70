"""The run layer: where capture, the store and the backends meet.

    hooks.py      autolog(): the botocore handlers that capture every CreateTrainingJob
    recorder.py   one request -> pins, gaps and the request to send; the launch saved (or spooled)
    spool.py      records the database could not take, kept safe until `ledger sync`
    launch.py     `ledger run`'s request, and a launch: capture -> record -> backend -> outcome
    launcher.py   the launcher's lock, by which `ledger sync` tells a live local launch from a dead one
    sync.py       settling runs still in flight; the MLflow outbox pushed
    preflight.py  what a reproduction would find: the record's pins against the world now
    verdict.py    IDENTICAL | EQUIVALENT | DIVERGED | UNVERIFIABLE, and why
    reproduce.py  preflight, pinned relaunch, verdict
    observers.py  callables told when a run has finished (autolog's exports); their failures only warn

Every function that records takes the ledger handle (`book`) its caller opened.
"""

import sys


def say(line: str) -> None:
    """A line for the user beside their job's own output (stderr): what was recorded, what was spooled."""
    print(line, file=sys.stderr, flush=True)
