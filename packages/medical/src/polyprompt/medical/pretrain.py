"""In-situ, label-free pre-training of the frozen backbones (no ViT weights ship offline).

DVPT adapts *large pre-trained* models (CLIP ViT-B/16). No pre-trained ViT weights install
offline here and nothing may download, so the examples pre-train their own small backbone
once, on real medical images, **without the downstream labels**: the self-supervised
rotation-prediction pretext of Gidaris et al., ICLR 2018 ("RotNet"): every training image is
shown at 0 / 90 / 180 / 270 degrees (in-plane, ``torch.rot90`` over the last two axes; for 3-D
patches that is the axial plane) and the network predicts which. The tumour / lobe labels
are never seen, so the adaptation methods start from a generic in-domain backbone, as DVPT
starts from a generic CLIP backbone.

* 2-D: a timm ``VisionTransformer`` (:class:`BackboneConfig`, ``kind="timm"``).
* 3-D: a MONAI ``ViT`` (``kind="monai"``, ``spatial_dims=3``).

The weights (head dropped) are cached as safetensors under
``polyprompt_home()/medical/<name>-<key>.safetensors``; ``key`` hashes the architecture, the
training settings and the images' fingerprint; the write is atomic; a second call loads the
file. Training uses the core ``Trainer`` (AdamW, warm-up + cosine, progress bars).

Example::

    >>> import torch
    >>> imgs = torch.rand(64, 1, 32, 32)
    >>> arch = BackboneConfig(embed_dim=32, depth=2, num_heads=2)
    >>> pb = pretrain_backbone(imgs, arch=arch, train=PretrainConfig(epochs=1),
    ...                        name="doc", cache=False, progress=False, verbose=False)
    >>> pb.backbone().embed_dim, 0.0 <= pb.pretext_accuracy <= 1.0
    (32, True)
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from polyprompt.core.config import PromptConfig, is_int
from polyprompt.core.errors import CheckpointError, InputError
from polyprompt.core.io import atomic_write, polyprompt_home

__all__ = ["BackboneConfig", "PretrainConfig", "PretrainedBackbone", "pretrain_backbone"]

_FORMAT = "polyprompt-medical-backbone/1"


@dataclass
class BackboneConfig(PromptConfig):
    """Architecture of a small ViT: timm (2-D) or MONAI (2-D / 3-D).

    Defaults: 32 x 32 grey input, 8 x 8 patches (16 tokens + CLS), width 64, 6 blocks of
    4 heads (about 0.3 M parameters), CLS pooling (``pool="avg"``: no CLS token, mean of the
    patch tokens).
    """

    kind: str = "timm"
    spatial_dims: int = 2
    img_size: int = 32
    patch_size: int = 8
    in_chans: int = 1
    embed_dim: int = 64
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    pool: str = "token"

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        r(self.kind in ("timm", "monai"), "kind", "must be 'timm' or 'monai'")
        r(self.spatial_dims in (2, 3), "spatial_dims", "must be 2 or 3")
        r(self.kind == "monai" or self.spatial_dims == 2, "spatial_dims", "timm ViTs are 2-D")
        for n in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads"):
            r(is_int(getattr(self, n)) and getattr(self, n) >= 1, n, "must be an int >= 1")
        r(self.img_size % self.patch_size == 0, "patch_size", "must divide img_size")
        r(self.embed_dim % self.num_heads == 0, "num_heads", "must divide embed_dim")
        r(self.pool in ("token", "avg"), "pool", "must be 'token' (CLS) or 'avg' (mean of patches)")

    def build(self) -> nn.Module:
        """A freshly initialised backbone adapter (no head)."""
        if self.kind == "timm":
            from timm.models.vision_transformer import VisionTransformer

            from polyprompt.medical.backbones import MedicalViTAdapter

            vit = VisionTransformer(
                img_size=self.img_size,
                patch_size=self.patch_size,
                in_chans=self.in_chans,
                num_classes=0,
                embed_dim=self.embed_dim,
                depth=self.depth,
                num_heads=self.num_heads,
                mlp_ratio=float(self.mlp_ratio),
                global_pool=self.pool,
                class_token=self.pool == "token",
            )
            return MedicalViTAdapter(vit)
        from monai.networks.nets import ViT

        from polyprompt.medical.backbones import MonaiViTAdapter

        vit = ViT(
            in_channels=self.in_chans,
            img_size=self.img_size,
            patch_size=self.patch_size,
            hidden_size=self.embed_dim,
            mlp_dim=int(self.embed_dim * self.mlp_ratio),
            num_layers=self.depth,
            num_heads=self.num_heads,
            classification=self.pool == "token",
            num_classes=2,
            post_activation="none",
            spatial_dims=self.spatial_dims,
            qkv_bias=True,
        )
        return MonaiViTAdapter(vit, img_size=self.img_size)


@dataclass
class PretrainConfig(PromptConfig):
    """Rotation-pretext training settings (part of the cache key)."""

    epochs: int = 6
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        r(is_int(self.epochs) and self.epochs >= 1, "epochs", "must be an int >= 1")
        r(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "must be an int >= 1")
        r(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "must be > 0")
        r(
            is_int(self.warmup_epochs) and 0 <= self.warmup_epochs <= self.epochs,
            "warmup_epochs",
            "must be in [0, epochs]",
        )
        r(0 < self.val_fraction < 0.5, "val_fraction", "must be in (0, 0.5)")


@dataclass
class PretrainedBackbone:
    """The pre-trained backbone adapter (shared: use :meth:`backbone` for a private copy)."""

    model: nn.Module
    arch: BackboneConfig
    train: PretrainConfig
    pretext_accuracy: float
    path: Path | None
    from_cache: bool
    seconds: float
    key: str

    def backbone(self) -> nn.Module:
        """An independent deep copy (full fine-tuning changes the weights)."""
        bb = copy.deepcopy(self.model)
        bb.requires_grad_(True)
        return bb.eval()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


class _Rotations(torch.utils.data.Dataset):
    """Every image at 0/90/180/270 degrees (in the last two axes), label = quarter turns."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return 4 * len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, k = self.images[i // 4], i % 4
        return torch.rot90(img, k, dims=(-2, -1)).contiguous(), k


class _WithHead(nn.Module):
    def __init__(self, backbone: nn.Module, classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(int(backbone.embed_dim), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))


def _key(arch: BackboneConfig, cfg: PretrainConfig, fingerprint: str) -> str:
    payload = json.dumps(
        {"format": _FORMAT, "arch": arch.to_dict(), "train": cfg.to_dict(), "data": fingerprint},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def pretrain_backbone(
    images: torch.Tensor,
    *,
    arch: BackboneConfig | None = None,
    train: PretrainConfig | None = None,
    name: str = "backbone",
    cache: bool = True,
    progress: bool = True,
    verbose: bool = True,
) -> PretrainedBackbone:
    """Pre-train (or load from cache) a backbone on ``images`` with the rotation pretext.

    Args:
        images: unlabelled training images ``(N, C, H, W)`` or volumes ``(N, C, D, H, W)``
            (square in the last two axes, so rotations keep the shape).
        arch, train: :class:`BackboneConfig` / :class:`PretrainConfig`.
        name: cache file prefix.

    Returns:
        :class:`PretrainedBackbone`; ``pretext_accuracy`` is the rotation accuracy on a
        held-out ``val_fraction`` of the images.
    """
    from polyprompt.core.cache import data_fingerprint
    from polyprompt.core.trainer import Trainer, TrainerConfig

    arch = arch or BackboneConfig()
    cfg = train or PretrainConfig()
    if not isinstance(images, torch.Tensor) or images.dim() != 2 + arch.spatial_dims:
        raise InputError(
            f"pretrain_backbone: images must be a tensor (N, C, {'D, ' if arch.spatial_dims == 3 else ''}"
            f"H, W), got {getattr(images, 'shape', type(images).__name__)}"
        )
    if images.shape[-1] != images.shape[-2]:
        raise InputError("pretrain_backbone: rotations need square images in the last two axes")
    start = time.perf_counter()
    key = _key(arch, cfg, data_fingerprint(images))
    path = polyprompt_home() / "medical" / f"{name}-{key}.safetensors" if cache else None
    if path is not None and path.is_file():
        try:
            model, acc = _load(path, arch, key)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; pre-training again", stacklevel=2)
        else:
            took = time.perf_counter() - start
            if verbose:
                print(f"{name}: loaded from {path} (rotation accuracy {acc:.1%})", flush=True)
            return PretrainedBackbone(model, arch, cfg, acc, path, True, took, key)
    gen = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(len(images), generator=gen)
    n_val = max(1, round(cfg.val_fraction * len(images)))
    val, tr = images[perm[:n_val]], images[perm[n_val:]]
    if verbose:
        print(
            f"{name}: pre-training a {arch.kind} ViT (dim {arch.embed_dim}, depth {arch.depth}) "
            f"with the rotation pretext on {len(tr)} unlabelled real images x 4 rotations, "
            f"{cfg.epochs} epochs (cached afterwards)",
            flush=True,
        )
    torch.manual_seed(cfg.seed)
    net = _WithHead(arch.build(), 4)
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
    trainer.fit(net, _Rotations(tr), _Rotations(val))
    acc = float(trainer.evaluate(net, _Rotations(val))["metric"])
    model = net.backbone.eval()
    took = time.perf_counter() - start
    if path is not None:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in model.model.state_dict().items()}
        meta = {
            "format": _FORMAT,
            "key": key,
            "pretext_accuracy": f"{acc:.6f}",
            "arch": arch.to_json(),
        }
        atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
    if verbose:
        print(f"{name}: rotation accuracy {acc:.1%} after {took:.0f} s", flush=True)
    return PretrainedBackbone(model, arch, cfg, acc, path, False, took, key)


def _load(path: Path, arch: BackboneConfig, key: str) -> tuple[nn.Module, float]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:
        raise CheckpointError(f"backbone cache {path} is unreadable: {exc}") from None
    if meta.get("format") != _FORMAT or meta.get("key") != key:
        raise CheckpointError(f"backbone cache {path}: metadata does not match key {key}")
    adapter = arch.build()
    try:
        adapter.model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"backbone cache {path} does not fit: {exc}") from None
    return adapter.eval(), float(meta["pretext_accuracy"])
