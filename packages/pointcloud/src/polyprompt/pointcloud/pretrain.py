"""In-situ Point-MAE pre-training (masked point modelling), cached.

Point-MAE (Pang et al., ECCV 2022, Sec. 3; official ``models/Point_MAE.py`` ``Point_MAE`` /
``MaskTransformer``, ``cfgs/pretrain.yaml``):

* the cloud is split into ``G`` patches (FPS + kNN); a random 60 % of the patches are masked
  per cloud (``mask_type: rand``, ``mask_ratio: 0.6``);
* the encoder (the :class:`~polyprompt.pointcloud.backbone.PointMAEBackbone`'s mini-PointNet,
  position MLP and blocks — no CLS token in pre-training) sees only the visible patches;
* a light decoder (``decoder_depth`` timm blocks, its own position MLP) gets the encoded
  visible tokens plus a shared learnable ``mask_token`` for every masked patch;
* a ``Conv1d(D -> 3 * S)`` (``increase_dim``) predicts the masked patches' points, and the
  loss is the Chamfer distance with squared L2 (``cdl2``) to the true patches;
* AdamW (lr 1e-3, wd 0.05), linear warm-up + cosine; scale + translate augmentation.

No pre-trained Point-MAE ships in any wheel and nothing downloads at run time, so the
examples pre-train here on real meshes (``pybullet_data``, the furniture training split, trimesh
primitives)
and cache the encoder weights under ``polyprompt_home()/pointcloud/point-mae-<key>.safetensors``
(atomic; the key hashes architecture, settings and data). The official checkpoint loader is
:func:`~polyprompt.pointcloud.checkpoint.load_point_mae_checkpoint`.

Example::

    >>> import torch
    >>> from polyprompt.pointcloud.backbone import PointMAEConfig
    >>> clouds = torch.rand(16, 256, 3)
    >>> res = pretrain_point_mae(clouds, PointMAEConfig.tiny(),
    ...                          PointMAEPretrainConfig(epochs=1, batch_size=8), cache=False,
    ...                          progress=False)
    >>> res.losses[-1] > 0
    True
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from polyprompt.core.config import PromptConfig, is_int
from polyprompt.core.errors import CheckpointError, InputError
from polyprompt.core.io import polyprompt_home
from polyprompt.core.schedules import warmup_cosine
from polyprompt.pointcloud.backbone import PointMAEBackbone, PointMAEConfig
from polyprompt.pointcloud.ops import chamfer_l2, index_points

__all__ = [
    "PointMAEPretrainConfig",
    "PointMAEPretrainer",
    "PretrainedPointMAE",
    "pretrain_point_mae",
]

_FORMAT = "polyprompt-point-mae/1"


@dataclass
class PointMAEPretrainConfig(PromptConfig):
    """Settings of the masked point modelling (part of the cache key).

    Official values: mask_ratio 0.6, decoder_depth 4, decoder_num_heads 6, lr 1e-3, wd 0.05,
    300 epochs, 10 warm-up epochs, batch 128, 1024 points.
    """

    mask_ratio: float = 0.6
    decoder_depth: int = 4
    decoder_num_heads: int = 6
    epochs: int = 300
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 10
    num_points: int = 1024
    augment: bool = True
    seed: int = 0
    max_steps: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        r(
            isinstance(self.mask_ratio, (int, float)) and 0 < self.mask_ratio < 1,
            "mask_ratio",
            "must be in (0, 1)",
        )
        self.require_ints(
            "decoder_depth", "decoder_num_heads", "epochs", "batch_size", "num_points"
        )
        r(
            is_int(self.warmup_epochs) and 0 <= self.warmup_epochs <= self.epochs,
            "warmup_epochs",
            "must be an int in [0, epochs]",
        )
        r(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "must be > 0")
        r(
            self.max_steps is None or (is_int(self.max_steps) and self.max_steps >= 1),
            "max_steps",
            "None or an int >= 1 (caps the optimisation steps; the schedule spans them)",
        )

    @classmethod
    def small(cls) -> PointMAEPretrainConfig:
        """CPU settings for the examples (a few minutes on 2 cores)."""
        return cls(
            decoder_depth=2,
            decoder_num_heads=4,
            epochs=30,
            batch_size=32,
            warmup_epochs=2,
            num_points=512,
        )


class PointMAEPretrainer(nn.Module):
    """Point-MAE: the encoder (``MAE_encoder``) + decoder + point predictor.

    ``forward(points (B, N, 3))`` -> Chamfer-L2 loss of the masked patches (scalar).
    The encoder is a :class:`PointMAEBackbone`; its CLS token is unused here.
    """

    def __init__(self, encoder: PointMAEBackbone, config: PointMAEPretrainConfig) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        d = encoder.embed_dim
        if d % config.decoder_num_heads:
            raise InputError(
                f"PointMAEPretrainer: decoder_num_heads={config.decoder_num_heads} must divide "
                f"embed_dim={d}"
            )
        self.config = config
        self.MAE_encoder = encoder
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        hidden = encoder.config.pos_hidden
        self.decoder_pos_embed = nn.Sequential(
            nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, d)
        )
        self.MAE_decoder = nn.ModuleList(
            Block(d, config.decoder_num_heads, qkv_bias=False, norm_layer=nn.LayerNorm)
            for _ in range(config.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(d)
        self.increase_dim = nn.Conv1d(d, 3 * encoder.group_size, 1)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        for m in [self.decoder_pos_embed, self.MAE_decoder, self.increase_dim]:
            for mod in m.modules():
                if isinstance(mod, (nn.Linear, nn.Conv1d)):
                    nn.init.xavier_uniform_(mod.weight)
                    if mod.bias is not None:
                        nn.init.zeros_(mod.bias)

    def random_mask(self, batch: int, groups: int, device: torch.device) -> torch.Tensor:
        """``(B, G)`` bool, ``int(mask_ratio * G)`` True per row at random (``_mask_center_rand``)."""
        n_mask = int(self.config.mask_ratio * groups)
        order = torch.rand(batch, groups, device=device).argsort(dim=1)
        mask = torch.zeros(batch, groups, dtype=torch.bool, device=device)
        mask.scatter_(1, order[:, :n_mask], True)
        return mask

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        enc = self.MAE_encoder
        patches, centers = enc.group(points)  # (B, G, S, 3), (B, G, 3)
        b, g, s, _ = patches.shape
        mask = self.random_mask(b, g, patches.device)
        vis_idx = (~mask).nonzero()[:, 1].view(b, -1)
        msk_idx = mask.nonzero()[:, 1].view(b, -1)
        tokens = enc.encoder(patches)
        x = index_points(tokens, vis_idx)
        c_vis, c_msk = index_points(centers, vis_idx), index_points(centers, msk_idx)
        pos = enc.pos_embed(c_vis)
        for blk in enc.blocks:
            x = blk(x + pos)
        x = enc.norm(x)
        m = msk_idx.shape[1]
        x = torch.cat([x, self.mask_token.expand(b, m, -1)], dim=1)
        pos = torch.cat([self.decoder_pos_embed(c_vis), self.decoder_pos_embed(c_msk)], dim=1)
        for blk in self.MAE_decoder:
            x = blk(x + pos)
        x = self.decoder_norm(x[:, -m:])
        pred = self.increase_dim(x.transpose(1, 2)).transpose(1, 2).reshape(b * m, s, 3)
        target = index_points(patches, msk_idx).reshape(b * m, s, 3)
        return chamfer_l2(pred, target)


@dataclass
class PretrainedPointMAE:
    """A pre-trained (or cached) encoder and how it was made."""

    model: PointMAEBackbone
    backbone_config: PointMAEConfig
    pretrain_config: PointMAEPretrainConfig
    losses: list[float]
    path: Path | None
    from_cache: bool
    seconds: float
    key: str
    info: dict = field(default_factory=dict)

    def backbone(self) -> PointMAEBackbone:
        """An independent copy (trainable flags on, eval mode) for one method."""
        bb = copy.deepcopy(self.model)
        bb.requires_grad_(True)
        return bb.eval()


def cache_key(
    arch: PointMAEConfig, cfg: PointMAEPretrainConfig, data_fp: str, data_tag: str | None = None
) -> str:
    payload = {"format": _FORMAT, "arch": arch.to_dict(), "train": cfg.to_dict(), "data": data_fp}
    if data_tag is not None:
        payload["data_tag"] = data_tag
    payload = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _fingerprint(x: torch.Tensor) -> str:
    from polyprompt.core.cache import data_fingerprint

    return data_fingerprint(x)[:16]


def pretrain_point_mae(
    clouds: torch.Tensor,
    arch: PointMAEConfig | None = None,
    config: PointMAEPretrainConfig | None = None,
    *,
    cache: bool = True,
    progress: bool = True,
    verbose: bool = False,
    data_tag: str | None = None,
) -> PretrainedPointMAE:
    """Pre-train a :class:`PointMAEBackbone` with masked point modelling on ``clouds (M, N, 3)``.

    Cached: a second call with the same architecture, settings and clouds loads the weights.
    Each epoch draws a random subset of ``config.num_points`` points of every cloud and
    (``augment``) a scale + translate. ``data_tag`` names the data (e.g. the mesh set) in the cache
    key on top of the clouds' fingerprint.
    """
    from polyprompt.core.checkpoint import load_state, save_state
    from polyprompt.core.progress import progress_bar
    from polyprompt.pointcloud.data import PointAugment
    from polyprompt.pointcloud.ops import prepare_points

    arch = arch if arch is not None else PointMAEConfig.small()
    cfg = config if config is not None else PointMAEPretrainConfig.small()
    clouds = prepare_points(clouds, min_points=cfg.num_points, where="pretrain_point_mae")
    start = time.perf_counter()
    key = cache_key(arch, cfg, _fingerprint(clouds), data_tag)
    path = polyprompt_home() / "pointcloud" / f"point-mae-{key}.safetensors" if cache else None
    if path is not None and path.is_file():
        try:
            tensors, meta = load_state(path)
            if meta.get("format") != _FORMAT or meta.get("key") != key:
                raise CheckpointError("metadata mismatch")
            model = PointMAEBackbone(arch)
            model.load_state_dict(tensors)
            return PretrainedPointMAE(
                model.eval(),
                arch,
                cfg,
                list(meta["losses"]),
                path,
                True,
                time.perf_counter() - start,
                key,
                dict(meta.get("info", {})),
            )
        except (CheckpointError, KeyError, RuntimeError):
            pass  # unreadable / stale: train again and overwrite
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    encoder = PointMAEBackbone(arch)
    model = PointMAEPretrainer(encoder, cfg)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    m = clouds.shape[0]
    steps_per_epoch = max(1, math.ceil(m / cfg.batch_size))
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    warm = steps_per_epoch * cfg.warmup_epochs

    def lr_at(step: int) -> float:
        return warmup_cosine(step, warm, total)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    aug = PointAugment() if cfg.augment else None
    losses: list[float] = []
    bar = progress_bar(total=total, desc="Point-MAE pre-training", enabled=progress, unit="step")
    model.train()
    step = 0
    try:
        for _epoch in range(cfg.epochs):
            if step >= total:
                break
            order = torch.randperm(m, generator=gen)
            run, n = 0.0, 0
            for s in range(0, m, cfg.batch_size):
                idx = order[s : s + cfg.batch_size]
                if len(idx) < 2:
                    continue
                if step >= total:
                    break
                pts = clouds[idx]
                sub = torch.rand(len(idx), pts.shape[1], generator=gen).argsort(dim=1)
                pts = index_points(pts, sub[:, : cfg.num_points])
                if aug is not None:
                    pts = torch.stack([aug(p) for p in pts])
                loss = model(pts)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
                opt.step()
                sched.step()
                run += loss.item()
                n += 1
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{run / n:.4f}")
            losses.append(run / max(n, 1))
    finally:
        bar.close()
    encoder.eval()
    took = time.perf_counter() - start
    info = {"clouds": int(m), "steps": step, "seconds": round(took, 1)}
    if path is not None:
        meta = {"format": _FORMAT, "key": key, "losses": losses, "info": info}
        state = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
        save_state(path, state, meta)
    if verbose:
        print(
            f"Point-MAE pre-training: Chamfer-L2 {losses[0]:.4f} -> {losses[-1]:.4f} in {took:.0f} s"
        )
    return PretrainedPointMAE(encoder, arch, cfg, losses, path, False, took, key, info)
