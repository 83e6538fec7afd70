"""Backends by name. Built-ins are registered the same way a plugin would be: a name and a 'module:Class' path,
imported only when asked for, so that `get_backend("local")` never imports boto3 or the SageMaker SDK."""

from __future__ import annotations

import importlib
from typing import Callable

from ledger.backends.base import Backend, LaunchResult, LogFn
from ledger.errors import UsageError

_REGISTRY: dict[str, str | Callable[[], Backend]] = {
    "local": "ledger.backends.local.backend:LocalBackend",
    "sagemaker": "ledger.backends.sagemaker:SageMakerBackend",
}


def register_backend(name: str, factory: str | Callable[[], Backend]) -> None:
    """Add a backend: a 'module:Class' path or a callable that returns a Backend; either is called with the
    keyword options `get_backend` is given (settings, session), and should take any it does not use."""
    _REGISTRY[name] = factory


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def get_backend(name: str, **options) -> Backend:
    """The backend called `name`, made with `options` (settings, session: each backend takes what it uses)."""
    factory = _REGISTRY.get(name)
    if factory is None:
        raise UsageError(f"no backend named {name!r}", f"use one of: {', '.join(backend_names())}")
    if callable(factory):
        return factory(**options)
    module_name, _, class_name = factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise UsageError(f"the {name!r} backend is not available in this installation", f"use one of: "
                         f"{', '.join(n for n in backend_names() if n != name)}") from None
    return getattr(module, class_name)(**options)


__all__ = ["Backend", "LaunchResult", "LogFn", "backend_names", "get_backend", "register_backend"]
