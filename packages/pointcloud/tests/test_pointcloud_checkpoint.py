import pytest
import torch

from polyprompt.core.errors import CheckpointError
from polyprompt.pointcloud.backbone import PointMAEBackbone, PointMAEConfig
from polyprompt.pointcloud.checkpoint import load_point_mae_checkpoint


def _official_pretrain_state(src: PointMAEBackbone) -> dict:
    """A Point-MAE pre-training checkpoint in the official layout (DDP 'module.' prefix,
    MAE_encoder.blocks.blocks.<i>, decoder keys, no CLS token)."""
    state = {}
    for k, v in src.state_dict().items():
        if k.startswith("cls_"):
            continue
        k = k.replace("blocks.", "blocks.blocks.", 1) if k.startswith("blocks.") else k
        state[f"module.MAE_encoder.{k}"] = v.clone()
    d = src.embed_dim
    state["module.mask_token"] = torch.zeros(1, 1, d)
    state["module.MAE_decoder.blocks.0.attn.qkv.weight"] = torch.zeros(3 * d, d)
    state["module.decoder_pos_embed.0.weight"] = torch.zeros(128, 3)
    state["module.increase_dim.0.weight"] = torch.zeros(96, d, 1)
    return state


def test_official_pretrain_checkpoint_round_trip(tmp_path, clouds):
    torch.manual_seed(1)
    src = PointMAEBackbone(PointMAEConfig.tiny()).eval()
    path = tmp_path / "ckpt-last.pth"
    torch.save({"base_model": _official_pretrain_state(src), "epoch": 300}, path)
    bb, report = load_point_mae_checkpoint(path, num_heads=4, num_group=32, group_size=8)
    assert report.missing == ["cls_pos", "cls_token"]
    assert any("MAE_decoder" in k for k in report.ignored)
    assert bb.config.embed_dim == 64 and bb.num_blocks == 3
    bb.cls_token.data.copy_(src.cls_token)
    bb.cls_pos.data.copy_(src.cls_pos)
    assert torch.allclose(bb(clouds), src(clouds), atol=1e-6)


def test_finetuned_checkpoint_with_head_and_safetensors(tmp_path, clouds):
    from safetensors.torch import save_file

    src = PointMAEBackbone(PointMAEConfig.tiny()).eval()
    state = {
        (k.replace("blocks.", "blocks.blocks.", 1) if k.startswith("blocks.") else k): v.clone()
        for k, v in src.state_dict().items()
    }
    state["cls_head_finetune.0.weight"] = torch.zeros(256, 128)
    path = tmp_path / "finetuned.safetensors"
    save_file(state, str(path))
    bb, report = load_point_mae_checkpoint(path, PointMAEConfig.tiny())
    assert report.missing == []
    assert torch.allclose(bb(clouds), src(clouds), atol=1e-6)


def test_mismatches_are_named(tmp_path):
    src = PointMAEBackbone(PointMAEConfig.tiny())
    state = _official_pretrain_state(src)
    with pytest.raises(
        CheckpointError, match=r"first_conv.0.weight has shape \(16, 3, 1\).*\(128, 3, 1\)"
    ):
        load_point_mae_checkpoint(state, PointMAEConfig())
    state.pop("module.MAE_encoder.norm.bias")
    with pytest.raises(CheckpointError, match="missing"):
        load_point_mae_checkpoint(state, PointMAEConfig.tiny())
    with pytest.raises(CheckpointError, match="no such file"):
        load_point_mae_checkpoint(tmp_path / "nope.pth")
    bad = {
        "module.MAE_encoder.reduce_dim.weight": torch.zeros(2, 2),
        **_official_pretrain_state(src),
    }
    with pytest.raises(CheckpointError, match="do not belong"):
        load_point_mae_checkpoint(bad, PointMAEConfig.tiny())
