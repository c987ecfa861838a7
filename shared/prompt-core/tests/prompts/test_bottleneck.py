"""Bottleneck adapter: identity at init, scale / gate modes, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from polyprompt.core.errors import ConfigError, NonFiniteError, ShapeError
from polyprompt.core.prompts.bottleneck import Bottleneck


def test_zero_init_up_residual_is_identity() -> None:
    ad = Bottleneck(16, 4, residual=True)
    assert ad.zero_init_up
    assert ad.up.weight.abs().sum() == 0 and ad.up.bias.abs().sum() == 0
    x = torch.randn(2, 5, 16)
    assert torch.equal(ad(x), x)
    assert torch.equal(Bottleneck(16, 4)(x), torch.zeros_like(x))


def test_any_leading_dims() -> None:
    ad = Bottleneck(8, 2, zero_init_up=False)
    for shape in [(8,), (3, 8), (2, 3, 8), (2, 3, 4, 8)]:
        assert ad(torch.randn(shape)).shape == shape


def test_fixed_scale_multiplies_output() -> None:
    torch.manual_seed(0)
    a = Bottleneck(8, 4, activation="relu", scale=1.0, zero_init_up=False)
    b = Bottleneck(8, 4, activation="relu", scale=0.1, zero_init_up=False)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 8)
    assert torch.allclose(b(x), 0.1 * a(x), atol=1e-6)


def test_learnable_gate_dvpt_style_trains() -> None:
    torch.manual_seed(0)
    ad = Bottleneck(8, 2, activation="quick_gelu", scale="learnable", residual=True)
    assert ad.gate.item() == 0.0 and not ad.zero_init_up  # DVPT: zero gate, default up
    x = torch.randn(4, 8)
    assert torch.equal(ad(x), x)  # zero gate: identity at init
    target = x + 1.0
    opt = torch.optim.Adam(ad.parameters(), lr=0.05)
    first = (ad(x) - target).pow(2).mean().item()
    for _ in range(50):
        opt.zero_grad()
        (ad(x) - target).pow(2).mean().backward()
        opt.step()
    assert ad.gate.item() != 0.0
    assert (ad(x) - target).pow(2).mean().item() < first


def test_learnable_gate_with_nonzero_init_keeps_zero_up() -> None:
    ad = Bottleneck(8, 2, scale="learnable", gate_init=1.0)
    assert ad.zero_init_up and ad.gate.item() == 1.0


def test_gradients_reach_adapter_only() -> None:
    ad = Bottleneck(8, 2, residual=True)
    frozen = torch.nn.Linear(8, 1).requires_grad_(False)
    x = torch.randn(3, 8)
    frozen(ad(x)).sum().backward()
    # zero-init up: the up projection gets a gradient, down gets one once up moves
    assert ad.up.weight.grad is not None and ad.up.weight.grad.abs().sum() > 0
    assert frozen.weight.grad is None and x.grad is None


def test_bad_inputs_raise() -> None:
    ad = Bottleneck(8, 2)
    with pytest.raises(ShapeError, match="must be 8"):
        ad(torch.randn(3, 7))
    with pytest.raises(ShapeError):
        ad(torch.tensor(1.0))
    with pytest.raises(NonFiniteError):
        ad(torch.full((2, 8), float("inf")))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dim": 0, "hidden": 2},
        {"dim": 8, "hidden": 0},
        {"dim": 8, "hidden": 2, "activation": "swish"},
        {"dim": 8, "hidden": 2, "scale": "gated"},
        {"dim": 8, "hidden": 2, "scale": float("nan")},
        {"dim": 8, "hidden": 2, "scale": True},
        {"dim": 8, "hidden": 2, "scale": "learnable", "zero_init_up": True},
        {"dim": 8, "hidden": 2, "scale": 0.0, "zero_init_up": True},
        {"dim": 8, "hidden": 2, "dropout": 1.5},
    ],
)
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        Bottleneck(**kwargs)
