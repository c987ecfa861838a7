"""DVPT's adapter baselines: AdaptFormer and SSF, on the same frozen backbones.

* **AdaptFormer** (Chen et al., NeurIPS 2022; the copy in NKUhealong/DVPT
  ``code/adptformer.py``): in every block a bottleneck ``d -> hidden -> d`` (ReLU, dropout
  0.1, up-projection initialised to zero, fixed scale 0.1) runs parallel to the frozen MLP
  on the features after the attention residual: ``out = h + mlp(norm2(h)) + 0.1 * ad(h)``.
  DVPT's copy puts a ``LayerNorm`` before the adapter (``adapter_layer_norm_before``):
  ``layer_norm=True``.
* **SSF** (Lian et al., NeurIPS 2022, "Scaling & Shifting your Features"; official
  ``dongzelian/SSF``): after every linear layer and every LayerNorm of the blocks and after
  the final norm, the features are scaled and shifted per channel, ``y * gamma + beta``
  (``gamma ~ N(1, 0.02)``, ``beta ~ N(0, 0.02)``); implemented with forward hooks on the
  backbone's own modules (the backbone instance belongs to the method). The patch embedding
  is left untouched, so the embedding output can be cached (``cache_point = 0``).

Example::

    >>> import torch
    >>> from timm.models.vision_transformer import VisionTransformer
    >>> from polyprompt.core import create
    >>> from polyprompt.medical.backbones import MedicalViTAdapter
    >>> def vit():
    ...     return MedicalViTAdapter(VisionTransformer(img_size=32, patch_size=8, in_chans=1,
    ...                              embed_dim=32, depth=2, num_heads=2, num_classes=0))
    >>> create("adaptformer", vit(), num_classes=2, hidden=4)(torch.rand(2, 1, 32, 32)).shape
    torch.Size([2, 2])
    >>> create("ssf", vit(), num_classes=2)(torch.rand(2, 1, 32, 32)).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from polyprompt.core.methods.classify import (
    ClassifierConfig,
    FrozenBackboneMixin,
    PromptClassifier,
    pool_tokens,
)
from polyprompt.core.prompts.bottleneck import Bottleneck
from polyprompt.core.registry import register_method
from polyprompt.medical.backbones import block_forward

__all__ = ["SSF", "AdaptFormer", "AdaptFormerConfig", "SSFConfig"]


@dataclass
class AdaptFormerConfig(ClassifierConfig):
    """Config of :class:`AdaptFormer`: ``hidden`` (64 in the paper / DVPT's copy for ViT-B),
    ``scale`` (0.1), ``dropout`` (0.1), ``layer_norm`` (DVPT's copy: ``True``)."""

    hidden: int = 64
    scale: float = 0.1
    dropout: float = 0.1
    layer_norm: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(
            isinstance(self.hidden, int) and not isinstance(self.hidden, bool) and self.hidden >= 1,
            "hidden",
            "must be an int >= 1",
        )
        self.require(
            isinstance(self.scale, (int, float)) and self.scale > 0, "scale", "must be > 0"
        )
        self.require(
            isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1,
            "dropout",
            "must be in [0, 1)",
        )
        self.require(isinstance(self.layer_norm, bool), "layer_norm", "must be a bool")


class _Adapter(nn.Module):
    def __init__(self, dim: int, cfg: AdaptFormerConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if cfg.layer_norm else nn.Identity()
        self.bottleneck = Bottleneck(
            dim, cfg.hidden, activation="relu", scale=float(cfg.scale), dropout=cfg.dropout
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.norm(h))


@register_method("adaptformer")
class AdaptFormer(FrozenBackboneMixin, PromptClassifier):
    """AdaptFormer: a parallel bottleneck adapter in every frozen block + linear head."""

    config_class = AdaptFormerConfig

    def __init__(self, backbone: nn.Module, config: AdaptFormerConfig) -> None:
        super().__init__(backbone, config)
        from polyprompt.core.freezing import freeze_backbone

        freeze_backbone(backbone)
        self.backbone.eval()
        d = int(backbone.embed_dim)
        self.adapters = nn.ModuleList(_Adapter(d, config) for _ in range(backbone.num_blocks))
        self.cache_point = 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._adapted(self.backbone.embed(x))

    def _adapted(self, tokens: torch.Tensor) -> torch.Tensor:
        bb = self.backbone
        for i, ad in enumerate(self.adapters):
            tokens = block_forward(bb.blocks[i], tokens, ad)
        return pool_tokens(bb, bb.norm(tokens), 0)

    def _forward_tokens(self, tokens: torch.Tensor, start_block: int) -> torch.Tensor:
        return self.forward_head(self._adapted(tokens))

    def _cache_reason(self) -> str:
        return "AdaptFormer adapts every block"


@dataclass
class SSFConfig(ClassifierConfig):
    """Config of :class:`SSF`: ``init_std`` of the scale (around 1) and shift (around 0)."""

    init_std: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(
            isinstance(self.init_std, (int, float)) and self.init_std >= 0,
            "init_std",
            "must be >= 0",
        )


class _ScaleShift(nn.Module):
    def __init__(self, dim: int, std: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.empty(dim).normal_(1.0, std) if std else torch.ones(dim))
        self.shift = nn.Parameter(torch.empty(dim).normal_(0.0, std) if std else torch.zeros(dim))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.scale + self.shift


@register_method("ssf")
class SSF(FrozenBackboneMixin, PromptClassifier):
    """SSF: per-channel scale and shift after every linear / LayerNorm of the frozen blocks."""

    config_class = SSFConfig

    def __init__(self, backbone: nn.Module, config: SSFConfig) -> None:
        super().__init__(backbone, config)
        from polyprompt.core.freezing import freeze_backbone

        freeze_backbone(backbone)
        self.backbone.eval()
        targets: list[tuple[str, nn.Module, int]] = []
        for bi, blk in enumerate(backbone.blocks):
            for name, mod in blk.named_modules():
                if "cross" in name:  # MONAI's unused cross-attention parts
                    continue
                if isinstance(mod, nn.Linear):
                    targets.append((f"blocks.{bi}.{name}", mod, mod.out_features))
                elif isinstance(mod, nn.LayerNorm):
                    targets.append((f"blocks.{bi}.{name}", mod, int(mod.normalized_shape[-1])))
        final = getattr(getattr(backbone, "model", None), "norm", None)
        if isinstance(final, nn.LayerNorm):
            targets.append(("norm", final, int(final.normalized_shape[-1])))
        self.ssf = nn.ModuleDict()
        self._handles = []
        for name, mod, dim in targets:
            key = name.replace(".", "_")
            self.ssf[key] = _ScaleShift(dim, float(config.init_std))
            self._handles.append(mod.register_forward_hook(self._hook(key)))
        self.cache_point = 0

    def _hook(self, key: str):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
            return self.ssf[key](output)

        return hook

    def remove_hooks(self) -> None:
        """Detach SSF from the backbone (it then computes the plain frozen features)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def _forward_tokens(self, tokens: torch.Tensor, start_block: int) -> torch.Tensor:
        bb = self.backbone
        return self.forward_head(pool_tokens(bb, bb.norm(bb.forward_blocks(tokens)), 0))

    def _cache_reason(self) -> str:
        return "SSF modulates every block"
