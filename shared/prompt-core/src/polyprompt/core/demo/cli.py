"""What every example's ``main(argv)`` shares: flag overrides onto a config, and one way to
report bad input.

An example's ``main`` parses its flags, turns the ones the user gave into config changes
(:func:`overrides`) and runs its body through :func:`run_cli`, which turns a
:class:`~polyprompt.core.errors.PolypromptError` (bad data, bad config, a missing optional
dependency) into ``"<prog>: error: <message>"`` on stderr and exit status 2 — the argparse
convention — instead of a traceback. Other exceptions are bugs and still raise.

Example::

    >>> import argparse
    >>> args = argparse.Namespace(seeds=[0, 1], epochs=None, methods=[])
    >>> overrides(args, {"seeds": "seeds", "epochs": "epochs", "methods": "methods"})
    {'seeds': (0, 1)}
    >>> run_cli("demo", lambda: None)
    0
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["overrides", "run_cli"]


def overrides(args: Any, fields: Mapping[str, str]) -> dict[str, Any]:
    """Config changes from the flags the user gave: ``{field: value}`` for each
    ``{flag attribute: config field}`` whose value is not ``None`` and not an empty list.
    Lists become tuples (config fields are tuples)."""
    changes: dict[str, Any] = {}
    for attr, name in fields.items():
        value = getattr(args, attr, None)
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        changes[name] = tuple(value) if isinstance(value, list) else value
    return changes


def run_cli(prog: str, body: Callable[[], Any]) -> int:
    """Run ``body()``; exit status 0, or 2 with ``"<prog>: error: ..."`` on stderr when it
    raises a :class:`~polyprompt.core.errors.PolypromptError`."""
    from polyprompt.core.errors import PolypromptError

    try:
        body()
    except PolypromptError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0
