"""Learning-rate factors shared by the Trainer and the in-situ pre-training loops.

One definition of "linear warm-up, then cosine decay to 0" (MAE / AudioMAE / Point-MAE and
the core :class:`~polyprompt.core.trainer.Trainer`), for ``torch.optim.lr_scheduler.LambdaLR``::

    >>> [round(warmup_cosine(s, warmup=2, total=6), 3) for s in range(6)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
"""

from __future__ import annotations

import math

__all__ = ["warmup_cosine"]


def warmup_cosine(step: int, warmup: int, total: int, *, cosine: bool = True) -> float:
    """Factor of the base learning rate at optimizer ``step`` (0-based).

    ``(step + 1) / warmup`` during the first ``warmup`` steps, then ``0.5 * (1 + cos(pi * t))``
    with ``t = (step - warmup) / (total - warmup)`` clamped to ``[0, 1]`` (``1.0`` instead when
    ``cosine`` is off: warm-up only).
    """
    if step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))
