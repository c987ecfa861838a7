"""<METHOD>: config + model, written against polyprompt.core's PromptableBackbone.

Cite the paper section / official file each detail comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from polyprompt.core import PromptConfig, PromptMethod, freeze_backbone, register_method
from polyprompt.core.validation import check_tensor


@dataclass
class __CLASS__Config(PromptConfig):
    num_classes: int = 2
    num_tokens: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(self.num_classes >= 2, "num_classes", "must be >= 2")
        self.require(self.num_tokens >= 1, "num_tokens", "must be >= 1")


@register_method("__NAME___method")
class __CLASS__(PromptMethod):
    """Input prompt tokens + linear head over a frozen PromptableBackbone.

    Replace with the package's method. Shapes: ``x -> backbone.embed -> (B, N, D)``,
    logits ``(B, num_classes)``.
    """

    config_class = __CLASS__Config

    def __init__(self, backbone: nn.Module, config: __CLASS__Config) -> None:
        super().__init__(backbone, config)
        freeze_backbone(backbone)
        dim = backbone.embed_dim
        self.prompt = nn.Parameter(torch.zeros(config.num_tokens, dim).normal_(std=0.02))
        self.head = nn.Linear(dim, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.embed(x)
        check_tensor(tokens, "tokens", rank=3, where=f"{type(self).__name__}.forward")
        p = self.backbone.num_prefix_tokens
        prompt = self.prompt.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([tokens[:, :p], prompt, tokens[:, p:]], dim=1)
        tokens = self.backbone.norm(self.backbone.forward_blocks(tokens))
        return self.head(self.backbone.pool(tokens, num_prompt_tokens=self.config.num_tokens))
