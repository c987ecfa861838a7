import pytest
import torch

from polyprompt.adapt.backbone import (
    MiTConfig,
    SegFormerBackbone,
    convert_official_state_dict,
    load_official_segformer,
)
from polyprompt.core.errors import CheckpointError, ShapeError

# inverse of the converter, written independently from the official names (NVlabs/SegFormer
# mmseg/models/backbones/mix_transformer.py and decode_heads/segformer_head.py)
_INV_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.q_proj": "attn.q",
    "attention.o_proj": "attn.proj",
    "attention.sequence_reduction.sequence_reduction": "attn.sr",
    "attention.sequence_reduction.layer_norm": "attn.norm",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
}


def official_state(model_state: dict) -> dict:
    out = {}
    for key, v in model_state.items():
        p = key.split(".")
        if p[0] == "segformer":
            s = int(p[2]) + 1
            if p[3] == "patch_embeddings":
                part = "proj" if p[4] == "proj" else "norm"
                out[f"backbone.patch_embed{s}.{part}.{p[5]}"] = v
            elif p[3] == "layer_norm":
                out[f"backbone.norm{s}.{p[4]}"] = v
            else:
                blk, mod, kind = p[4], ".".join(p[5:-1]), p[-1]
                if mod in ("attention.k_proj", "attention.v_proj"):
                    continue
                out[f"backbone.block{s}.{blk}.{_INV_BLOCK[mod]}.{kind}"] = v
        else:
            if p[1] == "linear_projections":
                out[f"decode_head.linear_c{int(p[2]) + 1}.proj.{p[4]}"] = v
            elif p[1] == "linear_fuse":
                out["decode_head.linear_fuse.conv.weight"] = v
            elif p[1] == "batch_norm":
                out[f"decode_head.linear_fuse.bn.{p[2]}"] = v
            elif p[1] == "classifier":
                out[f"decode_head.linear_pred.{p[2]}"] = v
    for key, v in model_state.items():
        if key.endswith("attention.k_proj.weight") or key.endswith("attention.k_proj.bias"):
            p = key.split(".")
            s, blk, kind = int(p[2]) + 1, p[4], p[-1]
            vv = model_state[key.replace("k_proj", "v_proj")]
            out[f"backbone.block{s}.{blk}.attn.kv.{kind}"] = torch.cat([v, vv], 0)
    return out


def test_forward_shapes_and_stage_hook(tiny_mit):
    net = SegFormerBackbone(tiny_mit, num_classes=5).eval()
    x = torch.rand(2, 3, 64, 64)
    feats = net.features(x)
    assert [tuple(f.shape) for f in feats] == [
        (2, 16, 16, 16),
        (2, 32, 8, 8),
        (2, 48, 4, 4),
        (2, 64, 2, 2),
    ]
    assert net(x).shape == (2, 5, 64, 64)
    seen = []
    net(x, after_stage1=lambda f: seen.append(f.shape) or f)
    assert seen == [torch.Size([2, 16, 16, 16])]
    with pytest.raises(ShapeError):
        net(torch.rand(2, 4, 64, 64))


def test_official_checkpoint_layout_loads_exactly(tiny_mit, tmp_path):
    torch.manual_seed(0)
    src = SegFormerBackbone(tiny_mit, num_classes=5).eval()
    with torch.no_grad():  # non-trivial BN statistics
        src.model.decode_head.batch_norm.running_mean.normal_()
    official = official_state(src.model.state_dict())
    assert "backbone.block1.0.attn.kv.weight" in official
    path = tmp_path / "segformer_official.pth"
    torch.save({"meta": {"iter": 160000}, "state_dict": official}, path)
    dst = SegFormerBackbone(tiny_mit, num_classes=5).eval()
    report = load_official_segformer(dst, path)
    assert report["missing"] == [] and report["unused"] == []
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(dst(x), src(x), atol=1e-6)
    # ImageNet encoder-only layout (mit_b*.pth): bare keys + a classification head
    enc = {k.removeprefix("backbone."): v for k, v in official.items() if k.startswith("backbone.")}
    enc["head.weight"] = torch.zeros(1000, 64)
    fresh = SegFormerBackbone(tiny_mit, num_classes=5)
    rep = load_official_segformer(fresh, enc)
    assert rep["missing"] == [] and rep["unused"] == ["head.weight"]
    assert torch.equal(fresh.features(x)[-1], src.features(x)[-1])


def test_mit_b5_key_layout_maps_completely():
    """Every parameter of a MiT-B5 SegFormer has an official key (checked on the meta device)."""
    from transformers import SegformerForSemanticSegmentation

    with torch.device("meta"):
        model = SegformerForSemanticSegmentation(MiTConfig.b5().to_hf(19))
    state = model.state_dict()
    official = official_state(state)
    assert "backbone.block3.39.attn.kv.weight" in official  # 40 blocks in stage 3
    assert official["backbone.patch_embed1.proj.weight"].shape == (64, 3, 7, 7)
    assert official["decode_head.linear_fuse.conv.weight"].shape == (768, 3072, 1, 1)
    converted, unused = convert_official_state_dict(official)
    assert unused == []
    assert set(converted) == set(state)
    assert all(converted[k].shape == state[k].shape for k in converted)


def test_bad_checkpoints(tiny_mit, tmp_path):
    net = SegFormerBackbone(tiny_mit, num_classes=5)
    with pytest.raises(CheckpointError, match="no such file"):
        load_official_segformer(net, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="no key of the official"):
        load_official_segformer(net, {"foo.weight": torch.zeros(1)})
    bad = {"backbone.patch_embed1.proj.weight": torch.zeros(8, 3, 7, 7)}
    with pytest.raises(
        CheckpointError, match=r"patch_embeddings.proj.weight has shape \(8, 3, 7, 7\)"
    ):
        load_official_segformer(net, bad)
