"""TimmViTAdapter on real timm VisionTransformers built from config (no downloads)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("timm")
from timm.models.vision_transformer import VisionTransformer

from polyprompt.core.backbones.protocol import PromptableBackbone
from polyprompt.core.backbones.timm_vit import TimmViTAdapter, weight_fingerprint
from polyprompt.core.errors import ConfigError, InputError, NonFiniteError, ShapeError

D = 64


def make_vit(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    cfg = dict(img_size=32, patch_size=8, embed_dim=D, depth=3, num_heads=4, num_classes=0)
    cfg.update(kw)
    return VisionTransformer(**cfg).eval()


VARIANTS = {
    "token": {},
    "avg": {"global_pool": "avg"},
    "reg_tokens": {"reg_tokens": 2},
    "reg_avg": {"reg_tokens": 2, "global_pool": "avg"},
    "no_cls_avg": {"class_token": False, "global_pool": "avg"},
    "avg_fc_norm": {"global_pool": "avg", "fc_norm": True},
    "no_embed_class": {"no_embed_class": True, "reg_tokens": 1},
    "layerscale_qknorm": {"init_values": 0.1, "qk_norm": True, "qkv_bias": False},
    "pre_norm": {"pre_norm": True, "global_pool": "max"},
}


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_features_equals_timm(variant, images):
    vit = make_vit(**VARIANTS[variant])
    adapter = TimmViTAdapter(vit)
    with torch.no_grad():
        ours = adapter.forward_features(images)
        ref = vit.forward_head(vit.forward_features(images), pre_logits=True)
    assert ours.shape == (2, D)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)


def test_attributes_and_protocol():
    vit = make_vit(reg_tokens=2)
    adapter = TimmViTAdapter(vit)
    assert isinstance(adapter, PromptableBackbone)
    assert adapter.embed_dim == D
    assert adapter.num_blocks == 3
    assert adapter.num_prefix_tokens == 3
    assert adapter.blocks is vit.blocks
    assert adapter.img_size == (32, 32)
    assert adapter.in_chans == 3
    assert adapter.embed(torch.randn(1, 3, 32, 32)).shape == (1, 3 + 16, D)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_split_forward_equals_full(k, images):
    adapter = TimmViTAdapter(make_vit(reg_tokens=2))
    with torch.no_grad():
        tokens = adapter.embed(images)
        full = adapter.forward_blocks(tokens)
        split = adapter.forward_blocks(adapter.forward_blocks(tokens, 0, k), k)
    torch.testing.assert_close(split, full)


@pytest.mark.parametrize("variant", ["reg_avg", "token"])
@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_prompt_insertion_at_any_depth(variant, depth, images):
    """VPT-style: insert n tokens right after the prefix tokens before block ``depth``."""
    adapter = TimmViTAdapter(make_vit(**VARIANTS[variant]))
    for p in adapter.parameters():
        p.requires_grad_(False)
    n, P = 4, adapter.num_prefix_tokens
    prompt = torch.randn(1, n, D, requires_grad=True)
    tokens = adapter.forward_blocks(adapter.embed(images), 0, depth)
    tokens = torch.cat([tokens[:, :P], prompt.expand(2, -1, -1), tokens[:, P:]], dim=1)
    out = adapter.forward_blocks(tokens, depth)
    assert out.shape == (2, P + n + 16, D)
    feats = adapter.pool(adapter.norm(out), num_prompt_tokens=n)
    assert feats.shape == (2, D)
    with torch.no_grad():
        plain = adapter.forward_features(images)
    if depth == adapter.num_blocks:
        # no block saw the prompt and pooling skips it: features unchanged
        torch.testing.assert_close(feats, plain)
    else:
        assert not torch.allclose(feats, plain)
        feats.pow(2).sum().backward()  # (a plain sum of LayerNorm outputs has no gradient)
        assert prompt.grad is not None and prompt.grad.abs().sum() > 0


def test_avg_pool_excludes_prefix_and_prompt_tokens():
    adapter = TimmViTAdapter(make_vit(reg_tokens=2, global_pool="avg", fc_norm=False))
    tokens = torch.zeros(1, 3 + 2 + 4, D)
    tokens[:, :5] = 100.0  # prefix + prompt: must not count
    tokens[:, 5:] = torch.arange(4.0).view(1, 4, 1)
    torch.testing.assert_close(adapter.pool(tokens, num_prompt_tokens=2), torch.full((1, D), 1.5))


@pytest.mark.parametrize("variant", ["token", "layerscale_qknorm", "reg_avg"])
def test_prefix_of_length_zero_equals_plain_blocks(variant, images):
    adapter = TimmViTAdapter(make_vit(**VARIANTS[variant]))
    with torch.no_grad():
        tokens = adapter.embed(images)
        empty = {i: torch.zeros(2, 2, 0, D) for i in range(adapter.num_blocks)}
        plain = adapter.forward_blocks(tokens)
        with_prefix = adapter.forward_blocks(tokens, prefix=empty)
        for i, blk in enumerate(adapter.blocks):  # block by block against timm's Block.forward
            torch.testing.assert_close(
                adapter.forward_blocks(tokens, i, i + 1, prefix=empty),
                blk(tokens),
                atol=1e-6,
                rtol=0,
            )
    torch.testing.assert_close(with_prefix, plain, atol=1e-6, rtol=0)


def test_prefix_equals_attending_to_extra_tokens(images):
    """Prefix K/V taken from real tokens == those tokens being in the sequence (as keys)."""
    adapter = TimmViTAdapter(make_vit())
    blk = adapter.blocks[0]
    with torch.no_grad():
        x = adapter.embed(images)  # (2, 17, D)
        extra = torch.randn(2, 3, D)
        kv = blk.attn.qkv(blk.norm1(extra)).reshape(2, 3, 3, D)[:, :, 1:]  # (B, 3, {k,v}, D)
        prefix = kv.permute(0, 2, 1, 3)  # (B, 2, 3, D)
        ours = adapter.forward_blocks(x, 0, 1, prefix={0: prefix})
        # reference: plain timm block on [extra, x] where extra tokens are keys only
        # (the queries of x see the keys/values of extra + x, exactly as with the prefix;
        # the residual and the MLP of x depend on x's attention output only)
        ref = blk(torch.cat([extra, x], dim=1))[:, 3:]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_prefix_changes_output_and_gets_gradient(images):
    adapter = TimmViTAdapter(make_vit(init_values=0.5))
    for p in adapter.parameters():
        p.requires_grad_(False)
    prefix = torch.randn(1, 2, 5, D, requires_grad=True)  # batch 1 broadcasts
    tokens = adapter.embed(images)
    out = adapter.forward_blocks(tokens, prefix={1: prefix})
    assert out.shape == tokens.shape
    assert not torch.allclose(out, adapter.forward_blocks(tokens))
    adapter.pool(adapter.norm(out)).pow(2).sum().backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0
    assert all(p.grad is None for p in adapter.parameters())
    # broadcasting batch 1 == explicit batch
    with torch.no_grad():
        torch.testing.assert_close(
            adapter.forward_blocks(tokens, prefix={1: prefix.expand(2, -1, -1, -1)}),
            adapter.forward_blocks(tokens, prefix={1: prefix}),
        )


def test_prefix_outside_range_is_ignored(images):
    adapter = TimmViTAdapter(make_vit())
    with torch.no_grad():
        tokens = adapter.embed(images)
        prefix = {2: torch.randn(2, 2, 3, D)}
        torch.testing.assert_close(
            adapter.forward_blocks(tokens, 0, 2, prefix=prefix),
            adapter.forward_blocks(tokens, 0, 2),
        )


def test_prefix_with_attn_mask(images):
    adapter = TimmViTAdapter(make_vit())
    with torch.no_grad():
        tokens = adapter.embed(images)
        prefix = {0: torch.randn(2, 2, 3, D)}
        n = tokens.shape[1]
        all_true = torch.ones(n, n, dtype=torch.bool)
        zeros = torch.zeros(n, n)
        ref = adapter.forward_blocks(tokens, prefix=prefix)
        torch.testing.assert_close(
            adapter.forward_blocks(tokens, prefix=prefix, attn_mask=all_true), ref
        )
        torch.testing.assert_close(
            adapter.forward_blocks(tokens, prefix=prefix, attn_mask=zeros), ref
        )
        plain = adapter.forward_blocks(tokens, attn_mask=all_true)
        torch.testing.assert_close(plain, adapter.forward_blocks(tokens))


def test_dynamic_img_size_accepts_other_sizes():
    adapter = TimmViTAdapter(make_vit(dynamic_img_size=True))
    assert adapter.forward_features(torch.randn(1, 3, 48, 40)).shape == (1, D)
    with pytest.raises(ShapeError, match="divisible"):
        adapter.embed(torch.randn(1, 3, 30, 32))


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.randn(3, 32, 32), ShapeError, "4 dimensions"),
        (torch.randn(1, 1, 32, 32), ShapeError, "dimension 1 must be 3"),
        (torch.randn(1, 3, 64, 32), ShapeError, "32x32"),
        (torch.randn(1, 3, 4, 4), ShapeError, "smaller than one patch"),
        (torch.full((1, 3, 32, 32), float("nan")), NonFiniteError, "NaN"),
        ("not a tensor", InputError, "torch.Tensor"),
    ],
)
def test_embed_rejects_bad_images(x, error, match):
    adapter = TimmViTAdapter(make_vit())
    with pytest.raises(error, match=match) as info:
        adapter.embed(x)
    assert "TimmViTAdapter.embed" in str(info.value)


def test_forward_blocks_rejects_bad_arguments():
    adapter = TimmViTAdapter(make_vit())
    tokens = torch.randn(2, 17, D)
    with pytest.raises(ConfigError, match="start"):
        adapter.forward_blocks(tokens, 2, 1)
    with pytest.raises(ConfigError, match="num_blocks=3"):
        adapter.forward_blocks(tokens, 0, 4)
    with pytest.raises(ConfigError):
        adapter.forward_blocks(tokens, -1)
    with pytest.raises(ShapeError, match="3 dimensions"):
        adapter.forward_blocks(tokens[0])
    with pytest.raises(ShapeError, match="dimension -1 must be 64"):
        adapter.forward_blocks(torch.randn(2, 17, 32))
    with pytest.raises(NonFiniteError):
        adapter.forward_blocks(torch.full((2, 17, D), float("inf")))
    with pytest.raises(ConfigError, match="block index"):
        adapter.forward_blocks(tokens, prefix={3: torch.zeros(2, 2, 1, D)})
    with pytest.raises(ShapeError, match="dimension 1 must be 2"):
        adapter.forward_blocks(tokens, prefix={0: torch.zeros(2, 3, 1, D)})
    with pytest.raises(ShapeError, match="batch size"):
        adapter.forward_blocks(tokens, prefix={0: torch.zeros(3, 2, 1, D)})
    with pytest.raises(NonFiniteError):
        adapter.forward_blocks(tokens, prefix={0: torch.full((2, 2, 1, D), float("nan"))})
    with pytest.raises(ConfigError, match="mapping"):
        adapter.forward_blocks(tokens, prefix=[torch.zeros(2, 2, 1, D)])
    with pytest.raises(ConfigError, match="num_prompt_tokens"):
        adapter.pool(tokens, num_prompt_tokens=-1)


@pytest.mark.parametrize("kw", [{"global_pool": "map"}, {"global_pool": ""}])
def test_unsupported_pool_raises_config_error(kw):
    adapter = TimmViTAdapter(make_vit(**kw))
    with pytest.raises(ConfigError, match="global_pool"):
        adapter.pool(torch.randn(1, 17, D))


def test_rejects_non_vit_model():
    with pytest.raises(ConfigError, match="VisionTransformer"):
        TimmViTAdapter(torch.nn.Linear(2, 2))


def test_from_name_builds_without_download():
    adapter = TimmViTAdapter.from_name("vit_tiny_patch16_224", img_size=32, depth=2)
    assert (adapter.embed_dim, adapter.num_blocks, adapter.img_size) == (192, 2, (32, 32))
    assert adapter.model.num_classes == 0
    assert adapter.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 192)


def test_identity_and_fingerprint():
    adapter = TimmViTAdapter(make_vit(reg_tokens=2))
    ident = adapter.identity()
    assert ident["library"] == "timm"
    assert ident["class"].endswith("VisionTransformer")
    assert (ident["embed_dim"], ident["num_blocks"], ident["num_prefix_tokens"]) == (D, 3, 3)
    assert ident["img_size"] == [32, 32] and ident["in_chans"] == 3
    assert len(ident["fingerprint"]) == 16
    assert ident == TimmViTAdapter(make_vit(reg_tokens=2)).identity()  # same weights, same id
    assert adapter.identity()["fingerprint"] == ident["fingerprint"]  # cached
    with torch.no_grad():
        adapter.model.blocks[0].attn.qkv.weight[0, 0] += 1.0
    assert adapter.identity()["fingerprint"] != ident["fingerprint"]  # in-place edit noticed
    assert weight_fingerprint(adapter.model) == adapter.identity()["fingerprint"]
