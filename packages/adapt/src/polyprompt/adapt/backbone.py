"""SegFormer (MiT encoder + all-MLP decoder) from ``transformers``, staged for CoDA.

:class:`SegFormerBackbone` wraps ``transformers.SegformerForSemanticSegmentation`` (the
library's model, not a copy) and runs its encoder stage by stage so CoDA's
severity-routed adapter can sit after stage 1 (``after_stage1`` hook), then the library's
all-MLP decode head; logits are upsampled bilinearly to the input size.

:class:`MiTConfig` is a dataclass over ``SegformerConfig``: :meth:`MiTConfig.small` is the
CPU configuration of this package's examples; :meth:`MiTConfig.b5` is MiT-B5 (CoDA's
encoder: stage widths 64/128/320/512, depths 3/6/40/3).

:func:`load_official_segformer` loads a checkpoint in the *official* NVlabs SegFormer /
mmseg layout (``backbone.patch_embed1.proj.weight``, ``backbone.block1.0.attn.q.weight``,
``backbone.block1.0.attn.kv.weight`` (keys and values stacked), ``backbone.norm1``,
``decode_head.linear_c1.proj``, ``decode_head.linear_fuse.conv`` / ``.bn``,
``decode_head.linear_pred``), including the ImageNet encoder-only ``mit_b5.pth`` layout
(the same keys without ``backbone.``, plus an unused ``head``), ``.pth`` (read with
``weights_only=True``) or ``.safetensors``.

Example::

    >>> import torch
    >>> net = SegFormerBackbone(MiTConfig.small(), num_classes=7)
    >>> net(torch.rand(2, 3, 64, 64)).shape            # logits at input resolution
    torch.Size([2, 7, 64, 64])
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import CheckpointError
from polyprompt.core.validation import check_tensor

# ImageNet statistics, as mmseg's img_norm_cfg (mean 123.675/116.28/103.53, std 58.395/57.12/57.375)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _ints(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in v)


@dataclass
class MiTConfig(PromptConfig):
    """Mix Transformer encoder + all-MLP decoder sizes (``transformers.SegformerConfig``)."""

    hidden_sizes: tuple[int, ...] = (32, 64, 128, 160)
    depths: tuple[int, ...] = (1, 1, 1, 1)
    num_attention_heads: tuple[int, ...] = (1, 2, 4, 5)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)
    strides: tuple[int, ...] = (4, 2, 2, 2)
    mlp_ratios: tuple[int, ...] = (4, 4, 4, 4)
    decoder_hidden_size: int = 128
    drop_path_rate: float = 0.0
    classifier_dropout_prob: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "hidden_sizes",
            "depths",
            "num_attention_heads",
            "sr_ratios",
            "patch_sizes",
            "strides",
            "mlp_ratios",
        ):
            setattr(self, name, _ints(getattr(self, name)))
            self.require(len(getattr(self, name)) == 4, name, "needs one entry per stage (4)")
            self.require(all(v >= 1 for v in getattr(self, name)), name, "entries must be >= 1")
        self.require(
            all(h % a == 0 for h, a in zip(self.hidden_sizes, self.num_attention_heads)),
            "num_attention_heads",
            "must divide hidden_sizes",
        )
        self.require(self.decoder_hidden_size >= 1, "decoder_hidden_size", "must be >= 1")

    @classmethod
    def small(cls) -> MiTConfig:
        """The CPU configuration used by the examples (~0.9 M parameters)."""
        return cls()

    @classmethod
    def b5(cls) -> MiTConfig:
        """MiT-B5 + SegFormer-B5 decoder (768 channels), as in the official repo."""
        return cls(
            hidden_sizes=(64, 128, 320, 512),
            depths=(3, 6, 40, 3),
            num_attention_heads=(1, 2, 5, 8),
            decoder_hidden_size=768,
            drop_path_rate=0.1,
        )

    def to_hf(self, num_classes: int, ignore_index: int = 255):
        from transformers import SegformerConfig

        return SegformerConfig(
            num_channels=3,
            num_encoder_blocks=4,
            depths=list(self.depths),
            sr_ratios=list(self.sr_ratios),
            hidden_sizes=list(self.hidden_sizes),
            patch_sizes=list(self.patch_sizes),
            strides=list(self.strides),
            num_attention_heads=list(self.num_attention_heads),
            mlp_ratios=list(self.mlp_ratios),
            decoder_hidden_size=self.decoder_hidden_size,
            drop_path_rate=self.drop_path_rate,
            classifier_dropout_prob=self.classifier_dropout_prob,
            num_labels=num_classes,
            semantic_loss_ignore_index=ignore_index,
        )


StageHook = Callable[[torch.Tensor], torch.Tensor]


class SegFormerBackbone(nn.Module):
    """``transformers`` SegFormer run stage by stage; input ``(B, 3, H, W)`` in ``[0, 1]``.

    Args:
        config: :class:`MiTConfig`.
        num_classes: segmentation classes.
        normalize: apply ImageNet mean/std inside (inputs stay in ``[0, 1]``, which is where
            CoDA's pixel prompts and severity rule work).

    Shapes:
        ``features(x, after_stage1=fn)`` -> 4 maps ``(B, C_i, H/4/2^i, W/4/2^i)``;
        ``forward(x)`` -> logits ``(B, num_classes, H, W)``.
    """

    def __init__(self, config: MiTConfig, num_classes: int, *, normalize: bool = True) -> None:
        super().__init__()
        from transformers import SegformerForSemanticSegmentation

        self.config = config
        self.num_classes = int(num_classes)
        self.normalize = bool(normalize)
        self.model = SegformerForSemanticSegmentation(config.to_hf(self.num_classes))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def stage1_dim(self) -> int:
        return self.config.hidden_sizes[0]

    @property
    def min_input_size(self) -> int:
        """Smallest side that still leaves a 1x1 map after the four strided stages."""
        s = 1
        for st in self.config.strides:
            s *= st
        return s

    def features(
        self, x: torch.Tensor, after_stage1: StageHook | None = None
    ) -> list[torch.Tensor]:
        where = "SegFormerBackbone.features"
        check_tensor(x, "images", rank=4, dims={1: 3}, min_size={0: 1}, where=where)
        h = (x - self.mean) / self.std if self.normalize else x
        outs = []
        for i, stage in enumerate(self.model.segformer.stages):
            h = stage(h)  # (B, C_i, H_i, W_i): patch embedding, blocks, LayerNorm
            if i == 0 and after_stage1 is not None:
                h = after_stage1(h)
            outs.append(h)
        return outs

    def decode(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        logits = self.model.decode_head(tuple(feats))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, after_stage1: StageHook | None = None) -> torch.Tensor:
        return self.decode(self.features(x, after_stage1), tuple(x.shape[-2:]))

    def identity(self) -> dict[str, Any]:
        from polyprompt.core.freezing import module_identity

        ident = module_identity(self)
        ident.update(
            {"arch": "segformer", "mit": self.config.to_dict(), "classes": self.num_classes}
        )
        return ident


# ---------------------------------------------------------------------------
# official checkpoint layout (NVlabs/SegFormer, mmseg 0.x; also the CoDA / DAFormer MiT)
# ---------------------------------------------------------------------------
_BLOCK = re.compile(r"^block(\d)\.(\d+)\.(.+)$")
_BLOCK_MAP = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.q": "attention.q_proj",
    "attn.proj": "attention.o_proj",
    "attn.sr": "attention.sequence_reduction.sequence_reduction",
    "attn.norm": "attention.sequence_reduction.layer_norm",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
}


def _convert_encoder_key(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    m = re.match(r"^patch_embed(\d)\.(proj|norm)\.(weight|bias)$", key)
    if m:
        part = "proj" if m.group(2) == "proj" else "layer_norm"
        return {
            f"segformer.stages.{int(m.group(1)) - 1}.patch_embeddings.{part}.{m.group(3)}": value
        }
    m = re.match(r"^norm(\d)\.(weight|bias)$", key)
    if m:
        return {f"segformer.stages.{int(m.group(1)) - 1}.layer_norm.{m.group(2)}": value}
    m = _BLOCK.match(key)
    if m:
        stage, blk, rest = int(m.group(1)) - 1, m.group(2), m.group(3)
        prefix = f"segformer.stages.{stage}.blocks.{blk}."
        mod, _, kind = rest.rpartition(".")
        if mod == "attn.kv":  # (2C, C): keys then values
            k, v = value.chunk(2, dim=0)
            return {f"{prefix}attention.k_proj.{kind}": k, f"{prefix}attention.v_proj.{kind}": v}
        if mod in _BLOCK_MAP:
            return {f"{prefix}{_BLOCK_MAP[mod]}.{kind}": value}
    return {}


def _convert_head_key(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    m = re.match(r"^linear_c(\d)\.proj\.(weight|bias)$", key)
    if m:
        return {f"decode_head.linear_projections.{int(m.group(1)) - 1}.proj.{m.group(2)}": value}
    if key == "linear_fuse.conv.weight":
        return {"decode_head.linear_fuse.weight": value}
    m = re.match(r"^linear_fuse\.bn\.(.+)$", key)
    if m:
        return {f"decode_head.batch_norm.{m.group(1)}": value}
    m = re.match(r"^linear_pred\.(weight|bias)$", key)
    if m:
        return {f"decode_head.classifier.{m.group(1)}": value}
    return {}


def convert_official_state_dict(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official SegFormer/MiT keys -> ``SegformerForSemanticSegmentation`` keys.

    Returns ``(converted, unused_keys)``. Accepts a full segmentor (``backbone.`` /
    ``decode_head.`` prefixes, optionally under ``state_dict``/``module.``) or a bare
    ImageNet MiT encoder (``patch_embed1...``, ``head.*`` is ignored).
    """
    out: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for raw, value in state.items():
        key = raw.removeprefix("module.")
        if key.startswith("backbone."):
            conv = _convert_encoder_key(key.removeprefix("backbone."), value)
        elif key.startswith("decode_head."):
            conv = _convert_head_key(key.removeprefix("decode_head."), value)
        else:
            conv = _convert_encoder_key(key, value)
        if conv:
            out.update(conv)
        else:
            unused.append(raw)
    return out, unused


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"load_official_segformer: no such file {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"load_official_segformer: cannot read {path} ({exc})") from None
    from polyprompt.core.checkpoint import load_torch_state

    state = load_torch_state(path)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"load_official_segformer: {path} holds no state dict")
    return dict(state)


def load_official_segformer(
    net: SegFormerBackbone,
    checkpoint: str | Path | Mapping[str, torch.Tensor],
    *,
    encoder_only: bool | None = None,
) -> dict[str, list[str]]:
    """Load official SegFormer / MiT weights into ``net`` (in place).

    Args:
        net: the model to fill.
        checkpoint: a path (``.pth``/``.pt`` read with ``weights_only=True``, or
            ``.safetensors``) or a state dict in the official key layout.
        encoder_only: load only the encoder (ImageNet ``mit_b*.pth``); ``None`` = decide
            from the checkpoint (encoder only when it has no ``decode_head.`` keys). A
            decoder whose class count differs from ``net``'s keeps everything but
            ``linear_pred``.

    Returns:
        ``{"missing": [...], "unused": [...]}`` (model keys not filled; checkpoint keys
        not used).

    Raises:
        CheckpointError: unreadable file, no recognisable key, or a shape mismatch (the
            message names the key, the checkpoint shape and the model shape).
    """
    state = (
        _read_checkpoint(Path(checkpoint))
        if isinstance(checkpoint, (str, Path))
        else dict(checkpoint)
    )
    converted, unused = convert_official_state_dict(state)
    if not converted:
        raise CheckpointError(
            "load_official_segformer: no key of the official SegFormer/MiT layout found "
            f"(first keys: {list(state)[:5]})"
        )
    has_head = any(k.startswith("decode_head.") for k in converted)
    if encoder_only is None:
        encoder_only = not has_head
    if encoder_only:
        converted = {k: v for k, v in converted.items() if k.startswith("segformer.")}
    target = net.model.state_dict()
    for key, value in list(converted.items()):
        if key not in target:
            raise CheckpointError(
                f"load_official_segformer: {key} has no place in this model (different depth?)"
            )
        if tuple(value.shape) != tuple(target[key].shape):
            if key.startswith("decode_head.classifier."):
                converted.pop(key)  # different class count: keep a fresh classifier
                unused.append(key)
                continue
            raise CheckpointError(
                f"load_official_segformer: {key} has shape {tuple(value.shape)} in the "
                f"checkpoint but {tuple(target[key].shape)} in the model (config mismatch)"
            )
    with torch.no_grad():
        for key, value in converted.items():
            target[key].copy_(value.to(target[key].dtype))
    missing = sorted(set(target) - set(converted))
    if encoder_only:
        missing = [k for k in missing if k.startswith("segformer.")]
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    return {"missing": missing, "unused": unused}
