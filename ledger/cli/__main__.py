"""`python -m ledger.cli` is the `ledger` command."""

from ledger.cli.app import run

run()
