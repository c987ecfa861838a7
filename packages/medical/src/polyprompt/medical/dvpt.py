"""DVPT: Dynamic Visual Prompt Tuning (He et al., arXiv 2307.09787; Neural Networks 185, 2025).

A frozen ViT; in its blocks a lightweight module, **shared by ``k`` consecutive blocks**,
runs parallel to the frozen MLP on the frozen features ``h`` (the block's input after its
attention residual)::

    h   = x + attn(norm1(x))                             # frozen
    out = h + mlp(norm2(h)) + DVPT(h)                    # frozen MLP, trainable DVPT

Two variants (:class:`DVPTVariant`):

``"paper"`` (default; the paper's Sec. 3 / Fig. 2 as its abstract states it):

1. **bottleneck down-projection** of the frozen features ``z = act(W_down h)``, ``(B, L, r)``
   ("the frozen features are transformed by a lightweight bottleneck layer to learn the
   domain-specific distribution");
2. ``M`` **learnable prompts** ``P`` ``(M, r)`` act as **queries** and cross-attend to the
   transformed features, ``D = softmax(P z^T / sqrt(r)) z``, ``(B, M, r)``: *dynamic*,
   sample-specific prompts;
3. the features read the dynamic prompts back, ``u = softmax(z D^T / sqrt(r)) D`` ``(B, L, r)``
   (a parameter-free attention, our reading of how ``M`` prompt outputs are "aggregated with
   the frozen features" of ``L`` tokens; the paper body is not readable here);
4. **up-projection** ``W_up u`` times a learnable gate initialised to 0 (from the official
   code's ``prompt_gate``; the module is a no-op at init), **added** to the frozen features.

``"official"`` (NKUhealong/DVPT ``code/model.py``, the CLIP ``VisionTransformer`` used by
``DVPT_vit_train.py``): ``num_prompts`` (50) **input prompt tokens** with their own
learnable position embedding (``prompt_token``, ``prompt_positional_embedding``) join the
sequence; ``share_MLP`` -- ``d -> 20 -> d``, QuickGELU, zero-initialised gate, the core's
:class:`~polyprompt.core.prompts.Bottleneck` -- shared by every 3 blocks (``if i % 3 == 0``)
runs parallel to the MLP; the output is the mean of the final-normed CLS and prompt
tokens (``x = ln_post(x[:, 0:num+1]).mean(1)``). The code also computes a
prompt-to-token attention in ``ResidualAttentionBlock.forward`` but never uses its result,
so the official variant has no cross-attention. (The official sequence is ``[prompts, CLS,
patches]``; here ``[CLS, prompts, patches]``, the same computation since attention is
permutation-equivariant and positions are added explicitly.)

Training (official ``DVPT_vit_train.py``): AdamW, lr 2e-5 (ViT-B/16, batch 50), 60 epochs,
5 warm-up epochs then half-cycle cosine, gradient clipping 1.0, cross-entropy, model
selection by the validation **quadratic weighted kappa** -- use the core ``Trainer`` with
``scheduler="cosine"``, ``warmup_epochs``, ``grad_clip=1.0`` and
``metric="quadratic_kappa"``.

Example (images ``(B, C, H, W)`` -> logits ``(B, num_classes)``)::

    >>> import torch
    >>> from timm.models.vision_transformer import VisionTransformer
    >>> from polyprompt.core import create
    >>> from polyprompt.medical.backbones import MedicalViTAdapter
    >>> vit = VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=64, depth=6,
    ...                         num_heads=4, num_classes=0)
    >>> model = create("dvpt", MedicalViTAdapter(vit), num_classes=2, num_prompts=8, hidden=4)
    >>> model(torch.rand(3, 1, 32, 32)).shape
    torch.Size([3, 2])
    >>> len(model.dvpt), model.module_index(4)     # 6 blocks, one module per 3 blocks
    (2, 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from polyprompt.core.config import is_int
from polyprompt.core.errors import ConfigError, InputError
from polyprompt.core.methods.classify import (
    ClassifierConfig,
    FrozenBackboneMixin,
    PromptClassifier,
    insert_prompt,
    pool_tokens,
)
from polyprompt.core.prompts.bottleneck import Bottleneck, BottleneckActivation, make_activation
from polyprompt.core.registry import register_method
from polyprompt.core.validation import check_tensor
from polyprompt.medical.backbones import block_forward

__all__ = ["DVPT", "DVPTConfig", "DVPTVariant", "DynamicPromptModule", "default_hidden"]


class DVPTVariant(str, Enum):
    """``PAPER``: bottleneck + prompts-as-queries cross-attention (default).
    ``OFFICIAL``: input prompt tokens + zero-gated bottleneck (the released code)."""

    PAPER = "paper"
    OFFICIAL = "official"


def default_hidden(dim: int) -> int:
    """Bottleneck width when ``hidden=None``: ``min(20, max(4, dim // 16))`` -- 20 for ViT-B
    (768, the official ``latent_dim``), proportionally smaller for small backbones."""
    return min(20, max(4, dim // 16))


@dataclass
class DVPTConfig(ClassifierConfig):
    """Config of :class:`DVPT`.

    Args:
        variant: :class:`DVPTVariant` ``"paper"`` (default) or ``"official"``.
        num_prompts: learnable prompts per module (paper variant; default 10) or input
            prompt tokens (official variant; default 50, ``self.num = 50``).
        hidden: bottleneck width ``r`` (``None``: :func:`default_hidden`).
        share_every: consecutive blocks that share one module (1 = one module per block;
            the official code shares one module per 3 blocks).
        first_block: modules sit in blocks ``[first_block, num_blocks)``; the frozen blocks
            below need no gradient, so their output can be cached (paper variant).
        activation: bottleneck activation (QuickGELU as in the official ``share_MLP``).
        gate_init: initial value of each module's learnable output gate (0 = no-op at init).
        dropout: dropout on the bottleneck activations.
        prompt_init_std: std of the paper variant's prompt init (official: ``randn``, std 1).
    """

    variant: DVPTVariant = DVPTVariant.PAPER
    num_prompts: int | None = None
    hidden: int | None = None
    share_every: int = 3
    first_block: int = 0
    activation: BottleneckActivation = BottleneckActivation.QUICK_GELU
    gate_init: float = 0.0
    dropout: float = 0.0
    prompt_init_std: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        if self.num_prompts is None:
            self.num_prompts = 50 if self.variant == DVPTVariant.OFFICIAL else 10
        r(is_int(self.num_prompts) and self.num_prompts >= 1, "num_prompts", "must be an int >= 1")
        r(
            self.hidden is None or (is_int(self.hidden) and self.hidden >= 1),
            "hidden",
            "must be None or an int >= 1",
        )
        r(is_int(self.share_every) and self.share_every >= 1, "share_every", "must be an int >= 1")
        r(is_int(self.first_block) and self.first_block >= 0, "first_block", "must be an int >= 0")
        r(
            isinstance(self.gate_init, (int, float))
            and not isinstance(self.gate_init, bool)
            and math.isfinite(self.gate_init),
            "gate_init",
            "must be a finite number",
        )
        r(
            isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
            "dropout",
            "must be in [0, 1)",
        )
        r(
            isinstance(self.prompt_init_std, (int, float)) and self.prompt_init_std > 0,
            "prompt_init_std",
            "must be > 0",
        )


class DynamicPromptModule(nn.Module):
    """The paper's DVPT module: down-projection, prompts-as-queries cross-attention,
    read-out by the tokens, up-projection, gate (see the module docstring, steps 1-4).

    Args:
        dim: token width ``d``; hidden: bottleneck width ``r``; num_prompts: ``M``.

    Shapes: ``forward(h (B, L, d))`` -> ``(B, L, d)``; ``dynamic_prompts(h)`` -> ``(B, M, r)``.

    Example::

        >>> m = DynamicPromptModule(dim=64, hidden=8, num_prompts=4)
        >>> h = torch.randn(2, 17, 64)
        >>> m(h).abs().max().item()                  # gate starts at 0: a no-op
        0.0
        >>> m.dynamic_prompts(h).shape               # sample-specific prompts
        torch.Size([2, 4, 8])
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        num_prompts: int,
        *,
        activation: BottleneckActivation | str = BottleneckActivation.QUICK_GELU,
        gate_init: float = 0.0,
        dropout: float = 0.0,
        prompt_init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.dim, self.hidden, self.num_prompts = int(dim), int(hidden), int(num_prompts)
        self.down = nn.Linear(self.dim, self.hidden)
        self.act = make_activation(activation)
        self.prompts = nn.Parameter(torch.randn(self.num_prompts, self.hidden) * prompt_init_std)
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(self.hidden, self.dim)
        self.gate = nn.Parameter(torch.tensor(float(gate_init)))
        self.scale = self.hidden**-0.5

    def _transform(self, h: torch.Tensor) -> torch.Tensor:
        return self.act(self.down(h))

    def dynamic_prompts(self, h: torch.Tensor) -> torch.Tensor:
        """Prompts after cross-attending to the down-projected features ``(B, M, r)``."""
        z = self._transform(h)
        return self._cross(z)[0]

    def _cross(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.prompts.to(z.dtype)
        attn = torch.softmax(torch.einsum("mr,blr->bml", q, z) * self.scale, dim=-1)
        return attn @ z, attn  # (B, M, r), (B, M, L)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self._transform(h)  # (B, L, r)
        dyn, _ = self._cross(z)  # (B, M, r): dynamic, sample-specific prompts
        read = torch.softmax(z @ dyn.transpose(1, 2) * self.scale, dim=-1)  # (B, L, M)
        u = read @ dyn  # (B, L, r)
        return self.up(self.drop(u)) * self.gate

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}, num_prompts={self.num_prompts}"


@register_method("dvpt")
class DVPT(FrozenBackboneMixin, PromptClassifier):
    """Dynamic Visual Prompt Tuning on a frozen ``PromptableBackbone`` (timm or MONAI ViT).

    Trains the DVPT modules (and, for the official variant, the input prompts and their
    position embedding) plus the linear head; the backbone stays frozen and in eval mode.

    Attributes:
        dvpt: ``nn.ModuleList`` of the shared modules (:class:`DynamicPromptModule` or
            :class:`~polyprompt.core.prompts.Bottleneck`).
        prompt, prompt_pos: official variant's input prompt tokens ``(1, M, d)``.
        cache_point: tokens entering this block can come from a
            :class:`~polyprompt.core.FeatureCache` (``first_block`` for the paper variant;
            0, the embedding output, for the official one).
    """

    config_class = DVPTConfig

    def __init__(self, backbone: nn.Module, config: DVPTConfig) -> None:
        super().__init__(backbone, config)
        from polyprompt.core.freezing import freeze_backbone

        freeze_backbone(backbone)
        self.backbone.eval()
        d, nb = int(backbone.embed_dim), int(backbone.num_blocks)
        if config.first_block >= nb:
            raise InputError(
                f"DVPT: first_block={config.first_block} must be < the backbone's {nb} blocks"
            )
        self.hidden = config.hidden if config.hidden is not None else default_hidden(d)
        n_modules = math.ceil((nb - config.first_block) / config.share_every)
        self.official = config.variant == DVPTVariant.OFFICIAL
        modules: list[nn.Module] = []
        for _ in range(n_modules):
            if self.official:
                modules.append(
                    Bottleneck(
                        d,
                        self.hidden,
                        activation=config.activation,
                        scale="learnable",
                        gate_init=config.gate_init,
                        dropout=config.dropout,
                    )
                )
            else:
                modules.append(
                    DynamicPromptModule(
                        d,
                        self.hidden,
                        config.num_prompts,
                        activation=config.activation,
                        gate_init=config.gate_init,
                        dropout=config.dropout,
                        prompt_init_std=config.prompt_init_std,
                    )
                )
        self.dvpt = nn.ModuleList(modules)
        self.prompt: nn.Parameter | None = None
        self.prompt_pos: nn.Parameter | None = None
        if self.official:
            m = int(config.num_prompts)
            self.prompt = nn.Parameter(torch.randn(1, m, d))  # official: torch.randn
            self.prompt_pos = nn.Parameter(torch.randn(m, d) * d**-0.5)  # scale * randn
            self.cache_point = 0
        else:
            self.cache_point = int(config.first_block)

    # ---- structure ---------------------------------------------------------
    def module_index(self, block: int) -> int | None:
        """Index into :attr:`dvpt` of the module serving ``block`` (``None``: no module)."""
        first = self.config.first_block
        if block < first:
            return None
        return (block - first) // self.config.share_every

    @property
    def num_prompt_tokens(self) -> int:
        """Prompt tokens in the sequence (official variant), 0 for the paper variant."""
        return int(self.config.num_prompts) if self.official else 0

    # ---- forward -----------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._dvpt_features(self.backbone.embed(x), 0)

    def _forward_tokens(self, tokens: torch.Tensor, start_block: int) -> torch.Tensor:
        return self.forward_head(self._dvpt_features(tokens, start_block))

    def _cache_reason(self) -> str:
        return "DVPT's modules (and the official variant's input prompts) sit above it"

    def _dvpt_features(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        bb = self.backbone
        p = int(getattr(bb, "num_prefix_tokens", 0))
        m = 0
        if self.official:
            assert self.prompt is not None and self.prompt_pos is not None
            prompt = (self.prompt + self.prompt_pos.unsqueeze(0)).to(tokens.dtype)
            tokens = insert_prompt(tokens, prompt.expand(tokens.shape[0], -1, -1), p)
            m = prompt.shape[1]
        first = max(start, self.config.first_block)
        x = bb.forward_blocks(tokens, start, first) if first > start else tokens
        for i in range(first, int(bb.num_blocks)):
            j = self.module_index(i)
            x = block_forward(bb.blocks[i], x, self.dvpt[j] if j is not None else None)
        x = bb.norm(x)
        if self.official:
            # official: ln_post(x[:, 0:num + 1]).mean(1) -- CLS (if any) and prompt tokens
            return x[:, : p + m].mean(dim=1)
        return pool_tokens(bb, x, 0)

    def dynamic_prompts(self, x: torch.Tensor, block: int | None = None) -> torch.Tensor:
        """Sample-specific prompts ``(B, M, r)`` of the paper variant's module at ``block``
        (default: the last block), for inspection."""
        if self.official:
            raise ConfigError("DVPT.dynamic_prompts: only the paper variant has dynamic prompts")
        check_tensor(x, "x", min_size={0: 1}, where="DVPT.dynamic_prompts")
        bb, nb = self.backbone, int(self.backbone.num_blocks)
        block = nb - 1 if block is None else block
        j = self.module_index(block) if 0 <= block < nb else None
        if j is None:
            raise InputError(f"DVPT.dynamic_prompts: block {block} has no DVPT module")
        tokens = bb.embed(x)
        first = self.config.first_block
        xx = bb.forward_blocks(tokens, 0, first)
        for i in range(first, block):
            k = self.module_index(i)
            xx = block_forward(bb.blocks[i], xx, self.dvpt[k] if k is not None else None)
        blk = bb.blocks[block]
        # the features the module sees: after the block's attention residual
        captured: list[torch.Tensor] = []
        block_forward(blk, xx, lambda h: captured.append(h) or torch.zeros_like(h))
        module = self.dvpt[j]
        assert isinstance(module, DynamicPromptModule)
        return module.dynamic_prompts(captured[0])

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"variant={c.variant.value}, modules={len(self.dvpt)} (share_every={c.share_every}, "
            f"first_block={c.first_block}), hidden={self.hidden}, num_prompts={c.num_prompts}, "
            f"num_classes={c.num_classes}"
        )
