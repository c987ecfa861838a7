"""AdaptFormer and SSF baselines."""

from __future__ import annotations

import pytest
import torch

from polyprompt.core import create


@pytest.mark.parametrize("kind", ["timm", "monai"])
def test_adaptformer_identity_at_init_then_trains(kind, vits):
    bb = vits[kind]()
    model = create("adaptformer", bb, num_classes=2, hidden=4)
    x = torch.rand(2, 1, 32, 32) if bb.spatial_dims == 2 else torch.rand(2, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x), bb.forward_features(x), atol=1e-6)
    model.train()
    model(x).sum().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(n.startswith(("adapters.", "head.")) for n in grads)
    assert any(n.startswith("adapters.") and n.endswith("up.weight") for n in grads)
    assert len(model.adapters) == bb.num_blocks


@pytest.mark.parametrize("kind", ["timm", "monai"])
def test_ssf_identity_with_zero_std_and_hooks(kind, vits):
    bb = vits[kind]()
    x = torch.rand(2, 1, 32, 32) if bb.spatial_dims == 2 else torch.rand(2, 1, 16, 16, 16)
    with torch.no_grad():
        ref = bb.forward_features(x)
    model = create("ssf", bb, num_classes=2, init_std=0.0)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x), ref, atol=1e-6)
        model.ssf[next(iter(model.ssf.keys()))].scale.mul_(2.0)
        changed = model.forward_features(x)
        assert not torch.allclose(changed, ref)
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("ssf."))
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("backbone."))
    model.remove_hooks()
    with torch.no_grad():
        assert torch.allclose(bb.forward_features(x), ref, atol=1e-6)


def test_ssf_covers_linears_and_norms(vits):
    model = create("ssf", vits["timm"](depth=2), num_classes=2)
    # per block: norm1, qkv, proj, norm2, fc1, fc2 (+ the final norm)
    assert len(model.ssf) == 2 * 6 + 1
