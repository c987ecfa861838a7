"""One training loop for every prompt method: seeded, resumable, DDP-ready.

:class:`Trainer` trains the parameters that have ``requires_grad`` (prompts, heads) of
any ``nn.Module`` — a :class:`~polyprompt.core.methods.base.PromptMethod` or not:

* progress bar per epoch with the running loss and the validation metric;
* seeding of ``torch``, ``numpy`` and ``random``; per-epoch reproducible shuffling
  (a ``DistributedSampler`` seeded with ``config.seed``, ``set_epoch(epoch)``, also with
  a single process, so one process and N processes see the same global batches);
* AdamW / Adam / SGD, optional linear warm-up + cosine schedule (stepped per batch),
  gradient clipping, early stopping on the validation metric or loss, best weights
  restored at the end;
* AMP (``torch.autocast`` + ``GradScaler``) on CUDA; on CPU AMP stays off (CPU autocast
  is slower than float32 for these small models and changes numerics);
* resumable: with ``checkpoint_dir`` it saves after every epoch (trainable params and
  persistent buffers, best weights, optimizer/scheduler/scaler state, epoch, history,
  early-stopping counters and every RNG state) and a new ``fit`` continues from the last
  completed epoch with results bit-identical to an uninterrupted run;
* DDP: under ``torchrun`` (``WORLD_SIZE > 1``) or with an initialised process group the
  model is wrapped in ``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA), losses
  and metrics are reduced across ranks, only rank 0 prints and writes checkpoints.
  ``batch_size`` is per process (global batch = ``batch_size * world_size``).

Batches: by default a batch is ``(inputs, targets)`` and the step is
``logits = model(inputs); loss = F.cross_entropy(logits, targets)``. Anything else: pass
``step_fn(model, batch) -> (loss, preds_or_logits, targets)`` (``batch`` already on the
device; call ``model(...)`` so DDP sees the forward).

Example::

    >>> import torch
    >>> from torch import nn
    >>> from torch.utils.data import TensorDataset
    >>> torch.manual_seed(0) is not None
    True
    >>> x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
    >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> trainer = Trainer(TrainerConfig(epochs=5, batch_size=16, lr=1e-2, progress=False))
    >>> result = trainer.fit(model, TensorDataset(x, y), val=TensorDataset(x, y))
    >>> result.epochs_run, result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    (5, True)
    >>> sorted(trainer.evaluate(model, TensorDataset(x, y)))
    ['loss', 'metric']
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from polyprompt.core.checkpoint import (
    load_state,
    load_torch_state,
    save_state,
    save_torch_state,
    sha256_file,
)
from polyprompt.core.config import PromptConfig, is_int, is_number
from polyprompt.core.errors import CheckpointError, ConfigError, InputError, NonFiniteError
from polyprompt.core.io import atomic_write_text
from polyprompt.core.metrics import build_metric, prepare_preds
from polyprompt.core.progress import progress_bar
from polyprompt.core.schedules import warmup_cosine

__all__ = [
    "AmpDtype",
    "Callback",
    "Monitor",
    "OptimizerName",
    "SchedulerName",
    "TrainResult",
    "Trainer",
    "TrainerConfig",
    "default_step",
    "seed_everything",
]

MANIFEST_FILE = "trainer_state.json"
_CHECKPOINT_FORMAT = 1
# fields whose change between the interrupted run and the resumed run breaks exact resume
_RESUME_CRITICAL = (
    "batch_size",
    "lr",
    "weight_decay",
    "optimizer",
    "momentum",
    "scheduler",
    "warmup_epochs",
    "grad_clip",
    "seed",
    "amp",
    "amp_dtype",
    "drop_last",
    "shuffle",
)


class OptimizerName(str, Enum):
    ADAMW = "adamw"
    ADAM = "adam"
    SGD = "sgd"


class SchedulerName(str, Enum):
    NONE = "none"  # constant LR (after the optional linear warm-up)
    COSINE = "cosine"  # linear warm-up, then cosine decay to 0 (per step)


class Monitor(str, Enum):
    VAL_METRIC = "val_metric"  # higher is better
    VAL_LOSS = "val_loss"  # lower is better


class AmpDtype(str, Enum):
    FLOAT16 = "float16"  # with GradScaler
    BFLOAT16 = "bfloat16"  # no scaler needed


@dataclass
class TrainerConfig(PromptConfig):
    """Settings of :class:`Trainer` (validated; JSON round trip via ``to_json``/``from_json``).

    Example::

        >>> TrainerConfig(epochs=3, scheduler="cosine").scheduler
        <SchedulerName.COSINE: 'cosine'>
        >>> TrainerConfig(epochs=0)
        Traceback (most recent call last):
        ...
        polyprompt.core.errors.ConfigError: TrainerConfig.epochs: must be an int >= 1 (got 0)
    """

    epochs: int = 10
    batch_size: int = 32  # per process
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: OptimizerName = OptimizerName.ADAMW
    momentum: float = 0.9  # SGD only
    scheduler: SchedulerName = SchedulerName.NONE
    warmup_epochs: int = 0
    grad_clip: float | None = 1.0  # max global grad norm; None = off
    seed: int = 0
    early_stopping_patience: int | None = None  # epochs without improvement; needs val
    min_delta: float = 0.0  # smallest change that counts as an improvement
    monitor: Monitor = Monitor.VAL_METRIC
    restore_best: bool = True  # load the best epoch's weights at the end (needs val)
    amp: bool | None = None  # None: on iff the device is CUDA; always off on CPU
    amp_dtype: AmpDtype = AmpDtype.FLOAT16
    checkpoint_dir: str | None = None
    resume: bool = True
    progress: bool = True
    num_workers: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N" | ...
    deterministic: bool = True
    shuffle: bool = True
    drop_last: bool = False
    find_unused_parameters: bool = False  # DDP: set when some prompts get no grad in a step
    # parameter-name prefix -> learning-rate multiplier (longest matching prefix wins), e.g.
    # {"head.": 10.0} for DAFormer's 10x head lr; unmatched parameters use lr
    lr_multipliers: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.checkpoint_dir, Path):
            self.checkpoint_dir = str(self.checkpoint_dir)
        super().__post_init__()
        r = self.require
        r(is_int(self.epochs) and self.epochs >= 1, "epochs", "must be an int >= 1")
        r(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "must be an int >= 1")
        r(is_number(self.lr) and self.lr > 0, "lr", "must be a finite number > 0")
        r(
            is_number(self.weight_decay) and self.weight_decay >= 0,
            "weight_decay",
            "must be a finite number >= 0",
        )
        r(is_number(self.momentum) and 0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        r(
            is_int(self.warmup_epochs) and 0 <= self.warmup_epochs <= self.epochs,
            "warmup_epochs",
            f"must be an int in [0, epochs={self.epochs}]",
        )
        r(
            self.grad_clip is None or (is_number(self.grad_clip) and self.grad_clip > 0),
            "grad_clip",
            "must be None or a finite number > 0",
        )
        r(is_int(self.seed) and 0 <= self.seed < 2**32, "seed", "must be an int in [0, 2**32)")
        r(
            self.early_stopping_patience is None
            or (is_int(self.early_stopping_patience) and self.early_stopping_patience >= 1),
            "early_stopping_patience",
            "must be None or an int >= 1",
        )
        r(is_number(self.min_delta) and self.min_delta >= 0, "min_delta", "must be >= 0")
        r(self.amp is None or isinstance(self.amp, bool), "amp", "must be None, True or False")
        r(
            self.checkpoint_dir is None
            or (isinstance(self.checkpoint_dir, str) and self.checkpoint_dir),
            "checkpoint_dir",
            "must be None or a non-empty path",
        )
        r(is_int(self.num_workers) and self.num_workers >= 0, "num_workers", "must be an int >= 0")
        for name in (
            "resume",
            "progress",
            "deterministic",
            "restore_best",
            "shuffle",
            "drop_last",
            "find_unused_parameters",
        ):
            r(isinstance(getattr(self, name), bool), name, "must be True or False")
        mults = self.lr_multipliers
        r(
            mults is None
            or (
                isinstance(mults, dict)
                and all(isinstance(k, str) and k for k in mults)
                and all(is_number(v) and v > 0 for v in mults.values())
            ),
            "lr_multipliers",
            "must be None or a dict of non-empty parameter-name prefixes -> numbers > 0",
        )
        ok_device = isinstance(self.device, str)
        if ok_device and self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                ok_device = False
        r(ok_device, "device", "must be 'auto' or a torch device string such as 'cpu', 'cuda:0'")


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    ``history`` has one dict per epoch: ``{"epoch" (1-based), "train_loss", "val_loss",
    "val_metric", "lr", "seconds"}`` (val entries ``None`` without validation data).
    ``best_epoch``/``best_metric`` are the epoch (1-based) and value of the monitored
    quantity (``val_metric`` or ``val_loss``) at its best; ``None`` without validation.
    ``epochs_run`` counts all completed epochs, including those of an interrupted run
    this one resumed.
    """

    history: list[dict[str, Any]]
    best_epoch: int | None
    best_metric: float | None
    stopped_early: bool
    epochs_run: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Callback:
    """Base class of Trainer callbacks; override what you need.

    A callback can stop training by setting ``trainer.should_stop = True``. Callbacks run
    after the epoch's checkpoint is written, so an exception raised in ``on_epoch_end``
    (e.g. ``KeyboardInterrupt``) leaves a checkpoint of that epoch to resume from.
    """

    def on_fit_start(self, trainer: Trainer, model: nn.Module) -> None:
        """Called once before the first epoch (after a resume, if any)."""

    def on_step_end(self, trainer: Trainer, model: nn.Module, step: int) -> None:
        """Called after each optimizer step (``step`` counts from 1 over the whole fit).

        The place for per-step work such as an EMA teacher update. State that must survive
        a resume belongs in the model's persistent buffers (checkpoints save them).
        """

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        """Called after each epoch (1-based ``epoch``) with that epoch's history entry."""

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        """Called once with the result."""


StepFn = Callable[[nn.Module, Any], tuple[torch.Tensor, Any, Any]]
MetricFn = Callable[[torch.Tensor, torch.Tensor], float]


def default_step(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` -> ``(cross_entropy(model(inputs), targets), logits, targets)``."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        kind = type(batch).__name__
        size = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
        raise InputError(
            f"Trainer default step: a batch must be an (inputs, targets) pair, got a {kind}{size}; "
            "pass step_fn=... to Trainer for other batch layouts"
        )
    inputs, targets = batch
    logits = model(inputs)
    if not isinstance(logits, torch.Tensor):
        raise InputError(
            f"Trainer default step: model(inputs) must return logits as a tensor, got "
            f"{type(logits).__name__}; pass step_fn=... to Trainer"
        )
    return F.cross_entropy(logits, targets), logits, targets


def seed_everything(seed: int) -> None:
    """Seed python ``random``, ``numpy`` and ``torch`` (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _derive_seed(*parts: int) -> int:
    return int(
        np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1
    )


# ---------------------------------------------------------------------------
# distributed helpers
# ---------------------------------------------------------------------------
@dataclass
class _Dist:
    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _current_dist() -> _Dist:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        rank = dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return _Dist(True, rank, dist.get_world_size(), local)
    return _Dist()


def _setup_dist(device_pref: str) -> _Dist:
    """Join the process group torchrun describes (``WORLD_SIZE > 1``) unless already in one."""
    import torch.distributed as dist

    if not dist.is_available():
        return _Dist()
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        use_cuda = torch.cuda.is_available() and device_pref != "cpu"
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _current_dist()


def _all_reduce_sum(values: Sequence[float], ctx: _Dist, device: torch.device) -> list[float]:
    if not ctx.enabled:
        return [float(v) for v in values]
    import torch.distributed as dist

    reduce_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(list(values), dtype=torch.float64, device=reduce_device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


# ---------------------------------------------------------------------------
# RNG state <-> (tensors, JSON)
# ---------------------------------------------------------------------------
def _rng_capture() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], np.asarray(np_state[1]).copy(), *(float(v) for v in np_state[2:])),
        "python": random.getstate(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def _rng_to_files(
    states: Sequence[dict[str, Any]],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for rank, s in enumerate(states):
        tensors[f"rng/{rank}/torch"] = s["torch"]
        tensors[f"rng/{rank}/numpy_key"] = torch.from_numpy(s["numpy"][1].astype(np.int64))
        for i, c in enumerate(s["cuda"]):
            tensors[f"rng/{rank}/cuda/{i}"] = c
        version, internal, gauss = s["python"]
        meta[str(rank)] = {
            "numpy": [s["numpy"][0], int(s["numpy"][2]), int(s["numpy"][3]), float(s["numpy"][4])],
            "python": [version, list(internal), gauss],
            "cuda_count": len(s["cuda"]),
        }
    return tensors, meta


def _rng_restore(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], rank: int) -> bool:
    m = meta.get(str(rank))
    if m is None or f"rng/{rank}/torch" not in tensors:
        return False
    torch.set_rng_state(tensors[f"rng/{rank}/torch"].to(torch.uint8))
    name, pos, has_gauss, cached = m["numpy"]
    key = tensors[f"rng/{rank}/numpy_key"].numpy().astype(np.uint32)
    np.random.set_state((name, key, int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = m["python"]
    random.setstate((version, tuple(internal), gauss))
    n_cuda = int(m.get("cuda_count", 0))
    if n_cuda and torch.cuda.is_available() and torch.cuda.device_count() == n_cuda:
        torch.cuda.set_rng_state_all([tensors[f"rng/{rank}/cuda/{i}"] for i in range(n_cuda)])
    return True


# ---------------------------------------------------------------------------
# misc helpers
# ---------------------------------------------------------------------------
def _to_device(obj: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_to_device(v, device, non_blocking) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(v, device, non_blocking) for v in obj)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device, non_blocking) for k, v in obj.items()}
    if callable(getattr(obj, "to", None)) and not isinstance(obj, (str, bytes, nn.Module)):
        # batch objects with their own device move (torch_geometric Batch, HF BatchEncoding)
        return obj.to(device)
    return obj


def _batch_size(preds: Any, targets: Any) -> int:
    for x in (targets, preds):
        if isinstance(x, torch.Tensor) and x.dim() > 0:
            return int(x.shape[0])
        if isinstance(x, (list, tuple)):
            return len(x)
    return 1


@contextlib.contextmanager
def _determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic CUDA kernels for the duration of ``fit`` (settings restored after).

    Only on CUDA: the CPU kernels used here are deterministic already, and
    ``torch.use_deterministic_algorithms`` costs seconds of imports (torch._inductor).
    """
    if not enabled or device.type != "cuda":
        yield
        return
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.deterministic = prev[2]
        torch.backends.cudnn.benchmark = prev[3]


@dataclass
class _FitState:
    epochs_done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    best_weights: dict[str, torch.Tensor] | None = None


@dataclass
class _Loader:
    loader: Any
    sampler: Any = None  # has set_epoch
    generator: torch.Generator | None = None

    def __len__(self) -> int:
        return len(self.loader)


class _MetricAccumulator:
    """Accumulates predictions of one evaluation pass and computes the metric (DDP-aware)."""

    def __init__(
        self,
        metric: str | MetricFn | None,
        num_classes: int | None,
        ctx: _Dist,
        device: torch.device,
    ) -> None:
        self.metric = metric
        self.device = device
        self.num_classes = num_classes
        self.ctx = ctx
        self._tm = None  # torchmetrics Metric, built on the first batch
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        # plain top-1 accuracy is counted here: same value as torchmetrics' micro
        # Accuracy, without importing torchmetrics (seconds) for the default metric
        self._native = metric == "accuracy"
        self._correct = 0
        self._total = 0

    def update(self, preds: Any, targets: Any) -> None:
        if self.metric is None:
            return
        if not isinstance(preds, torch.Tensor) or not isinstance(targets, torch.Tensor):
            raise InputError(
                "Trainer: step_fn must return (loss, preds, targets) with tensor preds and targets "
                f"to compute a metric, got {type(preds).__name__} and {type(targets).__name__}"
            )
        preds = preds.detach()
        if preds.is_floating_point():
            preds = preds.float()
        targets = targets.detach()
        if callable(self.metric):
            self._preds.append(preds.cpu())
            self._targets.append(targets.cpu())
            return
        if self._native:
            labels = prepare_preds("accuracy", preds, targets)
            if labels.shape != targets.shape:
                raise InputError(
                    f"Trainer: predictions of shape {tuple(preds.shape)} do not match targets of "
                    f"shape {tuple(targets.shape)} for metric 'accuracy'"
                )
            self._correct += int((labels == targets).sum())
            self._total += targets.numel()
            return
        if self._tm is None:
            num_classes = self.num_classes
            if (
                num_classes is None
                and preds.is_floating_point()
                and preds.dim() == targets.dim() + 1
            ):
                num_classes = int(preds.shape[1])
            if num_classes is None:
                raise ConfigError(
                    f"Trainer: cannot infer the number of classes for metric {self.metric!r} from "
                    f"predictions of shape {tuple(preds.shape)}; pass Trainer(num_classes=...)"
                )
            self._tm = build_metric(self.metric, num_classes=num_classes).to(preds.device)
        self._tm.update(prepare_preds(self.metric, preds, targets), targets)

    def compute(self) -> float | None:
        if self.metric is None:
            return None
        if callable(self.metric):
            preds, targets = self._preds, self._targets
            if self.ctx.enabled:
                import torch.distributed as dist

                gathered: list[Any] = [None] * self.ctx.world_size
                dist.all_gather_object(gathered, (preds, targets))
                preds = [p for g in gathered for p in g[0]]
                targets = [t for g in gathered for t in g[1]]
            return float(self.metric(torch.cat(preds), torch.cat(targets)))
        if self._native:
            correct, total = _all_reduce_sum([self._correct, self._total], self.ctx, self.device)
            return correct / total if total else None
        if self._tm is None:
            return None
        return float(self._tm.compute())  # torchmetrics syncs across DDP ranks itself


# ---------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------
class Trainer:
    """Train the trainable parameters of a model; see the module docstring.

    Args:
        config: a :class:`TrainerConfig` (default settings when ``None``).
        step_fn: ``step_fn(model, batch) -> (loss, preds_or_logits, targets)``; default
            :func:`default_step` (``(inputs, targets)`` batches, cross-entropy).
        metric: a name from :data:`polyprompt.core.metrics.METRIC_NAMES`, a callable
            ``(preds, targets) -> float`` receiving the whole evaluation set (CPU tensors,
            gathered from all ranks), or ``None`` (loss only; then monitor ``val_loss``).
            Higher is better. ``"accuracy"`` (the default) is counted directly (same value
            as torchmetrics' micro accuracy) so the default path does not import torchmetrics.
        num_classes: for named metrics; inferred from the logits' class dimension if omitted.
        callbacks: :class:`Callback` objects (or anything with ``on_epoch_end``).
        param_groups: ``param_groups(named_trainable) -> [{"params": [...], "lr": ..., ...}]``
            builds the optimizer's groups from the ``(name, parameter)`` pairs that train
            (e.g. mmcv's ``paramwise_cfg``: no weight decay on norms, 10x head lr); default:
            one group per ``TrainerConfig.lr_multipliers`` entry.
        lr_schedule: ``lr_schedule(step, total_steps) -> factor`` multiplying every group's
            lr, stepped per optimizer step (per epoch when the loader has no length, with
            ``total_steps = epochs``); replaces ``TrainerConfig.scheduler`` / ``warmup_epochs``
            (e.g. DAFormer's poly decay with linear warm-up).
    """

    def __init__(
        self,
        config: TrainerConfig | None = None,
        *,
        step_fn: StepFn | None = None,
        metric: str | MetricFn | None = "accuracy",
        num_classes: int | None = None,
        callbacks: Sequence[Any] = (),
        param_groups: Callable[[list[tuple[str, nn.Parameter]]], list[dict[str, Any]]]
        | None = None,
        lr_schedule: Callable[[int, int], float] | None = None,
    ) -> None:
        if config is None:
            config = TrainerConfig()
        if not isinstance(config, TrainerConfig):
            raise ConfigError(
                f"Trainer: config must be a TrainerConfig, got {type(config).__name__}"
            )
        if step_fn is not None and not callable(step_fn):
            raise ConfigError(
                "Trainer: step_fn must be callable(model, batch) -> (loss, preds, targets)"
            )
        if isinstance(metric, str):
            from polyprompt.core.metrics import METRIC_NAMES

            if metric not in METRIC_NAMES:
                raise ConfigError(
                    f"Trainer: unknown metric {metric!r}; choose one of {', '.join(METRIC_NAMES)} "
                    "or pass a callable(preds, targets) -> float"
                )
        elif metric is not None and not callable(metric):
            raise ConfigError(f"Trainer: metric must be a name, a callable or None, got {metric!r}")
        if metric is None and config.monitor is Monitor.VAL_METRIC:
            raise ConfigError("Trainer: metric=None needs TrainerConfig(monitor='val_loss')")
        if num_classes is not None and (not is_int(num_classes) or num_classes < 2):
            raise ConfigError(f"Trainer: num_classes must be an int >= 2, got {num_classes!r}")
        for cb in callbacks:
            if not hasattr(cb, "on_epoch_end"):
                raise ConfigError(f"Trainer: callback {cb!r} has no on_epoch_end method")
        for name, fn in (("param_groups", param_groups), ("lr_schedule", lr_schedule)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"Trainer: {name} must be callable, got {fn!r}")
        self.config = config
        self.param_groups_fn = param_groups
        self.lr_schedule = lr_schedule
        self.step_fn: StepFn = step_fn or default_step
        self.metric = metric
        self.num_classes = num_classes
        self.callbacks = list(callbacks)
        self.step_callbacks: list[Any] = []
        self.global_step = 0  # optimizer steps over the whole fit (resumes with it)
        self.should_stop = False

    # -- setup ------------------------------------------------------------------
    def _device(self, ctx: _Dist) -> torch.device:
        pref = self.config.device
        if pref == "auto":
            pref = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(pref)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError("TrainerConfig.device: CUDA requested but not available")
            if device.index is None:
                device = torch.device(
                    "cuda", ctx.local_rank if ctx.enabled else torch.cuda.current_device()
                )
        return device

    def _loader(
        self, data: Any, name: str, *, train: bool, ctx: _Dist, device: torch.device
    ) -> _Loader:
        cfg = self.config
        if isinstance(data, DataLoader):
            sampler = data.sampler if hasattr(data.sampler, "set_epoch") else None
            if train and ctx.enabled and not isinstance(data.sampler, DistributedSampler):
                warnings.warn(
                    f"Trainer: `{name}` is a DataLoader without a DistributedSampler; every DDP rank "
                    "will iterate over all of it. Pass a Dataset to let the Trainer shard it.",
                    stacklevel=3,
                )
            out = _Loader(data, sampler, None)
        elif isinstance(data, IterableDataset):
            out = _Loader(DataLoader(data, batch_size=cfg.batch_size, num_workers=cfg.num_workers))
        elif isinstance(data, Dataset) or (
            hasattr(data, "__len__") and hasattr(data, "__getitem__")
        ):
            if len(data) == 0:
                raise InputError(f"Trainer: `{name}` is empty")
            sampler = DistributedSampler(
                data,
                num_replicas=ctx.world_size,
                rank=ctx.rank,
                shuffle=train and cfg.shuffle,
                seed=cfg.seed,
                drop_last=train and cfg.drop_last,
            )
            gen = torch.Generator()
            loader = DataLoader(
                data,
                batch_size=cfg.batch_size,
                sampler=sampler,
                num_workers=cfg.num_workers,
                pin_memory=device.type == "cuda",
                drop_last=train and cfg.drop_last,
                generator=gen,
            )
            out = _Loader(loader, sampler, gen)
        else:
            raise InputError(
                f"Trainer: `{name}` must be a torch Dataset or DataLoader, got {type(data).__name__}"
            )
        try:
            n = len(out.loader)
        except TypeError:
            n = None
        if n == 0:
            raise InputError(
                f"Trainer: `{name}` yields no batches (too few samples for batch_size="
                f"{cfg.batch_size} with drop_last={cfg.drop_last}?)"
            )
        return out

    def _param_groups(self, trainable: list[tuple[str, nn.Parameter]]) -> list[dict[str, Any]]:
        """One optimizer group per learning-rate multiplier (``TrainerConfig.lr_multipliers``)."""
        cfg = self.config
        mults = cfg.lr_multipliers or {}
        prefixes = sorted(mults, key=len, reverse=True)
        groups: dict[float, list[nn.Parameter]] = {}
        for name, param in trainable:
            mult = next((float(mults[p]) for p in prefixes if name.startswith(p)), 1.0)
            groups.setdefault(mult, []).append(param)
        unused = [p for p in mults if not any(n.startswith(p) for n, _ in trainable)]
        if unused:
            raise ConfigError(
                f"TrainerConfig.lr_multipliers: no trainable parameter name starts with {unused}"
            )
        return [{"params": ps, "lr": cfg.lr * m} for m, ps in sorted(groups.items())]

    def _optimizer(self, trainable: list[tuple[str, nn.Parameter]]) -> torch.optim.Optimizer:
        cfg = self.config
        if self.param_groups_fn is not None:
            groups = self.param_groups_fn(list(trainable))
            if not isinstance(groups, list) or not all(
                isinstance(g, dict) and "params" in g for g in groups
            ):
                raise ConfigError(
                    "Trainer: param_groups must return a list of dicts with a 'params' key"
                )
            grouped = {id(p) for g in groups for p in g["params"]}
            missing = [n for n, p in trainable if id(p) not in grouped]
            if missing:
                raise ConfigError(f"Trainer: param_groups left out trainable parameters {missing}")
        else:
            groups = self._param_groups(trainable)
        if cfg.optimizer is OptimizerName.ADAMW:
            return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.optimizer is OptimizerName.ADAM:
            return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )

    def _scheduler(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int | None):
        cfg = self.config
        if self.lr_schedule is not None:
            schedule, total_steps = self.lr_schedule, cfg.epochs * (steps_per_epoch or 1)
            return torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: float(schedule(step, total_steps))
            )
        if cfg.scheduler is SchedulerName.NONE and cfg.warmup_epochs == 0:
            return None
        unit = steps_per_epoch or 1  # per-step schedule when the loader has a length
        total = cfg.epochs * unit
        warmup = cfg.warmup_epochs * unit
        cosine = cfg.scheduler is SchedulerName.COSINE

        def factor(step: int) -> float:
            return warmup_cosine(step, warmup, total, cosine=cosine)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    # -- checkpoints -------------------------------------------------------------
    def _save_checkpoint(
        self,
        state: _FitState,
        model: nn.Module,
        trainable: list[tuple[str, nn.Parameter]],
        buffers: list[tuple[str, torch.Tensor]],
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: Any,
        ctx: _Dist,
    ) -> None:
        directory = Path(self.config.checkpoint_dir)  # type: ignore[arg-type]
        rng = _rng_capture()
        if ctx.enabled:
            import torch.distributed as dist

            all_rng: list[Any] = [None] * ctx.world_size
            dist.all_gather_object(all_rng, rng)
        else:
            all_rng = [rng]
        if ctx.is_main:
            tensors: dict[str, torch.Tensor] = {f"param/{n}": p for n, p in trainable}
            tensors.update({f"buffer/{n}": b for n, b in buffers})
            for n, t in (state.best_weights or {}).items():
                tensors[f"best/{n}"] = t
            rng_tensors, rng_meta = _rng_to_files(all_rng)
            tensors.update(rng_tensors)
            meta = {
                "format": _CHECKPOINT_FORMAT,
                "epoch": state.epochs_done,
                "history": state.history,
                "best_value": state.best_value,
                "best_epoch": state.best_epoch,
                "bad_epochs": state.bad_epochs,
                "stopped_early": state.stopped_early,
                "has_best_weights": state.best_weights is not None,
                "param_names": [n for n, _ in trainable],
                "buffer_names": [n for n, _ in buffers],
                "world_size": ctx.world_size,
                "config": self.config.to_dict(),
                "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
                "rng": rng_meta,
            }
            stem = f"trainer_epoch{state.epochs_done:04d}"
            state_name, optim_name = f"{stem}.safetensors", f"{stem}.optim.pt"
            save_state(directory / state_name, tensors, meta)
            save_torch_state(
                directory / optim_name,
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict(),
                },
            )
            manifest = {
                "format": _CHECKPOINT_FORMAT,
                "epoch": state.epochs_done,
                "state": state_name,
                "optimizer": optim_name,
                "sha256": {
                    state_name: sha256_file(directory / state_name),
                    optim_name: sha256_file(directory / optim_name),
                },
            }
            # the manifest is the commit point: until it is replaced, the previous
            # checkpoint stays the one a resume reads
            atomic_write_text(directory / MANIFEST_FILE, json.dumps(manifest, indent=2))
            for old in directory.glob("trainer_epoch*"):
                if old.name not in (state_name, optim_name):
                    old.unlink(missing_ok=True)
        if ctx.enabled:
            import torch.distributed as dist

            dist.barrier()

    @staticmethod
    def read_checkpoint(
        directory: str | Path,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], Any] | None:
        """The last training checkpoint in ``directory``: ``(tensors, meta, optimizer_state)``.

        ``None`` when there is none yet. Raises :class:`CheckpointError` naming the file
        when the manifest or a file it points to is missing, corrupt or altered.
        """
        directory = Path(directory)
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.exists():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"Trainer: {manifest_path} is not valid JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != _CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"Trainer: {manifest_path} is not a format-{_CHECKPOINT_FORMAT} trainer checkpoint manifest"
            )
        try:
            files = {"state": manifest["state"], "optimizer": manifest["optimizer"]}
            hashes = dict(manifest["sha256"])
        except (KeyError, TypeError):
            raise CheckpointError(
                f"Trainer: {manifest_path} lacks 'state', 'optimizer' or 'sha256'"
            ) from None
        for name in files.values():
            path = directory / str(name)
            if not path.is_file():
                raise CheckpointError(
                    f"Trainer: checkpoint file {path} (named in {manifest_path}) is missing"
                )
            if sha256_file(path) != hashes.get(name):
                raise CheckpointError(
                    f"Trainer: checkpoint file {path} is corrupt (SHA-256 differs from {manifest_path})"
                )
        tensors, meta = load_state(directory / files["state"])
        optim_state = load_torch_state(directory / files["optimizer"])
        return tensors, meta, optim_state

    def _restore(
        self,
        loaded: tuple[dict[str, torch.Tensor], dict[str, Any], Any],
        trainable: list[tuple[str, nn.Parameter]],
        buffers: list[tuple[str, torch.Tensor]],
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: Any,
        ctx: _Dist,
    ) -> _FitState:
        tensors, meta, optim_state = loaded
        where = f"Trainer: resuming from {self.config.checkpoint_dir}"
        names = [n for n, _ in trainable]
        saved_names = list(meta.get("param_names", []))
        if saved_names != names:
            missing = sorted(set(names) - set(saved_names))
            unexpected = sorted(set(saved_names) - set(names))
            raise CheckpointError(
                f"{where}: the checkpoint's trainable parameters differ from the model's; "
                f"missing in checkpoint: {missing}; unexpected in checkpoint: {unexpected}"
                + ("" if missing or unexpected else "; (same names, different order)")
            )
        targets = [(f"param/{n}", p) for n, p in trainable]
        targets += [(f"buffer/{n}", b) for n, b in buffers if f"buffer/{n}" in tensors]
        for key, dest in targets:
            src = tensors.get(key)
            if src is None:
                raise CheckpointError(f"{where}: tensor {key!r} is missing from the checkpoint")
            if tuple(src.shape) != tuple(dest.shape):
                raise CheckpointError(
                    f"{where}: tensor {key!r} has shape {tuple(src.shape)} in the checkpoint "
                    f"but {tuple(dest.shape)} in the model"
                )
        with torch.no_grad():
            for key, dest in targets:
                dest.copy_(tensors[key].to(device=dest.device, dtype=dest.dtype))
        try:
            optimizer.load_state_dict(optim_state["optimizer"])
            if scheduler is not None and optim_state.get("scheduler") is not None:
                scheduler.load_state_dict(optim_state["scheduler"])
            if optim_state.get("scaler"):
                scaler.load_state_dict(optim_state["scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{where}: optimizer/scheduler state does not fit ({exc})"
            ) from None

        saved_cfg = meta.get("config", {})
        current_cfg = self.config.to_dict()
        changed = [
            k for k in _RESUME_CRITICAL if k in saved_cfg and saved_cfg[k] != current_cfg.get(k)
        ]
        if changed:
            warnings.warn(
                f"{where}: config changed since the checkpoint ({', '.join(changed)}); "
                "the resumed run will not match an uninterrupted one",
                stacklevel=3,
            )
        if not _rng_restore(tensors, meta.get("rng", {}), ctx.rank):
            warnings.warn(
                f"{where}: no RNG state for rank {ctx.rank} (world size changed from "
                f"{meta.get('world_size')} to {ctx.world_size}); reseeding",
                stacklevel=3,
            )
            seed_everything(
                _derive_seed(self.config.seed, int(meta.get("epoch", 0)), ctx.rank) % 2**32
            )
        best = None
        if meta.get("has_best_weights"):
            best = {n: tensors[f"best/{n}"].clone() for n in names if f"best/{n}" in tensors}
        return _FitState(
            epochs_done=int(meta.get("epoch", 0)),
            history=list(meta.get("history", [])),
            best_value=meta.get("best_value"),
            best_epoch=meta.get("best_epoch"),
            bad_epochs=int(meta.get("bad_epochs", 0)),
            stopped_early=bool(meta.get("stopped_early", False)),
            best_weights=best,
        )

    # -- loops ---------------------------------------------------------------------
    def _autocast(self, device: torch.device, amp: bool):
        dtype = torch.float16 if self.config.amp_dtype is AmpDtype.FLOAT16 else torch.bfloat16
        return torch.autocast(device_type=device.type, dtype=dtype, enabled=amp)

    def _run_step(self, net: nn.Module, batch: Any, where: str) -> tuple[torch.Tensor, Any, Any]:
        out = self.step_fn(net, batch)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise InputError(
                f"{where}: step_fn must return (loss, preds, targets), got {type(out).__name__}"
            )
        loss = out[0]
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise InputError(f"{where}: step_fn's loss must be a scalar tensor, got {loss!r:.80}")
        return loss.reshape(()), out[1], out[2]

    def _train_epoch(
        self,
        net: nn.Module,
        data: _Loader,
        epoch: int,
        params: list[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: Any,
        device: torch.device,
        amp: bool,
        ctx: _Dist,
    ) -> float:
        cfg = self.config
        net.train()
        if data.sampler is not None:
            data.sampler.set_epoch(epoch)
        if data.generator is not None:
            data.generator.manual_seed(_derive_seed(cfg.seed, epoch, ctx.rank))
        try:
            total = len(data.loader)
        except TypeError:
            total = None
        per_step = scheduler is not None and total is not None
        bar = progress_bar(
            total=total,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            enabled=cfg.progress and ctx.is_main,
            unit="batch",
        )
        self._bar = bar
        loss_sum, count = 0.0, 0
        non_blocking = device.type == "cuda"
        where = f"Trainer.fit: epoch {epoch + 1}"
        try:
            for step, batch in enumerate(data.loader):
                batch = _to_device(batch, device, non_blocking)
                with self._autocast(device, amp):
                    loss, preds, targets = self._run_step(net, batch, where)
                value = float(loss.detach())
                finite = math.isfinite(value)
                if not finite and not scaler.is_enabled():
                    raise NonFiniteError(
                        f"{where}, step {step + 1}: the loss is {value}; lower the learning rate "
                        f"(lr={cfg.lr}) or check the inputs"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                if per_step:
                    scheduler.step()
                self.global_step += 1
                for cb in self.step_callbacks:
                    cb.on_step_end(self, getattr(net, "module", net), self.global_step)
                if finite:
                    n = _batch_size(preds, targets)
                    loss_sum += value * n
                    count += n
                    bar.set_postfix(loss=f"{loss_sum / max(count, 1):.4f}", refresh=False)
                bar.update(1)
            if scheduler is not None and not per_step:
                scheduler.step()
            loss_sum, count = _all_reduce_sum([loss_sum, count], ctx, device)
        except BaseException:
            bar.close()
            raise
        return loss_sum / count if count else float("nan")

    def _eval_pass(
        self, model: nn.Module, data: _Loader, device: torch.device, amp: bool, ctx: _Dist
    ) -> dict[str, float | None]:
        was_training = model.training
        model.eval()
        acc = _MetricAccumulator(self.metric, self.num_classes, ctx, device)
        loss_sum, count = 0.0, 0
        non_blocking = device.type == "cuda"
        try:
            with torch.no_grad():
                for batch in data.loader:
                    batch = _to_device(batch, device, non_blocking)
                    with self._autocast(device, amp):
                        loss, preds, targets = self._run_step(model, batch, "Trainer.evaluate")
                    n = _batch_size(preds, targets)
                    loss_sum += float(loss) * n
                    count += n
                    acc.update(preds, targets)
            loss_sum, count = _all_reduce_sum([loss_sum, count], ctx, device)
            metric = acc.compute()
        finally:
            model.train(was_training)
        return {"loss": loss_sum / count if count else float("nan"), "metric": metric}

    def _amp_enabled(self, device: torch.device) -> bool:
        amp = self.config.amp
        if amp is None:
            return device.type == "cuda"
        if amp and device.type != "cuda":
            warnings.warn(
                "Trainer: AMP is only used on CUDA; training in float32 on CPU", stacklevel=3
            )
            return False
        return amp

    def evaluate(self, model: nn.Module, data: Any) -> dict[str, float | None]:
        """Loss and metric of ``model`` on ``data`` (a Dataset or DataLoader), in eval mode.

        Returns ``{"loss": float, "metric": float | None}``; under DDP the values are
        reduced over all ranks (a Dataset is sharded; padding of the last shard may count a
        few samples twice, as ``DistributedSampler`` does).
        """
        if not isinstance(model, nn.Module):
            raise InputError(
                f"Trainer.evaluate: model must be an nn.Module, got {type(model).__name__}"
            )
        ctx = _current_dist()
        device = self._device(ctx)
        model.to(device)
        loader = self._loader(data, "data", train=False, ctx=ctx, device=device)
        return self._eval_pass(model, loader, device, self._amp_enabled(device), ctx)

    def _update_best(
        self, state: _FitState, logs: dict[str, Any], trainable: list[tuple[str, nn.Parameter]]
    ) -> None:
        cfg = self.config
        value = logs["val_metric"] if cfg.monitor is Monitor.VAL_METRIC else logs["val_loss"]
        if value is None:
            return
        higher = cfg.monitor is Monitor.VAL_METRIC
        improved = False
        if math.isfinite(value):
            if state.best_value is None:
                improved = True
            elif higher:
                improved = value > state.best_value + cfg.min_delta
            else:
                improved = value < state.best_value - cfg.min_delta
        if improved:
            state.best_value = float(value)
            state.best_epoch = int(logs["epoch"])
            state.bad_epochs = 0
            if cfg.restore_best:
                state.best_weights = {n: p.detach().to("cpu", copy=True) for n, p in trainable}
        else:
            state.bad_epochs += 1
        patience = cfg.early_stopping_patience
        if patience is not None and state.bad_epochs >= patience:
            state.stopped_early = True

    def fit(self, model: nn.Module, train: Any, val: Any = None) -> TrainResult:
        """Train ``model``'s trainable parameters on ``train``; validate on ``val`` each epoch.

        ``train``/``val`` are torch Datasets (the Trainer builds seeded loaders, sharded
        under DDP) or DataLoaders (used as they are). Returns a :class:`TrainResult`; the
        model ends with the best epoch's weights when ``restore_best`` and ``val`` are set.
        The global RNGs (``random``, ``numpy``, ``torch``) are seeded with
        ``config.seed + rank`` at the start (the model is built before, so DDP ranks start
        from rank 0's weights and differ only in dropout/augmentation draws).

        Raises:
            ConfigError: nothing to train, early stopping without ``val``, bad settings.
            InputError: unusable data or step outputs. NonFiniteError: the loss became NaN/inf.
            CheckpointError: the checkpoint to resume from is corrupt or does not fit.
        """
        cfg = self.config
        if not isinstance(model, nn.Module):
            raise InputError(f"Trainer.fit: model must be an nn.Module, got {type(model).__name__}")
        if cfg.early_stopping_patience is not None and val is None:
            raise ConfigError(
                "TrainerConfig.early_stopping_patience: early stopping needs `val` data"
            )
        ctx = _setup_dist(cfg.device)
        device = self._device(ctx)
        amp = self._amp_enabled(device)
        use_scaler = amp and cfg.amp_dtype is AmpDtype.FLOAT16
        self.should_stop = False
        with _determinism(cfg.deterministic, device):
            seed_everything(cfg.seed + ctx.rank)
            model.to(device)
            trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            if not trainable:
                raise ConfigError(
                    "Trainer.fit: the model has no parameter with requires_grad=True; nothing to train"
                )
            persistent = set(model.state_dict().keys())
            buffers = [(n, b) for n, b in model.named_buffers() if n in persistent]
            params = [p for _, p in trainable]
            train_data = self._loader(train, "train", train=True, ctx=ctx, device=device)
            val_data = (
                self._loader(val, "val", train=False, ctx=ctx, device=device)
                if val is not None
                else None
            )
            net: nn.Module = model
            if ctx.enabled:
                from torch.nn.parallel import DistributedDataParallel

                net = DistributedDataParallel(
                    model,
                    device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=cfg.find_unused_parameters,
                )
            optimizer = self._optimizer(trainable)
            try:
                steps_per_epoch: int | None = len(train_data.loader)
            except TypeError:
                steps_per_epoch = None
            scheduler = self._scheduler(optimizer, steps_per_epoch)
            scaler = torch.amp.GradScaler(
                device.type if device.type == "cuda" else "cpu", enabled=use_scaler
            )

            state = _FitState()
            if cfg.checkpoint_dir is not None and cfg.resume:
                loaded = self.read_checkpoint(cfg.checkpoint_dir)
                if loaded is not None:
                    state = self._restore(
                        loaded, trainable, buffers, optimizer, scheduler, scaler, ctx
                    )

            self.global_step = state.epochs_done * (steps_per_epoch or 0)
            self.step_callbacks = [cb for cb in self.callbacks if hasattr(cb, "on_step_end")]
            for cb in self.callbacks:
                if hasattr(cb, "on_fit_start"):
                    cb.on_fit_start(self, model)
            for epoch in range(state.epochs_done, cfg.epochs):
                if state.stopped_early:  # resumed from a run that had stopped early
                    break
                start = time.perf_counter()
                train_loss = self._train_epoch(
                    net, train_data, epoch, params, optimizer, scheduler, scaler, device, amp, ctx
                )
                logs: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "val_loss": None,
                    "val_metric": None,
                    "lr": float(optimizer.param_groups[0]["lr"]),
                }
                if val_data is not None:
                    ev = self._eval_pass(model, val_data, device, amp, ctx)
                    logs["val_loss"], logs["val_metric"] = ev["loss"], ev["metric"]
                logs["seconds"] = time.perf_counter() - start
                bar = self._bar
                post = {"loss": f"{train_loss:.4f}"}
                if logs["val_loss"] is not None:
                    post["val_loss"] = f"{logs['val_loss']:.4f}"
                if logs["val_metric"] is not None:
                    post["val_" + (self.metric if isinstance(self.metric, str) else "metric")] = (
                        f"{logs['val_metric']:.4f}"
                    )
                bar.set_postfix(post)
                bar.close()
                state.history.append(logs)
                self._update_best(state, logs, trainable)
                state.epochs_done = epoch + 1
                if cfg.checkpoint_dir is not None:
                    self._save_checkpoint(
                        state, model, trainable, buffers, optimizer, scheduler, scaler, ctx
                    )
                for cb in self.callbacks:
                    cb.on_epoch_end(self, epoch + 1, logs)
                if state.stopped_early or self.should_stop:
                    break

            if cfg.restore_best and state.best_weights is not None:
                with torch.no_grad():
                    for n, p in trainable:
                        p.copy_(state.best_weights[n].to(device=p.device, dtype=p.dtype))
            result = TrainResult(
                history=state.history,
                best_epoch=state.best_epoch,
                best_metric=state.best_value,
                stopped_early=state.stopped_early
                or (self.should_stop and len(state.history) < cfg.epochs),
                epochs_run=len(state.history),
            )
            for cb in self.callbacks:
                if hasattr(cb, "on_fit_end"):
                    cb.on_fit_end(self, result)
        return result
