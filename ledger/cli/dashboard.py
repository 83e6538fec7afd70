"""`ledger dashboard`: serve the Streamlit dashboard (shipped as `ledger.dashboard`) on this machine."""

from __future__ import annotations

import os
import sys

import typer

from ledger.cli.console import open_book, out
from ledger.dashboard import APP_PATH
from ledger.errors import UsageError


def build_streamlit_command(port: int, host: str) -> list[str]:
    """Pure: the `streamlit run` command line for the dashboard, headless and without usage statistics."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_PATH),
        "--server.port", str(port),
        "--server.address", host,
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--client.toolbarMode", "minimal",
        "--global.developmentMode", "false",
        "--theme.base", "light",
    ]


def dashboard_command(
    port: int = typer.Option(8501, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 exposes the dashboard to the network."),
    print_command: bool = typer.Option(False, "--print-command", help="Print the streamlit command and stop."),
):
    """Start the dashboard: browse, compare and verify runs in a browser (read-only)."""
    if not 0 < port < 65536:
        raise UsageError(f"port {port} is not a TCP port", "choose one between 1 and 65535, e.g. --port 8501")
    command = build_streamlit_command(port, host)
    if print_command:
        print(" ".join(command))
        return
    book = open_book()  # fail here, with the usual message, if the database cannot be opened or is outdated
    where = book.where
    book.release_connections()  # the server opens its own; this process becomes it
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    out.print(f"ledger dashboard: http://{shown}:{port}  (ledger {where}); Ctrl+C stops it", markup=False,
              highlight=False)
    if host not in ("127.0.0.1", "localhost", "::1"):
        out.print(f"note: bound to {host}: anyone who can reach this machine can read the ledger", markup=False,
                  highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    # Replace this process with Streamlit's, so that stopping `ledger dashboard` stops the server too.
    os.execv(sys.executable, command)


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard_command)
