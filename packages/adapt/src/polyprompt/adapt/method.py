"""The CoDA segmentor: SegFormer + SAVPT routed by a severity rule (registered as ``"coda"``).

``CoDA(backbone, CoDAConfig(...))`` is the *student* network of CoDA's self-training
(:mod:`polyprompt.adapt.selftrain` adds the EMA teacher, pseudo-labels, ClassMix, MIC and
the Chain-of-Domain schedule). ``use_savpt=False`` gives the plain segmentor used by the
source-only and DAFormer-style self-training baselines.

What trains (``train_backbone``): the paper adapts the whole segmentor plus the prompts
(default, ``True``); ``False`` freezes the SegFormer and trains only SAVPT (and the
decode head's classifier when ``train_classifier``), the prompt-only setting.

Example::

    >>> import torch
    >>> from polyprompt.adapt.backbone import MiTConfig, SegFormerBackbone
    >>> net = SegFormerBackbone(MiTConfig.small(), num_classes=7)
    >>> model = CoDA(net, CoDAConfig(image_size=64, patch_size=8))
    >>> model(torch.rand(2, 3, 64, 64)).shape           # logits (B, K, H, W)
    torch.Size([2, 7, 64, 64])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from polyprompt.adapt.savpt import SAVPT
from polyprompt.adapt.severity import DarkPixelRule
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import InputError, ShapeError
from polyprompt.core.methods.base import PromptMethod
from polyprompt.core.registry import register_method
from polyprompt.core.validation import check_tensor


@dataclass
class CoDAConfig(PromptConfig):
    """SAVPT sizes, the severity rule and what trains."""

    image_size: int = 512
    use_savpt: bool = True
    patch_size: int = 64
    num_patches: int = 5
    adapter_reduction: int = 4
    prompt_lr_mult: float = 1.0
    dark_threshold: float = 40.0
    dark_fraction: float = 0.05
    train_backbone: bool = True
    train_classifier: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(self.image_size >= 1, "image_size", "must be >= 1")
        self.require(self.patch_size >= 1, "patch_size", "must be >= 1")
        self.require(
            self.patch_size <= self.image_size,
            "patch_size",
            f"prompt patches must fit in the image (image_size={self.image_size})",
        )
        self.require(1 <= self.num_patches <= 5, "num_patches", "must be in 1..5")
        self.require(self.adapter_reduction >= 1, "adapter_reduction", "must be >= 1")
        self.require(self.prompt_lr_mult > 0, "prompt_lr_mult", "must be > 0")
        DarkPixelRule(self.dark_threshold, self.dark_fraction)  # validates both

    @property
    def rule(self) -> DarkPixelRule:
        return DarkPixelRule(self.dark_threshold, self.dark_fraction)


@register_method("coda")
class CoDA(PromptMethod):
    """Student segmentor of CoDA: ``logits = SegFormer(SAVPT_s(x))`` with ``s = rule(x)``.

    Shapes: ``forward(images (B, 3, H, W) in [0, 1], hard=None)`` -> ``(B, K, H, W)``.
    ``hard``: ``(B,)`` bool severities; ``None`` applies the config's rule to ``images``.
    """

    config_class = CoDAConfig
    method_name = "coda"

    def __init__(self, backbone: nn.Module, config: CoDAConfig) -> None:
        super().__init__(backbone, config)
        self.rule = config.rule
        if not config.train_backbone:
            for p in backbone.parameters():
                p.requires_grad_(False)
            if config.train_classifier:
                for p in backbone.model.decode_head.classifier.parameters():
                    p.requires_grad_(True)
        self.savpt: SAVPT | None = None
        if config.use_savpt:
            self.savpt = SAVPT(
                config.image_size,
                stage1_dim=backbone.stage1_dim,
                patch_size=config.patch_size,
                reduction=config.adapter_reduction,
                num_patches=config.num_patches,
                lr_mult=config.prompt_lr_mult,
            )

    @property
    def num_classes(self) -> int:
        return self.backbone.num_classes

    def severity(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: True where the rule calls the image hard."""
        return self.rule(images)

    def check_images(self, images: torch.Tensor, where: str) -> None:
        check_tensor(images, "images", rank=4, min_size={0: 1}, where=where)
        c = images.shape[1]
        if c != 3:
            kind = {1: "grayscale", 4: "RGBA"}.get(int(c), f"{c}-channel")
            raise ShapeError(f"{where}: images are {kind} ({tuple(images.shape)}); RGB needed")
        if not images.is_floating_point():
            raise InputError(f"{where}: images must be float in [0, 1], got {images.dtype}")
        h, w = images.shape[-2:]
        if self.savpt is not None:
            ph, pw = self.savpt.patch_size
            if h < ph or w < pw:
                raise ShapeError(
                    f"{where}: images {h}x{w} are smaller than the prompt patches {ph}x{pw}"
                )
        m = self.backbone.min_input_size
        if h < m or w < m:
            raise ShapeError(f"{where}: images {h}x{w} are smaller than the encoder's {m}x{m}")

    def forward(self, images: torch.Tensor, hard: torch.Tensor | None = None) -> torch.Tensor:
        where = "CoDA.forward"
        self.check_images(images, where)
        if self.savpt is None:
            return self.backbone(images)
        if hard is None:
            hard = self.severity(images)
        hard = hard.to(images.device).bool().view(-1)
        if hard.shape[0] != images.shape[0]:
            raise ShapeError(f"{where}: {hard.shape[0]} severities for {images.shape[0]} images")
        x = self.savpt.prompt_images(images, hard)
        savpt = self.savpt
        return self.backbone(x, after_stage1=lambda f: savpt.adapt_features(f, hard))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Class ids ``(B, H, W)`` in eval mode."""
        was = self.training
        self.eval()
        try:
            return torch.cat(
                [
                    self(images[i : i + batch_size]).argmax(1)
                    for i in range(0, len(images), batch_size)
                ]
            )
        finally:
            self.train(was)

    def savpt_parameters(self) -> int:
        return 0 if self.savpt is None else sum(p.numel() for p in self.savpt.parameters())
