import pytest
import torch

from polyprompt.core import PromptableBackbone, create, trainable_report
from polyprompt.core.errors import ConfigError, ShapeError
from polyprompt.pointcloud.backbone import PointMAEBackbone, PointMAEConfig


def _official_forward(bb, x):
    """The official PointTransformer forward (without head), written out: x = block(x + pos)."""
    patches, centers = bb.group(x)
    tok = bb.encoder(patches)
    b = tok.shape[0]
    h = torch.cat([bb.cls_token.expand(b, -1, -1), tok], 1)
    pos = torch.cat([bb.cls_pos.expand(b, -1, -1), bb.pos_embed(centers)], 1)
    for blk in bb.blocks:
        h = blk(h + pos)
    return bb.norm(h)


def test_protocol_and_shapes(tiny_backbone, clouds):
    bb = tiny_backbone
    assert isinstance(bb, PromptableBackbone)
    from timm.models.vision_transformer import Block

    assert all(isinstance(b, Block) for b in bb.blocks)
    tokens = bb.embed(clouds)
    assert tokens.shape == (4, 1 + 32, 64)
    out = bb.norm(bb.forward_blocks(tokens))
    assert torch.allclose(out, _official_forward(bb, clouds), atol=1e-6)
    assert bb.pool(out).shape == (4, 64)


def test_split_forward_equals_full_forward(tiny_backbone, clouds):
    bb = tiny_backbone
    tokens, pos = bb.embed_with_pos(clouds)
    full = bb.forward_blocks(tokens, pos=pos)
    part = bb.forward_blocks(bb.forward_blocks(tokens, 0, 2, pos=pos), 2, pos=pos)
    assert torch.allclose(full, part, atol=1e-6)


def test_paper_size():
    bb = PointMAEBackbone()
    assert (bb.embed_dim, bb.num_blocks, bb.num_group, bb.group_size) == (384, 12, 128, 32)
    assert 21_000_000 < bb.num_params() < 22_500_000


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("linear_probe", {}),
        ("full_finetune", {}),
        ("vpt", {"num_tokens": 3}),
        ("vpt", {"num_tokens": 2, "deep": True}),
    ],
)
def test_core_baselines_run_on_point_mae(name, options, clouds):
    torch.manual_seed(0)
    model = create(name, PointMAEBackbone(PointMAEConfig.tiny()), num_classes=3, **options)
    logits = model(clouds)
    assert logits.shape == (4, 3)
    logits.sum().backward()
    rep = trainable_report(model)
    grads = [n for n, p in model.named_parameters() if p.grad is not None]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(grads) == sorted(trainable)
    if name != "full_finetune":
        assert rep.percent_of_backbone < 5


def test_bad_calls(tiny_backbone, clouds):
    bb = tiny_backbone
    tokens = bb.embed(clouds)
    with pytest.raises(ConfigError, match="prefixes are not supported"):
        bb.forward_blocks(tokens, prefix={0: torch.zeros(4, 2, 1, 64)})
    with pytest.raises(ShapeError, match="batch of 4"):
        bb.forward_blocks(tokens[:2])
    with pytest.raises(ConfigError, match="start <= end"):
        bb.forward_blocks(tokens, 2, 1)
    with pytest.raises(ConfigError, match="num_heads"):
        PointMAEConfig(embed_dim=64, num_heads=5)
