"""Observers of finished runs, as Sacred has them: callables told, once a run's final outcome (and, for a
reproduction, its verdict) is recorded, with the ledger handle and the run's record.

They run after the fact, so an observer that fails only warns: the run is recorded already, and the user's job
has ended. The run layer knows no observer by name; the public edge (`ledger.autolog(export=...)`) adds them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ledger.run import say

Observer = Callable[[Any, Any], None]  # observer(book, record)

_OBSERVERS: dict[str, Observer] = {}
_LOCK = threading.Lock()


def add_observer(name: str, observer: Observer) -> None:
    """Tell `observer` of every run this process sees finish; a second observer of the same name replaces it."""
    with _LOCK:
        _OBSERVERS[name] = observer


def remove_observers(prefix: str = "") -> None:
    """Remove the observers whose names start with `prefix` (all of them by default)."""
    with _LOCK:
        for name in [n for n in _OBSERVERS if n.startswith(prefix)]:
            del _OBSERVERS[name]


def notify_finished(book, record) -> None:
    """Tell every observer that `record` finished. A failing observer is one line on stderr; the others go on."""
    with _LOCK:
        observers = list(_OBSERVERS.items())
    for name, observer in observers:
        try:
            observer(book, record)
        except Exception as error:  # noqa: BLE001 - after the run: an observer's failure only warns
            say(f"ledger: {name} failed for run {record.run_id} ({type(error).__name__}: {error}); the run is "
                "recorded")
