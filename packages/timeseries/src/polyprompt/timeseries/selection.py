"""POND source-domain selection from two prompt criteria (paper step 3).

[S] (v3 abstract) two criteria judge the learned prompts and pick the most suitable source
domain for the target. Their formulas are not readable from here; [I] (``shared/POND.md`` §6):

* **similarity** ``s_i = cos(mean_x P_i(x), mean_x P_T(x))`` over the target windows ``x``:
  source ``i``'s conditional module applied to *target* inputs versus the target's own
  learned prompts (on the domain-specific part by default, ``similarity_on="specific"``);
* **fidelity** ``a_i = -CE(f(x_T; P_i(x_T)), y_T)`` on the labelled target shots (with no
  labels: ``-mean entropy`` of the predictions);
* combined: ``i* = argmax_i z(s_i) + z(a_i)`` (z-scores over the sources), ties -> higher
  ``a_i``. ``criterion="similarity"`` / ``"fidelity"`` use one criterion alone.

Example::

    >>> scores = combine_criteria([0.1, 0.9, 0.5], [-1.0, -0.2, -0.4])
    >>> int(max(range(3), key=scores.__getitem__))
    1
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from polyprompt.core.errors import InputError

__all__ = ["Criterion", "SelectionResult", "combine_criteria", "prompt_criteria", "select_source"]


class Criterion(str, Enum):
    BOTH = "both"
    SIMILARITY = "similarity"
    FIDELITY = "fidelity"


@dataclass
class SelectionResult:
    """Scores per source and the chosen source index (local source ids ``0..S-1``)."""

    chosen: int
    similarity: list[float]
    fidelity: list[float]
    score: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "similarity": self.similarity,
            "fidelity": self.fidelity,
            "score": self.score,
        }


def _z(v: np.ndarray) -> np.ndarray:
    sd = v.std()
    return (v - v.mean()) / sd if sd > 1e-12 else np.zeros_like(v)


def combine_criteria(
    similarity: Sequence[float], fidelity: Sequence[float], criterion: Criterion | str = "both"
) -> list[float]:
    """Per-source scores: ``z(s) + z(a)`` (``both``), ``s`` or ``a``."""
    s, a = np.asarray(similarity, float), np.asarray(fidelity, float)
    crit = Criterion(criterion)
    if crit is Criterion.SIMILARITY:
        return s.tolist()
    if crit is Criterion.FIDELITY:
        return a.tolist()
    return (_z(s) + _z(a)).tolist()


@torch.no_grad()
def prompt_criteria(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    similarity_on: str = "specific",
    batch_size: int = 256,
) -> tuple[list[float], list[float]]:
    """``(similarity, fidelity)`` of every source prompt on target windows ``x`` (labels ``y``).

    ``model`` is a trained :class:`~polyprompt.timeseries.method.POND` whose target slot was
    learned on the target (step 2b). ``y=None`` -> fidelity is ``-mean entropy``.
    """
    if similarity_on not in ("specific", "full"):
        raise InputError(
            f"prompt_criteria: similarity_on must be 'specific' or 'full', got {similarity_on!r}"
        )
    if len(x) == 0:
        raise InputError("prompt_criteria: no target windows")
    was = model.training
    model.eval()
    try:
        ids = [*range(model.num_sources), model.target_id]
        means: dict[int, torch.Tensor] = {}
        fid: dict[int, float] = {}
        for d in ids:
            prompt_sum, loss_sum, n = 0.0, 0.0, 0
            for s in range(0, len(x), batch_size):
                xb = x[s : s + batch_size]
                parts = model.forward_parts(xb, d)
                p = parts["specific"]
                if similarity_on == "full":
                    p = model.compose(p)
                prompt_sum = prompt_sum + p.sum(dim=0)
                if d != model.target_id:
                    if y is not None:
                        loss_sum += float(
                            F.cross_entropy(parts["logits"], y[s : s + batch_size], reduction="sum")
                        )
                    else:
                        prob = parts["logits"].softmax(-1)
                        loss_sum += float(-(prob * prob.clamp_min(1e-12).log()).sum())
                n += len(xb)
            means[d] = (prompt_sum / n).flatten()
            fid[d] = -loss_sum / n
        tgt = means[model.target_id]
        sim = [float(F.cosine_similarity(means[i], tgt, dim=0)) for i in range(model.num_sources)]
        return sim, [fid[i] for i in range(model.num_sources)]
    finally:
        model.train(was)


def select_source(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    criterion: Criterion | str = Criterion.BOTH,
    similarity_on: str = "specific",
) -> SelectionResult:
    """Score every source prompt on the target (see module docstring) and pick ``i*``."""
    sim, fid = prompt_criteria(model, x, y, similarity_on=similarity_on)
    score = combine_criteria(sim, fid, criterion)
    chosen = max(range(len(score)), key=lambda i: (round(score[i], 9), fid[i]))
    return SelectionResult(chosen, sim, fid, score)
