"""In-memory segmentation sets and the boundary checks every loader shares.

A :class:`SegmentationSet` holds float RGB images ``(N, 3, H, W)`` in ``[0, 1]``, label
maps ``(N, H, W)`` (int64 class ids, ``ignore_index`` for unlabelled pixels, or ``None``
for an unlabelled target set), names, and optional generation tags (``"clear"``,
``"fog"``, ``"dark"``). Bad inputs fail here with an :class:`~polyprompt.core.errors.InputError`
that names the item: images and label maps of different sizes, label ids outside the
class set, grayscale / RGBA images, NaN pixels, empty sets.

Example::

    >>> import torch
    >>> s = SegmentationSet(torch.rand(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long),
    ...                     num_classes=3, name="toy")
    >>> len(s), s.image_size
    (2, (32, 32))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from polyprompt.core.errors import InputError, NonFiniteError, ShapeError

IGNORE_INDEX = 255


def as_rgb_float(image: object, where: str) -> np.ndarray:
    """A ``(H, W, 3)`` uint8/float array or PIL image -> float32 ``(H, W, 3)`` in ``[0, 1]``.

    Raises:
        InputError: grayscale (2-D or 1 channel) or RGBA / other channel counts, NaN pixels.
    """
    arr = np.asarray(image)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        raise ShapeError(
            f"{where}: image is grayscale (shape {arr.shape}); CoDA needs RGB images "
            "(convert with PIL: Image.convert('RGB'))"
        )
    if arr.ndim != 3 or arr.shape[2] != 3:
        kind = "RGBA" if arr.ndim == 3 and arr.shape[2] == 4 else f"shape {arr.shape}"
        raise ShapeError(
            f"{where}: image must be RGB (H, W, 3), got {kind}; drop the alpha channel"
        )
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise NonFiniteError(
            f"{where}: image holds {int((~np.isfinite(out)).sum())} NaN/inf pixels"
        )
    if out.min() < 0 or out.max() > 1:
        raise InputError(
            f"{where}: float images must lie in [0, 1], got [{out.min():.3g}, {out.max():.3g}]"
        )
    return out


def check_labels(
    labels: torch.Tensor, num_classes: int, ignore_index: int, where: str
) -> torch.Tensor:
    """Raise unless every label id is in ``[0, num_classes)`` or equals ``ignore_index``."""
    if labels.is_floating_point():
        raise InputError(f"{where}: label maps must hold integer class ids, got {labels.dtype}")
    bad = (labels < 0) | ((labels >= num_classes) & (labels != ignore_index))
    if bool(bad.any()):
        values = sorted({int(v) for v in labels[bad].unique()[:8]})
        raise InputError(
            f"{where}: label ids {values} are outside the class set [0, {num_classes}) "
            f"and are not the ignore index {ignore_index}"
        )
    return labels


@dataclass
class SegmentationSet:
    """Images ``(N, 3, H, W)`` float in ``[0, 1]`` + labels ``(N, H, W)`` int64 (or ``None``)."""

    images: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int
    name: str = "set"
    ignore_index: int = IGNORE_INDEX
    names: Sequence[str] = ()
    tags: Sequence[str] = ()
    class_names: Sequence[str] = ()
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"SegmentationSet({self.name!r})"
        if not isinstance(self.images, torch.Tensor):
            raise InputError(f"{where}: images must be a tensor, got {type(self.images).__name__}")
        if self.images.dim() != 4 or self.images.shape[0] == 0:
            raise InputError(
                f"{where}: images must be a non-empty (N, 3, H, W) tensor, got shape "
                f"{tuple(self.images.shape)} (empty target set?)"
            )
        if self.images.shape[1] != 3:
            kind = {1: "grayscale", 4: "RGBA"}.get(int(self.images.shape[1]), "non-RGB")
            raise ShapeError(
                f"{where}: images have {self.images.shape[1]} channels ({kind}); RGB (3) needed"
            )
        if not self.images.is_floating_point():
            raise InputError(f"{where}: images must be float in [0, 1], got {self.images.dtype}")
        if not bool(torch.isfinite(self.images).all()):
            n = int((~torch.isfinite(self.images)).sum())
            raise NonFiniteError(f"{where}: images hold {n} NaN/inf pixels")
        if self.labels is not None:
            if tuple(self.labels.shape) != (self.images.shape[0], *self.images.shape[2:]):
                raise ShapeError(
                    f"{where}: label maps {tuple(self.labels.shape)} do not match images "
                    f"{tuple(self.images.shape)} (need (N, H, W) with the images' N, H, W)"
                )
            check_labels(self.labels, self.num_classes, self.ignore_index, where)
            self.labels = self.labels.long()
        if self.names and len(self.names) != len(self):
            raise InputError(f"{where}: {len(self.names)} names for {len(self)} images")
        if self.tags and len(self.tags) != len(self):
            raise InputError(f"{where}: {len(self.tags)} tags for {len(self)} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(
        self, index: Sequence[int] | torch.Tensor, name: str | None = None
    ) -> SegmentationSet:
        idx = torch.as_tensor(list(index) if not isinstance(index, torch.Tensor) else index)
        if idx.numel() == 0:
            raise InputError(f"SegmentationSet({self.name!r}).subset: empty selection")
        pick = idx.tolist()
        return SegmentationSet(
            self.images[idx],
            None if self.labels is None else self.labels[idx],
            self.num_classes,
            name=name or self.name,
            ignore_index=self.ignore_index,
            names=[self.names[i] for i in pick] if self.names else (),
            tags=[self.tags[i] for i in pick] if self.tags else (),
            class_names=self.class_names,
            meta=dict(self.meta),
        )

    def fingerprint(self) -> str:
        """sha256 (16 hex) of the images and labels: keys caches on the data."""
        import hashlib

        h = hashlib.sha256()
        h.update(self.images.numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.numpy().tobytes())
        return h.hexdigest()[:16]


def stack_pairs(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray] | None,
    names: Sequence[str],
    where: str,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check per-item sizes (image vs label, all items equal) and stack to tensors."""
    if not images:
        raise InputError(f"{where}: no images found (empty set)")
    size = images[0].shape[:2]
    for i, img in enumerate(images):
        if img.shape[:2] != size:
            raise ShapeError(
                f"{where}: {names[i]} is {img.shape[:2]} but {names[0]} is {size}; "
                "resize all images to one size first (resize=...)"
            )
        if labels is not None and labels[i].shape != img.shape[:2]:
            raise ShapeError(
                f"{where}: image {names[i]} is {img.shape[:2]} but its label map is "
                f"{labels[i].shape}; images and label maps must have the same size"
            )
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().float()
    y = None if labels is None else torch.from_numpy(np.stack(labels).astype(np.int64))
    return x, y
