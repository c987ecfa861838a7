"""Loaders: real offline digits and the paper's folder layouts on small local files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from polyprompt.continual.data import (
    ImageSet,
    load_cifar100_folder,
    load_digit_pool,
    load_image_folder,
    load_imagenet_r,
    load_tinyimagenet,
)
from polyprompt.core.errors import InputError, ShapeError


def _png(path, value: int, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def test_optdigits_pool_is_real_and_split():
    train, test = load_digit_pool("optdigits")
    assert len(train) + len(test) == 1797 and train.images.shape[1:] == (1, 32, 32)
    assert set(train.labels.tolist()) == set(range(10)) == set(test.labels.tolist())
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0
    with pytest.raises(InputError, match="source"):
        load_digit_pool("cifar")


def test_cifar100_folder_layout(tmp_path):
    for part, n in (("train", 3), ("test", 1)):
        for c, cls in enumerate(("apple", "bear")):
            for i in range(n):
                _png(tmp_path / part / cls / f"{i}.png", 40 * c + i)
    train, test = load_cifar100_folder(tmp_path, size=8)
    assert train.images.shape == (6, 3, 8, 8) and test.images.shape == (2, 3, 8, 8)
    assert train.class_names == ("apple", "bear") == test.class_names
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    grey = load_image_folder(tmp_path / "train", size=8, channels=1)
    assert grey.images.shape == (6, 1, 8, 8)
    with pytest.raises(InputError, match="missing"):
        load_cifar100_folder(tmp_path / "train")


def test_tinyimagenet_layout(tmp_path):
    wnids = ["n01", "n02"]
    (tmp_path / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for c, w in enumerate(wnids):
        for i in range(2):
            _png(tmp_path / "train" / w / "images" / f"{w}_{i}.JPEG", 50 * c)
    _png(tmp_path / "val" / "images" / "val_0.JPEG", 0)
    _png(tmp_path / "val" / "images" / "val_1.JPEG", 50)
    (tmp_path / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn01\t0\t0\t10\t10\nval_1.JPEG\tn02\t0\t0\t10\t10\n"
    )
    train, test = load_tinyimagenet(tmp_path, size=8)
    assert train.labels.tolist() == [0, 0, 1, 1] and test.labels.tolist() == [0, 1]
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\n")
    with pytest.raises(InputError, match="line 1"):
        load_tinyimagenet(tmp_path, size=8)


def test_imagenet_r_layout_split(tmp_path):
    for c, w in enumerate(("n01443537", "n01484850")):
        for i in range(5):
            _png(tmp_path / w / f"art_{i}.jpg", 30 * c + i)
    train, test = load_imagenet_r(tmp_path, size=8)
    assert len(train) == 8 and len(test) == 2
    assert sorted(test.labels.tolist()) == [0, 1]


def test_bad_folders(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        load_image_folder(tmp_path / "nope")
    _png(tmp_path / "a" / "x.png", 1)
    (tmp_path / "b").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        load_image_folder(tmp_path)
    (tmp_path / "b" / "bad.png").write_bytes(b"broken")
    with pytest.raises(InputError, match="cannot read image"):
        load_image_folder(tmp_path)
    with pytest.raises(ShapeError):
        ImageSet(torch.zeros(2, 8, 8), torch.zeros(2, dtype=torch.long), ("a",))
