"""POND source-domain selection from two prompt criteria (paper step 3).

[S] (v3 abstract) two criteria judge the learned prompts and pick the most suitable source
domain for the target. Their formulas are not readable from here; [I] (``shared/POND.md`` §6):

* **similarity** (``similarity="class_centroid"``, the default since session 6): how close the
  target's windows sit to source ``i``'s windows *as source i's prompt presents them*,
  class by class: ``s_i = -mean_c || mean f(x_T,c; P_i) - mean f(x_i,c; P_i) ||``, where
  ``f(x; P_i)`` is the frozen backbone's pooled feature with source ``i``'s prompts
  prepended, ``x_T,c`` the labelled target shots of class ``c`` and ``x_i,c`` source ``i``'s
  windows of class ``c`` (without target labels, ``c`` is source ``i``'s predicted class).
  ``similarity="prompt_cosine"`` is the first reading,
  ``s_i = cos(mean_x P_i(x), mean_x P_T(x))`` over the target windows ``x``: source ``i``'s
  conditional module applied to *target* inputs versus the target's own learned prompts
  (on the domain-specific part by default, ``similarity_on="specific"``). On the development
  protocol (README, "Source selection") the cosine carried no signal about which source
  transfers best (Spearman -0.08, oracle agreement 6 % over 18 pseudo-scenarios, chance
  12.5 %); the class-centroid distance did (0.24, 44 %);
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

__all__ = [
    "Criterion",
    "SelectionResult",
    "Similarity",
    "class_centroid_similarity",
    "combine_criteria",
    "prompt_criteria",
    "select_source",
]


class Criterion(str, Enum):
    BOTH = "both"
    SIMILARITY = "similarity"
    FIDELITY = "fidelity"


class Similarity(str, Enum):
    """Which similarity criterion (module docstring)."""

    CLASS_CENTROID = "class_centroid"
    PROMPT_COSINE = "prompt_cosine"


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


def _features(model: Any, x: torch.Tensor, domain: int, batch_size: int) -> torch.Tensor:
    """Pooled features ``(N, D)`` of ``x`` with domain ``domain``'s prompts prepended."""
    return torch.cat(
        [
            model.forward_parts(x[s : s + batch_size], domain)["features"]
            for s in range(0, len(x), batch_size)
        ]
    )


def _mean_class_distance(
    fa: torch.Tensor, ya: torch.Tensor, fb: torch.Tensor, yb: torch.Tensor
) -> float | None:
    """Mean over the classes present in both sets of ``||centroid_a(c) - centroid_b(c)||``."""
    dists = [
        float(torch.linalg.vector_norm(fa[ya == c].mean(0) - fb[yb == c].mean(0)))
        for c in torch.unique(ya).tolist()
        if bool((yb == c).any())
    ]
    return sum(dists) / len(dists) if dists else None


@torch.no_grad()
def class_centroid_similarity(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor | None,
    source_x: torch.Tensor,
    source_y: torch.Tensor,
    source_domain: torch.Tensor,
    *,
    batch_size: int = 256,
) -> list[float]:
    """``s_i = -mean_c ||mean f(x_T,c; P_i) - mean f(x_i,c; P_i)||`` for every source ``i``.

    [I] (session 6, module docstring): features are the frozen backbone's pooled output with
    source ``i``'s prompts; ``c`` runs over the classes that both the target windows ``x``
    (labels ``y``; ``None`` -> source ``i``'s predicted classes) and source ``i``'s windows
    have. A source that shares no class with the target falls back to the distance of the
    overall centroids. Higher = more similar.
    """
    _check_sources(x, source_x, source_y, source_domain)
    was = model.training
    model.eval()
    try:
        feats = [_features(model, x, i, batch_size) for i in range(model.num_sources)]
        return _class_centroid_scores(
            model, feats, y, source_x, source_y, source_domain, batch_size
        )
    finally:
        model.train(was)


def _check_sources(
    x: torch.Tensor, source_x: torch.Tensor, source_y: torch.Tensor, source_domain: torch.Tensor
) -> None:
    n = len(source_x)
    if len(x) == 0 or n == 0:
        raise InputError("class_centroid_similarity: no target or no source windows")
    if len(source_y) != n or len(source_domain) != n:
        raise InputError(
            f"class_centroid_similarity: {n} source windows but {len(source_y)} labels and "
            f"{len(source_domain)} domain ids"
        )


def _class_centroid_scores(
    model: Any,
    target_features: Sequence[torch.Tensor],
    y: torch.Tensor | None,
    source_x: torch.Tensor,
    source_y: torch.Tensor,
    source_domain: torch.Tensor,
    batch_size: int,
) -> list[float]:
    """The similarity of :func:`class_centroid_similarity` from the target's features under
    each source's prompts (``target_features[i]``, already computed by the caller)."""
    sims = []
    for i, ft in enumerate(target_features):
        mine = source_domain == i
        if not bool(mine.any()):
            raise InputError(f"class_centroid_similarity: source {i} has no windows")
        fs = _features(model, source_x[mine], i, batch_size)
        yt = y if y is not None else model.head(ft).argmax(-1)
        d = _mean_class_distance(ft, yt.to(ft.device), fs, source_y[mine].to(fs.device))
        if d is None:
            d = float(torch.linalg.vector_norm(ft.mean(0) - fs.mean(0)))
        sims.append(-d)
    return sims


@torch.no_grad()
def prompt_criteria(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    similarity: Similarity | str = Similarity.CLASS_CENTROID,
    sources: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    similarity_on: str = "specific",
    batch_size: int = 256,
) -> tuple[list[float], list[float]]:
    """``(similarity, fidelity)`` of every source prompt on target windows ``x`` (labels ``y``).

    ``model`` is a trained :class:`~polyprompt.timeseries.method.POND` whose target slot was
    learned on the target (step 2b). ``y=None`` -> fidelity is ``-mean entropy``.
    ``similarity="class_centroid"`` needs ``sources = (x_s, y_s, local domain ids)``, the
    labelled source windows; ``"prompt_cosine"`` uses ``similarity_on``.
    """
    kind = Similarity(similarity)
    if similarity_on not in ("specific", "full"):
        raise InputError(
            f"prompt_criteria: similarity_on must be 'specific' or 'full', got {similarity_on!r}"
        )
    if len(x) == 0:
        raise InputError("prompt_criteria: no target windows")
    if kind is Similarity.CLASS_CENTROID and sources is None:
        raise InputError(
            "prompt_criteria: similarity='class_centroid' needs the labelled source windows "
            "(sources=(x, y, domain)); pass them or use similarity='prompt_cosine'"
        )
    was = model.training
    model.eval()
    try:
        centroid = kind is Similarity.CLASS_CENTROID
        if centroid:
            assert sources is not None
            _check_sources(x, *sources)
        # the target slot's prompts are only needed by the prompt cosine
        ids = [*range(model.num_sources)] + ([] if centroid else [model.target_id])
        means: dict[int, torch.Tensor] = {}
        feats: dict[int, torch.Tensor] = {}
        fid: dict[int, float] = {}
        for d in ids:
            prompt_sum, loss_sum, n, feat_parts = 0.0, 0.0, 0, []
            for s in range(0, len(x), batch_size):
                xb = x[s : s + batch_size]
                parts = model.forward_parts(xb, d)
                p = parts["specific"]
                if similarity_on == "full":
                    p = model.compose(p)
                prompt_sum = prompt_sum + p.sum(dim=0)
                feat_parts.append(parts["features"])
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
            feats[d] = torch.cat(feat_parts)
            fid[d] = -loss_sum / n
        if centroid:
            assert sources is not None
            target_feats = [feats[i] for i in range(model.num_sources)]
            sim = _class_centroid_scores(model, target_feats, y, *sources, batch_size)
        else:
            tgt = means[model.target_id]
            sim = [
                float(F.cosine_similarity(means[i], tgt, dim=0)) for i in range(model.num_sources)
            ]
        return sim, [fid[i] for i in range(model.num_sources)]
    finally:
        model.train(was)


def select_source(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    criterion: Criterion | str = Criterion.BOTH,
    similarity: Similarity | str = Similarity.CLASS_CENTROID,
    sources: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    similarity_on: str = "specific",
) -> SelectionResult:
    """Score every source prompt on the target (see module docstring) and pick ``i*``.

    ``sources = (x_s, y_s, local domain ids)`` are the labelled source windows (needed by the
    default ``similarity="class_centroid"``).
    """
    if Criterion(criterion) is Criterion.FIDELITY and sources is None:
        similarity = Similarity.PROMPT_COSINE  # not used by the score; needs no source windows
    sim, fid = prompt_criteria(
        model, x, y, similarity=similarity, sources=sources, similarity_on=similarity_on
    )
    score = combine_criteria(sim, fid, criterion)
    chosen = max(range(len(score)), key=lambda i: (round(score[i], 9), fid[i]))
    return SelectionResult(chosen, sim, fid, score)
