"""Progress bars for every long loop (tqdm; ``tqdm.auto`` picks the notebook widget).

Example::

    >>> bar = progress_bar(total=3, desc="demo", enabled=False)
    >>> for _ in range(3):
    ...     bar.update(1)
    >>> bar.set_postfix(loss=0.5)
    >>> bar.close()
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["progress_bar"]


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    enabled: bool = True,
    leave: bool = True,
    unit: str = "it",
    **kwargs: Any,
):
    """A ``tqdm`` bar (a silent one when ``enabled`` is False) with ``set_postfix``/``update``."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        disable=not enabled,
        leave=leave,
        unit=unit,
        dynamic_ncols=True,
        **kwargs,
    )
