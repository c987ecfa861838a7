"""CoDA's self-training: EMA mean teacher, confident pseudo-labels, ClassMix, MIC, chain schedule.

One iteration (DAFormer ``dacs.py`` / MIC ``masking_consistency_module.py``, as CoDA uses them):

1. **Source loss** -- cross-entropy of the student on labelled source images.
2. **Teacher** -- the EMA of the student, ``theta_T <- a theta_T + (1 - a) theta_S`` with
   ``a = min(1 - 1/(t + 1), alpha)`` (alpha 0.99), updated before it predicts; it sees
   the *un-augmented* target image (with its own, EMA'd, prompts). As in DAFormer's
   ``dacs.py`` / MIC's ``teacher_module.py`` the EMA model stays in *training* mode with
   only dropout / DropPath switched off, so its BatchNorm layers normalise with the
   statistics of the target batch (``teacher_batch_stats``; ``False`` = full eval mode
   with EMA'd running statistics, which collapses pseudo-labels on dark scenes here).
3. **Pseudo-labels** -- arg-max of the teacher's softmax; their pixel weight is the
   fraction of target pixels whose confidence is >= ``pseudo_threshold`` (0.968), one
   scalar per batch as in DAFormer; optional ignored top / bottom rows.
4. **ClassMix** -- half of the classes present in each source label map are pasted onto
   the paired target image (labels: source labels there, pseudo-labels elsewhere;
   weights 1 there, the pseudo weight elsewhere), followed by DAFormer's strong
   augmentation (``dacs_transforms.py``): colour jitter (brightness, contrast, saturation,
   hue, strength 0.2) *unless* a uniform draw is <= ``color_jitter_p`` (0.2, i.e. applied
   80% of the time), Gaussian blur (sigma ``U(0.15, 1.15)``) when a uniform draw is > 0.5.
5. **MIC** (option ``mic``) -- the strongly augmented target image with random
   ``mask_block_size`` blocks removed (``mask_ratio`` 0.7) must reproduce the teacher's
   pseudo-labels (same weighting), weighted by ``mic_lambda`` (1).
6. **Chain-of-Domain** (``chain``) -- which target images an iteration draws: easy ones,
   hard ones, in cycles until ``cycle_until``, then all (:mod:`polyprompt.adapt.chain`).

Optimisation (DAFormer ``schedules/adamw.py`` + ``poly10warm.py``, CoDA's configs): AdamW,
``lr`` 6e-5, the decode head at ``head_lr_mult`` x ``lr`` (10), no weight decay on norm
layers, a linear warm-up over ``warmup_iters`` (1500 of 40k; ratio 1e-6) into a poly
(power 1) decay to 0 at ``iterations``.

The loop is the core :class:`~polyprompt.core.trainer.Trainer` (with those parameter
groups and that schedule) and a ``step_fn``: seeded, progress bars, and exact resume from
``checkpoint_dir`` -- the teacher's weights and the iteration counter are persistent
buffers of the training wrapper, so they are saved and restored with the student, the
optimizer and the scheduler.

Variants (:class:`Variant`): ``source_only`` (source loss only), ``self_training``
(DAFormer-style, no prompts), ``savpt`` (self-training + SAVPT, no chain), ``coda``
(SAVPT + chain).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from polyprompt.adapt.chain import ChainOfDomainSchedule, ChainPhase
from polyprompt.adapt.data.common import SegmentationSet
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import ConfigError, InputError


class Variant(str, Enum):
    SOURCE_ONLY = "source_only"
    SELF_TRAINING = "self_training"
    SAVPT = "savpt"
    CODA = "coda"

    @property
    def uses_savpt(self) -> bool:
        return self in (Variant.SAVPT, Variant.CODA)

    @property
    def uses_chain(self) -> bool:
        return self is Variant.CODA

    @property
    def self_trains(self) -> bool:
        return self is not Variant.SOURCE_ONLY


@dataclass
class SelfTrainingConfig(PromptConfig):
    """Self-training settings (paper / DAFormer defaults where they exist)."""

    iterations: int = 40000
    iters_per_epoch: int = 500  # Trainer epoch = checkpoint interval
    batch_size: int = 2  # source and target images per iteration (each)
    lr: float = 6e-5
    weight_decay: float = 0.01
    head_lr_mult: float = 10.0  # official paramwise_cfg: head=dict(lr_mult=10.0)
    norm_decay_mult: float = 0.0  # official paramwise_cfg: norm=dict(decay_mult=0.0)
    warmup_iters: int = 1500  # poly10warm: linear warm-up, warmup_ratio 1e-6
    lr_power: float = 1.0  # poly power; 0 = constant lr after the warm-up
    alpha: float = 0.99
    teacher_batch_stats: bool = True  # EMA model in train mode, dropout/DropPath off
    pseudo_threshold: float = 0.968
    ignore_top: int = 0
    ignore_bottom: int = 0
    classmix: bool = True
    color_jitter_p: float = 0.2
    color_jitter_s: float = 0.2
    blur: bool = True
    mic: bool = True
    mask_ratio: float = 0.7
    mask_block_size: int = 64
    mic_lambda: float = 1.0
    chain: bool = True
    cycle_until: int = 12000
    chain_period: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        r(self.iterations >= 1, "iterations", "must be >= 1")
        r(self.iters_per_epoch >= 1, "iters_per_epoch", "must be >= 1")
        r(self.batch_size >= 1, "batch_size", "must be >= 1")
        r(self.lr > 0, "lr", "must be > 0")
        r(self.head_lr_mult > 0, "head_lr_mult", "must be > 0")
        r(self.norm_decay_mult >= 0, "norm_decay_mult", "must be >= 0")
        r(self.warmup_iters >= 0, "warmup_iters", "must be >= 0")
        r(self.lr_power >= 0, "lr_power", "must be >= 0")
        r(0 <= self.alpha < 1, "alpha", "must be in [0, 1)")
        r(0 <= self.pseudo_threshold < 1, "pseudo_threshold", "must be in [0, 1)")
        r(0 <= self.color_jitter_p <= 1, "color_jitter_p", "must be in [0, 1]")
        r(0 < self.mask_ratio < 1, "mask_ratio", "must be in (0, 1)")
        r(self.mask_block_size >= 1, "mask_block_size", "must be >= 1")
        r(self.mic_lambda >= 0, "mic_lambda", "must be >= 0")
        r(self.chain_period >= 2, "chain_period", "must be >= 2")
        r(self.cycle_until >= 0, "cycle_until", "must be >= 0")
        r(self.ignore_top >= 0 and self.ignore_bottom >= 0, "ignore_top", "rows must be >= 0")

    @property
    def schedule(self) -> ChainOfDomainSchedule:
        return ChainOfDomainSchedule(cycle_until=self.cycle_until, period=self.chain_period)

    @classmethod
    def scaled(cls, iterations: int, **changes: Any) -> SelfTrainingConfig:
        """Paper proportions for a short run: chain until 30% of the run, 3 cycles; the
        warm-up keeps DAFormer's 1500/40000 share of the iterations."""
        s = ChainOfDomainSchedule.for_run(iterations)
        base = {
            "iterations": iterations,
            "cycle_until": s.cycle_until,
            "chain_period": s.period,
            "warmup_iters": round(iterations * 1500 / 40000),
        }
        base.update(changes)
        return cls(**base)


# ---------------------------------------------------------------------------
# augmentations (DAFormer's strong_transform: colour jitter + Gaussian blur; ClassMix; MIC)
# ---------------------------------------------------------------------------
def hue_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of ``(B, 3, H, W)`` RGB images in ``[0, 1]`` by ``shift`` (``(B,)``,
    fractions of a turn), keeping saturation and value."""
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    sat = torch.where(maxc > 0, delta / maxc.clamp_min(1e-8), torch.zeros_like(maxc))
    dc = delta.clamp_min(1e-8)
    r, g, b = x.unbind(1)
    rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    h = (h + shift.view(-1, 1, 1).to(x)) % 1.0
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    v = maxc
    p_, q, t = v * (1 - sat), v * (1 - sat * f), v * (1 - sat * (1 - f))
    table = torch.stack(
        [
            torch.stack([v, t, p_]),
            torch.stack([q, v, p_]),
            torch.stack([p_, v, t]),
            torch.stack([p_, q, v]),
            torch.stack([t, p_, v]),
            torch.stack([v, p_, q]),
        ]
    )  # (6, 3, B, H, W)
    idx = i.unsqueeze(0).unsqueeze(0).expand(1, 3, *i.shape)
    return table.gather(0, idx)[0].permute(1, 0, 2, 3).contiguous()


def color_jitter(x: torch.Tensor, p: float, s: float, gen: torch.Generator) -> torch.Tensor:
    """DAFormer's ``color_jitter``: when a uniform draw (one per batch) is ``> p``, kornia's
    ``ColorJitter(brightness=s, contrast=s, saturation=s, hue=s)`` -- per image, factors in
    ``U(1-s, 1+s)`` and a hue rotation in ``U(-s, s)`` of a turn. ``p=0.2``: applied 80% of
    the time (the official ``if color_jitter > p``)."""
    b = x.shape[0]
    if float(torch.rand(1, generator=gen)) <= p:
        return x
    f = (1 + (torch.rand(3, b, generator=gen) * 2 - 1) * s).to(x.device)
    hue = (torch.rand(b, generator=gen) * 2 - 1) * s
    y = (x * f[0].view(b, 1, 1, 1)).clamp(0, 1)
    mean = y.mean((1, 2, 3), keepdim=True)
    y = ((y - mean) * f[1].view(b, 1, 1, 1) + mean).clamp(0, 1)
    gray = y.mean(1, keepdim=True)
    y = ((y - gray) * f[2].view(b, 1, 1, 1) + gray).clamp(0, 1)
    return hue_shift(y, hue).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """DAFormer's ``gaussian_blur``: when a uniform draw (one per batch) is ``> p``, every
    image is blurred with its own sigma in ``U(0.15, 1.15)`` (kernel ~10% of the side)."""
    if float(torch.rand(1, generator=gen)) <= p:
        return x
    out = x.clone()
    k = max(3, math.ceil(0.1 * x.shape[-1]) | 1)
    coords = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
    for i in range(x.shape[0]):
        sigma = 0.15 + float(torch.rand(1, generator=gen))
        g = torch.exp(-(coords**2) / (2 * sigma**2))
        g = (g / g.sum()).to(x.dtype)
        img = x[i : i + 1]
        img = F.conv2d(
            F.pad(img, (k // 2, k // 2, 0, 0), mode="reflect"),
            g.view(1, 1, 1, k).repeat(3, 1, 1, 1),
            groups=3,
        )
        img = F.conv2d(
            F.pad(img, (0, 0, k // 2, k // 2), mode="reflect"),
            g.view(1, 1, k, 1).repeat(3, 1, 1, 1),
            groups=3,
        )
        out[i : i + 1] = img
    return out


def classmix_masks(labels: torch.Tensor, ignore_index: int, gen: torch.Generator) -> torch.Tensor:
    """``(B, H, W)`` bool: pixels of a random half of the classes in each source map."""
    masks = []
    for lab in labels:
        classes = lab.unique()
        classes = classes[classes != ignore_index]
        n = int(classes.numel())
        if n == 0:
            masks.append(torch.zeros_like(lab, dtype=torch.bool))
            continue
        k = (n + n % 2) // 2
        chosen = classes[torch.randperm(n, generator=gen)[:k].to(classes.device)]
        masks.append(torch.isin(lab, chosen))
    return torch.stack(masks)


def block_mask(
    shape: tuple[int, int, int], ratio: float, block: int, gen: torch.Generator, device: Any
) -> torch.Tensor:
    """MIC's ``BlockMaskGenerator``: ``(B, 1, H, W)`` float, 0 on masked blocks."""
    b, h, w = shape
    small = (
        torch.rand(b, 1, max(1, round(h / block)), max(1, round(w / block)), generator=gen) > ratio
    ).float()
    return F.interpolate(small, size=(h, w), mode="nearest").to(device)


def weighted_ce(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None, ignore_index: int
) -> torch.Tensor:
    """Pixel-weighted cross-entropy averaged over all pixels (mmseg's ``weight_reduce_loss``)."""
    loss = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    if weight is not None:
        loss = loss * weight
    return loss.mean()


# ---------------------------------------------------------------------------
# EMA mean teacher (weights kept as persistent buffers -> saved/resumed by the Trainer)
# ---------------------------------------------------------------------------
def _is_dropout(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.dropout._DropoutNd) or type(m).__name__.endswith("DropPath")


class MeanTeacher(nn.Module):
    """EMA copy of a student's ``state_dict``; ``forward`` runs the student's code on it.

    ``batch_stats=True`` (DAFormer / MIC): the teacher predicts in *training* mode with
    dropout and DropPath off, so BatchNorm uses the statistics of the batch it sees (the
    target batch); the EMA'd running statistics are left untouched. ``False``: eval mode.

    Example::

        >>> student = nn.Linear(2, 2)
        >>> teacher = MeanTeacher(student)
        >>> torch.equal(teacher(torch.ones(1, 2)), student(torch.ones(1, 2)))
        True
    """

    def __init__(self, student: nn.Module, *, batch_stats: bool = True) -> None:
        super().__init__()
        self._student = [student]  # not a submodule: its weights are not duplicated here
        self.batch_stats = bool(batch_stats)
        self._buffer_names = {n for n, _ in student.named_buffers()}
        self._names: dict[str, str] = {}
        for name, t in student.state_dict().items():
            key = "ema__" + name.replace(".", "__")
            self._names[name] = key
            self.register_buffer(key, t.detach().clone())

    @property
    def student(self) -> nn.Module:
        return self._student[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, key) for name, key in self._names.items()}

    @torch.no_grad()
    def update(self, iteration: int, alpha: float) -> float:
        """``theta_T <- a theta_T + (1 - a) theta_S``, ``a = min(1 - 1/(t+1), alpha)``; t=0 copies."""
        a = min(1 - 1 / (iteration + 1), alpha)
        for name, t in self.student.state_dict().items():
            ema = getattr(self, self._names[name])
            if ema.is_floating_point():
                ema.mul_(a).add_(t.detach(), alpha=1 - a)
            else:
                ema.copy_(t)
        return a

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        from torch.func import functional_call

        student = self.student
        was = student.training
        tensors = self.tensors()
        if self.batch_stats:
            student.train()
            for m in student.modules():
                if _is_dropout(m):
                    m.training = False
            # BatchNorm in train mode updates running stats in place: give it copies
            tensors = {n: t.clone() if n in self._buffer_names else t for n, t in tensors.items()}
        else:
            student.eval()
        try:
            return functional_call(student, tensors, args, kwargs)
        finally:
            student.train(was)


class _UDAModule(nn.Module):
    """Student + teacher + iteration counter; ``forward`` computes one iteration's loss."""

    def __init__(self, student: nn.Module, cfg: SelfTrainingConfig, variant: Variant) -> None:
        super().__init__()
        self.student = student
        self.teacher = (
            MeanTeacher(student, batch_stats=cfg.teacher_batch_stats)
            if variant.self_trains
            else None
        )
        self.cfg = cfg
        self.variant = variant
        self.schedule = cfg.schedule if (cfg.chain and variant.uses_chain) else None
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self.ignore_index = 255
        self.stats: dict[str, float] = {}
        self.phase_counts = {p.value: 0 for p in ChainPhase}

    def forward(
        self,
        src: torch.Tensor,
        src_lbl: torch.Tensor,
        easy: torch.Tensor,
        hard: torch.Tensor,
        mixed: torch.Tensor,
    ) -> torch.Tensor:
        cfg, ign = self.cfg, self.ignore_index
        t = int(self.iteration)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + t)
        student = self.student
        loss = weighted_ce(student(src), src_lbl, None, ign)
        self.stats = {"src_loss": float(loss.detach())}
        if self.teacher is not None:
            phase = self.schedule.phase(t) if self.schedule is not None else ChainPhase.ALL
            self.phase_counts[phase.value] += 1
            tgt = {ChainPhase.EASY: easy, ChainPhase.HARD: hard, ChainPhase.ALL: mixed}[phase]
            tgt_hard = student.severity(tgt) if hasattr(student, "severity") else None
            self.teacher.update(t, cfg.alpha)
            probs = torch.softmax(
                self.teacher(tgt, tgt_hard) if tgt_hard is not None else self.teacher(tgt), 1
            )
            conf, pseudo = probs.max(1)
            pw_value = float((conf >= cfg.pseudo_threshold).float().mean())
            pw = torch.full_like(conf, pw_value)
            if cfg.ignore_top:
                pw[:, : cfg.ignore_top] = 0
            if cfg.ignore_bottom:
                pw[:, -cfg.ignore_bottom :] = 0
            kw = {} if tgt_hard is None else {"hard": tgt_hard}
            if cfg.classmix:
                m = classmix_masks(src_lbl, ign, gen).to(src.device)
                mix_img = torch.where(m.unsqueeze(1), src, tgt)
                mix_lbl = torch.where(m, src_lbl, pseudo)
                mix_w = torch.where(m, torch.ones_like(pw), pw)
            else:
                mix_img, mix_lbl, mix_w = tgt, pseudo, pw
            mix_img = self._strong(mix_img, gen)
            mix_loss = weighted_ce(student(mix_img, **kw), mix_lbl, mix_w, ign)
            loss = loss + mix_loss
            self.stats.update({"mix_loss": float(mix_loss.detach()), "pseudo_weight": pw_value})
            if cfg.mic:
                masked = self._strong(tgt, gen) * block_mask(
                    tuple(pseudo.shape), cfg.mask_ratio, cfg.mask_block_size, gen, tgt.device
                )
                mic_loss = weighted_ce(student(masked, **kw), pseudo, pw, ign)
                loss = loss + cfg.mic_lambda * mic_loss
                self.stats["mic_loss"] = float(mic_loss.detach())
        self.iteration += 1
        return loss

    def _strong(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        x = color_jitter(x, cfg.color_jitter_p, cfg.color_jitter_s, gen)
        return gaussian_blur(x, gen) if cfg.blur else x


# ---------------------------------------------------------------------------
# data: source pairs + easy / hard / all target draws per item
# ---------------------------------------------------------------------------
class _UDAData(Dataset):
    def __init__(
        self,
        source: SegmentationSet,
        target: SegmentationSet,
        hard: torch.Tensor,
        length: int,
        seed: int,
    ) -> None:
        self.source, self.target = source, target
        rng = np.random.default_rng(seed)
        all_idx = np.arange(len(target))
        hard_idx = all_idx[hard.numpy()]
        easy_idx = all_idx[~hard.numpy()]
        for name, pool in (("easy", easy_idx), ("hard", hard_idx)):
            if len(pool) == 0:
                warnings.warn(
                    f"self-training: the target set has no {name} image under the severity "
                    "rule; its chain phases draw from all target images",
                    stacklevel=3,
                )
        easy_idx = easy_idx if len(easy_idx) else all_idx
        hard_idx = hard_idx if len(hard_idx) else all_idx
        self.src = rng.integers(0, len(source), size=length)
        self.easy = rng.choice(easy_idx, size=length)
        self.hard = rng.choice(hard_idx, size=length)
        self.all = rng.choice(all_idx, size=length)

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int):
        s, t = self.source, self.target.images
        return (
            s.images[self.src[i]],
            s.labels[self.src[i]],
            t[self.easy[i]],
            t[self.hard[i]],
            t[self.all[i]],
        )


def _step(model: _UDAModule, batch: Any):
    src, lbl, easy, hard, mixed = batch
    loss = model(src, lbl, easy, hard, mixed)
    return loss, lbl, lbl


def param_groups(
    named: list[tuple[str, nn.Parameter]], lr: float, weight_decay: float, cfg: SelfTrainingConfig
) -> list[dict[str, Any]]:
    """mmcv ``paramwise_cfg`` of the official configs: ``head`` (``decode_head``) parameters at
    ``head_lr_mult`` x ``lr``; ``norm`` layers (names containing ``norm``) at
    ``norm_decay_mult`` x ``weight_decay``. Empty groups are dropped."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in named:
        key = ("decode_head" in name, "norm" in name)
        groups.setdefault(key, []).append(param)
    return [
        {
            "params": params,
            "lr": lr * (cfg.head_lr_mult if head else 1.0),
            "weight_decay": weight_decay * (cfg.norm_decay_mult if norm else 1.0),
        }
        for (head, norm), params in sorted(groups.items())
    ]


def poly_warmup_factor(step: int, total: int, warmup: int, power: float = 1.0) -> float:
    """mmcv ``PolyLrUpdaterHook`` (``min_lr`` 0) with ``warmup='linear'``, ``warmup_ratio`` 1e-6:
    ``(1 - t/T)^power``, times ``1 - (1 - t/W)(1 - 1e-6)`` during the first ``W`` steps."""
    poly = max(0.0, 1.0 - step / max(1, total)) ** power
    if step < warmup:
        return poly * (1.0 - (1.0 - step / warmup) * (1.0 - 1e-6))
    return poly


def _core_trainer(cfg: SelfTrainingConfig, trainer_config: Any, step_fn: Any) -> Any:
    """The core Trainer with the official parameter groups and poly + warm-up schedule."""
    from polyprompt.core.trainer import Trainer

    def groups(named: list[tuple[str, nn.Parameter]]) -> list[dict[str, Any]]:
        return param_groups(named, trainer_config.lr, trainer_config.weight_decay, cfg)

    def schedule(step: int, total_steps: int) -> float:
        total = min(total_steps, cfg.iterations)
        return poly_warmup_factor(step, total, cfg.warmup_iters, cfg.lr_power)

    return Trainer(
        trainer_config, step_fn=step_fn, metric=None, param_groups=groups, lr_schedule=schedule
    )


@dataclass
class UDAResult:
    seconds: float
    iterations: int
    seconds_per_iteration: float
    history: list[dict[str, Any]]
    phase_counts: dict[str, int]
    teacher: MeanTeacher | None


class UDATrainer:
    """Run one variant of CoDA's self-training on a student (``CoDA`` module).

    Example::

        >>> trainer = UDATrainer(SelfTrainingConfig.scaled(100), Variant.CODA)  # doctest: +SKIP
        >>> result = trainer.fit(student, task.source, task.target_train)      # doctest: +SKIP
    """

    def __init__(
        self,
        config: SelfTrainingConfig,
        variant: Variant | str = Variant.CODA,
        *,
        progress: bool = True,
        checkpoint_dir: str | None = None,
        device: str = "cpu",
    ) -> None:
        if not isinstance(config, SelfTrainingConfig):
            raise ConfigError(
                f"UDATrainer: config must be a SelfTrainingConfig, got {type(config).__name__}"
            )
        try:
            self.variant = Variant(variant)
        except ValueError:
            raise ConfigError(
                f"UDATrainer: unknown variant {variant!r}; one of {[v.value for v in Variant]}"
            ) from None
        self.config = config
        self.progress = progress
        self.checkpoint_dir = checkpoint_dir
        self.device = device

    def fit(
        self, student: nn.Module, source: SegmentationSet, target: SegmentationSet
    ) -> UDAResult:
        from polyprompt.core.trainer import TrainerConfig

        where = "UDATrainer.fit"
        cfg, variant = self.config, self.variant
        if not isinstance(source, SegmentationSet) or source.labels is None:
            raise InputError(f"{where}: the source set must be a labelled SegmentationSet")
        if not isinstance(target, SegmentationSet) or len(target) == 0:
            raise InputError(f"{where}: the target set is empty")
        if source.image_size != target.image_size:
            raise InputError(
                f"{where}: source images are {source.image_size} but target images are "
                f"{target.image_size}; use one size"
            )
        if source.num_classes != getattr(student, "num_classes", source.num_classes):
            raise InputError(
                f"{where}: the source set has {source.num_classes} classes, the model {student.num_classes}"
            )
        if variant.uses_savpt != (getattr(student, "savpt", None) is not None):
            raise ConfigError(
                f"{where}: variant {variant.value!r} needs a model with use_savpt="
                f"{variant.uses_savpt}"
            )
        hard = (
            student.severity(target.images)
            if hasattr(student, "severity")
            else torch.zeros(len(target), dtype=torch.bool)
        )
        epochs = max(1, math.ceil(cfg.iterations / cfg.iters_per_epoch))
        per_epoch = min(cfg.iters_per_epoch, cfg.iterations)
        data = _UDAData(source, target, hard, per_epoch * cfg.batch_size, cfg.seed)
        wrapper = _UDAModule(student, cfg, variant)
        trainer = _core_trainer(
            cfg,
            TrainerConfig(
                epochs=epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
                grad_clip=None,
                seed=cfg.seed,
                progress=self.progress,
                checkpoint_dir=self.checkpoint_dir,
                device=self.device,
                drop_last=True,
                restore_best=False,
                monitor="val_loss",
            ),
            _step,
        )
        start = time.perf_counter()
        result = trainer.fit(wrapper, data)
        took = time.perf_counter() - start
        iters = int(wrapper.iteration)
        student.eval()
        return UDAResult(
            seconds=took,
            iterations=iters,
            seconds_per_iteration=took / max(1, iters),
            history=result.history,
            phase_counts=dict(wrapper.phase_counts),
            teacher=wrapper.teacher,
        )
