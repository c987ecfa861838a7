"""The :class:`PromptableBackbone` protocol every method is written against.

A backbone adapter wraps a real library model (a timm ViT, a Hugging Face
transformer, a point transformer, a GNN) and exposes its token pipeline in
three steps, so a method can insert prompts at any depth without knowing the
model class::

    tokens = backbone.embed(x)                          # (B, N, D), prefix tokens first
    tokens = backbone.forward_blocks(tokens, 0, k)      # blocks [0, k)
    tokens = torch.cat([tokens[:, :P], prompt, tokens[:, P:]], 1)  # P = num_prefix_tokens
    tokens = backbone.forward_blocks(tokens, k)         # blocks [k, num_blocks)
    feats  = backbone.pool(backbone.norm(tokens))       # (B, D)

``forward_blocks`` accepts ``prefix``: per-block key/value prefixes
``{block_index: (B, 2, Lp, D)}`` for prefix tuning (DualPrompt / MVP) and
``attn_mask`` where the backbone supports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class PromptableBackbone(Protocol):
    """What a method needs from a backbone (see module docstring)."""

    embed_dim: int
    num_blocks: int
    num_prefix_tokens: int
    blocks: Sequence[nn.Module]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Raw input -> tokens ``(B, N, D)`` with prefix (CLS) tokens and positions."""
        ...

    def forward_blocks(
        self,
        tokens: torch.Tensor,
        start: int = 0,
        end: int | None = None,
        *,
        prefix: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run blocks ``[start, end)`` on ``tokens``."""
        ...

    def norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final normalisation of the token sequence."""
        ...

    def pool(self, tokens: torch.Tensor, num_prompt_tokens: int = 0) -> torch.Tensor:
        """Normed tokens ``(B, N, D)`` -> features ``(B, D)`` (CLS token or mean).

        ``num_prompt_tokens`` prompt tokens sit right after the prefix tokens and are
        left out of mean pooling.
        """
        ...

    def identity(self) -> dict[str, Any]:
        """JSON-able description stored in prompt checkpoints (class, sizes, fingerprint)."""
        ...
