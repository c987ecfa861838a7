from __future__ import annotations

import pytest
import torch


def tiny_backbone(seed: int = 0, in_chans: int = 1, img: int = 16):
    """A real timm VisionTransformer, tiny: 16x16 grey images, 4 tokens + CLS, 5 blocks."""
    from timm.models.vision_transformer import VisionTransformer

    from polyprompt.core import TimmViTAdapter

    torch.manual_seed(seed)
    vit = VisionTransformer(
        img_size=img, patch_size=8, in_chans=in_chans, num_classes=0, embed_dim=32, depth=5,
        num_heads=2, mlp_ratio=2.0,
    )  # fmt: skip
    return TimmViTAdapter(vit.eval())


@pytest.fixture
def backbone():
    return tiny_backbone()


@pytest.fixture
def make_backbone():
    return tiny_backbone
