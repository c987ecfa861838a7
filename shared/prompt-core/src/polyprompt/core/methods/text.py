"""Prompt tuning of a frozen Hugging Face language model (registered as ``"prompt_tuning"``).

Lester, Al-Rfou & Constant, *The Power of Scale for Parameter-Efficient Prompt Tuning*
(EMNLP 2021): ``n`` learnable vectors are put in front of the input's word embeddings
and trained with the model's own loss while every weight of the LM stays frozen. The
config mirrors HF PEFT's ``PromptTuningConfig`` (``peft/tuners/prompt_tuning/config.py``):
``num_tokens`` is PEFT's ``num_virtual_tokens``, ``init`` its ``prompt_tuning_init``.

Differences from PEFT, both on purpose (see :mod:`polyprompt.core.backbones.hf`):

* the prompt goes right before each row's first real token, not before the padding,
  with ``position_ids = cumsum(mask) - 1``; on unpadded batches the two are identical
  (``tests/methods/test_text.py::test_matches_peft_prompt_tuning``), on left-padded
  batches every row computes what it would alone;
* ``generate`` returns the new tokens only, ``(B, new)``.

Example (shapes: ``input_ids`` ``(B, T)`` -> ``logits`` ``(B, T, vocab)``)::

    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from polyprompt.core import create
    >>> lm = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16,
    ...                                 n_layer=1, n_head=2))
    >>> model = create("prompt_tuning", lm, num_tokens=5)
    >>> ids = torch.randint(0, 50, (2, 7))
    >>> out = model(ids, labels=ids)
    >>> out.logits.shape, out.loss.shape
    (torch.Size([2, 7, 50]), torch.Size([]))
    >>> list(model.trainable_state_dict())
    ['prompt.weight']
    >>> model.generate(ids, max_new_tokens=3).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from polyprompt.core.backbones.hf import HFTextAdapter
from polyprompt.core.config import PromptConfig, is_int, is_number
from polyprompt.core.errors import ConfigError
from polyprompt.core.methods.base import PromptMethod
from polyprompt.core.prompts.soft import PromptInit, SoftPrompt
from polyprompt.core.registry import register_method

__all__ = ["PromptInit", "SoftPromptLM", "SoftPromptLMConfig"]


@dataclass
class SoftPromptLMConfig(PromptConfig):
    """Config of :class:`SoftPromptLM` (PEFT's ``PromptTuningConfig`` in our terms).

    Args:
        num_tokens: prompt length ``n`` (``>= 1``; Lester et al. use 1..150, 20 by default here).
        init: :class:`PromptInit` — ``"random"`` (``N(0, init_std^2)``), ``"uniform"``
            (``U(-init_range, init_range)``), ``"token_ids"`` (rows of the LM's embedding
            table) or ``"text"`` (embeddings of ``init_text``, repeated / cut to ``n``).
        init_text: the text for ``init="text"`` (needs a tokenizer, see :class:`SoftPromptLM`).
        token_ids: exactly ``num_tokens`` ids for ``init="token_ids"``.
        init_std: standard deviation of the ``random`` init (``> 0``).
        init_range: half-width of the ``uniform`` init (``> 0``; Lester et al.: 0.5).
        dropout: dropout on the prompt vectors in training mode, in ``[0, 1)``.
    """

    num_tokens: int = 20
    init: PromptInit = PromptInit.RANDOM
    init_text: str | None = None
    token_ids: tuple[int, ...] | None = None
    init_std: float = 0.02
    init_range: float = 0.5
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(
            is_int(self.num_tokens) and self.num_tokens >= 1, "num_tokens", "must be an int >= 1"
        )
        self.require(is_number(self.init_std) and self.init_std > 0, "init_std", "must be > 0")
        self.require(
            is_number(self.init_range) and self.init_range > 0, "init_range", "must be > 0"
        )
        self.require(
            is_number(self.dropout) and 0 <= self.dropout < 1, "dropout", "must be in [0, 1)"
        )
        if self.init is PromptInit.TEXT:
            self.require(
                isinstance(self.init_text, str) and bool(self.init_text.strip()),
                "init_text",
                "init='text' needs a non-empty init_text",
            )
        else:
            self.require(self.init_text is None, "init_text", "is only used with init='text'")
        if self.init is PromptInit.TOKEN_IDS:
            self.require(
                isinstance(self.token_ids, tuple)
                and len(self.token_ids) == self.num_tokens
                and all(is_int(i) and i >= 0 for i in self.token_ids),
                "token_ids",
                f"init='token_ids' needs exactly num_tokens={self.num_tokens} ids >= 0",
            )
        else:
            self.require(self.token_ids is None, "token_ids", "is only used with init='token_ids'")


@register_method("prompt_tuning")
class SoftPromptLM(PromptMethod):
    """A frozen Hugging Face LM (causal or encoder) with a trainable soft prompt.

    Args:
        backbone: an :class:`~polyprompt.core.backbones.hf.HFTextAdapter` or a
            ``transformers.PreTrainedModel`` (wrapped in one). Every LM weight is frozen
            (``requires_grad=False``); its own dropout still follows ``train()`` / ``eval()``,
            as with PEFT.
        config: a :class:`SoftPromptLMConfig`.
        tokenizer: for ``init="text"``; defaults to ``backbone.tokenizer`` of the adapter.

    Attributes:
        backbone: the adapter; ``prompt``: the :class:`SoftPrompt` (``weight`` ``(n, D)``),
        the only trainable parameter.

    Raises:
        ConfigError: unsupported backbone, ``init="text"`` without a tokenizer, a prompt
        as long as the model context.
    """

    config_class = SoftPromptLMConfig
    config: SoftPromptLMConfig
    backbone: HFTextAdapter

    def __init__(self, backbone: Any, config: SoftPromptLMConfig, tokenizer: Any = None) -> None:
        where = "SoftPromptLM"
        if not isinstance(backbone, HFTextAdapter):
            try:
                from transformers import PreTrainedModel
            except ImportError as exc:  # pragma: no cover - transformers is the text extra
                raise ConfigError(
                    f"{where}: needs transformers (pip install 'polyprompt-core[text]')"
                ) from exc
            if not isinstance(backbone, PreTrainedModel):
                raise ConfigError(
                    f"{where}: backbone must be an HFTextAdapter or a transformers "
                    f"PreTrainedModel, got {type(backbone).__name__}"
                )
            backbone = HFTextAdapter(backbone, tokenizer=tokenizer)
        super().__init__(backbone, config)
        backbone.requires_grad_(False)
        n = config.num_tokens
        if backbone.max_positions is not None and n >= backbone.max_positions:
            raise ConfigError(
                f"{where}: num_tokens={n} leaves no room for input in the model context of "
                f"{backbone.max_positions} positions"
            )
        embedding = backbone.embeddings
        tokenizer = tokenizer if tokenizer is not None else getattr(backbone, "tokenizer", None)
        if config.init is PromptInit.TEXT and tokenizer is None:
            raise ConfigError(
                f"{where}: init='text' needs a tokenizer: SoftPromptLM(model, config, "
                "tokenizer=tok) or HFTextAdapter(model, tokenizer=tok)"
            )
        self.prompt = SoftPrompt(
            n,
            backbone.embed_dim,
            config.init,
            config.init_std,
            config.dropout,
            init_range=config.init_range,
            embedding=embedding,
            token_ids=config.token_ids,
            tokenizer=tokenizer,
            text=config.init_text,
        ).to(embedding.weight.device)

    @property
    def num_prompt_tokens(self) -> int:
        return self.config.num_tokens

    def prompt_tokens(self, batch_size: int) -> torch.Tensor:
        """The prompt for a batch, ``(batch_size, n, D)`` (with prompt dropout in training)."""
        return self.prompt(batch_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """``input_ids`` ``(B, T)`` (+ mask, labels) -> the HF model output.

        ``loss`` is the model's own loss on the prompted sequence (labels ``-100`` on the
        prompt and on padding); ``logits`` are realigned to ``(B, T, ...)`` (see
        :meth:`HFTextAdapter.forward`).
        """
        batch = input_ids.shape[0] if isinstance(input_ids, torch.Tensor) and input_ids.dim() else 1
        return self.backbone(
            input_ids, attention_mask, prompt=self.prompt(batch), labels=labels, **kwargs
        )

    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> Any:
        """New token ids ``(B, new)`` for a LEFT-padded batch (see :meth:`HFTextAdapter.generate`)."""
        return self.backbone.generate(input_ids, attention_mask, self.prompt.weight, **kwargs)

    def extra_repr(self) -> str:
        return f"num_tokens={self.config.num_tokens}, init={self.config.init.value}"
