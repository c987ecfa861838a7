"""PixelPrompt: patch placement, padding frame, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from polyprompt.core.errors import ConfigError, InputError, NonFiniteError, ShapeError
from polyprompt.core.prompts.pixel import PatchPosition, PixelPrompt


def _ones_(module: PixelPrompt) -> PixelPrompt:
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(1.0)
    return module


def test_zero_init_is_identity() -> None:
    pp = PixelPrompt(32, patch_size=8)
    assert pp.patches.shape == (5, 3, 8, 8)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(pp(x), x)


def test_patch_placement_corners_and_centre() -> None:
    pp = _ones_(PixelPrompt((20, 30), channels=2, patch_size=(4, 6)))
    canvas = pp.canvas()
    assert canvas.shape == (1, 2, 20, 30)
    expected = torch.zeros(2, 20, 30)
    expected[:, 0:4, 0:6] = 1  # top_left
    expected[:, 0:4, 24:30] = 1  # top_right
    expected[:, 16:20, 0:6] = 1  # bottom_left
    expected[:, 16:20, 24:30] = 1  # bottom_right
    expected[:, 8:12, 12:18] = 1  # centre ((20-4)//2, (30-6)//2)
    assert torch.equal(canvas[0], expected)
    x = torch.zeros(1, 2, 20, 30)
    assert torch.equal(pp(x)[0], expected)


def test_subset_of_positions() -> None:
    pp = _ones_(PixelPrompt(16, patch_size=4, positions=["center", PatchPosition.TOP_RIGHT]))
    assert pp.patches.shape[0] == 2
    nz = pp.canvas()[0, 0].nonzero()
    rows, cols = nz[:, 0], nz[:, 1]
    top_right = (rows < 4) & (cols >= 12)
    centre = (rows >= 6) & (rows < 10) & (cols >= 6) & (cols < 10)
    assert bool((top_right | centre).all()) and len(nz) == 32


def test_padding_frame() -> None:
    pp = _ones_(PixelPrompt(10, channels=1, mode="padding", pad_size=2))
    canvas = pp.canvas()[0, 0]
    assert canvas.shape == (10, 10)
    assert canvas[2:8, 2:8].abs().sum() == 0  # inside untouched
    frame = torch.ones(10, 10)
    frame[2:8, 2:8] = 0
    assert torch.equal(canvas, frame)


def test_random_init() -> None:
    torch.manual_seed(0)
    pp = PixelPrompt(64, mode="padding", pad_size=8, init="random", init_std=1.0)
    assert pp.pad_up.std().item() == pytest.approx(1.0, rel=0.2)
    x = torch.zeros(1, 3, 64, 64)
    assert pp(x)[0, :, 8:56, 8:56].abs().sum() == 0


@pytest.mark.parametrize("mode", ["patches", "padding"])
def test_gradients_reach_prompt_params_only(mode: str) -> None:
    pp = PixelPrompt(16, mode=mode, patch_size=4, pad_size=2)
    x = torch.rand(2, 3, 16, 16)
    frozen = torch.nn.Conv2d(3, 1, 3).requires_grad_(False)
    frozen(pp(x)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pp.parameters())
    assert frozen.weight.grad is None and x.grad is None


def test_bad_images_raise() -> None:
    pp = PixelPrompt(16, patch_size=4)
    with pytest.raises(ShapeError):
        pp(torch.rand(3, 16, 16))
    with pytest.raises(ShapeError, match="dimension 1 must be 3"):
        pp(torch.rand(1, 1, 16, 16))
    with pytest.raises(ShapeError, match="dimension 2 must be 16"):
        pp(torch.rand(1, 3, 15, 16))
    with pytest.raises(ShapeError, match="dimension 3 must be 16"):
        pp(torch.rand(1, 3, 16, 17))
    with pytest.raises(NonFiniteError):
        pp(torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(InputError, match="floating"):
        pp(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 32, "patch_size": 64},
        {"image_size": (32, 100), "patch_size": (16, 101)},
        {"image_size": 0},
        {"image_size": (1, 2, 3)},
        {"image_size": 32, "channels": 0},
        {"image_size": 32, "mode": "frame"},
        {"image_size": 32, "init": "ones"},
        {"image_size": 32, "patch_size": 4, "positions": ["middle"]},
        {"image_size": 32, "patch_size": 4, "positions": []},
        {"image_size": 32, "patch_size": 4, "positions": ["center", "center"]},
        {"image_size": 32, "patch_size": 4, "positions": "center"},
        {"image_size": 32, "mode": "padding", "pad_size": 16},
        {"image_size": 32, "mode": "padding", "pad_size": 0},
    ],
)
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PixelPrompt(**kwargs)
