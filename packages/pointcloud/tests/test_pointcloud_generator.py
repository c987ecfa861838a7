"""The memory-lean EdgeConv (default) computes the official DGCNN prompt generator exactly.

Reference paths: ``factorised`` (plain autograd through the ``(B, G, k, D)`` edge tensor) and
``official`` (``DGCNNView.forward`` literally). Exactness is checked in float64 (train mode couples
every edge through BatchNorm's batch statistics; in float32 rounding differs at the level at
which the official layout and the factorised one already differ) and in float32 in eval mode.
"""

import copy

import pytest
import torch

from polyprompt.core import create
from polyprompt.core.errors import ConfigError
from polyprompt.pointcloud.backbone import PointMAEBackbone, PointMAEConfig
from polyprompt.pointcloud.generator import DGCNNPromptGenerator, EdgeConvMode
from polyprompt.pointcloud.method import IDPTConfig

MODES = [m.value for m in EdgeConvMode]


def _generator_runs(dtype, train, negative_scale, seed=0):
    torch.manual_seed(seed)
    base = DGCNNPromptGenerator(24, k=6).to(dtype)
    with torch.no_grad():
        for layer in (base.conv1, base.conv2, base.conv3):
            layer[1].running_mean.normal_(0, 0.1)
            layer[1].running_var.uniform_(0.5, 2.0)
            if negative_scale:  # BN scales of both signs: the max sits at the min of z
                layer[1].weight.uniform_(-1.5, 1.5)
                layer[1].bias.normal_()
    x = torch.randn(3, 20, 24, dtype=dtype)
    w = torch.randn(3, 1, 24, dtype=dtype)
    runs = {}
    for mode in MODES:
        gen = copy.deepcopy(base)
        gen.edge_conv = EdgeConvMode(mode)
        gen.train(train)
        xx = x.clone().requires_grad_(True)
        out = gen(xx)
        (out * w).sum().backward()
        runs[mode] = {
            "out": out.detach(),
            "x.grad": xx.grad,
            **{f"{n}.grad": p.grad for n, p in gen.named_parameters()},
            **{n: b.clone() for n, b in gen.named_buffers()},
        }
    return runs


def _max_diff(a, b):
    """Largest |difference| over the tensors of ``a`` / ``b``, each relative to its scale
    (``max(1, max |b|)``: absolute for small values, relative for large gradients)."""
    return max(
        float((a[n].double() - b[n].double()).abs().max() / b[n].double().abs().max().clamp_min(1))
        for n in a
    )


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("negative_scale", [False, True])
def test_lean_edge_conv_equals_autograd_paths_float64(train, negative_scale):
    runs = _generator_runs(torch.float64, train, negative_scale)
    ref = runs["factorised"]
    assert set(runs["lean"]) == set(ref)  # every parameter got a gradient, buffers match
    assert _max_diff(runs["lean"], ref) < 1e-9  # outputs, gradients, running statistics
    assert _max_diff(runs["official"], ref) < 1e-9


def test_lean_edge_conv_equals_autograd_paths_float32_eval():
    runs = _generator_runs(torch.float32, train=False, negative_scale=True)
    assert _max_diff(runs["lean"], runs["factorised"]) < 1e-6


def _idpt_logits_and_grads(mode, dtype, train):
    torch.manual_seed(0)
    model = create(
        "idpt", PointMAEBackbone(PointMAEConfig.tiny()), num_classes=3, k=8, edge_conv=mode
    ).to(dtype)
    model.train(train)
    x = torch.rand(4, 256, 3, generator=torch.Generator().manual_seed(1)).to(dtype)
    torch.manual_seed(7)  # same dropout masks in the head
    logits = model(x)
    (logits * torch.linspace(-1, 1, 3, dtype=dtype)).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    return logits.detach(), grads


@pytest.mark.parametrize(
    ("dtype", "train", "tol"),
    [(torch.float64, True, 1e-9), (torch.float32, False, 1e-6)],
)
def test_idpt_lean_logits_and_gradients_equal_non_recomputed_path(dtype, train, tol):
    ref_logits, ref_grads = _idpt_logits_and_grads("factorised", dtype, train)
    logits, grads = _idpt_logits_and_grads("lean", dtype, train)
    assert float((logits - ref_logits).abs().max()) < tol
    assert _max_diff(grads, ref_grads) < tol


def _saved_bytes(gen, x):
    total = 0

    def pack(t):
        nonlocal total
        if not isinstance(t, torch.nn.Parameter):
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        gen(x).sum()
    return total


def test_lean_edge_conv_keeps_no_edge_tensor_for_backward():
    torch.manual_seed(0)
    x = torch.randn(4, 32, 48, requires_grad=True)
    saved = {}
    for mode in ("lean", "factorised"):
        gen = DGCNNPromptGenerator(48, k=16, edge_conv=mode).train()
        saved[mode] = _saved_bytes(gen, x)
    edge_tensor = 4 * 32 * 16 * 48 * 4  # one (B, G, k, D) float32 tensor
    assert saved["factorised"] > 3 * edge_tensor  # >= one kept per EdgeConv
    assert saved["lean"] < 3 * edge_tensor  # O(B G D) per layer: less than one edge tensor each
    assert saved["lean"] * 4 < saved["factorised"]


def test_edge_conv_option_and_default():
    assert IDPTConfig().edge_conv == EdgeConvMode.LEAN
    cfg = IDPTConfig.from_dict({**IDPTConfig(num_classes=3).to_dict(), "edge_conv": "official"})
    assert cfg.edge_conv == EdgeConvMode.OFFICIAL
    model = create("idpt", PointMAEBackbone(PointMAEConfig.tiny()), num_classes=3, k=8)
    assert model.generator.edge_conv == EdgeConvMode.LEAN
    with pytest.raises(ConfigError, match="edge_conv"):
        DGCNNPromptGenerator(16, k=4, edge_conv="fused")
    with pytest.raises(ConfigError, match="edge_conv"):
        IDPTConfig(num_classes=3, edge_conv="fused")
