"""PromptConfig validation helpers: is_int / is_number / require_ints."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from polyprompt.core.config import PromptConfig, is_int, is_number
from polyprompt.core.errors import ConfigError


@pytest.mark.parametrize("value", [0, 7, -3, np.int64(4), np.int32(1)])
def test_is_int_accepts_python_and_numpy_integers(value):
    assert is_int(value)


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None, np.float32(2.0)])
def test_is_int_rejects_bools_floats_and_strings(value):
    assert not is_int(value)


@pytest.mark.parametrize("value", [0, 1.5, -2, np.float32(0.1), np.int64(3)])
def test_is_number_accepts_finite_reals(value):
    assert is_number(value)


@pytest.mark.parametrize("value", [True, math.nan, math.inf, -math.inf, "1.0", None, 1j])
def test_is_number_rejects_bools_non_finite_and_non_reals(value):
    assert not is_number(value)


@dataclass
class _Sizes(PromptConfig):
    epochs: int = 2
    warmup: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_ints("epochs")
        self.require_ints("warmup", minimum=0)


def test_require_ints_passes_valid_values():
    assert _Sizes(epochs=np.int64(3), warmup=0).epochs == 3


@pytest.mark.parametrize(
    ("changes", "field", "minimum"),
    [
        ({"epochs": 0}, "epochs", 1),
        ({"epochs": 2.0}, "epochs", 1),
        ({"epochs": True}, "epochs", 1),
        ({"warmup": -1}, "warmup", 0),
    ],
)
def test_require_ints_names_the_field_and_the_bound(changes, field, minimum):
    with pytest.raises(ConfigError, match=rf"_Sizes\.{field}: must be an int >= {minimum}"):
        _Sizes(**changes)


@dataclass
class _Lists(PromptConfig):
    names: tuple[str, ...] = ("a",)
    maybe: tuple[int, ...] | None = None
    plain: list[int] | None = None


def test_lists_become_the_declared_tuples():
    cfg = _Lists(names=["x", "y"], maybe=[1, 2], plain=[3])
    assert cfg.names == ("x", "y") and cfg.maybe == (1, 2)
    assert cfg.plain == [3]  # a list-typed field stays a list
    assert _Lists.from_json(cfg.to_json()) == cfg
