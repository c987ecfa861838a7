"""Official ViT-B/16 checkpoint layout (timm keys) on a synthetic checkpoint; bad checkpoints."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from polyprompt.continual.backbone import load_vit_checkpoint
from polyprompt.core.errors import CheckpointError

SMALL = {"img_size": 32, "depth": 1}  # ViT-B/16 width and key layout, 1 block, 32 px


def _official_like_state():
    import timm

    torch.manual_seed(0)
    ref = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=1000, **SMALL)
    return ref, {k: v.contiguous() for k, v in ref.state_dict().items()}


def test_vit_b16_key_layout_loads_from_safetensors_and_torch_files(tmp_path):
    ref, state = _official_like_state()
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight",
            "blocks.0.mlp.fc2.bias", "norm.weight", "head.weight"} <= set(state)  # fmt: skip
    save_file(state, str(tmp_path / "model.safetensors"))
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pth")
    x = torch.rand(2, 3, 32, 32)
    ref.eval()
    with torch.no_grad():
        expected = ref.forward_head(ref.forward_features(x), pre_logits=True)
    for name in ("model.safetensors", "ckpt.pth"):
        adapter = load_vit_checkpoint(tmp_path / name, **SMALL)
        assert adapter.embed_dim == 768 and adapter.num_blocks == 1
        with torch.no_grad():
            assert torch.allclose(adapter.forward_features(x), expected, atol=1e-5)


def test_bad_checkpoints_are_named(tmp_path):
    _, state = _official_like_state()
    with pytest.raises(CheckpointError, match="no such file"):
        load_vit_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_vit_checkpoint(tmp_path / "junk.safetensors", **SMALL)
    partial = {k: v for k, v in state.items() if not k.startswith("blocks.0.mlp")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match="missing keys.*blocks.0.mlp"):
        load_vit_checkpoint(tmp_path / "partial.safetensors", **SMALL)
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_vit_checkpoint(tmp_path / "partial.safetensors", img_size=32, depth=1, embed_dim=384, num_heads=6)
