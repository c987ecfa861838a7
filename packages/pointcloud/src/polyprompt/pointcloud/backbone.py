"""The Point-MAE encoder as a :class:`~polyprompt.core.backbones.PromptableBackbone`.

Architecture of Point-MAE's fine-tuning encoder (Pang et al., *Masked Autoencoders for Point
Cloud Self-supervised Learning*, ECCV 2022; official ``Pang-Yatian/Point-MAE``
``models/Point_MAE.py`` ``PointTransformer``, identical in ``ICCV23-IDPT``):

1. ``Group``: farthest point sampling of ``num_group`` centres (128 in the paper) and the
   ``group_size`` (32) nearest points of each, re-centred (:func:`~.ops.group_points`);
2. ``Encoder``: a mini-PointNet per patch (``first_conv`` 3 -> 128 -> 256, max-pool, concat
   with the per-point features, ``second_conv`` 512 -> 512 -> ``embed_dim``, max-pool);
3. ``pos_embed``: an MLP 3 -> 128 -> ``embed_dim`` of every centre; a CLS token with its own
   ``cls_pos``;
4. ``blocks``: ``depth`` transformer blocks — here **timm's**
   ``timm.models.vision_transformer.Block`` (pre-norm attention + MLP, ``qkv_bias=False`` and
   ``torch.nn.LayerNorm`` like the official ``Block``), never a hand-written attention;
   Point-MAE adds the positional embedding to the input of *every* block:
   ``x = block(x + pos)``;
5. ``norm``: a final LayerNorm.

Parameter names follow the official checkpoint (``encoder.first_conv.0.weight``,
``pos_embed.0.weight``, ``cls_token``, ``cls_pos``, ``norm.weight``); only the blocks drop
the official ``TransformerEncoder`` wrapper level (``blocks.blocks.3.attn.qkv.weight`` ->
``blocks.3.attn.qkv.weight``) — :mod:`.checkpoint` maps the official key layout.

Positions and the protocol. ``embed(x)`` returns the tokens ``(B, 1 + G, D)`` and remembers
their positional embedding; ``forward_blocks`` re-adds it before every block, so the core's
``linear_probe`` / ``full_finetune`` / ``vpt`` run unchanged. Prompt tokens inserted right
after the CLS token (``L > 1 + G`` tokens) get position 0. Pass ``pos=`` explicitly (as IDPT
does) to make a call independent of the last ``embed``; :meth:`PointMAEBackbone.embed_with_pos`
returns both.

Example (clouds ``(B, N, 3)`` -> tokens ``(B, 1 + G, D)`` -> features ``(B, D)``)::

    >>> import torch
    >>> bb = PointMAEBackbone(PointMAEConfig.tiny())
    >>> tokens = bb.embed(torch.rand(2, 256, 3))
    >>> tuple(tokens.shape)
    (2, 33, 64)
    >>> out = bb.forward_blocks(tokens)                 # pos re-added before every block
    >>> tuple(bb.pool(bb.norm(out)).shape)
    (2, 64)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

from polyprompt.core.config import PromptConfig, is_int
from polyprompt.core.errors import ConfigError, InputError, ShapeError
from polyprompt.core.validation import check_tensor
from polyprompt.pointcloud.ops import group_points

__all__ = ["PatchEncoder", "PointMAEBackbone", "PointMAEConfig", "PoolMode"]


class PoolMode(str, Enum):
    """Features of ``pool``: ``MAX`` over patch tokens (default), ``TOKEN`` (CLS), ``AVG`` over patches."""

    MAX = "max"
    TOKEN = "token"
    AVG = "avg"


@dataclass
class PointMAEConfig(PromptConfig):
    """Sizes of the Point-MAE encoder (defaults: the paper's; :meth:`small` / :meth:`tiny` for CPU).

    Args:
        embed_dim: token width (paper 384).
        depth: transformer blocks (12).
        num_heads: attention heads (6).
        mlp_ratio: MLP hidden / embed_dim (4).
        num_group: FPS centres / patch tokens ``G`` (128 ScanObjectNN, 64 ModelNet40).
        group_size: points per patch ``S`` (32).
        encoder_channels: widths of the mini-PointNet ``(c1, c2, c3)``; official ``(128, 256, 512)``
            (``first_conv`` 3 -> c1 -> c2, ``second_conv`` 2*c2 -> c3 -> embed_dim).
        pos_hidden: hidden width of the position MLP (128).
        drop_path_rate: stochastic depth, linearly increasing over blocks (0.1).
        pool: :class:`PoolMode` of :meth:`PointMAEBackbone.pool` (used by the core baselines).
    """

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_group: int = 128
    group_size: int = 32
    encoder_channels: tuple[int, int, int] = (128, 256, 512)
    pos_hidden: int = 128
    drop_path_rate: float = 0.1
    pool: PoolMode = PoolMode.MAX

    def __post_init__(self) -> None:
        super().__post_init__()
        self.encoder_channels = tuple(self.encoder_channels)  # type: ignore[assignment]
        r = self.require
        self.require_ints(
            "embed_dim", "depth", "num_heads", "num_group", "group_size", "pos_hidden"
        )
        r(self.embed_dim % self.num_heads == 0, "num_heads", "must divide embed_dim")
        r(
            len(self.encoder_channels) == 3
            and all(is_int(c) and c >= 1 for c in self.encoder_channels),
            "encoder_channels",
            "must be three ints >= 1",
        )
        r(
            isinstance(self.mlp_ratio, (int, float)) and self.mlp_ratio > 0,
            "mlp_ratio",
            "must be > 0",
        )
        r(
            isinstance(self.drop_path_rate, (int, float)) and 0 <= self.drop_path_rate < 1,
            "drop_path_rate",
            "must be in [0, 1)",
        )

    @classmethod
    def small(cls) -> PointMAEConfig:
        """CPU-size encoder for the examples: width 128, 6 blocks, 32 patches of 16 points."""
        return cls(
            embed_dim=128,
            depth=6,
            num_heads=4,
            num_group=32,
            group_size=16,
            encoder_channels=(32, 64, 128),
            pos_hidden=64,
            drop_path_rate=0.1,
        )

    @classmethod
    def tiny(cls) -> PointMAEConfig:
        """Test-size encoder: width 64, 3 blocks, 32 patches of 8 points."""
        return cls(
            embed_dim=64,
            depth=3,
            num_heads=4,
            num_group=32,
            group_size=8,
            encoder_channels=(16, 32, 64),
            pos_hidden=32,
            drop_path_rate=0.0,
        )

    @property
    def min_points(self) -> int:
        """Fewest points a cloud needs (``max(num_group, group_size)``)."""
        return max(self.num_group, self.group_size)


class PatchEncoder(nn.Module):
    """Point-MAE's ``Encoder`` (mini-PointNet): patches ``(B, G, S, 3)`` -> tokens ``(B, G, D)``.

    Layer names and order as the official module (``first_conv.{0,1,3}``, ``second_conv.{0,1,3}``).
    """

    def __init__(self, out_dim: int, channels: tuple[int, int, int] = (128, 256, 512)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.out_dim = out_dim
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, c1, 1), nn.BatchNorm1d(c1), nn.ReLU(inplace=True), nn.Conv1d(c1, c2, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(2 * c2, c3, 1),
            nn.BatchNorm1d(c3),
            nn.ReLU(inplace=True),
            nn.Conv1d(c3, out_dim, 1),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        b, g, s, _ = patches.shape
        x = patches.reshape(b * g, s, 3).transpose(2, 1)
        f = self.first_conv(x)  # (BG, c2, S)
        f = torch.cat([f.max(dim=2, keepdim=True).values.expand(-1, -1, s), f], dim=1)
        for layer in self.second_conv:  # = self.second_conv(f), but each layer's input is
            f = layer(f)  # released as soon as its output exists (lower no-grad peak memory)
        # f: (BG, D, S)
        return f.max(dim=2).values.reshape(b, g, self.out_dim)


class PointMAEBackbone(nn.Module):
    """Point-MAE encoder with timm blocks, exposed through the PromptableBackbone protocol.

    Attributes (protocol): ``embed_dim``, ``num_blocks``, ``num_prefix_tokens`` (1: CLS),
    ``blocks`` (``nn.ModuleList`` of timm ``Block``), ``norm`` (the final ``nn.LayerNorm``;
    calling it normalises tokens), ``embed``, ``forward_blocks``, ``pool``, ``identity``.

    Shapes: ``embed`` ``(B, N, 3|6|2)`` -> ``(B, 1 + G, D)``; ``forward_blocks`` ``(B, L, D)`` ->
    ``(B, L, D)``; ``pool`` ``(B, L, D)`` -> ``(B, D)``.
    """

    num_prefix_tokens = 1

    def __init__(self, config: PointMAEConfig | None = None) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        cfg = config if config is not None else PointMAEConfig()
        if not isinstance(cfg, PointMAEConfig):
            raise ConfigError(
                f"PointMAEBackbone: config must be a PointMAEConfig, got {type(cfg).__name__}"
            )
        self.config = cfg
        d = cfg.embed_dim
        self.embed_dim = d
        self.num_blocks = cfg.depth
        self.num_group = cfg.num_group
        self.group_size = cfg.group_size
        self.encoder = PatchEncoder(d, cfg.encoder_channels)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, d))
        self.pos_embed = nn.Sequential(
            nn.Linear(3, cfg.pos_hidden), nn.GELU(), nn.Linear(cfg.pos_hidden, d)
        )
        dpr = [float(v) for v in torch.linspace(0, cfg.drop_path_rate, cfg.depth)]
        self.blocks = nn.ModuleList(
            Block(
                d,
                cfg.num_heads,
                mlp_ratio=float(cfg.mlp_ratio),
                qkv_bias=False,
                drop_path=dpr[i],
                norm_layer=nn.LayerNorm,
            )
            for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(d)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.cls_pos, std=0.02)
        self._context_pos: torch.Tensor | None = None

    # ------------------------------------------------------------------ embedding
    def group(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clouds ``(B, N, 3|6|2)`` -> ``(patches (B, G, S, 3), centers (B, G, 3))`` (validated)."""
        return group_points(x, self.num_group, self.group_size, where="PointMAEBackbone.embed")

    def embed_with_pos(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clouds -> ``(tokens (B, 1 + G, D), pos (B, 1 + G, D))``; the CLS token is first.

        Raises:
            ShapeError: wrong shape, empty clouds, fewer points than ``max(num_group, group_size)``.
            NonFiniteError: NaN / inf coordinates.  InputError: too few distinct points.
        """
        patches, centers = self.group(x)
        tokens = self.encoder(patches)
        b = tokens.shape[0]
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(b, -1, -1), self.pos_embed(centers)], dim=1)
        return tokens, pos

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clouds ``(B, N, 3)`` -> tokens ``(B, 1 + G, D)``; remembers their positions for
        :meth:`forward_blocks` (see the module docstring)."""
        tokens, pos = self.embed_with_pos(x)
        self._context_pos = pos
        return tokens

    # ------------------------------------------------------------------ blocks
    def expand_pos(
        self, pos: torch.Tensor, length: int, prompt_pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Positions ``(B, 1 + G, D)`` for a sequence of ``length`` tokens
        ``[CLS, n prompts, G patches]``: prompts get ``prompt_pos`` (``(1|B, 1|n, D)``) or 0."""
        base = pos.shape[1]
        if length == base:
            return pos
        n = length - base
        if n < 0:
            raise ShapeError(
                f"PointMAEBackbone.forward_blocks: {length} tokens but positions for {base}"
            )
        b, d = pos.shape[0], pos.shape[2]
        if prompt_pos is None:
            mid = pos.new_zeros(b, n, d)
        else:
            mid = prompt_pos.expand(b, n, d)
        return torch.cat([pos[:, :1], mid, pos[:, 1:]], dim=1)

    def forward_blocks(
        self,
        tokens: torch.Tensor,
        start: int = 0,
        end: int | None = None,
        *,
        prefix: Mapping[int, torch.Tensor] | None = None,
        pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run blocks ``[start, end)``: ``x = block(x + pos)`` (Point-MAE ``TransformerEncoder``).

        Args:
            tokens: ``(B, L, D)``, CLS first, optional prompt tokens right after it.
            start, end: block range (``end=None``: to the last block).
            prefix: key/value prefixes are not supported by this backbone (ConfigError).
            pos: positions ``(B, L, D)`` or ``(B, 1 + G, D)`` (prompts get 0); default: the
                positions of the last :meth:`embed` call.
        """
        where = "PointMAEBackbone.forward_blocks"
        end = self.num_blocks if end is None else end
        if not (is_int(start) and is_int(end)) or not 0 <= start <= end <= self.num_blocks:
            raise ConfigError(
                f"{where}: need 0 <= start <= end <= num_blocks={self.num_blocks}, "
                f"got start={start!r}, end={end!r}"
            )
        if prefix:
            raise ConfigError(f"{where}: key/value prefixes are not supported by Point-MAE")
        check_tensor(tokens, "tokens", rank=3, dims={-1: self.embed_dim}, where=where)
        if start == end:
            return tokens
        if pos is None:
            pos = self._context_pos
            if pos is None:
                raise InputError(f"{where}: no positions: call embed() first or pass pos=(B, L, D)")
        check_tensor(pos, "pos", rank=3, dims={-1: self.embed_dim}, finite=False, where=where)
        if pos.shape[0] != tokens.shape[0]:
            raise ShapeError(
                f"{where}: positions are for a batch of {pos.shape[0]} but tokens have "
                f"{tokens.shape[0]} (pass pos= explicitly when reusing tokens)"
            )
        pos = self.expand_pos(pos, tokens.shape[1])
        x = tokens
        for i in range(start, end):
            x = self.blocks[i](x + pos)
        return x

    # ------------------------------------------------------------------ heads
    def pool(self, tokens: torch.Tensor, num_prompt_tokens: int = 0) -> torch.Tensor:
        """Normed tokens ``(B, L, D)`` -> ``(B, D)``: max / mean over the patch tokens (after
        the CLS and ``num_prompt_tokens`` prompts) or the CLS token (``config.pool``)."""
        check_tensor(tokens, "tokens", rank=3, where="PointMAEBackbone.pool")
        mode = self.config.pool
        if mode == PoolMode.TOKEN:
            return tokens[:, 0]
        patches = tokens[:, 1 + num_prompt_tokens :]
        if mode == PoolMode.AVG:
            return patches.mean(dim=1)
        return patches.max(dim=1).values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clouds ``(B, N, 3)`` -> pooled features ``(B, D)``."""
        tokens, pos = self.embed_with_pos(x)
        return self.pool(self.norm(self.forward_blocks(tokens, pos=pos)))

    def identity(self) -> dict[str, Any]:
        """Class, sizes and weight fingerprint (stored in prompt checkpoints)."""
        from polyprompt.core.freezing import module_identity

        ident = module_identity(self)
        ident["config"] = self.config.to_dict()
        return ident

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        c = self.config
        return f"dim={c.embed_dim}, depth={c.depth}, heads={c.num_heads}, groups={c.num_group}x{c.group_size}"


def _init_weights(m: nn.Module) -> None:
    """Official ``_init_weights``: trunc-normal(0.02) linear / conv weights, zero biases."""
    if isinstance(m, (nn.Linear, nn.Conv1d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm1d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
