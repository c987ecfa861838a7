"""MedicalViTAdapter / MonaiViTAdapter / prepare_image / block_forward."""

from __future__ import annotations

import pytest
import torch

from polyprompt.core.errors import ConfigError, InputError, NonFiniteError, ShapeError
from polyprompt.medical.backbones import block_forward, prepare_image


def test_monai_adapter_matches_monai_forward(monai_vit):
    x = torch.rand(2, 1, 16, 16, 16)
    with torch.no_grad():
        ref, _ = monai_vit.model(x)  # (B, 1 + N, D) normed tokens (no classification head call)
        ours = monai_vit.norm(monai_vit.forward_blocks(monai_vit.embed(x)))
    # MONAI's ViT.forward with classification=True returns head(x[:, 0]); compare tokens instead
    assert ours.shape == (2, 1 + 8, 32)
    head_in = ours[:, 0]
    assert torch.allclose(monai_vit.model.classification_head(head_in), ref, atol=1e-5)
    assert torch.equal(monai_vit.pool(ours), head_in)


def test_monai_adapter_without_cls_mean_pools(vits):
    bb = vits["monai"](cls=False)
    tokens = bb.norm(bb.forward_blocks(bb.embed(torch.rand(2, 1, 16, 16, 16))))
    assert bb.num_prefix_tokens == 0 and tokens.shape == (2, 8, 32)
    assert torch.allclose(bb.pool(tokens), tokens.mean(1))
    ident = bb.identity()
    assert ident["library"] == "monai" and ident["spatial_dims"] == 3


def test_monai_adapter_rejects_wrong_size_and_prefix(monai_vit):
    with pytest.raises(ShapeError, match="img_size"):
        monai_vit.embed(torch.rand(1, 1, 24, 24, 24))
    with pytest.raises(ConfigError, match="prefixes"):
        monai_vit.forward_blocks(torch.rand(1, 9, 32), prefix={0: torch.rand(1, 2, 1, 32)})


@pytest.mark.parametrize("kind", ["timm", "monai"])
def test_block_forward_zero_branch_is_the_block(kind, vits):
    bb = vits[kind]()
    x = torch.randn(2, 9, 32)
    blk = bb.blocks[0]
    with torch.no_grad():
        assert torch.allclose(block_forward(blk, x, torch.zeros_like), blk(x), atol=1e-6)
        seen = []
        block_forward(blk, x, lambda h: seen.append(h) or torch.zeros_like(h))
        assert seen[0].shape == x.shape and not torch.allclose(seen[0], x)


def test_block_forward_rejects_unknown_blocks(vits):
    with pytest.raises(ConfigError, match="cannot insert"):
        block_forward(torch.nn.Linear(4, 4), torch.randn(1, 2, 4), torch.zeros_like)


def test_channel_policy(vits):
    kw = {"spatial_dims": 2, "patch_size": (8, 8), "where": "t"}
    rgb = torch.rand(2, 3, 16, 16)
    grey = prepare_image(rgb, in_chans=1, **kw)
    expected = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    assert grey.shape == (2, 1, 16, 16) and torch.allclose(grey[:, 0], expected)
    back = prepare_image(grey, in_chans=3, **kw)
    assert back.shape == (2, 3, 16, 16) and torch.equal(back[:, 2], grey[:, 0])
    with pytest.raises(InputError, match="4 channels.*rejected"):
        prepare_image(torch.rand(2, 4, 16, 16), in_chans=3, **kw)


def test_dimensionality_errors_name_the_problem(timm_vit, monai_vit):
    with pytest.raises(ShapeError, match="2-D model.*3-D volumes"):
        timm_vit.embed(torch.rand(1, 1, 16, 32, 32))
    with pytest.raises(ShapeError, match="3-D model.*2-D images"):
        monai_vit.embed(torch.rand(1, 1, 16, 16))


def test_nonfinite_small_and_int_inputs(timm_vit):
    x = torch.rand(1, 1, 32, 32)
    x[0, 0, 3, 3] = float("nan")
    with pytest.raises(NonFiniteError):
        timm_vit.embed(x)
    x[0, 0, 3, 3] = float("inf")
    with pytest.raises(NonFiniteError):
        timm_vit.embed(x)
    with pytest.raises(ShapeError, match="smaller than one patch"):
        timm_vit.embed(torch.rand(1, 1, 4, 4))
    with pytest.raises(InputError, match="floating"):
        timm_vit.embed(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))


def test_rgb_input_to_grey_timm_model(timm_vit):
    rgb = torch.rand(2, 3, 32, 32)
    grey = 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]
    with torch.no_grad():
        assert torch.allclose(
            timm_vit.forward_features(rgb), timm_vit.forward_features(grey), atol=1e-5
        )
