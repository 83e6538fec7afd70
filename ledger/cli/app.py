"""The command line: the Typer app, the commands of each area registered on it, and the one map from errors to
exit codes. Commands parse, call the library with the ledger handle they opened, and render; they never exit."""

from __future__ import annotations

import importlib
import sys

import typer

from ledger.cli.console import err
from ledger.errors import AnchorDamaged, Diverged, LedgerError, TamperDetected, UsageError

app = typer.Typer(
    name="ledger",
    help="A reproducibility ledger for SageMaker training jobs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# The exit code of each error, the first class that matches: 0 success; 1 a failure the message explains;
# 2 bad usage; 3 `verify` (or `audit check`) found tampering; 4 a reproduction DIVERGED.
EXIT_CODES: tuple[tuple[type[LedgerError], int], ...] = (
    (TamperDetected, 3),
    (AnchorDamaged, 3),
    (Diverged, 4),
    (UsageError, 2),
    (LedgerError, 1),
)

# One module a command area (ledger/cli/<area>.py), each with register(app): built-ins are registered the way a
# plugin would be. The order is the order of `ledger --help`.
COMMAND_AREAS: tuple[str, ...] = (
    "runs", "diff", "verify", "sync", "db", "run", "reproduce", "demo", "dashboard", "audit", "export", "lineage",
    "anchor", "proof",
)


def exit_code_of(error: LedgerError) -> int:
    return next(code for kind, code in EXIT_CODES if isinstance(error, kind))


def _register_command_areas() -> None:
    for area in COMMAND_AREAS:
        importlib.import_module(f"ledger.cli.{area}").register(app)


_register_command_areas()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map every LedgerError to a one-line message and its exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="ledger", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except LedgerError as error:
        err.print(f"error: {error}", markup=False, highlight=False)
        return exit_code_of(error)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        return 1
    except typer.exceptions.TyperException as error:  # bad usage: typer prints it as click would
        error.show()
        return error.exit_code
    except typer.Exit as error:
        return error.exit_code


def run() -> None:
    sys.exit(main())
