"""Frozen medical backbones seen through the core's ``PromptableBackbone`` protocol.

* :class:`MedicalViTAdapter` -- a timm ``VisionTransformer`` (2-D) through the core's
  :class:`~polyprompt.core.backbones.timm_vit.TimmViTAdapter`, with the medical input checks
  of :func:`prepare_image` (grey <-> RGB conversion, 4-channel images rejected, a 3-D
  volume given to a 2-D model named as such, NaN/inf voxels, images smaller than a patch).
* :class:`MonaiViTAdapter` -- MONAI's ``monai.networks.nets.ViT`` (2-D or 3-D, usually 3-D
  volumes ``(B, C, D, H, W)``), exposing ``embed`` / ``forward_blocks`` / ``norm`` /
  ``pool`` exactly as MONAI's ``ViT.forward`` runs them
  (``monai/networks/nets/vit.py``: patch embedding with positions, CLS token concatenated
  *after* the position embedding, the ``TransformerBlock`` stack, final ``LayerNorm``).
* :func:`block_forward` -- one transformer block with an optional branch in parallel to
  its MLP (``h = x + attn(norm1(x)); out = h + mlp(norm2(h)) + branch(h)``), the insertion
  point of DVPT's modules (official ``code/model.py``, ``ResidualAttentionBlock.forward``:
  ``x = x + self.mlp(self.ln_2(x)) + self.prompt_proj(x)``) and of AdaptFormer. It runs the
  real timm ``Block`` / MONAI ``TransformerBlock`` sub-modules in their own order.

Example (a 3-D MONAI ViT on 16^3 patches)::

    >>> import torch
    >>> from monai.networks.nets import ViT
    >>> vit = ViT(in_channels=1, img_size=16, patch_size=8, hidden_size=32, mlp_dim=64,
    ...           num_layers=2, num_heads=4, classification=True, spatial_dims=3)
    >>> bb = MonaiViTAdapter(vit)
    >>> tokens = bb.embed(torch.randn(2, 1, 16, 16, 16))      # (2, 1 + 8, 32)
    >>> tuple(bb.pool(bb.norm(bb.forward_blocks(tokens))).shape)
    (2, 32)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from polyprompt.core.backbones.timm_vit import TimmViTAdapter
from polyprompt.core.errors import ConfigError, InputError, ShapeError
from polyprompt.core.freezing import FingerprintCache
from polyprompt.core.validation import check_tensor

if TYPE_CHECKING:  # pragma: no cover
    from monai.networks.nets import ViT

__all__ = [
    "MedicalViTAdapter",
    "MonaiViTAdapter",
    "block_forward",
    "prepare_image",
]

# ITU-R BT.601 luma, the weights PIL's ``convert("L")`` uses
_LUMA = (0.299, 0.587, 0.114)


def prepare_image(
    x: Any,
    *,
    in_chans: int,
    spatial_dims: int,
    patch_size: Sequence[int],
    where: str,
) -> torch.Tensor:
    """Check a batch of images / volumes and bring it to the model's channel count.

    Channel policy (documented, the same for every backbone of this package):

    * ``C == in_chans``: unchanged;
    * a grey image (``C == 1``) for an RGB model (``in_chans == 3``): repeated to 3 channels;
    * an RGB image (``C == 3``) for a grey model (``in_chans == 1``): BT.601 luma
      (``0.299 R + 0.587 G + 0.114 B``, what ``PIL.Image.convert("L")`` computes);
    * anything else (RGBA / 4-channel, 2-channel, ...): :class:`InputError`.

    Args:
        x: ``(B, C, H, W)`` for ``spatial_dims=2`` or ``(B, C, D, H, W)`` for 3.
        in_chans: channels the model expects.
        spatial_dims: 2 or 3.
        patch_size: the model's patch size per spatial dimension.
        where: the caller, named in error messages.

    Raises:
        ShapeError: wrong rank (a 3-D volume given to a 2-D model and vice versa), empty
            batch, or an image smaller than one patch.
        InputError: an unsupported channel count (4-channel images are rejected).
        NonFiniteError: NaN or inf pixels / voxels.
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{where}: expected a torch.Tensor, got {type(x).__name__}")
    rank = 2 + spatial_dims
    if x.dim() != rank:
        kind = {4: "2-D images (B, C, H, W)", 5: "3-D volumes (B, C, D, H, W)"}
        got = kind.get(x.dim(), f"a rank-{x.dim()} tensor")
        raise ShapeError(
            f"{where}: this is a {spatial_dims}-D model and expects {kind[rank]}, got {got} "
            f"of shape {tuple(x.shape)}"
            + (
                "; slice the volume or use a 3-D (MONAI) backbone"
                if x.dim() == 5 and rank == 4
                else "; add the depth axis or use a 2-D (timm) backbone"
                if x.dim() == 4 and rank == 5
                else ""
            )
        )
    if x.shape[0] == 0:
        raise ShapeError(f"{where}: empty batch, shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(
            f"{where}: images must be a floating tensor (scale intensities first), got {x.dtype}"
        )
    c = int(x.shape[1])
    if c != in_chans:
        if c == 1 and in_chans == 3:
            x = x.expand(-1, 3, *x.shape[2:])
        elif c == 3 and in_chans == 1:
            w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(
                1, 3, *([1] * spatial_dims)
            )
            x = (x * w).sum(dim=1, keepdim=True)
        else:
            raise InputError(
                f"{where}: images have {c} channels but the model takes {in_chans}; grey (1) and "
                f"RGB (3) are converted, {c}-channel input (e.g. RGBA) is rejected: drop the "
                f"extra channels first. Shape {tuple(x.shape)}"
            )
    spatial = tuple(int(s) for s in x.shape[2:])
    patch = tuple(int(p) for p in patch_size)
    if any(s < p for s, p in zip(spatial, patch)):
        raise ShapeError(
            f"{where}: image of size {'x'.join(map(str, spatial))} is smaller than one patch "
            f"({'x'.join(map(str, patch))})"
        )
    check_tensor(x, "x", where=where)  # finite check: NonFiniteError names NaN / inf
    return x


class MedicalViTAdapter(TimmViTAdapter):
    """:class:`~polyprompt.core.TimmViTAdapter` with the medical input policy of :func:`prepare_image`.

    ``embed`` accepts grey or RGB images whatever the model's ``in_chans`` (converted as
    documented in :func:`prepare_image`) and names a 3-D volume given to this 2-D model.

    Example::

        >>> from timm.models.vision_transformer import VisionTransformer
        >>> vit = VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=32,
        ...                         depth=2, num_heads=2, num_classes=0)
        >>> bb = MedicalViTAdapter(vit)
        >>> bb.embed(torch.rand(2, 3, 32, 32)).shape          # RGB -> grey
        torch.Size([2, 17, 32])
    """

    spatial_dims = 2

    @property
    def patch_size(self) -> tuple[int, int]:
        p = self.model.patch_embed.patch_size
        return int(p[0]), int(p[1])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = prepare_image(
            x,
            in_chans=self.in_chans,
            spatial_dims=2,
            patch_size=self.patch_size,
            where="MedicalViTAdapter.embed",
        )
        return super().embed(x)


class MonaiViTAdapter(nn.Module):
    """MONAI's ``ViT`` as a :class:`~polyprompt.core.backbones.PromptableBackbone`.

    Args:
        model: a ``monai.networks.nets.ViT`` (any ``spatial_dims``; ``classification=True``
            gives it a CLS token, pooled by :meth:`pool`; without it :meth:`pool` averages the
            patch tokens). The classification head of the MONAI model is never used.

    Shapes: ``embed`` ``(B, C, *img_size)`` -> ``(B, P + N, D)`` (``P`` = 1 with a CLS token);
    ``forward_blocks`` / ``norm`` ``(B, L, D)`` -> ``(B, L, D)``; ``pool`` -> ``(B, D)``.
    MONAI's learnable position embedding has a fixed size, so inputs must have ``img_size``.
    """

    def __init__(self, model: ViT, img_size: Sequence[int] | int | None = None) -> None:
        super().__init__()
        from monai.networks.nets import ViT

        if not isinstance(model, ViT):
            raise ConfigError(
                f"MonaiViTAdapter: `model` must be a monai.networks.nets.ViT, got "
                f"{type(model).__name__}"
            )
        pe = model.patch_embedding
        conv = next(
            (m for m in pe.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))), None
        )
        if conv is None:
            raise ConfigError(
                "MonaiViTAdapter: only proj_type='conv' MONAI ViTs are supported (no patch conv found)"
            )
        self.model = model
        self.embed_dim = int(model.norm.normalized_shape[0])
        self.num_blocks = len(model.blocks)
        self.num_prefix_tokens = 1 if hasattr(model, "cls_token") else 0
        self.patch_size = tuple(int(k) for k in conv.kernel_size)
        self.spatial_dims = len(self.patch_size)
        self.in_chans = int(conv.in_channels)
        n = int(pe.n_patches)
        if img_size is None:
            side = round(n ** (1.0 / self.spatial_dims))
            if side**self.spatial_dims != n:
                raise ConfigError(
                    f"MonaiViTAdapter: {n} patches is not a cube grid; pass img_size explicitly"
                )
            img_size = tuple(side * p for p in self.patch_size)
        elif isinstance(img_size, int):
            img_size = (img_size,) * self.spatial_dims
        self.img_size = tuple(int(s) for s in img_size)
        grid = [s // p for s, p in zip(self.img_size, self.patch_size)]
        if len(self.img_size) != self.spatial_dims or int(torch.tensor(grid).prod()) != n:
            raise ConfigError(
                f"MonaiViTAdapter: img_size {self.img_size} does not match the model "
                f"({n} patches of {self.patch_size})"
            )
        self.global_pool = "token" if self.num_prefix_tokens else "avg"
        self._fingerprint = FingerprintCache()

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.blocks

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Volumes ``(B, C, *img_size)`` -> tokens ``(B, P + N, D)`` (MONAI ``ViT.forward`` order)."""
        where = "MonaiViTAdapter.embed"
        x = prepare_image(
            x,
            in_chans=self.in_chans,
            spatial_dims=self.spatial_dims,
            patch_size=self.patch_size,
            where=where,
        )
        if tuple(int(s) for s in x.shape[2:]) != self.img_size:
            raise ShapeError(
                f"{where}: input size {tuple(x.shape[2:])} != the model's img_size "
                f"{self.img_size} (MONAI's position embedding has a fixed size); crop or resize "
                f"first, e.g. monai.transforms.ResizeWithPadOrCropd"
            )
        tokens = self.model.patch_embedding(x)
        if self.num_prefix_tokens:
            cls = self.model.cls_token.expand(tokens.shape[0], -1, -1)
            tokens = torch.cat((cls, tokens), dim=1)
        return tokens

    def forward_blocks(
        self,
        tokens: torch.Tensor,
        start: int = 0,
        end: int | None = None,
        *,
        prefix: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run MONAI ``TransformerBlock`` s ``[start, end)`` on ``tokens`` ``(B, L, D)``."""
        where = "MonaiViTAdapter.forward_blocks"
        end = self.num_blocks if end is None else end
        if not (isinstance(start, int) and isinstance(end, int)) or not (
            0 <= start <= end <= self.num_blocks
        ):
            raise ConfigError(
                f"{where}: need 0 <= start <= end <= num_blocks={self.num_blocks}, "
                f"got start={start!r}, end={end!r}"
            )
        if prefix:
            raise ConfigError(f"{where}: key/value prefixes are not supported for MONAI blocks")
        check_tensor(tokens, "tokens", rank=3, dims={-1: self.embed_dim}, where=where)
        for i in range(start, end):
            tokens = self.model.blocks[i](tokens)
        return tokens

    def norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """MONAI's final ``LayerNorm`` (``model.norm``)."""
        check_tensor(
            tokens, "tokens", rank=3, dims={-1: self.embed_dim}, where="MonaiViTAdapter.norm"
        )
        return self.model.norm(tokens)

    def pool(self, tokens: torch.Tensor, num_prompt_tokens: int = 0) -> torch.Tensor:
        """CLS token (``classification=True``, as MONAI's head reads ``x[:, 0]``) or the mean of
        the patch tokens (prompt tokens after the prefix excluded)."""
        where = "MonaiViTAdapter.pool"
        check_tensor(tokens, "tokens", rank=3, dims={-1: self.embed_dim}, where=where)
        if self.num_prefix_tokens:
            return tokens[:, 0]
        patches = tokens[:, num_prompt_tokens:]
        if patches.shape[1] == 0:
            raise ShapeError(f"{where}: no patch tokens to pool in shape {tuple(tokens.shape)}")
        return patches.mean(dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.norm(self.forward_blocks(self.embed(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def identity(self) -> dict[str, Any]:
        return {
            "library": "monai",
            "class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "embed_dim": self.embed_dim,
            "num_blocks": self.num_blocks,
            "num_prefix_tokens": self.num_prefix_tokens,
            "img_size": list(self.img_size),
            "patch_size": list(self.patch_size),
            "in_chans": self.in_chans,
            "spatial_dims": self.spatial_dims,
            "fingerprint": self._fingerprint.get(self.model),
        }


def block_forward(
    block: nn.Module,
    x: torch.Tensor,
    branch: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """One frozen transformer block with an extra branch parallel to its MLP.

    ``h = x + attn(norm1(x))``; ``out = h + mlp(norm2(h)) + branch(h)`` (``branch=None``:
    the block's own forward). Supports timm ``vision_transformer.Block`` (with its layer
    scales and drop paths) and MONAI ``TransformerBlock`` (no cross-attention).

    Raises:
        ConfigError: any other block type.
    """
    if branch is None:
        return block(x)
    from monai.networks.blocks.transformerblock import TransformerBlock
    from timm.models.vision_transformer import Block

    if isinstance(block, Block):
        h = x + block.drop_path1(block.ls1(block.attn(block.norm1(x))))
        return h + block.drop_path2(block.ls2(block.mlp(block.norm2(h)))) + branch(h)
    if isinstance(block, TransformerBlock):
        if getattr(block, "with_cross_attention", False):
            raise ConfigError("block_forward: MONAI blocks with cross-attention are not supported")
        h = x + block.attn(block.norm1(x))
        return h + block.mlp(block.norm2(h)) + branch(h)
    raise ConfigError(
        f"block_forward: cannot insert a parallel branch into {type(block).__name__}; supported: "
        "timm vision_transformer.Block and monai TransformerBlock"
    )
