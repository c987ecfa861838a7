"""Instance-conditioned prompts: a base class and a small MLP generator.

A :class:`PromptGenerator` maps per-sample features to ``num_tokens`` prompt tokens of
size ``dim``. Subclasses implement :meth:`PromptGenerator.generate`; the base class's
``forward`` validates the input (a tensor, finite, rank in ``input_ranks``, last dim
``in_dim`` when set) and the output (``(B, num_tokens, dim)``), so every generator fails
the same clear way. Written like PyTorch Geometric's ``MessagePassing``: the base owns the
plumbing, a subclass only the maths. Subclasses in this workspace: IDPT's DGCNN generator
(point-cloud patch tokens -> 1 prompt), POND's per-domain generator (series -> prompts),
Zecoler's BiLSTM prompt encoder.

Example::

    >>> import torch
    >>> from polyprompt.core.prompts.generator import MLPPromptGenerator
    >>> gen = MLPPromptGenerator(in_dim=32, num_tokens=4, dim=16, hidden=64)
    >>> gen(torch.randn(8, 32)).shape          # (B, in_dim) -> (B, n, d)
    torch.Size([8, 4, 16])
    >>> gen(torch.randn(8, 50, 32)).shape      # (B, N, in_dim): mean over N first
    torch.Size([8, 4, 16])

Writing a subclass::

    >>> from polyprompt.core.prompts.generator import PromptGenerator
    >>> class LastToken(PromptGenerator):
    ...     input_ranks = (3,)
    ...     def __init__(self, dim):
    ...         super().__init__(num_tokens=1, dim=dim, in_dim=dim)
    ...     def generate(self, features, **context):
    ...         return features[:, -1:, :]
    >>> LastToken(16)(torch.randn(2, 7, 16)).shape
    torch.Size([2, 1, 16])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from polyprompt.core.errors import InputError, ShapeError
from polyprompt.core.prompts import _int_arg
from polyprompt.core.validation import check_tensor


class PromptGenerator(nn.Module, ABC):
    """Base class of generators of instance-conditioned prompts.

    Args:
        num_tokens: prompt tokens produced per sample.
        dim: token size.
        in_dim: expected size of the features' last dimension (``None``: not checked).

    Class attributes:
        input_ranks: accepted ranks of ``features`` (default ``(2, 3)``: ``(B, D)`` or
            ``(B, N, D)``); override in subclasses.

    Shapes:
        ``forward(features (B, ...), **context)`` -> ``(B, num_tokens, dim)``.

    Raises:
        ShapeError: wrong input rank / last dim, or ``generate`` returned a wrong shape
        (the message names the subclass). NonFiniteError: NaN / inf features.
    """

    input_ranks: ClassVar[tuple[int, ...]] = (2, 3)

    def __init__(self, num_tokens: int, dim: int, *, in_dim: int | None = None) -> None:
        super().__init__()
        where = type(self).__name__
        self.num_tokens = _int_arg(num_tokens, "num_tokens", where)
        self.dim = _int_arg(dim, "dim", where)
        self.in_dim = None if in_dim is None else _int_arg(in_dim, "in_dim", where)

    @abstractmethod
    def generate(self, features: torch.Tensor, **context: Any) -> torch.Tensor:
        """Return prompts ``(B, num_tokens, dim)`` for validated ``features``."""

    def forward(self, features: torch.Tensor, **context: Any) -> torch.Tensor:
        name = type(self).__name__
        dims = {} if self.in_dim is None else {-1: self.in_dim}
        check_tensor(
            features, "features", rank=self.input_ranks, dims=dims, min_size={0: 1},
            where=f"{name}.forward",
        )  # fmt: skip
        out = self.generate(features, **context)
        expected = (features.shape[0], self.num_tokens, self.dim)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ShapeError(
                f"{name}.generate must return (B, num_tokens, dim) = {expected}, got {got}"
            )
        return out

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, dim={self.dim}, in_dim={self.in_dim}"


class MLPPromptGenerator(PromptGenerator):
    """Features -> 2-layer MLP -> ``num_tokens`` prompts (a template subclass).

    Rank-3 features ``(B, N, in_dim)`` are mean-pooled over ``N`` first; pass
    ``mask=(B, N) bool`` (True = real token) to average only the real tokens.

    Args:
        in_dim: feature size.
        num_tokens: prompts per sample.
        dim: prompt size.
        hidden: MLP hidden size.

    Shapes:
        ``(B, in_dim)`` or ``(B, N, in_dim)`` -> ``(B, num_tokens, dim)``.
    """

    def __init__(self, in_dim: int, num_tokens: int, dim: int, hidden: int = 128) -> None:
        super().__init__(num_tokens, dim, in_dim=in_dim)
        self.hidden = _int_arg(hidden, "hidden", "MLPPromptGenerator")
        assert self.in_dim is not None
        self.mlp = nn.Sequential(
            nn.Linear(self.in_dim, self.hidden),
            nn.GELU(),
            nn.Linear(self.hidden, self.num_tokens * self.dim),
        )

    def generate(
        self, features: torch.Tensor, mask: torch.Tensor | None = None, **context: Any
    ) -> torch.Tensor:
        if features.dim() == 3:
            if mask is None:
                features = features.mean(dim=1)
            else:
                b, n = features.shape[:2]
                check_tensor(
                    mask, "mask", rank=2, dims={0: b, 1: n}, where="MLPPromptGenerator.forward"
                )
                if mask.dtype != torch.bool:
                    raise InputError(
                        f"MLPPromptGenerator.forward: `mask` must be bool, got {mask.dtype}"
                    )
                w = mask.to(features.dtype).unsqueeze(-1)
                features = (features * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
        return self.mlp(features).view(features.shape[0], self.num_tokens, self.dim)
