"""Function extraction with tree-sitter: names, bodies, docstrings, identifier normalisation.

Zecoler (Cui et al., 2022, Sec. 4.1) turns real code into three pair tasks; this module
turns source files into :class:`CodeFunction` records that :mod:`polyprompt.code.pairs`
pairs up. Everything is read from the tree-sitter syntax tree — no regular expressions
over code:

* **code tokens**: the leaves of the function's subtree, comments (and a Python
  docstring) dropped, string literals kept as one token — the ``code_tokens`` layout of
  CodeSearchNet;
* **name**: the function's ``name`` field; ``name_positions`` are the identifier leaves
  that spell it (its definition and recursive calls), so :meth:`CodeFunction.masked_body`
  can hide it for method-name prediction;
* **docstring**: a Python docstring (first statement string), or the comment block right
  above a Go / Java / JavaScript function (``//`` lines, ``/** ... */``); the first
  sentence becomes the code-search query;
* **identifier normalisation**: :meth:`CodeFunction.normalized` renames every
  identifier leaf (variables, parameters, called names) to ``v0, v1, ...`` in order of
  first use — the renaming clone of BigCloneBench's type-2 clones.

Bad input: empty (or whitespace-only) source and bytes that are not UTF-8 raise
:class:`~polyprompt.core.errors.InputError` naming the path (and byte offset); functions
whose subtree contains tree-sitter ``ERROR`` / missing nodes are skipped and counted in
:class:`ExtractStats` (``on_error="skip"``, default) or rejected (``on_error="raise"``).

Example::

    >>> from polyprompt.code.extract import extract_functions
    >>> src = 'def add_one(x):\\n    "Add one to x."\\n    y = x + 1  # note\\n    return y\\n'
    >>> fn = extract_functions(src, "python").functions[0]
    >>> fn.name, fn.code, fn.query
    ('add_one', 'def add_one ( x ) : y = x + 1 return y', 'Add one to x.')
    >>> fn.normalized()
    'def v0 ( v1 ) : v2 = v1 + 1 return v2'
    >>> fn.masked_body()
    'def f ( x ) : y = x + 1 return y'
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from polyprompt.code.languages import LanguageSpec, check_language, get_parser
from polyprompt.core.errors import ConfigError, InputError

__all__ = [
    "CodeFunction",
    "ExtractResult",
    "ExtractStats",
    "OnError",
    "decode_source",
    "extract_functions",
]

MAX_STRING_CHARS = 48  # long literals are cut (they carry little for the three tasks)


class OnError(str, Enum):
    """What to do with a function whose subtree holds tree-sitter ERROR / missing nodes."""

    SKIP = "skip"  # drop it and count it in ExtractStats.skipped_error
    RAISE = "raise"  # raise InputError naming the file and line


@dataclass(frozen=True)
class CodeFunction:
    """One function / method extracted from a source file.

    Attributes:
        language: language name. path: file it came from. line: 1-based start line.
        name: the function's name. tokens: code tokens (comments / docstring dropped).
        identifier_positions: indices into ``tokens`` of renamable identifiers.
        name_positions: indices into ``tokens`` that spell ``name``.
        docstring: cleaned docstring / leading comment text, or ``None``.
    """

    language: str
    path: str
    line: int
    name: str
    tokens: tuple[str, ...]
    identifier_positions: tuple[int, ...]
    name_positions: tuple[int, ...]
    docstring: str | None = None

    @property
    def code(self) -> str:
        """The code tokens joined by single spaces."""
        return " ".join(self.tokens)

    @property
    def query(self) -> str | None:
        """First sentence of the docstring (the code-search query), or ``None``."""
        return first_sentence(self.docstring) if self.docstring else None

    @property
    def uid(self) -> str:
        """Stable id: language, path, line and name."""
        return f"{self.language}:{self.path}:{self.line}:{self.name}"

    def normalized(self) -> str:
        """Code with every identifier renamed ``v0, v1, ...`` in order of first use."""
        tokens = list(self.tokens)
        mapping: dict[str, str] = {}
        for i in sorted(set(self.identifier_positions) | set(self.name_positions)):
            tokens[i] = mapping.setdefault(tokens[i], f"v{len(mapping)}")
        return " ".join(tokens)

    def masked_body(self, placeholder: str = "f") -> str:
        """Code with the function's own name replaced by ``placeholder`` everywhere."""
        tokens = list(self.tokens)
        for i in self.name_positions:
            tokens[i] = placeholder
        return " ".join(tokens)


@dataclass
class ExtractStats:
    """Counts of what extraction kept and skipped (summed over files by ``merge``)."""

    files: int = 0
    functions: int = 0
    skipped_error: int = 0
    skipped_size: int = 0
    skipped_anonymous: int = 0
    empty_files: int = 0
    undecodable_files: int = 0
    unreadable_files: int = 0

    def merge(self, other: ExtractStats) -> ExtractStats:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class ExtractResult:
    """Functions of one source plus the :class:`ExtractStats` of the extraction."""

    functions: list[CodeFunction] = field(default_factory=list)
    stats: ExtractStats = field(default_factory=ExtractStats)


def decode_source(source: bytes | str, path: str = "<string>") -> str:
    """``source`` as text; bytes must be UTF-8 (InputError with path + byte offset)."""
    if isinstance(source, str):
        return source
    if not isinstance(source, (bytes, bytearray)):
        raise InputError(f"{path}: source must be str or bytes, got {type(source).__name__}")
    try:
        return bytes(source).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: source is not valid UTF-8 (byte 0x{source[exc.start]:02x} at offset "
            f"{exc.start}); decode it yourself or skip the file"
        ) from None


def first_sentence(text: str, max_words: int = 40) -> str:
    """First sentence of a docstring: the first paragraph cut after its first ``. ``."""
    para = text.strip().split("\n\n", 1)[0]
    words = para.split()
    out: list[str] = []
    for w in words:
        out.append(w)
        if w.endswith(".") and len(out) >= 3:
            break
    return " ".join(out[:max_words])


def _clean_comment(text: str) -> str:
    """Strip comment markers (``//``, ``#``, ``/** */``, leading ``*``) and ``@tag`` lines."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        for prefix in ("/**", "/*", "//", "#"):
            if line.startswith(prefix):
                line = line[len(prefix) :]
                break
        if line.endswith("*/"):
            line = line[:-2]
        line = line.strip()
        if line.startswith("*"):
            line = line[1:].strip()
        if line.startswith("@"):
            break  # Javadoc / JSDoc tags end the description
        lines.append(line)
    # keep paragraph breaks as blank lines
    return "\n".join(lines).strip()


def _python_docstring(body: Any) -> Any:
    if body is None:
        return None
    for child in body.named_children:
        if child.type == "comment":
            continue
        if child.type == "expression_statement" and child.named_child_count == 1:
            inner = child.named_children[0]
            if inner.type == "string":
                return child
        return None
    return None


def _string_text(node: Any) -> str:
    parts = [c.text.decode("utf-8", "replace") for c in node.children if c.type == "string_content"]
    return "".join(parts) if parts else node.text.decode("utf-8", "replace").strip("\"'")


def _leading_comment(node: Any, spec: LanguageSpec) -> str | None:
    """The comment block that ends on the line right above ``node`` (Go / Java / JS)."""
    comments = []
    expected_row = node.start_point[0]
    prev = node.prev_sibling
    while prev is not None and prev.type in spec.comment_types:
        if prev.end_point[0] < expected_row - 1:
            break
        comments.append(prev.text.decode("utf-8", "replace"))
        expected_row = prev.start_point[0]
        prev = prev.prev_sibling
    if not comments:
        return None
    return _clean_comment("\n".join(reversed(comments))) or None


def _has_error(node: Any) -> bool:
    return bool(node.has_error)


def _walk_tokens(
    node: Any, spec: LanguageSpec, skip: Any, tokens: list[str], idents: list[int], kinds: list[str]
) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type in spec.comment_types or (skip is not None and n.id == skip.id):
            continue
        if n.type in spec.atomic_types or n.child_count == 0:
            text = n.text.decode("utf-8", "replace")
            if n.type in spec.atomic_types:
                text = " ".join(text.split())
                if len(text) > MAX_STRING_CHARS:
                    text = text[: MAX_STRING_CHARS - 1] + text[-1]
            if not text.strip():
                continue
            if n.type in spec.identifier_types:
                idents.append(len(tokens))
            kinds.append(n.type)
            tokens.append(text)
            continue
        stack.extend(reversed(n.children))


def _functions(root: Any, spec: LanguageSpec) -> Iterator[Any]:
    stack = [root]
    while stack:
        n = stack.pop()
        if n.type in spec.function_types:
            yield n
        stack.extend(reversed(n.children))


def extract_functions(
    source: bytes | str,
    language: str,
    *,
    path: str = "<string>",
    on_error: OnError | str = OnError.SKIP,
    min_tokens: int = 1,
    max_tokens: int | None = None,
) -> ExtractResult:
    """Parse ``source`` and return its functions (nested ones included).

    Args:
        source: file contents (``bytes`` must be UTF-8).
        language: ``python`` / ``go`` / ``java`` / ``javascript``.
        path: reported in errors and stored in each :class:`CodeFunction`.
        on_error: ``"skip"`` (count functions containing ERROR / missing nodes) or ``"raise"``.
        min_tokens / max_tokens: functions with fewer / more code tokens are skipped
            (counted as ``skipped_size``).

    Raises:
        ConfigError: unsupported language or bad ``on_error``.
        InputError: empty source, non-UTF-8 bytes, or (``on_error="raise"``) a function
        that does not parse.
    """
    spec = check_language(language, "extract_functions")
    try:
        on_error = OnError(on_error)
    except ValueError:
        raise ConfigError(
            f"extract_functions: on_error must be 'skip' or 'raise', got {on_error!r}"
        ) from None
    text = decode_source(source, path)
    if not text.strip():
        raise InputError(f"{path}: empty source (no code to parse)")
    data = text.encode("utf-8")
    tree = get_parser(spec.name).parse(data)
    result = ExtractResult()
    result.stats.files = 1
    for node in _functions(tree.root_node, spec):
        name_node = node.child_by_field_name("name")
        line = node.start_point[0] + 1
        if name_node is None:
            result.stats.skipped_anonymous += 1
            continue
        if _has_error(node):
            if on_error is OnError.RAISE:
                raise InputError(
                    f"{path}:{line}: function does not parse (tree-sitter ERROR / missing "
                    f"node in {spec.name} code); pass on_error='skip' to skip such functions"
                )
            result.stats.skipped_error += 1
            continue
        name = name_node.text.decode("utf-8", "replace")
        docstring = None
        skip = None
        if spec.name == "python":
            doc_node = _python_docstring(node.child_by_field_name("body"))
            if doc_node is not None:
                skip = doc_node
                docstring = _clean_comment(_string_text(doc_node.named_children[0])) or None
        else:
            docstring = _leading_comment(node, spec)
        tokens: list[str] = []
        idents: list[int] = []
        kinds: list[str] = []
        _walk_tokens(node, spec, skip, tokens, idents, kinds)
        if len(tokens) < min_tokens or (max_tokens is not None and len(tokens) > max_tokens):
            result.stats.skipped_size += 1
            continue
        name_pos = tuple(
            i for i, (t, k) in enumerate(zip(tokens, kinds)) if t == name and k in spec.name_types
        )
        result.functions.append(
            CodeFunction(
                language=spec.name,
                path=path,
                line=line,
                name=name,
                tokens=tuple(tokens),
                identifier_positions=tuple(idents),
                name_positions=name_pos,
                docstring=docstring,
            )
        )
        result.stats.functions += 1
    return result


def stable_hash(text: str) -> int:
    """A process-independent 64-bit hash (``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
