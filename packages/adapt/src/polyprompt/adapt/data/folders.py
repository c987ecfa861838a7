"""Loaders for the paper's data sets in their official folder layouts (train ids, 19 classes).

* **Cityscapes** (source): ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
  ``gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png``.
* **ACDC** (target): ``rgb_anon/<condition>/<split>/<seq>/<name>_rgb_anon.png`` with
  ``gt/<condition>/<split>/<seq>/<name>_gt_labelTrainIds.png``; conditions ``fog``,
  ``night``, ``rain``, ``snow`` (tags of the images; absent condition folders are skipped).
* **Dark Zurich**: ``rgb_anon/<split>/night/<seq>/<name>_rgb_anon.png`` with
  ``gt/<split>/night/<seq>/<name>_gt_labelTrainIds.png`` (``train`` has no labels).
* **Foggy Zurich**: ``lists_file_names/RGB_<split>_filenames.txt`` (image paths relative to
  the root) and, for labelled splits, ``lists_file_names/gt_labelTrainIds_<split>_filenames.txt``
  (the same order), e.g. ``split="testv2"``; unlabelled ``light`` / ``medium`` lists work too.

``*_labelTrainIds.png`` hold train ids 0-18 and 255 (ignore). Images are resized
(bilinear; labels nearest) to ``resize=(H, W)`` when given; otherwise all images must share
one size. Everything is checked on load: image vs label size, label ids outside
``[0, num_classes)`` other than 255, grayscale / RGBA images, empty folders.

Example::

    >>> src = cityscapes("/data/cityscapes", split="train", resize=(256, 512))  # doctest: +SKIP
    >>> tgt = acdc("/data/acdc", conditions=("fog", "night"), split="train", labels=False)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from polyprompt.adapt.data.common import (
    IGNORE_INDEX,
    SegmentationSet,
    as_rgb_float,
    stack_pairs,
)
from polyprompt.core.errors import InputError

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip


def _read_image(path: Path, resize: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("RGB",):
            kind = {"L": "grayscale", "RGBA": "RGBA", "LA": "grayscale+alpha"}.get(im.mode, im.mode)
            raise InputError(f"image {path} is {kind} (mode {im.mode}); RGB images are needed")
        if resize is not None:
            im = im.resize((resize[1], resize[0]), Image.BILINEAR)
        return as_rgb_float(np.asarray(im), str(path))


def _read_label(path: Path, resize: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise InputError(f"missing label map {path}")
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise InputError(
                f"label map {path} has mode {im.mode}; single-channel train ids needed"
            )
        if resize is not None:
            im = im.resize((resize[1], resize[0]), Image.NEAREST)
        return np.asarray(im).astype(np.int64)


def load_pairs(
    image_paths: Sequence[Path],
    label_paths: Sequence[Path] | None,
    *,
    name: str,
    num_classes: int = 19,
    resize: tuple[int, int] | None = None,
    tags: Sequence[str] = (),
    class_names: Sequence[str] = CITYSCAPES_CLASSES,
) -> SegmentationSet:
    """Read image (and label) files into a checked :class:`SegmentationSet`."""
    where = f"{name} loader"
    if not image_paths:
        raise InputError(f"{where}: no images found (empty set)")
    images = [_read_image(p, resize) for p in image_paths]
    labels = None if label_paths is None else [_read_label(p, resize) for p in label_paths]
    names = [p.name for p in image_paths]
    x, y = stack_pairs(images, labels, names, where)
    return SegmentationSet(
        x,
        y,
        num_classes,
        name=name,
        ignore_index=IGNORE_INDEX,
        names=names,
        tags=list(tags),
        class_names=class_names,
    )


def _paired(
    image_root: Path, label_root: Path | None, img_suffix: str, lbl_suffix: str, limit: int | None
) -> tuple[list[Path], list[Path] | None]:
    if not image_root.is_dir():
        raise InputError(f"no image folder {image_root}")
    imgs = sorted(image_root.rglob(f"*{img_suffix}"))[: limit or None]
    if label_root is None:
        return imgs, None
    lbls = [
        label_root / p.relative_to(image_root).with_name(p.name[: -len(img_suffix)] + lbl_suffix)
        for p in imgs
    ]
    return imgs, lbls


def cityscapes(
    root: str | Path,
    split: str = "train",
    *,
    labels: bool = True,
    resize: tuple[int, int] | None = None,
    limit: int | None = None,
) -> SegmentationSet:
    root = Path(root)
    imgs, lbls = _paired(
        root / "leftImg8bit" / split,
        root / "gtFine" / split if labels else None,
        "_leftImg8bit.png",
        "_gtFine_labelTrainIds.png",
        limit,
    )
    return load_pairs(
        imgs, lbls, name=f"cityscapes/{split}", resize=resize, tags=["clear"] * len(imgs)
    )


def acdc(
    root: str | Path,
    conditions: Sequence[str] = ("fog", "night", "rain", "snow"),
    split: str = "train",
    *,
    labels: bool = True,
    resize: tuple[int, int] | None = None,
    limit: int | None = None,
) -> SegmentationSet:
    root = Path(root)
    all_imgs: list[Path] = []
    all_lbls: list[Path] = []
    tags: list[str] = []
    present = [c for c in conditions if (root / "rgb_anon" / c / split).is_dir()]
    if not present:
        raise InputError(
            f"acdc: no condition folder of {list(conditions)} under {root / 'rgb_anon'}"
        )
    for cond in present:
        imgs, lbls = _paired(
            root / "rgb_anon" / cond / split,
            root / "gt" / cond / split if labels else None,
            "_rgb_anon.png",
            "_gt_labelTrainIds.png",
            limit,
        )
        all_imgs += imgs
        all_lbls += lbls or []
        tags += [cond] * len(imgs)
    return load_pairs(
        all_imgs, all_lbls if labels else None, name=f"acdc/{split}", resize=resize, tags=tags
    )


def dark_zurich(
    root: str | Path,
    split: str = "val",
    *,
    labels: bool = True,
    resize: tuple[int, int] | None = None,
    limit: int | None = None,
    time_of_day: str = "night",
) -> SegmentationSet:
    root = Path(root)
    imgs, lbls = _paired(
        root / "rgb_anon" / split / time_of_day,
        root / "gt" / split / time_of_day if labels else None,
        "_rgb_anon.png",
        "_gt_labelTrainIds.png",
        limit,
    )
    return load_pairs(
        imgs, lbls, name=f"dark_zurich/{split}", resize=resize, tags=[time_of_day] * len(imgs)
    )


def foggy_zurich(
    root: str | Path,
    split: str = "testv2",
    *,
    labels: bool = True,
    resize: tuple[int, int] | None = None,
    limit: int | None = None,
) -> SegmentationSet:
    root = Path(root)
    lists = root / "lists_file_names"
    rgb_list = lists / f"RGB_{split}_filenames.txt"
    if not rgb_list.is_file():
        raise InputError(f"foggy_zurich: no file list {rgb_list}")
    imgs = [root / ln.strip() for ln in rgb_list.read_text().splitlines() if ln.strip()][
        : limit or None
    ]
    lbls = None
    if labels:
        gt_list = lists / f"gt_labelTrainIds_{split}_filenames.txt"
        if not gt_list.is_file():
            raise InputError(f"foggy_zurich: split {split!r} has no label list {gt_list}")
        lbls = [root / ln.strip() for ln in gt_list.read_text().splitlines() if ln.strip()]
        lbls = lbls[: len(imgs)]
        if len(lbls) != len(imgs):
            raise InputError(f"foggy_zurich: {len(imgs)} images but {len(lbls)} label maps")
    for p in imgs:
        if not p.is_file():
            raise InputError(f"foggy_zurich: listed image {p} does not exist")
    return load_pairs(
        imgs, lbls, name=f"foggy_zurich/{split}", resize=resize, tags=["fog"] * len(imgs)
    )
