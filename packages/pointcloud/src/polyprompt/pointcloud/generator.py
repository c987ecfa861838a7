"""IDPT's dynamic prompt generator: a DGCNN over the patch tokens (one prompt per instance).

Paper: Zha et al., ICCV 2023, Sec. 3.2 ("Dynamic Prompt Generation Module"); official
``ICCV23-IDPT`` ``models/dgcnn.py`` ``DGCNNView`` (``prompt_module: dgcnn``):

* kNN graph (``k = 20``) in *feature* space over the ``G`` patch tokens (``knn``: largest
  ``-||xi - xj||^2``, the point itself included);
* three EdgeConv layers, each ``Conv2d(2D -> D, 1, bias=False)`` on ``[xj - xi, xi]``,
  ``BatchNorm2d``, ``LeakyReLU(0.2)``, max over the ``k`` neighbours; the second and third
  build their graph on the previous layer's output (dynamic graph);
* concat of the three (``3D``) -> ``Conv1d(3D -> D, bias=False)``, ``BatchNorm1d``, LeakyReLU,
  global max-pool over the tokens -> **one** prompt token ``(B, 1, D)``.

The layers (and their state-dict keys) are the official ones; *how* an EdgeConv is evaluated
is chosen by ``edge_conv`` (:class:`EdgeConvMode`), all three computing the same function:

* ``lean`` (default) — :class:`LeanEdgeConv`, a custom autograd function that never keeps the
  ``(B, 2D, G, k)`` edge tensor: the 1x1 convolution is factorised per token
  (``W1 xj + (W2 - W1) xi``), the batch statistics over all ``B G k`` edges come from per-token
  sums and the kNN adjacency (float64), and since BatchNorm (a per-channel affine map) and
  LeakyReLU are monotone, the max over ``k`` is taken *before* them (min where the BN scale is
  negative). Backward saves only ``O(B G D)`` tensors (the input, the two per-token products,
  the selected neighbour per channel) and evaluates BatchNorm's training-mode gradient over all
  edges in closed form. Logits and gradients agree with the autograd paths to float rounding
  (tested at 1e-6); the one divergence is a subgradient choice when two neighbours tie exactly.
* ``factorised`` — the same factorised products, but the ``(B, G, k, D)`` edge tensor goes
  through ``BatchNorm2d`` / ``LeakyReLU`` / ``max`` under plain autograd (kept for backward).
* ``official`` — ``DGCNNView.forward`` literally: ``Conv2d`` on the concatenated edge tensor.

Written against the core's :class:`~polyprompt.core.prompts.generator.PromptGenerator` base
(input / output validation). Vectorised in torch (``torch.cdist`` + ``topk``), no extension.

Example (patch tokens ``(B, G, D)`` -> prompt ``(B, 1, D)``)::

    >>> import torch
    >>> gen = DGCNNPromptGenerator(dim=32, k=8)
    >>> gen(torch.randn(4, 16, 32)).shape
    torch.Size([4, 1, 32])
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from polyprompt.core.errors import ConfigError, ShapeError
from polyprompt.core.prompts.generator import PromptGenerator
from polyprompt.pointcloud.ops import index_points

__all__ = ["DGCNNPromptGenerator", "EdgeConvMode", "LeanEdgeConv", "edge_features", "feature_knn"]


class EdgeConvMode(str, Enum):
    """How :class:`DGCNNPromptGenerator` evaluates its EdgeConv layers (same function)."""

    LEAN = "lean"
    FACTORISED = "factorised"
    OFFICIAL = "official"


def feature_knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, N, k)`` of the ``k`` nearest tokens of every token of ``x (B, N, C)``
    (Euclidean, itself included; the official ``knn``). Not differentiable (as in DGCNN)."""
    with torch.no_grad():
        return torch.cdist(x, x).topk(k, dim=-1, largest=False, sorted=True).indices


def edge_features(x: torch.Tensor, k: int) -> torch.Tensor:
    """DGCNN's ``get_graph_feature``: ``x (B, N, C)`` -> ``(B, 2C, N, k)`` = ``[xj - xi, xi]`` over
    the ``k`` nearest neighbours of every ``xi`` in feature space (itself included)."""
    idx = feature_knn(x, k)  # (B, N, k)
    nbrs = index_points(x, idx)  # (B, N, k, C)
    center = x.unsqueeze(2).expand_as(nbrs)
    return torch.cat([nbrs - center, center], dim=-1).permute(0, 3, 1, 2).contiguous()


def _adjacency(idx: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """``A (B, N, N)``: ``A[b, i, j] = 1`` iff token ``j`` is one of the ``k`` neighbours of ``i``."""
    a = torch.zeros(idx.shape[0], idx.shape[1], n, dtype=dtype, device=idx.device)
    return a.scatter_(2, idx, 1.0)


def _neighbour_argmax(u: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``jsel (B, N, D)``: per token ``i`` and channel, the neighbour ``j`` in ``idx[:, i]``
    with the largest ``u[:, j]`` (exact; among equal values the larger token index).

    float32: a running max over the ``k`` neighbours of int64 keys ``(order-preserving int of
    the float bits) << 16 | j`` (``torch.max`` with indices over the ``k`` dimension of a
    ``(B, N, k, D)`` tensor is several times slower on CPU).
    """
    b, n, d = u.shape
    if u.dtype != torch.float32 or n >= 2**16:  # plain max with indices (exact, slower)
        sel = index_points(u, idx).max(dim=2).indices  # (B, N, D) position in 0..k-1
        return torch.gather(idx, 2, sel)
    bits = u.contiguous().view(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # monotone in the float value
    tok = torch.arange(n, device=u.device).view(1, n, 1)
    keys = ((bits.long() << 16) | tok).reshape(b * n, d)  # token index in the low 16 bits
    rows = (idx + torch.arange(b, device=idx.device).view(b, 1, 1) * n).permute(2, 0, 1)
    rows = rows.reshape(idx.shape[-1], b * n)  # (k, B N) row of the t-th neighbour
    best = keys.index_select(0, rows[0])
    cand = torch.empty_like(best)
    for t in range(1, idx.shape[-1]):  # k slabs of (B N, D): cache-sized, no (B, N, k, D) tensor
        torch.index_select(keys, 0, rows[t], out=cand)
        torch.maximum(best, cand, out=best)
    best = best.view(b, n, d)
    return best & 0xFFFF


class LeanEdgeConv(torch.autograd.Function):
    """One memory-lean EdgeConv (``Conv2d(2D->D, 1x1) -> BatchNorm2d -> LeakyReLU -> max_k``).

    ``apply(x (B, N, D), weight (D, 2D, 1, 1), gamma (D,), beta (D,), idx (B, N, k),
    running_mean, running_var, training, momentum, eps, slope)`` -> ``(B, N, D)``.

    Forward: ``u = x W1^T``, ``v = x (W2 - W1)^T`` (so the edge value of ``(i, j)`` is
    ``z_ij = u_j + v_i``, the same float as the factorised path); the edge tensor
    ``z (B, N, k, D)`` exists only transiently to pick, per channel, the neighbour with the
    largest (BN scale ``>= 0``) or smallest (scale ``< 0``) ``z``. BatchNorm's batch mean /
    variance over all ``B N k`` edges are per-token sums weighted by the kNN in-degree and the
    adjacency product ``A u`` (float64). Running statistics update as ``nn.BatchNorm2d``'s.

    Backward (closed form of ``BatchNorm2d``'s training-mode gradient, which is dense over the
    edges even though the max routes the incoming gradient to one edge per channel):
    ``dz_e = s (gy_e - sum(gy) / M - zhat_e sum(gy zhat) / M)`` with ``s = gamma * invstd``;
    its sums over the ``k`` edges of a token (``-> dv``) and over the edges that point at a
    token (``-> du``) need only ``A u``, ``A^T v`` and the in-degrees.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        gamma: torch.Tensor,
        beta: torch.Tensor,
        idx: torch.Tensor,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        training: bool,
        momentum: float,
        eps: float,
        slope: float,
    ) -> torch.Tensor:
        b, n, d = x.shape
        k = idx.shape[-1]
        w = weight.reshape(d, 2 * d)
        w1, wd = w[:, :d], w[:, d:] - w[:, :d]
        u = x @ w1.t()  # (B, N, D): W1 xj per neighbour token j
        v = x @ wd.t()  # (B, N, D): (W2 - W1) xi per centre token i
        m = b * n * k
        if training:
            a = _adjacency(idx, n, torch.float64)
            indeg = a.sum(dim=1).unsqueeze(-1)  # (B, N, 1): edges pointing at token j
            ud, vd = u.double(), v.double()
            au = torch.bmm(a, ud)  # sum of u over the neighbours of i
            s1 = (indeg * ud).sum((0, 1)) + k * vd.sum((0, 1))
            s2 = (indeg * ud * ud).sum((0, 1)) + 2 * (vd * au).sum((0, 1))
            s2 = s2 + k * (vd * vd).sum((0, 1))
            mean = s1 / m
            var = (s2 / m - mean * mean).clamp_min(0.0)
            if running_mean is not None and running_var is not None:
                unbiased = var * (m / max(m - 1, 1))
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        else:
            if running_mean is None or running_var is None:
                raise ConfigError("LeanEdgeConv: eval mode needs running statistics")
            mean, var = running_mean.double(), running_var.double()
        invstd = (var + eps).rsqrt()
        scale = invstd * gamma.double()
        alpha = scale.to(x.dtype)
        shift = (beta.double() - mean * scale).to(x.dtype)
        sign = None if bool((gamma >= 0).all()) else torch.where(gamma >= 0, 1.0, -1.0)
        jsel = _neighbour_argmax(u if sign is None else u * sign.to(u.dtype), idx)
        zsel = u.gather(1, jsel) + v  # the selected edge's z: the same float as the edge tensor's
        y = zsel * alpha + shift  # BatchNorm of the selected edge
        out = F.leaky_relu(y, slope)
        jsel_small = jsel.to(torch.int32)  # token indices < 2**16
        ctx.save_for_backward(x, weight, gamma, idx, u, v, jsel_small, zsel, mean, invstd)
        ctx.training, ctx.slope, ctx.m = training, slope, m
        ctx.alpha, ctx.shift = alpha, shift
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):  # type: ignore[override]
        x, weight, gamma, idx, u, v, jsel, zsel, mean, invstd = ctx.saved_tensors
        jsel = jsel.long()
        n, d = x.shape[1], x.shape[2]
        w = weight.reshape(d, 2 * d)
        w1, wd = w[:, :d], w[:, d:] - w[:, :d]
        k, m = idx.shape[-1], ctx.m
        dt = x.dtype
        y = zsel * ctx.alpha + ctx.shift
        gy = torch.where(y > 0, grad, grad * ctx.slope)  # LeakyReLU' at the selected edge
        zhat = (zsel.double() - mean) * invstd  # normalised selected edge
        g_beta = gy.double().sum((0, 1))
        g_gamma = (gy.double() * zhat).sum((0, 1))
        s = (gamma.double() * invstd).to(dt)
        scat = torch.zeros_like(u).scatter_add_(1, jsel, gy)  # (B, N, D) at neighbour j
        if ctx.training:
            a = _adjacency(idx, n, dt)
            indeg = a.sum(dim=1).unsqueeze(-1)  # (B, N, 1)
            cb = (g_beta / m).to(dt)
            cg = (g_gamma / m * invstd).to(dt)  # includes invstd of zhat_e
            meand = mean.to(dt)
            # sum_k zhat_ik / invstd = (A u)_i + k v_i - k mean ; same for edges into j
            zsum_out = torch.bmm(a, u) + k * v - k * meand
            zsum_in = indeg * u + torch.bmm(a.transpose(1, 2), v) - indeg * meand
            g_v = s * (gy - k * cb - cg * zsum_out)
            g_u = s * (scat - indeg * cb - cg * zsum_in)
        else:
            g_v, g_u = s * gy, s * scat
        g_x = g_w = None
        if ctx.needs_input_grad[0]:
            g_x = g_u @ w1 + g_v @ wd
        if ctx.needs_input_grad[1]:
            xf = x.reshape(-1, d)
            gwd = g_v.reshape(-1, d).t() @ xf
            gw1 = g_u.reshape(-1, d).t() @ xf - gwd
            g_w = torch.cat([gw1, gwd], dim=1).reshape(d, 2 * d, 1, 1)
        g_g = g_gamma.to(gamma.dtype) if ctx.needs_input_grad[2] else None
        g_b = g_beta.to(gamma.dtype) if ctx.needs_input_grad[3] else None
        return g_x, g_w, g_g, g_b, None, None, None, None, None, None, None


class DGCNNPromptGenerator(PromptGenerator):
    """Patch tokens ``(B, G, D)`` -> one instance-aware prompt ``(B, 1, D)`` (``DGCNNView``).

    Args:
        dim: token width ``D`` (the backbone's ``embed_dim``).
        k: neighbours of the feature-space kNN graph (official 20); must be ``<= G`` at run time.
        negative_slope: LeakyReLU slope (0.2).
        edge_conv: :class:`EdgeConvMode` (``lean`` default; ``official`` = the literal layout).

    Parameter count: ``3 * 2D * D + 3D * D`` weights + 4 BatchNorms (``D = 384``: 1.33 M).
    """

    input_ranks = (3,)

    def __init__(
        self,
        dim: int,
        k: int = 20,
        negative_slope: float = 0.2,
        edge_conv: EdgeConvMode | str = EdgeConvMode.LEAN,
    ) -> None:
        super().__init__(num_tokens=1, dim=dim, in_dim=dim)
        self.k = int(k)
        try:
            self.edge_conv = EdgeConvMode(edge_conv)
        except ValueError:
            modes = [m.value for m in EdgeConvMode]
            raise ConfigError(
                f"DGCNNPromptGenerator.edge_conv: must be one of {modes}, got {edge_conv!r}"
            ) from None
        d = self.dim

        def edge_conv_layer() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(2 * d, d, kernel_size=1, bias=False),
                nn.BatchNorm2d(d),
                nn.LeakyReLU(negative_slope),
            )

        self.conv1 = edge_conv_layer()
        self.conv2 = edge_conv_layer()
        self.conv3 = edge_conv_layer()
        self.conv5 = nn.Sequential(
            nn.Conv1d(3 * d, d, kernel_size=1, bias=False),
            nn.BatchNorm1d(d),
            nn.LeakyReLU(negative_slope),
        )

    def _edge_conv(self, layer: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """One EdgeConv, factorised: ``x (B, N, D)`` -> ``(B, N, D)`` (max over ``k``).

        ``Conv2d(2D -> D, 1x1, bias=False)`` on ``[xj - xi, xi]`` is linear, so it equals
        ``W1 xj + (W2 - W1) xi`` with ``W = [W1 | W2]``: both products are computed once per
        token and gathered per edge (``k`` times fewer multiply-adds than convolving the
        ``(B, 2D, N, k)`` edge tensor; same result up to float rounding, same parameters).
        """
        conv, bn, act = layer[0], layer[1], layer[2]
        d = self.dim
        w = conv.weight.view(d, 2 * d)
        w1, w2 = w[:, :d], w[:, d:]
        idx = feature_knn(x, self.k)
        nbr = x @ w1.t()  # (B, N, D)
        ctr = x @ (w2 - w1).t()
        edges = index_points(nbr, idx) + ctr.unsqueeze(2)  # (B, N, k, D)
        edges = act(bn(edges.permute(0, 3, 1, 2)))  # (B, D, N, k)
        return edges.max(dim=-1).values.transpose(1, 2)  # (B, N, D)

    def _lean_edge_conv(self, layer: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """One EdgeConv through :class:`LeanEdgeConv` (same parameters and buffers)."""
        conv, bn, act = layer[0], layer[1], layer[2]
        training = bn.training or bn.running_mean is None
        momentum = 0.0 if bn.momentum is None else float(bn.momentum)
        if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                momentum = 1.0 / float(bn.num_batches_tracked)
        running = bn.training and bn.track_running_stats
        return LeanEdgeConv.apply(
            x,
            conv.weight,
            bn.weight,
            bn.bias,
            feature_knn(x, self.k),
            bn.running_mean if running or not training else None,
            bn.running_var if running or not training else None,
            training,
            momentum,
            float(bn.eps),
            float(act.negative_slope),
        )

    def _lean_head(self, x: torch.Tensor) -> torch.Tensor:
        """``conv5`` (``Conv1d(3D -> D)``, ``BatchNorm1d``, LeakyReLU) on ``(B, G, 3D)`` tokens as
        a matrix product on ``(B G, 3D)`` rows (same parameters; 1x1 convolution = linear), then
        the global max over the tokens -> ``(B, D)``."""
        conv, bn, act = self.conv5[0], self.conv5[1], self.conv5[2]
        b, g, _ = x.shape
        h = F.linear(x.reshape(b * g, -1), conv.weight.squeeze(-1))  # (B G, D)
        h = act(bn(h))  # BatchNorm1d on (rows, channels): statistics over the same B G values
        return h.view(b, g, -1).max(dim=1).values

    def generate(self, features: torch.Tensor, **context: Any) -> torch.Tensor:
        g = features.shape[1]
        if g < self.k:
            raise ShapeError(
                f"DGCNNPromptGenerator: k={self.k} neighbours need at least {self.k} patch "
                f"tokens, got {g} (features {tuple(features.shape)})"
            )
        if self.edge_conv == EdgeConvMode.OFFICIAL:
            return self.reference_generate(features)
        if self.edge_conv == EdgeConvMode.LEAN:
            x1 = self._lean_edge_conv(self.conv1, features)
            x2 = self._lean_edge_conv(self.conv2, x1)
            x3 = self._lean_edge_conv(self.conv3, x2)
            return self._lean_head(torch.cat([x1, x2, x3], dim=-1)).unsqueeze(1)
        x1 = self._edge_conv(self.conv1, features)
        x2 = self._edge_conv(self.conv2, x1)
        x3 = self._edge_conv(self.conv3, x2)
        x = self.conv5(torch.cat([x1, x2, x3], dim=-1).transpose(1, 2))  # (B, D, G)
        return x.max(dim=-1).values.unsqueeze(1)  # (B, 1, D)

    def reference_generate(self, features: torch.Tensor) -> torch.Tensor:
        """The official ``DGCNNView.forward`` literally (Conv2d on the edge tensor)."""
        x1 = self.conv1(edge_features(features, self.k)).max(dim=-1).values  # (B, D, G)
        x2 = self.conv2(edge_features(x1.transpose(1, 2), self.k)).max(dim=-1).values
        x3 = self.conv3(edge_features(x2.transpose(1, 2), self.k)).max(dim=-1).values
        x = self.conv5(torch.cat([x1, x2, x3], dim=1))
        return x.max(dim=-1).values.unsqueeze(1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, k={self.k}, edge_conv={self.edge_conv.value}"
