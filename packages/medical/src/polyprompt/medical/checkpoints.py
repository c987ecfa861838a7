"""Loader for the official DVPT backbone checkpoint into a timm ViT.

DVPT's ViT experiments (NKUhealong/DVPT ``code/models.py``, ``ViT_Model``) load OpenAI
CLIP's ViT-B/16 image tower from ``./ViT-B_16.pt`` and keep the ``visual.*`` keys::

    visual.conv1.weight                               (W, 3, p, p)
    visual.class_embedding                            (W,)
    visual.positional_embedding                       (1 + G*G, W)
    visual.ln_pre.{weight,bias}
    visual.transformer.resblocks.{i}.ln_1.{weight,bias}
    visual.transformer.resblocks.{i}.attn.in_proj_{weight,bias}      (3W, W), (3W,)
    visual.transformer.resblocks.{i}.attn.out_proj.{weight,bias}
    visual.transformer.resblocks.{i}.ln_2.{weight,bias}
    visual.transformer.resblocks.{i}.mlp.c_fc.{weight,bias}          (4W, W)
    visual.transformer.resblocks.{i}.mlp.c_proj.{weight,bias}
    visual.ln_post.{weight,bias}
    visual.proj                                       (W, out)

:func:`load_official_vit` builds the matching timm CLIP ViT (``pre_norm=True``,
QuickGELU, LayerNorm eps 1e-5 -- timm's ``vit_base_patch16_clip_quickgelu_224``
architecture), converts the keys with timm's own ``_convert_openai_clip``, resizes the
position embedding when another input size is asked for (the official code resizes to an
18 x 18 grid for 288-pixel inputs with ``resize_pos_embed``; here timm's
``resample_abs_pos_embed``), and returns a :class:`~polyprompt.medical.MedicalViTAdapter`.
Checkpoints already in timm's layout (``patch_embed.proj.weight``, ``blocks.{i}...``) load
too. Files: ``.safetensors`` or a ``torch.save`` state dict read with
``torch.load(weights_only=True)``; a TorchScript archive (what OpenAI distributes) is refused
with the one-line conversion to run once in a trusted environment.

Example::

    >>> bb = load_official_vit("ViT-B_16.safetensors", img_size=288)  # doctest: +SKIP
    >>> bb.embed_dim, bb.num_blocks, bb.img_size                      # doctest: +SKIP
    (768, 12, (288, 288))
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyprompt.core.errors import CheckpointError

if TYPE_CHECKING:
    import torch

    from polyprompt.medical.backbones import MedicalViTAdapter

__all__ = ["clip_visual_to_timm", "detect_layout", "load_official_vit", "read_state_dict"]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``torch.save`` state dict (no pickle).

    Raises:
        CheckpointError: missing, unreadable or TorchScript file; not a mapping of tensors.
    """
    import torch

    from polyprompt.core.checkpoint import load_torch_state

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"read_state_dict: no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:
            raise CheckpointError(f"read_state_dict: cannot read {path} ({exc})") from None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist()):
                raise CheckpointError(
                    f"read_state_dict: {path} is a TorchScript archive (OpenAI's CLIP release); "
                    "polyprompt loads no pickled code. Convert it once, in a trusted "
                    "environment: `from safetensors.torch import save_file; "
                    "save_file({k: v.contiguous() for k, v in torch.jit.load(p, map_location='cpu')"
                    ".state_dict().items()}, 'ViT-B_16.safetensors')`"
                )
    state = load_torch_state(path)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(f"read_state_dict: {path} does not hold a mapping of tensors")
    return dict(state)


def detect_layout(state: Mapping[str, Any]) -> str:
    """``"clip"`` (OpenAI ``visual.*``), ``"timm"`` (``patch_embed.proj.weight``) or an error."""
    if "visual.conv1.weight" in state:
        return "clip"
    if "patch_embed.proj.weight" in state:
        return "timm"
    raise CheckpointError(
        "load_official_vit: unknown checkpoint layout: expected OpenAI CLIP keys "
        "('visual.conv1.weight', ...) or timm keys ('patch_embed.proj.weight', ...); "
        f"first keys: {sorted(state)[:6]}"
    )


def clip_visual_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI CLIP ``visual.*`` keys -> timm ``VisionTransformer`` keys (timm's converter).

    ``visual.proj`` becomes ``head.weight`` / ``head.bias`` (zero), as timm does.
    """
    from timm.models.vision_transformer import _convert_openai_clip

    return _convert_openai_clip(dict(state), None)  # type: ignore[arg-type]


def _arch_from_timm_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    w = state["patch_embed.proj.weight"]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    embed_dim, in_chans, p = int(w.shape[0]), int(w.shape[1]), int(w.shape[-1])
    pos = state["pos_embed"]
    has_cls = "cls_token" in state
    n = int(pos.shape[1]) - (1 if has_cls else 0)
    grid = math.isqrt(n)
    if grid * grid != n:
        raise CheckpointError(f"load_official_vit: pos_embed of {n} patches is not a square grid")
    mlp = state.get("blocks.0.mlp.fc1.weight")
    return {
        "embed_dim": embed_dim,
        "in_chans": in_chans,
        "patch_size": p,
        "depth": depth,
        "grid": grid,
        "class_token": has_cls,
        "pre_norm": "norm_pre.weight" in state,
        "mlp_ratio": (int(mlp.shape[0]) / embed_dim) if mlp is not None else 4.0,
    }


def load_official_vit(
    checkpoint: str | Path | Mapping[str, torch.Tensor],
    *,
    img_size: int | None = None,
    num_heads: int | None = None,
    act_layer: str | None = None,
) -> MedicalViTAdapter:
    """Build a timm ViT from the official DVPT backbone checkpoint (or a timm-layout one).

    Args:
        checkpoint: a file path or an already-read state dict.
        img_size: input size (default: the checkpoint's, e.g. 224); other sizes resample
            the position embedding (bicubic, timm's ``resample_abs_pos_embed``).
        num_heads: attention heads (default: ``embed_dim // 64``, CLIP's rule; at least 1).
        act_layer: MLP activation (default ``"quick_gelu"`` for CLIP checkpoints, timm's
            default GELU for timm checkpoints).

    Returns:
        a frozen-ready :class:`~polyprompt.medical.MedicalViTAdapter` (``num_classes=0``,
        CLS pooling; the CLIP projection ``visual.proj`` is not used: DVPT's head is
        linear over the pooled features, like the official ``fc_head`` over the projection).

    Raises:
        CheckpointError: unreadable file, unknown layout, missing / unexpected / misshaped keys.
    """
    from functools import partial

    from timm.layers import resample_abs_pos_embed
    from timm.models.vision_transformer import VisionTransformer
    from torch import nn

    from polyprompt.medical.backbones import MedicalViTAdapter

    state = (
        read_state_dict(checkpoint) if isinstance(checkpoint, (str, Path)) else dict(checkpoint)  # type: ignore[arg-type]
    )
    layout = detect_layout(state)
    if layout == "clip":
        state = clip_visual_to_timm(state)
        act_layer = act_layer or "quick_gelu"
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    try:
        arch = _arch_from_timm_state(state)
    except (KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"load_official_vit: incomplete checkpoint ({exc!r})") from None
    grid = arch["grid"]
    size = int(img_size) if img_size is not None else grid * arch["patch_size"]
    if size % arch["patch_size"]:
        raise CheckpointError(
            f"load_official_vit: img_size {size} is not a multiple of the patch size "
            f"{arch['patch_size']}"
        )
    new_grid = size // arch["patch_size"]
    if new_grid != grid:
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"],
            new_size=(new_grid, new_grid),
            old_size=(grid, grid),
            num_prefix_tokens=1 if arch["class_token"] else 0,
        )
    heads = num_heads if num_heads is not None else max(1, arch["embed_dim"] // 64)
    if arch["embed_dim"] % heads:
        raise CheckpointError(
            f"load_official_vit: num_heads={heads} does not divide embed_dim {arch['embed_dim']}"
        )
    kwargs: dict[str, Any] = {}
    if act_layer is not None:
        kwargs["act_layer"] = act_layer
    model = VisionTransformer(
        img_size=size,
        patch_size=arch["patch_size"],
        in_chans=arch["in_chans"],
        num_classes=0,
        embed_dim=arch["embed_dim"],
        depth=arch["depth"],
        num_heads=heads,
        mlp_ratio=arch["mlp_ratio"],
        class_token=arch["class_token"],
        global_pool="token" if arch["class_token"] else "avg",
        pre_norm=arch["pre_norm"],
        norm_layer=partial(nn.LayerNorm, eps=1e-5) if layout == "clip" else None,
        **kwargs,
    )
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(
            f"load_official_vit: checkpoint does not fit the model: {exc}"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"load_official_vit: missing keys {sorted(missing)[:6]}, unexpected keys "
            f"{sorted(unexpected)[:6]}"
        )
    return MedicalViTAdapter(model.eval())
