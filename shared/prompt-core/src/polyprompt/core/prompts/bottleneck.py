"""Bottleneck adapter: ``up(act(down(x))) * scale`` (optionally ``+ x``).

The adapter of AdaptFormer (Chen et al., NeurIPS 2022: down ``d -> hidden``, ReLU, up
``hidden -> d`` initialised to zero, fixed scale 0.1 or a learnable scalar), DVPT's code
(NKUhealong/DVPT ``share_MLP``: ``768 -> 20 -> 768``, QuickGELU, a learnable gate
initialised to 0) and CoDA's stage-1 adapter (``64 -> 16 -> 64``).

``scale``:

* a float -- fixed multiplier (AdaptFormer's ``0.1``; default ``1.0``).
* ``"learnable"`` -- a learnable scalar gate ``g`` initialised to ``gate_init`` (default
  ``0``, DVPT's zero gate: the adapter starts as a no-op and opens as it trains).

``zero_init_up`` (default ``None`` = automatic): zero the up projection so the adapter
outputs 0 at init (AdaptFormer). With a zero gate *and* a zero up projection both
gradients are exactly zero and nothing would ever train, so the automatic choice is
``True`` for a fixed scale or a non-zero ``gate_init`` and ``False`` (default init of the
up projection, as DVPT) for a zero gate; asking for both explicitly is a ConfigError.
Either way the output starts at 0, so with ``residual=True`` the module is the identity
at init.

Example::

    >>> import torch
    >>> from polyprompt.core.prompts.bottleneck import Bottleneck
    >>> ad = Bottleneck(dim=768, hidden=20, residual=True)
    >>> x = torch.randn(2, 197, 768)               # any (..., dim)
    >>> torch.equal(ad(x), x)                      # zero-init up: identity at init
    True
    >>> dvpt = Bottleneck(768, 20, activation="quick_gelu", scale="learnable")
    >>> dvpt.gate.item(), dvpt(x).shape
    (0.0, torch.Size([2, 197, 768]))
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import nn

from polyprompt.core.errors import ConfigError, ShapeError
from polyprompt.core.prompts import _dropout_arg, _enum_arg, _int_arg
from polyprompt.core.validation import check_tensor


class BottleneckActivation(str, Enum):
    """Activation between the down and up projections."""

    GELU = "gelu"
    QUICK_GELU = "quick_gelu"  # x * sigmoid(1.702 x), CLIP / DVPT
    RELU = "relu"  # AdaptFormer
    SILU = "silu"
    TANH = "tanh"
    IDENTITY = "identity"


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


_ACTIVATIONS = {
    BottleneckActivation.GELU: nn.GELU,
    BottleneckActivation.QUICK_GELU: _QuickGELU,
    BottleneckActivation.RELU: nn.ReLU,
    BottleneckActivation.SILU: nn.SiLU,
    BottleneckActivation.TANH: nn.Tanh,
    BottleneckActivation.IDENTITY: nn.Identity,
}


def make_activation(activation: BottleneckActivation | str) -> nn.Module:
    """A fresh activation module for ``activation`` (a :class:`BottleneckActivation` or its value),
    for adapters elsewhere that offer the same choices as :class:`Bottleneck`."""
    return _ACTIVATIONS[BottleneckActivation(activation)]()


class Bottleneck(nn.Module):
    """Down-projection, activation, up-projection, scaled; residual optional.

    Args:
        dim: input / output size ``d``.
        hidden: bottleneck size.
        activation: :class:`BottleneckActivation` or its string value.
        scale: a float, or ``"learnable"`` for a learnable scalar gate.
        zero_init_up: zero the up projection (``None``: automatic, see module docs).
        residual: return ``x + out`` instead of ``out``.
        dropout: dropout after the activation (AdaptFormer uses 0.1).
        gate_init: initial value of the learnable gate.

    Shapes:
        ``forward(x (..., d))`` -> ``(..., d)``.

    Raises:
        ConfigError: bad sizes, activation or scale. ShapeError / NonFiniteError: bad ``x``.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        activation: BottleneckActivation | str = BottleneckActivation.GELU,
        scale: float | str = 1.0,
        zero_init_up: bool | None = None,
        residual: bool = False,
        *,
        dropout: float = 0.0,
        gate_init: float = 0.0,
    ) -> None:
        super().__init__()
        where = "Bottleneck"
        self.dim = _int_arg(dim, "dim", where)
        self.hidden = _int_arg(hidden, "hidden", where)
        self.activation = _enum_arg(BottleneckActivation, activation, "activation", where)
        self.residual = bool(residual)
        self.down = nn.Linear(self.dim, self.hidden)
        self.act = make_activation(self.activation)
        self.drop = nn.Dropout(_dropout_arg(dropout, where))
        self.up = nn.Linear(self.hidden, self.dim)

        self.learnable_scale = isinstance(scale, str)
        if self.learnable_scale:
            if scale != "learnable":
                raise ConfigError(f"{where}: `scale` must be a float or 'learnable', got {scale!r}")
            if isinstance(gate_init, bool) or not isinstance(gate_init, (int, float)):
                raise ConfigError(f"{where}: `gate_init` must be a number, got {gate_init!r}")
            self.gate = nn.Parameter(torch.tensor(float(gate_init)))
            zero_gate = float(gate_init) == 0.0
        else:
            if isinstance(scale, bool) or not isinstance(scale, (int, float)):
                raise ConfigError(f"{where}: `scale` must be a float or 'learnable', got {scale!r}")
            if not torch.isfinite(torch.tensor(float(scale))):
                raise ConfigError(f"{where}: `scale` must be finite, got {scale!r}")
            self.scale = float(scale)
            zero_gate = self.scale == 0.0

        if zero_init_up is None:
            zero_init_up = not zero_gate
        elif zero_init_up and zero_gate:
            raise ConfigError(
                f"{where}: zero_init_up=True with a zero scale/gate gives zero gradients to "
                f"both; use zero_init_up=False (DVPT) or a non-zero gate_init/scale"
            )
        self.zero_init_up = bool(zero_init_up)
        if self.zero_init_up:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        where = "Bottleneck.forward"
        if not isinstance(x, torch.Tensor) or x.dim() < 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(f"{where}: `x` must be a tensor (..., {self.dim}), got {shape}")
        check_tensor(x, "x", dims={-1: self.dim}, where=where)
        out = self.up(self.drop(self.act(self.down(x))))
        out = out * (self.gate if self.learnable_scale else self.scale)
        return x + out if self.residual else out

    def extra_repr(self) -> str:
        scale = "learnable" if self.learnable_scale else self.scale
        return (
            f"dim={self.dim}, hidden={self.hidden}, activation={self.activation.value}, "
            f"scale={scale}, residual={self.residual}"
        )
