"""POND: shapes, phases (gradients reach only the phase's parameters), losses, save/load, errors."""

from __future__ import annotations

import pytest
import torch

from polyprompt.core import create, get_method
from polyprompt.core.checkpoint import load_prompt, save_prompt
from polyprompt.core.errors import ConfigError, InputError
from polyprompt.timeseries.method import POND, PONDConfig, PONDGenerator


@pytest.fixture()
def pond(tst_config):
    torch.manual_seed(0)
    return create("pond", tst_config.build(), num_classes=7, num_sources=3, num_tokens=4)


def _grads(model, phase, **kw):
    model.set_phase(phase, **kw)
    model.zero_grad(set_to_none=True)
    x, y = torch.randn(8, 6, 128), torch.randint(0, 7, (8,))
    d = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]) if phase == "sources" else torch.full((8,), 3)
    # a fresh generator's output layer is zero: nudge it so every parameter gets a gradient
    with torch.no_grad():
        for g in model.generators:
            g.out.weight.normal_(std=0.01)
    model.losses(x, y, d)["total"].backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_registered_and_shapes(pond):
    assert get_method("pond") is POND
    x = torch.randn(5, 6, 128)
    assert pond(x).shape == (5, 7)  # target by default
    assert pond(x, domain=1).shape == (5, 7)
    parts = pond.forward_parts(x, torch.tensor([0, 1, 2, 3, 0]))
    assert parts["specific"].shape == (5, 4, 16)
    assert pond.num_prompt_tokens == 4


def test_gradients_reach_only_phase_parameters(pond):
    got = _grads(pond, "sources")
    assert not any(n.startswith("backbone.") for n in got)
    assert "common" in got and "domain_prompts.0" in got and "generators.2.inp.weight" in got
    assert "probe.weight" in got and "discriminator.weight" in got
    assert "domain_prompts.3" not in got and "head.weight" not in got
    got = _grads(pond, "target")
    assert got <= {
        n
        for n, _ in pond.named_parameters()
        if n.startswith(("domain_prompts.3", "generators.3", "probe", "discriminator"))
    }
    assert "domain_prompts.3" in got
    got = _grads(pond, "adapt", train_head=True)
    assert (
        "head.weight" in got
        and "common" not in got
        and not any(n.startswith("backbone.") for n in got)
    )
    got = _grads(pond, "adapt", adapt_backbone=True)
    assert any(n.startswith("backbone.") for n in got)


def test_frozen_backbone_stays_in_eval(pond):
    pond.set_phase("sources").train()
    assert pond.training and not pond.backbone.training


def test_loss_variants(tst_config):
    x, y, d = torch.randn(6, 6, 128), torch.randint(0, 7, (6,)), torch.tensor([0, 1, 0, 1, 0, 1])
    for kw in (
        {"fidelity": "margin"},
        {"fidelity": "none", "lambda_dd": 0.0},
        {"composition": "concat"},
        {"generator_input": "tokens", "lambda_orth": 0.1},
    ):
        m = POND(tst_config.build(), PONDConfig(num_classes=7, num_sources=2, num_tokens=3, **kw))
        out = m.losses(x, y, d)
        assert torch.isfinite(out["total"]) and out["logits"].shape == (6, 7)
    unl = m.losses(x, torch.full((6,), -1), d)  # unlabelled windows: only L_dd / L_orth
    assert float(unl["cls"].detach()) == 0.0


def test_init_target_from_copies_source(pond):
    x = torch.randn(4, 6, 128)
    with torch.no_grad():
        pond.generators[1].out.weight.normal_()
    pond.eval()
    pond.init_target_from(1)
    torch.testing.assert_close(pond(x, 1), pond(x))
    with pytest.raises(InputError):
        pond.init_target_from(3)


def test_reset_target_starts_from_common_prompt_only(pond):
    x = torch.randn(4, 6, 128)
    with torch.no_grad():
        pond.domain_prompts[3].normal_()
        pond.generators[3].out.weight.normal_()
        pond.domain_prompts[0].normal_()
    pond.eval()
    pond.reset_target()
    # the target slot adds nothing: its prompt is the common prompt alone
    torch.testing.assert_close(pond.forward_parts(x)["specific"], torch.zeros(4, 4, 16))
    torch.testing.assert_close(pond(x), pond.forward_common(x))
    assert pond.domain_prompts[0].abs().sum() > 0  # sources untouched


def test_unknown_domain_and_bad_inputs(pond):
    x = torch.randn(2, 6, 128)
    with pytest.raises(InputError, match="unknown domain"):
        pond(x, domain=7)
    with pytest.raises(InputError, match="unknown domain"):
        pond(x, domain=torch.tensor([0, -1]))
    with pytest.raises(InputError, match="integer"):
        pond(x, domain=torch.tensor([0.0, 1.0]))
    with pytest.raises(InputError):
        pond([[1.0]])
    with pytest.raises(ConfigError, match="num_sources"):
        PONDConfig(num_classes=7, num_sources=0)
    with pytest.raises(ConfigError):
        PONDConfig(num_classes=7, num_sources=2, composition="mix")


def test_generator_shapes():
    g = PONDGenerator(6, num_tokens=2, dim=8, hidden=4)
    assert g(torch.randn(3, 50, 6)).shape == (3, 2, 8)
    with pytest.raises(Exception, match="features"):
        g(torch.randn(3, 6))


def test_save_load_identical(pond, tmp_path, tst_config):
    with torch.no_grad():
        for p in pond.parameters():
            if not any(p is q for q in pond.backbone.parameters()):
                p.normal_(std=0.1)
    pond.set_phase("all").eval()
    x = torch.randn(3, 6, 128)
    ref = {d: pond(x, d) for d in range(4)}
    save_prompt(pond, tmp_path / "ckpt")
    other = create("pond", pond.backbone, num_classes=7, num_sources=3, num_tokens=4)
    other.set_phase("all")
    load_prompt(other, tmp_path / "ckpt")
    other.eval()
    for d in range(4):
        torch.testing.assert_close(other(x, d), ref[d])
    wrong = create("pond", pond.backbone, num_classes=7, num_sources=2, num_tokens=4).set_phase(
        "all"
    )
    with pytest.raises(Exception, match="shape|missing|mismatch|config"):
        load_prompt(wrong, tmp_path / "ckpt")
