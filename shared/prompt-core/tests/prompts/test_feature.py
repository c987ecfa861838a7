"""FeaturePrompt: GPF and GPF-plus, optional node mask."""

from __future__ import annotations

import math

import pytest
import torch

from polyprompt.core.errors import ConfigError, InputError, NonFiniteError, ShapeError
from polyprompt.core.prompts.feature import FeaturePrompt, FeaturePromptKind


def test_gpf_adds_one_vector_to_every_node() -> None:
    gpf = FeaturePrompt(dim=16)
    assert gpf.kind is FeaturePromptKind.GPF and gpf.prompt.shape == (1, 16)
    x = torch.randn(7, 16)
    out = gpf(x)
    assert out.shape == x.shape
    assert torch.allclose(out - x, gpf.prompt.expand(7, 16))
    # glorot bound sqrt(6 / (1 + d))
    assert gpf.prompt.abs().max() <= math.sqrt(6 / 17)


def test_gpf_plus_differs_per_node_and_matches_formula() -> None:
    torch.manual_seed(0)
    plus = FeaturePrompt(16, kind="gpf_plus", num_basis=5)
    assert plus.basis.shape == (5, 16)
    x = torch.randn(6, 16)
    delta = plus(x) - x
    assert not torch.allclose(delta[0], delta[1])
    a = torch.softmax(x @ plus.score.weight.T + plus.score.bias, dim=-1)
    assert torch.allclose(delta, a @ plus.basis, atol=1e-6)
    assert torch.allclose(plus.node_prompts(x), delta, atol=1e-6)


def test_batched_input() -> None:
    plus = FeaturePrompt(8, "gpf_plus", num_basis=3)
    x = torch.randn(2, 5, 8)
    out = plus(x)
    assert out.shape == (2, 5, 8)
    assert torch.allclose(out[1], plus(x[1]), atol=1e-6)


@pytest.mark.parametrize("kind", ["gpf", "gpf_plus"])
def test_mask_prompts_only_chosen_nodes(kind: str) -> None:
    fp = FeaturePrompt(8, kind)
    x = torch.randn(5, 8)
    mask = torch.tensor([True, False, True, False, False])
    out = fp(x, mask=mask)
    assert torch.equal(out[~mask], x[~mask])
    assert not torch.allclose(out[mask], x[mask])


@pytest.mark.parametrize("kind", ["gpf", "gpf_plus"])
def test_gradients_reach_prompt_params_only(kind: str) -> None:
    fp = FeaturePrompt(8, kind)
    frozen = torch.nn.Linear(8, 1).requires_grad_(False)
    frozen(fp(torch.randn(4, 8))).sum().backward()
    assert all(p.grad is not None for p in fp.parameters())
    assert frozen.weight.grad is None


def test_bad_inputs_raise() -> None:
    fp = FeaturePrompt(8)
    with pytest.raises(ShapeError):
        fp(torch.randn(8))
    with pytest.raises(ShapeError, match="must be 8"):
        fp(torch.randn(3, 7))
    with pytest.raises(NonFiniteError):
        fp(torch.full((3, 8), float("nan")))
    with pytest.raises(InputError, match="floating"):
        fp(torch.ones(3, 8, dtype=torch.long))
    with pytest.raises(ShapeError, match="mask"):
        fp(torch.randn(3, 8), mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ShapeError, match="mask"):
        fp(torch.randn(3, 8), mask=torch.ones(3, 1, dtype=torch.bool))
    with pytest.raises(InputError, match="bool"):
        fp(torch.randn(3, 8), mask=torch.ones(3))


@pytest.mark.parametrize(
    "kwargs",
    [{"dim": 0}, {"dim": 4, "kind": "gpf++"}, {"dim": 4, "kind": "gpf_plus", "num_basis": 0}],
)
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        FeaturePrompt(**kwargs)
