"""DeepPrompt: per-layer prompts in prepend (VPT-deep) and prefix (key/value) mode."""

from __future__ import annotations

import pytest
import torch

from polyprompt.core.errors import ConfigError, InputError
from polyprompt.core.prompts.deep import DeepPrompt, DeepPromptMode


def test_prepend_shapes_all_layers() -> None:
    deep = DeepPrompt(num_layers=4, num_tokens=3, dim=8)
    assert deep.mode is DeepPromptMode.PREPEND
    assert deep.layers == (0, 1, 2, 3)
    assert deep.weight.shape == (4, 3, 8)
    out = deep(2, batch_size=5)
    assert out.shape == (5, 3, 8)
    assert torch.equal(out[4], deep.weight[2])


def test_prefix_shapes_and_key_value_layout() -> None:
    deep = DeepPrompt(12, 5, 8, mode="prefix", layers=[4, 2, 3])
    assert deep.layers == (2, 3, 4)  # sorted
    assert deep.weight.shape == (3, 2, 5, 8)
    out = deep(3, batch_size=2)
    assert out.shape == (2, 2, 5, 8)
    assert torch.equal(out[1, 0], deep.weight[1, 0])  # key prefix of layer 3
    assert torch.equal(out[1, 1], deep.weight[1, 1])  # value prefix of layer 3
    assert deep.has(2) and not deep.has(0) and not deep.has(11)
    d = deep.as_dict(2)
    assert list(d) == [2, 3, 4] and all(v.shape == (2, 2, 5, 8) for v in d.values())


def test_gradients_reach_only_the_asked_layer() -> None:
    deep = DeepPrompt(3, 2, 4)
    deep(1, 2).sum().backward()
    grad = deep.weight.grad
    assert grad is not None
    assert grad[1].abs().sum() > 0
    assert grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0


def test_init_std() -> None:
    torch.manual_seed(0)
    deep = DeepPrompt(4, 50, 64, init_std=0.5)
    assert deep.weight.std().item() == pytest.approx(0.5, rel=0.1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_layers": 0, "num_tokens": 1, "dim": 4},
        {"num_layers": 2, "num_tokens": 0, "dim": 4},
        {"num_layers": 2, "num_tokens": 1, "dim": 0},
        {"num_layers": 2, "num_tokens": 1, "dim": 4, "mode": "suffix"},
        {"num_layers": 2, "num_tokens": 1, "dim": 4, "layers": [2]},
        {"num_layers": 2, "num_tokens": 1, "dim": 4, "layers": [-1]},
        {"num_layers": 2, "num_tokens": 1, "dim": 4, "layers": [1, 1]},
        {"num_layers": 2, "num_tokens": 1, "dim": 4, "layers": []},
        {"num_layers": 2, "num_tokens": 1, "dim": 4, "layers": 1},
        {"num_layers": 2, "num_tokens": 1, "dim": 4, "dropout": -0.1},
    ],
)
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        DeepPrompt(**kwargs)


def test_bad_forward_raises() -> None:
    deep = DeepPrompt(6, 2, 4, layers=[0, 1])
    with pytest.raises(InputError, match="layer 3 has no prompt"):
        deep(3, 1)
    with pytest.raises(InputError):
        deep(-1, 1)
    with pytest.raises(InputError, match="batch_size"):
        deep(0, 0)
    with pytest.raises(InputError):
        deep("0", 1)
