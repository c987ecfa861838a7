"""In-situ source pre-training of the SegFormer, cached under ``polyprompt_home()``.

No SegFormer / MiT weights ship in a wheel, so the examples train the small MiT +
all-MLP decoder on the labelled *source* scenes (AdamW, cosine schedule, cross-entropy, ignore 255; SegFormer's
photometric distortion + flip augmentation) with
the core :class:`~polyprompt.core.trainer.Trainer`, and cache the weights at
``polyprompt_home()/adapt/segformer-<key>.safetensors`` (atomic write). ``key`` hashes the
architecture, the training settings and the source data's fingerprint, so a change in
any of them trains again. This is also the *source-only* starting point of every variant
(as DAFormer/MIC start from the same initialisation).

Example::

    >>> net = pretrain_source(task.source, MiTConfig.small(), PretrainConfig(epochs=1))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from polyprompt.adapt.backbone import MiTConfig, SegFormerBackbone
from polyprompt.adapt.data.common import SegmentationSet
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import CheckpointError, InputError
from polyprompt.core.io import atomic_write, polyprompt_home

_FORMAT = "2"


@dataclass
class PretrainConfig(PromptConfig):
    epochs: int = 20
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(self.epochs >= 1, "epochs", "must be >= 1")
        self.require(self.batch_size >= 1, "batch_size", "must be >= 1")
        self.require(self.lr > 0, "lr", "must be > 0")


def cache_path(mit: MiTConfig, cfg: PretrainConfig, source: SegmentationSet) -> Path:
    payload = json.dumps(
        {
            "format": _FORMAT,
            "mit": mit.to_dict(),
            "train": cfg.to_dict(),
            "data": source.fingerprint(),
            "classes": source.num_classes,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return polyprompt_home() / "adapt" / f"segformer-{key}.safetensors"


def photometric_distortion(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mmseg's ``PhotoMetricDistortion`` + ``RandomFlip`` of SegFormer's training pipeline,
    per image: brightness delta U(-32, 32)/255, contrast and saturation U(0.5, 1.5) (each with
    p 0.5), horizontal flip (p 0.5). Uses the global torch RNG (seeded by the Trainer)."""
    b = x.shape[0]

    def coin() -> torch.Tensor:
        return (torch.rand(b, 1, 1, 1) < 0.5).float()

    x = x + coin() * (torch.rand(b, 1, 1, 1) * 64 - 32) / 255
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + (x - mean) * (1 + coin() * (torch.rand(b, 1, 1, 1) - 0.5))
    gray = x.mean(1, keepdim=True)
    x = gray + (x - gray) * (1 + coin() * (torch.rand(b, 1, 1, 1) - 0.5))
    flip = torch.rand(b) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    y = torch.where(flip.view(b, 1, 1), y.flip(-1), y)
    return x.clamp(0, 1), y


def _step(model: SegFormerBackbone, batch):
    x, y = batch
    if model.training:
        x, y = photometric_distortion(x, y)
    logits = model(x)
    return F.cross_entropy(logits, y, ignore_index=255), logits, y


def pretrain_source(
    source: SegmentationSet,
    mit: MiTConfig | None = None,
    cfg: PretrainConfig | None = None,
    *,
    cache: bool = True,
    progress: bool = True,
    verbose: bool = True,
) -> SegFormerBackbone:
    """Train (or load from cache) a SegFormer on the labelled source set."""
    from safetensors.torch import load_file, save_file
    from torch.utils.data import TensorDataset

    from polyprompt.core.trainer import Trainer, TrainerConfig

    if not isinstance(source, SegmentationSet) or source.labels is None:
        raise InputError("pretrain_source: the source set must be a labelled SegmentationSet")
    mit = mit or MiTConfig.small()
    cfg = cfg or PretrainConfig()
    torch.manual_seed(cfg.seed)
    net = SegFormerBackbone(mit, source.num_classes)
    path = cache_path(mit, cfg, source) if cache else None
    if path is not None and path.is_file():
        try:
            state = load_file(str(path))
            net.model.load_state_dict(state)
        except Exception as exc:  # corrupt or stale cache: train again
            warnings.warn(
                f"pretrain_source: cache {path} unusable ({exc}); training again", stacklevel=2
            )
        else:
            if verbose:
                print(f"source SegFormer: loaded from cache {path}", flush=True)
            return net.eval()
    start = time.perf_counter()
    if verbose:
        print(
            f"source SegFormer: pre-training on {len(source)} source scenes for {cfg.epochs} "
            "epochs (cached afterwards)",
            flush=True,
        )
    trainer = Trainer(
        TrainerConfig(
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            scheduler="cosine",
            seed=cfg.seed,
            progress=progress,
            device="cpu",
            monitor="val_loss",
            restore_best=False,
        ),
        step_fn=_step,
        metric=None,
    )
    trainer.fit(net, TensorDataset(source.images, source.labels))
    net.eval()
    if path is not None:
        state = {k: v.detach().contiguous() for k, v in net.model.state_dict().items()}
        try:
            atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"format": _FORMAT}))
        except OSError as exc:
            raise CheckpointError(f"pretrain_source: cannot write cache {path} ({exc})") from exc
    if verbose:
        print(f"source SegFormer: trained in {time.perf_counter() - start:.0f} s", flush=True)
    return net
