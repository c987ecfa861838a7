"""Evaluation metrics: torchmetrics for the usual ones, plain code for continual learning.

Classification / segmentation metrics are built on torchmetrics (they accumulate over
batches and synchronise across DDP ranks by themselves):

========================  ===============================================================
name                      torchmetrics class
========================  ===============================================================
``"accuracy"``            ``Accuracy`` (micro, top-1)
``"macro_f1"``            ``F1Score(average="macro")``
``"quadratic_kappa"``     ``CohenKappa(weights="quadratic")`` (ordinal grades, e.g. DR)
``"roc_auc"``             ``AUROC`` (binary, or one-vs-rest macro for multiclass)
``"miou"``                ``JaccardIndex(average="macro")`` with optional ``ignore_index``
========================  ===============================================================

The continual-learning metrics of online / Si-Blurry benchmarks (:func:`a_auc`,
:func:`a_last`, :func:`f_last`) exist in no library; they follow the official
Si-Blurry code (KHU-AGI/Si-Blurry, ``methods/_trainer.py``, the "Summary" block at the
end of ``run``)::

    A_auc  = np.mean(eval_results["test_acc"])        # accuracy every eval_period samples
    A_last = task_records["task_acc"][n_tasks - 1]     # accuracy after the last task
    F_last = mean_j (max(cls_acc[:-1, j]) - cls_acc[-1, j])  over classes j with max(...) > 0

Example::

    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.1, 0.0], [0.1, 3.0, 0.2], [0.0, 0.1, 1.0], [5.0, 0.0, 0.0]])
    >>> targets = torch.tensor([0, 1, 2, 1])
    >>> compute_metric("accuracy", logits, targets)
    0.75
    >>> a_auc([0.5, 0.7, 0.9], sample_counts=[100, 200, 400])
    0.75
    >>> round(f_last([[0.9, 0.0], [0.6, 0.8]]), 6)
    0.3
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from polyprompt.core.errors import ConfigError, InputError, ShapeError

if TYPE_CHECKING:
    import torch
    from torchmetrics import Metric

__all__ = [
    "METRIC_NAMES",
    "MetricName",
    "a_auc",
    "a_last",
    "build_metric",
    "compute_metric",
    "f_last",
    "prepare_preds",
]


class MetricName(str, Enum):
    """Names accepted by :func:`build_metric` and :func:`compute_metric`."""

    ACCURACY = "accuracy"
    MACRO_F1 = "macro_f1"
    QUADRATIC_KAPPA = "quadratic_kappa"
    ROC_AUC = "roc_auc"
    MIOU = "miou"


METRIC_NAMES: tuple[str, ...] = tuple(m.value for m in MetricName)
_TASKS = ("binary", "multiclass")


def _metric_name(name: str | MetricName, where: str) -> MetricName:
    try:
        return MetricName(name)
    except ValueError:
        raise ConfigError(
            f"{where}: unknown metric {name!r}; choose one of {', '.join(METRIC_NAMES)}"
        ) from None


def build_metric(
    name: str | MetricName,
    num_classes: int | None = None,
    task: str | None = None,
    *,
    ignore_index: int | None = None,
) -> Metric:
    """A fresh torchmetrics ``Metric`` for ``name``.

    Args:
        name: one of :data:`METRIC_NAMES`.
        num_classes: number of classes (required unless ``task="binary"``).
        task: ``"multiclass"`` (default) or ``"binary"`` (preds are one score per sample).
        ignore_index: target value to ignore (``"miou"`` and the classification metrics).

    Inputs to ``update``: multiclass preds are class ids ``(N, ...)`` or scores
    ``(N, C, ...)`` (arg-maxed by torchmetrics); ``roc_auc`` needs scores ``(N, C)`` — use
    :func:`prepare_preds` to turn logits into probabilities.

    Example::

        >>> import torch
        >>> m = build_metric("macro_f1", num_classes=3)
        >>> m.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2, 1]))
        >>> round(float(m.compute()), 4)
        0.7778
    """
    metric = _metric_name(name, "build_metric")
    if task is None:
        task = "multiclass"
    if task not in _TASKS:
        raise ConfigError(f"build_metric: task must be one of {_TASKS}, got {task!r}")
    bad_classes = (
        not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2
    )
    if task == "multiclass" and bad_classes:
        raise ConfigError(
            f"build_metric({metric.value!r}): num_classes must be an int >= 2 for a "
            f"multiclass metric, got {num_classes!r} (or pass task='binary')"
        )
    if ignore_index is not None and not isinstance(ignore_index, int):
        raise ConfigError(f"build_metric: ignore_index must be an int, got {ignore_index!r}")

    import torchmetrics

    common: dict[str, Any] = {"task": task}
    if task == "multiclass":
        common["num_classes"] = num_classes
    if metric is MetricName.ACCURACY:
        if task == "multiclass":
            common["average"] = "micro"
        return torchmetrics.Accuracy(**common, ignore_index=ignore_index)
    if metric is MetricName.MACRO_F1:
        return torchmetrics.F1Score(**common, average="macro", ignore_index=ignore_index)
    if metric is MetricName.QUADRATIC_KAPPA:
        return torchmetrics.CohenKappa(**common, weights="quadratic", ignore_index=ignore_index)
    if metric is MetricName.ROC_AUC:
        if task == "multiclass":
            common["average"] = "macro"
        return torchmetrics.AUROC(**common, ignore_index=ignore_index)
    # MIOU
    if task == "multiclass":
        common["average"] = "macro"
    return torchmetrics.JaccardIndex(**common, ignore_index=ignore_index)


def prepare_preds(
    name: str | MetricName, preds: torch.Tensor, targets: torch.Tensor, task: str = "multiclass"
) -> torch.Tensor:
    """Turn model outputs into what metric ``name`` expects.

    * ``roc_auc``: multiclass float scores ``(N, C)`` become probabilities (softmax unless
      every row already is a distribution); binary ``(N, 2)`` logits become ``P(class 1)``.
      Integer predictions raise :class:`InputError` (AUC needs scores).
    * every other metric: float scores with one more dimension than ``targets``
      (``(N, C)`` or ``(N, C, H, W)``) are arg-maxed over dim 1; binary ``(N, 2)`` too.
    """
    import torch

    metric = _metric_name(name, "prepare_preds")
    has_class_dim = preds.is_floating_point() and preds.dim() == targets.dim() + 1
    if metric is MetricName.ROC_AUC:
        if not preds.is_floating_point():
            raise InputError(
                "roc_auc needs scores or logits (float), got integer predictions "
                f"of shape {tuple(preds.shape)}"
            )
        if has_class_dim:
            probs = preds.float()
            is_dist = bool(
                (probs >= 0).all()
                and (probs <= 1).all()
                and torch.allclose(probs.sum(1), probs.new_ones(()))
            )
            if not is_dist:
                probs = probs.softmax(dim=1)
            if task == "binary":
                if probs.shape[1] != 2:
                    raise ShapeError(
                        f"roc_auc (binary): scores must be (N,) or (N, 2), got {tuple(preds.shape)}"
                    )
                probs = probs[:, 1]
            return probs
        return preds
    if has_class_dim:
        return preds.argmax(dim=1)
    return preds


def compute_metric(
    name: str | MetricName,
    preds_or_logits: Any,
    targets: Any,
    num_classes: int | None = None,
    *,
    task: str | None = None,
    ignore_index: int | None = None,
) -> float:
    """One-shot metric value for whole-dataset predictions.

    Args:
        name: one of :data:`METRIC_NAMES`.
        preds_or_logits: class ids ``(N, ...)`` or scores/logits ``(N, C, ...)``
            (tensor, array or list).
        targets: class ids ``(N, ...)``.
        num_classes: inferred from the score dimension, else from the largest label.
        task: ``"multiclass"`` (default) or ``"binary"``.
        ignore_index: target value excluded from the metric.

    Example::

        >>> import torch
        >>> compute_metric("quadratic_kappa", torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3]))
        1.0
        >>> compute_metric("roc_auc", torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1]))
        1.0
    """
    import torch

    where = f"compute_metric({name!r})"
    metric = _metric_name(name, "compute_metric")
    preds = (
        preds_or_logits
        if isinstance(preds_or_logits, torch.Tensor)
        else torch.as_tensor(np.asarray(preds_or_logits))
    )
    target = targets if isinstance(targets, torch.Tensor) else torch.as_tensor(np.asarray(targets))
    preds, target = preds.detach().cpu(), target.detach().cpu()
    if target.is_floating_point():
        if not bool((target == target.round()).all()):
            raise InputError(f"{where}: targets must be integer class ids")
        target = target.long()
    if preds.numel() == 0 or target.numel() == 0:
        raise InputError(f"{where}: empty predictions or targets")
    if preds.shape[0] != target.shape[0]:
        raise ShapeError(
            f"{where}: preds {tuple(preds.shape)} and targets {tuple(target.shape)} "
            "disagree on the number of samples (dim 0)"
        )
    if preds.is_floating_point() and not bool(torch.isfinite(preds).all()):
        from polyprompt.core.errors import NonFiniteError

        raise NonFiniteError(f"{where}: predictions hold NaN or infinite values")
    task = task or "multiclass"
    has_class_dim = preds.is_floating_point() and preds.dim() == target.dim() + 1
    if num_classes is None and task == "multiclass":
        if has_class_dim:
            num_classes = int(preds.shape[1])
        else:
            valid = target if ignore_index is None else target[target != ignore_index]
            top = int(valid.max()) if valid.numel() else 0
            if not preds.is_floating_point():
                top = max(top, int(preds.max()))
            num_classes = max(2, top + 1)
    ready = prepare_preds(metric, preds, target, task=task)
    if ready.shape[0] != target.shape[0] or (
        metric is not MetricName.ROC_AUC and ready.shape != target.shape
    ):
        raise ShapeError(
            f"{where}: predictions {tuple(preds.shape)} do not match targets {tuple(target.shape)}"
        )
    m = build_metric(metric, num_classes=num_classes, task=task, ignore_index=ignore_index)
    m.update(ready, target)
    return float(m.compute())


# ---------------------------------------------------------------------------
# continual learning (Si-Blurry / MVP definitions)
# ---------------------------------------------------------------------------
def _as_1d(values: Any, name: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: `{name}` must be a sequence of numbers") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ShapeError(
            f"{where}: `{name}` must be a non-empty 1-D sequence, got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise InputError(f"{where}: `{name}` holds NaN or infinite values")
    return arr


def a_auc(accuracies: Sequence[float], sample_counts: Sequence[float] | None = None) -> float:
    """Area under the anytime-accuracy curve, normalised by the number of samples seen.

    ``accuracies[i]`` is the accuracy on the classes seen so far, measured after
    ``sample_counts[i]`` training samples. The curve is a step function that holds each
    value over the interval since the previous evaluation (from 0 samples for the first)::

        A_auc = sum_i acc_i * (n_i - n_{i-1}) / n_last,   n_0 = 0

    With evaluations every K samples (``n_i = i*K``, or ``sample_counts=None``) this is the
    plain mean, exactly the official Si-Blurry ``np.mean(eval_results["test_acc"])``
    (KHU-AGI/Si-Blurry ``methods/_trainer.py``; the metric of Koh et al., ICLR 2022, CLIB:
    ``A_auc = sum f(i*dn) * dn`` divided by the samples seen).

    Example::

        >>> a_auc([0.25, 0.5, 0.75])
        0.5
        >>> a_auc([0.5, 0.7, 0.9], sample_counts=[100, 200, 400])  # (50 + 70 + 180) / 400
        0.75
    """
    acc = _as_1d(accuracies, "accuracies", "a_auc")
    if sample_counts is None:
        return float(acc.mean())
    counts = _as_1d(sample_counts, "sample_counts", "a_auc")
    if counts.shape != acc.shape:
        raise ShapeError(
            f"a_auc: `sample_counts` has {counts.size} entries but `accuracies` has {acc.size}"
        )
    widths = np.diff(np.concatenate([[0.0], counts]))
    if (widths <= 0).any():
        raise InputError("a_auc: `sample_counts` must be positive and strictly increasing")
    return float((acc * widths).sum() / counts[-1])


def a_last(accuracies: Sequence[float] | float) -> float:
    """Final accuracy: the last entry of per-task (or anytime) accuracies.

    Example::

        >>> a_last([0.9, 0.8, 0.75])
        0.75
    """
    if isinstance(accuracies, (int, float)) and not isinstance(accuracies, bool):
        value = float(accuracies)
        if not math.isfinite(value):
            raise InputError("a_last: accuracy is NaN or infinite")
        return value
    return float(_as_1d(accuracies, "accuracies", "a_last")[-1])


def f_last(acc_matrix: Any) -> float:
    """Forgetting after the last task (Si-Blurry ``F_last``).

    ``acc_matrix[t][j]`` is the accuracy on class (or task) ``j`` measured at the end of
    task ``t`` (rows in time order; a ``Mapping`` ``{class: [acc per task]}`` is accepted as
    the per-class history, one column each). For every column that reached a positive
    accuracy before the last evaluation, forgetting is its best earlier accuracy minus its
    final accuracy; ``F_last`` is the mean over those columns::

        F_last = mean_{j : max_{t<T} a[t, j] > 0} (max_{t<T} a[t, j] - a[T, j])

    exactly as the official code (KHU-AGI/Si-Blurry ``methods/_trainer.py``). NaN entries
    mean "not measured" and are skipped. It is ``0.0`` when there is a single row or no
    column qualifies (the official ``np.mean([])`` would give NaN).

    Example::

        >>> acc = [[0.8, 0.0, 0.0],
        ...        [0.6, 0.9, 0.0],
        ...        [0.5, 0.6, 0.7]]   # class 2 is new in the last task: not counted
        >>> round(f_last(acc), 6)     # ((0.8 - 0.5) + (0.9 - 0.6)) / 2
        0.3
    """
    if isinstance(acc_matrix, Mapping):
        columns = [np.asarray(v, dtype=np.float64) for v in acc_matrix.values()]
        if not columns:
            raise ShapeError("f_last: empty per-class history")
        lengths = {c.shape for c in columns}
        if len(lengths) != 1 or columns[0].ndim != 1:
            raise ShapeError(
                f"f_last: per-class histories must all have the same length, got {sorted(lengths)}"
            )
        acc = np.stack(columns, axis=1)
    else:
        try:
            acc = np.asarray(
                acc_matrix.detach().cpu().numpy() if hasattr(acc_matrix, "detach") else acc_matrix,
                dtype=np.float64,
            )
        except (TypeError, ValueError):
            raise InputError("f_last: `acc_matrix` must be a 2-D array of accuracies") from None
    if acc.ndim != 2 or acc.size == 0:
        raise ShapeError(
            f"f_last: `acc_matrix` must be 2-D (tasks, classes), got shape {acc.shape}"
        )
    if np.isinf(acc).any():
        raise InputError("f_last: `acc_matrix` holds infinite values")
    if acc.shape[0] < 2:
        return 0.0
    earlier, final = acc[:-1], acc[-1]
    diffs = []
    for j in range(acc.shape[1]):
        col = earlier[:, j]
        col = col[~np.isnan(col)]
        if col.size == 0 or np.isnan(final[j]):
            continue
        best = col.max()
        if best > 0:
            diffs.append(best - final[j])
    return float(np.mean(diffs)) if diffs else 0.0
