"""Loaders for the paper's data layouts: BigCloneBench / CodeXGLUE, Zecoler jsonl, CodeSearchNet.

* **BigCloneBench (CodeXGLUE ``Clone-detection-BigCloneBench``)** — also the layout of the
  official Zecoler ``dataset/<task>/<Language>/`` folders: ``data.jsonl`` with one
  ``{"func": <code or text>, "idx": <id>}`` per line, and split files ``train.txt`` /
  ``valid.txt`` / ``test.txt`` (or ``train_32.txt`` ...) with ``idx1<TAB>idx2<TAB>label``.
* **Zecoler P-tuning jsonl** (``method/ptuning/dataset/.../train.jsonl``): one
  ``{"code1", "code2", "idx", "label"}`` per line, label ``true`` / ``false`` / 0 / 1.
* **CodeSearchNet** (``<language>_train_0.jsonl[.gz]``): one function per line with
  ``code``, ``docstring``, ``func_name``, ``language``; parsed again with tree-sitter
  (docstring / comments stripped, name masked) and turned into ``search`` / ``name`` pairs
  by :func:`polyprompt.code.pairs.build_pairs`.

Every malformed line raises :class:`~polyprompt.core.errors.InputError` naming the file,
the line number and the field.

Example::

    >>> import json, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "data.jsonl").write_text('{"func": "int a() { return 1; }", "idx": "1"}\\n'
    ...                                   '{"func": "int b() { return 2; }", "idx": "2"}\\n')
    >>> _ = (d / "train.txt").write_text("1\\t2\\t0\\n1\\t1\\t1\\n")
    >>> [p.label for p in load_bigclonebench(d, "train")]
    [0, 1]
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from polyprompt.code.extract import CodeFunction, ExtractStats, extract_functions
from polyprompt.code.languages import check_language
from polyprompt.code.pairs import PairExample, Task, build_pairs
from polyprompt.core.errors import InputError

__all__ = [
    "load_bigclonebench",
    "load_codesearchnet",
    "load_codesearchnet_functions",
    "load_pair_dir",
    "load_zecoler_jsonl",
]


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
            for i, line in enumerate(fh, 1):
                if line.strip():
                    yield i, line
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None


def _json_line(path: Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{lineno}: not a JSON object ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _label(value: Any, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
        return int(value.strip().lower() in ("1", "true"))
    if isinstance(value, int) and value in (0, 1):
        return value
    raise InputError(f"{where}: label must be 0/1/true/false, got {value!r}")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: must be a non-empty string, got {value!r}")
    return " ".join(value.split())


def load_bigclonebench(
    directory: str | Path, split: str = "train", *, task: str = "clone", language: str = "java"
) -> list[PairExample]:
    """Pairs of ``<directory>/<split>.txt`` resolved through ``<directory>/data.jsonl``.

    ``split`` is a file stem (``train``, ``valid``, ``test``, ``train_32`` ...). Code is
    whitespace-normalised (the official ``code_preprocess``), not re-parsed.
    """
    directory = Path(directory)
    data_path = directory / "data.jsonl"
    funcs: dict[str, str] = {}
    for lineno, line in _read_lines(data_path):
        obj = _json_line(data_path, lineno, line)
        for key in ("func", "idx"):
            if key not in obj:
                raise InputError(f"{data_path}:{lineno}: missing field {key!r}")
        funcs[str(obj["idx"])] = _text(obj["func"], f"{data_path}:{lineno}: field 'func'")
    split_path = directory / f"{split}.txt"
    pairs = []
    for lineno, line in _read_lines(split_path):
        parts = line.split()
        where = f"{split_path}:{lineno}"
        if len(parts) != 3:
            raise InputError(f"{where}: expected 'idx1<TAB>idx2<TAB>label', got {line.strip()!r}")
        a, b, label = parts
        for idx in (a, b):
            if idx not in funcs:
                raise InputError(f"{where}: idx {idx!r} is not in {data_path.name}")
        pairs.append(
            PairExample(task, language, funcs[a], funcs[b], _label(label, where), f"{a}|{b}")
        )
    if not pairs:
        raise InputError(f"{split_path}: no pairs")
    return pairs


def load_zecoler_jsonl(
    path: str | Path, *, task: str = "clone", language: str = "java"
) -> list[PairExample]:
    """Pairs of an official Zecoler P-tuning jsonl file (``code1``, ``code2``, ``label``)."""
    path = Path(path)
    pairs = []
    for lineno, line in _read_lines(path):
        obj = _json_line(path, lineno, line)
        where = f"{path}:{lineno}"
        missing = [k for k in ("code1", "code2", "label") if k not in obj]
        if missing:
            raise InputError(f"{where}: missing field(s) {missing}")
        pairs.append(
            PairExample(
                task,
                language,
                _text(obj["code1"], f"{where}: field 'code1'"),
                _text(obj["code2"], f"{where}: field 'code2'"),
                _label(obj["label"], f"{where}: field 'label'"),
                str(obj.get("idx", lineno)),
            )
        )
    if not pairs:
        raise InputError(f"{path}: no pairs")
    return pairs


def load_pair_dir(
    directory: str | Path, split: str, *, task: str = "clone", language: str = "java"
) -> list[PairExample]:
    """``<split>.jsonl`` (Zecoler jsonl) if present, else BigCloneBench ``<split>.txt``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"load_pair_dir: {directory} is not a folder")
    if (directory / f"{split}.jsonl").is_file():
        return load_zecoler_jsonl(directory / f"{split}.jsonl", task=task, language=language)
    if (directory / "data.jsonl").is_file() and (directory / f"{split}.txt").is_file():
        return load_bigclonebench(directory, split, task=task, language=language)
    raise InputError(
        f"load_pair_dir: {directory} has neither {split}.jsonl (Zecoler layout) nor "
        f"data.jsonl + {split}.txt (BigCloneBench layout)"
    )


def load_codesearchnet_functions(
    path: str | Path, *, max_functions: int | None = None
) -> tuple[list[CodeFunction], ExtractStats]:
    """Functions of a CodeSearchNet jsonl(.gz) file, re-parsed with tree-sitter.

    The CSN ``docstring`` field is used as the docstring (CSN stores Python docstrings
    inside ``code`` too; the extractor strips them from the code tokens). Lines whose
    ``code`` does not parse are skipped and counted; a line without ``code`` /
    ``language`` / ``func_name`` raises InputError.
    """
    path = Path(path)
    stats = ExtractStats()
    out: list[CodeFunction] = []
    for lineno, line in _read_lines(path):
        obj = _json_line(path, lineno, line)
        where = f"{path}:{lineno}"
        missing = [k for k in ("code", "language", "func_name") if k not in obj]
        if missing:
            raise InputError(f"{where}: missing CodeSearchNet field(s) {missing}")
        lang = check_language(obj["language"], where).name
        code = _text(obj["code"], f"{where}: field 'code'")
        code = obj["code"]
        if lang == "go" and not code.lstrip().startswith("package"):
            code = "package p\n" + code
        if lang == "java" and "class " not in code.split("(", 1)[0]:
            code = "class C {\n" + code + "\n}"
        result = extract_functions(code, lang, path=f"{path.name}:{lineno}")
        stats.merge(result.stats)
        if not result.functions:
            continue
        fn = result.functions[0]
        doc = obj.get("docstring")
        if isinstance(doc, str) and doc.strip():
            fn = CodeFunction(
                fn.language, f"{obj.get('repo', '')}/{obj.get('path', path.name)}", lineno,
                fn.name, fn.tokens, fn.identifier_positions, fn.name_positions, doc.strip(),
            )  # fmt: skip
        out.append(fn)
        if max_functions is not None and len(out) >= max_functions:
            break
    if not out:
        raise InputError(f"{path}: no parsable function")
    return out, stats


def load_codesearchnet(
    path: str | Path, task: Task | str = Task.SEARCH, *, seed: int = 0, num_pairs: int | None = None
) -> list[PairExample]:
    """CodeSearchNet jsonl -> balanced ``search`` / ``name`` / ``clone`` pairs (hard negatives)."""
    functions, _ = load_codesearchnet_functions(path)
    return build_pairs(functions, task, seed=seed, num_pairs=num_pairs)
