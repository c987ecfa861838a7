"""MVP / DualPrompt / L2P: shapes, what trains, masks, losses, per-sample grads, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from polyprompt.continual.method import (
    L2P,
    MVP,
    DualPrompt,
    DualPromptConfig,
    L2PConfig,
    MVPConfig,
    key_contrastive_loss,
    per_sample_head_grads,
)
from polyprompt.core import get_method, load_prompt, save_prompt
from polyprompt.core.errors import ConfigError, InputError, ShapeError

C = 6


def _batch(b: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, 16, 16, generator=g), torch.randint(0, 3, (b,), generator=g)


def _seen(k: int = 3) -> torch.Tensor:
    s = torch.zeros(C, dtype=torch.bool)
    s[:k] = True
    return s


def test_registered():
    assert get_method("mvp") is MVP
    assert get_method("dualprompt") is DualPrompt
    assert get_method("l2p") is L2P


@pytest.mark.parametrize(
    ("cls", "cfg"),
    [(MVP, MVPConfig(num_classes=C)), (DualPrompt, DualPromptConfig(num_classes=C)),
     (L2P, L2PConfig(num_classes=C))],
)  # fmt: skip
def test_shapes_and_only_prompt_parts_get_gradients(cls, cfg, backbone):
    model = cls(backbone, cfg).train()
    x, y = _batch()
    out = model(x, seen=_seen())
    assert out.logits.shape == (5, C)
    assert out.key_index.shape == (5, cfg.top_k)
    assert torch.isinf(out.logits[:, 3:]).all() and torch.isfinite(out.logits[:, :3]).all()
    loss, _ = model.loss(out, y, _seen())
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("backbone."):
            assert not p.requires_grad and p.grad is None, name
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    expected = {"pool.keys", "pool.prompts", "head.weight", "head.bias"}
    if cfg.g_layers:
        expected.add("general.weight")
    if cfg.use_mask:
        expected.add("logit_mask")
    assert got == expected
    assert model.backbone.model.training is False  # backbone stays in eval mode


def test_prefix_prompts_change_features_at_the_right_blocks(backbone):
    model = MVP(backbone, MVPConfig(num_classes=C)).eval()
    x, _ = _batch()
    feats, _sel = model.forward_features(x)
    plain = backbone.forward_features(x)
    assert not torch.allclose(feats, plain)
    with torch.no_grad():
        model.pool.prompts.zero_()
        model.general.weight.zero_()
    # zero prefixes still add attention mass (keys 0 -> logits 0): features differ; the
    # query is the un-prompted CLS: MVP's (models/mvp.py, use_last_layer off) skips the last
    # block and the norm, DualPrompt's is the plain forward
    bb = model.backbone
    before_last = bb.forward_blocks(bb.embed(x), 0, bb.num_blocks - 1)[:, 0]
    assert torch.allclose(model.query(x), before_last, atol=1e-6)
    dp = DualPrompt(backbone, DualPromptConfig(num_classes=C)).eval()
    assert torch.allclose(dp.query(x), plain, atol=1e-6)
    assert not torch.allclose(model.query(x), plain, atol=1e-3)


def test_instance_mask_init_and_effect(backbone, make_backbone):
    model = MVP(backbone, MVPConfig(num_classes=C)).eval()
    x, _ = _batch()
    out = model(x)
    assert torch.allclose(out.mask, torch.full((5, C), 2 * torch.sigmoid(torch.tensor(-1.0))))
    with torch.no_grad():
        model.logit_mask[:, 0] = 10.0
    out2 = model(x)
    assert torch.allclose(out2.logits[:, 0], model.head(out2.features)[:, 0] * 2, atol=1e-4)
    nomask = MVP(make_backbone(), MVPConfig(num_classes=C, use_mask=False))
    assert not nomask.logit_mask.requires_grad
    assert torch.equal(nomask(x).mask, torch.ones(5, C))


def test_frequency_counts_grow_in_training_only(backbone):
    model = MVP(backbone, MVPConfig(num_classes=C))
    x, _ = _batch()
    model.eval()
    model(x)
    assert model.pool.frequency.sum() == model.pool.pool_size
    model.train()
    model(x)
    assert model.pool.frequency.sum() == model.pool.pool_size + 5


def test_per_sample_grads_match_a_loop_of_backward_calls():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, C)
    f = torch.randn(4, 8)
    y = torch.tensor([0, 2, 1, 2])
    m = torch.rand(4, C) + 0.5
    add = torch.tensor([0.0, 0.0, 0.0, -math.inf, -math.inf, -math.inf])
    g = per_sample_head_grads(head.weight, head.bias, f, y, m, add)
    for i in range(4):
        head.zero_grad()
        logit = (head(f[i : i + 1]) * m[i : i + 1]) + add
        F.cross_entropy(logit, y[i : i + 1]).backward()
        assert torch.allclose(g[i], head.weight.grad, atol=1e-6)


def test_gsf_and_afs_loss_equals_the_formula(backbone, make_backbone):
    cfg = MVPConfig(num_classes=C, use_contrastive=False, key_loss_weight=0.0)
    model = MVP(backbone, cfg).train()
    x, y = _batch(6)
    seen = _seen()
    out = model(x, seen=seen)
    loss, _ = model.loss(out, y, seen)
    # by hand
    W, b, f, m = model.head.weight, model.head.bias, out.features.detach(), out.mask.detach()
    add = torch.where(seen, 0.0, float("-inf"))
    rows = []
    for i in range(6):
        Wi = W.detach().clone().requires_grad_(True)
        li = F.cross_entropy(((f[i] @ Wi.T + b.detach()) * m[i] + add)[None], y[i : i + 1])
        (gi,) = torch.autograd.grad(li, Wi)
        rows.append(gi)
    G = torch.stack(rows)
    s = 1 - F.cosine_similarity(G[torch.arange(6), y], G.mean(0)[y], dim=1)
    scale = 1 - F.cosine_similarity(W.detach()[y], f, dim=1) + 0.5
    ce = F.cross_entropy(
        model.head(out.features / scale[:, None]) * out.mask + add, y, reduction="none"
    )
    expected = (0.5 * ce + 0.5 * s**2 * ce).mean()
    assert torch.allclose(loss, expected, atol=1e-5)
    # the official bug (focal weight on the batch-mean CE) gives another value
    bug = MVP(make_backbone(), MVPConfig(**{**cfg.to_dict(), "focal_on_batch_mean": True}))
    bug.load_state_dict(model.state_dict())
    bl, _ = bug.loss(bug(x, seen=seen, query=out.query), y, seen)
    assert not torch.allclose(bl, loss)


def test_contrastive_key_loss_pulls_the_selected_key():
    torch.manual_seed(0)
    keys = torch.nn.Parameter(torch.randn(4, 8))
    q = torch.randn(3, 8)
    idx = torch.tensor([1, 1, 1])
    opt = torch.optim.SGD([keys], lr=0.5)
    before = F.cosine_similarity(q, keys[1].detach()[None]).mean()
    for _ in range(20):
        loss = key_contrastive_loss(q, keys, idx, torch.ones(4), temperature=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = F.cosine_similarity(q, keys[1].detach()[None]).mean()
    assert after > before


def test_save_load_identical_outputs(tmp_path, backbone, make_backbone):
    model = MVP(backbone, MVPConfig(num_classes=C)).train()
    x, y = _batch()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss, _ = model.loss(model(x, seen=_seen()), y, _seen())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    save_prompt(model, tmp_path / "ckpt")
    fresh = MVP(make_backbone(), MVPConfig(num_classes=C))
    load_prompt(fresh, tmp_path / "ckpt")
    fresh.eval()
    assert torch.equal(fresh.pool.frequency, model.pool.frequency)
    assert torch.allclose(fresh(x, seen=_seen()).logits, model(x, seen=_seen()).logits)


def test_bad_inputs(backbone):
    model = MVP(backbone, MVPConfig(num_classes=C))
    with pytest.raises(ShapeError, match="channel|dim"):
        model(torch.rand(2, 3, 16, 16))
    with pytest.raises(ShapeError, match="image size"):
        model(torch.rand(2, 1, 24, 24))
    with pytest.raises(ShapeError):
        model(torch.rand(0, 1, 16, 16))
    with pytest.raises(InputError, match="bool"):
        model(torch.rand(2, 1, 16, 16), seen=torch.ones(C))
    with pytest.raises(InputError, match="no class"):
        model(torch.rand(2, 1, 16, 16), seen=torch.zeros(C, dtype=torch.bool))
    with pytest.raises(ConfigError, match="out of range"):
        MVP(backbone, MVPConfig(num_classes=C, e_layers=(2, 3, 9)))
    with pytest.raises(ConfigError):
        MVPConfig(g_layers=(0, 2), e_layers=(2, 3))
    with pytest.raises(ConfigError):
        L2PConfig(e_layers=(1,))
    with pytest.raises(ConfigError):
        MVPConfig(alpha=2.0)


def test_key_selection_rules_follow_the_official_models(backbone, make_backbone):
    """MVP selects by ``distance * (count + 1)`` in training *and* evaluation (models/mvp.py);
    DualPrompt by plain distance (no ``_diversed_selection``); L2P penalises in training only."""
    assert MVPConfig().penalty_in_eval and MVPConfig().frequency_penalty
    assert not DualPromptConfig().frequency_penalty
    assert L2PConfig().frequency_penalty and not L2PConfig().penalty_in_eval
    x, _ = _batch(8)
    skew = torch.tensor([1000.0] + [1.0] * 9)
    for cls, cfg, penalised in (
        (MVP, MVPConfig(num_classes=C), True),
        (DualPrompt, DualPromptConfig(num_classes=C), False),
    ):
        model = cls(make_backbone(), cfg).eval()
        with torch.no_grad():
            q = model.query(x)
            model.pool.keys.copy_(
                torch.randn(10, q.shape[1], generator=torch.Generator().manual_seed(0))
            )
            model.pool.keys[0] = q.mean(0)  # the nearest key, but used 1000 times
            model.pool.frequency.copy_(skew)
        dist = 1 - F.cosine_similarity(q.unsqueeze(1), model.pool.keys.unsqueeze(0), dim=-1)
        score = dist * skew / skew.sum() if penalised else dist
        assert (dist.argmin(1) == 0).all() and (score.argmin(1) != 0).all() == penalised
        out = model(x, query=q)
        assert torch.equal(out.key_index[:, 0], score.argmin(1)), cls.__name__
