"""Point-set operations in plain, vectorised torch: input checks, FPS, kNN, grouping, Chamfer.

Point-MAE (Pang et al., ECCV 2022) and IDPT (Zha et al., ICCV 2023) call CUDA extensions for
these (``pointnet2_ops.furthest_point_sample``, ``knn_cuda.KNN``, ``chamfer_dist``; see
``models/Point_MAE.py`` ``Group`` and ``extensions/chamfer_dist`` of the official repos).
Here they are written with batched tensor ops so they run anywhere (CPU or GPU) with no
compiled extension:

* :func:`farthest_point_sample` — one loop over the ``G`` centres, each step vectorised over
  the batch and the points (``O(G * B * N)``), starting from point 0 like ``pointnet2_ops``;
* :func:`knn_indices` — ``torch.cdist`` + ``topk`` (exact);
* :func:`group_points` — FPS centres + kNN neighbourhoods, re-centred (the official ``Group``);
* :func:`chamfer_l2` — the squared-distance Chamfer loss of ``ChamferDistanceL2``.

Example (clouds ``(B, N, 3)`` -> patches ``(B, G, S, 3)`` and centres ``(B, G, 3)``)::

    >>> import torch
    >>> pts = torch.rand(2, 256, 3)
    >>> patches, centers = group_points(pts, num_group=16, group_size=8)
    >>> tuple(patches.shape), tuple(centers.shape)
    ((2, 16, 8, 3), (2, 16, 3))
    >>> float(chamfer_l2(pts, pts))
    0.0
"""

from __future__ import annotations

import torch

from polyprompt.core.errors import InputError, NonFiniteError, ShapeError

__all__ = [
    "chamfer_l2",
    "farthest_point_sample",
    "group_points",
    "index_points",
    "knn_indices",
    "prepare_points",
]


def prepare_points(
    x: object, *, min_points: int = 1, where: str = "points", lift_2d: bool = True
) -> torch.Tensor:
    """Validate a batch of point clouds and return its xyz coordinates ``(B, N, 3)`` (float).

    Accepted layouts of ``x`` ``(B, N, C)``:

    * ``C == 3``: xyz;
    * ``C == 6``: xyz + normals (ModelNet ``*_normal_resampled``): the normals are dropped;
    * ``C == 2``: planar points (the PointNet++ MNIST protocol) are **lifted to 3-D with z = 0**
      when ``lift_2d`` (documented, not silent: ``lift_2d=False`` rejects them).

    Raises:
        ShapeError: not a 3-D tensor, another channel count, an empty batch or empty clouds,
            or fewer than ``min_points`` points per cloud.
        NonFiniteError: NaN or infinite coordinates (the message counts them and names the
            first bad cloud).
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(
            f"{where}: points must be a torch.Tensor (B, N, 3), got {type(x).__name__}"
        )
    if x.dim() != 3:
        hint = " (one cloud? add a batch dimension: x.unsqueeze(0))" if x.dim() == 2 else ""
        raise ShapeError(
            f"{where}: points must have shape (B, N, 3|6|2), got {tuple(x.shape)}{hint}"
        )
    b, n, c = (int(s) for s in x.shape)
    if b == 0:
        raise ShapeError(f"{where}: empty batch, shape {tuple(x.shape)}")
    if n == 0:
        raise ShapeError(f"{where}: the point clouds are empty (0 points), shape {tuple(x.shape)}")
    if c == 6:
        x = x[..., :3]
    elif c == 2:
        if not lift_2d:
            raise ShapeError(f"{where}: 2-D points (B, N, 2) are not accepted here; pass xyz")
        x = torch.cat([x, torch.zeros_like(x[..., :1])], dim=-1)
    elif c != 3:
        raise ShapeError(
            f"{where}: the last dimension must be 3 (xyz), 6 (xyz + normals) or 2 (planar "
            f"points, lifted to z = 0), got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        x = x.float()
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        first = int(bad.reshape(b, -1).any(dim=1).nonzero()[0, 0])
        raise NonFiniteError(
            f"{where}: {int(torch.isnan(x).sum())} NaN and {int(torch.isinf(x).sum())} infinite "
            f"coordinates (first in cloud {first}; shape {tuple(x.shape)})"
        )
    if n < min_points:
        raise ShapeError(
            f"{where}: each cloud has {n} points, fewer than the {min_points} needed "
            f"(shape {tuple(x.shape)})"
        )
    return x


def index_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather ``points (B, N, C)`` at ``idx (B, ...)`` -> ``(B, ..., C)`` (batched indexing)."""
    b = points.shape[0]
    batch = torch.arange(b, device=points.device).view(b, *([1] * (idx.dim() - 1)))
    return points[batch, idx]


def farthest_point_sample(
    xyz: torch.Tensor, num_samples: int, *, where: str = "farthest_point_sample"
) -> torch.Tensor:
    """Indices ``(B, num_samples)`` of farthest-point samples of ``xyz (B, N, 3)``.

    Starts from point 0 of every cloud (as ``pointnet2_ops.furthest_point_sample`` does), then
    repeatedly takes the point farthest from the chosen set. Vectorised over the batch.

    Raises:
        InputError: a cloud has fewer than ``num_samples`` *distinct* points (duplicates): the
            sample would repeat a centre and the kNN patches would coincide.
    """
    b, n, _ = xyz.shape
    if num_samples > n:
        raise ShapeError(f"{where}: cannot sample {num_samples} centres from clouds of {n} points")
    idx = torch.zeros(b, num_samples, dtype=torch.long, device=xyz.device)
    dist = torch.full((b, n), float("inf"), dtype=xyz.dtype, device=xyz.device)
    farthest = torch.zeros(b, dtype=torch.long, device=xyz.device)
    # squared distance of each chosen centre (after the first) to the earlier ones
    gaps = torch.full((b, num_samples), float("inf"), dtype=xyz.dtype, device=xyz.device)
    rows = torch.arange(b, device=xyz.device)
    for i in range(num_samples):
        idx[:, i] = farthest
        centroid = xyz[rows, farthest].unsqueeze(1)  # (B, 1, 3)
        dist = torch.minimum(dist, ((xyz - centroid) ** 2).sum(-1))
        if i + 1 < num_samples:
            gaps[:, i + 1], farthest = dist.max(dim=1)
    dup = gaps <= 0
    if bool(dup.any()):
        cloud = int(dup.any(dim=1).nonzero()[0, 0])
        distinct = int(torch.unique(xyz[cloud], dim=0).shape[0])
        raise InputError(
            f"{where}: cloud {cloud} has only {distinct} distinct points but {num_samples} "
            "distinct centres are needed (duplicate points): deduplicate or resample the cloud"
        )
    return idx


def knn_indices(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, M, k)`` of the ``k`` nearest ``points (B, N, C)`` of each ``query (B, M, C)``,
    nearest first (``knn_cuda.KNN(k, transpose_mode=True)``)."""
    if k > points.shape[1]:
        raise ShapeError(f"knn_indices: k={k} exceeds the {points.shape[1]} points per cloud")
    d = torch.cdist(query, points)
    return d.topk(k, dim=-1, largest=False, sorted=True).indices


def group_points(
    xyz: torch.Tensor, num_group: int, group_size: int, *, where: str = "group_points"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Point-MAE's ``Group``: FPS centres + kNN patches, re-centred on their centre.

    Shapes: ``xyz (B, N, 3)`` -> ``(patches (B, G, S, 3), centers (B, G, 3))``.
    """
    xyz = prepare_points(xyz, min_points=max(num_group, group_size), where=where)
    center_idx = farthest_point_sample(xyz, num_group, where=where)
    centers = index_points(xyz, center_idx)
    nbr = knn_indices(centers, xyz, group_size)
    patches = index_points(xyz, nbr) - centers.unsqueeze(2)
    return patches, centers


def chamfer_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Chamfer distance with squared L2 (``ChamferDistanceL2``): mean over ``a`` of the squared
    distance to the nearest point of ``b`` plus the same from ``b`` to ``a``, averaged over the
    batch. Shapes: ``a (B, N, 3)``, ``b (B, M, 3)`` -> scalar."""
    d = torch.cdist(a, b).pow(2)
    return d.min(dim=2).values.mean() + d.min(dim=1).values.mean()
