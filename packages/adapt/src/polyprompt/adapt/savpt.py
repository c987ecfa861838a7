"""SAVPT: severity-aware visual prompt tuning (CoDA, Gong et al. AAAI 2024, Sec. 3.3).

Two parts, both chosen per image by its severity (:mod:`polyprompt.adapt.severity`):

* **Image-level prompts** -- an *easy* and a *hard* set of five zero-initialised
  ``3 x 64 x 64`` patches (four corners + centre), each a core
  :class:`~polyprompt.core.prompts.pixel.PixelPrompt`, added to the input image.
* **Feature-level prompt** -- a severity-routed bottleneck adapter after MiT stage 1
  (``64 -> 16 -> 64`` on MiT-B5: the core :class:`~polyprompt.core.prompts.bottleneck
  .Bottleneck`, one per severity, zero-initialised up projection so it starts as the
  identity) whose output is gated by a spatial attention map (:class:`SpatialAttention`:
  channel mean + max -> 7x7 conv -> sigmoid, as CBAM) and added back to the features.

The official repository's public tree has no SAVPT code, so the adapter's exact wiring
(residual ``x + A(a) * a`` with ``a = Bottleneck_s(x)``) is our reading of the paper's
description; it is documented in the package README.

Example::

    >>> import torch
    >>> savpt = SAVPT(image_size=64, stage1_dim=32, patch_size=8)
    >>> x, hard = torch.rand(2, 3, 64, 64), torch.tensor([False, True])
    >>> torch.equal(savpt.prompt_images(x, hard), x)      # zero init: identity
    True
    >>> f = torch.randn(2, 32, 16, 16)
    >>> torch.equal(savpt.adapt_features(f, hard), f)
    True
"""

from __future__ import annotations

import torch
from torch import nn

from polyprompt.core.errors import ShapeError
from polyprompt.core.prompts.bottleneck import Bottleneck
from polyprompt.core.prompts.pixel import PixelPrompt
from polyprompt.core.validation import check_tensor


class SpatialAttention(nn.Module):
    """CBAM-style spatial attention: ``sigmoid(conv7x7([mean_c(x), max_c(x)]))``, ``(B,1,H,W)``."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return torch.sigmoid(self.conv(pooled))


class SeverityRoutedAdapter(nn.Module):
    """Easy / hard bottleneck adapters on stage-1 maps, gated by spatial attention.

    ``out = x + SA(a) * a``, ``a = Bottleneck_easy(x)`` or ``Bottleneck_hard(x)`` per image.

    Shapes: ``forward(x (B, C, H, W), hard (B,) bool)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, dim: int, hidden: int, kernel_size: int = 7, scale: float = 1.0) -> None:
        super().__init__()
        self.easy = Bottleneck(dim, hidden, activation="gelu", scale=scale)
        self.hard = Bottleneck(dim, hidden, activation="gelu", scale=scale)
        self.attention = SpatialAttention(kernel_size)
        self.dim = dim

    def forward(self, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "features", rank=4, dims={1: self.dim}, where="SeverityRoutedAdapter")
        tokens = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        routed = torch.where(hard.view(-1, 1, 1, 1), self.hard(tokens), self.easy(tokens))
        a = routed.permute(0, 3, 1, 2)
        return x + self.attention(a) * a


class SAVPT(nn.Module):
    """Easy/hard pixel prompts + severity-routed stage-1 adapter.

    Args:
        image_size: side (or ``(H, W)``) of the images the prompts are added to.
        stage1_dim: channels of MiT stage 1 (64 for MiT-B5).
        patch_size: prompt patch side (paper: 64 on 512-1024 px crops).
        reduction: bottleneck ratio (paper: 64 -> 16, i.e. 4).
        num_patches: 5 = four corners + centre (fewer: the first ``num_patches`` of them).
        lr_mult: learning-rate multiplier of the prompts and adapters, as a reparameterisation
            (prompt = ``lr_mult * theta``, adapter output scaled by ``lr_mult``): with Adam the
            update of the effective prompt is ``lr_mult`` times larger, like the official
            config's ``lr_mult=10`` for non-encoder parts (the core Trainer has one lr).
            ``1`` (default) leaves the parameters as they are; zero init stays the identity.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        stage1_dim: int = 64,
        patch_size: int = 64,
        reduction: int = 4,
        num_patches: int = 5,
        lr_mult: float = 1.0,
    ) -> None:
        super().__init__()
        self.lr_mult = float(lr_mult)
        from polyprompt.core.prompts.pixel import PatchPosition

        positions = [
            PatchPosition.TOP_LEFT,
            PatchPosition.TOP_RIGHT,
            PatchPosition.BOTTOM_LEFT,
            PatchPosition.BOTTOM_RIGHT,
            PatchPosition.CENTER,
        ][:num_patches]
        self.easy_prompt = PixelPrompt(image_size, 3, patch_size=patch_size, positions=positions)
        self.hard_prompt = PixelPrompt(image_size, 3, patch_size=patch_size, positions=positions)
        self.adapter = SeverityRoutedAdapter(
            stage1_dim, max(1, stage1_dim // reduction), scale=self.lr_mult
        )
        self.image_size = (self.easy_prompt.height, self.easy_prompt.width)
        self.patch_size = self.easy_prompt.patch_size

    def prompt_images(self, images: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        """Add the easy or hard patch set to each image, ``(B, 3, H, W)``."""
        where = "SAVPT.prompt_images"
        check_tensor(images, "images", rank=4, dims={1: 3}, min_size={0: 1}, where=where)
        h, w = images.shape[-2:]
        ph, pw = self.patch_size
        if h < ph or w < pw:
            raise ShapeError(
                f"{where}: images {h}x{w} are smaller than the prompt patches {ph}x{pw}"
            )
        if (h, w) != self.image_size:
            raise ShapeError(
                f"{where}: images are {h}x{w} but the prompts were built for "
                f"{self.image_size[0]}x{self.image_size[1]}"
            )
        canvas = torch.where(
            hard.view(-1, 1, 1, 1), self.hard_prompt.canvas(), self.easy_prompt.canvas()
        )
        return images + (self.lr_mult * canvas).to(images.dtype)

    def adapt_features(self, features: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        return self.adapter(features, hard)
