"""IDPT's dynamic prompt generator: a DGCNN over the patch tokens (one prompt per instance).

Paper: Zha et al., ICCV 2023, Sec. 3.2 ("Dynamic Prompt Generation Module"); official
``ICCV23-IDPT`` ``models/dgcnn.py`` ``DGCNNView`` (``prompt_module: dgcnn``):

* kNN graph (``k = 20``) in *feature* space over the ``G`` patch tokens (``knn``: largest
  ``-||xi - xj||^2``, the point itself included);
* three EdgeConv layers, each ``Conv2d(2D -> D, 1, bias=False)`` on ``[xj - xi, xi]`` (computed
  in factorised form, see :meth:`DGCNNPromptGenerator._edge_conv`),
  ``BatchNorm2d``, ``LeakyReLU(0.2)``, max over the ``k`` neighbours; the second and third
  build their graph on the previous layer's output (dynamic graph);
* concat of the three (``3D``) -> ``Conv1d(3D -> D, bias=False)``, ``BatchNorm1d``, LeakyReLU,
  global max-pool over the tokens -> **one** prompt token ``(B, 1, D)``.

Written against the core's :class:`~polyprompt.core.prompts.generator.PromptGenerator` base
(input / output validation). Vectorised in torch (``torch.cdist`` + ``topk``), no extension.

Example (patch tokens ``(B, G, D)`` -> prompt ``(B, 1, D)``)::

    >>> import torch
    >>> gen = DGCNNPromptGenerator(dim=32, k=8)
    >>> gen(torch.randn(4, 16, 32)).shape
    torch.Size([4, 1, 32])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from polyprompt.core.errors import ShapeError
from polyprompt.core.prompts.generator import PromptGenerator
from polyprompt.pointcloud.ops import index_points

__all__ = ["DGCNNPromptGenerator", "edge_features"]


def edge_features(x: torch.Tensor, k: int) -> torch.Tensor:
    """DGCNN's ``get_graph_feature``: ``x (B, N, C)`` -> ``(B, 2C, N, k)`` = ``[xj - xi, xi]`` over
    the ``k`` nearest neighbours of every ``xi`` in feature space (itself included)."""
    d = torch.cdist(x, x)
    idx = d.topk(k, dim=-1, largest=False, sorted=True).indices  # (B, N, k)
    nbrs = index_points(x, idx)  # (B, N, k, C)
    center = x.unsqueeze(2).expand_as(nbrs)
    return torch.cat([nbrs - center, center], dim=-1).permute(0, 3, 1, 2).contiguous()


class DGCNNPromptGenerator(PromptGenerator):
    """Patch tokens ``(B, G, D)`` -> one instance-aware prompt ``(B, 1, D)`` (``DGCNNView``).

    Args:
        dim: token width ``D`` (the backbone's ``embed_dim``).
        k: neighbours of the feature-space kNN graph (official 20); must be ``<= G`` at run time.
        negative_slope: LeakyReLU slope (0.2).

    Parameter count: ``3 * 2D * D + 3D * D`` weights + 4 BatchNorms (``D = 384``: 1.33 M).
    """

    input_ranks = (3,)

    def __init__(self, dim: int, k: int = 20, negative_slope: float = 0.2) -> None:
        super().__init__(num_tokens=1, dim=dim, in_dim=dim)
        self.k = int(k)
        d = self.dim

        def edge_conv() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(2 * d, d, kernel_size=1, bias=False),
                nn.BatchNorm2d(d),
                nn.LeakyReLU(negative_slope),
            )

        self.conv1 = edge_conv()
        self.conv2 = edge_conv()
        self.conv3 = edge_conv()
        self.conv5 = nn.Sequential(
            nn.Conv1d(3 * d, d, kernel_size=1, bias=False),
            nn.BatchNorm1d(d),
            nn.LeakyReLU(negative_slope),
        )

    def _edge_conv(self, layer: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """One EdgeConv: ``x (B, N, D)`` -> ``(B, N, D)`` (max over the ``k`` neighbours).

        ``Conv2d(2D -> D, 1x1, bias=False)`` on ``[xj - xi, xi]`` is linear, so it equals
        ``W1 xj + (W2 - W1) xi`` with ``W = [W1 | W2]``: both products are computed once per
        token and gathered per edge (``k`` times fewer multiply-adds than convolving the
        ``(B, 2D, N, k)`` edge tensor; same result up to float rounding, same parameters).
        """
        conv, bn, act = layer[0], layer[1], layer[2]
        d = self.dim
        w = conv.weight.view(d, 2 * d)
        w1, w2 = w[:, :d], w[:, d:]
        idx = torch.cdist(x, x).topk(self.k, dim=-1, largest=False, sorted=True).indices
        nbr = x @ w1.t()  # (B, N, D)
        ctr = x @ (w2 - w1).t()
        edges = index_points(nbr, idx) + ctr.unsqueeze(2)  # (B, N, k, D)
        edges = act(bn(edges.permute(0, 3, 1, 2)))  # (B, D, N, k)
        return edges.max(dim=-1).values.transpose(1, 2)  # (B, N, D)

    def generate(self, features: torch.Tensor, **context: Any) -> torch.Tensor:
        g = features.shape[1]
        if g < self.k:
            raise ShapeError(
                f"DGCNNPromptGenerator: k={self.k} neighbours need at least {self.k} patch "
                f"tokens, got {g} (features {tuple(features.shape)})"
            )
        x1 = self._edge_conv(self.conv1, features)
        x2 = self._edge_conv(self.conv2, x1)
        x3 = self._edge_conv(self.conv3, x2)
        x = self.conv5(torch.cat([x1, x2, x3], dim=-1).transpose(1, 2))  # (B, D, G)
        return x.max(dim=-1).values.unsqueeze(1)  # (B, 1, D)

    def reference_generate(self, features: torch.Tensor) -> torch.Tensor:
        """The official ``DGCNNView.forward`` literally (Conv2d on the edge tensor); for tests."""
        x1 = self.conv1(edge_features(features, self.k)).max(dim=-1).values  # (B, D, G)
        x2 = self.conv2(edge_features(x1.transpose(1, 2), self.k)).max(dim=-1).values
        x3 = self.conv3(edge_features(x2.transpose(1, 2), self.k)).max(dim=-1).values
        x = self.conv5(torch.cat([x1, x2, x3], dim=1))
        return x.max(dim=-1).values.unsqueeze(1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, k={self.k}"
