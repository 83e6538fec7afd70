"""The `ledger` command (ledger/cli/app.py), one module a command area; console.py holds what they share."""

from ledger.cli.app import app, main, run

__all__ = ["app", "main", "run"]
