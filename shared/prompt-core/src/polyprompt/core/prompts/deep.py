"""Deep prompts: one learnable prompt per transformer block.

Two modes:

* ``prepend`` -- VPT-deep (Jia et al., "Visual Prompt Tuning", ECCV 2022): at block ``l``
  ``num_tokens`` new tokens are inserted into the sequence (replacing the previous
  block's prompt tokens). ``forward(l, B)`` -> ``(B, n, d)``.
* ``prefix``  -- prefix tuning (Li & Liang 2021) as used by DualPrompt / MVP: at block
  ``l`` the attention sees ``n`` extra keys and ``n`` extra values.
  ``forward(l, B)`` -> ``(B, 2, n, d)`` with index 0 = key prefix, 1 = value prefix
  (the layout ``TimmViTAdapter.forward_blocks(prefix=...)`` takes).

Length convention for ``prefix``: ``num_tokens`` is the number of tokens **per key and
per value**. This is what the official Si-Blurry / MVP code does (KHU-AGI/Si-Blurry,
``models/mvp.py`` and ``models/dualprompt.py``: ``e_size = 2 * e_length * len_e_prompt``
viewed as ``(2 * layers, len_e_prompt, D)``, so a length-20 e-prompt gives 20 key + 20
value tokens). The DualPrompt paper instead splits a length-``L`` prompt into ``L/2`` key
and ``L/2`` value tokens: to reproduce the paper pass ``num_tokens=L // 2``.

Storage: one Parameter ``weight`` of shape ``(len(layers), n, d)`` (prepend) or
``(len(layers), 2, n, d)`` (prefix), initialised ``N(0, init_std^2)``.

Example::

    >>> from polyprompt.core.prompts.deep import DeepPrompt
    >>> vpt = DeepPrompt(num_layers=12, num_tokens=10, dim=192)
    >>> vpt(layer=3, batch_size=2).shape          # (B, n, d)
    torch.Size([2, 10, 192])
    >>> pre = DeepPrompt(12, 5, 192, mode="prefix", layers=[2, 3, 4])
    >>> pre.weight.shape, pre(2, batch_size=4).shape   # (B, 2, n, d): key, value
    (torch.Size([3, 2, 5, 192]), torch.Size([4, 2, 5, 192]))
    >>> pre.has(0)
    False
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import torch
from torch import nn

from polyprompt.core.errors import ConfigError, InputError
from polyprompt.core.prompts import _dropout_arg, _enum_arg, _float_arg, _int_arg


class DeepPromptMode(str, Enum):
    """Where a :class:`DeepPrompt` enters a block."""

    PREPEND = "prepend"
    PREFIX = "prefix"


class DeepPrompt(nn.Module):
    """Per-layer prompts for a ``num_layers``-block transformer.

    Args:
        num_layers: number of blocks of the backbone.
        num_tokens: prompt tokens per layer (per key and per value in ``prefix`` mode).
        dim: token size.
        mode: :class:`DeepPromptMode` or its string value.
        layers: block indices that get a prompt (default: all ``range(num_layers)``);
            stored sorted in :attr:`layers`.
        init_std: standard deviation of the normal init.
        dropout: dropout on the returned prompt (training mode only).

    Shapes:
        ``weight``: ``(len(layers), n, d)`` / ``(len(layers), 2, n, d)``;
        ``forward(layer, B)``: ``(B, n, d)`` / ``(B, 2, n, d)``.

    Raises:
        ConfigError: bad sizes, unknown mode, layers out of range or repeated.
        InputError: ``forward`` for a layer without a prompt, bad ``batch_size``.
    """

    weight: nn.Parameter

    def __init__(
        self,
        num_layers: int,
        num_tokens: int,
        dim: int,
        mode: DeepPromptMode | str = DeepPromptMode.PREPEND,
        layers: Sequence[int] | None = None,
        init_std: float = 0.02,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        where = "DeepPrompt"
        self.num_layers = _int_arg(num_layers, "num_layers", where)
        self.num_tokens = _int_arg(num_tokens, "num_tokens", where)
        self.dim = _int_arg(dim, "dim", where)
        self.mode = _enum_arg(DeepPromptMode, mode, "mode", where)
        self.init_std = _float_arg(init_std, "init_std", where)
        self.dropout = nn.Dropout(_dropout_arg(dropout, where))

        if layers is None:
            chosen = list(range(self.num_layers))
        else:
            if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
                raise ConfigError(
                    f"{where}: `layers` must be a sequence of ints, got {type(layers).__name__}"
                )
            chosen = [_int_arg(i, "layers[]", where, minimum=0) for i in layers]
            if not chosen:
                raise ConfigError(f"{where}: `layers` is empty")
            bad = [i for i in chosen if i >= self.num_layers]
            if bad:
                raise ConfigError(
                    f"{where}: layers {bad} out of range for num_layers={self.num_layers}"
                )
            if len(set(chosen)) != len(chosen):
                raise ConfigError(f"{where}: `layers` has repeated entries {chosen}")
        self.layers: tuple[int, ...] = tuple(sorted(chosen))
        self._slot = {layer: i for i, layer in enumerate(self.layers)}

        shape: tuple[int, ...] = (len(self.layers), self.num_tokens, self.dim)
        if self.mode is DeepPromptMode.PREFIX:
            shape = (len(self.layers), 2, self.num_tokens, self.dim)
        weight = torch.empty(shape)
        nn.init.normal_(weight, std=self.init_std)
        self.weight = nn.Parameter(weight)

    def has(self, layer: int) -> bool:
        """Whether block ``layer`` has a prompt."""
        return layer in self._slot

    def forward(self, layer: int, batch_size: int) -> torch.Tensor:
        """The prompt of block ``layer`` for a batch: ``(B, n, d)`` or ``(B, 2, n, d)``."""
        where = "DeepPrompt.forward"
        layer = _int_arg(layer, "layer", where, minimum=0, error=InputError)
        b = _int_arg(batch_size, "batch_size", where, error=InputError)
        slot = self._slot.get(layer)
        if slot is None:
            raise InputError(
                f"{where}: layer {layer} has no prompt; layers with one: {self.layers}"
            )
        p = self.weight[slot]
        return self.dropout(p.unsqueeze(0).expand(b, *p.shape))

    def as_dict(self, batch_size: int) -> dict[int, torch.Tensor]:
        """``{layer: forward(layer, batch_size)}`` for every prompted layer.

        In ``prefix`` mode this is the ``prefix=`` mapping of
        ``PromptableBackbone.forward_blocks``.
        """
        return {layer: self(layer, batch_size) for layer in self.layers}

    def extra_repr(self) -> str:
        return (
            f"num_layers={self.num_layers}, num_tokens={self.num_tokens}, dim={self.dim}, "
            f"mode={self.mode.value}, layers={self.layers}"
        )
