"""AudioMAE-style spectrogram ViT (timm), its :class:`PromptableBackbone` adapter and the
official AudioMAE checkpoint loader.

APT (Liang et al. 2023, Sec. 3.1) encodes audio with a frozen AudioMAE ViT-B/16
(Huang et al. 2022, ``facebookresearch/AudioMAE`` ``models_vit.py``): a plain timm
``VisionTransformer`` with one input channel, 16 x 16 non-overlapping patches over a
``(time=1024, mel=128)`` log-mel "image" (64 x 8 = 512 patches + CLS), mean pooling of the
patch tokens followed by ``fc_norm`` (``global_pool=True``; the final ``norm`` is removed).

Here the same timm class is built at any size (:class:`AudioEncoderConfig`; tiny for CPU).
The adapter takes the front end's ``(B, 1, n_mels, frames)`` log-mel (see
:func:`polyprompt.audio.frontend.log_mel`) and transposes it to AudioMAE's
``(B, 1, frames, n_mels)`` layout, so official weights see their native patch order.

Example::

    >>> import torch
    >>> enc = build_audio_encoder(AudioEncoderConfig(n_mels=32, target_frames=64,
    ...                                              embed_dim=32, depth=1, num_heads=2))
    >>> tokens = enc.embed(torch.randn(2, 1, 32, 64))     # (B, 1 + 4*2, D)
    >>> tuple(tokens.shape)
    (2, 9, 32)
    >>> tuple(enc.audio_features(torch.randn(2, 1, 32, 64)).shape)   # all tokens after blocks
    (2, 9, 32)
    >>> tuple(enc.forward_features(torch.randn(2, 1, 32, 64)).shape)  # pooled (B, D)
    (2, 32)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from polyprompt.core.backbones.timm_vit import TimmViTAdapter
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import CheckpointError, ShapeError
from polyprompt.core.validation import check_tensor

__all__ = [
    "AUDIOMAE_VIT_B16",
    "AudioEncoderConfig",
    "AudioViTAdapter",
    "build_audio_encoder",
    "convert_audiomae_state_dict",
    "load_audiomae_checkpoint",
]


@dataclass
class AudioEncoderConfig(PromptConfig):
    """Architecture of the spectrogram ViT.

    Paper (AudioMAE ViT-B/16): ``n_mels=128, target_frames=1024, embed_dim=768, depth=12,
    num_heads=12`` (:data:`AUDIOMAE_VIT_B16`). Defaults here are the CPU example's size:
    128 mel bins x 256 frames (2.56 s), width 192, 4 blocks -> 16 x 8 = 128 patches.
    """

    n_mels: int = 128
    target_frames: int = 256
    patch_size: int = 16
    embed_dim: int = 192
    depth: int = 4
    num_heads: int = 3
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        self.require_ints(
            "n_mels", "target_frames", "patch_size", "embed_dim", "depth", "num_heads"
        )
        r(self.n_mels % self.patch_size == 0, "n_mels", "must be divisible by patch_size")
        r(
            self.target_frames % self.patch_size == 0,
            "target_frames",
            "must be divisible by patch_size",
        )
        r(self.embed_dim % self.num_heads == 0, "embed_dim", "must be divisible by num_heads")

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(time, mel)``."""
        return self.target_frames // self.patch_size, self.n_mels // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]


AUDIOMAE_VIT_B16 = AudioEncoderConfig(
    n_mels=128, target_frames=1024, patch_size=16, embed_dim=768, depth=12, num_heads=12
)


class AudioViTAdapter(TimmViTAdapter):
    """A timm ``VisionTransformer`` over log-mel spectrograms, as a :class:`PromptableBackbone`.

    ``embed`` takes the front end's ``(B, 1, n_mels, target_frames)`` and transposes it to
    AudioMAE's ``(B, 1, time, mel)``; everything else (blocks, prefix tuning, pooling) is
    the core :class:`~polyprompt.core.backbones.timm_vit.TimmViTAdapter`, so core methods
    (``linear_probe``, ``full_finetune``, ``vpt``) run on it unchanged.
    """

    def __init__(self, model: Any, config: AudioEncoderConfig) -> None:
        super().__init__(model)
        self.audio_config = config

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(B, 1, n_mels, frames)`` -> tokens ``(B, 1 + N, D)``.

        Raises:
            ShapeError: not ``(B, 1, n_mels, target_frames)`` (says which dimension).
            NonFiniteError: NaN / inf values.
        """
        where = "AudioViTAdapter.embed"
        c = self.audio_config
        check_tensor(x, "spectrogram", finite=False, where=where)
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, c.n_mels, c.target_frames):
            raise ShapeError(
                f"{where}: spectrogram must be (B, 1, n_mels={c.n_mels}, frames={c.target_frames}) "
                f"(polyprompt.audio.frontend.log_mel with the same n_mels / target_frames), "
                f"got shape {tuple(x.shape)}"
            )
        return super().embed(x.transpose(-1, -2))

    def audio_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the last block, ``(B, 1 + N, D)`` (AudioMAE's ``audio_embedding``:
        CLS + patch tokens, no final norm) — what APT's aligner cross-attends to."""
        return self.forward_blocks(self.embed(x))

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["audio_config"] = self.audio_config.to_dict()
        return ident


def build_audio_encoder(config: AudioEncoderConfig | None = None) -> AudioViTAdapter:
    """A randomly initialised AudioMAE-style timm ViT wrapped in :class:`AudioViTAdapter`.

    Same timm arguments as AudioMAE's ``vit_base_patch16`` (``qkv_bias=True``, LayerNorm
    eps 1e-6, ``global_pool`` mean + ``fc_norm``) with ``img_size=(frames, n_mels)``,
    ``in_chans=1`` and no classifier head.
    """
    from functools import partial

    from timm.models.vision_transformer import VisionTransformer

    c = config or AudioEncoderConfig()
    vit = VisionTransformer(
        img_size=(c.target_frames, c.n_mels),
        patch_size=c.patch_size,
        in_chans=1,
        num_classes=0,
        global_pool="avg",
        embed_dim=c.embed_dim,
        depth=c.depth,
        num_heads=c.num_heads,
        mlp_ratio=c.mlp_ratio,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    )
    return AudioViTAdapter(vit, c)


# -- official checkpoint ----------------------------------------------------------
_DROP_PREFIXES = ("decoder_", "mask_token", "head.")


def convert_audiomae_state_dict(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official AudioMAE state dict -> this package's timm encoder state dict.

    Accepts the pre-training layout (``models_mae.py``: ``cls_token``, ``pos_embed``
    ``(1, 513, 768)``, ``patch_embed.proj.{weight,bias}``, ``blocks.N.*``, ``norm.*``,
    ``mask_token``, ``decoder_*``) and the fine-tuned layout (``models_vit.py``:
    ``fc_norm.*``, ``head.*``), optionally wrapped as ``{"model": state}`` (AudioMAE's
    ``torch.save({"model": ...})``). Decoder / mask token / classifier keys are dropped;
    the pre-training ``norm.*`` (per-token norm) becomes ``fc_norm.*`` (the norm after
    mean pooling, as AudioMAE's fine-tuning initialises it) when no ``fc_norm`` is present.

    Returns ``(state, dropped_keys)``.
    """
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    has_fc_norm = any(k.startswith("fc_norm.") for k in state)
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            dropped.append(key)
            continue
        if key.startswith(_DROP_PREFIXES):
            dropped.append(key)
        elif key.startswith("norm."):
            if has_fc_norm:
                dropped.append(key)
            else:
                out["fc_norm." + key[len("norm.") :]] = value
        else:
            out[key] = value
    return out, dropped


def _infer_config(state: Mapping[str, torch.Tensor], n_mels: int, num_heads: int | None):
    where = "load_audiomae_checkpoint"
    for key in ("patch_embed.proj.weight", "pos_embed", "cls_token"):
        if key not in state:
            raise CheckpointError(
                f"{where}: key {key!r} missing; not an AudioMAE ViT state dict "
                f"(first keys: {sorted(state)[:6]})"
            )
    w = state["patch_embed.proj.weight"]
    if w.dim() != 4 or w.shape[1] != 1 or w.shape[2] != w.shape[3]:
        raise CheckpointError(
            f"{where}: patch_embed.proj.weight must be (D, 1, p, p) (one input channel), "
            f"got {tuple(w.shape)}"
        )
    dim, patch = int(w.shape[0]), int(w.shape[2])
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    n = int(state["pos_embed"].shape[1]) - 1
    f = n_mels // patch
    if f == 0 or n % f:
        raise CheckpointError(
            f"{where}: pos_embed holds {n} patches, not a multiple of n_mels/patch = {f}"
        )
    heads = num_heads or max(1, dim // 64)
    return AudioEncoderConfig(
        n_mels=n_mels,
        target_frames=(n // f) * patch,
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
    )


def load_audiomae_checkpoint(
    source: str | Path | Mapping[str, torch.Tensor],
    *,
    n_mels: int = 128,
    num_heads: int | None = None,
    target_frames: int | None = None,
) -> AudioViTAdapter:
    """Build an :class:`AudioViTAdapter` from an official AudioMAE checkpoint.

    Args:
        source: path of ``pretrained.pth`` / ``finetuned.pth`` (read with
            ``torch.load(weights_only=True)``: no pickle code runs) or a state dict.
        n_mels: mel bins the checkpoint was trained on (128 for AudioMAE).
        num_heads: attention heads (not stored in the weights; default ``dim // 64``:
            12 for ViT-B).
        target_frames: resample the time axis of ``pos_embed`` to this many frames
            (AudioMAE's own ``interpolate_pos_embed`` for other clip lengths); default:
            the checkpoint's (1024 for AudioSet).

    Raises:
        CheckpointError: unreadable file, missing / unexpected / mis-shaped keys.
    """
    where = "load_audiomae_checkpoint"
    if isinstance(source, (str, Path)):
        from polyprompt.core.checkpoint import load_torch_state

        try:
            state = load_torch_state(source)
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"{where}: cannot read {source}: {exc}") from exc
    else:
        state = source
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{where}: expected a state dict, got {type(state).__name__}")
    state, _ = convert_audiomae_state_dict(state)
    cfg = _infer_config(state, n_mels, num_heads)
    if target_frames is not None and target_frames != cfg.target_frames:
        from timm.layers import resample_abs_pos_embed

        old_grid = cfg.grid
        cfg = AudioEncoderConfig(**{**cfg.to_dict(), "target_frames": target_frames})
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"],
            new_size=list(cfg.grid),
            old_size=list(old_grid),
            num_prefix_tokens=1,
        )
    encoder = build_audio_encoder(cfg)
    expected = encoder.model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: key mismatch with the AudioMAE ViT layout; missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{where}: {key} has shape {tuple(value.shape)}, expected "
                f"{tuple(expected[key].shape)} for {cfg}"
            )
    encoder.model.load_state_dict(state, strict=True)
    return encoder
