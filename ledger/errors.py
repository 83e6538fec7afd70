"""Every error the ledger raises on purpose: a message that says what went wrong and a hint that says what to do.

The library raises, never exits; the command line maps each class to its exit code in one place
(`ledger.cli.app.EXIT_CODES`).
"""


class LedgerError(Exception):
    """A failure the user can act on. `str()` is one line: the message, then the hint after '; '."""

    def __init__(self, message: str, hint: str = ""):
        self.message = message
        self.hint = hint
        super().__init__(f"{message}; {hint}" if hint else message)


class NotFound(LedgerError):
    """A run, entry or object that does not exist."""


class UsageError(LedgerError):
    """Input the user gave that cannot be understood (bad id, malformed URI, bad filter)."""


class StoreError(LedgerError):
    """The database cannot be reached, written, or is at the wrong schema version."""


class DatabaseDamaged(StoreError):
    """The database file is not a database any more, or its pages are malformed (`ledger verify` exits 3)."""


class OutdatedSchema(StoreError):
    """The database was made by an older ledger; `ledger db upgrade` fixes it."""


class NoSpace(LedgerError):
    """A file system has no room for what is to be written there (staging a job's inputs, say)."""


class ReadOnlyStore(StoreError):
    """The database can be read, not written (read-only media, a SELECT-only role): writing commands refuse."""


class CaptureRefused(LedgerError):
    """Strict mode refused to send a request that has pin gaps."""


class PlanFailed(LedgerError):
    """A reproduction's preflight found pins that can no longer be had; `.plan` holds the whole table."""

    def __init__(self, message: str, hint: str = "", plan=None):
        super().__init__(message, hint)
        self.plan = plan


class TamperDetected(LedgerError):
    """`verify` found an entry or projection that does not match the chain."""


class AnchorDamaged(LedgerError):
    """An anchor that cannot be read: the log cannot be checked against it, which is not a pass."""


class Diverged(LedgerError):
    """A reproduction ended DIVERGED."""
