"""Zecoler: prompt tuning of a frozen code masked LM (registered as ``"zecoler"``).

Cui et al., *Zero-shot Program Representation Learning* (ICPC 2022), Sec. 3; official code
ChrisCN97/zecoler ``method/ptuning`` (a fork of P-tuning, Liu et al. 2021):

* **template** (``data_utils/task_pvps.py``, ``CloneDetPVP`` pattern 10):
  ``<s> [P][P][P] input_1 [P][P][P][P] input_2 [P][P][P] <mask> </s>`` — 10 continuous
  prompt tokens split 3 / 4 / 3 (``prompt_split``);
* **prompt encoder** (``pet/wrapper.py``, ``ContinuousPrompt``): an embedding of the 10
  prompt ids -> a 2-layer bidirectional LSTM (hidden = embedding size) -> a 2-layer MLP
  ``Linear(2D, D) - ReLU - Linear(D, D)``; its outputs replace the word embeddings at the
  prompt slots (``generate_default_inputs``). ``prompt_encoder="mlp"`` is the official
  code's other option, ``"none"`` the plain soft prompt (the core
  :class:`~polyprompt.core.prompts.soft.SoftPrompt`, no reparameterisation) baseline;
* **verbalizer**: label 0 -> ``"No"``, label 1 -> ``"Yes"`` (``CloneDetPVP.VERBALIZER_A``),
  configurable; the masked-LM head's logits at ``<mask>`` restricted to the label words
  are the class logits, trained with **cross-entropy**;
* **only the prompt encoder trains**; the masked LM (CodeBERT) is frozen (``freeze_plm``).

:class:`ManualTemplate` (``"code_manual_template"``) is the zero-tuning baseline: the same
masked LM and verbalizer with a hand-written template and no trainable parameter.

Example (shapes: a batch of ``B`` pairs -> class logits ``(B, 2)``)::

    >>> from polyprompt.code import Zecoler, ZecolerConfig        # doctest: +SKIP
    >>> model = Zecoler(backbone.adapter(), ZecolerConfig(task="clone"))   # doctest: +SKIP
    >>> batch = model.encode(pairs)                                # doctest: +SKIP
    >>> model(batch).shape                                         # doctest: +SKIP
    torch.Size([8, 2])
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polyprompt.code.backbone import mlm_head
from polyprompt.code.pairs import Task
from polyprompt.code.template import TemplateEncoder, resolve_label_words
from polyprompt.core.backbones.hf import HFTextAdapter
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import ConfigError, InputError
from polyprompt.core.freezing import freeze_backbone
from polyprompt.core.methods.base import PromptMethod
from polyprompt.core.prompts.generator import PromptGenerator
from polyprompt.core.prompts.soft import SoftPrompt
from polyprompt.core.registry import register_method
from polyprompt.core.validation import check_tensor

__all__ = [
    "MANUAL_TEMPLATES",
    "ManualTemplate",
    "ManualTemplateConfig",
    "PromptEncoder",
    "PromptEncoderType",
    "Zecoler",
    "ZecolerConfig",
    "pair_step",
]

# Hand-written templates of the zero-tuning baseline: (before a, between, after b).
MANUAL_TEMPLATES: dict[str, tuple[str, str, str]] = {
    "clone": ("Code:", " Code:", " Same code?"),
    "search": ("Query:", " Code:", " Does the code match the query?"),
    "name": ("Name:", " Code:", " Is this the name of the code?"),
}


class PromptEncoderType(str, Enum):
    LSTM = "lstm"  # the paper (P-tuning): embedding -> 2-layer BiLSTM -> 2-layer MLP
    MLP = "mlp"  # official code option: embedding -> 2-layer MLP
    NONE = "none"  # plain soft prompt (core SoftPrompt), the baseline without an encoder


def _as_backbone(backbone: Any, where: str) -> HFTextAdapter:
    if isinstance(backbone, HFTextAdapter):
        adapter = backbone
    else:
        from transformers import PreTrainedModel

        if not isinstance(backbone, PreTrainedModel):
            raise ConfigError(
                f"{where}: backbone must be an HFTextAdapter or a transformers masked LM, got "
                f"{type(backbone).__name__}"
            )
        adapter = HFTextAdapter(backbone, "encoder")
    if adapter.kind != "encoder":
        raise ConfigError(
            f"{where}: Zecoler needs a masked LM (encoder), got a {adapter.kind} model"
        )
    if adapter.tokenizer is None:
        raise ConfigError(
            f"{where}: the HFTextAdapter needs its tokenizer (HFTextAdapter(mlm, tokenizer=tok))"
        )
    if mlm_head(adapter.model) is None or getattr(adapter.model, "base_model", None) is None:
        raise ConfigError(
            f"{where}: backbone {type(adapter.model).__name__} has no masked-LM head "
            "(use RobertaForMaskedLM, CodeBERT's layout, or BertForMaskedLM)"
        )
    return adapter


@dataclass
class _PairConfig(PromptConfig):
    task: Task = Task.CLONE
    label_words: tuple[str, ...] = ("No", "Yes")
    max_length: int | None = None  # None: the backbone's context

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(
            isinstance(self.label_words, tuple) and len(self.label_words) == 2,
            "label_words",
            "must be two words (label 0, label 1)",
        )
        self.require(
            self.max_length is None or (isinstance(self.max_length, int) and self.max_length >= 16),
            "max_length",
            "must be None or an int >= 16",
        )


@dataclass
class ZecolerConfig(_PairConfig):
    """Config of :class:`Zecoler`.

    Args:
        task: ``clone`` / ``search`` / ``name`` (recorded with checkpoints).
        num_prompt_tokens: continuous prompt tokens (paper: 10).
        prompt_split: slots before input 1, between the inputs, before ``<mask>``
            (official pattern 10: 3 / 4 / 3); must sum to ``num_prompt_tokens``.
        prompt_encoder: ``lstm`` (paper), ``mlp`` (official option) or ``none`` (plain
            soft prompt baseline).
        label_words: verbalizer words of label 0 and label 1 (``No`` / ``Yes``).
        max_length: template length (``None``: the backbone's context).
        dropout: dropout on the produced prompt vectors (0 as in the official code).
    """

    num_prompt_tokens: int = 10
    prompt_split: tuple[int, int, int] = (3, 4, 3)
    prompt_encoder: PromptEncoderType = PromptEncoderType.LSTM
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        r(
            isinstance(self.num_prompt_tokens, int) and self.num_prompt_tokens >= 1,
            "num_prompt_tokens",
            "must be an int >= 1",
        )
        r(
            isinstance(self.prompt_split, tuple)
            and len(self.prompt_split) == 3
            and all(isinstance(s, int) and s >= 0 for s in self.prompt_split)
            and sum(self.prompt_split) == self.num_prompt_tokens,
            "prompt_split",
            f"must be 3 ints >= 0 summing to num_prompt_tokens={self.num_prompt_tokens}",
        )
        r(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")


class PromptEncoder(PromptGenerator):
    """P-tuning's prompt encoder: ``(B, n, D)`` prompt embeddings -> ``(B, n, D)`` prompts.

    ``BiLSTM(D -> D, 2 layers)`` then ``Linear(2D, D) - ReLU - Linear(D, D)`` (official
    ``ContinuousPrompt.lstm_head`` / ``mlp_head``); with ``kind="mlp"``,
    ``Linear(D, D) - ReLU - Linear(D, D)``. :meth:`prompts` runs it on its own learnable
    embedding table ``(n, D)`` (``prompt_embeddings``, ``N(0, 1)`` init as ``nn.Embedding``).

    Example::

        >>> enc = PromptEncoder(num_tokens=10, dim=16)
        >>> enc.prompts().shape
        torch.Size([10, 16])
        >>> enc(torch.randn(2, 10, 16)).shape
        torch.Size([2, 10, 16])
    """

    input_ranks = (3,)

    def __init__(self, num_tokens: int, dim: int, kind: PromptEncoderType | str = "lstm") -> None:
        super().__init__(num_tokens, dim, in_dim=dim)
        self.kind = PromptEncoderType(kind)
        if self.kind is PromptEncoderType.NONE:
            raise ConfigError("PromptEncoder: kind 'none' has no encoder; use SoftPrompt")
        self.prompt_embeddings = nn.Embedding(num_tokens, dim)
        if self.kind is PromptEncoderType.LSTM:
            self.lstm_head = nn.LSTM(dim, dim, num_layers=2, bidirectional=True, batch_first=True)
            self.mlp_head = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        else:
            self.mlp_head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def generate(self, features: torch.Tensor, **context: Any) -> torch.Tensor:
        if self.kind is PromptEncoderType.LSTM:
            features = self.lstm_head(features)[0]
        return self.mlp_head(features)

    def prompts(self) -> torch.Tensor:
        """The ``(n, D)`` prompt vectors (the same for every input, as in P-tuning)."""
        return self(self.prompt_embeddings.weight.unsqueeze(0))[0]


class _MaskedLMPairMethod(PromptMethod):
    """Shared plumbing: template encoding and verbalizer scoring at ``<mask>``."""

    backbone: HFTextAdapter

    def _setup(self, backbone: HFTextAdapter, config: _PairConfig, segments: tuple) -> None:
        where = type(self).__name__
        freeze_backbone(backbone)
        self.tokenizer = backbone.tokenizer
        # HFTextAdapter.max_positions already excludes RoBERTa's padding offset (514 -> 512)
        max_len = config.max_length or backbone.max_positions or 512
        if backbone.max_positions is not None and max_len > backbone.max_positions:
            raise ConfigError(
                f"{where}: max_length={max_len} exceeds the backbone context "
                f"({backbone.max_positions} tokens)"
            )
        self.template = TemplateEncoder(self.tokenizer, max_len, segments)
        ids = resolve_label_words(self.tokenizer, config.label_words, where)
        self.register_buffer("label_ids", torch.tensor(ids, dtype=torch.long), persistent=False)

    def encode(self, pairs: Any) -> dict[str, torch.Tensor]:
        """Pairs (``PairExample`` / dicts) -> template tensors (see :class:`TemplateEncoder`)."""
        return self.template.encode(pairs, f"{type(self).__name__}.encode")

    def _prompt_vectors(self) -> torch.Tensor | None:
        return None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Template batch -> verbalizer logits ``(B, 2)`` (label 0, label 1)."""
        where = f"{type(self).__name__}.forward"
        if not isinstance(batch, dict):
            raise InputError(
                f"{where}: expected the dict from .encode(pairs), got {type(batch).__name__}"
            )
        missing = [
            k for k in ("input_ids", "attention_mask", "prompt_mask", "mask_pos") if k not in batch
        ]
        if missing:
            raise InputError(f"{where}: batch is missing {missing} (build it with .encode(pairs))")
        ids = batch["input_ids"]
        check_tensor(ids, "input_ids", rank=2, where=where)
        b, t = ids.shape
        check_tensor(
            batch["attention_mask"], "attention_mask", rank=2, dims={0: b, 1: t}, where=where
        )
        check_tensor(batch["prompt_mask"], "prompt_mask", rank=2, dims={0: b, 1: t}, where=where)
        check_tensor(batch["mask_pos"], "mask_pos", rank=1, dims={0: b}, where=where)
        if self.backbone.max_positions is not None and t > self.backbone.max_positions:
            raise InputError(
                f"{where}: sequence length {t} exceeds the model context of "
                f"{self.backbone.max_positions} tokens (encode pairs with .encode, which truncates)"
            )
        embeds = self.backbone.embed_tokens(ids)
        prompt = self._prompt_vectors()
        pm = batch["prompt_mask"].bool()
        if prompt is not None:
            n = prompt.shape[0]
            counts = pm.sum(dim=1)
            if bool((counts != n).any()):
                raise InputError(
                    f"{where}: every row needs exactly {n} prompt slots, got {counts.tolist()}"
                )
            source = prompt.to(embeds.dtype).unsqueeze(0).expand(b, -1, -1)
            embeds = embeds.masked_scatter(pm.unsqueeze(-1), source)
        elif bool(pm.any()):
            raise InputError(f"{where}: this method has no prompt but the batch has prompt slots")
        model = self.backbone.model
        hidden = model.base_model(
            inputs_embeds=embeds, attention_mask=batch["attention_mask"]
        ).last_hidden_state
        pos = batch["mask_pos"].long()
        if bool(((pos < 0) | (pos >= t)).any()):
            raise InputError(f"{where}: mask_pos out of range [0, {t})")
        at_mask = hidden[torch.arange(b, device=hidden.device), pos]  # (B, D)
        vocab_logits = mlm_head(model)(at_mask)  # (B, V): RoBERTa lm_head / BERT cls
        return vocab_logits.index_select(-1, self.label_ids)

    @torch.no_grad()
    def predict_proba(self, pairs: Any, batch_size: int = 64) -> torch.Tensor:
        """``P(label = 1)`` for every pair, ``(N,)``."""
        was = self.training
        self.eval()
        out = []
        for i in range(0, len(pairs), batch_size):
            out.append(self(self.encode(pairs[i : i + batch_size])).softmax(-1)[:, 1])
        self.train(was)
        return torch.cat(out)


@register_method("zecoler")
class Zecoler(_MaskedLMPairMethod):
    """Zecoler over a frozen masked LM (see module doc).

    Args:
        backbone: an :class:`~polyprompt.core.backbones.hf.HFTextAdapter` of a
            ``RobertaForMaskedLM`` (CodeBERT layout) or ``BertForMaskedLM`` (MiniLM,
            :mod:`polyprompt.code.minilm`) with its tokenizer (``CodeBackbone.adapter()``).
        config: :class:`ZecolerConfig`.

    Trainable: ``prompt_encoder`` (``lstm`` / ``mlp``) or ``prompt`` (``none``) only.
    """

    config_class = ZecolerConfig
    config: ZecolerConfig

    def __init__(self, backbone: Any, config: ZecolerConfig) -> None:
        backbone = _as_backbone(backbone, "Zecoler")
        super().__init__(backbone, config)
        self._setup(backbone, config, config.prompt_split)
        dim = backbone.embed_dim
        n = config.num_prompt_tokens
        if config.prompt_encoder is PromptEncoderType.NONE:
            # plain soft prompt: initialised from random vocabulary rows, the same scale as
            # the word embeddings the prompt replaces
            g = torch.Generator().manual_seed(0)
            rows = torch.randint(4, backbone.vocab_size, (n,), generator=g).tolist()
            self.prompt = SoftPrompt.from_token_ids(backbone.embeddings, rows)
        else:
            self.prompt_encoder = PromptEncoder(n, dim, config.prompt_encoder)
        self.dropout = nn.Dropout(config.dropout)

    def _prompt_vectors(self) -> torch.Tensor:
        if self.config.prompt_encoder is PromptEncoderType.NONE:
            p = self.prompt.weight
        else:
            p = self.prompt_encoder.prompts()
        return self.dropout(p)


@dataclass
class ManualTemplateConfig(_PairConfig):
    """Config of :class:`ManualTemplate`: ``template`` = (before a, between, after b) texts;
    ``None`` takes :data:`MANUAL_TEMPLATES` of ``task``."""

    template: tuple[str, str, str] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(
            self.template is None
            or (isinstance(self.template, tuple) and len(self.template) == 3
                and all(isinstance(s, str) for s in self.template)),
            "template",
            "must be None or three strings",
        )  # fmt: skip


@register_method("code_manual_template")
class ManualTemplate(_MaskedLMPairMethod):
    """Zero-tuning baseline: a hand-written template + verbalizer, nothing trains."""

    config_class = ManualTemplateConfig
    config: ManualTemplateConfig

    def __init__(self, backbone: Any, config: ManualTemplateConfig) -> None:
        backbone = _as_backbone(backbone, "ManualTemplate")
        super().__init__(backbone, config)
        template = config.template or MANUAL_TEMPLATES[Task(config.task).value]
        self._setup(backbone, config, template)


def pair_step(
    model: nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trainer ``step_fn``: cross-entropy of the verbalizer logits against ``labels``."""
    logits = model(batch)
    labels = batch["labels"]
    return F.cross_entropy(logits, labels), logits, labels
