"""Environment: the Python, platform and installed packages of the process that launched the job; and who did.

Called on every capture, so the package scan is cached per process. The cache key is the modification time of
each directory on sys.path: `%pip install` in a notebook adds a `*.dist-info` directory, which changes its
parent's mtime, so a fresh scan follows an install without any cost when nothing changed.
"""

from __future__ import annotations

import getpass
import os
import platform
import re
import socket
import sys
import threading

from ledger.record import EnvironmentPin, digest

# The packages that launch a job (the SDKs and the ledger): a local job's record keeps their versions as
# `pins.environment.launcher` when its environment becomes the one the job ran with.
LAUNCHER_PACKAGES = ("sagemaker", "sagemaker-core", "boto3", "botocore", "sagemaker-ledger")

_cache: dict[str, object] = {"key": None, "pin": None}
_cache_lock = threading.Lock()


def normalize_package_name(name: str) -> str:
    """PEP 503: 'Foo_Bar.baz' -> 'foo-bar-baz'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _sys_path_state() -> tuple[tuple[str, int], ...]:
    state = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            continue
    return tuple(state)


def installed_packages() -> dict[str, str]:
    """{normalized name: version} of the distributions importable now; the first on sys.path wins, as for import."""
    from importlib.metadata import distributions

    packages: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:
            continue  # broken metadata: nothing to record
        packages.setdefault(normalize_package_name(name), dist.version)
    return dict(sorted(packages.items()))


def build_environment_pin(python: str, platform_name: str, packages: dict[str, str]) -> EnvironmentPin:
    """The pin with its fingerprint: sha256 of the canonical JSON of {python, platform, packages}. Pure."""
    fingerprint = digest({"python": python, "platform": platform_name, "packages": packages})
    return EnvironmentPin(python=python, platform=platform_name, packages=packages, fingerprint=fingerprint)


def capture_environment() -> EnvironmentPin:
    """This process's Python version, platform and packages. Cached until sys.path's directories change."""
    key = _sys_path_state()
    with _cache_lock:
        if _cache["key"] != key or _cache["pin"] is None:
            pin = build_environment_pin(platform.python_version(), platform.platform(), installed_packages())
            _cache.update(key=key, pin=pin)
        return _cache["pin"].model_copy(deep=True)  # callers may change their copy


def build_local_identity() -> str:
    """user@host, for runs where no AWS identity answers."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a bare container: getuser raises KeyError/OSError
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def capture_caller(session=None) -> str:
    """The caller's identity for `created_by`: the STS caller ARN, or user@host when STS does not answer."""
    from botocore.exceptions import BotoCoreError, ClientError

    from ledger.capture import client_for

    try:
        return client_for(session, "sts").get_caller_identity()["Arn"]
    except (BotoCoreError, ClientError, KeyError):
        return build_local_identity()
