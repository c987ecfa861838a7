"""Method registry: ``@register_method(name)``, ``create(name, backbone, **cfg)``.

Installed modality packages announce their methods through the entry-point group
``polyprompt.methods`` (``name = "module:Class"``); they are imported only when
asked for, so nothing breaks when a modality is absent and ``import polyprompt.core``
stays light.

Example::

    >>> from polyprompt.core import create
    >>> model = create("vpt", backbone, num_classes=10, num_tokens=8, deep=True)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, TypeVar

from polyprompt.core.errors import DuplicateMethodError, UnknownMethodError

if TYPE_CHECKING:
    from polyprompt.core.config import PromptConfig
    from polyprompt.core.methods.base import PromptMethod

ENTRY_POINT_GROUP = "polyprompt.methods"
# The core's own methods (the same table as ``[project.entry-points."polyprompt.methods"]`` in
# its pyproject.toml, which a test checks). Entry points come only from *installed* metadata, so
# without this fallback ``create("vpt", ...)`` failed when the core ran from a source tree on
# ``PYTHONPATH`` (seen on a bare GPU machine: "unknown method 'vpt'; installed methods: ").
CORE_METHODS = {
    "linear_probe": "polyprompt.core.methods.classify:LinearProbe",
    "full_finetune": "polyprompt.core.methods.classify:FullFineTune",
    "vpt": "polyprompt.core.methods.classify:VPT",
    "prompt_tuning": "polyprompt.core.methods.text:SoftPromptLM",
}
T = TypeVar("T", bound=type)

_REGISTRY: dict[str, type] = {}


@dataclass(frozen=True)
class MethodInfo:
    """One method as ``polyprompt list`` shows it."""

    name: str
    target: str  # "module:Class"
    distribution: str  # installing distribution, or "(runtime)"
    loaded: bool


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def register_method(name: str):
    """Class decorator registering a :class:`PromptMethod` subclass under ``name``.

    Registering the same class twice (a re-import) is a no-op; a *different* class
    under a taken name raises :class:`DuplicateMethodError`.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register_method: method name must be an identifier, got {name!r}")

    def decorator(cls: T) -> T:
        existing = _REGISTRY.get(name)
        if existing is not None and _qualname(existing) != _qualname(cls):
            raise DuplicateMethodError(
                f"method {name!r} is already registered by {_qualname(existing)}; "
                f"refusing to register {_qualname(cls)} under the same name"
            )
        _REGISTRY[name] = cls
        cls.method_name = name  # type: ignore[attr-defined]
        return cls

    return decorator


def unregister_method(name: str) -> None:
    """Remove ``name`` (tests and interactive use)."""
    _REGISTRY.pop(name, None)


def _entry_points() -> dict[str, metadata.EntryPoint]:
    eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    for name, target in CORE_METHODS.items():  # source-tree fallback (see CORE_METHODS)
        eps.setdefault(name, metadata.EntryPoint(name, target, ENTRY_POINT_GROUP))
    return eps


def get_method(name: str) -> type[PromptMethod]:
    """The class registered as ``name``, importing its package on first use."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    eps = _entry_points()
    if name in eps:
        eps[name].load()  # importing the module runs @register_method
        if name in _REGISTRY:
            return _REGISTRY[name]
        raise UnknownMethodError(
            f"entry point {name!r} ({eps[name].value}) loaded but did not register a method "
            f"named {name!r}"
        )
    known = sorted(set(_REGISTRY) | set(eps))
    raise UnknownMethodError(f"unknown method {name!r}; installed methods: {', '.join(known)}")


def available_methods() -> list[MethodInfo]:
    """Every method that can be created, without importing the packages that provide them."""
    infos: dict[str, MethodInfo] = {}
    for name, ep in _entry_points().items():
        if getattr(ep, "dist", None) is not None:
            dist = ep.dist.name
        else:  # the source-tree fallback of CORE_METHODS has no distribution
            dist = "polyprompt-core" if name in CORE_METHODS else "?"
        infos[name] = MethodInfo(name, ep.value, dist, name in _REGISTRY)
    for name, cls in _REGISTRY.items():
        if name not in infos:
            infos[name] = MethodInfo(name, _qualname(cls), "(runtime)", True)
    return [infos[k] for k in sorted(infos)]


def installed_packages() -> list[tuple[str, str]]:
    """``(distribution, version)`` of every installed ``polyprompt-*`` distribution."""
    out = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or ""
        if name.lower().startswith("polyprompt-") and name.lower() != "polyprompt-workspace":
            out.add((name, dist.version))
    return sorted(out)


def create(
    name: str, backbone: Any, config: PromptConfig | None = None, **kwargs: Any
) -> PromptMethod:
    """Build method ``name`` around ``backbone``.

    Pass either a ready ``config`` or its fields as keyword arguments.
    """
    cls = get_method(name)
    if config is None:
        config = cls.config_class(**kwargs)
    elif kwargs:
        config = config.replace(**kwargs)
    return cls(backbone, config)
