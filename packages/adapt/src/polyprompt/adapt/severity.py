"""Severity of a target image: "easy" or "hard" (CoDA, Gong et al. AAAI 2024, Sec. 3.2).

The paper's rule: an image is *hard* when at least 5% of its grayscale pixels are darker
than 40/255, else *easy*. The official repo's ``mmseg/utils/filter_images.py`` uses the
same grey level 40 but a dark-pixel proportion of 0.18; pass ``fraction=0.18`` for it.
The grey conversion is OpenCV's ``COLOR_BGR2GRAY`` (ITU-R BT.601: 0.299 R + 0.587 G +
0.114 B) on 8-bit values, as in that file.

The rule is pluggable: anything with ``__call__(images (B, 3, H, W) in [0, 1]) ->
bool tensor (B,)`` (True = hard) works as a :class:`SeverityRule`.

Example::

    >>> import torch
    >>> rule = DarkPixelRule()
    >>> imgs = torch.stack([torch.full((3, 8, 8), 0.8), torch.full((3, 8, 8), 0.05)])
    >>> rule(imgs).tolist()
    [False, True]
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable

import torch

from polyprompt.core.config import PromptConfig
from polyprompt.core.validation import check_tensor


class Severity(str, Enum):
    EASY = "easy"
    HARD = "hard"


@runtime_checkable
class SeverityRule(Protocol):
    """``rule(images (B, 3, H, W) in [0, 1]) -> (B,) bool`` (True = hard)."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def grayscale_255(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` in ``[0, 1]`` -> 8-bit BT.601 grey levels ``(B, H, W)`` (as OpenCV)."""
    w = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return torch.round((images.clamp(0, 1) * 255.0 * w).sum(1))


def dark_fraction(images: torch.Tensor, threshold: float = 40.0) -> torch.Tensor:
    """Per-image fraction of grey pixels strictly below ``threshold`` (0-255 scale), ``(B,)``."""
    check_tensor(images, "images", rank=4, dims={1: 3}, min_size={0: 1}, where="dark_fraction")
    return (grayscale_255(images) < threshold).float().flatten(1).mean(1)


@dataclass
class DarkPixelRule(PromptConfig):
    """Hard iff ``dark_fraction(image, threshold) >= fraction`` (paper: 40/255 and 5%)."""

    threshold: float = 40.0
    fraction: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(0 < self.threshold <= 255, "threshold", "must be a grey level in (0, 255]")
        self.require(0 < self.fraction <= 1, "fraction", "must be in (0, 1]")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return dark_fraction(images, self.threshold) >= self.fraction


def severity_of(images: torch.Tensor, rule: SeverityRule | None = None) -> torch.Tensor:
    """``(B,)`` bool, True = hard, using ``rule`` (default :class:`DarkPixelRule`)."""
    rule = rule or DarkPixelRule()
    out = rule(images)
    if not isinstance(out, torch.Tensor) or out.shape != (images.shape[0],):
        raise TypeError(f"severity rule must return a (B,) tensor, got {out!r:.60}")
    return out.bool()
