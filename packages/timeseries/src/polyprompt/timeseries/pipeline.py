"""One multi-source scenario end to end: POND's three steps and every baseline, same data.

A *scenario* is ``{all other domains} -> target domain``. For one scenario and one seed
:func:`run_scenario` does:

1. **data**: sources = every other domain (each needs >= 2 windows and >= 2 classes); the
   target is split into ``shots`` labelled windows per class and a test set
   (:func:`~polyprompt.timeseries.data.few_shot_split`, by recording by default); per-channel
   z-scoring fitted on the **source windows only**.
2. **step 1 — pre-training** [S: "pretrain the POND model"; recipe I]: a tsai ``TSTPlus`` +
   linear head trained with CE on the pooled labelled sources (core ``full_finetune`` method,
   core :class:`~polyprompt.core.trainer.Trainer`, 10 % of the source windows for best-epoch
   selection). Cached under ``polyprompt_home()/timeseries/`` keyed by architecture,
   settings and source-data fingerprint (atomic safetensors write).
3. **POND** (:mod:`.method`): step 2a source prompts (frozen backbone + head), step 2b target
   prompts on the shots (+ a small replay of source windows for ``L_dd``), source selection
   (:mod:`.selection`), step 3 adaptation of the target prompt initialised from ``i*``
   (``adapt_init``; prompt + generator, optionally the head and the backbone) on the shots
   (optionally with replayed source windows, ``adapt_replay``). Step-3 defaults were chosen on
   a development protocol without evaluated targets (``examples/timeseries/pond_dev_protocol.py``).
4. **baselines** on the same split and backbone: ``source_only`` (the pooled pre-trained
   model), ``single_source_oracle`` / ``single_source_selected`` (source ``i``'s POND prompt
   applied to the target without target training; the best one by target test F1 = oracle,
   the one chosen by the criteria = selected), ``target_only`` (a fresh TSTPlus trained on the
   shots), ``finetune`` (all pre-trained weights on the shots), ``linear_probe`` and
   ``prompt_tuning`` (core ``linear_probe`` / VPT-shallow with the pre-trained head, plain
   prompt tuning without domain prompts), ``finetune_replay`` / ``prompt_tuning_replay`` (the
   same on the shots + the source windows of :func:`source_replay`), ``dann`` (Ganin et al.
   2016: gradient reversal, pooled sources + target shots labelled, target windows outside the
   test set unlabelled), ``pond_ensemble`` ([I] option: POND's adapted target prompt and every
   source prompt, class probabilities averaged).

Metric: macro-F1 (torchmetrics via :func:`polyprompt.core.metrics.compute_metric`) on the
target test windows.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from polyprompt.core.config import PromptConfig, is_int
from polyprompt.core.errors import CheckpointError, InputError
from polyprompt.timeseries.backbone import TSTAdapter, TSTConfig
from polyprompt.timeseries.data import ChannelNormalizer, DomainData, check_domains, few_shot_split
from polyprompt.timeseries.method import (
    POND,
    Composition,
    FidelityKind,
    GeneratorInput,
    PONDConfig,
    pond_step,
)
from polyprompt.timeseries.selection import Criterion, Similarity, select_source

__all__ = [
    "ALL_METHODS",
    "PipelineConfig",
    "PretrainedTST",
    "macro_f1",
    "pretrain_tst",
    "run_scenario",
]

ALL_METHODS: tuple[str, ...] = (
    "target_only",
    "source_only",
    "single_source_oracle",
    "single_source_selected",
    "finetune",
    "linear_probe",
    "prompt_tuning",
    "finetune_replay",
    "prompt_tuning_replay",
    "dann",
    "pond",
    "pond_ensemble",
)
#: opt-in non-prompt baselines on tsai's InceptionTimePlus (a CNN, not promptable)
INCEPTION_METHODS: tuple[str, ...] = (
    "inceptiontime_target_only",
    "inceptiontime_source_only",
    "inceptiontime_finetune",
)
KNOWN_METHODS: tuple[str, ...] = ALL_METHODS + INCEPTION_METHODS
_NEEDS_LABELS = (
    "target_only",
    "finetune",
    "linear_probe",
    "prompt_tuning",
    "finetune_replay",
    "prompt_tuning_replay",
    "inceptiontime_target_only",
    "inceptiontime_finetune",
)
_CACHE_FORMAT = "polyprompt-timeseries-tst/1"


def _pos(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


@dataclass
class PipelineConfig(PromptConfig):
    """Every setting of a scenario run ([I] = inferred default, see ``shared/POND.md`` §9).

    Data: ``shots`` labelled target windows per class (0 = unsupervised target: POND skips
    step 3's training and the label-needing baselines are left out), ``split_by``
    (``"recording"`` | ``"window"`` | ``"split"`` for AdaTime's train/test files).
    Backbone (tsai TSTPlus): ``patch_len``, ``d_model``, ``n_layers``, ``n_heads``, ``d_ff``,
    ``dropout``. Step 1: ``pretrain_epochs``, ``pretrain_lr``, ``batch_size``.
    POND: ``num_tokens``, ``generator_hidden``, ``generator_input``, ``composition``,
    ``fidelity``, ``lambda_fid``, ``lambda_dd``, ``lambda_orth`` (see :class:`PONDConfig`);
    ``prompt_epochs`` / ``prompt_lr`` (step 2a), ``target_epochs`` + ``replay_per_source``
    (step 2b), ``adapt_epochs`` / ``adapt_lr`` / ``adapt_backbone`` / ``adapt_train_head`` /
    ``adapt_init`` (step 3's start: ``"source"`` = the target slot is a copy of the chosen
    source's prompt + generator, POND.md §5; ``"common"`` = the slot is emptied and the
    target starts from the common prompt, the part shared by all sources),
    ``adapt_replay`` (step 3 also trains on source windows fed with the target prompt, so a
    few shots from one recording do not wipe out what the sources taught: ``"chosen"`` = all
    windows of ``i*``, POND.md §5 "optionally mixed with source i* data"; ``"all"`` = as many
    windows as an average source has, drawn from all sources; ``"none"``), ``adapt_lambda_dd`` (weight of
    L_dd in step 3: 0 by default, since the frozen discriminator would push the prompt copied
    from ``i*`` away from ``i*``), ``criterion`` /
    ``similarity`` (``"class_centroid"``: class-wise distance of the target shots to each
    source's windows under that source's prompts, the default since session 6;
    ``"prompt_cosine"``: cosine of the generated prompts, sessions 1-5) / ``similarity_on``
    (selection; see :mod:`polyprompt.timeseries.selection`).
    Baselines: ``finetune_lr``, ``probe_lr``, ``vpt_lr``, ``target_only_epochs`` / ``target_only_lr``,
    ``dann_epochs`` / ``dann_lr`` / ``dann_weight``. All target-side runs train for a fixed
    number of epochs (no target validation split exists in a few-shot target; the test split
    is never used for selection).
    """

    shots: int = 5
    split_by: str = "recording"
    patch_len: int = 16
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    dropout: float = 0.1
    pretrain_epochs: int = 10
    pretrain_lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    num_tokens: int = 5
    generator_hidden: int = 64
    generator_input: GeneratorInput = GeneratorInput.SERIES
    composition: Composition = Composition.SUM
    fidelity: FidelityKind = FidelityKind.PROBE
    lambda_fid: float = 0.5
    lambda_dd: float = 0.5
    lambda_orth: float = 0.0
    prompt_epochs: int = 4
    prompt_lr: float = 1e-2
    target_epochs: int = 30
    replay_per_source: int = 8
    adapt_epochs: int = 40
    adapt_lr: float = 1e-3
    adapt_backbone: bool = False
    adapt_train_head: bool = False
    adapt_init: str = "source"
    adapt_replay: str = "all"
    adapt_lambda_dd: float = 0.0
    criterion: Criterion = Criterion.BOTH
    similarity: Similarity = Similarity.CLASS_CENTROID
    similarity_on: str = "specific"
    finetune_lr: float = 5e-4
    probe_lr: float = 1e-2
    vpt_lr: float = 5e-3
    target_only_epochs: int = 60
    target_only_lr: float = 1e-3
    dann_epochs: int = 3
    dann_lr: float = 5e-4
    dann_weight: float = 1.0
    methods: tuple[str, ...] = ALL_METHODS
    device: str = "cpu"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.methods = tuple(self.methods)
        r = self.require
        r(is_int(self.shots) and self.shots >= 0, "shots", "must be an int >= 0")
        r(
            self.split_by in ("recording", "window", "split"),
            "split_by",
            "must be 'recording', 'window' or 'split' (AdaTime train/test files)",
        )
        self.require_ints(
            "patch_len",
            "d_model",
            "n_layers",
            "n_heads",
            "d_ff",
            "pretrain_epochs",
            "batch_size",
            "num_tokens",
            "generator_hidden",
            "prompt_epochs",
            "target_epochs",
            "adapt_epochs",
            "target_only_epochs",
            "dann_epochs",
        )
        r(
            is_int(self.replay_per_source) and self.replay_per_source >= 0,
            "replay_per_source",
            "must be >= 0",
        )
        for name in (
            "pretrain_lr",
            "prompt_lr",
            "adapt_lr",
            "finetune_lr",
            "probe_lr",
            "vpt_lr",
            "target_only_lr",
            "dann_lr",
        ):
            r(_pos(getattr(self, name)), name, "must be a number > 0")
        r(
            self.adapt_init in ("source", "common"),
            "adapt_init",
            "must be 'source' (copy the chosen source's prompt) or 'common' (empty target slot)",
        )
        r(
            self.adapt_replay in ("chosen", "all", "none"),
            "adapt_replay",
            "must be 'chosen', 'all' or 'none'",
        )
        r(
            self.similarity_on in ("specific", "full"),
            "similarity_on",
            "must be 'specific' or 'full'",
        )
        unknown = [m for m in self.methods if m not in KNOWN_METHODS]
        r(
            bool(self.methods) and not unknown,
            "methods",
            f"unknown {unknown}; known {list(KNOWN_METHODS)}",
        )

    def tst(self, data: DomainData) -> TSTConfig:
        return TSTConfig(
            c_in=data.num_channels, seq_len=data.seq_len, patch_len=self.patch_len,
            d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads, d_ff=self.d_ff,
            dropout=self.dropout,
        )  # fmt: skip

    def pond(self, num_classes: int, num_sources: int) -> PONDConfig:
        return PONDConfig(
            num_classes=num_classes, num_sources=num_sources, num_tokens=self.num_tokens,
            generator_hidden=self.generator_hidden, generator_input=self.generator_input,
            composition=self.composition, fidelity=self.fidelity, lambda_fid=self.lambda_fid,
            lambda_dd=self.lambda_dd, lambda_orth=self.lambda_orth,
        )  # fmt: skip

    @classmethod
    def quick(cls) -> PipelineConfig:
        """Smoke-test size (seconds per scenario)."""
        return cls(
            d_model=32, d_ff=64, pretrain_epochs=4, prompt_epochs=2, target_epochs=10,
            adapt_epochs=15, target_only_epochs=20, dann_epochs=1,
        )  # fmt: skip


# --------------------------------------------------------------------------- training utils
def _trainer(
    cfg: PipelineConfig, *, epochs: int, lr: float, seed: int, num_classes: int, step_fn=None
):
    from polyprompt.core.trainer import Trainer, TrainerConfig

    tc = TrainerConfig(
        epochs=epochs, batch_size=cfg.batch_size, lr=lr, weight_decay=cfg.weight_decay,
        scheduler="cosine", grad_clip=1.0, seed=seed, progress=False, device=cfg.device,
    )  # fmt: skip
    return Trainer(tc, step_fn=step_fn, metric="accuracy", num_classes=num_classes)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, fn: Callable | None = None, batch_size: int = 512):
    """Logits of ``model`` (or ``fn(model, xb)``) on ``x`` in eval mode."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for s in range(0, len(x), batch_size):
        xb = x[s : s + batch_size].to(dev)
        out.append((fn(model, xb) if fn else model(xb)).cpu())
    model.train(was)
    return torch.cat(out)


def macro_f1(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """Macro-F1 over ``num_classes`` (torchmetrics through the core's metrics)."""
    from polyprompt.core.metrics import compute_metric

    return float(compute_metric("macro_f1", logits, y, num_classes=num_classes))


def _report(model: nn.Module) -> dict[str, Any]:
    from polyprompt.core.freezing import trainable_report

    r = trainable_report(model)
    return {
        "trainable_params": r.trainable_params,
        "backbone_params": r.backbone_params,
        "trainable_percent": r.percent_of_backbone,
        "checkpoint_bytes": r.checkpoint_bytes,
    }


# --------------------------------------------------------------------------- step 1
@dataclass
class PretrainedTST:
    """Step 1's result: backbone + head weights pre-trained on the pooled sources."""

    tst: TSTConfig
    state: dict[str, torch.Tensor]  # keys of the core full_finetune method: backbone.tst.*, head.*
    num_classes: int
    source_val_f1: float
    from_cache: bool
    path: Path | None

    def method(self, kind: str = "full_finetune", **options: Any) -> nn.Module:
        """A fresh core classifier (``full_finetune`` / ``linear_probe`` / ``vpt``) over a
        copy of the pre-trained backbone, its head initialised from the pre-trained head."""
        from polyprompt.core.registry import create

        model = create(kind, self.backbone(), num_classes=self.num_classes, **options)
        model.head.load_state_dict(
            {"weight": self.state["head.weight"], "bias": self.state["head.bias"]}
        )
        return model

    def backbone(self) -> TSTAdapter:
        adapter = self.tst.build()
        bb = {k[len("backbone.") :]: v for k, v in self.state.items() if k.startswith("backbone.")}
        adapter.load_state_dict(bb)
        return adapter

    def pond(self, config: PONDConfig) -> POND:
        model = POND(self.backbone(), config)
        model.head.load_state_dict(
            {"weight": self.state["head.weight"], "bias": self.state["head.bias"]}
        )
        return model


def _state_for_file(model: nn.Module) -> dict[str, torch.Tensor]:
    # tsai's SameConv1d ties W_P.weight and W_P.conv1d_same.weight: clone (safetensors refuses shared storage)
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def pretrain_tst(
    sources: DomainData,
    cfg: PipelineConfig,
    *,
    cache: bool = True,
    seed: int = 0,
    verbose: bool = False,
) -> PretrainedTST:
    """Step 1: TSTPlus + head on the pooled labelled source windows (cached)."""
    from polyprompt.core.checkpoint import load_state, save_state
    from polyprompt.core.io import polyprompt_home
    from polyprompt.core.registry import create

    tst = cfg.tst(sources)
    train_cfg = {
        k: getattr(cfg, k) for k in ("pretrain_epochs", "pretrain_lr", "batch_size", "weight_decay")
    }
    payload = json.dumps(
        {"format": _CACHE_FORMAT, "arch": tst.to_dict(), "train": train_cfg, "seed": seed,
         "data": sources.fingerprint(), "torch": torch.__version__.split("+")[0]},
        sort_keys=True,
    )  # fmt: skip
    key = hashlib.sha256(payload.encode()).hexdigest()[:16]
    path = polyprompt_home() / "timeseries" / f"tst-{key}.safetensors" if cache else None
    if path is not None and path.is_file():
        try:
            state, meta = load_state(path)
            if meta.get("key") != key:
                raise CheckpointError(f"{path}: key mismatch")
            return PretrainedTST(
                tst, state, sources.num_classes, float(meta["source_val_f1"]), True, path
            )
        except (CheckpointError, KeyError, ValueError):
            pass  # unreadable or stale cache: train again, overwrite atomically
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(sources))
    n_val = max(1, len(sources) // 10)
    x, y, _ = sources.tensors()
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    torch.manual_seed(seed)
    model = create("full_finetune", tst.build(), num_classes=sources.num_classes)
    trainer = _trainer(
        cfg,
        epochs=cfg.pretrain_epochs,
        lr=cfg.pretrain_lr,
        seed=seed,
        num_classes=sources.num_classes,
    )
    trainer.fit(
        model, TensorDataset(x[tr_idx], y[tr_idx]), val=TensorDataset(x[val_idx], y[val_idx])
    )
    model.cpu()
    val_f1 = macro_f1(predict(model, x[val_idx]), y[val_idx], sources.num_classes)
    state = _state_for_file(model)
    if path is not None:
        save_state(
            path, state, {"key": key, "source_val_f1": val_f1, "config": json.loads(payload)}
        )
    if verbose:
        print(
            f"  step 1: pre-trained TSTPlus on {len(tr_idx)} source windows, source val F1 {val_f1:.3f}"
        )
    return PretrainedTST(tst, state, sources.num_classes, val_f1, False, path)


# --------------------------------------------------------------------------- DANN
class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * grad, None


class DANN(nn.Module):
    """Domain-adversarial baseline (Ganin et al., JMLR 2016): a classifier over the
    pre-trained TSTPlus + a domain discriminator behind a gradient-reversal layer whose
    weight follows ``2 / (1 + exp(-10 p)) - 1`` over training progress ``p``.

    Batches: ``(x, y, is_target)`` with ``y = -1`` for unlabelled target windows.
    """

    def __init__(self, classifier: nn.Module, total_steps: int, weight: float = 1.0) -> None:
        super().__init__()
        self.classifier = classifier
        self.backbone = classifier.backbone  # for trainable_report
        d = int(classifier.backbone.embed_dim)
        self.disc = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 2))
        self.total_steps = max(1, total_steps)
        self.weight = weight
        self.register_buffer("steps", torch.zeros((), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)

    def step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y, dom = batch
        feats = self.classifier.forward_features(x)
        logits = self.classifier.forward_head(feats)
        p = min(1.0, float(self.steps) / self.total_steps)
        lam = 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0
        self.steps += 1
        lab = y >= 0
        cls = F.cross_entropy(logits[lab], y[lab]) if lab.any() else logits.sum() * 0
        counts = torch.bincount(dom, minlength=2).clamp_min(1).float()
        w = (counts.sum() / (2 * counts)).to(feats.dtype)  # balance source / target windows
        dd = F.cross_entropy(self.disc(_GradReverse.apply(feats, lam)), dom, weight=w)
        return cls + self.weight * dd, logits[lab], y[lab]


# --------------------------------------------------------------------------- scenario
@dataclass
class _Split:
    sources: DomainData
    shots: DomainData
    test: DomainData
    pool: DomainData  # target windows outside the test set (unlabelled for DANN / unsupervised)
    source_ids: list[int]  # global domain index of local source i


def prepare_split(data: DomainData, target: int, cfg: PipelineConfig, seed: int) -> _Split:
    """Sources / target shots / target test for ``target`` (a domain index), normalised with
    statistics of the source windows only."""
    if not is_int(target) or not 0 <= target < data.num_domains:
        raise InputError(f"run_scenario: target domain {target!r} not in 0..{data.num_domains - 1}")
    source_ids = [d for d in range(data.num_domains) if d != target and (data.domain == d).any()]
    if not source_ids:
        raise InputError(f"run_scenario: {data.name!r} has no source domain besides the target")
    check_domains(data, source_ids, "source")
    check_domains(data, [target], "target")
    tgt = data.of_domains([target])
    shots, test = few_shot_split(tgt, cfg.shots, seed, by=cfg.split_by)
    if len(test) == 0:
        raise InputError(
            f"run_scenario: target domain {data.domain_names[target]!r} has no test windows"
        )
    test_groups = np.unique(test.group)
    pool = tgt.subset(~np.isin(tgt.group, test_groups)) if cfg.shots else test
    if cfg.split_by == "window" and cfg.shots:
        pool = shots
    if len(pool) == 0:
        pool = shots
    sources = data.of_domains(source_ids)
    norm = ChannelNormalizer().fit(sources.X)
    return _Split(
        norm.apply(sources), norm.apply(shots), norm.apply(test), norm.apply(pool), source_ids
    )


def source_replay(split: _Split, cfg: PipelineConfig, seed: int) -> np.ndarray:
    """Indices of the source windows replayed in step 3 with ``adapt_replay="all"`` (and by
    the ``*_replay`` baselines): as many windows as an average source has, drawn uniformly
    (seeded) from all source windows."""
    n_src = len(split.sources)
    n = max(1, n_src // max(1, len(split.source_ids)))
    return np.sort(np.random.default_rng(seed + 7919).choice(n_src, size=n, replace=False))


def _local_domains(sources: DomainData, source_ids: Sequence[int]) -> np.ndarray:
    lut = {g: i for i, g in enumerate(source_ids)}
    return np.array([lut[int(d)] for d in sources.domain], dtype=np.int64)


def run_scenario(
    data: DomainData,
    target: int,
    cfg: PipelineConfig,
    seed: int = 0,
    *,
    cache: bool = True,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run POND and the baselines of ``cfg.methods`` on one ``sources -> target`` scenario.

    Returns ``{"target", "seed", "methods": {name: {"f1", "seconds", trainable...}},
    "selection": {...}, "single_source_f1": [...], "pretrain": {...}}``.
    """
    split = prepare_split(data, target, cfg, seed)
    k = data.num_classes
    t0 = time.perf_counter()
    pre = pretrain_tst(split.sources, cfg, cache=cache, verbose=verbose)
    pre_seconds = time.perf_counter() - t0
    xs, ys, _ = split.sources.tensors()
    ds = torch.from_numpy(_local_domains(split.sources, split.source_ids))
    x_shot, y_shot, _ = split.shots.tensors()
    x_test, y_test, _ = split.test.tensors()
    x_pool = torch.from_numpy(split.pool.X)
    labelled = cfg.shots > 0
    methods = [m for m in cfg.methods if labelled or m not in _NEEDS_LABELS]
    out: dict[str, Any] = {
        "target": data.domain_names[target],
        "seed": seed,
        "methods": {},
        "pretrain": {
            "source_val_f1": pre.source_val_f1,
            "from_cache": pre.from_cache,
            "seconds": pre_seconds,
        },
    }

    def record(
        name: str, model: nn.Module, logits: torch.Tensor, start: float, **extra: Any
    ) -> None:
        out["methods"][name] = {
            "f1": macro_f1(logits, y_test, k),
            "seconds": time.perf_counter() - start,
            **_report(model),
            **extra,
        }
        if verbose:
            print(
                f"  {data.domain_names[target]:>6} seed {seed} {name:<24} F1 {out['methods'][name]['f1']:.3f}"
            )

    shot_ds = TensorDataset(x_shot, y_shot)
    if "source_only" in methods:
        start = time.perf_counter()
        model = pre.method("full_finetune")
        model.requires_grad_(False)
        record("source_only", model, predict(model, x_test), start)
    if "target_only" in methods:
        start = time.perf_counter()
        torch.manual_seed(seed)
        from polyprompt.core.registry import create

        model = create("full_finetune", pre.tst.build(), num_classes=k)
        _trainer(
            cfg, epochs=cfg.target_only_epochs, lr=cfg.target_only_lr, seed=seed, num_classes=k
        ).fit(model, shot_ds)
        record("target_only", model, predict(model, x_test), start)
    for name, kind, lr, opts in (
        ("finetune", "full_finetune", cfg.finetune_lr, {}),
        ("linear_probe", "linear_probe", cfg.probe_lr, {}),
        ("prompt_tuning", "vpt", cfg.vpt_lr, {"num_tokens": cfg.num_tokens, "deep": False}),
    ):
        if name in methods:
            start = time.perf_counter()
            torch.manual_seed(seed)
            model = pre.method(kind, **opts)
            _trainer(cfg, epochs=cfg.adapt_epochs, lr=lr, seed=seed, num_classes=k).fit(
                model, shot_ds
            )
            record(name, model, predict(model, x_test), start)
    replay_idx = source_replay(split, cfg, seed)
    for name, kind, lr, opts in (
        ("finetune_replay", "full_finetune", cfg.finetune_lr, {}),
        ("prompt_tuning_replay", "vpt", cfg.vpt_lr, {"num_tokens": cfg.num_tokens, "deep": False}),
    ):
        if name in methods:  # same shots + the same source replay as POND's step 3 ("all")
            start = time.perf_counter()
            torch.manual_seed(seed)
            model = pre.method(kind, **opts)
            data_r = TensorDataset(
                torch.cat([x_shot, xs[replay_idx]]), torch.cat([y_shot, ys[replay_idx]])
            )
            _trainer(cfg, epochs=cfg.adapt_epochs, lr=lr, seed=seed, num_classes=k).fit(
                model, data_r
            )
            record(name, model, predict(model, x_test), start)
    if "dann" in methods:
        start = time.perf_counter()
        torch.manual_seed(seed)
        n_src = len(xs)
        reps = (
            max(1, n_src // max(1, len(split.source_ids) * max(1, len(x_shot)))) if labelled else 0
        )
        xd = torch.cat([xs, *([x_shot] * reps), x_pool])
        yd = torch.cat([ys, *([y_shot] * reps), torch.full((len(x_pool),), -1, dtype=torch.long)])
        dd = torch.cat(
            [torch.zeros(n_src, dtype=torch.long), torch.ones(len(xd) - n_src, dtype=torch.long)]
        )
        steps = cfg.dann_epochs * math.ceil(len(xd) / cfg.batch_size)
        model = DANN(pre.method("full_finetune"), steps, cfg.dann_weight)
        _trainer(cfg, epochs=cfg.dann_epochs, lr=cfg.dann_lr, seed=seed, num_classes=k,
                 step_fn=lambda m, b: m.step(b)).fit(model, TensorDataset(xd, yd, dd))  # fmt: skip
        record("dann", model, predict(model, x_test), start)
    if set(INCEPTION_METHODS) & set(methods):
        _run_inception(out, cfg, seed, k, xs, ys, x_shot, y_shot, x_test, y_test, methods, record)
    pond_names = {"pond", "pond_ensemble", "single_source_oracle", "single_source_selected"}
    if pond_names & set(methods):
        _run_pond(
            out,
            pre,
            split,
            cfg,
            seed,
            xs,
            ys,
            ds,
            x_shot,
            y_shot,
            x_test,
            y_test,
            x_pool,
            methods,
            record,
        )
    return out


def adapt_target(
    model: POND,
    cfg: PipelineConfig,
    split: _Split,
    seed: int,
    chosen: int,
    shots: tuple[torch.Tensor, torch.Tensor] | None,
    sources: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> POND:
    """POND step 3 in place: start the target slot from source ``chosen`` (``cfg.adapt_init``),
    then train it on the labelled ``shots = (x, y)`` plus the source windows ``cfg.adapt_replay``
    names (``sources = (x, y, local domain ids)``); ``shots=None`` (unsupervised target) only
    sets the start. Settings: ``adapt_*`` of :class:`PipelineConfig`."""
    if cfg.adapt_init == "source":
        model.init_target_from(chosen)
    else:
        model.reset_target()
    model.set_phase("adapt", adapt_backbone=cfg.adapt_backbone, train_head=cfg.adapt_train_head)
    model.loss_overrides = {"lambda_dd": cfg.adapt_lambda_dd}
    try:
        if shots is not None:
            (x3, y3), (xs, ys, ds) = shots, sources
            if cfg.adapt_replay == "chosen":
                mine = ds == chosen
                x3, y3 = torch.cat([x3, xs[mine]]), torch.cat([y3, ys[mine]])
            elif cfg.adapt_replay == "all":
                idx = torch.from_numpy(source_replay(split, cfg, seed))
                x3, y3 = torch.cat([x3, xs[idx]]), torch.cat([y3, ys[idx]])
            d3 = torch.full((len(x3),), model.target_id, dtype=torch.long)
            _trainer(
                cfg,
                epochs=cfg.adapt_epochs,
                lr=cfg.adapt_lr,
                seed=seed,
                num_classes=int(model.config.num_classes),
                step_fn=pond_step,
            ).fit(model, TensorDataset(x3, y3, d3))
    finally:
        model.loss_overrides = {}
    return model


def _run_pond(
    out, pre, split, cfg, seed, xs, ys, ds, x_shot, y_shot, x_test, y_test, x_pool, methods, record
):
    k = pre.num_classes
    s = len(split.source_ids)
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = pre.pond(cfg.pond(k, s))
    # step 2a: source prompts (common + per-source static + conditional modules), probe, discriminator
    model.set_phase("sources")
    t2a = time.perf_counter()
    _trainer(
        cfg, epochs=cfg.prompt_epochs, lr=cfg.prompt_lr, seed=seed, num_classes=k, step_fn=pond_step
    ).fit(model, TensorDataset(xs, ys, ds))
    epoch_seconds = (time.perf_counter() - t2a) / cfg.prompt_epochs
    source_seconds = time.perf_counter() - start
    # single-source baselines: source i's prompts applied to the target test windows
    single = [
        macro_f1(predict(model, x_test, lambda m, xb, i=i: m(xb, i)), y_test, k) for i in range(s)
    ]
    # step 2b: the target's own prompts (+ replay of source windows for L_dd)
    labelled = cfg.shots > 0
    rng = np.random.default_rng(seed)
    replay = np.concatenate(
        [rng.choice(np.flatnonzero(ds.numpy() == i), size=min(cfg.replay_per_source, int((ds == i).sum())), replace=False)
         for i in range(s)]
    ) if cfg.replay_per_source else np.zeros(0, dtype=np.int64)  # fmt: skip
    xt = x_shot if labelled else x_pool
    yt = y_shot if labelled else torch.full((len(x_pool),), -1, dtype=torch.long)
    x2 = torch.cat([xt, xs[replay]])
    y2 = torch.cat([yt, ys[replay]])
    d2 = torch.cat([torch.full((len(xt),), model.target_id, dtype=torch.long), ds[replay]])
    model.set_phase("target")
    _trainer(
        cfg, epochs=cfg.target_epochs, lr=cfg.prompt_lr, seed=seed, num_classes=k, step_fn=pond_step
    ).fit(model, TensorDataset(x2, y2, d2))
    # selection from the two criteria
    sel = select_source(
        model,
        xt,
        y_shot if labelled else None,
        criterion=cfg.criterion,
        similarity=cfg.similarity,
        sources=(xs, ys, ds),
        similarity_on=cfg.similarity_on,
    )
    oracle = int(np.argmax(single))
    out["single_source_f1"] = single
    out["selection"] = {
        **sel.to_dict(),
        "oracle": oracle,
        "agrees_with_oracle": sel.chosen == oracle,
        "chosen_domain": split.sources.domain_names[split.source_ids[sel.chosen]],
        "oracle_domain": split.sources.domain_names[split.source_ids[oracle]],
    }
    frozen = copy.deepcopy(model).set_phase("frozen")
    if "single_source_oracle" in methods:
        out["methods"]["single_source_oracle"] = {
            "f1": single[oracle],
            "seconds": source_seconds,
            **_report(frozen),
        }
    if "single_source_selected" in methods:
        out["methods"]["single_source_selected"] = {
            "f1": single[sel.chosen],
            "seconds": source_seconds,
            **_report(frozen),
        }
    if {"pond", "pond_ensemble"} & set(methods):
        # step 3: target prompt initialised from the chosen source, adapted on the shots
        adapt_target(
            model,
            cfg,
            split,
            seed,
            sel.chosen,
            (x_shot, y_shot) if labelled else None,
            (xs, ys, ds),
        )
        logits = predict(model, x_test)
        if "pond" in methods:
            record("pond", model, logits, start, epoch_seconds_sources=epoch_seconds)
        if "pond_ensemble" in methods:
            # [I] option: average the class probabilities of the adapted target prompt and of
            # every source prompt (a uniform mixture over the domain prompts; v1 had an MoE)
            probs = [logits.softmax(-1)] + [
                predict(model, x_test, lambda m, xb, i=i: m(xb, i)).softmax(-1) for i in range(s)
            ]
            mean = torch.stack(probs).mean(0).clamp_min(1e-12).log()
            record("pond_ensemble", model, mean, start, epoch_seconds_sources=epoch_seconds)
        out["pond_model"] = model


def inception_time(
    c_in: int, num_classes: int, seq_len: int, nf: int = 16, depth: int = 3
) -> nn.Module:
    """tsai ``InceptionTimePlus`` (Ismail Fawaz et al. 2020) for the non-prompt baselines."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tsai.models.InceptionTimePlus import InceptionTimePlus
    return InceptionTimePlus(c_in, num_classes, seq_len, nf=nf, depth=depth)


class _Whole(nn.Module):
    """Wraps a fully trainable model so ``trainable_report`` counts it against itself."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def _run_inception(out, cfg, seed, k, xs, ys, x_shot, y_shot, x_test, y_test, methods, record):
    c_in, seq_len = int(xs.shape[1]), int(xs.shape[2])
    shot_ds = TensorDataset(x_shot, y_shot)
    if "inceptiontime_target_only" in methods:
        start = time.perf_counter()
        torch.manual_seed(seed)
        model = _Whole(inception_time(c_in, k, seq_len))
        _trainer(
            cfg, epochs=cfg.target_only_epochs, lr=cfg.target_only_lr, seed=seed, num_classes=k
        ).fit(model, shot_ds)
        record("inceptiontime_target_only", model, predict(model, x_test), start)
    if {"inceptiontime_source_only", "inceptiontime_finetune"} & set(methods):
        start = time.perf_counter()
        torch.manual_seed(seed)
        model = _Whole(inception_time(c_in, k, seq_len))
        _trainer(cfg, epochs=cfg.pretrain_epochs, lr=cfg.pretrain_lr, seed=seed, num_classes=k).fit(
            model, TensorDataset(xs, ys)
        )
        if "inceptiontime_source_only" in methods:
            record("inceptiontime_source_only", model, predict(model, x_test), start)
        if "inceptiontime_finetune" in methods:
            start = time.perf_counter()
            _trainer(
                cfg, epochs=cfg.adapt_epochs, lr=cfg.finetune_lr, seed=seed, num_classes=k
            ).fit(model, shot_ds)
            record("inceptiontime_finetune", model, predict(model, x_test), start)
