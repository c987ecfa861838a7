"""Scores for generated text: caption metrics and accuracy of answers matched to choices.

Captioning (APT paper Sec. 4.2 reports the AudioCaps/Clotho caption metrics):

* **BLEU-4** - ``torchmetrics.text.BLEUScore(n_gram=4)`` (corpus BLEU, brevity penalty);
* **ROUGE-L** - ``torchmetrics.text.ROUGEScore(rouge_keys="rougeL")`` F-measure (needs no nltk);
* **CIDEr-D** - no installed package provides it (pycocoevalcap is not a dependency), so
  :func:`cider_d` re-implements the official scorer line by line
  (``tylin/coco-caption`` / ``salaniz/pycocoevalcap`` ``cider/cider_scorer.py``: n = 1..4,
  tf-idf with document frequencies over the evaluated references, clipped cosine similarity,
  Gaussian length penalty sigma = 6, x10). The tests check it against numbers produced by that
  official file. METEOR and SPICE need Java and are not provided, hence no SPIDEr.

Text is normalised before scoring (lower case, punctuation removed, whitespace collapsed),
standing in for the PTB tokenizer of the official toolkit (a Java program).

Classification as text (``classify``, ``qa``, ``fewshot``, ``nlar``): :func:`match_choice`
maps a generated answer to one of the example's ``choices`` (exact match after normalisation,
else the choice whose words occur earliest in the answer; ``None`` if none occurs), and
:func:`choice_accuracy` counts matches with ``label``. :func:`balanced_choice_accuracy` is the
chance-corrected reading for a small test split: macro recall per question, so an answer that
ignores the audio scores chance whatever the split's answer balance.

Example::

    >>> match_choice("It is a woman.", ("man", "woman"))
    1
    >>> preds = ["a dog barks", "rain on a roof"]
    >>> refs = [["a dog barks", "a dog is barking"], ["heavy rain falls", "rain on a tin roof"]]
    >>> round(cider_d(preds, refs)[0], 3)
    3.725
"""

from __future__ import annotations

import math
import re
import string
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from polyprompt.core.errors import InputError

if TYPE_CHECKING:
    from polyprompt.audio.tasks import AudioTextExample

__all__ = [
    "balanced_choice_accuracy",
    "caption_scores",
    "choice_accuracy",
    "cider_d",
    "evaluate_generations",
    "match_choice",
    "normalize_text",
]

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation (apostrophes too), collapse whitespace."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


# --------------------------------------------------------------------------- choices
def match_choice(text: str, choices: Sequence[str]) -> int | None:
    """Index of the choice ``text`` answers, or ``None``.

    Exact match after :func:`normalize_text` wins; otherwise the choice whose word sequence
    occurs earliest in ``text`` (ties: the longer choice), matching whole words only
    ("woman" does not contain the choice "man").
    """
    norm = normalize_text(text)
    normed = [normalize_text(c) for c in choices]
    if norm in normed:
        return normed.index(norm)
    words = norm.split()
    best: tuple[int, int, int] | None = None  # (position, -length, index)
    for idx, choice in enumerate(normed):
        cw = choice.split()
        if not cw:
            continue
        for pos in range(len(words) - len(cw) + 1):
            if words[pos : pos + len(cw)] == cw:
                cand = (pos, -len(cw), idx)
                if best is None or cand < best:
                    best = cand
                break
    return None if best is None else best[2]


def choice_accuracy(
    predictions: Sequence[str],
    choices: Sequence[Sequence[str]],
    labels: Sequence[int],
) -> float:
    """Fraction of ``predictions`` whose :func:`match_choice` equals ``labels``."""
    if not (len(predictions) == len(choices) == len(labels)):
        raise InputError(
            f"choice_accuracy: {len(predictions)} predictions, {len(choices)} choice sets, "
            f"{len(labels)} labels - lengths differ"
        )
    if not predictions:
        raise InputError("choice_accuracy: no predictions")
    hits = sum(
        match_choice(p, c) == y for p, c, y in zip(predictions, choices, labels, strict=True)
    )
    return hits / len(predictions)


def _question(example: AudioTextExample) -> str:
    texts = [s for s in example.segments if isinstance(s, str)]
    return texts[-1] if texts else ""


def balanced_choice_accuracy(
    examples: Sequence[AudioTextExample], predictions: Sequence[str]
) -> float:
    """Accuracy that an answer ignoring the audio cannot lift above chance.

    Examples are grouped by their question (the last text segment, e.g. "Are the two speakers
    the same gender?"); within a group the recall of each correct answer (``label``) present is
    averaged (macro recall), then the groups are averaged with equal weight. An answer that
    depends on the question alone - a constant answer, or a text-only LM, which sees the same
    prompt for every clip - scores exactly ``1 / (answers present)`` per group (50 % on a
    yes/no question) however unbalanced the split's answers are; plain accuracy rewards or
    punishes it by that imbalance (the 120-question NLAR test split: a constant answer scored
    45.0 %). A prediction that names no choice counts as wrong.

    Example::

        >>> import torch
        >>> from polyprompt.audio.tasks import AudioTextExample, Clip
        >>> c = Clip(torch.zeros(1600))
        >>> exs = [AudioTextExample((c, c, "Same?"), a, "nlar", label=("no", "yes").index(a),
        ...                         choices=("no", "yes")) for a in ("yes", "yes", "yes", "no")]
        >>> balanced_choice_accuracy(exs, ["yes"] * 4)   # plain accuracy would be 0.75
        0.5
    """
    if len(examples) != len(predictions):
        raise InputError(
            f"balanced_choice_accuracy: {len(examples)} examples but {len(predictions)} predictions"
        )
    if not examples:
        raise InputError("balanced_choice_accuracy: no examples")
    hits: dict[str, dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for i, (ex, pred) in enumerate(zip(examples, predictions, strict=True)):
        if ex.choices is None or ex.label is None:
            raise InputError(
                f"balanced_choice_accuracy: example {i} ({ex.task}) has no choices / label"
            )
        hits[_question(ex)][int(ex.label)].append(match_choice(pred, ex.choices) == ex.label)
    per_question = [
        sum(sum(v) / len(v) for v in by_label.values()) / len(by_label)
        for by_label in hits.values()
    ]
    return sum(per_question) / len(per_question)


# --------------------------------------------------------------------------- CIDEr-D
def _ngrams(sentence: str, n: int = 4) -> dict[tuple[str, ...], int]:
    words = sentence.split()
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def _as_reference_sets(references: Sequence[Sequence[str] | str]) -> list[list[str]]:
    """Each item's references as a list (a bare string is one reference, not its characters)."""
    return [[r] if isinstance(r, str) else list(r) for r in references]


def cider_d(
    predictions: Sequence[str],
    references: Sequence[Sequence[str] | str],
    *,
    n: int = 4,
    sigma: float = 6.0,
    normalize: bool = True,
) -> tuple[float, list[float]]:
    """CIDEr-D (Vedantam et al., CVPR 2015) as in coco-caption's ``cider_scorer.py``.

    Args:
        predictions: one generated caption per item.
        references: the reference captions of each item (>= 1; a bare string is one reference).
        normalize: apply :func:`normalize_text` first (the official toolkit PTB-tokenises).

    Returns:
        ``(corpus score, per-item scores)``; the corpus score is the mean. The document
        frequencies (idf) come from the references of the evaluated items, as officially.
        Faithful quirk kept: the length used by the Gaussian penalty counts the *bigrams*
        of a caption (``if n == 1: length += term_freq`` in the official file).
    """
    if len(predictions) != len(references):
        raise InputError(
            f"cider_d: {len(predictions)} predictions but {len(references)} reference sets"
        )
    if not predictions:
        raise InputError("cider_d: no predictions")
    references = _as_reference_sets(references)
    if any(len(r) == 0 for r in references):
        raise InputError("cider_d: every item needs at least one reference caption")
    prep = normalize_text if normalize else (lambda s: s)
    ctest = [_ngrams(prep(p), n) for p in predictions]
    crefs = [[_ngrams(prep(r), n) for r in refs] for refs in references]
    doc_freq: dict[tuple[str, ...], float] = defaultdict(float)
    for refs in crefs:
        for ngram in {g for ref in refs for g in ref}:
            doc_freq[ngram] += 1
    ref_len = math.log(float(len(crefs)))

    def counts2vec(cnts: dict[tuple[str, ...], int]):
        vec: list[dict[tuple[str, ...], float]] = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for ngram, tf in cnts.items():
            df = math.log(max(1.0, doc_freq[ngram]))
            k = len(ngram) - 1
            vec[k][ngram] = float(tf) * (ref_len - df)
            norm[k] += vec[k][ngram] ** 2
            if k == 1:
                length += tf
        return vec, [math.sqrt(v) for v in norm], length

    def sim(vh, vr, nh, nr, lh, lr) -> list[float]:
        delta = float(lh - lr)
        val = [0.0] * n
        for k in range(n):
            for ngram in vh[k]:
                val[k] += min(vh[k][ngram], vr[k][ngram]) * vr[k][ngram]
            if nh[k] != 0 and nr[k] != 0:
                val[k] /= nh[k] * nr[k]
            val[k] *= math.e ** (-(delta**2) / (2 * sigma**2))
        return val

    scores = []
    for test, refs in zip(ctest, crefs, strict=True):
        vec, norm, length = counts2vec(test)
        total = [0.0] * n
        for ref in refs:
            vr, nr, lr = counts2vec(ref)
            total = [a + b for a, b in zip(total, sim(vec, vr, norm, nr, length, lr), strict=True)]
        scores.append(sum(total) / n / len(refs) * 10.0)
    return sum(scores) / len(scores), scores


# --------------------------------------------------------------------------- captions
def caption_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str] | str]
) -> dict[str, float]:
    """``{"bleu4", "rougeL", "cider_d"}`` of generated captions against reference sets.

    ``references[i]`` is the list of reference captions of item ``i`` (or one string).

    BLEU-4 / ROUGE-L from torchmetrics (corpus BLEU; ROUGE-L F-measure averaged, best
    reference per item), CIDEr-D from :func:`cider_d`; all on :func:`normalize_text`-ed text.
    """
    from torchmetrics.text import BLEUScore, ROUGEScore

    if len(predictions) != len(references) or not predictions:
        raise InputError(
            f"caption_scores: {len(predictions)} predictions for {len(references)} reference sets"
        )
    preds = [normalize_text(p) for p in predictions]
    refs = [[normalize_text(r) for r in rs] for rs in _as_reference_sets(references)]
    if any(not rs for rs in refs):
        raise InputError("caption_scores: every item needs at least one reference caption")
    bleu = float(BLEUScore(n_gram=4)(preds, refs))
    rouge = ROUGEScore(rouge_keys=("rougeL",), accumulate="best")
    rouge_l = float(rouge(preds, refs)["rougeL_fmeasure"])
    cider, _ = cider_d(preds, refs, normalize=False)
    return {"bleu4": bleu, "rougeL": rouge_l, "cider_d": cider}


def evaluate_generations(
    examples: Sequence[AudioTextExample], predictions: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per-task scores of generated answers: ``{task: {metric: value, "n": count}}``.

    * ``caption``: :func:`caption_scores`; examples sharing the same clip (Clotho/AudioCaps:
      several captions per file) are grouped - their responses are the references and the
      first prediction for that clip is scored.
    * tasks with ``choices``/``label``: ``accuracy`` by :func:`match_choice`, and when every
      example of the task has them also ``balanced_accuracy`` (:func:`balanced_choice_accuracy`);
      without choices: exact match after :func:`normalize_text`.
    """
    if len(examples) != len(predictions):
        raise InputError(
            f"evaluate_generations: {len(examples)} examples but {len(predictions)} predictions"
        )
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_task[ex.task].append(i)
    out: dict[str, dict[str, float]] = {}
    for task, idx in by_task.items():
        if task == "caption":
            groups: dict[tuple[int, ...], list[int]] = {}
            for i in idx:
                key = tuple(id(c) for c in examples[i].clips())
                groups.setdefault(key, []).append(i)
            preds = [predictions[g[0]] for g in groups.values()]
            refs = [[examples[i].response for i in g] for g in groups.values()]
            out[task] = {**caption_scores(preds, refs), "n": float(len(preds))}
            continue
        hits = 0
        for i in idx:
            ex = examples[i]
            if ex.choices is not None and ex.label is not None:
                hits += match_choice(predictions[i], ex.choices) == ex.label
            else:
                hits += normalize_text(predictions[i]) == normalize_text(ex.response)
        out[task] = {"accuracy": hits / len(idx), "n": float(len(idx))}
        if all(examples[i].choices is not None and examples[i].label is not None for i in idx):
            out[task]["balanced_accuracy"] = balanced_choice_accuracy(
                [examples[i] for i in idx], [predictions[i] for i in idx]
            )
    return out
