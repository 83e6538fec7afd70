"""Every LEDGER_* setting, typed and documented, in one place. Read once per call of `load_settings()`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

VERSION = "0.1.0"  # the package version (pyproject.toml); reports and exports name the ledger that made them
DATA_PIN_MODES = ("versions", "snapshot", "off")


@dataclass(frozen=True)
class Settings:
    home: Path
    """LEDGER_HOME: where the embedded database, blobs, job roots and the content store live. Default ~/.ledger."""
    db_url: str
    """LEDGER_DB_URL: SQLAlchemy URL of the store. Default SQLite at LEDGER_HOME/ledger.db; PostgreSQL for a team."""
    mlflow_uri: str
    """LEDGER_MLFLOW_URI, else MLFLOW_TRACKING_URI, else SQLite at LEDGER_HOME/mlflow.db."""
    strict: bool
    """LEDGER_STRICT: refuse to launch a job whose capture has a pin gap."""
    data_pin: str
    """LEDGER_DATA_PIN: 'versions' records object versions; 'snapshot' also copies them to an immutable prefix and
    points the channel there; 'off' records nothing about S3 data."""
    env_cache: Path = Path()
    """LEDGER_ENV_CACHE: where local jobs' Python environments are built and kept, one a lock digest; a user-level
    cache shared by every LEDGER_HOME. Default $XDG_CACHE_HOME/sagemaker-ledger/environments (~/.cache/...)."""

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def load_settings(**overrides) -> Settings:
    """Settings from the environment; keyword arguments win over it (autolog(strict=...), tests)."""
    env = os.environ
    home = Path(overrides.pop("home", None) or env.get("LEDGER_HOME") or Path.home() / ".ledger").expanduser()
    db_url = overrides.pop("db_url", None) or env.get("LEDGER_DB_URL") or f"sqlite:///{home / 'ledger.db'}"
    mlflow_uri = (
        overrides.pop("mlflow_uri", None)
        or env.get("LEDGER_MLFLOW_URI")
        or env.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{home / 'mlflow.db'}"
    )
    strict = overrides.pop("strict", None)
    strict = _truthy(env.get("LEDGER_STRICT")) if strict is None else bool(strict)
    data_pin = (overrides.pop("data_pin", None) or env.get("LEDGER_DATA_PIN") or "versions").strip().lower()
    env_cache = Path(overrides.pop("env_cache", None) or env.get("LEDGER_ENV_CACHE") or Path(
        env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sagemaker-ledger" / "environments").expanduser()
    if overrides:
        raise TypeError(f"unknown settings: {sorted(overrides)}")
    if data_pin not in DATA_PIN_MODES:
        from ledger.errors import UsageError

        raise UsageError(f"LEDGER_DATA_PIN={data_pin!r} is not a mode", f"use one of: {', '.join(DATA_PIN_MODES)}")
    return Settings(home=home, db_url=db_url, mlflow_uri=mlflow_uri, strict=strict, data_pin=data_pin,
                    env_cache=env_cache)
