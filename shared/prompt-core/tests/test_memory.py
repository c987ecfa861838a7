"""Memory levers: identical losses and gradients, fewer saved bytes (counted, not timed)."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from polyprompt.core import TimmViTAdapter, create
from polyprompt.core.errors import ConfigError, InputError
from polyprompt.core.memory import (
    SavedTensorCounter,
    checkpoint_blocks,
    frozen_linear_saves_input,
    lean_frozen_mlps,
    limit_heap_fragmentation,
    saved_tensor_bytes,
)


def _vit(depth: int = 3) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=64, depth=depth, num_heads=4, num_classes=0
    )


@pytest.fixture
def vpt():
    torch.manual_seed(1)
    return create("vpt", TimmViTAdapter(_vit()), num_classes=5, num_tokens=4)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(2)
    return torch.randn(3, 3, 32, 32, generator=g), torch.tensor([0, 3, 4])


def _loss_and_grads(model, batch):
    x, y = batch
    model.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def _saved(model, batch):
    return saved_tensor_bytes(lambda: model(batch[0]).sum(), exclude=model)


def test_autograd_already_skips_frozen_linear_inputs():
    # The reason there is no custom "lean linear": torch keeps only the weight.
    lin = torch.nn.Linear(16, 32).requires_grad_(False)
    x = torch.randn(2, 5, 16, requires_grad=True)
    y = lin(x.reshape(-1, 16))
    assert not hasattr(y.grad_fn, "_saved_mat1") or y.grad_fn._saved_mat1 is None
    assert frozen_linear_saves_input() is False
    trainable = torch.nn.Linear(16, 32)
    assert saved_tensor_bytes(lambda: trainable(x), exclude=trainable) == x.numel() * 4


@pytest.mark.parametrize(
    "lever", ["lean", "lean_recompute", "lean_chunk7", "ckpt", "ckpt_every2", "both"]
)
def test_levers_give_identical_loss_and_prompt_grads(vpt, batch, lever):
    ref_loss, ref_grads = _loss_and_grads(vpt, batch)
    patches = []
    if lever in ("lean", "both"):
        patches.append(lean_frozen_mlps(vpt))
    if lever == "lean_recompute":
        patches.append(lean_frozen_mlps(vpt, recompute=True, chunk_rows=16))
    if lever == "lean_chunk7":  # blocks that do not divide B * L = 63
        patches.append(lean_frozen_mlps(vpt, chunk_rows=7))
    if lever in ("ckpt", "both"):
        patches.append(checkpoint_blocks(vpt))
    if lever == "ckpt_every2":
        patches.append(checkpoint_blocks(vpt, every=2))
    loss, grads = _loss_and_grads(vpt, batch)
    for p in patches:
        p.remove()
    assert torch.allclose(loss, ref_loss, atol=1e-6, rtol=0)
    assert set(grads) == set(ref_grads) and "prompt.weight" in grads
    for name, g in grads.items():
        assert torch.allclose(g, ref_grads[name], atol=1e-6, rtol=1e-6), name


def test_levers_save_fewer_bytes(vpt, batch):
    plain = _saved(vpt, batch)
    with lean_frozen_mlps(vpt) as patch:
        assert len(patch) == 3
        assert _saved(vpt, batch) == plain  # keeps the same tensors (fewer temporaries)
    with lean_frozen_mlps(vpt, recompute=True):
        lean = _saved(vpt, batch)
    with checkpoint_blocks(vpt, every=2):
        half = _saved(vpt, batch)
    with checkpoint_blocks(vpt):
        ckpt = _saved(vpt, batch)
    assert _saved(vpt, batch) == plain  # removed: back to the plain graph
    assert ckpt < half < plain
    assert ckpt < lean < plain
    # lean keeps the fc1 input (B, L, D) instead of the GELU input (B, L, 4D): 3 units per block
    b, length, d = batch[0].shape[0], 1 + 4 + 16, 64
    assert plain - lean == 3 * 3 * b * length * d * 4


def test_checkpoint_full_finetune_weight_grads_identical(batch):
    torch.manual_seed(1)
    ft = create("full_finetune", TimmViTAdapter(_vit(depth=2)), num_classes=5)
    ref_loss, ref = _loss_and_grads(ft, batch)
    with checkpoint_blocks(ft.backbone):
        loss, got = _loss_and_grads(ft, batch)
    assert torch.allclose(loss, ref_loss, atol=1e-6, rtol=0)
    for name in ref:
        assert torch.allclose(got[name], ref[name], atol=1e-6, rtol=1e-5), name


def test_patch_keeps_state_dict_and_restores_forward(vpt, batch):
    keys = list(vpt.state_dict())
    blk = vpt.backbone.blocks[0]
    with checkpoint_blocks(vpt):
        assert "forward" in blk.__dict__
        assert list(vpt.state_dict()) == keys
        with torch.no_grad():  # no graph: runs the block directly
            out = vpt(batch[0])
    assert "forward" not in blk.__dict__
    with torch.no_grad():
        assert torch.equal(out, vpt(batch[0]))


def test_double_patch_and_bad_arguments_raise(vpt):
    with checkpoint_blocks(vpt), pytest.raises(ConfigError, match="already patched"):
        checkpoint_blocks(vpt)
    for every in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="every"):
            checkpoint_blocks(vpt, every=every)
    with pytest.raises(InputError, match="blocks"):
        checkpoint_blocks(torch.nn.Linear(2, 2))
    with pytest.raises(InputError, match="Mlp layout"):
        lean_frozen_mlps(torch.nn.Linear(2, 2))
    with pytest.raises(InputError, match="nn.Module"):
        lean_frozen_mlps("vit")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="threshold_bytes"):
        limit_heap_fragmentation(0)


def test_lean_skips_trainable_mlps_and_falls_back_when_unfrozen(batch):
    vit = _vit(depth=2)
    with pytest.raises(InputError, match="frozen"):
        lean_frozen_mlps(vit)
    ft = create("full_finetune", TimmViTAdapter(vit), num_classes=5)
    ref_loss, ref = _loss_and_grads(ft, batch)
    ft.backbone.requires_grad_(False)
    with lean_frozen_mlps(ft) as patch:
        assert len(patch) == 2
        ft.backbone.requires_grad_(True)  # unfrozen after patching: the MLPs run their own forward
        loss, got = _loss_and_grads(ft, batch)
    assert torch.equal(loss, ref_loss)
    for name in ref:
        assert torch.equal(got[name], ref[name]), name


def test_lean_bad_arguments(vpt):
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ConfigError, match="chunk_rows"):
            lean_frozen_mlps(vpt, chunk_rows=bad)
    with pytest.raises(ConfigError, match="recompute"):
        lean_frozen_mlps(vpt, recompute=1)


def test_counter_counts_shared_storage_once():
    x = torch.randn(4, 6, requires_grad=True)
    with SavedTensorCounter() as c:
        a, b = x.exp().chunk(2, dim=1)  # exp saves its output; chunks are views
        (a * b).sum()
    assert c.count >= 3  # exp's result, mul's two inputs
    assert c.bytes == 4 * 6 * 4  # all views of exp's one result storage


def test_limit_heap_fragmentation_returns_bool():
    assert limit_heap_fragmentation(1 << 20) in (True, False)


@pytest.mark.parametrize("layout", ["silu", "gelu_tanh_norm"])
def test_lean_generic_mlp_layouts_match_plain(layout):
    from timm.layers import Mlp

    torch.manual_seed(3)
    if layout == "silu":
        mlp = Mlp(16, 40, act_layer=torch.nn.SiLU)
    else:
        mlp = Mlp(
            16,
            40,
            act_layer=lambda: torch.nn.GELU(approximate="tanh"),
            norm_layer=torch.nn.LayerNorm,
        )
    mlp.requires_grad_(False).eval()
    x = torch.randn(2, 9, 16, requires_grad=True)
    ref = mlp(x)
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), x)
    for recompute in (False, True):
        with lean_frozen_mlps(mlp, chunk_rows=4, recompute=recompute):
            out = mlp(x)
            (grad,) = torch.autograd.grad(out.square().sum(), x)
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-6)
