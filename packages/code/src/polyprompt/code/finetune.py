"""Baselines with a classification head: CodeBERT fine-tuning and a linear probe.

The paper's main baseline is CodeBERT fine-tuned with a classification head (official
``method/finetune/code/model.py``, the CodeXGLUE clone-detection recipe): the pair is
encoded as ``<s> input_1 </s></s> input_2 </s>`` and the ``<s>`` state goes through
``RobertaClassificationHead`` (dense - tanh - dropout - out_proj); every weight trains.
``mode="linear_probe"`` freezes the encoder and trains one ``nn.Linear`` on the ``<s>``
state (PACKAGE.md's linear-probe baseline). Registered as ``"code_finetune"``.

On a BERT backbone (MiniLM) the pair is ``[CLS] input_1 [SEP] input_2 [SEP]`` with segment
ids 0 / 1 (BERT's pair encoding) and the same head reads the ``[CLS]`` state (the
checkpoint's pooler is not used, as with CodeBERT's ``RobertaClassificationHead``).

Example::

    >>> model = CodeClassifier(backbone.adapter(), CodeClassifierConfig())   # doctest: +SKIP
    >>> model(model.encode(pairs)).shape                                     # doctest: +SKIP
    torch.Size([8, 2])
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

from polyprompt.code.backbone import mlm_head
from polyprompt.code.pairs import Task, check_pairs
from polyprompt.core.backbones.hf import HFTextAdapter
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import ConfigError, InputError
from polyprompt.core.freezing import freeze_backbone
from polyprompt.core.methods.base import PromptMethod
from polyprompt.core.registry import register_method
from polyprompt.core.validation import check_tensor

__all__ = ["ClassifierMode", "CodeClassifier", "CodeClassifierConfig"]


class ClassifierMode(str, Enum):
    FINETUNE = "finetune"  # every weight trains (CodeBERT fine-tuning baseline)
    LINEAR_PROBE = "linear_probe"  # frozen encoder, linear head on <s>


@dataclass
class CodeClassifierConfig(PromptConfig):
    """``mode``: finetune / linear_probe; ``max_length`` ``None`` = backbone context."""

    task: Task = Task.CLONE
    mode: ClassifierMode = ClassifierMode.FINETUNE
    max_length: int | None = None
    dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(
            self.max_length is None or (isinstance(self.max_length, int) and self.max_length >= 8),
            "max_length",
            "must be None or an int >= 8",
        )
        self.require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")


@register_method("code_finetune")
class CodeClassifier(PromptMethod):
    """Encoder (the masked LM's ``base_model``) + classification head on ``<s>``.

    Args:
        backbone: ``HFTextAdapter`` of a ``RobertaForMaskedLM`` / ``BertForMaskedLM`` with its
            tokenizer; the MLM
            head is unused. Fine-tuning changes the backbone's weights: pass a copy
            (``CodeBackbone.adapter()`` copies).
    """

    config_class = CodeClassifierConfig
    config: CodeClassifierConfig
    backbone: HFTextAdapter

    def __init__(self, backbone: Any, config: CodeClassifierConfig) -> None:
        where = "CodeClassifier"
        if not isinstance(backbone, HFTextAdapter) or backbone.tokenizer is None:
            raise ConfigError(f"{where}: backbone must be an HFTextAdapter with a tokenizer")
        super().__init__(backbone, config)
        self.tokenizer = backbone.tokenizer
        ctx = backbone.max_positions or 512  # RoBERTa padding offset already excluded
        self.max_length = min(config.max_length or ctx, ctx)
        dim = backbone.embed_dim
        if config.mode is ClassifierMode.FINETUNE:
            from transformers.models.roberta.modeling_roberta import RobertaClassificationHead

            cfg = backbone.model.config.__class__.from_dict(backbone.model.config.to_dict())
            cfg.num_labels = 2
            cfg.classifier_dropout = config.dropout
            self.head = RobertaClassificationHead(cfg)
            backbone.requires_grad_(True)
            mlm_head(backbone.model).requires_grad_(False)  # unused by this method ...
            backbone.model.base_model.requires_grad_(
                True
            )  # ... but its decoder is tied to the embeddings
        else:
            freeze_backbone(backbone)
            self.head = nn.Linear(dim, 2)

    def encode(self, pairs: Any) -> dict[str, torch.Tensor]:
        """Pairs -> ``<s> a </s></s> b </s>`` (RoBERTa) or ``[CLS] a [SEP] b [SEP]`` with
        segment ids (BERT), ``longest_first`` truncation, + labels."""
        pairs = check_pairs(pairs, "CodeClassifier.encode")
        enc = self.tokenizer(
            [p.text_a for p in pairs],
            [p.text_b for p in pairs],
            truncation="longest_first",
            max_length=self.max_length,
            padding="longest",
            return_tensors="pt",
        )
        out = {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": torch.tensor([p.label for p in pairs], dtype=torch.long),
        }
        if "token_type_ids" in enc and getattr(self.backbone.config, "type_vocab_size", 1) > 1:
            out["token_type_ids"] = enc["token_type_ids"]  # BERT: segment B = 1
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        where = "CodeClassifier.forward"
        if not isinstance(batch, dict) or "input_ids" not in batch:
            raise InputError(f"{where}: expected the dict from .encode(pairs)")
        ids = batch["input_ids"]
        check_tensor(ids, "input_ids", rank=2, where=where)
        mask = batch.get("attention_mask")
        self.backbone._check_ids(ids, where)
        if ids.shape[1] > self.max_length:
            raise InputError(
                f"{where}: sequence length {ids.shape[1]} exceeds the model context of "
                f"{self.max_length} tokens (encode pairs with .encode, which truncates)"
            )
        extra = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
        hidden = self.backbone.model.base_model(
            input_ids=ids, attention_mask=mask, **extra
        ).last_hidden_state
        if self.config.mode is ClassifierMode.FINETUNE:
            return self.head(hidden)  # RobertaClassificationHead reads hidden[:, 0]
        return self.head(hidden[:, 0])

    @torch.no_grad()
    def predict_proba(self, pairs: Any, batch_size: int = 64) -> torch.Tensor:
        was = self.training
        self.eval()
        out = [
            self(self.encode(pairs[i : i + batch_size])).softmax(-1)[:, 1]
            for i in range(0, len(pairs), batch_size)
        ]
        self.train(was)
        return torch.cat(out)
