"""Classification baselines (linear probe, full fine-tune, VPT) on a real timm ViT (no downloads)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("timm")
from timm.models.vision_transformer import VisionTransformer

from polyprompt.core.backbones.timm_vit import TimmViTAdapter
from polyprompt.core.checkpoint import load_prompt, save_prompt
from polyprompt.core.errors import BackboneMismatchError, ConfigError, InputError, ShapeError
from polyprompt.core.methods.classify import (
    VPT,
    ClassifierConfig,
    FrozenBackboneMixin,
    FullFineTune,
    LinearProbe,
    PromptClassifier,
    VPTConfig,
    VPTInit,
    pool_tokens,
)
from polyprompt.core.registry import create

D, N_PATCH = 64, 16  # img 32, patch 8 -> 4 x 4 patches


def vit(seed: int = 0, **kw) -> TimmViTAdapter:
    torch.manual_seed(seed)
    cfg = dict(
        img_size=32, patch_size=8, in_chans=1, embed_dim=D, depth=3, num_heads=4, num_classes=0
    )
    cfg.update(kw)
    return TimmViTAdapter(VisionTransformer(**cfg))


def images(b: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def grads_of(model: torch.nn.Module, x: torch.Tensor) -> set[str]:
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


# --------------------------------------------------------------------------- configs
def test_configs_validate_and_round_trip():
    with pytest.raises(ConfigError, match="num_classes"):
        ClassifierConfig(num_classes=1)
    with pytest.raises(ConfigError, match="head_dropout"):
        ClassifierConfig(num_classes=3, head_dropout=1.0)
    with pytest.raises(ConfigError, match="num_tokens"):
        VPTConfig(num_classes=3, num_tokens=0)
    with pytest.raises(ConfigError, match="deep_layers"):
        VPTConfig(num_classes=3, deep_layers=2)  # needs deep=True
    with pytest.raises(ConfigError, match="init"):
        VPTConfig(num_classes=3, init="kaiming")
    cfg = VPTConfig(num_classes=4, num_tokens=3, deep=True, deep_layers=2, init="normal")
    assert cfg.init is VPTInit.NORMAL
    assert VPTConfig.from_json(cfg.to_json()) == cfg


# --------------------------------------------------------------------------- shapes + grads
@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("linear_probe", {}),
        ("full_finetune", {}),
        ("vpt", {"num_tokens": 5}),
        ("vpt", {"num_tokens": 5, "deep": True}),
        ("vpt", {"num_tokens": 2, "deep": True, "deep_layers": 2}),
    ],
)
@pytest.mark.parametrize("pool", ["token", "avg"])
def test_output_shapes_through_registry(name, kw, pool):
    model = create(name, vit(global_pool=pool), num_classes=7, **kw)
    assert model.method_name == name
    assert model(images(3)).shape == (3, 7)


def test_linear_probe_trains_only_the_head():
    model = LinearProbe(vit(), ClassifierConfig(num_classes=3))
    assert grads_of(model, images()) == {"head.weight", "head.bias"}
    assert model.cache_point == model.backbone.num_blocks
    assert set(model.trainable_state_dict()) == {"head.weight", "head.bias"}


def test_full_finetune_trains_everything():
    backbone = vit()
    LinearProbe(backbone, ClassifierConfig(num_classes=3))  # freezes ...
    model = FullFineTune(backbone, ClassifierConfig(num_classes=3))  # ... and unfreezes
    trained = grads_of(model, images())
    assert {"head.weight", "backbone.model.blocks.0.attn.qkv.weight"} <= trained
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("deep", [False, True])
def test_vpt_trains_only_prompt_and_head(deep):
    model = create("vpt", vit(), num_classes=3, num_tokens=4, deep=deep)
    trained = grads_of(model, images())
    prompt = {"deep.weight"} if deep else {"prompt.weight"}
    assert trained == prompt | {"head.weight", "head.bias"}
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model.train()
    assert not model.backbone.training  # frozen backbone stays in eval mode


def test_vpt_token_layout_and_avg_pool_excludes_prompts():
    model = create("vpt", vit(global_pool="avg"), num_classes=3, num_tokens=4).eval()
    seen = {}
    model.backbone.blocks[0].register_forward_pre_hook(lambda m, a: seen.setdefault("in", a[0]))
    x = images()
    model(x)
    tokens = seen["in"]
    assert tokens.shape == (2, 1 + 4 + N_PATCH, D)  # [CLS, P1..P4, patches]
    assert torch.equal(tokens[:, 1:5], model.prompt_tokens(2))
    plain = model.backbone.embed(x)
    assert torch.equal(tokens[:, :1], plain[:, :1]) and torch.equal(tokens[:, 5:], plain[:, 1:])
    # 'avg' pooling: the mean runs over the 16 patch tokens only
    with torch.no_grad():
        out = model.backbone.forward_blocks(tokens)
        normed = model.backbone.norm(out)
        want = model.backbone.model.fc_norm(normed[:, 5:].mean(1))
        assert torch.allclose(model.forward_features(x), want, atol=1e-6)


def test_vpt_deep_replaces_the_prompt_before_every_block():
    model = create("vpt", vit(), num_classes=3, num_tokens=4, deep=True).eval()
    ins, outs = {}, {}
    for i, blk in enumerate(model.backbone.blocks):
        blk.register_forward_pre_hook(lambda m, a, i=i: ins.__setitem__(i, a[0]))
        blk.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o))
    with torch.no_grad():
        model(images())
        for i in range(3):
            # block i sees its own prompt, not block i-1's prompt outputs (VPT-deep)
            assert torch.equal(ins[i][:, 1:5], model.deep(i, 2))
            if i:
                assert not torch.allclose(ins[i][:, 1:5], outs[i - 1][:, 1:5])
                assert torch.equal(ins[i][:, 5:], outs[i - 1][:, 5:])  # patches flow on
    assert model.deep_prompt_layers == (1, 2)


def test_vpt_deep_layers_limits_depth_and_keeps_propagated_prompts():
    model = create("vpt", vit(), num_classes=3, num_tokens=4, deep=True, deep_layers=2).eval()
    assert model.deep.layers == (0, 1) and model.deep_prompt_layers == (1,)
    ins, outs = {}, {}
    for i, blk in enumerate(model.backbone.blocks):
        blk.register_forward_pre_hook(lambda m, a, i=i: ins.__setitem__(i, a[0]))
        blk.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o))
    with torch.no_grad():
        model(images())
    assert torch.equal(ins[1][:, 1:5], model.deep(1, 2))
    assert torch.equal(ins[2], outs[1])  # block 2 has no prompt: the outputs flow on
    with pytest.raises(InputError, match="deep_layers=5 exceeds"):
        create("vpt", vit(), num_classes=3, deep=True, deep_layers=5)


def test_vpt_output_depends_on_every_layers_prompt():
    model = create("vpt", vit(), num_classes=3, num_tokens=4, deep=True).eval()
    x = images()
    with torch.no_grad():
        base = model(x)
        for layer in range(3):
            saved = model.deep.weight[layer].clone()
            model.deep.weight[layer].add_(
                torch.randn_like(saved)
            )  # (constant shifts vanish in LayerNorm)
            assert not torch.allclose(model(x), base), f"layer {layer} prompt has no effect"
            model.deep.weight[layer].copy_(saved)
        assert torch.equal(model(x), base)


def test_vpt_xavier_and_normal_init():
    model = create("vpt", vit(), num_classes=3, num_tokens=50)
    bound = (6.0 / (1 * 8 * 8 + D)) ** 0.5  # in_chans * patch * patch + d (VPT official)
    w = model.prompt.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    torch.manual_seed(0)
    normal = create("vpt", vit(), num_classes=3, num_tokens=50, init="normal", init_std=0.01)
    assert 0.005 < float(normal.prompt.weight.detach().std()) < 0.02


def test_bad_inputs_raise_our_errors():
    model = create("vpt", vit(), num_classes=3, num_tokens=2)
    with pytest.raises(ShapeError):
        model(torch.randn(2, 3, 32, 32))  # wrong channel count
    with pytest.raises(ShapeError):
        model(torch.randn(1, 32, 32))
    with pytest.raises(InputError):
        model("not a tensor")
    with pytest.raises(ShapeError):
        model.forward_head(torch.randn(2, D + 1))
    with pytest.raises(InputError, match="PromptableBackbone"):
        LinearProbe(torch.nn.Linear(3, 3), ClassifierConfig(num_classes=3))


def test_forward_from_tokens():
    probe = create("linear_probe", vit(), num_classes=3).eval()
    x = images()
    with torch.no_grad():
        after = probe.backbone.forward_blocks(probe.backbone.embed(x))
        assert torch.allclose(probe.forward_from_tokens(after, 3), probe(x), atol=1e-6)
    vpt = create("vpt", vit(), num_classes=3, num_tokens=2).eval()
    with pytest.raises(InputError, match="prompts before block 0"):
        vpt.forward_from_tokens(after, 3)
    with torch.no_grad():  # the prompt-free embedding output is fine
        emb = vpt.backbone.embed(x)
        assert torch.allclose(vpt.forward_from_tokens(emb, 0), vpt(x), atol=1e-6)
    ft = create("full_finetune", vit(), num_classes=3)
    assert ft.cache_point is None
    with pytest.raises(InputError, match="every backbone parameter trains"):
        ft.forward_from_tokens(emb, 0)
    with pytest.raises(InputError, match="start_block"):
        probe.forward_from_tokens(after, 4)
    with pytest.raises(ShapeError):
        probe.forward_from_tokens(after[..., :10], 3)


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize(
    ("name", "kw"), [("vpt", {"deep": True}), ("vpt", {}), ("linear_probe", {})]
)
def test_save_load_round_trip_and_backbone_mismatch(tmp_path, name, kw):
    extra = {"num_tokens": 3} if name == "vpt" else {}
    model = create(name, vit(), num_classes=5, **extra, **kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    save_prompt(model, tmp_path / "ckpt")
    fresh = create(name, vit(), num_classes=5, **extra, **kw).eval()  # same weights (seed 0)
    load_prompt(fresh, tmp_path / "ckpt")
    x = images(3)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    other = create(name, vit(seed=1), num_classes=5, **extra, **kw)
    with pytest.raises(BackboneMismatchError):
        load_prompt(other, tmp_path / "ckpt")


def test_config_dataclass_fields_are_json_only():
    cfg = VPTConfig(num_classes=3)
    assert {f.name for f in dataclasses.fields(cfg)} >= {"num_classes", "num_tokens", "deep"}
    assert isinstance(VPT.config_class(num_classes=2), VPTConfig)


# --------------------------------------------------------------------------- real data
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    sklearn = pytest.importorskip("sklearn.datasets")
    data = sklearn.load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    x = F.interpolate(x, size=32, mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    return x, torch.tensor(data.target)


@torch.no_grad()
def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def test_vpt_learns_real_digits():
    """VPT-deep on sklearn's real 8x8 digits (upsampled to 32x32) over a frozen random ViT.

    The backbone uses timm's ``weight_init="jax"`` (xavier linears) so its random features
    are not near-identity; the frozen-backbone linear probe reaches ~0.5 here, VPT-deep ~0.7.
    """
    x, y = _digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    model = create(
        "vpt", vit(global_pool="avg", weight_init="jax"), num_classes=10, num_tokens=8, deep=True
    )
    before = _accuracy(model, x[test], y[test])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _epoch in range(6):
        model.train()
        order = train[torch.randperm(len(train), generator=gen)]
        for s in range(0, len(order), 64):
            idx = order[s : s + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    after = _accuracy(model, x[test], y[test])
    assert before < 0.3  # untrained head: chance level (10 classes)
    assert after > 0.55, f"accuracy {after:.3f}"
    assert after > before + 0.3
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10


# --------------------------------------------------------------------------- subclassing
class _AvgMaxProbe(FrozenBackboneMixin, PromptClassifier):
    """A package-style method: concat(mean, max) features and an MLP head."""

    @property
    def feature_dim(self) -> int:
        return 2 * int(self.backbone.embed_dim)

    def build_head(self, in_features: int, num_classes: int) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Linear(in_features, 8), torch.nn.GELU(), torch.nn.Linear(8, num_classes)
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        tokens = self.backbone.norm(self.backbone.forward_blocks(self.backbone.embed(x)))
        return torch.cat([pool_tokens(self.backbone, tokens, 0), tokens.amax(dim=1)], dim=-1)


def test_public_base_class_takes_a_custom_head_and_stays_frozen():
    from polyprompt.core.freezing import freeze_backbone

    model = _AvgMaxProbe(freeze_backbone(vit()), ClassifierConfig(num_classes=3))
    assert model.head[0].in_features == 2 * D
    assert model(images()).shape == (2, 3)
    assert grads_of(model, images()) == {
        n for n, _ in model.named_parameters() if n.startswith("head.")
    }
    model.train()
    assert model.training and not model.backbone.training
    with pytest.raises(ShapeError, match="features"):
        model.forward_head(torch.zeros(2, D))
