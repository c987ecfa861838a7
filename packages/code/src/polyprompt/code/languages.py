"""Per-language tree-sitter grammars and the node types Zecoler's extraction needs.

Parsing only goes through the individual grammar wheels (``tree-sitter-python``,
``-java``, ``-go``, ``-javascript``); ``tree-sitter-language-pack`` downloads grammars
at run time and is not used. Every grammar is loaded lazily on first use.

Example::

    >>> from polyprompt.code.languages import get_parser, LANGUAGES
    >>> sorted(LANGUAGES)
    ['go', 'java', 'javascript', 'python']
    >>> get_parser("python").parse(b"def f(): pass").root_node.type
    'module'
    >>> get_parser("cobol")
    Traceback (most recent call last):
    ...
    polyprompt.core.errors.ConfigError: unsupported language 'cobol'; supported: go, java, javascript, python
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from polyprompt.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from tree_sitter import Language, Parser

__all__ = ["LANGUAGES", "LanguageSpec", "check_language", "get_language", "get_parser"]


@dataclass(frozen=True)
class LanguageSpec:
    """What the extractor needs to know about one grammar.

    Attributes:
        name: our language name.
        module: the grammar wheel's import name.
        extensions: file name endings of this language.
        function_types: node types of function / method definitions.
        comment_types: node types of comments (dropped from code tokens).
        identifier_types: node types renamed by identifier normalisation (variables,
            parameters, called functions) — field / property / type names are kept.
        name_types: node types that may hold a function's name.
        atomic_types: node types kept as one token (string literals).
    """

    name: str
    module: str
    extensions: tuple[str, ...]
    function_types: tuple[str, ...]
    comment_types: tuple[str, ...]
    identifier_types: tuple[str, ...]
    name_types: tuple[str, ...]
    atomic_types: tuple[str, ...]


LANGUAGES: dict[str, LanguageSpec] = {
    "python": LanguageSpec(
        "python",
        "tree_sitter_python",
        (".py",),
        ("function_definition",),
        ("comment",),
        ("identifier",),
        ("identifier",),
        ("string", "concatenated_string"),
    ),
    "go": LanguageSpec(
        "go",
        "tree_sitter_go",
        (".go",),
        ("function_declaration", "method_declaration"),
        ("comment",),
        ("identifier",),
        ("identifier", "field_identifier"),
        ("interpreted_string_literal", "raw_string_literal", "rune_literal"),
    ),
    "java": LanguageSpec(
        "java",
        "tree_sitter_java",
        (".java",),
        ("method_declaration", "constructor_declaration"),
        ("line_comment", "block_comment"),
        ("identifier",),
        ("identifier",),
        ("string_literal", "character_literal"),
    ),
    "javascript": LanguageSpec(
        "javascript",
        "tree_sitter_javascript",
        (".js", ".mjs", ".cjs"),
        ("function_declaration", "method_definition", "generator_function_declaration"),
        ("comment",),
        ("identifier", "shorthand_property_identifier"),
        ("identifier", "property_identifier"),
        ("string", "template_string", "regex"),
    ),
}


def check_language(language: Any, where: str = "polyprompt.code") -> LanguageSpec:
    """The :class:`LanguageSpec` of ``language`` (case-insensitive) or a ConfigError."""
    key = language.lower().strip() if isinstance(language, str) else language
    if key in ("js",):
        key = "javascript"
    if key not in LANGUAGES:
        prefix = "" if where == "polyprompt.code" else f"{where}: "
        raise ConfigError(
            f"{prefix}unsupported language {language!r}; supported: {', '.join(sorted(LANGUAGES))}"
        )
    return LANGUAGES[key]


@cache
def get_language(language: str) -> Language:
    """The tree-sitter ``Language`` of ``language`` from its grammar wheel."""
    from tree_sitter import Language

    spec = check_language(language)
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:  # pragma: no cover - the wheels are dependencies
        raise ConfigError(
            f"grammar for {spec.name!r} is not installed: pip install {spec.module.replace('_', '-')}"
        ) from exc
    return Language(module.language())


def get_parser(language: str) -> Parser:
    """A fresh tree-sitter ``Parser`` for ``language`` (parsers are cheap; not thread-safe)."""
    from tree_sitter import Parser

    return Parser(get_language(check_language(language).name))
