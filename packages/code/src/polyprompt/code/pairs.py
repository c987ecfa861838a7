"""The three Zecoler tasks as binary pair classification, built reproducibly with hard negatives.

Zecoler (Sec. 3-4) casts every task as "do these two inputs match?":

* ``clone``  — (code, code): a positive is the same function after identifier
  normalisation (a type-2 clone, :meth:`CodeFunction.normalized`); a negative is another
  function, normalised the same way, so the surface form does not give the label away;
* ``search`` — (natural-language query, code): the first docstring sentence and the code
  (docstring stripped) of the same function vs another function;
* ``name``   — (method name, body with the name masked out): the function's own name vs
  the name of another function.

Hard negatives (the issue: "same file / similar names"): a negative partner is drawn from
the same file when possible, else from the functions that share a name sub-token
(``readFile`` ~ ``read_line``), else at random. Labels are balanced (half positive) and
the whole construction is a pure function of ``(functions, task, num_pairs, seed)``.

Example::

    >>> from polyprompt.code.extract import extract_functions
    >>> src = "\\n".join(f"def get_{w}(x):\\n    '''Return the {w} of x.'''\\n    return x.{w} + 1\\n"
    ...                  for w in ["size", "name", "path", "mode"])
    >>> fns = extract_functions(src, "python").functions
    >>> pairs = build_pairs(fns, "name", num_pairs=4, seed=0)
    >>> [p.label for p in pairs], pairs[0].text_a in {"get_size", "get_name", "get_path", "get_mode"}
    ([1, 0, 1, 0], True)
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from polyprompt.code.extract import CodeFunction
from polyprompt.core.errors import ConfigError, InputError

__all__ = [
    "PairExample",
    "Task",
    "build_pairs",
    "check_pairs",
    "name_subtokens",
    "split_functions",
]


class Task(str, Enum):
    """The three Zecoler tasks."""

    CLONE = "clone"  # clone detection: (code, code)
    SEARCH = "search"  # code search: (query, code)
    NAME = "name"  # method-name prediction: (name, masked body)


@dataclass(frozen=True)
class PairExample:
    """One labelled pair. ``label`` 1 = match (clone / relevant / right name), 0 = not."""

    task: str
    language: str
    text_a: str
    text_b: str
    label: int
    uid: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "PairExample") -> PairExample:
        """Build from a mapping; missing / ill-typed fields raise InputError naming them."""
        if not isinstance(data, Mapping):
            raise InputError(f"{where}: a pair must be a mapping, got {type(data).__name__}")
        missing = [k for k in ("text_a", "text_b", "label") if k not in data]
        if missing:
            raise InputError(f"{where}: pair is missing field(s) {missing} (has {sorted(data)})")
        pair = cls(
            task=str(data.get("task", "")),
            language=str(data.get("language", "")),
            text_a=data["text_a"],
            text_b=data["text_b"],
            label=data["label"],
            uid=str(data.get("uid", "")),
        )
        check_pairs([pair], where)
        return pair


def check_pairs(pairs: Sequence[Any], where: str = "pairs") -> list[PairExample]:
    """Validate ``pairs`` (PairExample objects or mappings); returns a list of PairExample.

    Raises:
        InputError: empty list, a missing field, an empty / non-string text, a label
        other than 0 / 1 — the message names the pair's index and field.
    """
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise InputError(f"{where}: expected a sequence of pairs, got {type(pairs).__name__}")
    if len(pairs) == 0:
        raise InputError(f"{where}: no pairs")
    out = []
    for i, p in enumerate(pairs):
        if isinstance(p, Mapping):
            p = PairExample.from_dict(p, f"{where}[{i}]")
        if not isinstance(p, PairExample):
            raise InputError(f"{where}[{i}]: expected a PairExample, got {type(p).__name__}")
        for name in ("text_a", "text_b"):
            value = getattr(p, name)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{where}[{i}].{name}: must be a non-empty string, got {value!r}")
        if isinstance(p.label, bool) or p.label not in (0, 1):
            raise InputError(f"{where}[{i}].label: must be 0 or 1, got {p.label!r}")
        out.append(p)
    return out


def name_subtokens(name: str) -> list[str]:
    """Lower-case sub-tokens of an identifier: ``readFileHTTP_v2`` -> ``[read, file, http, v2]``."""
    out: list[str] = []
    cur = ""
    prev = ""
    for ch in name:
        if not ch.isalnum():
            if cur:
                out.append(cur)
            cur, prev = "", ""
            continue
        boundary = ch.isupper() and (prev.islower() or prev.isdigit())
        if boundary and cur:
            out.append(cur)
            cur = ""
        cur += ch
        prev = ch
    if cur:
        out.append(cur)
    return [t.lower() for t in out if len(t) > 1]


def _eligible(fn: CodeFunction, task: Task) -> bool:
    if task is Task.SEARCH:
        q = fn.query
        return q is not None and len(q.split()) >= 3
    if task is Task.NAME:
        return bool(fn.name_positions) and len(fn.name) >= 3 and not fn.name.startswith("__")
    return len(set(fn.tokens[i] for i in fn.identifier_positions)) >= 2


def split_functions(
    functions: Sequence[CodeFunction], fraction: float, seed: int = 0
) -> tuple[list[CodeFunction], list[CodeFunction]]:
    """Split by *file* into ``(first ~fraction, rest)`` so no file feeds both sides."""
    if not 0 < fraction < 1:
        raise ConfigError(f"split_functions: fraction must be in (0, 1), got {fraction}")
    paths = sorted({f.path for f in functions})
    random.Random(seed).shuffle(paths)
    first = set(paths[: max(1, round(len(paths) * fraction))])
    a = [f for f in functions if f.path in first]
    b = [f for f in functions if f.path not in first]
    return a, b


def _pick_negative(
    fn: CodeFunction,
    pool: Sequence[CodeFunction],
    by_path: Mapping[str, list[int]],
    by_sub: Mapping[str, list[int]],
    rng: random.Random,
    task: Task,
    hard: bool,
) -> CodeFunction:
    def ok(other: CodeFunction) -> bool:
        if other.uid == fn.uid or other.code == fn.code:
            return False
        if task is Task.NAME and other.name == fn.name:
            return False
        return not (task is Task.SEARCH and other.query == fn.query)

    if hard:
        same_file = [pool[j] for j in by_path.get(fn.path, ()) if ok(pool[j])]
        if same_file:
            return rng.choice(same_file)
        similar = sorted({j for t in name_subtokens(fn.name) for j in by_sub.get(t, ())})
        similar_fns = [pool[j] for j in similar if ok(pool[j])]
        if similar_fns:
            return rng.choice(similar_fns)
    for _ in range(100):
        other = pool[rng.randrange(len(pool))]
        if ok(other):
            return other
    raise InputError(
        f"build_pairs: could not find a negative partner for {fn.uid}: the functions are "
        "too few or all identical"
    )


def _make_pair(task: Task, anchor: CodeFunction, partner: CodeFunction, label: int) -> PairExample:
    uid = f"{anchor.uid}|{partner.uid}"
    if task is Task.CLONE:
        return PairExample(
            task.value, anchor.language, anchor.code, partner.normalized(), label, uid
        )
    if task is Task.SEARCH:
        assert anchor.query is not None
        return PairExample(task.value, anchor.language, anchor.query, partner.code, label, uid)
    return PairExample(task.value, anchor.language, partner.name, anchor.masked_body(), label, uid)


def build_pairs(
    functions: Iterable[CodeFunction],
    task: Task | str,
    *,
    num_pairs: int | None = None,
    seed: int = 0,
    hard_negatives: bool = True,
) -> list[PairExample]:
    """Balanced positive / negative pairs for ``task`` (see module doc).

    Args:
        functions: extracted functions (one language or several).
        task: ``clone`` / ``search`` / ``name``.
        num_pairs: how many pairs (``None``: one per eligible function). Each anchor
            function is used once, so at most ``len(eligible)`` pairs.
        seed: makes the construction reproducible.
        hard_negatives: same-file / similar-name negatives (else random ones).

    Returns:
        pairs in a seeded random order, labels alternating 1, 0, 1, 0, ...

    Raises:
        ConfigError: unknown task, bad ``num_pairs``. InputError: fewer than 2 eligible
        functions.
    """
    try:
        task = Task(task)
    except ValueError:
        raise ConfigError(
            f"build_pairs: unknown task {task!r}; choose one of {[t.value for t in Task]}"
        ) from None
    if num_pairs is not None and (not isinstance(num_pairs, int) or num_pairs < 1):
        raise ConfigError(f"build_pairs: num_pairs must be an int >= 1 or None, got {num_pairs!r}")
    pool = [f for f in functions if _eligible(f, task)]
    if len(pool) < 2:
        raise InputError(
            f"build_pairs: task {task.value!r} needs at least 2 eligible functions, got "
            f"{len(pool)} (search needs docstrings, name needs named functions)"
        )
    pool.sort(key=lambda f: f.uid)
    by_path: dict[str, list[int]] = defaultdict(list)
    by_sub: dict[str, list[int]] = defaultdict(list)
    for j, f in enumerate(pool):
        by_path[f.path].append(j)
        for t in set(name_subtokens(f.name)):
            by_sub[t].append(j)
    rng = random.Random(f"{seed}-{task.value}")
    order = list(range(len(pool)))
    rng.shuffle(order)
    if num_pairs is not None:
        order = order[:num_pairs]
    pairs = []
    for k, j in enumerate(order):
        anchor = pool[j]
        if k % 2 == 0:
            pairs.append(_make_pair(task, anchor, anchor, 1))
        else:
            neg = _pick_negative(anchor, pool, by_path, by_sub, rng, task, hard_negatives)
            pairs.append(_make_pair(task, anchor, neg, 0))
    return pairs
