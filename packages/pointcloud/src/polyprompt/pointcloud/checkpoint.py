"""Loader for official Point-MAE / Point-BERT checkpoints (``MAE_encoder.*`` key layout).

The official pre-training script (``Pang-Yatian/Point-MAE`` ``tools/runner_pretrain.py``,
``utils/checkpoint``) saves ``torch.save({"base_model": model.state_dict(), "optimizer": ...,
"epoch": ..., ...})``; with ``DataParallel`` / DDP every key starts with ``module.``. The encoder
sits under ``MAE_encoder.``::

    module.MAE_encoder.encoder.first_conv.0.weight     (128, 3, 1)
    module.MAE_encoder.pos_embed.0.weight              (128, 3)
    module.MAE_encoder.blocks.blocks.0.attn.qkv.weight (1152, 384)
    module.MAE_encoder.norm.weight                     (384,)
    module.MAE_decoder.* / decoder_pos_embed.* / increase_dim.* / mask_token   (pre-training only)

Fine-tuned checkpoints (and IDPT's) hold the encoder at the top level with ``cls_token``,
``cls_pos`` and ``cls_head_finetune.*``. Point-BERT's use ``transformer_q.``. The mapping is the
one of ``PointTransformer.load_model_from_ckpt`` in the official ``models/Point_MAE.py``: strip
``module.``, then ``MAE_encoder.`` / ``base_model.`` / ``transformer_q.``; here in addition
``blocks.blocks.<i>.`` -> ``blocks.<i>.`` (this package keeps the timm blocks in one list).
Decoder and head keys are reported as ignored; ``cls_token`` / ``cls_pos`` are absent from
pre-training checkpoints (Point-MAE's encoder has no CLS) and keep their initialisation,
exactly as in the official fine-tuning.

Files are read with ``torch.load(weights_only=True)`` (no pickle) or as safetensors.

Example::

    >>> import tempfile, torch
    >>> from polyprompt.pointcloud.backbone import PointMAEBackbone, PointMAEConfig
    >>> src = PointMAEBackbone(PointMAEConfig.tiny())
    >>> official = {"module.MAE_encoder." + k.replace("blocks.", "blocks.blocks.", 1): v
    ...             for k, v in src.state_dict().items() if not k.startswith("cls_")}
    >>> path = tempfile.mkdtemp() + "/ckpt-last.pth"
    >>> torch.save({"base_model": official, "epoch": 300}, path)
    >>> bb, report = load_point_mae_checkpoint(path, PointMAEConfig.tiny())
    >>> report.missing
    ['cls_pos', 'cls_token']
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from polyprompt.core.errors import CheckpointError
from polyprompt.pointcloud.backbone import PointMAEBackbone, PointMAEConfig

__all__ = [
    "LoadReport",
    "convert_official_state_dict",
    "infer_config",
    "load_point_mae_checkpoint",
    "read_checkpoint_file",
]

_PREFIXES = ("MAE_encoder.", "base_model.", "transformer_q.")
_IGNORED = (
    "MAE_decoder.",
    "decoder_pos_embed.",
    "increase_dim.",
    "mask_token",
    "cls_head_finetune.",
    "cls_head.",
    "head.",
    "transformer_k.",
    "dvae.",
    "lm_head.",
    "blocks.cls.",  # IDPT's prompt generator inside its block wrapper
    "prompt_pos",
)
_OPTIONAL = ("cls_token", "cls_pos")


@dataclass
class LoadReport:
    """What :func:`load_point_mae_checkpoint` did with the checkpoint's keys."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def read_checkpoint_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth`` / ``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors`` file.

    The official wrapper ``{"base_model": ...}`` (or ``"model"`` / ``"state_dict"``) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"load_point_mae_checkpoint: no such file {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:
            raise CheckpointError(f"load_point_mae_checkpoint: cannot read {path}: {exc}") from None
    from polyprompt.core.checkpoint import load_torch_state

    obj = load_torch_state(path)
    return _unwrap(obj, str(path))


def _unwrap(obj: Any, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("base_model", "model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"load_point_mae_checkpoint: {where} holds no state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"load_point_mae_checkpoint: {where} holds no tensors")
    return tensors


_BLOCKS = re.compile(r"^blocks\.blocks\.(\d+)\.")


def convert_official_state_dict(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official keys -> this package's keys; returns ``(converted, ignored_official_keys)``."""
    out: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for raw, value in _unwrap(state, "state").items():
        key = raw
        while key.startswith("module."):
            key = key[len("module.") :]
        for p in _PREFIXES:
            if key.startswith(p):
                key = key[len(p) :]
                break
        if key.startswith(_IGNORED):
            ignored.append(raw)
            continue
        key = _BLOCKS.sub(r"blocks.\1.", key)
        out[key] = value
    return out, ignored


def infer_config(state: Mapping[str, torch.Tensor], **overrides: Any) -> PointMAEConfig:
    """Architecture sizes read from converted weights (``num_heads``, ``num_group`` and
    ``group_size`` are not stored in weights: the paper's 6 / 128 / 32 unless overridden)."""
    try:
        d = int(state["norm.weight"].shape[0])
        c1 = int(state["encoder.first_conv.0.weight"].shape[0])
        c2 = int(state["encoder.first_conv.3.weight"].shape[0])
        c3 = int(state["encoder.second_conv.0.weight"].shape[0])
        hidden = int(state["pos_embed.0.weight"].shape[0])
        mlp = int(state["blocks.0.mlp.fc1.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(
            f"load_point_mae_checkpoint: not a Point-MAE encoder checkpoint (no {exc} after "
            "key conversion)"
        ) from None
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    kwargs: dict[str, Any] = {
        "embed_dim": d,
        "depth": depth,
        "encoder_channels": (c1, c2, c3),
        "pos_hidden": hidden,
        "mlp_ratio": mlp / d,
    }
    kwargs.update(overrides)
    return PointMAEConfig(**kwargs)


def load_point_mae_checkpoint(
    source: str | Path | Mapping[str, torch.Tensor],
    config: PointMAEConfig | None = None,
    *,
    backbone: PointMAEBackbone | None = None,
    strict: bool = True,
    **config_overrides: Any,
) -> tuple[PointMAEBackbone, LoadReport]:
    """Build (or fill) a :class:`PointMAEBackbone` from an official checkpoint.

    Args:
        source: a checkpoint file or an already loaded state dict (official key layout).
        config: the architecture; default: inferred from the weights (:func:`infer_config`,
            ``config_overrides`` such as ``num_heads=6, num_group=64`` applied).
        backbone: load into this backbone instead of building one.
        strict: raise when an encoder weight is missing (``cls_token`` / ``cls_pos`` may be).

    Returns:
        ``(backbone, report)`` — the backbone in eval mode.

    Raises:
        CheckpointError: unreadable file, a shape mismatch (names the key and both shapes),
            unknown keys, or (``strict``) missing encoder weights.
    """
    raw = read_checkpoint_file(source) if isinstance(source, (str, Path)) else dict(source)
    state, ignored = convert_official_state_dict(raw)
    if backbone is None:
        cfg = config if config is not None else infer_config(state, **config_overrides)
        backbone = PointMAEBackbone(cfg)
    own = backbone.state_dict()
    unknown = sorted(k for k in state if k not in own)
    if unknown:
        raise CheckpointError(
            f"load_point_mae_checkpoint: {len(unknown)} key(s) do not belong to a Point-MAE "
            f"encoder: {unknown[:6]} (Point-BERT's reduce_dim is not supported)"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"load_point_mae_checkpoint: {k} has shape {tuple(v.shape)} in the checkpoint "
                f"but {tuple(own[k].shape)} in the model ({backbone.config.to_dict()})"
            )
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    hard = [k for k in missing if k not in _OPTIONAL]
    if strict and hard:
        raise CheckpointError(
            f"load_point_mae_checkpoint: {len(hard)} encoder weight(s) missing: {hard[:6]}"
        )
    backbone.load_state_dict(state, strict=False)
    backbone.eval()
    return backbone, LoadReport(loaded=sorted(state), missing=missing, ignored=sorted(ignored))
