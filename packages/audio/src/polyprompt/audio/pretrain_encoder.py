"""In-situ masked-autoencoder pre-training of the spectrogram ViT (AudioMAE recipe), cached.

APT's encoder is AudioMAE (Huang et al. 2022, ``facebookresearch/AudioMAE`` ``models_mae.py``),
self-supervised on AudioSet: patchify the log-mel, drop a random 80 % of the patches
(``mask_ratio=0.8``, unstructured), encode the visible ones with the ViT, and let a light
transformer decoder reconstruct the per-patch *normalised* values of the masked patches
(``norm_pix_loss=True``; MSE on masked patches only). No AudioMAE weights ship offline, so
the example runs this recipe at small scale on real speech (the DATA helper's espeak-ng
clips, training split only) and caches the encoder:

    polyprompt_home()/audio/audiomae-<key>.safetensors

``key`` hashes the encoder and pre-training configs and the spectrogram data. The file is
written atomically (:func:`polyprompt.core.checkpoint.save_state`); a second call loads it.
Only the encoder is kept (the decoder is discarded, as in AudioMAE fine-tuning).

Example::

    >>> import torch
    >>> specs = torch.randn(8, 1, 32, 64)
    >>> enc, info = pretrain_audio_mae(specs, AudioEncoderConfig(n_mels=32, target_frames=64,
    ...     embed_dim=32, depth=1, num_heads=2), MAEConfig(steps=2, batch_size=4),
    ...     progress=False, cache=False)
    >>> info["from_cache"], enc.embed_dim
    (False, 32)
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from polyprompt.audio.encoder import AudioEncoderConfig, AudioViTAdapter, build_audio_encoder
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import ShapeError
from polyprompt.core.io import polyprompt_home
from polyprompt.core.schedules import warmup_cosine

__all__ = [
    "MAEConfig",
    "MaskedAutoencoder",
    "check_spectrogram_batch",
    "load_cached_encoder",
    "pretrain_audio_mae",
]

_FORMAT = "polyprompt-audio-audiomae/1"


@dataclass
class MAEConfig(PromptConfig):
    """AudioMAE pre-training settings (paper: mask 0.8, decoder 512 wide x 16 blocks —
    here a 2-block decoder; AdamW lr 2e-4 x batch/256 with warm-up + cosine)."""

    mask_ratio: float = 0.8
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        r(0.0 < self.mask_ratio < 1.0, "mask_ratio", "must be in (0, 1)")
        for name in ("decoder_dim", "decoder_depth", "decoder_heads", "steps", "batch_size"):
            v = getattr(self, name)
            r(isinstance(v, int) and v >= 1, name, "must be an int >= 1")
        r(self.decoder_dim % self.decoder_heads == 0, "decoder_dim", "divisible by decoder_heads")
        r(self.lr > 0, "lr", "must be > 0")


class MaskedAutoencoder(nn.Module):
    """AudioMAE around an :class:`AudioViTAdapter` (``models_mae.MaskedAutoencoderViT``)."""

    def __init__(self, encoder: AudioViTAdapter, cfg: MAEConfig) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        self.encoder = encoder
        self.cfg = cfg
        d, p = encoder.embed_dim, encoder.audio_config.patch_size
        n = encoder.audio_config.num_patches
        self.enc_norm = nn.LayerNorm(d, eps=1e-6)  # models_mae's encoder ``norm``
        self.decoder_embed = nn.Linear(d, cfg.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.randn(1, n + 1, cfg.decoder_dim) * 0.02)
        self.decoder_blocks = nn.Sequential(
            *[
                Block(cfg.decoder_dim, cfg.decoder_heads, qkv_bias=True)
                for _ in range(cfg.decoder_depth)
            ]
        )
        self.decoder_norm = nn.LayerNorm(cfg.decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(cfg.decoder_dim, p * p)
        nn.init.normal_(self.mask_token, std=0.02)

    def patchify(self, spec: torch.Tensor) -> torch.Tensor:
        """``(B, 1, n_mels, frames)`` -> ``(B, N, p*p)`` in the encoder's (time, mel) patch order."""
        c = self.encoder.audio_config
        x = spec.transpose(-1, -2)  # (B, 1, T, F) as AudioMAE
        b, p = x.shape[0], c.patch_size
        gt, gf = c.grid
        x = x.reshape(b, gt, p, gf, p).permute(0, 1, 3, 2, 4)
        return x.reshape(b, gt * gf, p * p)

    def forward(self, spec: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE of the reconstructed masked patches (scalar)."""
        m = self.encoder.model
        tokens = self.encoder.embed(spec)  # (B, 1 + N, D), positions added
        cls, patches = tokens[:, :1], tokens[:, 1:]
        b, n, d = patches.shape
        keep = max(1, int(n * (1 - self.cfg.mask_ratio)))
        noise = torch.rand(b, n, generator=generator).to(spec.device)
        shuffle = noise.argsort(dim=1)
        restore = shuffle.argsort(dim=1)
        kept = patches.gather(1, shuffle[:, :keep, None].expand(-1, -1, d))
        x = torch.cat([cls, kept], dim=1)
        for blk in m.blocks:
            x = blk(x)
        x = self.decoder_embed(self.enc_norm(x))
        mask_tokens = self.mask_token.expand(b, n - keep, -1)
        y = torch.cat([x[:, 1:], mask_tokens], dim=1)
        y = y.gather(1, restore[..., None].expand(-1, -1, y.shape[-1]))
        y = torch.cat([x[:, :1], y], dim=1) + self.decoder_pos_embed
        y = self.decoder_pred(self.decoder_norm(self.decoder_blocks(y)))[:, 1:]
        target = self.patchify(spec)
        if self.cfg.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        mask = torch.ones(b, n, device=spec.device)
        mask[:, :keep] = 0
        mask = mask.gather(1, restore)
        loss = ((y - target) ** 2).mean(-1)
        return (loss * mask).sum() / mask.sum()


def check_spectrogram_batch(spectrograms: Any, config: AudioEncoderConfig, where: str) -> None:
    """Raise :class:`ShapeError` unless ``spectrograms`` is ``(N, 1, n_mels, target_frames)``."""
    c = config
    if (
        not isinstance(spectrograms, torch.Tensor)
        or spectrograms.dim() != 4
        or tuple(spectrograms.shape[1:]) != (1, c.n_mels, c.target_frames)
    ):
        shape = tuple(spectrograms.shape) if isinstance(spectrograms, torch.Tensor) else None
        raise ShapeError(
            f"{where}: spectrograms must be (N, 1, {c.n_mels}, {c.target_frames}), got {shape}"
        )


def load_cached_encoder(encoder: AudioViTAdapter, path: Any) -> dict[str, Any] | None:
    """Load a cached encoder written by a pre-training stage into ``encoder`` (frozen) and return
    its ``info`` with ``from_cache=True``; ``None`` when ``path`` does not exist."""
    from polyprompt.core.checkpoint import load_state

    if not path.exists():
        return None
    state, meta = load_state(path)
    encoder.model.load_state_dict(state)
    encoder.eval().requires_grad_(False)
    info = json.loads(meta.get("info", "{}"))
    return {**info, "from_cache": True, "path": str(path)}


def _key(enc_cfg: AudioEncoderConfig, cfg: MAEConfig, specs: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(_FORMAT.encode())
    h.update(json.dumps([enc_cfg.to_dict(), cfg.to_dict()], sort_keys=True).encode())
    h.update(str(tuple(specs.shape)).encode())
    h.update(specs.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def pretrain_audio_mae(
    spectrograms: torch.Tensor,
    encoder_config: AudioEncoderConfig | None = None,
    config: MAEConfig | None = None,
    *,
    progress: bool = True,
    cache: bool = True,
) -> tuple[AudioViTAdapter, dict[str, Any]]:
    """MAE-pre-train (or load from cache) the encoder on ``(N, 1, n_mels, frames)`` log-mels.

    Returns ``(encoder, info)`` with the encoder frozen (eval, no grad) and ``info``:
    ``from_cache``, ``final_loss``, ``first_loss``, ``seconds``, ``path``.
    """
    from polyprompt.core.checkpoint import save_state
    from polyprompt.core.progress import progress_bar

    enc_cfg = encoder_config or AudioEncoderConfig()
    cfg = config or MAEConfig()
    where = "pretrain_audio_mae"
    check_spectrogram_batch(spectrograms, enc_cfg, where)
    key = _key(enc_cfg, cfg, spectrograms)
    path = polyprompt_home() / "audio" / f"audiomae-{key}.safetensors"
    torch.manual_seed(cfg.seed)  # the encoder's initial weights too: same cache key, same encoder
    encoder = build_audio_encoder(enc_cfg)
    cached = load_cached_encoder(encoder, path) if cache else None
    if cached is not None:
        return encoder, cached
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    mae = MaskedAutoencoder(encoder, cfg)
    mae.train()
    opt = torch.optim.AdamW(
        mae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95)
    )
    warm = max(1, cfg.steps // 10)

    def factor(step: int) -> float:
        return warmup_cosine(step, warm, cfg.steps)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    n = spectrograms.shape[0]
    first = ema = None
    bar = progress_bar(range(cfg.steps), desc="pre-train AudioMAE", enabled=progress, unit="step")
    for _ in bar:
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen)
        loss = mae(spectrograms[idx], generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mae.parameters(), 1.0)
        opt.step()
        sched.step()
        value = float(loss.detach())
        first = value if first is None else first
        ema = value if ema is None else 0.9 * ema + 0.1 * value
        bar.set_postfix(loss=f"{ema:.3f}")
    encoder.eval().requires_grad_(False)
    info = {
        "first_loss": first,
        "final_loss": ema,
        "seconds": time.time() - t0,
        "num_spectrograms": int(n),
        "format": _FORMAT,
    }
    if cache:
        save_state(path, encoder.model.state_dict(), {"info": json.dumps(info)})
    return encoder, {**info, "from_cache": False, "path": str(path)}
