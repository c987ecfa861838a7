"""Si-Blurry online continual-learning streams: a seeded, resumable iterable of mini-batches.

Si-Blurry (Moon et al., "Online Class Incremental Learning on Stochastic Blurry Task
Boundary via Mask and Visual Prompt Tuning", ICCV 2023, Sec. 3; official
``KHU-AGI/Si-Blurry`` ``utils/online_sampler.py``, ``OnlineSampler``) builds a stream from a
labelled pool in four steps:

1. the classes are shuffled; ``N`` % of them are *disjoint* classes (each appears in one task
   only), the rest are *blurry* classes;
2. both groups are split across ``num_tasks`` tasks at **random cut points** (stochastic mode;
   tasks get different numbers of classes, possibly none) or into equal parts (fixed mode);
3. ``M`` % of the blurry-class samples are *blurred*: taken out of their home task and moved
   to another task, so a class may show up before "its" task;
4. every task's samples are shuffled; the stream delivers the tasks one after the other in
   mini-batches, **once** (online, one pass). Batches never span two tasks (as in the
   official loader, which iterates task by task), so the last batch of a task may be short.

The learner only ever sees ``(x, y)`` batches: the task boundaries are kept by the stream for
the evaluation protocol (:attr:`SiBlurryStream.task_ends`) and never handed to a learner.

Special cases (:class:`StreamSetting`): ``class_incremental`` (``N = 100``, ``M = 0``, equal
splits: disjoint tasks) and ``blurry`` (Blurry-M of Koh et al. 2022: ``N = 0``, equal splits,
``M`` % blurred).

Official-code bug not copied: the official trainer passes its arguments to
``OnlineSampler`` positionally one slot off (``methods/_trainer.py``:
``OnlineSampler(ds, n_tasks, m, n, seed, rnd_NM, selection_size)``), so ``varing_NM`` receives
``selection_size`` (= 1, truthy) and the stochastic split is always on. Here
``stochastic`` is an explicit config field that is honoured both ways.

Resuming: :meth:`SiBlurryStream.state_dict` records how many samples were delivered;
:meth:`SiBlurryStream.load_state_dict` (same data, same config) continues at exactly the next
sample, so nothing is seen twice and nothing skipped. A resume point inside a batch delivers
the rest of that batch first, so later batches are identical to an uninterrupted run.

Example::

    >>> import numpy as np
    >>> labels = np.repeat(np.arange(10), 20)                  # 10 classes x 20 samples
    >>> stream = SiBlurryStream(labels, SiBlurryConfig(num_tasks=5, batch_size=16, seed=1))
    >>> len(stream.order), stream.num_samples                   # every sample exactly once
    (200, 200)
    >>> batch = next(iter(stream))
    >>> batch.labels.shape[0] <= 16, batch.start
    (True, 0)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from polyprompt.core.config import PromptConfig, is_int
from polyprompt.core.errors import InputError, ShapeError

if TYPE_CHECKING:
    import torch

__all__ = [
    "SiBlurryConfig",
    "SiBlurryStream",
    "StreamBatch",
    "StreamSchedule",
    "StreamSetting",
    "build_schedule",
]


class StreamSetting(str, Enum):
    """Named stream settings (presets of :class:`SiBlurryConfig`)."""

    SI_BLURRY = "si_blurry"
    CLASS_INCREMENTAL = "class_incremental"
    BLURRY = "blurry"


@dataclass
class SiBlurryConfig(PromptConfig):
    """How a stream is built (Si-Blurry defaults of the paper: N=50, M=10, 5 tasks).

    Args:
        num_tasks: number of (hidden) tasks.
        disjoint_percent: ``N``, the share of classes that are disjoint (0-100).
        blurry_percent: ``M``, the share of blurry-class samples moved to another task (0-100).
        batch_size: samples per delivered mini-batch (the paper's online batch is 64).
        stochastic: random cut points for the class splits and the blurred-sample counts
            (Si-Blurry); ``False``: equal splits (the fixed N/M setting).
        seed: the stream seed (class order, splits, blurring, shuffles).
        drop_last: drop each task's final short batch instead of delivering it.
    """

    num_tasks: int = 5
    disjoint_percent: float = 50.0
    blurry_percent: float = 10.0
    batch_size: int = 64
    stochastic: bool = True
    seed: int = 0
    drop_last: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        r(is_int(self.num_tasks) and self.num_tasks >= 1, "num_tasks", "must be an int >= 1")
        for name in ("disjoint_percent", "blurry_percent"):
            v = getattr(self, name)
            r(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100,
                name,
                "must be a number in [0, 100]",
            )
        r(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "must be an int >= 1")
        r(isinstance(self.stochastic, bool), "stochastic", "must be a bool")
        r(is_int(self.seed) and self.seed >= 0, "seed", "must be an int >= 0")
        r(isinstance(self.drop_last, bool), "drop_last", "must be a bool")

    @classmethod
    def preset(cls, setting: StreamSetting | str, **overrides: Any) -> SiBlurryConfig:
        """Config of a named setting; ``overrides`` replace any field.

        Example::

            >>> SiBlurryConfig.preset("class_incremental", num_tasks=5).disjoint_percent
            100.0
        """
        try:
            s = StreamSetting(setting)
        except ValueError:
            from polyprompt.core.errors import ConfigError

            raise ConfigError(
                f"SiBlurryConfig.preset: unknown setting {setting!r}; one of "
                f"{[m.value for m in StreamSetting]}"
            ) from None
        base: dict[str, Any] = {}
        if s is StreamSetting.CLASS_INCREMENTAL:
            base = {"disjoint_percent": 100.0, "blurry_percent": 0.0, "stochastic": False}
        elif s is StreamSetting.BLURRY:
            base = {"disjoint_percent": 0.0, "blurry_percent": 10.0, "stochastic": False}
        base.update(overrides)
        return cls(**base)


@dataclass
class StreamSchedule:
    """The full stream, fixed by (labels, config).

    Attributes:
        order: sample indices into the pool in delivery order ``(num_samples,)``.
        task_of: hidden task of each position of ``order``.
        task_ends: position (exclusive) where each task ends, ``(num_tasks,)``.
        disjoint_classes / blurry_classes: classes of each group per task.
        blurred: pool indices of the moved (blurred) samples.
        batch_starts: start position of every mini-batch (the last entry is the end).
    """

    order: np.ndarray
    task_of: np.ndarray
    task_ends: np.ndarray
    disjoint_classes: list[list[int]]
    blurry_classes: list[list[int]]
    blurred: np.ndarray
    batch_starts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def fingerprint(self) -> str:
        """Short sha256 of the delivery order and the batch layout."""
        h = hashlib.sha256(self.order.astype(np.int64).tobytes())
        h.update(self.batch_starts.astype(np.int64).tobytes())
        return h.hexdigest()[:16]


def _cuts(rng: np.random.Generator, n: int, parts: int, stochastic: bool) -> list[int]:
    """Boundaries ``[0, c1, ..., n]`` of ``parts`` consecutive pieces of ``range(n)``."""
    if stochastic and parts > 1 and n > 0:
        inner = np.sort(rng.integers(0, n + 1, size=parts - 1)).tolist()
    else:
        inner = [round(n * i / parts) for i in range(1, parts)]
    return [0, *[int(c) for c in inner], n]


def build_schedule(labels: Sequence[int] | np.ndarray, config: SiBlurryConfig) -> StreamSchedule:
    """The Si-Blurry delivery order of a labelled pool (see the module docstring).

    Raises:
        InputError: no samples, or labels that are not non-negative integers.
    """
    where = "build_schedule"
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise InputError(f"{where}: `labels` must be a non-empty 1-D sequence, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
            raise InputError(f"{where}: `labels` must be integer class ids, got dtype {y.dtype}")
        y = y.astype(np.int64)
    if (y < 0).any():
        raise InputError(f"{where}: negative label {int(y.min())} in `labels`")
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    classes = np.unique(y)
    order = rng.permutation(classes)
    n_disjoint = int(len(classes) * cfg.disjoint_percent // 100)
    disjoint, blurry = order[:n_disjoint].tolist(), order[n_disjoint:].tolist()
    t = cfg.num_tasks
    dc, bc = (
        _cuts(rng, len(disjoint), t, cfg.stochastic),
        _cuts(rng, len(blurry), t, cfg.stochastic),
    )
    disjoint_classes = [sorted(int(c) for c in disjoint[dc[i] : dc[i + 1]]) for i in range(t)]
    blurry_classes = [sorted(int(c) for c in blurry[bc[i] : bc[i + 1]]) for i in range(t)]

    home = np.full(int(classes.max()) + 1, -1, dtype=np.int64)
    for i in range(t):
        for c in disjoint_classes[i] + blurry_classes[i]:
            home[c] = i
    task = home[y].copy()  # task of every pool sample
    is_blurry_cls = np.zeros_like(home, dtype=bool)
    is_blurry_cls[[c for cs in blurry_classes for c in cs]] = True
    blurry_idx = np.flatnonzero(is_blurry_cls[y])

    # M% of the blurry-class samples move to another task (Si-Blurry step 3)
    n_move = int(len(blurry_idx) * cfg.blurry_percent // 100)
    moved = np.zeros(0, dtype=np.int64)
    if n_move > 0 and t > 1:
        if cfg.stochastic:
            moved = np.sort(rng.choice(blurry_idx, size=n_move, replace=False))
            shift = rng.integers(1, t, size=n_move)  # never the home task
            task[moved] = (task[moved] + shift) % t
        else:
            per_task = []
            for i in range(t):
                own = rng.permutation(blurry_idx[task[blurry_idx] == i])
                per_task.append(own[: int(len(own) * cfg.blurry_percent // 100)])
            moved = np.concatenate(per_task) if per_task else moved
            pool = rng.permutation(moved)
            for i, chunk in enumerate(np.array_split(pool, t)):
                task[chunk] = i
            moved = np.sort(moved)

    parts = [rng.permutation(np.flatnonzero(task == i)) for i in range(t)]
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    task_ends = np.cumsum(sizes)
    starts: list[int] = []
    begin = 0
    kept: list[np.ndarray] = []
    for i, p in enumerate(parts):
        n = len(p)
        if cfg.drop_last:
            n = n - n % cfg.batch_size
            p = p[:n]
        kept.append(p)
        starts.extend(range(begin, begin + n, cfg.batch_size))
        begin += n
        task_ends[i] = begin
    order_arr = np.concatenate(kept).astype(np.int64) if kept else np.zeros(0, np.int64)
    task_of = np.concatenate([np.full(len(p), i) for i, p in enumerate(kept)]).astype(np.int64)
    return StreamSchedule(
        order=order_arr,
        task_of=task_of,
        task_ends=task_ends,
        disjoint_classes=disjoint_classes,
        blurry_classes=blurry_classes,
        blurred=moved.astype(np.int64),
        batch_starts=np.array([*starts, begin], dtype=np.int64),
    )


@dataclass
class StreamBatch:
    """One delivered mini-batch.

    Attributes:
        images: ``images[indices]`` of the pool (``None`` for a label-only stream).
        labels: class ids ``(b,)`` int64.
        indices: pool indices ``(b,)``.
        start: stream position of the first sample (samples delivered before it).
    """

    images: torch.Tensor | None
    labels: torch.Tensor
    indices: torch.Tensor
    start: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class SiBlurryStream:
    """A seeded, resumable, one-pass Si-Blurry stream over a labelled pool.

    Args:
        labels: class id of every pool sample ``(N,)``.
        config: :class:`SiBlurryConfig`.
        images: optional tensor ``(N, ...)``; batches then carry ``images[indices]``.
        num_classes: if given, every label must lie in ``[0, num_classes)``.

    Iterating yields :class:`StreamBatch` from the current :attr:`position` to the end;
    the position advances as batches are handed out (one pass: a second ``iter`` continues
    where the first stopped). ``len(stream)`` is the number of batches left.

    Raises:
        InputError: empty pool, labels out of range, images and labels of different length.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        config: SiBlurryConfig | None = None,
        *,
        images: torch.Tensor | None = None,
        num_classes: int | None = None,
    ) -> None:
        where = "SiBlurryStream"
        self.config = config if config is not None else SiBlurryConfig()
        y = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
        if y.ndim != 1 or y.size == 0:
            raise InputError(f"{where}: `labels` must be a non-empty 1-D sequence, got {y.shape}")
        if num_classes is not None:
            bad = (y < 0) | (y >= num_classes)
            if bad.any():
                raise InputError(
                    f"{where}: label {int(y[bad][0])} at pool index {int(np.flatnonzero(bad)[0])} "
                    f"is out of range [0, {num_classes})"
                )
        if images is not None and int(images.shape[0]) != y.size:
            raise ShapeError(
                f"{where}: {int(images.shape[0])} images but {y.size} labels (must be equal)"
            )
        self.labels = y.astype(np.int64)
        self.images = images
        self.schedule = build_schedule(self.labels, self.config)
        self.position = 0

    # -- facts -----------------------------------------------------------------
    @property
    def order(self) -> np.ndarray:
        return self.schedule.order

    @property
    def num_samples(self) -> int:
        return int(self.schedule.order.size)

    @property
    def task_ends(self) -> np.ndarray:
        """Stream position where each hidden task ends (for the evaluation protocol only)."""
        return self.schedule.task_ends

    @property
    def classes(self) -> list[int]:
        return sorted(int(c) for c in np.unique(self.labels))

    def __len__(self) -> int:
        starts = self.schedule.batch_starts
        return int(np.sum(starts[:-1] >= self.position)) + int(
            self.position < self.num_samples and self.position not in set(starts[:-1].tolist())
        )

    # -- resume ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"position", "fingerprint", "config"}``: enough to resume exactly."""
        return {
            "position": int(self.position),
            "fingerprint": self.schedule.fingerprint(),
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at ``state["position"]``.

        Raises:
            InputError: the state was written for another stream (other data, seed or
                config) or holds a position outside ``[0, num_samples]``.
        """
        where = "SiBlurryStream.load_state_dict"
        try:
            pos, fp = int(state["position"]), str(state["fingerprint"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{where}: state needs 'position' and 'fingerprint'") from None
        if fp != self.schedule.fingerprint():
            raise InputError(
                f"{where}: the state belongs to another stream (fingerprint {fp} != "
                f"{self.schedule.fingerprint()}): same data, seed and config are needed"
            )
        if not 0 <= pos <= self.num_samples:
            raise InputError(f"{where}: position {pos} outside [0, {self.num_samples}]")
        self.position = pos

    # -- iteration ---------------------------------------------------------------
    def _batch(self, lo: int, hi: int) -> StreamBatch:
        import torch

        idx = self.schedule.order[lo:hi]
        ti = torch.as_tensor(idx, dtype=torch.int64)
        x = None if self.images is None else self.images[ti]
        return StreamBatch(x, torch.as_tensor(self.labels[idx]), ti, lo)

    def __iter__(self) -> Iterator[StreamBatch]:
        starts = self.schedule.batch_starts
        while self.position < self.num_samples:
            k = int(np.searchsorted(starts, self.position, side="right"))  # next batch start
            hi = int(starts[k]) if k < len(starts) else self.num_samples
            lo = self.position
            batch = self._batch(lo, hi)
            self.position = hi
            yield batch

    def task_of_position(self, position: int) -> int:
        """Hidden task of stream position ``position`` (evaluation only)."""
        return int(self.schedule.task_of[position])
