"""Training and evaluation of APT and its baselines with the core Trainer.

* :func:`build_backbone` — the frozen parts: the AudioMAE-style encoder pre-trained in-situ
  (:mod:`.pretrain_encoder`) on the training clips and the tiny LM pre-trained in-situ
  (:mod:`.text_pretrain`), both cached.
* :func:`fit` — one multi-task training run of an :class:`AcousticPromptTuning` (APT,
  text-only or full FT) over examples of all five tasks in one model, with the core
  :class:`~polyprompt.core.trainer.Trainer` and a custom ``step_fn`` (batches are indices
  into the example list; the loss is the response-only LM loss).
* :func:`evaluate` — greedy generation on test examples, scored per task: accuracy for the
  tasks with answer choices (classify / qa / fewshot / nlar; the prediction is the choice
  the generated text names), BLEU-4 / ROUGE-L / CIDEr-D for ``caption``
  (:mod:`polyprompt.audio.metrics`).
* :func:`fit_linear_probe` — the core linear probe on cached encoder features.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from polyprompt.audio.tasks import AudioTextExample
from polyprompt.core.errors import InputError

__all__ = ["evaluate", "fit", "fit_linear_probe"]


class _Indices(Dataset):
    """Dataset of indices ``offset .. offset + n - 1`` into a shared example list."""

    def __init__(self, n: int, offset: int = 0) -> None:
        self.n, self.offset = n, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor(self.offset + i)


def fit(
    method: Any,
    train: Sequence[AudioTextExample],
    *,
    epochs: int = 4,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    checkpoint_dir: str | None = None,
) -> dict[str, Any]:
    """Train ``method`` on ``train`` (all tasks mixed) with the core Trainer; returns
    ``{"history", "seconds", "final_loss"}``."""
    from polyprompt.core.trainer import Trainer, TrainerConfig

    examples = list(train)
    if not examples:
        raise InputError("fit: no training examples")

    def step_fn(model: Any, batch: torch.Tensor) -> tuple[torch.Tensor, Any, Any]:
        loss = model([examples[int(i)] for i in batch.reshape(-1).tolist()])
        return loss, loss.detach().reshape(1), torch.zeros(1)

    cfg = TrainerConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
        scheduler="cosine",
        warmup_epochs=1 if epochs > 1 else 0,
        checkpoint_dir=checkpoint_dir,
        monitor="val_loss",
        device="cpu",
    )
    trainer = Trainer(cfg, step_fn=step_fn, metric=None)
    t0 = time.time()
    result = trainer.fit(method, _Indices(len(examples)))
    method.eval()
    return {
        "history": result.history,
        "seconds": time.time() - t0,
        "final_loss": result.history[-1]["train_loss"] if result.history else None,
    }


def evaluate(
    method: Any,
    examples: Sequence[AudioTextExample],
    *,
    batch_size: int = 32,
    max_new_tokens: int | None = None,
    progress: bool = False,
    caption_metric: str = "bleu4",
) -> dict[str, Any]:
    """Generate for every example; per-task scores in ``[0, 1]`` plus the generations.

    Scoring is :func:`polyprompt.audio.metrics.evaluate_generations`: accuracy of the choice
    the generated text names (classify / qa / fewshot / nlar) and, as ``"<task>_bal"``, its
    balanced (per-question macro-recall) reading, and for ``caption`` BLEU-4, ROUGE-L and
    CIDEr-D (``caption_metric`` picks the headline one; BLEU-4 by default).
    Returns ``{"scores": {task: score}, "details": {task: {...}}, "generations": [...]}``.
    """
    from polyprompt.core.progress import progress_bar

    exs = list(examples)
    gens: list[str] = []
    for start in progress_bar(
        range(0, len(exs), batch_size), desc="generate", enabled=progress, unit="batch"
    ):
        gens.extend(method.generate(exs[start : start + batch_size], max_new_tokens=max_new_tokens))
    from polyprompt.audio.metrics import evaluate_generations

    details = evaluate_generations(exs, gens)
    scores: dict[str, float] = {}
    for task, d in details.items():
        scores[task] = float(d[caption_metric] if task == "caption" else d["accuracy"])
        if "balanced_accuracy" in d:  # chance-corrected reading, see balanced_choice_accuracy
            scores[f"{task}_bal"] = float(d["balanced_accuracy"])
    return {"scores": scores, "details": details, "generations": gens}


def fit_linear_probe(
    encoder: Any,
    train: Sequence[AudioTextExample],
    test: Sequence[AudioTextExample],
    spectrograms: Callable[[Sequence[Any]], torch.Tensor],
    *,
    task: str = "classify",
    epochs: int = 30,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Core linear probe on the frozen encoder for ``task`` (single-clip examples with a
    ``label``): features cached once (:class:`~polyprompt.core.cache.FeatureCache`), head
    trained with the core Trainer. Returns ``{"accuracy", "seconds", "method"}``."""
    from torch.utils.data import TensorDataset

    from polyprompt.audio.baselines import linear_probe
    from polyprompt.core.cache import FeatureCache
    from polyprompt.core.trainer import Trainer, TrainerConfig

    tr = [e for e in train if e.task == task and e.label is not None]
    te = [e for e in test if e.task == task and e.label is not None]
    if not tr or not te:
        raise InputError(f"fit_linear_probe: no labelled {task!r} examples in train/test")
    num_classes = len(tr[0].choices or ()) or 1 + max(e.label for e in tr)
    torch.manual_seed(seed)
    probe = linear_probe(encoder, num_classes)
    cache = FeatureCache(probe.backbone, probe.cache_point, in_memory=True)
    t0 = time.time()
    x_tr = cache.tokens(spectrograms([e.clips()[0] for e in tr]), 64)
    x_te = cache.tokens(spectrograms([e.clips()[0] for e in te]), 64)
    y_tr = torch.tensor([e.label for e in tr])
    y_te = torch.tensor([e.label for e in te])
    start = probe.cache_point

    def step_fn(model: Any, batch: Any) -> tuple[torch.Tensor, Any, Any]:
        tokens, y = batch
        logits = model.forward_from_tokens(tokens, start)
        return torch.nn.functional.cross_entropy(logits, y), logits, y

    cfg = TrainerConfig(
        epochs=epochs, batch_size=32, lr=lr, seed=seed, progress=progress, device="cpu"
    )
    trainer = Trainer(cfg, step_fn=step_fn, metric="accuracy")
    trainer.fit(probe, TensorDataset(x_tr, y_tr))
    probe.eval()
    with torch.no_grad():
        acc = float((probe.forward_from_tokens(x_te, start).argmax(-1) == y_te).float().mean())
    return {"accuracy": acc, "seconds": time.time() - t0, "method": probe}
