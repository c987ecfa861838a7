"""PromptGenerator base class and MLPPromptGenerator."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from polyprompt.core.errors import ConfigError, InputError, NonFiniteError, ShapeError
from polyprompt.core.prompts.generator import MLPPromptGenerator, PromptGenerator


class WrongShape(PromptGenerator):
    def generate(self, features: torch.Tensor, **context: Any) -> torch.Tensor:
        return torch.zeros(features.shape[0], self.num_tokens + 1, self.dim)


class NotATensor(PromptGenerator):
    def generate(self, features: torch.Tensor, **context: Any) -> Any:
        return [1, 2]


class SeriesOnly(PromptGenerator):
    input_ranks = (3,)

    def generate(self, features: torch.Tensor, scale: float = 1.0, **context: Any):
        return features[:, : self.num_tokens, : self.dim] * scale


def test_mlp_shapes_rank2_and_rank3() -> None:
    gen = MLPPromptGenerator(in_dim=12, num_tokens=4, dim=6, hidden=16)
    assert gen(torch.randn(3, 12)).shape == (3, 4, 6)
    assert gen(torch.randn(3, 9, 12)).shape == (3, 4, 6)


def test_mlp_rank3_is_mean_pool_and_mask_excludes_padding() -> None:
    torch.manual_seed(0)
    gen = MLPPromptGenerator(8, 2, 4, hidden=8)
    x = torch.randn(2, 5, 8)
    assert torch.allclose(gen(x), gen(x.mean(dim=1)), atol=1e-6)
    mask = torch.tensor([[True, True, False, False, False]] * 2)
    padded = x.clone()
    padded[:, 2:] = 100.0  # padding must not matter
    assert torch.allclose(gen(padded, mask=mask), gen(x[:, :2].mean(dim=1)), atol=1e-5)
    with pytest.raises(InputError, match="bool"):
        gen(x, mask=mask.float())
    with pytest.raises(ShapeError, match="mask"):
        gen(x, mask=mask[:, :3])


def test_prompts_are_instance_conditioned_and_grads_reach_generator_only() -> None:
    gen = MLPPromptGenerator(8, 2, 4, hidden=8)
    x = torch.randn(2, 8)
    out = gen(x)
    assert not torch.allclose(out[0], out[1])
    out.sum().backward()
    assert all(p.grad is not None for p in gen.parameters())
    assert x.grad is None


def test_context_is_passed_to_generate() -> None:
    gen = SeriesOnly(num_tokens=2, dim=3)
    x = torch.randn(2, 4, 5)
    assert torch.equal(gen(x, scale=2.0), x[:, :2, :3] * 2.0)
    with pytest.raises(ShapeError, match="SeriesOnly.forward"):
        gen(torch.randn(2, 5))


def test_wrong_output_shape_names_subclass() -> None:
    with pytest.raises(ShapeError, match=r"WrongShape\.generate"):
        WrongShape(2, 4)(torch.randn(3, 4))
    with pytest.raises(ShapeError, match=r"NotATensor\.generate"):
        NotATensor(2, 4)(torch.randn(3, 4))


def test_base_is_abstract() -> None:
    with pytest.raises(TypeError):
        PromptGenerator(1, 4)  # type: ignore[abstract]


def test_bad_inputs_raise() -> None:
    gen = MLPPromptGenerator(8, 2, 4)
    with pytest.raises(ShapeError, match="dimension -1 must be 8"):
        gen(torch.randn(2, 7))
    with pytest.raises(ShapeError):
        gen(torch.randn(2, 3, 4, 8))
    with pytest.raises(ShapeError):
        gen(torch.randn(0, 8))
    with pytest.raises(NonFiniteError):
        gen(torch.full((2, 8), float("inf")))
    with pytest.raises(InputError):
        gen([[0.0] * 8])


@pytest.mark.parametrize(
    "args", [(0, 2, 4, 8), (8, 0, 4, 8), (8, 2, 0, 8), (8, 2, 4, 0), (8, 2.0, 4, 8)]
)
def test_bad_config_raises(args: tuple) -> None:
    with pytest.raises(ConfigError):
        MLPPromptGenerator(*args)
