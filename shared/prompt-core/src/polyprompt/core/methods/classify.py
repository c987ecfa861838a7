"""Classification baselines every modality reuses: linear probe, full fine-tuning, VPT.

All three are written once against :class:`~polyprompt.core.backbones.PromptableBackbone`
(``embed`` / ``forward_blocks`` / ``norm`` / ``pool``) and end in a linear head::

    linear_probe   frozen backbone          -> pool(norm(tokens)) -> head      (head trains)
    full_finetune  trainable backbone       -> pool(norm(tokens)) -> head      (all trains)
    vpt            frozen backbone + prompts [CLS, P1..Pn, patches]  -> head   (prompts + head)

VPT follows Jia et al., *Visual Prompt Tuning*, ECCV 2022 (official code:
``KMnP/vpt``, ``src/models/vit_prompt/vit.py``, ``PromptedTransformer``):

* the ``n`` prompt tokens go right after the prefix (CLS / register) tokens;
* **shallow**: one :class:`~polyprompt.core.prompts.soft.SoftPrompt` inserted once after ``embed``;
* **deep**: a :class:`~polyprompt.core.prompts.deep.DeepPrompt` with one prompt per block; before
  block ``i > 0`` the previous block's prompt *outputs are discarded* and replaced by block ``i``'s
  own prompt (``forward_deep_prompt`` in the official file).  With ``deep_layers=k`` only blocks
  ``0..k-1`` get a prompt; later blocks keep the propagated prompt outputs, exactly as the
  official loop does when ``i > deep_prompt_embeddings.shape[0]``;
* init ``"xavier"``: ``uniform(-v, v)`` with ``v = sqrt(6 / (3 * patch * patch + d))``
  (``_init_prompt`` in the official file; ``3`` is the number of input channels);
* for ``'avg'`` pooling the prompt tokens are excluded from the mean (``pool(..., num_prompt_tokens=n)``).

Example (shapes: images ``(B, C, H, W)`` -> logits ``(B, num_classes)``)::

    >>> import torch
    >>> from timm.models.vision_transformer import VisionTransformer
    >>> from polyprompt.core import TimmViTAdapter, create
    >>> vit = VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=64, depth=3,
    ...                         num_heads=4, num_classes=0)
    >>> model = create("vpt", TimmViTAdapter(vit), num_classes=10, num_tokens=4, deep=True)
    >>> model(torch.randn(2, 1, 32, 32)).shape
    torch.Size([2, 10])
    >>> sorted({n.split(".")[0] for n in model.trainable_state_dict()})
    ['deep', 'head']

Every method also exposes the pieces :class:`~polyprompt.core.bank.PromptBank` needs to mix
several tasks in one backbone pass: ``num_prompt_tokens``, ``prompt_tokens(batch_size)``,
``deep_prompt(layer, batch_size)``, ``deep_prompt_layers`` and ``forward_head(features)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

from polyprompt.core.config import PromptConfig, is_number
from polyprompt.core.errors import InputError
from polyprompt.core.methods.base import PromptMethod
from polyprompt.core.registry import register_method
from polyprompt.core.validation import check_tensor

__all__ = [
    "VPT",
    "ClassifierConfig",
    "FrozenBackboneMixin",
    "FullFineTune",
    "LinearProbe",
    "PromptClassifier",
    "VPTConfig",
    "VPTInit",
]

_BACKBONE_API = ("embed", "forward_blocks", "norm", "pool", "embed_dim", "num_blocks")


# --------------------------------------------------------------------------- configs
@dataclass
class ClassifierConfig(PromptConfig):
    """Config of a classifier method: a linear head over pooled backbone features.

    Args:
        num_classes: number of classes of the head (``>= 2``).
        head_dropout: dropout before the head, in ``[0, 1)``.
    """

    num_classes: int
    head_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(
            isinstance(self.num_classes, int)
            and not isinstance(self.num_classes, bool)
            and self.num_classes >= 2,
            "num_classes",
            "must be an integer >= 2",
        )
        self.require(
            is_number(self.head_dropout) and 0.0 <= self.head_dropout < 1.0,
            "head_dropout",
            "must be a float in [0, 1)",
        )


class VPTInit(str, Enum):
    """Initialisation of VPT prompts.

    ``XAVIER``: ``uniform(-v, v)``, ``v = sqrt(6 / (3 * patch * patch + d))`` (VPT official code).
    ``NORMAL``: ``normal(0, init_std)``.
    """

    XAVIER = "xavier"
    NORMAL = "normal"


@dataclass
class VPTConfig(ClassifierConfig):
    """Config of :class:`VPT`.

    Args:
        num_tokens: prompt tokens per layer (``>= 1``; VPT paper: 1..200, 10 a common default).
        deep: ``False`` = VPT-shallow (input prompts only), ``True`` = VPT-deep (a new prompt
            before every block, replacing the previous block's prompt outputs).
        deep_layers: VPT-deep only: prompts in the first ``k`` blocks only (``None`` = all blocks).
        dropout: dropout on the prompt tokens (the official ``prompt_dropout``).
        init: :class:`VPTInit` ``"xavier"`` (default, the paper's) or ``"normal"``.
        init_std: standard deviation for ``init="normal"``.
    """

    num_tokens: int = 10
    deep: bool = False
    deep_layers: int | None = None
    dropout: float = 0.0
    init: VPTInit = VPTInit.XAVIER
    init_std: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(
            isinstance(self.num_tokens, int)
            and not isinstance(self.num_tokens, bool)
            and self.num_tokens >= 1,
            "num_tokens",
            "must be an integer >= 1",
        )
        self.require(isinstance(self.deep, bool), "deep", "must be a bool")
        if self.deep_layers is not None:
            self.require(
                isinstance(self.deep_layers, int)
                and not isinstance(self.deep_layers, bool)
                and self.deep_layers >= 1,
                "deep_layers",
                "must be None or an integer >= 1",
            )
            self.require(self.deep, "deep_layers", "only applies to VPT-deep (set deep=True)")
        self.require(
            is_number(self.dropout) and 0.0 <= self.dropout < 1.0,
            "dropout",
            "must be a float in [0, 1)",
        )
        self.require(
            is_number(self.init_std) and self.init_std > 0, "init_std", "must be a float > 0"
        )


# --------------------------------------------------------------------------- helpers
def _check_backbone(backbone: Any, where: str) -> None:
    missing = [a for a in _BACKBONE_API if not hasattr(backbone, a)]
    if missing:
        raise InputError(
            f"{where}: backbone {type(backbone).__name__} does not follow the PromptableBackbone "
            f"protocol (missing {missing}); wrap the model in an adapter such as TimmViTAdapter"
        )


def _prefix(backbone: Any) -> int:
    return int(getattr(backbone, "num_prefix_tokens", 0))


def insert_prompt(tokens: torch.Tensor, prompt: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """``[prefix, patches]`` + prompt -> ``[prefix, prompt, patches]`` (VPT's ``incorporate_prompt``).

    Shapes: tokens ``(B, N, D)``, prompt ``(B, n, D)`` -> ``(B, N + n, D)``.
    """
    return torch.cat([tokens[:, :num_prefix], prompt, tokens[:, num_prefix:]], dim=1)


def replace_prompt(tokens: torch.Tensor, prompt: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Swap the ``n`` prompt slots after the prefix for ``prompt`` (VPT-deep, block ``i > 0``).

    Shapes: tokens ``(B, N + n, D)``, prompt ``(B, n, D)`` -> ``(B, N + n, D)``.
    """
    n = prompt.shape[1]
    return torch.cat([tokens[:, :num_prefix], prompt, tokens[:, num_prefix + n :]], dim=1)


def pool_tokens(backbone: Any, tokens: torch.Tensor, num_prompt_tokens: int) -> torch.Tensor:
    """``backbone.pool`` telling it how many prompt tokens follow the prefix (excluded from 'avg')."""
    if num_prompt_tokens:
        return backbone.pool(tokens, num_prompt_tokens=num_prompt_tokens)
    return backbone.pool(tokens)


def _xavier_bound(backbone: Any, dim: int) -> float:
    """VPT's ``sqrt(6 / (in_chans * prod(patch) + d))``; falls back to ``fan_in = d`` when the
    backbone exposes no patch size (non-image backbones)."""
    patch = getattr(backbone, "patch_size", None)
    model = getattr(backbone, "model", None)
    if patch is None and model is not None:
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is None:
        return math.sqrt(6.0 / (2 * dim))
    if isinstance(patch, int):
        patch = (patch, patch)
    chans = int(getattr(backbone, "in_chans", 3) or 3)
    return math.sqrt(6.0 / float(chans * math.prod(int(p) for p in patch) + dim))


# --------------------------------------------------------------------------- base
class PromptClassifier(PromptMethod):
    """Shared head, forward and PromptBank interface of the classification methods.

    The base class for a package's own classification method: subclass it (with
    :class:`FrozenBackboneMixin` first when the backbone stays frozen), override
    :meth:`forward_features` (or the prompt hooks below) and, for a head that is not one
    linear layer on ``embed_dim`` features, :attr:`feature_dim` and :meth:`build_head`
    (e.g. IDPT's MLP on ``concat(CLS, prompt, max-pool)``: ``feature_dim = 3 * D``).
    """

    config_class = ClassifierConfig
    #: tokens entering this block need no gradient below them and may be cached
    #: (:class:`~polyprompt.core.cache.FeatureCache`); ``None``: nothing can be cached
    cache_point: int | None = None

    def __init__(self, backbone: nn.Module, config: ClassifierConfig) -> None:
        super().__init__(backbone, config)
        _check_backbone(backbone, type(self).__name__)
        self.head_drop = nn.Dropout(config.head_dropout)
        self.head = self.build_head(self.feature_dim, config.num_classes)

    # ---- head (override for another head) --------------------------------
    @property
    def feature_dim(self) -> int:
        """Width of the pooled features :meth:`forward_features` returns (default ``embed_dim``)."""
        return int(self.backbone.embed_dim)

    def build_head(self, in_features: int, num_classes: int) -> nn.Module:
        """The classification head ``(B, in_features) -> (B, num_classes)`` (default: linear)."""
        return nn.Linear(in_features, num_classes)

    # ---- PromptBank interface (defaults: no prompts) ---------------------
    @property
    def num_prompt_tokens(self) -> int:
        """Prompt tokens inserted after the prefix before block 0 (0 = none)."""
        return 0

    @property
    def deep_prompt_layers(self) -> tuple[int, ...]:
        """Blocks ``i > 0`` before which the prompt slots are replaced (empty = none)."""
        return ()

    def prompt_tokens(self, batch_size: int) -> torch.Tensor | None:
        """Input-level prompt ``(B, n, D)`` inserted after the prefix tokens, or ``None``."""
        return None

    def deep_prompt(self, layer: int, batch_size: int) -> torch.Tensor | None:
        """Prompt ``(B, n, D)`` that occupies the prompt slots before block ``layer``, or ``None``.

        At ``layer == 0`` this is :meth:`prompt_tokens` (inserted); at ``layer > 0`` it replaces
        the previous block's prompt outputs; ``None`` keeps them.
        """
        return self.prompt_tokens(batch_size) if layer == 0 else None

    # ---- forward ---------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        check_tensor(x, "x", min_size={0: 1}, where=f"{type(self).__name__}.forward")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs -> pooled features ``(B, D)``."""
        self._check_input(x)
        tokens = self.backbone.forward_blocks(self.backbone.embed(x))
        return pool_tokens(self.backbone, self.backbone.norm(tokens), 0)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, D)`` -> logits ``(B, num_classes)``."""
        check_tensor(
            features,
            "features",
            rank=2,
            dims={1: self.feature_dim},
            finite=False,
            where=f"{type(self).__name__}.forward_head",
        )
        return self.head(self.head_drop(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs ``(B, ...)`` (images ``(B, C, H, W)`` for a ViT) -> logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def forward_from_tokens(self, tokens: torch.Tensor, start_block: int) -> torch.Tensor:
        """Logits from tokens that enter block ``start_block`` (e.g. from a :class:`FeatureCache`).

        Shapes: tokens ``(B, N, D)`` -> logits ``(B, num_classes)``.  Allowed for
        ``0 <= start_block <= cache_point``: nothing below ``cache_point`` needs a gradient.

        Raises:
            InputError: ``start_block`` out of range or above ``cache_point`` (VPT: prompts
                enter before block 0; full fine-tuning: everything trains).
            ShapeError: ``tokens`` not ``(B, N, embed_dim)``.
        """
        where = f"{type(self).__name__}.forward_from_tokens"
        nb = int(self.backbone.num_blocks)
        if not isinstance(start_block, int) or isinstance(start_block, bool):
            raise InputError(f"{where}: start_block must be an int, got {start_block!r}")
        if not 0 <= start_block <= nb:
            raise InputError(f"{where}: start_block must be in [0, {nb}], got {start_block}")
        if self.cache_point is None or start_block > self.cache_point:
            raise InputError(
                f"{where}: {type(self).__name__} cannot start from cached tokens at block "
                f"{start_block}: {self._cache_reason()} (cache_point={self.cache_point}); "
                f"train it on raw inputs"
            )
        check_tensor(tokens, "tokens", rank=3, dims={2: int(self.backbone.embed_dim)}, where=where)
        return self._forward_tokens(tokens, start_block)

    def _cache_reason(self) -> str:
        return "blocks below it train"

    def _forward_tokens(self, tokens: torch.Tensor, start_block: int) -> torch.Tensor:
        tokens = self.backbone.forward_blocks(tokens, start_block)
        return self.forward_head(pool_tokens(self.backbone, self.backbone.norm(tokens), 0))

    def extra_repr(self) -> str:
        return f"method={self.method_name!r}, num_classes={self.config.num_classes}"


class FrozenBackboneMixin:
    """Keeps the frozen backbone in eval mode when the method is put in train mode."""

    def train(self, mode: bool = True):  # type: ignore[override]
        super().train(mode)  # type: ignore[misc]
        self.backbone.eval()  # type: ignore[attr-defined]
        return self


# --------------------------------------------------------------------------- methods
@register_method("linear_probe")
class LinearProbe(FrozenBackboneMixin, PromptClassifier):
    """Frozen backbone, linear head on ``pool(norm(tokens))``; only the head trains.

    ``cache_point = backbone.num_blocks``: everything below the head is frozen, so the tokens
    after the last block can be cached once (:class:`~polyprompt.core.cache.FeatureCache`) and
    training runs :meth:`forward_from_tokens` on them.

    Example (features ``(B, D)`` -> logits ``(B, C)``)::

        >>> import torch
        >>> from timm.models.vision_transformer import VisionTransformer
        >>> from polyprompt.core import TimmViTAdapter, create
        >>> vit = VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=64,
        ...                         depth=3, num_heads=4, num_classes=0)
        >>> probe = create("linear_probe", TimmViTAdapter(vit), num_classes=3)
        >>> probe(torch.randn(2, 1, 32, 32)).shape
        torch.Size([2, 3])
        >>> sorted(probe.trainable_state_dict())
        ['head.bias', 'head.weight']
    """

    config_class = ClassifierConfig

    def __init__(self, backbone: nn.Module, config: ClassifierConfig) -> None:
        super().__init__(backbone, config)
        from polyprompt.core.freezing import freeze_backbone

        freeze_backbone(backbone)
        self.backbone.eval()
        self.cache_point = int(backbone.num_blocks)


@register_method("full_finetune")
class FullFineTune(PromptClassifier):
    """Every backbone parameter trains, plus the head (the upper baseline of the papers).

    Example::

        >>> import torch
        >>> from timm.models.vision_transformer import VisionTransformer
        >>> from polyprompt.core import TimmViTAdapter, create
        >>> vit = VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=64,
        ...                         depth=3, num_heads=4, num_classes=0)
        >>> ft = create("full_finetune", TimmViTAdapter(vit), num_classes=3)
        >>> all(p.requires_grad for p in ft.parameters())
        True
    """

    config_class = ClassifierConfig

    def __init__(self, backbone: nn.Module, config: ClassifierConfig) -> None:
        super().__init__(backbone, config)
        for p in self.backbone.parameters():
            p.requires_grad_(True)
        self.cache_point = None

    def _cache_reason(self) -> str:
        return "every backbone parameter trains, the embedding included"


@register_method("vpt")
class VPT(FrozenBackboneMixin, PromptClassifier):
    """Visual Prompt Tuning (Jia et al., ECCV 2022), shallow or deep; prompts + head train.

    Token layout: ``[prefix (CLS/registers), P1..Pn, patches]``.  See the module docstring for
    the deep-prompt replacement rule and the init.

    Example (images ``(B, C, H, W)`` -> logits ``(B, num_classes)``)::

        >>> import torch
        >>> from timm.models.vision_transformer import VisionTransformer
        >>> from polyprompt.core import TimmViTAdapter, create
        >>> vit = VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=64,
        ...                         depth=3, num_heads=4, num_classes=0)
        >>> vpt = create("vpt", TimmViTAdapter(vit), num_classes=10, num_tokens=5)
        >>> vpt(torch.randn(4, 1, 32, 32)).shape
        torch.Size([4, 10])
        >>> vpt.prompt_tokens(4).shape          # (B, n, D)
        torch.Size([4, 5, 64])
    """

    config_class = VPTConfig

    def __init__(self, backbone: nn.Module, config: VPTConfig) -> None:
        super().__init__(backbone, config)
        from polyprompt.core.freezing import freeze_backbone
        from polyprompt.core.prompts.deep import DeepPrompt, DeepPromptMode
        from polyprompt.core.prompts.soft import PromptInit, SoftPrompt

        freeze_backbone(backbone)
        self.backbone.eval()
        self.cache_point = 0
        n, d, nb = config.num_tokens, int(backbone.embed_dim), int(backbone.num_blocks)
        self.prompt: nn.Module | None = None
        self.deep: nn.Module | None = None
        if config.deep:
            k = nb if config.deep_layers is None else config.deep_layers
            if k > nb:
                raise InputError(
                    f"VPT: deep_layers={k} exceeds the backbone's {nb} blocks "
                    f"({type(backbone).__name__})"
                )
            self.deep = DeepPrompt(
                num_layers=nb,
                num_tokens=n,
                dim=d,
                mode=DeepPromptMode.PREPEND,
                layers=tuple(range(k)),
                init_std=config.init_std,
                dropout=config.dropout,
            )
            self._replace_layers: tuple[int, ...] = tuple(range(1, k))
            prompt_params = list(self.deep.parameters())
        else:
            self.prompt = SoftPrompt(
                n, d, init=PromptInit.RANDOM, init_std=config.init_std, dropout=config.dropout
            )
            self._replace_layers = ()
            prompt_params = list(self.prompt.parameters())
        with torch.no_grad():
            for p in prompt_params:
                if config.init == VPTInit.XAVIER:
                    bound = _xavier_bound(backbone, d)
                    nn.init.uniform_(p, -bound, bound)
                else:
                    nn.init.normal_(p, 0.0, config.init_std)

    # ---- PromptBank interface --------------------------------------------
    @property
    def num_prompt_tokens(self) -> int:
        return int(self.config.num_tokens)

    @property
    def deep_prompt_layers(self) -> tuple[int, ...]:
        return self._replace_layers

    def prompt_tokens(self, batch_size: int) -> torch.Tensor:
        if self.deep is not None:
            return self.deep(0, batch_size)
        assert self.prompt is not None
        return self.prompt(batch_size)

    def deep_prompt(self, layer: int, batch_size: int) -> torch.Tensor | None:
        if layer == 0:
            return self.prompt_tokens(batch_size)
        if layer in self._replace_layers:
            assert self.deep is not None
            return self.deep(layer, batch_size)
        return None

    # ---- forward ---------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._prompted_features(self.backbone.embed(x))

    def _prompted_features(self, tokens: torch.Tensor) -> torch.Tensor:
        bb, p, b = self.backbone, _prefix(self.backbone), tokens.shape[0]
        tokens = insert_prompt(tokens, self.prompt_tokens(b), p)
        start = 0
        for layer in self._replace_layers:
            tokens = bb.forward_blocks(tokens, start, layer)
            prompt = self.deep_prompt(layer, b)
            assert prompt is not None
            tokens = replace_prompt(tokens, prompt, p)
            start = layer
        tokens = bb.forward_blocks(tokens, start)
        return pool_tokens(bb, bb.norm(tokens), self.num_prompt_tokens)

    def _cache_reason(self) -> str:
        return "VPT inserts its prompts before block 0, so only the embedding output (start_block=0) can be cached"

    def _forward_tokens(self, tokens: torch.Tensor, start_block: int) -> torch.Tensor:
        # start_block == 0 here: tokens are the (prompt-free) embedding output.
        return self.forward_head(self._prompted_features(tokens))

    def extra_repr(self) -> str:
        c = self.config
        kind = f"deep(layers={len(self._replace_layers) + 1})" if c.deep else "shallow"
        return f"num_classes={c.num_classes}, num_tokens={c.num_tokens}, {kind}"
