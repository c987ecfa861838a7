"""PEP 562 lazy exports for package ``__init__`` modules (the core's and every modality package's).

``__getattr__, __dir__ = lazy_exports(__name__, {"Name": "submodule", ...}, globals())``
imports ``<package>.<submodule>`` only when ``Name`` is first accessed, then caches it.
Imports nothing heavy itself, so ``import polyprompt.core`` stays free of torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any], extra: tuple[str, ...] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package`` resolving ``exports`` on demand."""
    names = sorted([*exports, *extra])

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__
