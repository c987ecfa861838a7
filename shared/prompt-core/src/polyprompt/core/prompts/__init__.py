"""Modality-free prompt building blocks (plain ``nn.Module``s, torch only).

=====================  ==============================================================
block                  what it is
=====================  ==============================================================
:class:`SoftPrompt`    ``n x d`` learnable tokens (prompt tuning; random / uniform /
                       token-id / text init)
:class:`DeepPrompt`    one prompt per transformer block: prepended tokens (VPT-deep)
                       or key/value prefixes (prefix tuning)
:class:`PromptPool`    pool of prompts with learnable keys, top-k cosine match to a
                       query, usage-frequency penalty (L2P, DualPrompt, MVP)
:class:`PromptGenerator`  base class of instance-conditioned prompts (IDPT, POND,
                       Zecoler); :class:`MLPPromptGenerator` is a small concrete one
:class:`FeaturePrompt` additive prompt on input features (GPF, GPF-plus; RELIEF's
                       sparse node mask)
:class:`PixelPrompt`   input-space prompt: image patches (CoDA) or a padding frame (VP)
:class:`Bottleneck`    down -> activation -> up adapter (AdaptFormer, DVPT, CoDA)
=====================  ==============================================================

Names are resolved lazily (PEP 562): importing this package does not import torch.

Example::

    >>> from polyprompt.core.prompts import SoftPrompt
    >>> SoftPrompt(num_tokens=4, dim=8)(batch_size=2).shape
    torch.Size([2, 4, 8])
"""

from __future__ import annotations

import enum
from typing import TypeVar

from polyprompt.core.errors import ConfigError, PolypromptError
from polyprompt.core.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "PromptInit": "soft",
    "SoftPrompt": "soft",
    "DeepPromptMode": "deep",
    "DeepPrompt": "deep",
    "PoolOutput": "pool",
    "PromptPool": "pool",
    "PromptGenerator": "generator",
    "MLPPromptGenerator": "generator",
    "FeaturePromptKind": "feature",
    "FeaturePrompt": "feature",
    "PixelPromptMode": "pixel",
    "PixelPromptInit": "pixel",
    "PatchPosition": "pixel",
    "PixelPrompt": "pixel",
    "BottleneckActivation": "bottleneck",
    "Bottleneck": "bottleneck",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


# -- shared argument checks (private; used by the block modules) -------------------------

E = TypeVar("E", bound=enum.Enum)


def _int_arg(
    value: object,
    name: str,
    where: str,
    *,
    minimum: int = 1,
    error: type[PolypromptError] = ConfigError,
) -> int:
    """Return ``value`` as an int >= ``minimum`` or raise ``error`` naming ``where.name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        # accept 0-dim integer tensors / numpy ints, reject floats and bools
        index = getattr(value, "__index__", None)
        if isinstance(value, bool) or index is None:
            raise error(f"{where}: `{name}` must be an int, got {type(value).__name__} {value!r}")
        value = index()
    if value < minimum:
        raise error(f"{where}: `{name}` must be >= {minimum}, got {value}")
    return int(value)


def _float_arg(value: object, name: str, where: str, *, minimum: float = 0.0) -> float:
    """Return ``value`` as a finite float >= ``minimum`` or raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: `{name}` must be a number, got {type(value).__name__}")
    value = float(value)
    if not (value == value and abs(value) != float("inf")) or value < minimum:
        raise ConfigError(f"{where}: `{name}` must be a finite number >= {minimum}, got {value}")
    return value


def _dropout_arg(value: object, where: str) -> float:
    p = _float_arg(value, "dropout", where)
    if p >= 1.0:
        raise ConfigError(f"{where}: `dropout` must be in [0, 1), got {p}")
    return p


def _enum_arg(enum_type: type[E], value: object, name: str, where: str) -> E:
    """Coerce ``value`` (member or its value) to ``enum_type`` or raise :class:`ConfigError`."""
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(repr(e.value) for e in enum_type)
        raise ConfigError(f"{where}: `{name}` {value!r} is not one of {choices}") from None
