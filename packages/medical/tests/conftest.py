"""Shared fixtures of the polyprompt-medical tests: one thread, tiny real timm / MONAI ViTs."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    """Caches go to a fresh folder: no test depends on a cache that already exists."""
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path_factory.getbasetemp() / "pp-home"))


def make_timm_vit(in_chans: int = 1, depth: int = 6, dim: int = 32, img: int = 32, seed: int = 0):
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from polyprompt.medical.backbones import MedicalViTAdapter

    torch.manual_seed(seed)
    vit = VisionTransformer(
        img_size=img,
        patch_size=8,
        in_chans=in_chans,
        embed_dim=dim,
        depth=depth,
        num_heads=4,
        num_classes=0,
    )
    return MedicalViTAdapter(vit.eval())


def make_monai_vit(depth: int = 3, dim: int = 32, cls: bool = True, seed: int = 0):
    import torch
    from monai.networks.nets import ViT

    from polyprompt.medical.backbones import MonaiViTAdapter

    torch.manual_seed(seed)
    vit = ViT(
        in_channels=1,
        img_size=16,
        patch_size=8,
        hidden_size=dim,
        mlp_dim=2 * dim,
        num_layers=depth,
        num_heads=4,
        classification=cls,
        spatial_dims=3,
        qkv_bias=True,
    )
    return MonaiViTAdapter(vit.eval())


@pytest.fixture
def timm_vit():
    return make_timm_vit()


@pytest.fixture
def monai_vit():
    return make_monai_vit()


@pytest.fixture
def vits():
    """``{"timm": make_timm_vit, "monai": make_monai_vit}`` factories (importlib mode: tests
    cannot import conftest)."""
    return {"timm": make_timm_vit, "monai": make_monai_vit}
