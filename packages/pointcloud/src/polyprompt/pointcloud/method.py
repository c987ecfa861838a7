"""IDPT: instance-aware dynamic prompt tuning of a frozen Point-MAE (Zha et al., ICCV 2023).

Paper Sec. 3 and the official ``ICCV23-IDPT`` ``models/Point_MAE.py`` (``PointTransformer`` with
``TransformerPromptEncoderLayerI``, ``prompt_layer: 11``, ``prompt_module: dgcnn``):

1. the frozen encoder embeds the cloud and runs blocks ``0 .. prompt_layer - 1``;
2. the :class:`~polyprompt.pointcloud.generator.DGCNNPromptGenerator` reads the *patch* tokens
   entering block ``prompt_layer`` and produces one prompt token per instance;
3. the prompt is inserted right after the CLS token, with its own positional embedding
   ``prompt_pos`` (official: ``trunc_normal(0.02)``, not trained — a saved buffer here), and the
   remaining frozen blocks run on ``[CLS, prompt, patches]`` (``x = block(x + pos)``);
4. after the final norm the head reads ``concat(CLS, prompt, max-pool(patches))`` (``3D``;
   official ``cls_type: all``) -> ``Linear 256, BN, ReLU, Dropout 0.5, Linear 256, BN, ReLU,
   Dropout 0.5, Linear classes`` (``cls_head_finetune``).

Only the generator and the head train (``D = 384``, 15 classes: 1.70 M parameters = 7.7 % of
the 22.1 M model; the paper's 7.69 %). With ``prompt_layer = depth - 1`` (the paper's choice)
nothing below the last block needs a gradient, so blocks ``0 .. depth - 2`` run under
``torch.no_grad()`` (no activations kept), and with augmentation off their output can be
cached once (:meth:`IDPT.feature_cache`): training then runs only the generator, one block and
the head per step, with results identical to the uncached path.

Options that follow the official code instead of the paper: ``head_features`` (the official
``cls_type``: ``all`` (paper) / ``prompt_only`` (official ScanObjectNN configs) /
``prompt_cls`` / ``point_cls``), ``train_cls_token=True`` (the official ``part: only_new``
optimiser also trains ``cls_token`` and ``cls_pos``; this needs gradients through every block
and disables the no-grad path and the cache).

Example (clouds ``(B, N, 3)`` -> logits ``(B, classes)``)::

    >>> import torch
    >>> from polyprompt.core import create
    >>> from polyprompt.pointcloud.backbone import PointMAEBackbone, PointMAEConfig
    >>> model = create("idpt", PointMAEBackbone(PointMAEConfig.tiny()), num_classes=5, k=8)
    >>> model(torch.rand(2, 256, 3)).shape
    torch.Size([2, 5])
    >>> sorted({n.split(".")[0] for n in model.trainable_state_dict()})
    ['generator', 'head', 'prompt_pos']
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polyprompt.core.config import PromptConfig, is_int
from polyprompt.core.errors import ConfigError, InputError
from polyprompt.core.freezing import freeze_backbone
from polyprompt.core.methods.base import PromptMethod
from polyprompt.core.registry import register_method
from polyprompt.core.validation import check_tensor
from polyprompt.pointcloud.generator import DGCNNPromptGenerator, EdgeConvMode

__all__ = ["IDPT", "HeadFeatures", "IDPTConfig", "PackedPositions"]


class HeadFeatures(str, Enum):
    """What the head reads (official ``cls_type``): ``ALL`` = concat(CLS, prompt, max-pool)."""

    ALL = "all"
    PROMPT_ONLY = "prompt_only"
    PROMPT_CLS = "prompt_cls"
    POINT_CLS = "point_cls"


_HEAD_WIDTH = {
    HeadFeatures.ALL: 3,
    HeadFeatures.PROMPT_ONLY: 1,
    HeadFeatures.PROMPT_CLS: 2,
    HeadFeatures.POINT_CLS: 2,
}


@dataclass
class IDPTConfig(PromptConfig):
    """Config of :class:`IDPT`.

    Args:
        num_classes: classes of the head (``>= 2``).
        prompt_layer: the block before which the prompt is inserted (``None``: the last block,
            the paper's choice; official ``prompt_layer: 11`` of 12).
        k: neighbours of the DGCNN's feature-space kNN graph (20).
        head_hidden: hidden width of the head MLP (256).
        head_dropout: dropout in the head (0.5).
        head_features: :class:`HeadFeatures` (paper: ``all``).
        negative_slope: LeakyReLU slope of the generator (0.2).
        train_cls_token: also train ``cls_token`` / ``cls_pos`` (official optimiser; needs
            gradients through every block).
        edge_conv: how the generator evaluates its EdgeConvs (:class:`EdgeConvMode`):
            ``lean`` (default: no ``(B, 2D, G, k)`` edge tensor kept for backward; same logits
            and gradients to float rounding), ``factorised`` (plain autograd), ``official``
            (the literal ``Conv2d`` on the edge tensor).
    """

    num_classes: int = 2
    prompt_layer: int | None = None
    k: int = 20
    head_hidden: int = 256
    head_dropout: float = 0.5
    head_features: HeadFeatures = HeadFeatures.ALL
    negative_slope: float = 0.2
    train_cls_token: bool = False
    edge_conv: EdgeConvMode = EdgeConvMode.LEAN

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        r(is_int(self.num_classes) and self.num_classes >= 2, "num_classes", "must be an int >= 2")
        r(
            self.prompt_layer is None or (is_int(self.prompt_layer) and self.prompt_layer >= 0),
            "prompt_layer",
            "must be None or an int >= 0",
        )
        r(is_int(self.k) and self.k >= 1, "k", "must be an int >= 1")
        r(is_int(self.head_hidden) and self.head_hidden >= 1, "head_hidden", "must be an int >= 1")
        r(
            isinstance(self.head_dropout, (int, float)) and 0 <= self.head_dropout < 1,
            "head_dropout",
            "must be in [0, 1)",
        )
        r(
            isinstance(self.negative_slope, (int, float)) and math.isfinite(self.negative_slope),
            "negative_slope",
            "must be a finite number",
        )
        r(isinstance(self.train_cls_token, bool), "train_cls_token", "must be a bool")


class PackedPositions(nn.Module):
    """A view of a Point-MAE backbone whose tokens carry their positions: ``(B, L, 2D)``
    = ``cat(tokens, pos)``, so a :class:`~polyprompt.core.cache.FeatureCache` stores both.

    Used by :meth:`IDPT.feature_cache`; same weights (and fingerprint) as the backbone.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_blocks = backbone.num_blocks
        self.embed_dim = 2 * backbone.embed_dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        tokens, pos = self.backbone.embed_with_pos(x)
        return torch.cat([tokens, pos], dim=-1)

    def forward_blocks(self, packed: torch.Tensor, start: int = 0, end: int | None = None):
        d = self.backbone.embed_dim
        tokens, pos = packed[..., :d], packed[..., d:]
        out = self.backbone.forward_blocks(tokens, start, end, pos=pos)
        return torch.cat([out, pos], dim=-1)

    def identity(self) -> dict[str, Any]:
        return {"packed_positions": True, **self.backbone.identity()}


@register_method("idpt")
class IDPT(PromptMethod):
    """Instance-aware dynamic prompt tuning (see the module docstring for the pipeline).

    Args:
        backbone: a :class:`~polyprompt.pointcloud.backbone.PointMAEBackbone` (any object with
            ``embed_with_pos`` / ``forward_blocks(..., pos=)`` / ``norm``); frozen here.
        config: :class:`IDPTConfig`.

    Shapes: ``forward`` clouds ``(B, N, 3|6|2)`` -> logits ``(B, num_classes)``;
    ``forward_from_tokens(packed (B, 1 + G, 2D), prompt_layer)`` -> logits.
    """

    config_class = IDPTConfig

    def __init__(self, backbone: nn.Module, config: IDPTConfig) -> None:
        super().__init__(backbone, config)
        missing = [
            a
            for a in ("embed_with_pos", "forward_blocks", "norm", "embed_dim", "num_blocks")
            if not hasattr(backbone, a)
        ]
        if missing:
            raise InputError(
                f"IDPT: backbone {type(backbone).__name__} lacks {missing}; use PointMAEBackbone"
            )
        nb = int(backbone.num_blocks)
        layer = nb - 1 if config.prompt_layer is None else config.prompt_layer
        if not 0 <= layer < nb:
            raise ConfigError(
                f"IDPTConfig.prompt_layer: must be in [0, {nb - 1}] for a {nb}-block backbone "
                f"(got {config.prompt_layer})"
            )
        groups = getattr(backbone, "num_group", None)
        if groups is not None and config.k > groups:
            raise ConfigError(
                f"IDPTConfig.k: {config.k} neighbours exceed the backbone's {groups} patch tokens"
            )
        self.prompt_layer = layer
        freeze_backbone(backbone)
        if config.train_cls_token:
            for name in ("cls_token", "cls_pos"):
                getattr(backbone, name).requires_grad_(True)
        d = int(backbone.embed_dim)
        self.generator = DGCNNPromptGenerator(
            d, k=config.k, negative_slope=config.negative_slope, edge_conv=config.edge_conv
        )
        self.register_buffer("prompt_pos", torch.empty(1, 1, d))
        nn.init.trunc_normal_(self.prompt_pos, std=0.02)
        h, p = config.head_hidden, config.head_dropout
        self.head = nn.Sequential(
            nn.Linear(_HEAD_WIDTH[config.head_features] * d, h),
            nn.BatchNorm1d(h),
            nn.ReLU(inplace=True),
            nn.Dropout(p),
            nn.Linear(h, h),
            nn.BatchNorm1d(h),
            nn.ReLU(inplace=True),
            nn.Dropout(p),
            nn.Linear(h, config.num_classes),
        )
        for m in self.head.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.cache_point: int | None = None if config.train_cls_token else layer

    def train(self, mode: bool = True) -> IDPT:
        """Train mode for the generator and head; the frozen backbone stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    # ------------------------------------------------------------------ forward
    def frozen_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clouds -> ``(tokens, pos)`` entering block ``prompt_layer`` (no graph when frozen)."""
        bb = self.backbone
        ctx = torch.no_grad() if self.cache_point is not None else contextlib.nullcontext()
        with ctx:
            tokens, pos = bb.embed_with_pos(x)
            tokens = bb.forward_blocks(tokens, 0, self.prompt_layer, pos=pos)
        return tokens, pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clouds ``(B, N, 3|6|2)`` -> logits ``(B, num_classes)``."""
        return self._forward_tokens(*self.frozen_tokens(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Clouds -> the head's input features ``(B, width * D)``."""
        return self._features(*self.frozen_tokens(x))

    def prompt(self, x: torch.Tensor) -> torch.Tensor:
        """The instance-aware prompt ``(B, 1, D)`` the generator makes for ``x``."""
        tokens, _ = self.frozen_tokens(x)
        return self.generator(tokens[:, 1:])

    def _features(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        bb = self.backbone
        patches = tokens[:, 1:]
        prompt = self.generator(patches)
        x = torch.cat([tokens[:, :1], prompt, patches], dim=1)
        p = bb.expand_pos(pos, x.shape[1], self.prompt_pos)
        x = bb.norm(bb.forward_blocks(x, self.prompt_layer, pos=p))
        cls, pr, pooled = x[:, 0], x[:, 1], x[:, 2:].max(dim=1).values
        kind = self.config.head_features
        if kind == HeadFeatures.PROMPT_ONLY:
            return pr
        if kind == HeadFeatures.PROMPT_CLS:
            return torch.cat([cls, pr], dim=-1)
        if kind == HeadFeatures.POINT_CLS:
            return torch.cat([cls, pooled], dim=-1)
        return torch.cat([cls, pr, pooled], dim=-1)

    def _forward_tokens(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.head(self._features(tokens, pos))

    def forward_from_tokens(self, packed: torch.Tensor, start_block: int) -> torch.Tensor:
        """Logits from cached ``cat(tokens, pos)`` ``(B, 1 + G, 2D)`` entering ``start_block``.

        Raises:
            InputError: ``start_block`` is not ``prompt_layer`` or caching is off
                (``train_cls_token``).  ShapeError: wrong token shape.
        """
        where = "IDPT.forward_from_tokens"
        if self.cache_point is None:
            raise InputError(
                f"{where}: train_cls_token=True trains below the prompt: no cached tokens"
            )
        if start_block != self.prompt_layer:
            raise InputError(
                f"{where}: cached tokens must enter block prompt_layer={self.prompt_layer}, "
                f"got start_block={start_block!r}"
            )
        d = int(self.backbone.embed_dim)
        check_tensor(packed, "packed", rank=3, dims={2: 2 * d}, where=where)
        return self._forward_tokens(packed[..., :d], packed[..., d:])

    # ------------------------------------------------------------------ caching
    def feature_cache(self, root: str | Path | None = None, in_memory: bool = False):
        """A :class:`~polyprompt.core.cache.FeatureCache` of the frozen tokens (and positions)
        entering ``prompt_layer``; train on them with :meth:`forward_from_tokens`."""
        from polyprompt.core.cache import FeatureCache

        if self.cache_point is None:
            raise InputError("IDPT.feature_cache: train_cls_token=True: nothing can be cached")
        return FeatureCache(
            PackedPositions(self.backbone), self.prompt_layer, root=root, in_memory=in_memory
        )

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"num_classes={c.num_classes}, prompt_layer={self.prompt_layer}, k={c.k}, "
            f"head_features={c.head_features.value}, edge_conv={c.edge_conv.value}"
        )


class CachedTokens(nn.Module):
    """``model.forward_from_tokens(packed, start_block)`` as a module for the Trainer."""

    def __init__(self, method: IDPT) -> None:
        super().__init__()
        self.method = method

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return self.method.forward_from_tokens(packed, self.method.prompt_layer)
