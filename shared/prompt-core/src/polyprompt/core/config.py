"""Typed, validated method configurations with a JSON round trip.

Every method has one dataclass config deriving from :class:`PromptConfig`.
Validation happens in ``__post_init__`` and raises :class:`ConfigError` naming
the field.  Enums serialise by value.

Example::

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class MyConfig(PromptConfig):
    ...     num_tokens: int = 10
    ...     def __post_init__(self):
    ...         super().__post_init__()
    ...         self.require(self.num_tokens > 0, "num_tokens", "must be > 0")
    >>> MyConfig.from_json(MyConfig(num_tokens=4).to_json()).num_tokens
    4
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import numbers
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from polyprompt.core.errors import ConfigError

C = TypeVar("C", bound="PromptConfig")

__all__ = ["PromptConfig", "is_int", "is_number"]


def is_int(value: Any) -> bool:
    """``value`` is an integer (Python or NumPy), and not a ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """``value`` is a finite real number (int or float, Python or NumPy), and not a ``bool``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class PromptConfig:
    """Base class of all method configs.

    Subclasses add fields and extend ``__post_init__`` (call ``super().__post_init__()``).
    ``__post_init__`` turns a list given for a ``tuple``-typed field into a tuple and a
    value given for an ``Enum``-typed field into the enum member.
    ``method`` is filled in by the registry with the method's registered name.
    """

    method: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list) and _is_tuple_field(type(self), f):
                value = tuple(value)  # JSON / argparse lists -> the declared tuple
                object.__setattr__(self, f.name, value)
            enum_type = _enum_type(self, f)
            if enum_type is not None and not isinstance(value, enum_type):
                try:
                    setattr(self, f.name, enum_type(value))
                except ValueError:
                    choices = ", ".join(repr(e.value) for e in enum_type)
                    raise ConfigError(
                        f"{type(self).__name__}.{f.name}: {value!r} is not one of {choices}"
                    ) from None

    # -- validation helpers -------------------------------------------------
    def require(self, condition: bool, field: str, message: str) -> None:
        """Raise :class:`ConfigError` ``"<Config>.<field>: <message> (got <value>)"`` unless ``condition``."""
        if not condition:
            value = getattr(self, field, "?")
            raise ConfigError(f"{type(self).__name__}.{field}: {message} (got {value!r})")

    def require_ints(self, *fields: str, minimum: int = 1) -> None:
        """Each of ``fields`` must be an int (not a bool) ``>= minimum``."""
        for name in fields:
            value = getattr(self, name)
            self.require(is_int(value) and value >= minimum, name, f"must be an int >= {minimum}")

    # -- serialisation ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = _to_jsonable(value)
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                value = data[f.name]
                if isinstance(value, list) and _is_tuple_field(cls, f):
                    value = tuple(value)
                kwargs[f.name] = value
        return cls(**kwargs)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            from polyprompt.core.io import atomic_write_text

            atomic_write_text(Path(path), text)
        return text

    @classmethod
    def from_json(cls: type[C], text_or_path: str | Path) -> C:
        text = str(text_or_path)
        if isinstance(text_or_path, Path) or (not text.lstrip().startswith("{")):
            path = Path(text_or_path)
            if not path.is_file():
                raise ConfigError(f"{cls.__name__}.from_json: no such file {path}")
            text = path.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cls.__name__}.from_json: invalid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}.from_json: expected a JSON object")
        return cls.from_dict(data)

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def _resolved_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - unresolvable forward refs
        return {}


def _enum_type(obj: Any, f: dataclasses.Field) -> type[enum.Enum] | None:
    hint = _resolved_hints(type(obj)).get(f.name)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    return None


def _is_tuple_field(cls: type, f: dataclasses.Field) -> bool:
    hint = _resolved_hints(cls).get(f.name)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(typing.get_origin(a) is tuple or a is tuple for a in typing.get_args(hint))
    return origin is tuple or hint is tuple
