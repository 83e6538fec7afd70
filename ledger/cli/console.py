"""What every command shares: the consoles, JSON output, and the one ledger handle a command opens.

A command opens the ledger once, here, and passes that handle (`book`) to whatever it calls.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console

from ledger.errors import ReadOnlyStore, StoreError
from ledger.store.ledger import Ledger, open_ledger

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")


def print_json(data) -> None:
    # Plain print, not Rich: JSON must reach pipes byte for byte, without markup or wrapping.
    print(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def say(line: str) -> None:
    """One line of plain text on stdout: no markup, no highlighting (run ids and URIs print as they are)."""
    out.print(line, markup=False, highlight=False)


def open_book(check_schema: bool = True) -> Ledger:
    """The ledger this command reads or writes (LEDGER_DB_URL, else SQLite in LEDGER_HOME)."""
    return open_ledger(check_schema=check_schema)


def open_book_to_record() -> Ledger:
    """The ledger a launch records in. A ledger on read-only media (a backup, an evidence copy) is refused here,
    before the job starts. One that cannot be reached, or is outdated, is not: the launch goes on and its record
    is spooled for `ledger sync`, as a notebook's would be."""
    book = open_ledger(check_schema="on use")
    try:
        book.require_writable()
        book.check_schema()
    except ReadOnlyStore:
        raise
    except StoreError:
        pass
    return book
