"""Feature prompts: a learnable vector added to every input feature (GPF, GPF-plus).

Fang et al., "Universal Prompt Tuning for Graph Neural Networks" (NeurIPS 2023); the
official code and ProG's ``GPF`` / ``GPF_plus`` (``prompt_graph/prompt/GPF.py``):

* ``gpf``      -- one vector ``p`` (``(1, d)``, glorot init): ``x_i + p``.
* ``gpf_plus`` -- ``num_basis`` vectors ``p_j`` (``(k, d)``, glorot init) and a linear
  score ``W_a: d -> k``; node ``i`` gets ``x_i + sum_j a_ij p_j`` with
  ``a_i = softmax(W_a x_i)``, so different nodes get different prompts.

An optional boolean ``mask`` restricts the prompt to the chosen nodes (``x_i`` unchanged
elsewhere), as RELIEF's sparse prompts (only the nodes its agent picked carry a prompt).
Features may be ``(N, d)`` (one graph / a PyG batch of nodes) or ``(B, N, d)`` (dense).

Example::

    >>> import torch
    >>> from polyprompt.core.prompts.feature import FeaturePrompt
    >>> gpf = FeaturePrompt(dim=300)
    >>> x = torch.randn(17, 300)                  # (N, d) node features
    >>> gpf(x).shape
    torch.Size([17, 300])
    >>> plus = FeaturePrompt(300, kind="gpf_plus", num_basis=10)
    >>> mask = torch.rand(17) < 0.5               # (N,) which nodes get a prompt
    >>> plus(x, mask=mask).shape
    torch.Size([17, 300])
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import nn

from polyprompt.core.errors import InputError, ShapeError
from polyprompt.core.prompts import _enum_arg, _int_arg
from polyprompt.core.validation import check_tensor


class FeaturePromptKind(str, Enum):
    """GPF (one shared vector) or GPF-plus (attention over basis vectors)."""

    GPF = "gpf"
    GPF_PLUS = "gpf_plus"


class FeaturePrompt(nn.Module):
    """Additive prompt on node / token features.

    Args:
        dim: feature size ``d``.
        kind: :class:`FeaturePromptKind` or ``"gpf"`` / ``"gpf_plus"``.
        num_basis: number of basis vectors ``k`` (``gpf_plus`` only).

    Parameters:
        ``prompt`` ``(1, d)`` for ``gpf``; ``basis`` ``(k, d)`` and ``score``
        (``nn.Linear(d, k)``) for ``gpf_plus``.

    Shapes:
        ``forward(x (N, d) | (B, N, d), mask (N,) | (B, N) bool | None)`` -> same as ``x``.

    Raises:
        ConfigError: bad sizes / kind. ShapeError, NonFiniteError, InputError: bad ``x`` or
        ``mask``.
    """

    def __init__(
        self, dim: int, kind: FeaturePromptKind | str = "gpf", num_basis: int = 10
    ) -> None:
        super().__init__()
        where = "FeaturePrompt"
        self.dim = _int_arg(dim, "dim", where)
        self.kind = _enum_arg(FeaturePromptKind, kind, "kind", where)
        if self.kind is FeaturePromptKind.GPF:
            self.num_basis = 1
            self.prompt = nn.Parameter(torch.empty(1, self.dim))
        else:
            self.num_basis = _int_arg(num_basis, "num_basis", where)
            self.basis = nn.Parameter(torch.empty(self.num_basis, self.dim))
            self.score = nn.Linear(self.dim, self.num_basis)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform prompt vectors (as GPF's code); default init for ``score``."""
        if self.kind is FeaturePromptKind.GPF:
            nn.init.xavier_uniform_(self.prompt)
        else:
            nn.init.xavier_uniform_(self.basis)
            self.score.reset_parameters()

    def node_prompts(self, x: torch.Tensor) -> torch.Tensor:
        """The prompt each row of ``x`` receives (same shape as ``x``), unmasked."""
        self._check_x(x, "FeaturePrompt.node_prompts")
        return self._prompts(x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x + prompt`` (only on rows where ``mask`` is True, when given)."""
        where = "FeaturePrompt.forward"
        self._check_x(x, where)
        p = self._prompts(x)
        if mask is not None:
            check_tensor(mask, "mask", rank=x.dim() - 1, where=where)
            if tuple(mask.shape) != tuple(x.shape[:-1]):
                raise ShapeError(
                    f"{where}: `mask` shape {tuple(mask.shape)} must equal x.shape[:-1] "
                    f"{tuple(x.shape[:-1])}"
                )
            if mask.dtype != torch.bool:
                raise InputError(f"{where}: `mask` must be a bool tensor, got {mask.dtype}")
            p = p * mask.unsqueeze(-1).to(p.dtype)
        return x + p

    # -- internals -----------------------------------------------------------------------
    def _check_x(self, x: torch.Tensor, where: str) -> None:
        check_tensor(x, "x", rank=(2, 3), dims={-1: self.dim}, where=where)
        if not x.is_floating_point():
            raise InputError(f"{where}: `x` must be a floating tensor, got {x.dtype}")

    def _prompts(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind is FeaturePromptKind.GPF:
            return self.prompt.to(x.dtype).expand_as(x)
        weight = torch.softmax(self.score(x.to(self.basis.dtype)), dim=-1)  # (..., k)
        return (weight @ self.basis).to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kind={self.kind.value}, num_basis={self.num_basis}"
