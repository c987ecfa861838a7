import h5py
import numpy as np
import pytest
import torch

from polyprompt.core.errors import InputError
from polyprompt.pointcloud.data import (
    PointAugment,
    load_digit_points,
    load_furniture,
    load_modelnet40,
    load_point_dataset,
    load_scanobjectnn,
    primitive_clouds,
    split_data,
)


def _modelnet_txt(root, n_points=40):
    rng = np.random.default_rng(0)
    classes = ["airplane", "night_stand"]
    (root / "modelnet40_shape_names.txt").write_text("\n".join(classes) + "\n")
    ids = {"train": [], "test": []}
    for c in classes:
        (root / c).mkdir()
        for i in range(1, 4):
            sid = f"{c}_{i:04d}"
            rows = rng.normal(size=(n_points, 6))
            np.savetxt(root / c / f"{sid}.txt", rows, delimiter=",", fmt="%.6f")
            ids["train" if i < 3 else "test"].append(sid)
    for split, lst in ids.items():
        (root / f"modelnet40_{split}.txt").write_text("\n".join(lst) + "\n")


def test_modelnet40_txt_layout(tmp_path):
    _modelnet_txt(tmp_path)
    train = load_modelnet40(tmp_path, "train", num_points=32)
    assert train.points.shape == (4, 32, 3) and train.class_names == ["airplane", "night_stand"]
    assert train.labels.tolist() == [0, 0, 1, 1]
    assert train.ids[2] == "night_stand_0001"
    assert float(train.points.norm(dim=-1).max()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(InputError, match="40 points, 64 asked"):
        load_modelnet40(tmp_path, "test", num_points=64)
    tr, te = load_point_dataset(tmp_path, num_points=16)
    assert len(tr) == 4 and len(te) == 2


def _h5(path, n, points=64, classes=3):
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        f["data"] = rng.normal(size=(n, points, 3)).astype(np.float32)
        f["label"] = (np.arange(n) % classes).astype(np.uint8).reshape(-1, 1)


def test_modelnet40_hdf5_layout(tmp_path):
    _h5(tmp_path / "ply_data_train0.h5", 5)
    _h5(tmp_path / "ply_data_train1.h5", 4)
    _h5(tmp_path / "ply_data_test0.h5", 3)
    (tmp_path / "shape_names.txt").write_text("a\nb\nc\n")
    train = load_modelnet40(tmp_path, "train", num_points=64)
    assert train.points.shape == (9, 64, 3) and train.class_names == ["a", "b", "c"]


def test_scanobjectnn_layout(tmp_path):
    split = tmp_path / "main_split"
    split.mkdir()
    _h5(split / "training_objectdataset.h5", 6, classes=15)
    _h5(split / "test_objectdataset.h5", 4, classes=15)
    train = load_scanobjectnn(tmp_path, "train", "objectbg", num_points=32)
    assert train.points.shape == (6, 32, 3) and train.class_names[4] == "chair"
    tr, te = load_point_dataset(tmp_path, num_points=32)
    assert (len(tr), len(te)) == (6, 4)
    with pytest.raises(InputError, match="no test_objectdataset_augmentedrot_scale75.h5"):
        load_scanobjectnn(tmp_path, "test", "hardest")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="matches no known layout"):
        load_point_dataset(tmp_path / "empty")


def test_real_furniture_subset_split_by_mesh():
    data = load_furniture(256, classes=["Vehicles", "Lights"], max_per_class=6, progress=False)
    assert data.points.shape == (12, 256, 3) and data.class_names == ["Vehicles", "Lights"]
    assert len(set(data.ids)) == 12  # one cloud per mesh
    s = split_data(data, 0.25, 0.25, seed=0)
    assert not set(s.train.ids) & set(s.test.ids)
    again = load_furniture(256, classes=["Vehicles", "Lights"], max_per_class=6, progress=False)
    assert torch.equal(again.points, data.points)  # cached


def test_digit_point_sets():
    d = load_digit_points(64, max_samples=20)
    assert d.points.shape == (20, 64, 3) and bool((d.points[..., 2] == 0).all())
    assert d.num_classes == 10
    assert min(torch.unique(p, dim=0).shape[0] for p in d.points) == 64  # no duplicates


def test_augmentations_and_primitives():
    torch.manual_seed(0)
    x = primitive_clouds(7, 64)
    assert x.shape == (7, 64, 3) and bool(torch.isfinite(x).all())
    aug = PointAugment(scale_translate=True, jitter=0.01, rotate=True, dropout=0.5)
    y = aug(x[0])
    assert y.shape == (64, 3) and not torch.allclose(y, x[0])
    assert not PointAugment.none().active
