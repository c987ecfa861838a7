"""MVP: mask and visual prompt tuning for online continual learning (and DualPrompt / L2P).

Moon et al., "Online Class Incremental Learning on Stochastic Blurry Task Boundary via Mask
and Visual Prompt Tuning", ICCV 2023 (Sec. 4); official ``KHU-AGI/Si-Blurry``
``models/mvp.py`` (model) and ``methods/mvp.py`` (losses). Written against the core's
:class:`~polyprompt.core.backbones.protocol.PromptableBackbone` with the core's prompt blocks:

* **query**: the frozen backbone's CLS token of the un-prompted image (no gradient;
  ``models/mvp.py`` ``forward_features``: after all blocks but the last, no norm;
  DualPrompt / L2P: after all blocks and the norm), optionally passed in (``query=``);
* **DualPrompt prompts** (Wang et al., ECCV 2022): a shared *general* prompt
  (:class:`~polyprompt.core.DeepPrompt`, prefix mode, length 5 at blocks 0-1) and a pool of
  10 *expert* prompts with keys (:class:`~polyprompt.core.PromptPool`, prefix, length 20 at
  blocks 2-4), top-1 key match (MVP: distances scaled by the selection count, in training and
  evaluation; DualPrompt: plain distances); prefix tuning through
  ``backbone.forward_blocks(prefix=...)``;
* **instance-wise logit mask**: a learnable mask row per key (init -1); the logits of the
  sample are multiplied by ``2 * sigmoid(mask[selected key])``;
* **seen-class mask**: logits of classes not seen in the stream so far are ``-inf``
  (``methods/_trainer.py`` ``self.mask``), passed as ``seen=`` by the learner;
* **contrastive prompt loss** on the keys (:func:`key_contrastive_loss`);
* **adaptive feature scaling** (AFS): ``f / (1 - cos(W_y, f) + margin)`` before the head
  during training (``methods/mvp.py`` ``_get_compensation``);
* **gradient-similarity focal loss** (GSF): ``s_i = 1 - cos(g_i, G)`` with ``g_i`` the true
  per-sample gradient of the sample's CE w.r.t. the head row of its class (``torch.func``
  ``vmap(grad)``) and ``G`` the same row of the batch-mean gradient; the loss is
  ``mean_i((1 - a) * CE_i + a * s_i^g * CE_i)`` (a = 0.5, g = 2).

Official-code bug not copied: ``methods/mvp.py`` ``loss_fn`` multiplies the *batch-mean*
CE by the per-sample scores (``F.nll_loss`` is already reduced), so the focal weight acts on
the batch mean; here every sample's own CE is weighted (``focal_on_batch_mean=True`` gives
the official behaviour).

Example::

    >>> import torch
    >>> from polyprompt.core import TimmViTAdapter
    >>> bb = TimmViTAdapter.from_name("vit_tiny_patch16_224", img_size=32, depth=5, in_chans=1)
    >>> model = MVP(bb, MVPConfig(num_classes=10))
    >>> out = model(torch.randn(4, 1, 32, 32))
    >>> out.logits.shape, out.key_index.shape           # (B, C), (B, top_k)
    (torch.Size([4, 10]), torch.Size([4, 1]))
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import ConfigError, InputError
from polyprompt.core.freezing import freeze_backbone
from polyprompt.core.methods.base import PromptMethod
from polyprompt.core.prompts.deep import DeepPrompt
from polyprompt.core.prompts.pool import PromptPool
from polyprompt.core.registry import register_method
from polyprompt.core.validation import check_tensor

__all__ = [
    "L2P",
    "MVP",
    "DualPrompt",
    "DualPromptConfig",
    "L2PConfig",
    "MVPConfig",
    "MVPOutput",
    "PromptFunc",
    "key_contrastive_loss",
    "per_sample_head_grads",
]


class PromptFunc(str, Enum):
    """How the expert / general prompts enter the blocks."""

    PREFIX = "prefix"  # prefix tuning (DualPrompt, MVP)
    PREPEND = "prepend"  # prompt tuning: tokens prepended after the CLS token (L2P)


def _ints(v: Any, name: str, cfg: PromptConfig) -> tuple[int, ...]:
    try:
        out = tuple(int(i) for i in v)
    except TypeError:
        raise ConfigError(f"{type(cfg).__name__}.{name}: must be a sequence of ints") from None
    cfg.require(all(i >= 0 for i in out), name, "block indices must be >= 0")
    cfg.require(len(set(out)) == len(out), name, "repeated block index")
    return out


@dataclass
class MVPConfig(PromptConfig):
    """MVP hyper-parameters (paper / ``scripts/mvp.sh`` defaults).

    Args:
        num_classes: size of the head (all classes the stream may contain).
        g_layers, g_length: blocks and length of the shared (general) prefix prompt.
        e_layers, e_length: blocks and length of the expert prefix prompts.
        pool_size: number of expert prompts and keys.
        top_k: experts selected per sample (1 in MVP / DualPrompt).
        prompt_func: ``prefix`` (MVP/DualPrompt) or ``prepend`` (L2P: only ``e_layers=(0,)``).
        prompt_init: ``uniform`` (``U(-1, 1)``, the DualPrompt / L2P init of the Si-Blurry code;
            default, so that MVP and its DualPrompt baseline differ only in MVP's components)
            or ``random`` (``N(0, prompt_init_std^2)``; ``models/mvp.py`` uses ``torch.randn``).
        prompt_init_std: std of the random init (1.0 = ``torch.randn``).
        frequency_penalty: frequency-scaled key distances for the selection (training; see
            ``penalty_in_eval``).
        penalty_in_eval: also at evaluation (default for MVP: ``models/mvp.py``
            ``forward_features`` scales the distances by ``count + 1`` in training *and*
            evaluation, so the expert, prompt and logit-mask row a test sample gets are chosen
            by the same rule they were trained with; DualPrompt / L2P apply their diversity
            penalty in training only, ``models/dualprompt.py``).
        query_last_layer: the key-match query is the CLS token after *all* blocks and the
            final norm (DualPrompt / L2P, ``models/dualprompt.py``); ``False`` (MVP default):
            the raw CLS token after all blocks but the last, no norm, as ``models/mvp.py``
            ``forward_features`` runs with ``use_last_layer`` off (``scripts/mvp.sh`` does not
            pass ``--use_last_layer``).
        use_mask: instance-wise logit mask. mask_init: its initial value (-1).
        use_contrastive: contrastive key loss instead of the plain pull ``1 - cos``.
        contrastive_temperature: temperature of the contrastive key loss.
        key_loss_weight: weight of the key loss (``lambd`` = 1 officially).
        use_afs: adaptive feature scaling. margin: its margin (0.5).
        use_gsf: gradient-similarity focal loss. alpha, gamma: its weights (0.5, 2).
        focal_on_batch_mean: reproduce the official bug (focal weight on the batch-mean CE).
    """

    num_classes: int = 10
    g_layers: tuple[int, ...] = (0, 1)
    g_length: int = 5
    e_layers: tuple[int, ...] = (2, 3, 4)
    e_length: int = 20
    pool_size: int = 10
    top_k: int = 1
    prompt_func: PromptFunc = PromptFunc.PREFIX
    prompt_init: str = "uniform"
    prompt_init_std: float = 1.0
    frequency_penalty: bool = True
    penalty_in_eval: bool = True
    query_last_layer: bool = False
    use_mask: bool = True
    mask_init: float = -1.0
    use_contrastive: bool = True
    contrastive_temperature: float = 0.1
    key_loss_weight: float = 1.0
    use_afs: bool = True
    margin: float = 0.5
    use_gsf: bool = True
    alpha: float = 0.5
    gamma: float = 2.0
    focal_on_batch_mean: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        self.g_layers = _ints(self.g_layers, "g_layers", self)
        self.e_layers = _ints(self.e_layers, "e_layers", self)
        r(
            isinstance(self.num_classes, int) and self.num_classes >= 2,
            "num_classes",
            "must be an int >= 2",
        )
        for name in ("g_length", "e_length", "pool_size", "top_k"):
            v = getattr(self, name)
            r(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                name,
                "must be an int >= 1",
            )
        r(self.top_k <= self.pool_size, "top_k", "must be <= pool_size")
        r(bool(self.e_layers), "e_layers", "needs at least one block")
        r(not set(self.g_layers) & set(self.e_layers), "e_layers", "overlaps g_layers")
        if self.prompt_func is PromptFunc.PREPEND:
            r(self.e_layers == (0,), "e_layers", "prepend prompts (L2P) enter at block 0 only")
            r(not self.g_layers, "g_layers", "prepend mode has no general prompt")
        r(self.prompt_init in ("random", "uniform"), "prompt_init", "must be random|uniform")
        for name in ("prompt_init_std", "contrastive_temperature"):
            r(float(getattr(self, name)) > 0, name, "must be > 0")
        for name in ("key_loss_weight", "margin", "gamma"):
            r(float(getattr(self, name)) >= 0, name, "must be >= 0")
        r(0.0 <= float(self.alpha) <= 1.0, "alpha", "must be in [0, 1]")


@dataclass
class DualPromptConfig(MVPConfig):
    """DualPrompt in the Si-Blurry code: MVP's prompts without mask, contrastive keys, AFS, GSF.

    Key selection by plain distance, no frequency penalty: ``models/dualprompt.py`` builds its
    ``Prompt`` pools without ``_diversed_selection`` (default ``False``).
    """

    frequency_penalty: bool = False
    penalty_in_eval: bool = False
    query_last_layer: bool = True
    use_mask: bool = False
    use_contrastive: bool = False
    use_afs: bool = False
    use_gsf: bool = False


@dataclass
class L2PConfig(MVPConfig):
    """L2P (Wang et al., CVPR 2022): pool of 10 length-5 prompts, top-5, prepended at the input.

    Diversified selection in training only (``models/l2p.py``: ``_diversed_selection=True``,
    ``match * normalize(frequency)`` when ``self.training``).
    """

    g_layers: tuple[int, ...] = ()
    e_layers: tuple[int, ...] = (0,)
    e_length: int = 5
    top_k: int = 5
    prompt_func: PromptFunc = PromptFunc.PREPEND
    prompt_init: str = "uniform"
    penalty_in_eval: bool = False
    query_last_layer: bool = True
    use_mask: bool = False
    use_contrastive: bool = False
    use_afs: bool = False
    use_gsf: bool = False


@dataclass
class MVPOutput:
    """Forward result.

    Attributes:
        logits: masked logits ``(B, C)`` (``-inf`` at unseen classes when ``seen`` is given).
        features: pooled prompted features ``(B, D)`` (before the head, unscaled).
        mask: instance-wise logit multiplier ``(B, C)`` (ones without the mask).
        key_index: selected expert prompts ``(B, top_k)``.
        key_loss: scalar key loss (contrastive or ``1 - cos``).
        query: the frozen query ``(B, D)``.
    """

    logits: torch.Tensor
    features: torch.Tensor
    mask: torch.Tensor
    key_index: torch.Tensor
    key_loss: torch.Tensor
    query: torch.Tensor


def key_contrastive_loss(
    query: torch.Tensor,
    keys: torch.Tensor,
    index: torch.Tensor,
    frequency: torch.Tensor | None = None,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Contrastive prompt loss on the keys (MVP Sec. 4, "contrastive visual prompt tuning").

    InfoNCE over the pool: the selected key is the positive, the other keys negatives, with
    cosine similarities divided by ``temperature`` and the negatives' distances scaled by the
    selection frequency (``frequency / frequency.sum() * M``) as in the selection, so that
    frequently used keys are pushed less. ``query`` is detached (frozen backbone).

    Shapes: query ``(B, D)``, keys ``(M, D)``, index ``(B,)`` -> scalar.
    (The official ``models/mvp.py`` version reads ``self.model_without_ddp`` inside the model and
    cannot run; this is the paper's description written as InfoNCE.)
    """
    sim = F.cosine_similarity(query.detach().unsqueeze(1), keys.unsqueeze(0), dim=-1)  # (B, M)
    dist = 1.0 - sim
    if frequency is not None:
        w = frequency / frequency.sum() * frequency.numel()
        dist = dist * w.to(dist.dtype)
    logits = -dist / temperature
    return F.cross_entropy(logits, index)


def per_sample_head_grads(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    features: torch.Tensor,
    targets: torch.Tensor,
    multiplier: torch.Tensor,
    additive: torch.Tensor,
) -> torch.Tensor:
    """True per-sample gradients of ``CE(((f @ W.T + b) * m) + a, y)`` w.r.t. ``W``: ``(B, C, D)``.

    Computed with ``torch.func.vmap(torch.func.grad(...))`` over the batch (no Python loop, no
    ``retain_graph`` backward per sample as in ``methods/mvp.py`` ``_compute_grads``).
    """
    from torch.func import grad, vmap

    def one(w: torch.Tensor, f: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        logit = f @ w.T
        if bias is not None:
            logit = logit + bias
        logit = logit * m + additive
        return F.cross_entropy(logit.unsqueeze(0), y.unsqueeze(0))

    return vmap(grad(one), in_dims=(None, 0, 0, 0))(weight, features, targets, multiplier)


@register_method("mvp")
class MVP(PromptMethod):
    """MVP over a frozen :class:`PromptableBackbone` (see the module docstring).

    Trainable: general prompt, expert pool (prompts + keys), logit masks, linear head.
    ``forward(x, seen=None, query=None)`` -> :class:`MVPOutput`; ``loss(out, y, seen)``
    gives the training loss of one update (GSF, AFS, key loss as configured).
    """

    config_class = MVPConfig

    def __init__(self, backbone: nn.Module, config: MVPConfig) -> None:
        super().__init__(backbone, config)
        freeze_backbone(backbone)
        nb, dim = int(backbone.num_blocks), int(backbone.embed_dim)
        bad = [i for i in (*config.g_layers, *config.e_layers) if i >= nb]
        if bad:
            raise ConfigError(f"{type(self).__name__}: blocks {bad} out of range for {nb} blocks")
        self.general = (
            DeepPrompt(
                nb,
                config.g_length,
                dim,
                mode="prefix",
                layers=list(config.g_layers),
                init_std=config.prompt_init_std,
            )
            if config.g_layers and config.prompt_func is PromptFunc.PREFIX
            else None
        )
        if self.general is not None and config.prompt_init == "uniform":
            nn.init.uniform_(self.general.weight, -1.0, 1.0)
        prefix = config.prompt_func is PromptFunc.PREFIX
        self.pool = PromptPool(
            config.pool_size,
            config.e_length,
            dim,
            top_k=config.top_k,
            prefix_layers=len(config.e_layers) if prefix else None,
            frequency_penalty=config.frequency_penalty,
            penalty_in_eval=config.penalty_in_eval,
            init=config.prompt_init,
            init_std=config.prompt_init_std,
        )
        self.logit_mask = nn.Parameter(
            torch.full((config.pool_size, config.num_classes), float(config.mask_init))
        )
        self.logit_mask.requires_grad_(config.use_mask)
        self.head = nn.Linear(dim, config.num_classes)

    # -- helpers -------------------------------------------------------------
    def train(self, mode: bool = True) -> MVP:  # the backbone always stays in eval mode
        super().train(mode)
        self.backbone.eval()
        return self

    def _seen_additive(self, seen: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        c = self.config.num_classes
        if seen is None:
            return like.new_zeros(c)
        check_tensor(seen, "seen", rank=1, dims={0: c}, finite=False, where="MVP.forward")
        if seen.dtype != torch.bool:
            raise InputError(f"MVP.forward: `seen` must be a bool mask ({c},), got {seen.dtype}")
        if not bool(seen.any()):
            raise InputError("MVP.forward: `seen` marks no class as seen")
        return torch.where(seen.to(like.device), 0.0, float("-inf")).to(like.dtype)

    @torch.no_grad()
    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen CLS feature of the un-prompted images ``(B, D)`` (the key-match query;
        see ``MVPConfig.query_last_layer``)."""
        bb = self.backbone
        if self.config.query_last_layer or bb.num_blocks < 2:
            return bb.pool(bb.norm(bb.forward_blocks(bb.embed(x))))
        return bb.pool(bb.forward_blocks(bb.embed(x), 0, bb.num_blocks - 1))

    def forward_features(
        self, x: torch.Tensor, query: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Any]:
        """Prompted features ``(B, D)`` and the pool output."""
        where = f"{type(self).__name__}.forward"
        check_tensor(x, "x", rank=4, min_size={0: 1}, where=where)
        bb = self.backbone
        tokens = bb.embed(x)
        if query is None:
            query = self.query(x)
        check_tensor(query, "query", rank=2, dims={0: x.shape[0], 1: bb.embed_dim}, where=where)
        sel = self.pool(query.detach())
        b = x.shape[0]
        cfg = self.config
        if cfg.prompt_func is PromptFunc.PREPEND:
            prompts = sel.prompts.reshape(b, -1, bb.embed_dim)  # (B, k*L, D)
            p = bb.num_prefix_tokens
            tokens = torch.cat([tokens[:, :p], prompts, tokens[:, p:]], dim=1)
            feats = bb.pool(bb.norm(bb.forward_blocks(tokens)))
            return feats, sel
        prefix: dict[int, torch.Tensor] = {}
        if self.general is not None:
            prefix.update(self.general.as_dict(b))
        e = sel.prompts  # (B, k, m, 2, L, D): k selected prompts concatenated along L
        for j, layer in enumerate(cfg.e_layers):
            pj = e[:, :, j]  # (B, k, 2, L, D)
            prefix[layer] = pj.permute(0, 2, 1, 3, 4).reshape(b, 2, -1, bb.embed_dim)
        feats = bb.pool(bb.norm(bb.forward_blocks(tokens, prefix=prefix)))
        return feats, sel

    def instance_mask(self, key_index: torch.Tensor) -> torch.Tensor:
        """``2 * sigmoid(mean of the selected keys' mask rows)`` ``(B, C)``; ones without mask."""
        if not self.config.use_mask:
            return torch.ones(key_index.shape[0], self.config.num_classes, device=key_index.device)
        return 2.0 * torch.sigmoid(self.logit_mask[key_index].mean(1))

    def _key_loss(self, query: torch.Tensor, sel: Any) -> torch.Tensor:
        if self.config.use_contrastive:
            freq = self.pool.frequency if self.config.frequency_penalty else None
            return key_contrastive_loss(
                query, self.pool.keys, sel.indices[:, 0], freq, self.config.contrastive_temperature
            )
        return sel.key_loss

    def forward(
        self,
        x: torch.Tensor,
        seen: torch.Tensor | None = None,
        query: torch.Tensor | None = None,
    ) -> MVPOutput:
        """Images ``(B, C, H, W)`` -> :class:`MVPOutput` (inference logits: no AFS)."""
        check_tensor(x, "x", rank=4, min_size={0: 1}, where=f"{type(self).__name__}.forward")
        if query is None:
            query = self.query(x)
        feats, sel = self.forward_features(x, query)
        mask = self.instance_mask(sel.indices)
        logits = self.head(feats) * mask + self._seen_additive(seen, feats)
        key_loss = self._key_loss(query, sel)
        return MVPOutput(logits, feats, mask, sel.indices, key_loss, query)

    def loss(
        self, out: MVPOutput, targets: torch.Tensor, seen: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss of one update and the logits used for it (``methods/mvp.py`` ``loss_fn``).

        Returns:
            ``(loss, logits)``; ``loss = mean_i w_i * CE_i + key_loss_weight * key_loss``.
        """
        cfg = self.config
        feats = out.features
        add = self._seen_additive(seen, feats)
        y = targets
        if cfg.use_gsf:
            g = per_sample_head_grads(
                self.head.weight.detach(),
                self.head.bias.detach(),
                feats.detach(),
                y,
                out.mask.detach(),
                add,
            )  # (B, C, D)
            rows = torch.arange(y.shape[0], device=y.device)
            sample_g = g[rows, y]  # (B, D): the head row of the sample's class
            batch_g = g.mean(0)[y]  # same row of the batch-mean gradient
            score = 1.0 - F.cosine_similarity(sample_g, batch_g, dim=1)
        if cfg.use_afs:
            w_y = self.head.weight.detach()[y]
            scale = 1.0 - F.cosine_similarity(w_y, feats.detach(), dim=1) + cfg.margin
            feats = feats / scale.unsqueeze(1)
        logits = self.head(feats) * out.mask + add
        ce = F.cross_entropy(logits, y, reduction="none")
        if cfg.use_gsf:
            base = ce.mean() if cfg.focal_on_batch_mean else ce
            ce = (1.0 - cfg.alpha) * base + cfg.alpha * score.detach() ** cfg.gamma * base
        loss = ce.mean() + cfg.key_loss_weight * out.key_loss
        return loss, logits


@register_method("dualprompt")
class DualPrompt(MVP):
    """DualPrompt (Wang et al., ECCV 2022) as Si-Blurry runs it: MVP without its additions."""

    config_class = DualPromptConfig


@register_method("l2p")
class L2P(MVP):
    """L2P (Wang et al., CVPR 2022): key-matched prompt pool prepended to the input tokens."""

    config_class = L2PConfig
