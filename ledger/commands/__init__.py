"""Command modules: each parses and renders one area of the command line and calls the library to do the work
(DVC's command/repo split). Each has `register(app)`; ledger/cli.py lists them in COMMAND_MODULES."""
