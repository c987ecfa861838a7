"""Prompt pool with learnable keys and top-k query matching (L2P / DualPrompt / MVP).

``pool_size`` prompts of ``prompt_length`` tokens, each with a learnable key. A query
``(B, key_dim)`` (usually the frozen backbone's CLS feature) is matched to the keys by
cosine similarity and the ``top_k`` closest prompts are returned (Wang et al., "Learning
to Prompt for Continual Learning", CVPR 2022).

Usage-frequency penalty (MVP, Moon et al. ICCV 2023; official KHU-AGI/Si-Blurry): the
match distance ``1 - cos(q, k_i)`` is multiplied by the prompt's selection frequency so
that often-chosen prompts look farther and rarely used ones get picked. The buffer
``frequency`` starts at ones and, in training mode only, grows by the number of times
each prompt was selected, so ``frequency = count + 1``. Selection uses
``distance * frequency / frequency.sum()``: this is Si-Blurry's DualPrompt
``match * F.normalize(frequency, p=1)`` (``models/dualprompt.py``) and ranks exactly like
MVP's ``distance * (count + 1)`` (``models/mvp.py``). The penalty applies in training mode;
the official MVP code also applies it at evaluation -- set ``penalty_in_eval=True`` for
that variant. ``similarity`` and ``key_loss`` always use the unscaled cosine.

``key_loss`` is the surrogate loss pulling the selected keys to the query:
``mean(1 - cos(q, k_selected))`` (L2P's ``reduce_sim`` term; MVP's ``similarity_loss``).

Prompt layout: ``(pool_size, L, d)``; with ``prefix_layers=m`` each prompt holds a key and
value prefix for ``m`` blocks, ``(pool_size, m, 2, L, d)`` (DualPrompt e-prompts with
prefix tuning; ``L`` tokens per key and per value as in Si-Blurry's code).

Init (``init``): ``uniform`` = ``U(-1, 1)`` for keys and prompts (L2P, Si-Blurry
``Prompt``), ``random`` = ``N(0, init_std^2)`` (``init_std=1`` is MVP's ``torch.randn``).

Example::

    >>> import torch
    >>> from polyprompt.core.prompts.pool import PromptPool
    >>> pool = PromptPool(pool_size=10, prompt_length=5, dim=32, top_k=2)
    >>> out = pool(torch.randn(4, 32))                   # query (B, key_dim)
    >>> out.prompts.shape, out.indices.shape, out.similarity.shape, out.key_loss.shape
    (torch.Size([4, 2, 5, 32]), torch.Size([4, 2]), torch.Size([4, 10]), torch.Size([]))
    >>> e = PromptPool(10, 20, 32, prefix_layers=3)      # DualPrompt / MVP e-prompts
    >>> e(torch.randn(4, 32)).prompts.shape              # (B, k, layers, 2, L, d)
    torch.Size([4, 1, 3, 2, 20, 32])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from polyprompt.core.errors import ConfigError
from polyprompt.core.prompts import _enum_arg, _float_arg, _int_arg
from polyprompt.core.prompts.soft import PromptInit
from polyprompt.core.validation import check_tensor


@dataclass
class PoolOutput:
    """What :class:`PromptPool` returns.

    Attributes:
        prompts: selected prompts, ``(B, k, L, d)`` or ``(B, k, m, 2, L, d)``.
        indices: selected prompt indices ``(B, k)`` (int64), closest first.
        similarity: cosine similarity of every query to every key ``(B, pool_size)``.
        key_loss: scalar ``mean(1 - cos(query, selected key))``.
    """

    prompts: torch.Tensor
    indices: torch.Tensor
    similarity: torch.Tensor
    key_loss: torch.Tensor


class PromptPool(nn.Module):
    """A pool of key-matched prompts.

    Args:
        pool_size: number of prompts ``M``.
        prompt_length: tokens per prompt ``L`` (per key and per value with ``prefix_layers``).
        dim: token size ``d``.
        key_dim: size of keys and queries (default ``dim``).
        top_k: prompts selected per query (``1 <= top_k <= pool_size``).
        prefix_layers: if given, each prompt is a key/value prefix for that many blocks.
        frequency_penalty: scale match distances by the selection frequency (MVP).
        penalty_in_eval: also apply the penalty in eval mode (official MVP behaviour).
        init: ``PromptInit.UNIFORM`` (``U(-1, 1)``) or ``PromptInit.RANDOM`` (normal).
        init_std: standard deviation of the ``random`` init.

    Shapes:
        ``keys``: ``(M, key_dim)``; ``prompts``: ``(M, L, d)`` or ``(M, m, 2, L, d)``;
        ``frequency`` buffer: ``(M,)``; ``forward(query (B, key_dim))`` -> :class:`PoolOutput`.

    Raises:
        ConfigError: bad sizes or init. ShapeError / NonFiniteError: bad query.
    """

    keys: nn.Parameter
    prompts: nn.Parameter
    frequency: torch.Tensor

    def __init__(
        self,
        pool_size: int,
        prompt_length: int,
        dim: int,
        *,
        key_dim: int | None = None,
        top_k: int = 1,
        prefix_layers: int | None = None,
        frequency_penalty: bool = True,
        penalty_in_eval: bool = False,
        init: PromptInit | str = PromptInit.UNIFORM,
        init_std: float = 1.0,
    ) -> None:
        super().__init__()
        where = "PromptPool"
        self.pool_size = _int_arg(pool_size, "pool_size", where)
        self.prompt_length = _int_arg(prompt_length, "prompt_length", where)
        self.dim = _int_arg(dim, "dim", where)
        self.key_dim = self.dim if key_dim is None else _int_arg(key_dim, "key_dim", where)
        self.top_k = _int_arg(top_k, "top_k", where)
        if self.top_k > self.pool_size:
            raise ConfigError(f"{where}: `top_k`={self.top_k} exceeds `pool_size`={self.pool_size}")
        self.prefix_layers = (
            None if prefix_layers is None else _int_arg(prefix_layers, "prefix_layers", where)
        )
        self.frequency_penalty = bool(frequency_penalty)
        self.penalty_in_eval = bool(penalty_in_eval)
        self.init = _enum_arg(PromptInit, init, "init", where)
        if self.init not in (PromptInit.UNIFORM, PromptInit.RANDOM):
            raise ConfigError(
                f"{where}: `init` must be 'uniform' or 'random', got {self.init.value!r}"
            )
        self.init_std = _float_arg(init_std, "init_std", where)

        shape: tuple[int, ...] = (self.pool_size, self.prompt_length, self.dim)
        if self.prefix_layers is not None:
            shape = (self.pool_size, self.prefix_layers, 2, self.prompt_length, self.dim)
        keys = torch.empty(self.pool_size, self.key_dim)
        prompts = torch.empty(shape)
        for t in (keys, prompts):
            if self.init is PromptInit.UNIFORM:
                nn.init.uniform_(t, -1.0, 1.0)
            else:
                nn.init.normal_(t, std=self.init_std)
        self.keys = nn.Parameter(keys)
        self.prompts = nn.Parameter(prompts)
        self.register_buffer("frequency", torch.ones(self.pool_size))

    @property
    def prompt_shape(self) -> tuple[int, ...]:
        """Shape of one prompt: ``(L, d)`` or ``(m, 2, L, d)``."""
        return tuple(self.prompts.shape[1:])

    def reset_frequency(self) -> None:
        """Forget the selection statistics (``frequency`` back to ones)."""
        self.frequency.fill_(1.0)

    def forward(self, query: torch.Tensor) -> PoolOutput:
        """Select ``top_k`` prompts per query row."""
        check_tensor(
            query, "query", rank=2, dims={1: self.key_dim}, min_size={0: 1},
            where="PromptPool.forward",
        )  # fmt: skip
        sim = F.cosine_similarity(query.unsqueeze(1), self.keys.unsqueeze(0), dim=-1)  # (B, M)
        distance = 1.0 - sim
        score = distance
        if self.frequency_penalty and (self.training or self.penalty_in_eval):
            weight = (self.frequency / self.frequency.sum()).to(distance.dtype)
            score = distance * weight
        indices = score.detach().topk(self.top_k, dim=1, largest=False, sorted=True).indices
        selected = distance.gather(1, indices)  # (B, k), unscaled
        key_loss = selected.mean()
        prompts = self.prompts[indices]  # (B, k, *prompt_shape)
        if self.training:
            with torch.no_grad():
                counts = torch.bincount(indices.reshape(-1), minlength=self.pool_size)
                self.frequency += counts.to(self.frequency.dtype)
        return PoolOutput(prompts=prompts, indices=indices, similarity=sim, key_loss=key_loss)

    def extra_repr(self) -> str:
        return (
            f"pool_size={self.pool_size}, prompt_length={self.prompt_length}, dim={self.dim}, "
            f"key_dim={self.key_dim}, top_k={self.top_k}, prefix_layers={self.prefix_layers}, "
            f"frequency_penalty={self.frequency_penalty}"
        )
