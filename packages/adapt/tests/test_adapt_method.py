import pytest
import torch

from polyprompt.adapt.backbone import SegFormerBackbone
from polyprompt.adapt.method import CoDA, CoDAConfig
from polyprompt.adapt.savpt import SAVPT
from polyprompt.core import create, load_prompt, save_prompt
from polyprompt.core.errors import ConfigError, InputError, NonFiniteError, ShapeError


def _model(tiny_mit, **kw) -> CoDA:
    torch.manual_seed(0)
    cfg = CoDAConfig(image_size=32, patch_size=4, **kw)
    return CoDA(SegFormerBackbone(tiny_mit, num_classes=7), cfg)


def test_savpt_starts_as_identity_and_routes_by_severity(tiny_mit):
    model = _model(tiny_mit)
    plain = model.backbone.eval()
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model(x), plain(x), atol=1e-6)  # zero-init prompts + adapter
    s = model.savpt
    assert s.easy_prompt.patches.shape == (5, 3, 4, 4) and s.hard_prompt.patches.shape == (
        5,
        3,
        4,
        4,
    )
    assert s.adapter.easy.hidden == 16 // 4  # stage-1 width / 4 (paper: 64 -> 16)
    model.train()
    x = torch.rand(2, 3, 32, 32)
    loss = model(x, hard=torch.tensor([False, False])).sum()
    loss.backward()
    assert s.easy_prompt.patches.grad.abs().sum() > 0
    assert s.hard_prompt.patches.grad is None or s.hard_prompt.patches.grad.abs().sum() == 0
    assert s.adapter.easy.up.weight.grad.abs().sum() > 0
    assert s.adapter.hard.up.weight.grad is None or s.adapter.hard.up.weight.grad.abs().sum() == 0


def test_dark_images_use_the_hard_prompts(tiny_mit):
    model = _model(tiny_mit)
    with torch.no_grad():
        model.savpt.hard_prompt.patches.fill_(0.5)
    bright, dark = torch.full((1, 3, 32, 32), 0.8), torch.full((1, 3, 32, 32), 0.02)
    assert model.severity(torch.cat([bright, dark])).tolist() == [False, True]
    seen = []
    model.savpt.prompt_images = lambda x, h, f=model.savpt.prompt_images: (
        seen.append(h.tolist()) or f(x, h)
    )
    model(torch.cat([bright, dark]))
    assert seen == [[False, True]]


def test_prompt_only_training_reaches_only_prompts(tiny_mit):
    model = _model(tiny_mit, train_backbone=False, train_classifier=False)
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    for name, p in model.named_parameters():
        if name.startswith("backbone."):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad, name
    assert model.savpt_parameters() == sum(p.numel() for p in model.savpt.parameters())
    assert (
        model.savpt_parameters() == 2 * 5 * 3 * 4 * 4 + 2 * (16 * 4 + 4 + 4 * 16 + 16) + 2 * 49 + 1
    )


def test_bad_inputs_raise_our_errors(tiny_mit):
    model = _model(tiny_mit)
    with pytest.raises(ShapeError, match="grayscale"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ShapeError, match="RGBA"):
        model(torch.rand(1, 4, 32, 32))
    nan = torch.rand(1, 3, 32, 32)
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError):
        model(nan)
    with pytest.raises(InputError, match="float"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ShapeError, match="built for 32x32"):
        model(torch.rand(1, 3, 64, 64))
    big = CoDA(model.backbone, CoDAConfig(image_size=128, patch_size=64))
    with pytest.raises(ShapeError, match="smaller than the prompt patches 64x64"):
        big(torch.rand(1, 3, 32, 32))
    with pytest.raises(ConfigError, match="patch_size"):
        CoDAConfig(image_size=32, patch_size=64)
    with pytest.raises(ShapeError, match="smaller than the prompt"):
        SAVPT(64, 16, patch_size=32).prompt_images(torch.rand(1, 3, 16, 16), torch.tensor([True]))


def test_registry_and_prompt_checkpoint_round_trip(tiny_mit, tmp_path):
    model = _model(tiny_mit, train_backbone=False)
    with torch.no_grad():
        for p in model.savpt.parameters():
            p.normal_()
    d = save_prompt(model, tmp_path / "ckpt")
    other = create("coda", model.backbone, image_size=32, patch_size=4, train_backbone=False)
    assert isinstance(other, CoDA)
    load_prompt(other, d)
    x = torch.rand(2, 3, 32, 32)
    model.eval(), other.eval()
    assert torch.equal(model(x), other(x))


def test_prompt_lr_multiplier_is_a_reparameterisation(tiny_mit):
    model = _model(tiny_mit, prompt_lr_mult=10.0)
    x = torch.rand(1, 3, 32, 32)
    hard = torch.tensor([True])
    assert torch.equal(model.savpt.prompt_images(x, hard), x)  # still the identity at init
    with torch.no_grad():
        model.savpt.hard_prompt.patches.fill_(0.01)
    out = model.savpt.prompt_images(x, hard)
    assert torch.allclose((out - x)[0, :, 0, 0], torch.full((3,), 0.1))  # 10 x theta
    assert model.savpt.adapter.hard.scale == 10.0
