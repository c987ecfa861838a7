import pytest
import torch

from polyprompt.adapt.severity import DarkPixelRule, dark_fraction, severity_of
from polyprompt.core.errors import ConfigError, ShapeError


def _img_with_dark(fraction: float, size: int = 20) -> torch.Tensor:
    img = torch.full((3, size, size), 0.8)
    n = round(fraction * size * size)
    img.view(3, -1)[:, :n] = 30 / 255  # grey 30 < 40
    return img


def test_paper_rule_five_percent_of_pixels_below_40():
    imgs = torch.stack([_img_with_dark(0.04), _img_with_dark(0.05), _img_with_dark(0.5)])
    assert DarkPixelRule()(imgs).tolist() == [False, True, True]
    assert dark_fraction(imgs).tolist() == pytest.approx([0.04, 0.05, 0.5])


def test_grey_level_40_is_not_dark_and_official_code_fraction_option():
    img = torch.full((1, 3, 10, 10), 40 / 255)
    assert not DarkPixelRule()(img).item()  # strictly below 40
    half = _img_with_dark(0.10).unsqueeze(0)
    assert DarkPixelRule()(half).item()
    assert not DarkPixelRule(fraction=0.18)(half).item()  # filter_images.py's proportion


def test_rule_is_pluggable_and_validated():
    always_hard = lambda x: torch.ones(x.shape[0], dtype=torch.bool)  # noqa: E731
    assert severity_of(torch.rand(2, 3, 8, 8), always_hard).all()
    with pytest.raises(ConfigError, match="fraction"):
        DarkPixelRule(fraction=0)
    with pytest.raises(ShapeError):
        dark_fraction(torch.rand(2, 1, 8, 8))
