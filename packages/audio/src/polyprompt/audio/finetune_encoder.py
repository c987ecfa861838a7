"""Supervised second stage of the in-situ encoder (AudioMAE's fine-tuning stage), cached.

AudioMAE (Huang et al. 2022, ``facebookresearch/AudioMAE`` ``main_finetune_as.py``) is trained
in two stages: masked-autoencoder pre-training, then supervised fine-tuning on labelled audio
(AudioSet-2M), with the patch tokens mean-pooled (``global_pool``) into a normed linear head.
The released fine-tuned encoder is what audio-language models usually freeze.

At the scale this package can pre-train on a CPU the first stage alone does not give the frozen
encoder much to offer: on the validation speakers a logistic probe on its pooled features
recognises the spoken word less well after 150-1,500 MAE steps (39-55 %) than on a randomly
initialised encoder (53 %), and far less well than on the mean log-mel itself (91 %; README,
"Encoder"). This module runs the second stage on **labelled speech that is disjoint from the
tasks**: the espeak-ng pre-training corpus
(:func:`~polyprompt.audio.data.corpus.pretraining_clips`: other words, training speakers only),
one linear head per synthesis attribute (word, gender, speed, noise, accent), summed
cross-entropy. The heads are discarded; the encoder is then frozen for APT and every baseline.

Cache: ``polyprompt_home()/audio/audio-ft-<key>.safetensors`` (key = the starting encoder's
weights, the labels, the spectrograms and :class:`FinetuneConfig`), written atomically.

Example::

    >>> import torch
    >>> from polyprompt.audio.encoder import AudioEncoderConfig, build_audio_encoder
    >>> enc = build_audio_encoder(AudioEncoderConfig(n_mels=32, target_frames=64, embed_dim=32,
    ...     depth=1, num_heads=2))
    >>> specs = torch.randn(8, 1, 32, 64)
    >>> labels = {"gender": ["man", "woman"] * 4}
    >>> enc, info = finetune_audio_encoder(enc, specs, labels, FinetuneConfig(steps=2,
    ...     batch_size=4), progress=False, cache=False)
    >>> info["from_cache"], enc.training
    (False, False)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from polyprompt.audio.encoder import AudioViTAdapter
from polyprompt.audio.pretrain_encoder import check_spectrogram_batch, load_cached_encoder
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import InputError
from polyprompt.core.io import polyprompt_home
from polyprompt.core.schedules import warmup_cosine

__all__ = ["FinetuneConfig", "finetune_audio_encoder"]

_FORMAT = "polyprompt-audio-attribute-ft/1"


@dataclass
class FinetuneConfig(PromptConfig):
    """Supervised encoder stage (AudioMAE fine-tuning: AdamW, warm-up + cosine, weight decay
    0.05, mean-pooled patch tokens -> LayerNorm -> linear head per label set)."""

    steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_ints("steps", "batch_size")
        self.require(self.lr > 0, "lr", "must be > 0")
        self.require(self.weight_decay >= 0, "weight_decay", "must be >= 0")


class _AttributeHeads(nn.Module):
    """``global_pool`` (mean of the patch tokens) -> ``fc_norm`` -> one linear head per label set."""

    def __init__(self, dim: int, sizes: Mapping[str, int]) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.heads = nn.ModuleDict({name: nn.Linear(dim, n) for name, n in sizes.items()})

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.norm(tokens[:, 1:].mean(1))
        return {name: head(pooled) for name, head in self.heads.items()}


def _encode_labels(labels: Mapping[str, Sequence[Any]], n: int) -> dict[str, torch.Tensor]:
    where = "finetune_audio_encoder"
    if not labels:
        raise InputError(f"{where}: labels is empty (need at least one label set)")
    out = {}
    for name, values in labels.items():
        if len(values) != n:
            raise InputError(
                f"{where}: labels[{name!r}] has {len(values)} entries for {n} spectrograms"
            )
        vocab = sorted({str(v) for v in values})
        if len(vocab) < 2:
            raise InputError(f"{where}: labels[{name!r}] has a single class {vocab}")
        index = {v: i for i, v in enumerate(vocab)}
        out[name] = torch.tensor([index[str(v)] for v in values])
    return out


def _key(
    encoder: AudioViTAdapter,
    specs: torch.Tensor,
    labels: Mapping[str, Sequence[Any]],
    cfg: FinetuneConfig,
) -> str:
    h = hashlib.sha256()
    h.update(_FORMAT.encode())
    h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    h.update(
        json.dumps({k: [str(v) for v in vs] for k, vs in labels.items()}, sort_keys=True).encode()
    )
    for name, tensor in sorted(encoder.model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    h.update(str(tuple(specs.shape)).encode())
    h.update(specs.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def finetune_audio_encoder(
    encoder: AudioViTAdapter,
    spectrograms: torch.Tensor,
    labels: Mapping[str, Sequence[Any]],
    config: FinetuneConfig | None = None,
    *,
    progress: bool = True,
    cache: bool = True,
) -> tuple[AudioViTAdapter, dict[str, Any]]:
    """Fine-tune ``encoder`` (in place) on ``(N, 1, n_mels, frames)`` log-mels with one
    classification head per entry of ``labels`` (``name -> N labels``), or load the cached
    result. Returns ``(encoder, info)``, the encoder frozen (eval, no grad); ``info``:
    ``from_cache``, ``first_loss``, ``final_loss``, ``train_accuracy`` (per label set, last
    100 steps), ``seconds``, ``path``.

    Raises:
        ShapeError: spectrograms not ``(N, 1, n_mels, target_frames)`` of the encoder.
        InputError: a label set of the wrong length or with a single class.
    """
    from polyprompt.core.checkpoint import save_state
    from polyprompt.core.progress import progress_bar

    cfg = config or FinetuneConfig()
    check_spectrogram_batch(spectrograms, encoder.audio_config, "finetune_audio_encoder")
    n = spectrograms.shape[0]
    targets = _encode_labels(labels, n)
    key = _key(encoder, spectrograms, labels, cfg)
    path = polyprompt_home() / "audio" / f"audio-ft-{key}.safetensors"
    cached = load_cached_encoder(encoder, path) if cache else None
    if cached is not None:
        return encoder, cached

    t0 = time.time()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    heads = _AttributeHeads(encoder.embed_dim, {k: int(v.max()) + 1 for k, v in targets.items()})
    encoder.train().requires_grad_(True)
    params = [*encoder.parameters(), *heads.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, cfg.steps // 10)

    def factor(step: int) -> float:
        return warmup_cosine(step, warm, cfg.steps)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    first = ema = None
    hits = {k: 0 for k in targets}
    seen = 0
    bar = progress_bar(range(cfg.steps), desc="fine-tune encoder", enabled=progress, unit="step")
    for step in bar:
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen)
        logits = heads(encoder.audio_features(spectrograms[idx]))
        loss = sum(nn.functional.cross_entropy(logits[k], targets[k][idx]) for k in targets) / len(
            targets
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        value = float(loss.detach())
        first = value if first is None else first
        ema = value if ema is None else 0.9 * ema + 0.1 * value
        if step >= cfg.steps - 100:
            seen += len(idx)
            for k in targets:
                hits[k] += int((logits[k].argmax(-1) == targets[k][idx]).sum())
        bar.set_postfix(loss=f"{ema:.3f}")
    encoder.eval().requires_grad_(False)
    info = {
        "first_loss": first,
        "final_loss": ema,
        "train_accuracy": {k: hits[k] / max(1, seen) for k in targets},
        "seconds": time.time() - t0,
        "num_spectrograms": int(n),
        "label_sets": sorted(targets),
        "format": _FORMAT,
    }
    if cache:
        save_state(path, encoder.model.state_dict(), {"info": json.dumps(info)})
    return encoder, {**info, "from_cache": False, "path": str(path)}
