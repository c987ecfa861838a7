"""DVPT: the paper's module, the official-code variant, placement, gradients, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from polyprompt.core import FeatureCache, create, load_prompt, save_prompt, trainable_report
from polyprompt.core.errors import ConfigError, InputError
from polyprompt.medical.dvpt import DVPT, DVPTConfig, DynamicPromptModule, default_hidden


def _open_gates(model: DVPT, value: float = 0.5) -> None:
    with torch.no_grad():
        for m in model.dvpt:
            m.gate.fill_(value)


def test_module_matches_reference_attention(vits):
    torch.manual_seed(0)
    m = DynamicPromptModule(dim=16, hidden=4, num_prompts=3, gate_init=1.0)
    h = torch.randn(2, 7, 16)
    z = m.act(m.down(h))
    q = m.prompts.expand(2, -1, -1)
    dyn = torch.nn.functional.scaled_dot_product_attention(q, z, z)  # prompts query features
    back = torch.nn.functional.scaled_dot_product_attention(z, dyn, dyn)  # features read back
    assert torch.allclose(m(h), m.up(back), atol=1e-5)
    assert torch.allclose(m.dynamic_prompts(h), dyn, atol=1e-5)


def test_dynamic_prompts_depend_on_the_sample(vits):
    torch.manual_seed(0)
    m = DynamicPromptModule(dim=16, hidden=4, num_prompts=3)
    a, b = m.dynamic_prompts(torch.randn(1, 7, 16)), m.dynamic_prompts(torch.randn(1, 7, 16))
    assert a.shape == (1, 3, 4) and not torch.allclose(a, b)


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("kind", ["timm", "monai"])
def test_shapes_and_gradients_reach_only_dvpt(variant, kind, vits):
    bb = vits[kind]()
    model = create("dvpt", bb, num_classes=3, variant=variant, hidden=4, num_prompts=5)
    _open_gates(model)
    x = torch.rand(2, 1, 32, 32) if bb.spatial_dims == 2 else torch.rand(2, 1, 16, 16, 16)
    model.train()
    assert not model.backbone.training  # frozen backbone stays in eval mode
    out = model(x)
    assert out.shape == (2, 3)
    out.sum().backward()
    for name, p in model.named_parameters():
        if name.startswith("backbone."):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name


def test_paper_variant_is_the_frozen_model_at_init(timm_vit):
    model = create("dvpt", timm_vit, num_classes=2, hidden=4)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x), timm_vit.forward_features(x), atol=1e-6)
        _open_gates(model)
        assert not torch.allclose(model.forward_features(x), timm_vit.forward_features(x))


def test_official_variant_pools_cls_and_prompts(timm_vit):
    model = create("dvpt", timm_vit, num_classes=2, variant="official", hidden=4, num_prompts=6)
    x = torch.rand(2, 1, 32, 32)
    bb = timm_vit
    with torch.no_grad():
        tokens = bb.embed(x)
        prompt = (model.prompt + model.prompt_pos).expand(2, -1, -1)
        seq = torch.cat([tokens[:, :1], prompt, tokens[:, 1:]], 1)
        ref = bb.norm(bb.forward_blocks(seq))[:, :7].mean(1)  # gates 0: blocks unchanged
        assert torch.allclose(model.forward_features(x), ref, atol=1e-5)
    assert model.num_prompt_tokens == 6 and len(model.dvpt) == 2
    assert model.dvpt[0].hidden == 4 and model.dvpt[0].learnable_scale


def test_placement_per_layer_and_shared(vits):
    bb = vits["timm"](depth=6)
    shared = create("dvpt", bb, num_classes=2, hidden=4)
    assert len(shared.dvpt) == 2 and [shared.module_index(i) for i in range(6)] == [
        0,
        0,
        0,
        1,
        1,
        1,
    ]
    per_layer = create("dvpt", vits["timm"](depth=6), num_classes=2, hidden=4, share_every=1)
    assert len(per_layer.dvpt) == 6
    upper = create(
        "dvpt", vits["timm"](depth=6), num_classes=2, hidden=4, first_block=4, share_every=1
    )
    assert [upper.module_index(i) for i in range(6)] == [None] * 4 + [0, 1]
    assert upper.cache_point == 4


def test_feature_cache_path_equals_direct(vits):
    model = create("dvpt", vits["timm"](depth=6), num_classes=2, hidden=4, first_block=3)
    _open_gates(model)
    cache = FeatureCache(model.backbone, model.cache_point, in_memory=True)
    x = torch.rand(5, 1, 32, 32)
    tokens = cache.tokens(x, batch_size=4)
    with torch.no_grad():
        assert torch.allclose(model.forward_from_tokens(tokens, 3), model(x), atol=1e-5)
        assert torch.allclose(
            model.forward_from_tokens(cache.backbone.embed(x), 0), model(x), atol=1e-5
        )
    with pytest.raises(InputError, match="cannot start from cached tokens"):
        model.forward_from_tokens(tokens, 5)


def test_save_load_identical_outputs(tmp_path, vits):
    model = create("dvpt", vits["timm"](), num_classes=2, hidden=4)
    _open_gates(model, 0.3)
    with torch.no_grad():
        for p in model.dvpt.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_prompt(model, tmp_path / "ckpt")
    fresh = create("dvpt", vits["timm"](), num_classes=2, hidden=4)
    load_prompt(fresh, tmp_path / "ckpt")
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))


def test_budget_on_the_example_backbone(vits):
    """The example's backbone (64-d, 6 blocks) with its DVPT settings: <= 0.5% trainable,
    prompt checkpoint <= 1% of the backbone's bytes."""
    from polyprompt.medical.pretrain import BackboneConfig

    bb = BackboneConfig().build()
    model = create("dvpt", bb, num_classes=2)  # defaults: hidden = default_hidden(64) = 4
    rep = trainable_report(model)
    assert default_hidden(64) == 4 and default_hidden(768) == 20
    assert rep.percent_of_backbone <= 0.5
    backbone_bytes = 4 * rep.backbone_params
    assert rep.checkpoint_bytes <= 0.01 * backbone_bytes


def test_dynamic_prompts_accessor(timm_vit, vits):
    model = create("dvpt", timm_vit, num_classes=2, hidden=4, num_prompts=5)
    dyn = model.dynamic_prompts(torch.rand(2, 1, 32, 32), block=4)
    assert dyn.shape == (2, 5, 4)
    official = create("dvpt", vits["timm"](), num_classes=2, variant="official", hidden=4)
    with pytest.raises(ConfigError):
        official.dynamic_prompts(torch.rand(1, 1, 32, 32))


def test_bad_configs(vits):
    with pytest.raises(ConfigError, match="num_prompts"):
        DVPTConfig(num_classes=2, num_prompts=0)
    with pytest.raises(ConfigError, match="share_every"):
        DVPTConfig(num_classes=2, share_every=0)
    with pytest.raises(ConfigError, match="variant"):
        DVPTConfig(num_classes=2, variant="other")
    assert DVPTConfig(num_classes=2, variant="official").num_prompts == 50
    assert DVPTConfig(num_classes=2).num_prompts == 10
    with pytest.raises(InputError, match="first_block"):
        create("dvpt", vits["timm"](depth=2), num_classes=2, first_block=2)
    assert math.ceil(6 / 3) == len(create("dvpt", vits["timm"](), num_classes=2).dvpt)
