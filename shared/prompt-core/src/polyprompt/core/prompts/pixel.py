"""Input-space (pixel) prompts added to images.

Two layouts:

* ``patches`` -- ``K`` learnable ``C x h x w`` patches at fixed positions, zero elsewhere.
  CoDA's SAVPT (Gong et al., AAAI 2024; official Cuzyoung/CoDA) uses five zero-initialised
  ``3 x 64 x 64`` patches at the four corners and the centre (the defaults here).
* ``padding`` -- a learnable frame of width ``pad_size`` around the image, zero inside
  (VP, Bahng et al., "Exploring Visual Prompts for Adapting Large-Scale Models", 2022;
  its ``PadPrompter`` uses ``pad_size=30`` and a ``torch.randn`` init = ``init="random"``).

``forward(images)`` returns ``images + canvas`` where the full-size canvas is assembled
from the parameters with ``F.pad`` / ``torch.cat``: gradients reach only the prompt
parameters, and pixels outside the prompt are left exactly unchanged. Overlapping patches
(small images) add up.

Example::

    >>> import torch
    >>> from polyprompt.core.prompts.pixel import PixelPrompt
    >>> coda = PixelPrompt(image_size=512)        # 5 zero-init 3x64x64 patches
    >>> coda.patches.shape                        # (K, C, h, w)
    torch.Size([5, 3, 64, 64])
    >>> images = torch.rand(2, 3, 512, 512)       # (B, C, H, W)
    >>> torch.equal(coda(images), images)         # zero init: identity at start
    True
    >>> vp = PixelPrompt(224, mode="padding", pad_size=30, init="random")
    >>> vp(torch.rand(2, 3, 224, 224)).shape
    torch.Size([2, 3, 224, 224])
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from polyprompt.core.errors import ConfigError, InputError
from polyprompt.core.prompts import _enum_arg, _float_arg, _int_arg
from polyprompt.core.validation import check_tensor


class PixelPromptMode(str, Enum):
    """Patches at fixed positions, or a frame around the image."""

    PATCHES = "patches"
    PADDING = "padding"


class PixelPromptInit(str, Enum):
    """Zeros (CoDA) or ``N(0, init_std^2)`` (VP uses ``init_std=1``)."""

    ZEROS = "zeros"
    RANDOM = "random"


class PatchPosition(str, Enum):
    """Where a patch sits; the centre patch is at ``((H - h) // 2, (W - w) // 2)``."""

    TOP_LEFT = "top_left"
    TOP_RIGHT = "top_right"
    BOTTOM_LEFT = "bottom_left"
    BOTTOM_RIGHT = "bottom_right"
    CENTER = "center"


_ALL_POSITIONS = tuple(PatchPosition)


class PixelPrompt(nn.Module):
    """Learnable additive prompt in image space.

    Args:
        image_size: ``H`` (square) or ``(H, W)`` of the images the prompt is added to.
        channels: image channels ``C``.
        mode: :class:`PixelPromptMode` or ``"patches"`` / ``"padding"``.
        patch_size: ``h`` (square) or ``(h, w)`` of each patch (``patches`` mode).
        positions: :class:`PatchPosition` values, one patch each (``patches`` mode;
            default: the four corners and the centre).
        pad_size: frame width (``padding`` mode); ``2 * pad_size`` must be < ``H`` and ``W``.
        init: :class:`PixelPromptInit` or ``"zeros"`` / ``"random"``.
        init_std: standard deviation of the ``random`` init.

    Parameters:
        ``patches`` ``(K, C, h, w)``; or ``pad_up`` / ``pad_down`` ``(C, p, W)`` and
        ``pad_left`` / ``pad_right`` ``(C, H - 2p, p)``.

    Shapes:
        ``forward(images (B, C, H, W))`` -> ``(B, C, H, W)``; ``canvas()`` -> ``(1, C, H, W)``.

    Raises:
        ConfigError: bad sizes (e.g. a patch larger than the image), positions, mode, init.
        ShapeError / NonFiniteError: images of the wrong shape or with NaN / inf.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        channels: int = 3,
        mode: PixelPromptMode | str = PixelPromptMode.PATCHES,
        patch_size: int | tuple[int, int] = 64,
        positions: Sequence[PatchPosition | str] = _ALL_POSITIONS,
        pad_size: int = 30,
        init: PixelPromptInit | str = PixelPromptInit.ZEROS,
        init_std: float = 1.0,
    ) -> None:
        super().__init__()
        where = "PixelPrompt"
        self.height, self.width = _pair(image_size, "image_size", where)
        self.channels = _int_arg(channels, "channels", where)
        self.mode = _enum_arg(PixelPromptMode, mode, "mode", where)
        self.init = _enum_arg(PixelPromptInit, init, "init", where)
        self.init_std = _float_arg(init_std, "init_std", where)
        c, h, w = self.channels, self.height, self.width

        if self.mode is PixelPromptMode.PATCHES:
            ph, pw = _pair(patch_size, "patch_size", where)
            if ph > h or pw > w:
                raise ConfigError(
                    f"{where}: patch_size {(ph, pw)} is larger than image_size {(h, w)}"
                )
            if isinstance(positions, (str, PatchPosition)) or not isinstance(positions, Sequence):
                raise ConfigError(
                    f"{where}: `positions` must be a sequence of positions, got {positions!r}"
                )
            pos = tuple(_enum_arg(PatchPosition, p, "positions[]", where) for p in positions)
            if not pos:
                raise ConfigError(f"{where}: `positions` is empty")
            if len(set(pos)) != len(pos):
                raise ConfigError(f"{where}: `positions` has repeated entries {positions!r}")
            self.patch_size = (ph, pw)
            self.positions: tuple[PatchPosition, ...] = pos
            self.patches = nn.Parameter(self._new(len(pos), c, ph, pw))
        else:
            p = _int_arg(pad_size, "pad_size", where)
            if 2 * p >= min(h, w):
                raise ConfigError(
                    f"{where}: 2 * pad_size ({2 * p}) must be smaller than image_size {(h, w)}"
                )
            self.pad_size = p
            self.pad_up = nn.Parameter(self._new(c, p, w))
            self.pad_down = nn.Parameter(self._new(c, p, w))
            self.pad_left = nn.Parameter(self._new(c, h - 2 * p, p))
            self.pad_right = nn.Parameter(self._new(c, h - 2 * p, p))

    def _new(self, *shape: int) -> torch.Tensor:
        t = torch.zeros(shape)
        if self.init is PixelPromptInit.RANDOM:
            nn.init.normal_(t, std=self.init_std)
        return t

    def offsets(self) -> dict[PatchPosition, tuple[int, int]]:
        """Top-left pixel ``(row, col)`` of each patch (``patches`` mode)."""
        ph, pw = self.patch_size
        h, w = self.height, self.width
        table = {
            PatchPosition.TOP_LEFT: (0, 0),
            PatchPosition.TOP_RIGHT: (0, w - pw),
            PatchPosition.BOTTOM_LEFT: (h - ph, 0),
            PatchPosition.BOTTOM_RIGHT: (h - ph, w - pw),
            PatchPosition.CENTER: ((h - ph) // 2, (w - pw) // 2),
        }
        return {p: table[p] for p in self.positions}

    def canvas(self) -> torch.Tensor:
        """The full-size prompt ``(1, C, H, W)``: parameters where the prompt is, 0 elsewhere."""
        h, w = self.height, self.width
        if self.mode is PixelPromptMode.PADDING:
            p = self.pad_size
            base = self.pad_up.new_zeros(self.channels, h - 2 * p, w - 2 * p)
            middle = torch.cat([self.pad_left, base, self.pad_right], dim=2)
            return torch.cat([self.pad_up, middle, self.pad_down], dim=1).unsqueeze(0)
        ph, pw = self.patch_size
        out = None
        for patch, (top, left) in zip(self.patches, self.offsets().values()):
            placed = F.pad(patch, (left, w - left - pw, top, h - top - ph))
            out = placed if out is None else out + placed
        assert out is not None
        return out.unsqueeze(0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images + canvas()`` for ``images`` of shape ``(B, C, H, W)``."""
        check_tensor(
            images,
            "images",
            rank=4,
            dims={1: self.channels, 2: self.height, 3: self.width},
            min_size={0: 1},
            where="PixelPrompt.forward",
        )
        if not images.is_floating_point():
            raise InputError(
                f"PixelPrompt.forward: `images` must be a floating tensor (convert uint8 "
                f"images to float first), got {images.dtype}"
            )
        return images + self.canvas().to(images.dtype)

    def extra_repr(self) -> str:
        size = f"image_size={(self.height, self.width)}, channels={self.channels}"
        if self.mode is PixelPromptMode.PATCHES:
            names = [p.value for p in self.positions]
            return f"{size}, mode=patches, patch_size={self.patch_size}, positions={names}"
        return f"{size}, mode=padding, pad_size={self.pad_size}"


def _pair(value: object, name: str, where: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ConfigError(f"{where}: `{name}` must be an int or (height, width), got {value!r}")
        return _int_arg(value[0], name, where), _int_arg(value[1], name, where)
    v = _int_arg(value, name, where)
    return v, v
