"""Build, train and evaluate the Zecoler methods and baselines with the core Trainer.

Every method shares the frozen mini-CodeBERT (each gets its own copy of the weights),
the pairs, the seeds and :class:`polyprompt.core.trainer.Trainer`; only what trains and
the learning rate differ (:data:`METHODS`).

Example::

    >>> model = build_method("zecoler", backbone, "clone")                 # doctest: +SKIP
    >>> fit(model, train_pairs, val_pairs, TrainSettings(epochs=3))       # doctest: +SKIP
    >>> accuracy(model, test_pairs)                                       # doctest: +SKIP
    0.81
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from polyprompt.code.pairs import PairExample, Task, check_pairs
from polyprompt.core.errors import ConfigError

__all__ = [
    "METHODS",
    "EncodedPairs",
    "MethodSpec",
    "TrainSettings",
    "accuracy",
    "build_method",
    "fit",
]


@dataclass(frozen=True)
class MethodSpec:
    """A method of the comparison: registry name, config fields, learning rate, label."""

    label: str
    registry: str
    config: dict[str, Any]
    lr: float
    trains: bool = True


METHODS: dict[str, MethodSpec] = {
    "zecoler": MethodSpec(
        "Zecoler (BiLSTM prompt encoder)", "zecoler", {"prompt_encoder": "lstm"}, 1e-3
    ),
    "zecoler_mlp": MethodSpec(
        "Zecoler (MLP encoder, official option)", "zecoler", {"prompt_encoder": "mlp"}, 1e-3
    ),
    "soft_prompt": MethodSpec(
        "soft prompt (no encoder)", "zecoler", {"prompt_encoder": "none"}, 1e-2
    ),
    "manual": MethodSpec(
        "manual template (no tuning)", "code_manual_template", {}, 1e-3, trains=False
    ),
    "finetune": MethodSpec(
        "fine-tuned encoder + head", "code_finetune", {"mode": "finetune"}, 2e-4
    ),
    "linear_probe": MethodSpec("linear probe", "code_finetune", {"mode": "linear_probe"}, 1e-2),
}


@dataclass
class TrainSettings:
    """Trainer settings shared by every method (the learning rate comes from the method)."""

    epochs: int = 4
    batch_size: int = 16
    seed: int = 0
    progress: bool = False
    weight_decay: float = 0.0
    warmup_epochs: int = 0


class EncodedPairs(Dataset):
    """Template tensors of a pair list, one dict per item (collated by the DataLoader)."""

    def __init__(self, model: Any, pairs: list[PairExample]) -> None:
        self.tensors = model.encode(check_pairs(pairs, "EncodedPairs"))
        self.n = len(pairs)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


def trim(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop padding columns no row of the batch uses (datasets are padded to their longest row)."""
    t = int(batch["attention_mask"].sum(dim=1).max())
    return {k: (v[:, :t] if v.dim() == 2 else v) for k, v in batch.items()}


def step(
    model: Any, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trainer ``step_fn``: cross-entropy over the two classes."""
    batch = trim(batch)
    logits = model(batch)
    labels = batch["labels"]
    return torch.nn.functional.cross_entropy(logits, labels), logits, labels


def build_method(name: str, backbone: Any, task: Task | str, **overrides: Any) -> Any:
    """A fresh method ``name`` (key of :data:`METHODS`) on a copy of ``backbone``'s weights."""
    from polyprompt.core.registry import create

    if name not in METHODS:
        raise ConfigError(f"build_method: unknown method {name!r}; choose one of {sorted(METHODS)}")
    spec = METHODS[name]
    fields = {**spec.config, "task": Task(task), **overrides}
    if getattr(backbone, "context", None) is not None:
        fields.setdefault("max_length", backbone.context)
    return create(spec.registry, backbone.adapter(), **fields)


def fit(
    model: Any,
    train: list[PairExample],
    val: list[PairExample] | None,
    settings: TrainSettings,
    lr: float,
    checkpoint_dir: str | None = None,
) -> Any:
    """Train ``model``'s trainable parameters with the core Trainer (best val epoch kept)."""
    from polyprompt.core.trainer import Trainer, TrainerConfig, seed_everything

    seed_everything(settings.seed)
    trainer = Trainer(
        TrainerConfig(
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            lr=lr,
            weight_decay=settings.weight_decay,
            warmup_epochs=settings.warmup_epochs,
            seed=settings.seed,
            progress=settings.progress,
            device="cpu",
            checkpoint_dir=checkpoint_dir,
        ),
        step_fn=step,
        metric="accuracy",
        num_classes=2,
    )
    val_ds = EncodedPairs(model, val) if val else None
    return trainer.fit(model, EncodedPairs(model, train), val=val_ds)


@torch.no_grad()
def accuracy(model: Any, pairs: list[PairExample], batch_size: int = 64) -> float:
    """Fraction of pairs whose predicted label (argmax of the two logits) is right."""
    was = model.training
    model.eval()
    data = EncodedPairs(model, pairs)
    correct = 0
    for i in range(0, len(data), batch_size):
        batch = trim({k: v[i : i + batch_size] for k, v in data.tensors.items()})
        correct += int((model(batch).argmax(-1) == batch["labels"]).sum())
    model.train(was)
    return correct / len(data)
