"""Pair templates: ``<s> [P..] input_1 [P..] input_2 [P..] <mask> </s>`` and manual ones.

(With a BERT tokenizer — MiniLM — ``<s>`` / ``</s>`` / ``<mask>`` are ``[CLS]`` / ``[SEP]``
/ ``[MASK]``.)

Zecoler's template (official ``CloneDetPVP`` pattern 10, ``data_utils/task_pvps.py``)
interleaves continuous prompt slots with the two inputs and ends with the ``<mask>`` whose
masked-LM prediction is read through the verbalizer. A :class:`TemplateEncoder` takes three
*segments*, each either an ``int`` (that many prompt slots, filled later by the prompt
encoder) or a ``str`` (fixed words, for the manual template):

``<s> seg_0 text_a seg_1 text_b seg_2 <mask> </s>``

Truncation (documented, the official ``shortenable`` parts): the two inputs share what the
context leaves after the special tokens and segments; if they do not fit, the shorter one
is kept whole when it fits in half, the longer one is cut (its head kept). Inputs never
push the ``<mask>`` out of the context.

Example::

    >>> from polyprompt.code.template import TemplateEncoder
    >>> enc = TemplateEncoder(tok, max_length=32, segments=(3, 4, 3))   # doctest: +SKIP
    >>> batch = enc.encode([pair])                                      # doctest: +SKIP
    >>> sorted(batch)                                                   # doctest: +SKIP
    ['attention_mask', 'input_ids', 'labels', 'mask_pos', 'prompt_mask']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from polyprompt.code.backbone import special_ids
from polyprompt.code.pairs import PairExample, check_pairs
from polyprompt.core.errors import ConfigError, InputError

__all__ = ["TemplateEncoder", "fit_two", "resolve_label_words"]

Segment = int | str


def fit_two(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths ``(la, lb)`` with ``la + lb <= budget`` (see module doc).

    >>> fit_two(10, 10, 30), fit_two(50, 5, 20), fit_two(50, 50, 20)
    ((10, 10), (15, 5), (10, 10))
    """
    if len_a + len_b <= budget:
        return len_a, len_b
    half = budget // 2
    if len_a <= half:
        return len_a, budget - len_a
    if len_b <= half:
        return budget - len_b, len_b
    return half, budget - half


def resolve_label_words(tokenizer: Any, words: Sequence[str], where: str) -> list[int]:
    """Token ids of the verbalizer's label words (each must be one token, with or without
    a leading space, as PET / P-tuning require)."""
    ids = []
    for w in words:
        if not isinstance(w, str) or not w.strip():
            raise ConfigError(f"{where}: label words must be non-empty strings, got {w!r}")
        found = None
        for variant in (" " + w.strip(), w.strip()):
            enc = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if len(enc) == 1:
                found = enc[0]
                break
        if found is None:
            raise ConfigError(
                f"{where}: label word {w!r} is not a single token of this tokenizer; choose "
                "words that are (e.g. 'Yes' / 'No' for RoBERTa / CodeBERT)"
            )
        ids.append(found)
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: label words {list(words)} map to the same token")
    return ids


class TemplateEncoder:
    """Turns :class:`PairExample` lists into padded template tensors.

    Args:
        tokenizer: a RoBERTa-style (``bos/eos/pad/mask/unk`` token ids) or BERT-style
            (``cls/sep/pad/mask/unk``) tokenizer.
        max_length: total template length (``<= backbone.max_length``).
        segments: three segments (``int`` prompt slots or ``str`` fixed words).

    ``encode`` returns ``input_ids`` / ``attention_mask`` / ``prompt_mask`` (bool, True at
    prompt slots, which hold ``unk`` ids until the prompt is written in) ``(B, T)``,
    ``mask_pos`` ``(B,)`` and ``labels`` ``(B,)``; ``T`` is the longest row (right padding).
    """

    def __init__(self, tokenizer: Any, max_length: int, segments: Sequence[Segment]) -> None:
        where = "TemplateEncoder"
        if len(segments) != 3:
            raise ConfigError(
                f"{where}: need 3 segments (before a, between, after b), got {segments!r}"
            )
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.segments: list[list[int] | int] = []
        for s in segments:
            if isinstance(s, bool) or not isinstance(s, (int, str)):
                raise ConfigError(f"{where}: a segment is an int or a str, got {s!r}")
            if isinstance(s, int):
                if s < 0:
                    raise ConfigError(f"{where}: prompt slot counts must be >= 0, got {s}")
                self.segments.append(s)
            else:
                self.segments.append(
                    tokenizer(s, add_special_tokens=False)["input_ids"] if s else []
                )
        self.start_id, self.end_id = special_ids(tokenizer)
        if self.start_id is None or self.end_id is None:
            raise ConfigError(f"{where}: tokenizer has no bos/eos (RoBERTa) or cls/sep (BERT) ids")
        for name in ("pad_token_id", "mask_token_id", "unk_token_id"):
            if getattr(tokenizer, name, None) is None:
                raise ConfigError(f"{where}: tokenizer has no {name}")
        fixed = 3 + sum(s if isinstance(s, int) else len(s) for s in self.segments)
        self.budget = self.max_length - fixed
        if self.budget < 2:
            raise ConfigError(
                f"{where}: max_length={max_length} leaves {self.budget} tokens for the two inputs"
            )

    @property
    def num_prompt_tokens(self) -> int:
        return sum(s for s in self.segments if isinstance(s, int))

    def _segment(self, seg: list[int] | int) -> tuple[list[int], list[bool]]:
        if isinstance(seg, int):
            return [self.tokenizer.unk_token_id] * seg, [True] * seg
        return list(seg), [False] * len(seg)

    def encode(
        self, pairs: Sequence[PairExample | dict], where: str = "TemplateEncoder.encode"
    ) -> dict[str, Any]:
        import torch

        pairs = check_pairs(pairs, where)
        tok = self.tokenizer
        enc_a = tok([p.text_a for p in pairs], add_special_tokens=False)["input_ids"]
        enc_b = tok([p.text_b for p in pairs], add_special_tokens=False)["input_ids"]
        rows, prompts, mpos = [], [], []
        for a, b in zip(enc_a, enc_b):
            la, lb = fit_two(len(a), len(b), self.budget)
            ids, pm = [self.start_id], [False]
            for part in (0, "a", 1, "b", 2):
                if part == "a":
                    ids += a[:la]
                    pm += [False] * la
                elif part == "b":
                    ids += b[:lb]
                    pm += [False] * lb
                else:
                    i, m = self._segment(self.segments[part])
                    ids += i
                    pm += m
            mpos.append(len(ids))
            ids += [tok.mask_token_id, self.end_id]
            pm += [False, False]
            rows.append(ids)
            prompts.append(pm)
        t = max(len(r) for r in rows)
        if t > self.max_length:  # pragma: no cover - guarded by fit_two
            raise InputError(
                f"{where}: template of {t} tokens exceeds max_length {self.max_length}"
            )
        b = len(rows)
        input_ids = torch.full((b, t), tok.pad_token_id, dtype=torch.long)
        attention = torch.zeros(b, t, dtype=torch.long)
        prompt_mask = torch.zeros(b, t, dtype=torch.bool)
        for i, (r, pm) in enumerate(zip(rows, prompts)):
            input_ids[i, : len(r)] = torch.tensor(r)
            attention[i, : len(r)] = 1
            prompt_mask[i, : len(pm)] = torch.tensor(pm)
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "prompt_mask": prompt_mask,
            "mask_pos": torch.tensor(mpos, dtype=torch.long),
            "labels": torch.tensor([p.label for p in pairs], dtype=torch.long),
        }
