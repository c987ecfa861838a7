"""mIoU overall and per severity group (torchmetrics confusion matrix, mmseg's IoU).

IoU per class = TP / (TP + FP + FN) from a ``torchmetrics`` multiclass confusion matrix
(ignore index 255 dropped); mIoU = mean over classes that occur in the labels or the
predictions of that group (mmseg's ``nanmean``). Groups come from the severity rule
applied to each image (what CoDA's prompts see), not from how the image was made.

Example::

    >>> import torch
    >>> from polyprompt.adapt.evaluate import miou_from_confusion
    >>> miou_from_confusion(torch.tensor([[3, 1], [0, 4]]))["miou"]
    0.775
"""

from __future__ import annotations

from typing import Any

import torch

from polyprompt.adapt.data.common import SegmentationSet
from polyprompt.core.errors import InputError


def miou_from_confusion(conf: torch.Tensor) -> dict[str, Any]:
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    present = ~torch.isnan(iou)
    miou = float(iou[present].mean()) if bool(present.any()) else float("nan")
    return {"miou": round(miou, 6), "iou": [None if torch.isnan(v) else float(v) for v in iou]}


@torch.no_grad()
def evaluate_segmentation(
    model: torch.nn.Module,
    data: SegmentationSet,
    *,
    batch_size: int = 32,
    severity: torch.Tensor | None = None,
) -> dict[str, Any]:
    """``{"miou", "iou", "easy": {...}, "hard": {...}, "n_easy", "n_hard"}`` of ``model`` on ``data``.

    ``model(images)`` must return logits ``(B, K, H, W)``; ``severity`` (``(N,)`` bool, True =
    hard) defaults to ``model.severity(images)``.
    """
    from torchmetrics.classification import MulticlassConfusionMatrix

    if not isinstance(data, SegmentationSet) or data.labels is None:
        raise InputError("evaluate_segmentation: needs a labelled SegmentationSet")
    k = data.num_classes
    if severity is None:
        rule = getattr(model, "severity", None)
        severity = rule(data.images) if callable(rule) else torch.zeros(len(data), dtype=torch.bool)
    groups = {"all": None, "easy": ~severity, "hard": severity}
    mats = {g: MulticlassConfusionMatrix(k, ignore_index=data.ignore_index) for g in groups}
    was = model.training
    model.eval()
    try:
        for i in range(0, len(data), batch_size):
            x = data.images[i : i + batch_size]
            y = data.labels[i : i + batch_size]
            pred = model(x).argmax(1)
            mats["all"].update(pred, y)
            for g in ("easy", "hard"):
                sel = groups[g][i : i + batch_size]
                if bool(sel.any()):
                    mats[g].update(pred[sel], y[sel])
    finally:
        model.train(was)
    out = miou_from_confusion(mats["all"].compute())
    for g in ("easy", "hard"):
        n = int(groups[g].sum())
        out[g] = miou_from_confusion(mats[g].compute()) if n else {"miou": None, "iou": []}
        out[f"n_{g}"] = n
    return out
