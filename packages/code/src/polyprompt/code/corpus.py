"""Real source code that installs offline: Python stdlib, Go, OpenJDK, JavaScript.

DATA.md (Code): the Python standard library of the running interpreter, Debian
``golang-1.19-src`` (``/usr/share/go-1.19/src``), the JDK's ``lib/src.zip`` (OpenJDK
sources) and JavaScript files installed by Debian ``libjs-*`` packages under
``/usr/share/javascript`` (npm packages vendored into a folder work too:
``POLYPROMPT_JS_ROOT=/path/to/node_modules``). Nothing is downloaded.

Files are listed in sorted order, then split *by file* into a ``pretrain`` half (for the
in-situ masked-LM pre-training) and a ``task`` half (for the pair tasks) by a stable hash
of the path, so the backbone never saw the code of the task functions. Which files are
read is a seeded shuffle, so a corpus is reproducible from ``(language, split, seed,
max_functions)``.

Example::

    >>> from polyprompt.code.corpus import load_corpus
    >>> corpus = load_corpus("python", max_functions=50, seed=0)        # doctest: +SKIP
    >>> len(corpus.functions), corpus.functions[0].language             # doctest: +SKIP
    (50, 'python')
"""

from __future__ import annotations

import glob
import hashlib
import os
import random
import sysconfig
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from pathlib import Path

from polyprompt.code.extract import CodeFunction, ExtractStats, extract_functions
from polyprompt.code.languages import check_language
from polyprompt.core.errors import ConfigError, InputError

__all__ = [
    "Corpus",
    "CorpusSplit",
    "SourceFile",
    "available_languages",
    "list_sources",
    "load_corpus",
    "source_root",
]

GO_ROOTS = (
    "/usr/share/go-1.19/src",
    "/usr/lib/go-1.19/src",
    "/usr/lib/go/src",
    "/usr/local/go/src",
)
JS_ROOTS = ("/usr/share/javascript", "/usr/share/nodejs")
_SKIP_DIRS = {"test", "tests", "testdata", "idle_test", "__pycache__", "site-packages"}
MAX_FILE_BYTES = 400_000


class CorpusSplit(str, Enum):
    PRETRAIN = "pretrain"
    TASK = "task"
    ALL = "all"


@dataclass(frozen=True)
class SourceFile:
    """One source file: a display path and how to read its bytes."""

    path: str
    read: Callable[[], bytes] = field(compare=False, repr=False)


@dataclass
class Corpus:
    """Functions of one language and the :class:`ExtractStats` of reading them."""

    language: str
    split: str
    functions: list[CodeFunction]
    stats: ExtractStats
    root: str

    def fingerprint(self) -> str:
        """sha256 over every function's uid and code (a cache key ingredient)."""
        h = hashlib.sha256()
        for fn in self.functions:
            h.update(fn.uid.encode())
            h.update(fn.code.encode())
        return h.hexdigest()[:16]


def _python_root() -> str:
    return sysconfig.get_paths()["stdlib"]


def _java_zip() -> str | None:
    candidates = []
    home = os.environ.get("JAVA_HOME")
    if home:
        candidates.append(os.path.join(home, "lib", "src.zip"))
    candidates += sorted(glob.glob("/usr/lib/jvm/*17*/lib/src.zip"))
    candidates += sorted(glob.glob("/usr/lib/jvm/*/lib/src.zip"))
    for c in candidates:
        if os.path.isfile(c):
            return os.path.realpath(c)
    return None


def source_root(language: str) -> str | None:
    """Where the offline source of ``language`` lives here, or ``None`` if absent."""
    spec = check_language(language, "source_root")
    env = os.environ.get(f"POLYPROMPT_{spec.name.upper()}_ROOT")
    if env:
        return env if os.path.exists(env) else None
    if spec.name == "python":
        return _python_root()
    if spec.name == "go":
        return next((r for r in GO_ROOTS if os.path.isdir(r)), None)
    if spec.name == "java":
        return _java_zip()
    return next((r for r in JS_ROOTS if os.path.isdir(r)), None)


def available_languages() -> list[str]:
    """Languages whose offline source is present on this machine."""
    return [lang for lang in ("python", "java", "go", "javascript") if source_root(lang)]


def _walk_dir(root: str, extensions: tuple[str, ...], language: str) -> Iterator[SourceFile]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if not name.endswith(extensions) or name.endswith((".min.js", "_test.go")):
                continue
            if language == "python" and name.startswith("test_"):
                continue
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                continue
            rel = os.path.relpath(full, root)
            yield SourceFile(rel, lambda full=full: Path(full).read_bytes())


@lru_cache(maxsize=4)
def _open_zip(path: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(path)


def _walk_zip(path: str, extensions: tuple[str, ...]) -> Iterator[SourceFile]:
    names = sorted(n for n in _open_zip(path).namelist() if n.endswith(extensions))
    for n in names:
        if "/test/" in n or "/jdk.internal" in n:
            continue
        yield SourceFile(n, lambda n=n: _open_zip(path).read(n))


def list_sources(language: str, root: str | None = None) -> list[SourceFile]:
    """Every source file of ``language`` under ``root`` (default :func:`source_root`), sorted."""
    spec = check_language(language, "list_sources")
    root = root or source_root(spec.name)
    if root is None or not os.path.exists(root):
        raise InputError(
            f"list_sources: no {spec.name} source found on this machine (looked for "
            f"{'the JDK src.zip' if spec.name == 'java' else 'a source folder'}); set "
            f"POLYPROMPT_{spec.name.upper()}_ROOT to a folder of {spec.extensions[0]} files"
        )
    if root.endswith(".zip"):
        return list(_walk_zip(root, spec.extensions))
    return list(_walk_dir(root, spec.extensions, spec.name))


def _split_of(path: str, pretrain_fraction: float) -> CorpusSplit:
    h = int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], "big") / 2**32
    return CorpusSplit.PRETRAIN if h < pretrain_fraction else CorpusSplit.TASK


def load_corpus(
    language: str,
    *,
    split: CorpusSplit | str = CorpusSplit.TASK,
    max_functions: int | None = 2000,
    seed: int = 0,
    root: str | None = None,
    min_tokens: int = 12,
    max_tokens: int = 320,
    pretrain_fraction: float = 0.5,
    max_per_file: int = 40,
) -> Corpus:
    """Read functions of ``language`` from its offline source (see module doc).

    Unreadable, empty, non-UTF-8 and over-large files are skipped and counted in
    ``Corpus.stats``; so are functions that do not parse or fall outside
    ``[min_tokens, max_tokens]`` code tokens. Duplicate function bodies are dropped.

    Raises:
        ConfigError: unsupported language / split. InputError: no source on this machine.
    """
    spec = check_language(language, "load_corpus")
    try:
        split = CorpusSplit(split)
    except ValueError:
        raise ConfigError(
            f"load_corpus: split must be one of {[s.value for s in CorpusSplit]}, got {split!r}"
        ) from None
    if max_functions is not None and max_functions < 1:
        raise ConfigError(f"load_corpus: max_functions must be >= 1 or None, got {max_functions}")
    files = list_sources(spec.name, root)
    root = root or source_root(spec.name) or ""
    if split is not CorpusSplit.ALL:
        files = [f for f in files if _split_of(f.path, pretrain_fraction) is split]
    random.Random(seed).shuffle(files)
    stats = ExtractStats()
    functions: list[CodeFunction] = []
    seen: set[str] = set()
    for source in files:
        if max_functions is not None and len(functions) >= max_functions:
            break
        try:
            data = source.read()
        except OSError:
            stats.unreadable_files += 1
            continue
        if len(data) > MAX_FILE_BYTES:
            stats.skipped_size += 1
            continue
        if not data.strip():
            stats.empty_files += 1
            continue
        try:
            result = extract_functions(
                data, spec.name, path=source.path, min_tokens=min_tokens, max_tokens=max_tokens
            )
        except InputError:
            stats.undecodable_files += 1
            continue
        stats.merge(result.stats)
        kept = 0
        for fn in result.functions:
            if fn.code in seen or kept >= max_per_file:
                continue
            seen.add(fn.code)
            functions.append(fn)
            kept += 1
            if max_functions is not None and len(functions) >= max_functions:
                break
    return Corpus(spec.name, split.value, functions, stats, root)
