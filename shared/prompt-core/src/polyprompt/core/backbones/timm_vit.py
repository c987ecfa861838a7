"""Adapter that exposes a real timm ``VisionTransformer`` as a :class:`PromptableBackbone`.

The adapter owns no weights of its own: it wraps the timm model and calls the
model's own modules in the order timm's ``VisionTransformer.forward_features`` /
``forward_head`` do (timm 1.0, ``timm/models/vision_transformer.py``), split in
three steps so that a method can insert prompt tokens at any depth::

    tokens = adapter.embed(images)                    # (B, P + N, D): P prefix (CLS/reg) tokens
    tokens = adapter.forward_blocks(tokens, 0, k)     # blocks [0, k)
    P = adapter.num_prefix_tokens
    tokens = torch.cat([tokens[:, :P], prompt, tokens[:, P:]], 1)   # VPT: after the prefix
    tokens = adapter.forward_blocks(tokens, k)        # blocks [k, depth)
    feats = adapter.pool(adapter.norm(tokens), num_prompt_tokens=prompt.shape[1])  # (B, D)

Prefix tuning (DualPrompt, Wang et al. 2022, ``google-research/l2p``
``models/vit.py``; MVP) is supported through ``forward_blocks(..., prefix={i: (B, 2, Lp, D)})``:
``Lp`` key vectors and ``Lp`` value vectors are prepended to the attention's keys
and values of block ``i`` after its ``qkv`` projection (and after ``k_norm``),
split into heads; the queries, the token count and the output shape are unchanged.

Example::

    >>> import torch
    >>> from timm.models.vision_transformer import VisionTransformer
    >>> vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=3,
    ...                         num_heads=4, num_classes=0).eval()
    >>> adapter = TimmViTAdapter(vit)
    >>> tokens = adapter.embed(torch.randn(2, 3, 32, 32))            # (2, 1 + 16, 64)
    >>> tuple(tokens.shape)
    (2, 17, 64)
    >>> prompt = torch.zeros(2, 5, 64)
    >>> tokens = torch.cat([tokens[:, :1], prompt, tokens[:, 1:]], 1)  # VPT-shallow
    >>> prefix = {1: torch.randn(2, 2, 4, 64)}                         # prefix tuning on block 1
    >>> out = adapter.forward_blocks(tokens, prefix=prefix)           # (2, 22, 64)
    >>> tuple(adapter.pool(adapter.norm(out), num_prompt_tokens=5).shape)
    (2, 64)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from polyprompt.core.errors import ConfigError, ShapeError
from polyprompt.core.freezing import FingerprintCache
from polyprompt.core.validation import check_tensor

if TYPE_CHECKING:  # pragma: no cover
    from timm.models.vision_transformer import VisionTransformer

__all__ = ["TimmViTAdapter", "weight_fingerprint"]

_POOLS = ("token", "avg", "max", "avgmax")


def weight_fingerprint(module: nn.Module) -> str | None:
    """Short sha256 over every parameter and buffer (name, dtype, shape, bytes) of ``module``.

    The same digest as :func:`polyprompt.core.freezing.module_identity`'s ``fingerprint``:
    two modules share it iff they hold the same weights.

    Example::

        >>> len(weight_fingerprint(nn.Linear(3, 2)))
        16
    """
    from polyprompt.core.freezing import module_identity

    return module_identity(module)["fingerprint"]


class TimmViTAdapter(nn.Module):
    """A timm ``VisionTransformer`` seen through the :class:`PromptableBackbone` protocol.

    Args:
        model: a ``timm.models.vision_transformer.VisionTransformer`` (any size,
            class token or not, register tokens, ``global_pool`` ``'token'`` or ``'avg'``).

    Attributes:
        model: the wrapped timm model (its weights are the adapter's weights).
        embed_dim: token width ``D``.
        num_blocks: number of transformer blocks.
        num_prefix_tokens: CLS + register tokens at the start of every sequence.
        blocks: ``model.blocks``.
        in_chans: expected image channels.
        img_size: ``(H, W)`` the model was built for (``None`` if the patch embed has none).

    Shapes: ``embed`` (B, C, H, W) -> (B, P + N, D); ``forward_blocks`` and ``norm``
    (B, L, D) -> (B, L, D) for any ``L``; ``pool`` (B, L, D) -> (B, D).
    """

    def __init__(self, model: VisionTransformer) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        if not isinstance(model, VisionTransformer):
            raise ConfigError(
                "TimmViTAdapter: `model` must be a timm.models.vision_transformer.VisionTransformer, "
                f"got {type(model).__name__}"
            )
        self.model = model
        self.embed_dim = int(model.embed_dim)
        self.num_blocks = len(model.blocks)
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self.in_chans = int(getattr(model, "in_chans", model.patch_embed.proj.in_channels))
        img_size = model.patch_embed.img_size
        self.img_size: tuple[int, int] | None = (
            None if img_size is None else (int(img_size[0]), int(img_size[1]))
        )
        self._fingerprint = FingerprintCache()

    # -- construction -------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, **timm_kwargs: Any) -> TimmViTAdapter:
        """``timm.create_model(name, pretrained=False, num_classes=0, **timm_kwargs)`` wrapped.

        Nothing is downloaded. Pass ``pretrained=True`` explicitly only if you mean it.

        Example::

            >>> adapter = TimmViTAdapter.from_name("vit_tiny_patch16_224", img_size=32, depth=2)
            >>> adapter.embed_dim, adapter.num_blocks
            (192, 2)
        """
        import timm

        timm_kwargs.setdefault("pretrained", False)
        timm_kwargs.setdefault("num_classes", 0)
        return cls(timm.create_model(name, **timm_kwargs))

    @property
    def blocks(self) -> nn.Sequential:
        return self.model.blocks

    # -- token pipeline -----------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> tokens ``(B, P + N, D)`` (patch embed, positions, patch drop, pre-norm).

        Raises:
            ShapeError: not rank 4, wrong channel count or wrong image size.
            NonFiniteError: NaN or inf pixels.
        """
        where = "TimmViTAdapter.embed"
        check_tensor(x, "x", rank=4, dims={1: self.in_chans}, where=where)
        if not x.is_floating_point():
            raise ShapeError(f"{where}: `x` must be a floating tensor, got dtype {x.dtype}")
        self._check_image_size(x, where)
        m = self.model
        tokens = m.patch_embed(x)
        tokens = m._pos_embed(tokens)
        tokens = m.patch_drop(tokens)
        return m.norm_pre(tokens)

    def _check_image_size(self, x: torch.Tensor, where: str) -> None:
        pe = self.model.patch_embed
        h, w = int(x.shape[-2]), int(x.shape[-1])
        ph, pw = (int(p) for p in pe.patch_size)
        if h < ph or w < pw:
            raise ShapeError(
                f"{where}: image {h}x{w} is smaller than one patch ({ph}x{pw}); shape {tuple(x.shape)}"
            )
        if self.img_size is None:
            return
        dynamic = bool(getattr(self.model, "dynamic_img_size", False))
        if getattr(pe, "strict_img_size", True) and not dynamic:
            if (h, w) != self.img_size:
                raise ShapeError(
                    f"{where}: image size must be {self.img_size[0]}x{self.img_size[1]} "
                    f"(model img_size), got {h}x{w}; build the model with dynamic_img_size=True "
                    "to accept other sizes"
                )
        elif not getattr(pe, "dynamic_img_pad", False) and (h % ph or w % pw):
            raise ShapeError(
                f"{where}: image size {h}x{w} must be divisible by the patch size {ph}x{pw}"
            )

    def forward_blocks(
        self,
        tokens: torch.Tensor,
        start: int = 0,
        end: int | None = None,
        *,
        prefix: Mapping[int, torch.Tensor] | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run blocks ``[start, end)`` on ``tokens`` ``(B, L, D)`` (any ``L``) -> ``(B, L, D)``.

        Args:
            tokens: token sequence, prefix tokens first; prompts may sit anywhere.
            start, end: block range, ``0 <= start <= end <= num_blocks`` (``end=None``: to the last).
            prefix: ``{block_index: (B or 1, 2, Lp, D)}`` key/value prefixes (index 0 of dim 1:
                keys, index 1: values). Entries for blocks outside ``[start, end)`` are ignored,
                so one mapping can serve several partial calls. ``Lp`` may differ per block.
            attn_mask: passed to the timm blocks (bool: ``True`` = attend, or additive float),
                broadcastable to ``(B, heads, L, L)``; prefix keys are always attended.
        """
        where = "TimmViTAdapter.forward_blocks"
        end = self.num_blocks if end is None else end
        if not (isinstance(start, int) and isinstance(end, int)) or not (
            0 <= start <= end <= self.num_blocks
        ):
            raise ConfigError(
                f"{where}: need 0 <= start <= end <= num_blocks={self.num_blocks}, "
                f"got start={start!r}, end={end!r}"
            )
        check_tensor(tokens, "tokens", rank=3, dims={-1: self.embed_dim}, where=where)
        prefix = self._check_prefix(prefix, tokens, where)
        if attn_mask is not None:
            check_tensor(attn_mask, "attn_mask", rank=(2, 3, 4), finite=False, where=where)
        x = tokens
        for i in range(start, end):
            blk = self.model.blocks[i]
            if i in prefix:
                x = self._block_with_prefix(blk, i, x, prefix[i], attn_mask)
            elif attn_mask is not None:
                x = blk(x, attn_mask=attn_mask)
            else:
                x = blk(x)
        return x

    def _check_prefix(
        self, prefix: Mapping[int, torch.Tensor] | None, tokens: torch.Tensor, where: str
    ) -> dict[int, torch.Tensor]:
        if prefix is None:
            return {}
        if not isinstance(prefix, Mapping):
            raise ConfigError(
                f"{where}: `prefix` must be a mapping {{block_index: (B, 2, Lp, D)}}, "
                f"got {type(prefix).__name__}"
            )
        out = {}
        for i, p in prefix.items():
            if not isinstance(i, int) or not 0 <= i < self.num_blocks:
                raise ConfigError(
                    f"{where}: prefix key {i!r} is not a block index in [0, {self.num_blocks})"
                )
            check_tensor(p, f"prefix[{i}]", rank=4, dims={1: 2, -1: self.embed_dim}, where=where)
            if p.shape[0] not in (1, tokens.shape[0]):
                raise ShapeError(
                    f"{where}: prefix[{i}] batch size must be 1 or {tokens.shape[0]} (tokens), "
                    f"got shape {tuple(p.shape)}"
                )
            out[i] = p
        return out

    def _block_with_prefix(
        self,
        blk: nn.Module,
        index: int,
        x: torch.Tensor,
        prefix: torch.Tensor,
        attn_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """timm ``Block.forward`` with key/value prefixes, reusing the block's own modules."""
        from timm.layers import Attention
        from timm.models.vision_transformer import Block

        if not isinstance(blk, Block) or not isinstance(blk.attn, Attention):
            raise ConfigError(
                f"TimmViTAdapter.forward_blocks: prefix tuning needs timm Block/Attention, "
                f"block {index} is {type(blk).__name__} with {type(blk.attn).__name__}"
            )
        if blk.attn.attn_dim != self.embed_dim:
            raise ConfigError(
                f"TimmViTAdapter.forward_blocks: block {index} attention width "
                f"{blk.attn.attn_dim} != embed_dim {self.embed_dim}; prefixes must be (B, 2, Lp, "
                f"{blk.attn.attn_dim})"
            )
        attn_out = self._attention_with_prefix(blk.attn, blk.norm1(x), prefix, attn_mask)
        x = x + blk.drop_path1(blk.ls1(attn_out))
        x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
        return x

    @staticmethod
    def _attention_with_prefix(
        attn: nn.Module, x: torch.Tensor, prefix: torch.Tensor, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """timm ``Attention.forward`` with ``Lp`` extra keys and values (DualPrompt prefix tuning)."""
        b, n, _ = x.shape
        heads, head_dim = attn.num_heads, attn.head_dim
        gate = attn.gate(x).sigmoid() if attn.gate is not None else None
        qkv = attn.qkv(x).reshape(b, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, N, hd)
        q, k = attn.q_norm(q), attn.k_norm(k)
        lp = prefix.shape[2]
        prefix = prefix.to(dtype=q.dtype).expand(b, -1, -1, -1)
        pk = prefix[:, 0].reshape(b, lp, heads, head_dim).transpose(1, 2)  # (B, H, Lp, hd)
        pv = prefix[:, 1].reshape(b, lp, heads, head_dim).transpose(1, 2)
        k = torch.cat([pk, k], dim=2)
        v = torch.cat([pv, v], dim=2)
        if attn_mask is not None and lp:
            # prefix keys are always visible: pad the key axis on the left
            fill = True if attn_mask.dtype == torch.bool else 0.0
            pad = attn_mask.new_full((*attn_mask.shape[:-1], lp), fill)
            attn_mask = torch.cat([pad, attn_mask], dim=-1)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=attn.attn_drop.p if attn.training else 0.0,
        )
        out = out.transpose(1, 2).reshape(b, n, attn.attn_dim)
        out = attn.norm(out)
        if gate is not None:
            out = out * gate
        out = attn.proj(out)
        return attn.proj_drop(out)

    def norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final norm of the model (``model.norm``): ``(B, L, D)`` -> ``(B, L, D)``."""
        check_tensor(
            tokens, "tokens", rank=3, dims={-1: self.embed_dim}, where="TimmViTAdapter.norm"
        )
        return self.model.norm(tokens)

    def pool(self, tokens: torch.Tensor, num_prompt_tokens: int = 0) -> torch.Tensor:
        """Normed tokens ``(B, L, D)`` -> features ``(B, D)``, as ``model.forward_head(pre_logits=True)``.

        Follows ``model.global_pool``: ``'token'`` takes the CLS token ``tokens[:, 0]``;
        ``'avg'`` / ``'max'`` / ``'avgmax'`` reduce over the patch tokens
        ``tokens[:, P + num_prompt_tokens:]`` (``P = num_prefix_tokens``; with timm's
        ``pool_include_prefix`` the prefix tokens are reduced too, prompt tokens never), then
        ``model.fc_norm``. ``model.head_drop`` (classifier dropout) is left to the head.

        Args:
            num_prompt_tokens: prompt tokens inserted right after the prefix tokens
                (VPT); they are excluded from average pooling.

        Raises:
            ConfigError: ``global_pool`` is ``''`` / ``'map'`` (attention pooling) or unknown.
        """
        where = "TimmViTAdapter.pool"
        check_tensor(tokens, "tokens", rank=3, dims={-1: self.embed_dim}, where=where)
        m = self.model
        pool_type = m.global_pool
        if getattr(m, "attn_pool", None) is not None or pool_type not in _POOLS:
            raise ConfigError(
                f"{where}: global_pool={pool_type!r} is not supported (use one of {_POOLS})"
            )
        p = self.num_prefix_tokens
        if not isinstance(num_prompt_tokens, int) or num_prompt_tokens < 0:
            raise ConfigError(
                f"{where}: num_prompt_tokens must be an int >= 0, got {num_prompt_tokens!r}"
            )
        if pool_type == "token":
            if p == 0:
                raise ConfigError(f"{where}: global_pool='token' but the model has no class token")
            x = tokens[:, 0]
        else:
            patches = tokens[:, p + num_prompt_tokens :]
            if getattr(m, "pool_include_prefix", False):
                patches = torch.cat([tokens[:, :p], patches], dim=1)
            if patches.shape[1] == 0:
                raise ShapeError(
                    f"{where}: no tokens left to pool after {p} prefix and {num_prompt_tokens} "
                    f"prompt tokens; shape {tuple(tokens.shape)}"
                )
            if pool_type == "avg":
                x = patches.mean(dim=1)
            elif pool_type == "max":
                x = patches.amax(dim=1)
            else:
                x = 0.5 * (patches.amax(dim=1) + patches.mean(dim=1))
        return m.fc_norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> pooled features ``(B, D)`` with no prompts.

        Equals ``model.forward_head(model.forward_features(x), pre_logits=True)`` in eval mode.
        """
        return self.pool(self.norm(self.forward_blocks(self.embed(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward_features`."""
        return self.forward_features(x)

    def identity(self) -> dict[str, Any]:
        """JSON-able description stored with prompt checkpoints.

        ``fingerprint`` is a short sha256 over the weights, computed once and
        recomputed only when a parameter or buffer was modified in place.
        """
        return {
            "library": "timm",
            "class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "embed_dim": self.embed_dim,
            "num_blocks": self.num_blocks,
            "num_prefix_tokens": self.num_prefix_tokens,
            "img_size": list(self.img_size) if self.img_size is not None else None,
            "in_chans": self.in_chans,
            "global_pool": self.model.global_pool,
            "fingerprint": self._fingerprint.get(self.model),
        }
