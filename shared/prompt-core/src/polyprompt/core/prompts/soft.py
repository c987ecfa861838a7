"""Soft prompt: ``num_tokens`` learnable vectors of size ``dim`` (prompt tuning).

Lester et al., "The Power of Scale for Parameter-Efficient Prompt Tuning" (EMNLP 2021);
the init modes follow HF PEFT's ``PromptTuningInit`` (``peft/tuners/prompt_tuning``):

* ``random``    -- ``N(0, init_std^2)`` (default ``init_std=0.02``).
* ``uniform``   -- ``U(-init_range, init_range)``; Lester et al. use ``init_range=0.5``.
* ``token_ids`` -- copies of rows of a (frozen) word-embedding table.
* ``text``      -- the embedding rows of a tokenised text, repeated / truncated to
  ``num_tokens`` exactly as PEFT's ``PromptTuningInit.TEXT`` does.

The prompt is stored in float32 (as PEFT does) on the embedding's device.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from polyprompt.core.prompts.soft import SoftPrompt
    >>> prompt = SoftPrompt(num_tokens=5, dim=16)
    >>> prompt.weight.shape
    torch.Size([5, 16])
    >>> prompt(batch_size=3).shape            # (B, num_tokens, dim)
    torch.Size([3, 5, 16])
    >>> emb = nn.Embedding(100, 16)
    >>> SoftPrompt.from_token_ids(emb, [7, 8, 9])(2).shape
    torch.Size([2, 3, 16])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum
from typing import Any

import torch
from torch import nn

from polyprompt.core.errors import ConfigError, InputError
from polyprompt.core.prompts import _dropout_arg, _enum_arg, _float_arg, _int_arg


class PromptInit(str, Enum):
    """How a :class:`SoftPrompt` is initialised (mirrors PEFT's ``PromptTuningInit``)."""

    RANDOM = "random"
    UNIFORM = "uniform"
    TOKEN_IDS = "token_ids"
    TEXT = "text"


class SoftPrompt(nn.Module):
    """``num_tokens`` x ``dim`` learnable prompt, expanded over the batch.

    Args:
        num_tokens: number of prompt tokens ``n`` (>= 1).
        dim: token size ``d`` (>= 1); must equal ``embedding.embedding_dim`` for the
            ``token_ids`` / ``text`` inits.
        init: a :class:`PromptInit` (or its string value).
        init_std: standard deviation of the ``random`` init.
        dropout: dropout applied to the expanded prompt in training mode.
        init_range: half-width of the ``uniform`` init.
        embedding: word-embedding table for the ``token_ids`` / ``text`` inits.
        token_ids: ``num_tokens`` ids to copy (``token_ids`` init).
        tokenizer: a HF-style tokenizer: ``tokenizer(text, add_special_tokens=False)
            ["input_ids"]`` gives the ids (``text`` init).
        text: the initialisation text (``text`` init).

    Shapes:
        ``weight``: ``(n, d)``; ``forward(batch_size)`` -> ``(batch_size, n, d)``.

    Prefer the classmethods :meth:`from_token_ids` and :meth:`from_text` for the
    embedding-based inits.

    Raises:
        ConfigError: bad sizes / init arguments. InputError: bad token ids, bad
        tokenizer output, bad ``batch_size``.
    """

    weight: nn.Parameter

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        init: PromptInit | str = PromptInit.RANDOM,
        init_std: float = 0.02,
        dropout: float = 0.0,
        *,
        init_range: float = 0.5,
        embedding: nn.Embedding | None = None,
        token_ids: Sequence[int] | torch.Tensor | None = None,
        tokenizer: Any = None,
        text: str | None = None,
    ) -> None:
        super().__init__()
        where = "SoftPrompt"
        self.num_tokens = _int_arg(num_tokens, "num_tokens", where)
        self.dim = _int_arg(dim, "dim", where)
        self.init = _enum_arg(PromptInit, init, "init", where)
        self.init_std = _float_arg(init_std, "init_std", where)
        self.init_range = _float_arg(init_range, "init_range", where)
        p = _dropout_arg(dropout, where)
        self.dropout = nn.Dropout(p)

        if self.init in (PromptInit.RANDOM, PromptInit.UNIFORM):
            weight = torch.empty(self.num_tokens, self.dim)
            if self.init is PromptInit.RANDOM:
                nn.init.normal_(weight, std=self.init_std)
            else:
                nn.init.uniform_(weight, -self.init_range, self.init_range)
        else:
            table = _check_embedding(embedding, self.dim, where)
            if self.init is PromptInit.TOKEN_IDS:
                if token_ids is None:
                    raise ConfigError(f"{where}: init='token_ids' needs `token_ids`")
                ids = _check_token_ids(token_ids, table.num_embeddings, where)
                if len(ids) != self.num_tokens:
                    raise ConfigError(
                        f"{where}: init='token_ids' got {len(ids)} ids for "
                        f"num_tokens={self.num_tokens}; pass exactly num_tokens ids"
                    )
            else:
                if tokenizer is None or text is None:
                    raise ConfigError(f"{where}: init='text' needs `tokenizer` and `text`")
                ids = _tokenize(tokenizer, text, where)
                ids = _check_token_ids(ids, table.num_embeddings, f"{where} (tokenized text)")
                ids = _fit_length(ids, self.num_tokens)
            index = torch.tensor(ids, dtype=torch.long, device=table.weight.device)
            weight = table.weight.detach()[index].clone().to(torch.float32)
        self.weight = nn.Parameter(weight)

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def from_token_ids(
        cls,
        embedding: nn.Embedding,
        token_ids: Sequence[int] | torch.Tensor,
        *,
        dropout: float = 0.0,
    ) -> SoftPrompt:
        """A prompt whose ``i``-th token is ``embedding.weight[token_ids[i]]``.

        ``num_tokens = len(token_ids)``, ``dim = embedding.embedding_dim``.
        """
        table = _check_embedding(embedding, None, "SoftPrompt.from_token_ids")
        ids = _check_token_ids(token_ids, table.num_embeddings, "SoftPrompt.from_token_ids")
        return cls(
            len(ids),
            table.embedding_dim,
            PromptInit.TOKEN_IDS,
            dropout=dropout,
            embedding=table,
            token_ids=ids,
        )

    @classmethod
    def from_text(
        cls,
        embedding: nn.Embedding,
        tokenizer: Any,
        text: str,
        num_tokens: int | None = None,
        *,
        dropout: float = 0.0,
    ) -> SoftPrompt:
        """A prompt initialised from the embeddings of ``text``'s tokens.

        The ids ``tokenizer(text, add_special_tokens=False)["input_ids"]`` are repeated
        (if fewer) or truncated (if more) to ``num_tokens`` (default: as many as the
        text has), like PEFT's ``PromptTuningInit.TEXT``.
        """
        where = "SoftPrompt.from_text"
        table = _check_embedding(embedding, None, where)
        if num_tokens is None:
            num_tokens = len(_tokenize(tokenizer, text, where))
        return cls(
            num_tokens,
            table.embedding_dim,
            PromptInit.TEXT,
            dropout=dropout,
            embedding=table,
            tokenizer=tokenizer,
            text=text,
        )

    # -- forward ----------------------------------------------------------------------
    def forward(self, batch_size: int) -> torch.Tensor:
        """Return the prompt for a batch: ``(batch_size, num_tokens, dim)``."""
        b = _int_arg(batch_size, "batch_size", "SoftPrompt.forward", error=InputError)
        return self.dropout(self.weight.unsqueeze(0).expand(b, -1, -1))

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, dim={self.dim}, init={self.init.value}"


# -- helpers ------------------------------------------------------------------------------


def _check_embedding(embedding: object, dim: int | None, where: str) -> nn.Embedding:
    if not isinstance(embedding, nn.Embedding):
        raise ConfigError(
            f"{where}: `embedding` must be a torch.nn.Embedding (e.g. "
            f"model.get_input_embeddings()), got {type(embedding).__name__}"
        )
    if dim is not None and embedding.embedding_dim != dim:
        raise ConfigError(
            f"{where}: `dim`={dim} does not match embedding_dim={embedding.embedding_dim}"
        )
    return embedding


def _check_token_ids(
    token_ids: Sequence[int] | torch.Tensor, vocab_size: int, where: str
) -> list[int]:
    if isinstance(token_ids, torch.Tensor):
        if token_ids.is_floating_point() or token_ids.is_complex() or token_ids.dim() != 1:
            raise InputError(
                f"{where}: `token_ids` tensor must be 1-D integer, got dtype "
                f"{token_ids.dtype} shape {tuple(token_ids.shape)}"
            )
        ids = [int(i) for i in token_ids.tolist()]
    elif isinstance(token_ids, (str, bytes)) or not isinstance(token_ids, Sequence):
        raise InputError(
            f"{where}: `token_ids` must be a sequence of ints or a 1-D tensor, "
            f"got {type(token_ids).__name__}"
        )
    else:
        bad_type = [t for t in token_ids if isinstance(t, bool) or not isinstance(t, int)]
        if bad_type:
            raise InputError(f"{where}: `token_ids` must hold ints, got {bad_type[:5]!r}")
        ids = [int(t) for t in token_ids]
    if not ids:
        raise InputError(f"{where}: `token_ids` is empty")
    out_of_range = [i for i in ids if not 0 <= i < vocab_size]
    if out_of_range:
        raise InputError(
            f"{where}: token ids {out_of_range[:5]} are outside the embedding's range "
            f"[0, {vocab_size})"
        )
    return ids


def _tokenize(tokenizer: Any, text: object, where: str) -> list[int]:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: `text` must be a non-empty string, got {text!r}")
    if not callable(tokenizer):
        raise InputError(
            f"{where}: `tokenizer` must be callable like a HF tokenizer, got "
            f"{type(tokenizer).__name__}"
        )
    encoded = tokenizer(text, add_special_tokens=False)
    try:
        ids = encoded["input_ids"]
    except (KeyError, TypeError, IndexError):
        raise InputError(
            f"{where}: tokenizer output has no 'input_ids' (got {type(encoded).__name__})"
        ) from None
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, list) and len(ids) == 1 and isinstance(ids[0], list):
        ids = ids[0]  # a batch of one (return_tensors=...)
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ids
    ):
        raise InputError(f"{where}: tokenizer 'input_ids' must be a flat list of ints")
    if not ids:
        raise InputError(f"{where}: text {text!r} tokenizes to no tokens")
    return ids


def _fit_length(ids: list[int], n: int) -> list[int]:
    """Repeat (if shorter) then truncate ``ids`` to ``n`` (PEFT ``PromptTuningInit.TEXT``)."""
    if len(ids) < n:
        ids = ids * math.ceil(n / len(ids))
    return ids[:n]
