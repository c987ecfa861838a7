"""In-situ pre-training of the demo backbone: a small timm ViT trained on real MNIST, cached.

No pre-trained ViT ships in any wheel and nothing may download at run time, so the demo
pre-trains its own backbone: a real ``timm.models.vision_transformer.VisionTransformer``
(:class:`DemoViTConfig`) trained supervised on the MNIST train split (:mod:`.data`) with the
polyprompt :class:`~polyprompt.core.trainer.Trainer`. The backbone weights (head dropped)
are cached as safetensors under::

    polyprompt_home() / "demo" / f"digit-vit-{key}.safetensors"

``key`` hashes the architecture, the training settings (epochs, seed, ...) and the MNIST data
fingerprint, so any change trains a new backbone and a stale one is never reused. The write
is atomic; a second call loads the file (well under a second) and reports the MNIST test
accuracy stored in the file's metadata.

Example::

    >>> from polyprompt.core.demo.pretrain import pretrain_digit_vit
    >>> vit = pretrain_digit_vit(quick=True)            # doctest: +SKIP
    >>> vit.mnist_test_accuracy > 0.5, vit.from_cache   # doctest: +SKIP
    (True, False)
    >>> vit.backbone().embed(torch.zeros(2, 1, 32, 32)).shape   # doctest: +SKIP
    torch.Size([2, 17, 96])
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from polyprompt.core.config import PromptConfig, is_int
from polyprompt.core.errors import CheckpointError
from polyprompt.core.io import atomic_write, polyprompt_home

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

    from polyprompt.core.backbones.timm_vit import TimmViTAdapter

__all__ = ["DemoViTConfig", "PretrainConfig", "PretrainedDigitViT", "pretrain_digit_vit"]

_CACHE_FORMAT = "polyprompt-demo-vit/1"


@dataclass
class DemoViTConfig(PromptConfig):
    """Architecture of the demo backbone (a timm ``VisionTransformer``, 1 grey channel).

    Defaults: 32 x 32 input, 8 x 8 patches (16 patch tokens + CLS), width 96, 6 blocks of
    3 heads, CLS pooling — about 0.7 M parameters, small enough to pre-train on 2 CPU
    cores in about two minutes. (4 x 4 patches, 64 tokens, cost ~4x more per step on CPU
    and need more steps to reach the same MNIST accuracy.)
    """

    img_size: int = 32
    patch_size: int = 8
    in_chans: int = 1
    embed_dim: int = 96
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    global_pool: str = "token"
    class_token: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        self.require_ints("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads")
        r(self.img_size % self.patch_size == 0, "patch_size", "must divide img_size")
        r(self.embed_dim % self.num_heads == 0, "num_heads", "must divide embed_dim")
        r(
            isinstance(self.mlp_ratio, (int, float)) and self.mlp_ratio > 0,
            "mlp_ratio",
            "must be > 0",
        )
        r(self.global_pool in ("token", "avg"), "global_pool", "must be 'token' or 'avg'")
        r(isinstance(self.class_token, bool), "class_token", "must be a bool")
        r(
            self.class_token or self.global_pool != "token",
            "global_pool",
            "'token' pooling needs class_token=True",
        )

    def build(self, num_classes: int = 0) -> VisionTransformer:
        """A freshly initialised timm ``VisionTransformer`` (``num_classes=0``: no head)."""
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer(
            img_size=self.img_size,
            patch_size=self.patch_size,
            in_chans=self.in_chans,
            num_classes=num_classes,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=float(self.mlp_ratio),
            global_pool=self.global_pool,
            class_token=self.class_token,
        )


@dataclass
class PretrainConfig(PromptConfig):
    """How the demo backbone is pre-trained on MNIST (part of the cache key).

    ``max_train_samples`` caps the MNIST train split (stratified); ``None`` uses all of it.
    """

    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    max_train_samples: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        r(is_int(self.epochs) and self.epochs >= 1, "epochs", "must be an int >= 1")
        r(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "must be an int >= 1")
        r(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "must be > 0")
        r(
            isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0,
            "weight_decay",
            "must be >= 0",
        )
        r(
            is_int(self.warmup_epochs) and 0 <= self.warmup_epochs <= self.epochs,
            "warmup_epochs",
            "must be an int in [0, epochs]",
        )
        r(
            self.max_train_samples is None
            or (is_int(self.max_train_samples) and self.max_train_samples >= 10),
            "max_train_samples",
            "must be None or an int >= 10",
        )
        r(is_int(self.seed) and self.seed >= 0, "seed", "must be an int >= 0")

    @classmethod
    def quick(cls) -> PretrainConfig:
        """Smoke-test settings (about half a minute): 2,000 samples, 5 epochs."""
        return cls(epochs=5, max_train_samples=2000, batch_size=32, lr=3e-3, warmup_epochs=1)


@dataclass
class PretrainedDigitViT:
    """The pre-trained demo backbone and how it was made.

    Attributes:
        model: the timm ViT without head (``num_classes=0``), eval mode. Shared: use
            :meth:`backbone` to get an independent copy for each method.
        vit_config, pretrain_config: what was built and how it was trained.
        mnist_test_accuracy: top-1 accuracy of backbone + pre-training head on the MNIST
            test split (never seen in training or model selection).
        path: the cache file (``None`` with ``cache=False``).
        from_cache: loaded from ``path`` instead of trained.
        seconds: time to train (or load).
        key: the cache key.
    """

    model: VisionTransformer
    vit_config: DemoViTConfig
    pretrain_config: PretrainConfig
    mnist_test_accuracy: float
    path: Path | None
    from_cache: bool
    seconds: float
    key: str

    def backbone(self) -> TimmViTAdapter:
        """A fresh :class:`~polyprompt.core.backbones.timm_vit.TimmViTAdapter` over a deep copy
        of the weights (full fine-tuning changes them; every method gets its own copy)."""
        from polyprompt.core.backbones.timm_vit import TimmViTAdapter

        model = copy.deepcopy(self.model)
        model.requires_grad_(True)
        return TimmViTAdapter(model.eval())

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def cache_key(vit: DemoViTConfig, train: PretrainConfig, data_fingerprint: str) -> str:
    """sha256 (first 16 hex digits) of architecture + training settings + data fingerprint."""
    payload = json.dumps(
        {
            "format": _CACHE_FORMAT,
            "arch": vit.to_dict(),
            "train": train.to_dict(),
            "data": data_fingerprint,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_path(key: str) -> Path:
    """``polyprompt_home()/demo/digit-vit-<key>.safetensors``."""
    return polyprompt_home() / "demo" / f"digit-vit-{key}.safetensors"


def _load_cached(path: Path, vit: DemoViTConfig, key: str) -> tuple[VisionTransformer, float]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open API
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"demo backbone cache {path} is unreadable: {exc}") from exc
    if meta.get("format") != _CACHE_FORMAT or meta.get("key") != key:
        raise CheckpointError(
            f"demo backbone cache {path}: metadata does not match (format "
            f"{meta.get('format')!r}, key {meta.get('key')!r}, expected {key!r})"
        )
    model = vit.build(num_classes=0)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise CheckpointError(f"demo backbone cache {path} does not fit the model: {exc}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"demo backbone cache {path}: missing keys {list(missing)[:5]}, "
            f"unexpected keys {list(unexpected)[:5]}"
        )
    try:
        acc = float(meta["mnist_test_accuracy"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"demo backbone cache {path}: no test accuracy in metadata") from exc
    return model.eval(), acc


def _save(path: Path, model: VisionTransformer, meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    state = {
        k: v.detach().to("cpu").contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith("head.")
    }
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def pretrain_digit_vit(
    *,
    quick: bool = False,
    cache: bool = True,
    vit_config: DemoViTConfig | None = None,
    pretrain_config: PretrainConfig | None = None,
    progress: bool = True,
    verbose: bool = True,
) -> PretrainedDigitViT:
    """Pre-train (or load from cache) the demo ViT on the real MNIST train split.

    Args:
        quick: use :meth:`PretrainConfig.quick` (its own cache key) unless
            ``pretrain_config`` is given.
        cache: read / write ``polyprompt_home()/demo/digit-vit-<key>.safetensors``.
        vit_config: architecture (default :class:`DemoViTConfig`).
        pretrain_config: training settings (default :class:`PretrainConfig`).
        progress: Trainer progress bars.
        verbose: print what happens (training / loading, accuracy, cache file).

    Returns:
        :class:`PretrainedDigitViT`; ``mnist_test_accuracy`` is measured on the MNIST test
        split, which neither training nor model selection (val split) saw.
    """
    import torch

    from polyprompt.core.demo.data import few_shot, load_mnist, split_digits
    from polyprompt.core.trainer import Trainer, TrainerConfig

    vit = vit_config if vit_config is not None else DemoViTConfig()
    cfg = pretrain_config or (PretrainConfig.quick() if quick else PretrainConfig())
    start = time.perf_counter()
    mnist = load_mnist()
    key = cache_key(vit, cfg, mnist.fingerprint())
    path = cache_path(key) if cache else None

    if path is not None and path.is_file():
        try:
            model, acc = _load_cached(path, vit, key)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; pre-training again", stacklevel=2)
        else:
            took = time.perf_counter() - start
            if verbose:
                print(
                    f"demo backbone: loaded from cache {path} "
                    f"(MNIST test accuracy {acc:.2%}, {took:.1f} s)",
                    flush=True,
                )
            return PretrainedDigitViT(model, vit, cfg, acc, path, True, took, key)

    splits = split_digits(mnist, val_fraction=0.1, test_fraction=0.2, seed=0)
    train = splits.train
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train):
        train = few_shot(
            train,
            labels_per_class=max(1, cfg.max_train_samples // train.num_classes),
            seed=cfg.seed,
        )
    if verbose:
        print(
            f"demo backbone: pre-training a timm ViT (patch {vit.patch_size}, dim "
            f"{vit.embed_dim}, depth {vit.depth}) on {len(train)} real MNIST digits for "
            f"{cfg.epochs} epochs (cached afterwards)",
            flush=True,
        )
    torch.manual_seed(cfg.seed)
    model = vit.build(num_classes=train.num_classes)
    trainer = Trainer(
        TrainerConfig(
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            scheduler="cosine",
            warmup_epochs=cfg.warmup_epochs,
            grad_clip=1.0,
            seed=cfg.seed,
            progress=progress,
            device="cpu",
        ),
        metric="accuracy",
    )
    trainer.fit(model, train.dataset(), splits.val.dataset())
    acc = float(trainer.evaluate(model, splits.test.dataset())["metric"])
    model.reset_classifier(0)
    model.eval()
    took = time.perf_counter() - start
    if path is not None:
        meta = {
            "format": _CACHE_FORMAT,
            "key": key,
            "mnist_test_accuracy": f"{acc:.6f}",
            "arch": vit.to_json(),
            "train": cfg.to_json(),
            "train_seconds": f"{took:.1f}",
        }
        _save(path, model, meta)
    if verbose:
        where = f", cached at {path}" if path is not None else ""
        print(f"demo backbone: MNIST test accuracy {acc:.2%} after {took:.0f} s{where}", flush=True)
    return PretrainedDigitViT(model, vit, cfg, acc, path, False, took, key)
