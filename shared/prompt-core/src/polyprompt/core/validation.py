"""Boundary checks: fail early with a message of ours instead of deep inside torch.

Example::

    >>> import torch
    >>> from polyprompt.core.validation import check_tensor
    >>> check_tensor(torch.zeros(2, 3, 32, 32), "images", rank=4, dims={1: 3})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from polyprompt.core.errors import InputError, NonFiniteError, ShapeError

if TYPE_CHECKING:
    import torch


def check_tensor(
    x: object,
    name: str,
    *,
    rank: int | tuple[int, ...] | None = None,
    dims: Mapping[int, int] | None = None,
    finite: bool = True,
    min_size: Mapping[int, int] | None = None,
    where: str = "",
) -> torch.Tensor:
    """Validate ``x`` and return it.

    Args:
        x: the value to check; must be a ``torch.Tensor``.
        name: argument name used in the message (e.g. ``"images"``).
        rank: allowed number of dimensions.
        dims: required sizes, ``{dim_index: size}`` (negative indices allowed).
        finite: reject NaN / inf in floating tensors.
        min_size: minimum sizes, ``{dim_index: size}``.
        where: the caller (e.g. ``"TimmViTAdapter.embed"``), prefixed to messages.

    Raises:
        ShapeError: wrong type, rank or size.  NonFiniteError: NaN or inf values.
    """
    import torch

    prefix = f"{where}: " if where else ""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{prefix}`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if rank is not None:
        ranks = (rank,) if isinstance(rank, int) else tuple(rank)
        if x.dim() not in ranks:
            want = " or ".join(str(r) for r in ranks)
            raise ShapeError(
                f"{prefix}`{name}` must have {want} dimensions, got shape {tuple(x.shape)}"
            )
    for d, size in (dims or {}).items():
        if x.shape[d] != size:
            raise ShapeError(
                f"{prefix}`{name}` dimension {d} must be {size}, got shape {tuple(x.shape)}"
            )
    for d, size in (min_size or {}).items():
        if x.shape[d] < size:
            raise ShapeError(
                f"{prefix}`{name}` dimension {d} must be at least {size}, got shape {tuple(x.shape)}"
            )
    if finite and x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise NonFiniteError(
            f"{prefix}`{name}` holds {n_nan} NaN and {n_inf} infinite values (shape {tuple(x.shape)})"
        )
    return x
