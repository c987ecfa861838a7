"""CoDA's self-training: EMA mean teacher, confident pseudo-labels, ClassMix, MIC, chain schedule.

One iteration (DAFormer ``dacs.py`` / MIC ``masking_consistency_module.py``, as CoDA uses them):

1. **Source loss** -- cross-entropy of the student on labelled source images.
2. **Teacher** -- the EMA of the student, ``theta_T <- a theta_T + (1 - a) theta_S`` with
   ``a = min(1 - 1/(t + 1), alpha)`` (alpha 0.99), updated before it predicts; it sees
   the *un-augmented* target image (with its own, EMA'd, prompts).
3. **Pseudo-labels** -- arg-max of the teacher's softmax; their pixel weight is the
   fraction of target pixels whose confidence is >= ``pseudo_threshold`` (0.968), one
   scalar per batch as in DAFormer; optional ignored top / bottom rows.
4. **ClassMix** -- half of the classes present in each source label map are pasted onto
   the paired target image (labels: source labels there, pseudo-labels elsewhere;
   weights 1 there, the pseudo weight elsewhere), followed by the strong augmentation
   (colour jitter with p 0.2 / strength 0.2, Gaussian blur with p 0.5).
5. **MIC** (option ``mic``) -- the strongly augmented target image with random
   ``mask_block_size`` blocks removed (``mask_ratio`` 0.7) must reproduce the teacher's
   pseudo-labels (same weighting), weighted by ``mic_lambda`` (1).
6. **Chain-of-Domain** (``chain``) -- which target images an iteration draws: easy ones,
   hard ones, in cycles until ``cycle_until``, then all (:mod:`polyprompt.adapt.chain`).

The loop is the core :class:`~polyprompt.core.trainer.Trainer` with a ``step_fn``: seeded,
progress bars, and exact resume from ``checkpoint_dir`` -- the teacher's weights and the
iteration counter are persistent buffers of the training wrapper, so they are saved and
restored with the student and the optimizer.

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
    alpha: float = 0.99
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
        """Paper proportions (chain until 30% of the run, 3 cycles) for a short run."""
        s = ChainOfDomainSchedule.for_run(iterations)
        base = {"iterations": iterations, "cycle_until": s.cycle_until, "chain_period": s.period}
        base.update(changes)
        return cls(**base)


# ---------------------------------------------------------------------------
# augmentations (DAFormer's strong_transform: colour jitter + Gaussian blur; ClassMix; MIC)
# ---------------------------------------------------------------------------
def color_jitter(x: torch.Tensor, p: float, s: float, gen: torch.Generator) -> torch.Tensor:
    """Per image with probability ``p``: brightness, contrast, saturation in ``U(1-s, 1+s)``."""
    b = x.shape[0]
    apply = (torch.rand(b, generator=gen) < p).view(b, 1, 1, 1).to(x.device)
    f = (1 + (torch.rand(3, b, generator=gen) * 2 - 1) * s).to(x.device)
    y = x * f[0].view(b, 1, 1, 1)
    mean = y.mean((1, 2, 3), keepdim=True)
    y = (y - mean) * f[1].view(b, 1, 1, 1) + mean
    gray = y.mean(1, keepdim=True)
    y = (y - gray) * f[2].view(b, 1, 1, 1) + gray
    return torch.where(apply, y.clamp(0, 1), x)


def gaussian_blur(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Per image with probability ``p``: blur with sigma in ``U(0.15, 1.15)`` (DAFormer)."""
    out = x.clone()
    k = max(3, math.ceil(0.1 * x.shape[-1]) | 1)
    coords = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
    for i in range(x.shape[0]):
        if float(torch.rand(1, generator=gen)) >= p:
            continue
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
class MeanTeacher(nn.Module):
    """EMA copy of a student's ``state_dict``; ``forward`` runs the student's code on it.

    Example::

        >>> student = nn.Linear(2, 2)
        >>> teacher = MeanTeacher(student)
        >>> torch.equal(teacher(torch.ones(1, 2)), student(torch.ones(1, 2)))
        True
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self._student = [student]  # not a submodule: its weights are not duplicated here
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
        student.eval()
        try:
            return functional_call(student, self.tensors(), args, kwargs)
        finally:
            student.train(was)


class _UDAModule(nn.Module):
    """Student + teacher + iteration counter; ``forward`` computes one iteration's loss."""

    def __init__(self, student: nn.Module, cfg: SelfTrainingConfig, variant: Variant) -> None:
        super().__init__()
        self.student = student
        self.teacher = MeanTeacher(student) if variant.self_trains else None
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
        from polyprompt.core.trainer import Trainer, TrainerConfig

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
        trainer = Trainer(
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
            step_fn=_step,
            metric=None,
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
