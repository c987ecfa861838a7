"""The online learner: one pass over a Si-Blurry stream, several updates per incoming batch.

Protocol of the official trainer (KHU-AGI/Si-Blurry ``methods/_trainer.py`` ``main_worker``,
``methods/mvp.py`` ``online_step``):

* each incoming batch first extends the set of *exposed* (seen) classes; logits of the
  other classes are ``-inf`` in training and evaluation;
* the batch (plus, with a replay buffer, an equally sized batch drawn from it) is used for
  ``online_iter`` updates (3 in the paper), then the reservoir buffer sees the batch;
* every ``eval_period`` samples the model is evaluated on the test samples of the classes
  seen so far (the A_auc curve); at the end of every hidden task the accuracy and the
  per-class accuracies are recorded (A_last, F_last). The learner itself never receives the
  task boundaries: the evaluation protocol reads them from the stream.

Methods: anything from :mod:`polyprompt.continual.method` (MVP, DualPrompt, L2P and the
ablations; their own ``loss``) or a core classifier (``linear_probe``: online fine-tuning of
the head; ``full_finetune``: every weight; with ``memory_size > 0``: experience replay).

Queries: the MVP family matches keys with the *frozen* backbone's CLS feature; since the
backbone never changes and no augmentation is used, the queries of the pool and the test set
are computed once (``cache_queries``) — exact, not an approximation.

Resume: :meth:`OnlineLearner.save` writes the trainable state, optimizer, stream position,
seen classes, replay buffer, RNG and the curve so far atomically
(``torch.load(weights_only=True)``-readable); :meth:`OnlineLearner.load` + ``run`` continue at
the next sample with identical results.

Example::

    >>> learner = OnlineLearner(model, LearnerConfig(online_iter=3, eval_period=100))  # doctest: +SKIP
    >>> result = learner.run(stream, test_images, test_labels)                       # doctest: +SKIP
    >>> result.a_auc, result.a_last, result.f_last                                   # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import CheckpointError, InputError
from polyprompt.core.metrics import a_auc, a_last, f_last
from polyprompt.core.validation import check_tensor

if TYPE_CHECKING:
    from polyprompt.continual.stream import SiBlurryStream, StreamBatch

__all__ = ["LearnerConfig", "OnlineLearner", "OnlineResult", "ReservoirBuffer"]


@dataclass
class LearnerConfig(PromptConfig):
    """Online training settings (paper: Adam 5e-3, 3 updates per batch, no buffer for MVP).

    Args:
        online_iter: updates per incoming batch.
        lr: Adam learning rate.
        memory_size: reservoir replay buffer size (0 = none; ER uses > 0).
        eval_period: evaluate on the seen classes every this many samples (A_auc).
        eval_batch_size: batch size of the evaluations.
        cache_queries: pre-compute the frozen key-match queries (MVP family).
        seed: learner seed (buffer sampling).
        progress: progress bar over the stream.
    """

    online_iter: int = 3
    lr: float = 5e-3
    memory_size: int = 0
    eval_period: int = 100
    eval_batch_size: int = 256
    cache_queries: bool = True
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        for name in ("online_iter", "eval_period", "eval_batch_size"):
            v = getattr(self, name)
            r(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                name,
                "must be an int >= 1",
            )
        r(
            isinstance(self.memory_size, int) and self.memory_size >= 0,
            "memory_size",
            "must be >= 0",
        )
        r(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "must be > 0")
        r(isinstance(self.seed, int) and self.seed >= 0, "seed", "must be an int >= 0")


class ReservoirBuffer:
    """Reservoir sampling over pool indices (``methods/mvp.py`` ``update_memory``).

    Holds at most ``size`` pool indices; after ``n`` offered samples every one of them is in
    the buffer with probability ``size / n``.
    """

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size = size
        self.items: list[int] = []
        self.offered = 0
        self.gen = generator

    def __len__(self) -> int:
        return len(self.items)

    def add(self, indices: torch.Tensor) -> None:
        for i in indices.tolist():
            self.offered += 1
            if len(self.items) < self.size:
                self.items.append(int(i))
            else:
                j = int(torch.randint(0, self.offered, (1,), generator=self.gen))
                if j < self.size:
                    self.items[j] = int(i)

    def sample(self, n: int) -> torch.Tensor:
        if not self.items:
            return torch.zeros(0, dtype=torch.int64)
        n = min(n, len(self.items))
        pick = torch.randperm(len(self.items), generator=self.gen)[:n]
        return torch.as_tensor(self.items, dtype=torch.int64)[pick]


@dataclass
class OnlineResult:
    """What one pass over a stream produced.

    Attributes:
        a_auc, a_last, f_last: the Si-Blurry metrics (core :mod:`polyprompt.core.metrics`).
        curve_samples, curve_acc: the anytime-accuracy curve (samples seen, accuracy on the
            seen classes) behind A_auc.
        task_acc: accuracy at the end of every hidden task; cls_acc: per-class accuracies
            at those points ``(tasks, classes)``.
        samples: training samples consumed; updates: optimizer steps.
        train_seconds: time spent in updates (no evaluation); samples_per_second over it.
        unseen_test_classes: test classes never delivered by the stream (never evaluated).
    """

    a_auc: float
    a_last: float
    f_last: float
    curve_samples: list[int]
    curve_acc: list[float]
    task_acc: list[float]
    cls_acc: list[list[float]]
    samples: int
    updates: int
    train_seconds: float
    samples_per_second: float
    unseen_test_classes: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class OnlineLearner:
    """Runs one method over a stream (see the module docstring).

    Args:
        model: an MVP-family method (has ``loss``) or a core classifier (logits from
            ``forward``), built for ``num_classes`` classes.
        config: :class:`LearnerConfig`.
    """

    def __init__(self, model: nn.Module, config: LearnerConfig | None = None) -> None:
        self.model = model
        self.config = config if config is not None else LearnerConfig()
        self.prompt_family = hasattr(model, "loss") and hasattr(model, "query")
        head = getattr(model, "head", None)
        if not isinstance(head, nn.Linear):
            raise InputError("OnlineLearner: `model` needs a linear `head` (num_classes outputs)")
        self.num_classes = int(head.out_features)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise InputError("OnlineLearner: `model` has no trainable parameters")
        self.optimizer = torch.optim.Adam(params, lr=self.config.lr)
        self.gen = torch.Generator().manual_seed(self.config.seed)
        self.memory = ReservoirBuffer(self.config.memory_size, self.gen)
        self.seen = torch.zeros(self.num_classes, dtype=torch.bool)
        self.exposed: list[int] = []
        self.samples = 0
        self.updates = 0
        self.train_seconds = 0.0
        self.next_eval = self.config.eval_period
        self.tasks_done = 0
        self.curve_samples: list[int] = []
        self.curve_acc: list[float] = []
        self.task_acc: list[float] = []
        self.cls_acc: list[list[float]] = []
        self.trained_indices: list[int] = []
        self._pool_q: torch.Tensor | None = None
        self._test_q: torch.Tensor | None = None

    # -- inputs ---------------------------------------------------------------
    def _check_labels(self, y: torch.Tensor, where: str) -> torch.Tensor:
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise InputError(f"{where}: labels must be integer class ids, got {y.dtype}")
        y = y.long()
        bad = (y < 0) | (y >= self.num_classes)
        if bool(bad.any()):
            raise InputError(
                f"{where}: label {int(y[bad][0])} out of range [0, {self.num_classes}) "
                f"(the head has {self.num_classes} classes)"
            )
        return y

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], self.config.eval_batch_size):
                out.append(self.model.query(x[i : i + self.config.eval_batch_size]))
        return torch.cat(out)

    # -- one batch ------------------------------------------------------------
    def _logits_and_loss(
        self, x: torch.Tensor, y: torch.Tensor, q: torch.Tensor | None
    ) -> torch.Tensor:
        if self.prompt_family:
            out = self.model(x, seen=self.seen, query=q)
            loss, _ = self.model.loss(out, y, self.seen)
            return loss
        logits = self.model(x)
        logits = logits + torch.where(self.seen, 0.0, float("-inf")).to(logits.dtype)
        return F.cross_entropy(logits, y)

    def observe(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        indices: torch.Tensor | None = None,
        pool: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> float | None:
        """Learn from one incoming batch: ``online_iter`` updates (+ replay), then the buffer.

        An empty batch is a no-op (returns ``None``: nothing is learned or counted).

        Raises:
            InputError: labels out of range / not integers, images and labels disagree.
            ShapeError: images of the wrong rank, size or channel count (from the backbone).
        """
        where = "OnlineLearner.observe"
        if y.numel() == 0 and x.shape[0] == 0:
            return None
        check_tensor(x, "x", rank=4, min_size={0: 1}, where=where)
        if x.shape[0] != y.shape[0]:
            raise InputError(f"{where}: {x.shape[0]} images but {y.shape[0]} labels")
        y = self._check_labels(y, where)
        seen_before, exposed_before = self.seen.clone(), list(self.exposed)
        for c in y.unique().tolist():
            if not self.seen[c]:
                self.seen[c] = True
                self.exposed.append(int(c))
        try:
            return self._updates(x, y, indices, pool, where)
        except Exception:
            self.seen, self.exposed = seen_before, exposed_before  # nothing half-applied
            raise

    def _updates(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        indices: torch.Tensor | None,
        pool: tuple[torch.Tensor, torch.Tensor] | None,
        where: str,
    ) -> float:
        self.model.train()
        t0 = time.perf_counter()
        q = None
        if self.prompt_family and self._pool_q is not None and indices is not None:
            q = self._pool_q[indices]
        elif self.prompt_family and self.config.cache_queries:
            q = self.model.query(x)  # frozen: the same for all updates of this batch
        last = 0.0
        for _ in range(self.config.online_iter):
            xb, yb, qb = x, y, q
            if self.config.memory_size > 0 and len(self.memory) > 0 and pool is not None:
                m = self.memory.sample(x.shape[0])
                xb = torch.cat([x, pool[0][m]])
                yb = torch.cat([y, pool[1][m]])
                if q is not None:
                    mq = (
                        self._pool_q[m]
                        if self._pool_q is not None
                        else self.model.query(pool[0][m])
                    )
                    qb = torch.cat([q, mq])
            loss = self._logits_and_loss(xb, yb, qb)
            if not torch.isfinite(loss):
                from polyprompt.core.errors import NonFiniteError

                raise NonFiniteError(f"{where}: loss is {float(loss)} at sample {self.samples}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.updates += 1
            last = float(loss.detach())
        if self.config.memory_size > 0 and indices is not None:
            self.memory.add(indices)
        self.train_seconds += time.perf_counter() - t0
        self.samples += int(y.shape[0])
        if indices is not None:
            self.trained_indices.extend(int(i) for i in indices.tolist())
        return last

    # -- evaluation -------------------------------------------------------------
    @torch.no_grad()
    def evaluate(
        self, images: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor | None = None
    ) -> tuple[float, list[float]]:
        """Accuracy on the test samples of the classes seen so far, and per-class accuracy.

        Per-class accuracy is ``correct / (count + 1e-5)`` for every class (0 for classes
        without seen test samples), as the official ``online_evaluate``.
        """
        keep = self.seen[labels]
        if not bool(keep.any()):
            return 0.0, [0.0] * self.num_classes
        x, y = images[keep], labels[keep]
        q = queries[keep] if queries is not None else None
        self.model.eval()
        correct = torch.zeros(self.num_classes)
        count = torch.zeros(self.num_classes)
        bs = self.config.eval_batch_size
        additive = torch.where(self.seen, 0.0, float("-inf"))
        for i in range(0, x.shape[0], bs):
            xb, yb = x[i : i + bs], y[i : i + bs]
            if self.prompt_family:
                qb = q[i : i + bs] if q is not None else None
                logits = self.model(xb, seen=self.seen, query=qb).logits
            else:
                logits = self.model(xb) + additive
            pred = logits.argmax(1)
            count += torch.bincount(yb, minlength=self.num_classes).float()
            correct += torch.bincount(yb[pred == yb], minlength=self.num_classes).float()
        acc = float(correct.sum() / count.sum())
        return acc, (correct / (count + 1e-5)).tolist()

    # -- the stream -------------------------------------------------------------
    def run(
        self,
        stream: SiBlurryStream,
        test_images: torch.Tensor,
        test_labels: torch.Tensor,
        *,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 0,
        stop_after: int | None = None,
    ) -> OnlineResult:
        """One pass over ``stream`` (from its current position) with the evaluation protocol.

        Args:
            stream: a :class:`SiBlurryStream` holding ``images``.
            test_images, test_labels: the test pool (evaluated on the seen classes).
            checkpoint: where :meth:`save` writes (every ``checkpoint_every`` batches and at
                the end); resume with :meth:`load`.
            stop_after: stop after this many batches (simulates an interruption).

        Raises:
            InputError: a stream without images, test labels out of range.
        """
        where = "OnlineLearner.run"
        if stream.images is None:
            raise InputError(f"{where}: the stream has no images (pass images= to the stream)")
        test_labels = self._check_labels(torch.as_tensor(test_labels), f"{where} (test labels)")
        check_tensor(test_images, "test_images", rank=4, min_size={0: 1}, where=where)
        if self.prompt_family and self.config.cache_queries:
            self.model.eval()
            if self._pool_q is None:
                self._pool_q = self._queries(stream.images)
            if self._test_q is None:
                self._test_q = self._queries(test_images)
        pool = (stream.images, torch.as_tensor(stream.labels))
        ends = [int(e) for e in stream.task_ends]
        from polyprompt.core.progress import progress_bar

        bar = progress_bar(
            total=stream.num_samples,
            initial=stream.position,
            desc=type(self.model).__name__,
            enabled=self.config.progress,
            unit="sample",
            leave=False,
        )
        for done, batch in enumerate(stream, 1):
            self._step(batch, pool, test_images, test_labels, ends)
            bar.update(len(batch))
            if checkpoint is not None and checkpoint_every and done % checkpoint_every == 0:
                self.save(checkpoint, stream)
            if stop_after is not None and done >= stop_after:
                break
        bar.close()
        if checkpoint is not None:
            self.save(checkpoint, stream)
        return self.result(test_labels)

    def _step(
        self,
        batch: StreamBatch,
        pool: tuple[torch.Tensor, torch.Tensor],
        test_images: torch.Tensor,
        test_labels: torch.Tensor,
        ends: list[int],
    ) -> None:
        self.observe(batch.images, batch.labels, indices=batch.indices, pool=pool)
        if self.samples >= self.next_eval:
            acc, _ = self.evaluate(test_images, test_labels, self._test_q)
            self.curve_samples.append(self.samples)
            self.curve_acc.append(acc)
            while self.next_eval <= self.samples:
                self.next_eval += self.config.eval_period
        position = batch.start + len(batch)
        while self.tasks_done < len(ends) and ends[self.tasks_done] <= position:
            acc, cls = self.evaluate(test_images, test_labels, self._test_q)
            self.task_acc.append(acc)
            self.cls_acc.append(cls)
            self.tasks_done += 1

    def result(self, test_labels: torch.Tensor | None = None) -> OnlineResult:
        """Metrics of what was recorded so far."""
        unseen: list[int] = []
        if test_labels is not None:
            unseen = sorted(set(torch.as_tensor(test_labels).tolist()) - set(self.exposed))
        curve = self.curve_acc or ([self.task_acc[-1]] if self.task_acc else [0.0])
        return OnlineResult(
            a_auc=a_auc(curve),
            a_last=a_last(self.task_acc) if self.task_acc else float("nan"),
            f_last=f_last(self.cls_acc) if self.cls_acc else float("nan"),
            curve_samples=list(self.curve_samples),
            curve_acc=list(self.curve_acc),
            task_acc=list(self.task_acc),
            cls_acc=[list(r) for r in self.cls_acc],
            samples=self.samples,
            updates=self.updates,
            train_seconds=self.train_seconds,
            samples_per_second=self.samples / self.train_seconds if self.train_seconds else 0.0,
            unseen_test_classes=unseen,
        )

    # -- checkpoints ------------------------------------------------------------
    def state(self, stream: SiBlurryStream) -> dict[str, Any]:
        """Everything needed to resume (plain containers of tensors / numbers)."""
        from polyprompt.core.freezing import trainable_state

        return {
            "model": dict(trainable_state(self.model)),
            "buffers": {
                k: v.detach().clone()
                for k, v in self.model.named_buffers()
                if not k.startswith("backbone.")
            },
            "optimizer": self.optimizer.state_dict(),
            "stream": stream.state_dict(),
            "seen": self.seen.clone(),
            "exposed": list(self.exposed),
            "memory": {"items": list(self.memory.items), "offered": self.memory.offered},
            "rng": self.gen.get_state(),
            "counters": {
                "samples": self.samples,
                "updates": self.updates,
                "next_eval": self.next_eval,
                "tasks_done": self.tasks_done,
                "train_seconds": self.train_seconds,
            },
            "curve": {"samples": list(self.curve_samples), "acc": list(self.curve_acc)},
            "tasks": {"acc": list(self.task_acc), "cls": [list(r) for r in self.cls_acc]},
            "trained_indices": list(self.trained_indices),
        }

    def save(self, path: str | Path, stream: SiBlurryStream) -> Path:
        """Atomically write :meth:`state` to ``path`` (a file)."""
        from polyprompt.core.checkpoint import save_torch_state

        return save_torch_state(Path(path), self.state(stream))

    def load(self, path: str | Path, stream: SiBlurryStream) -> None:
        """Restore a :meth:`save` file and move ``stream`` to its position.

        Raises:
            CheckpointError: unreadable file or a state that does not fit this model.
            InputError: the file was written for another stream.
        """
        from polyprompt.core.checkpoint import load_torch_state

        st = load_torch_state(Path(path))
        if not isinstance(st, dict) or "stream" not in st:
            raise CheckpointError(f"OnlineLearner.load: {path} is not a learner checkpoint")
        stream.load_state_dict(st["stream"])  # InputError: written for another stream
        try:
            params = dict(self.model.named_parameters())
            bufs = dict(self.model.named_buffers())
            with torch.no_grad():
                for k, v in st["model"].items():
                    (params.get(k) if k in params else bufs[k]).copy_(v)
                for k, v in st["buffers"].items():
                    bufs[k].copy_(v)
            self.optimizer.load_state_dict(st["optimizer"])
            self.seen = st["seen"].clone()
            self.exposed = [int(c) for c in st["exposed"]]
            self.memory.items = [int(i) for i in st["memory"]["items"]]
            self.memory.offered = int(st["memory"]["offered"])
            self.gen.set_state(st["rng"])
            c = st["counters"]
            self.samples, self.updates = int(c["samples"]), int(c["updates"])
            self.next_eval, self.tasks_done = int(c["next_eval"]), int(c["tasks_done"])
            self.train_seconds = float(c["train_seconds"])
            self.curve_samples = [int(v) for v in st["curve"]["samples"]]
            self.curve_acc = [float(v) for v in st["curve"]["acc"]]
            self.task_acc = [float(v) for v in st["tasks"]["acc"]]
            self.cls_acc = [[float(v) for v in r] for r in st["tasks"]["cls"]]
            self.trained_indices = [int(i) for i in st["trained_indices"]]
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"OnlineLearner.load: {path} does not fit this learner: {exc}"
            ) from None
