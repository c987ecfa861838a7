"""Data loaders on small files in each official layout, MONAI transforms, bad inputs."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from polyprompt.core.errors import InputError, NonFiniteError
from polyprompt.medical import data as md


# ---------------------------------------------------------------- MedMNIST .npz
def _write_npz(path, shape=(28, 28), n=(12, 4, 4), classes=3, **overrides):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (k, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(k) % classes).reshape(k, 1).astype(np.uint8)
    arrays |= overrides
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_medmnist_grey_rgb_and_3d(tmp_path):
    s = md.load_medmnist_npz(_write_npz(tmp_path / "pneumoniamnist.npz"))
    assert s.sizes() == {"train": 12, "val": 4, "test": 4}
    assert s.train.images.shape == (12, 1, 28, 28) and 0 <= s.train.images.min() <= 1
    assert s.train.num_classes == 3 and s.train.labels.tolist()[:4] == [0, 1, 2, 0]
    rgb = md.load_medmnist_npz(_write_npz(tmp_path / "derma.npz", shape=(28, 28, 3)))
    assert rgb.train.images.shape == (12, 3, 28, 28)
    vol = md.load_medmnist_npz(_write_npz(tmp_path / "organ3d.npz", shape=(28, 28, 28)))
    assert vol.test.images.shape == (4, 1, 28, 28, 28) and vol.test.spatial_dims == 3


def test_medmnist_bad_files(tmp_path):
    with pytest.raises(InputError, match="missing arrays"):
        md.load_medmnist_npz(_write_npz(tmp_path / "a.npz", val_labels=None))
    with pytest.raises(InputError, match="multi-label"):
        md.load_medmnist_npz(
            _write_npz(tmp_path / "b.npz", train_labels=np.zeros((12, 14), np.uint8))
        )
    with pytest.raises(InputError, match="12 items"):
        md.load_medmnist_npz(_write_npz(tmp_path / "c.npz", train_labels=np.zeros((11, 1))))
    bad = np.zeros((12, 28, 28), np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(NonFiniteError):
        md.load_medmnist_npz(_write_npz(tmp_path / "d.npz", train_images=bad))
    (tmp_path / "e.npz").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read"):
        md.load_medmnist_npz(tmp_path / "e.npz")


# ---------------------------------------------------------------- APTOS (csv + images)
def _write_aptos(root, n=10):
    (root / "train_images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    with (root / "train.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id_code", "diagnosis"])
        for i in range(n):
            code = f"{i:04x}abcd"
            arr = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / "train_images" / f"{code}.png")
            w.writerow([code, i % 5])
    return root


def test_aptos_layout(tmp_path):
    data = md.load_aptos(_write_aptos(tmp_path / "aptos"), size=16, channels=3)
    assert data.images.shape == (10, 3, 16, 16) and data.num_classes == 5
    assert data.labels.tolist() == [i % 5 for i in range(10)]
    assert float(data.images.min()) >= 0.0 and float(data.images.max()) <= 1.0
    grey = md.load_aptos(tmp_path / "aptos", size=16, channels=1)
    assert grey.images.shape == (10, 1, 16, 16)


def test_aptos_errors(tmp_path):
    root = _write_aptos(tmp_path / "aptos")
    text = (root / "train.csv").read_text()
    (root / "train.csv").write_text(text.replace("diagnosis", "grade"))
    with pytest.raises(InputError, match="id_code,diagnosis"):
        md.load_aptos(root)
    (root / "train.csv").write_text(text.replace(",4\n", ",7\n", 1))
    with pytest.raises(InputError, match="grade 0-4"):
        md.load_aptos(root)
    (root / "train.csv").write_text(text)
    first = sorted((root / "train_images").iterdir())[0]
    first.write_bytes(b"\x89PNG corrupt")
    with pytest.raises(InputError, match="cannot read the image"):
        md.load_aptos(root, size=16)
    first.unlink()
    with pytest.raises(InputError, match="no image"):
        md.load_aptos(root, size=16)


# ---------------------------------------------------------------- image folders / Br35H
def test_image_folder_dedup_alpha_and_real_br35h_files(tmp_path):
    src = md.br35h_root()
    root = tmp_path / "br35h"
    for cls in ("no", "yes"):
        (root / cls).mkdir(parents=True)
        for f in sorted((src / cls).iterdir())[:6]:
            shutil.copy(f, root / cls / f.name)
    dup = sorted((root / "no").iterdir())[0]
    shutil.copy(dup, root / "no" / "zz_copy.jpg")
    # an opaque RGBA PNG (Br35H holds three) is accepted, its alpha dropped losslessly
    shutil.copy(src / "no" / "no400.jpg", root / "yes" / "no400.jpg")
    data = md.load_image_folder(root, size=24)
    assert data.images.shape == (13, 1, 24, 24) and data.class_counts() == [6, 7]
    assert data.meta["duplicates"] == [(dup.name, "zz_copy.jpg")]
    # a real alpha channel (4-channel image) is rejected, naming the file
    rgba = np.full((20, 20, 4), 200, np.uint8)
    rgba[..., 3] = 100
    Image.fromarray(rgba, "RGBA").save(root / "yes" / "alpha.png")
    with pytest.raises(InputError, match="alpha.png.*4 channels"):
        md.load_image_folder(root, size=24)
    with pytest.raises(InputError, match="2 class folders"):
        md.load_image_folder(root / "no")


def test_split_and_label_fraction():
    g = torch.Generator().manual_seed(0)
    data = md.ImageSet(
        torch.rand(100, 1, 8, 8, generator=g), torch.arange(100) % 2, ["a", "b"], "t"
    )
    s = md.stratified_split(data, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert s.sizes() == {"train": 60, "val": 20, "test": 20}
    ids = [set(x.ids) for x in (s.train, s.val, s.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert s.test.class_counts() == [10, 10]
    sub = md.label_fraction(s.train, 0.1, seed=1)
    assert sub.class_counts() == [3, 3] and set(sub.ids) <= ids[0]
    assert md.label_fraction(s.train, 1.0) is s.train
    with pytest.raises(InputError):
        md.label_fraction(s.train, 0.0)


def test_imageset_rejects_nan_and_bad_labels():
    x = torch.rand(4, 1, 8, 8)
    x[1, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteError):
        md.ImageSet(x, torch.zeros(4, dtype=torch.long), ["a", "b"], "t")
    with pytest.raises(InputError, match="labels"):
        md.ImageSet(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]), ["a", "b"], "t")


# ---------------------------------------------------------------- NIfTI folder
def _write_nifti(path, shape=(12, 12, 12), spacing=(1.0, 1.0, 1.0), value=None):
    import nibabel as nib

    arr = np.random.default_rng(0).random(shape).astype(np.float32)
    if value is not None:
        arr[0, 0, 0] = value
    nib.save(nib.Nifti1Image(arr, np.diag([*spacing, 1.0])), str(path))


def _nifti_tree(root, spacing_b=(1.0, 1.0, 1.0)):
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            _write_nifti(
                root / cls / f"v{i}.nii.gz", spacing=spacing_b if cls == "b" else (1, 1, 1)
            )
    return root


def test_nifti_folder_loads_through_monai(tmp_path):
    data = md.load_nifti_folder(_nifti_tree(tmp_path / "nii"), size=8)
    assert data.images.shape == (6, 1, 8, 8, 8) and data.class_names == ["a", "b"]
    assert float(data.images.min()) >= 0.0 and float(data.images.max()) <= 1.0
    splits = md.load_dataset(tmp_path / "nii", size=8)
    assert sum(splits.sizes().values()) == 6


def test_nifti_inconsistent_spacing_corrupt_and_nan(tmp_path):
    root = _nifti_tree(tmp_path / "nii", spacing_b=(2.0, 2.0, 2.0))
    with pytest.raises(InputError, match="inconsistent voxel spacing"):
        md.load_nifti_folder(root, size=8)
    data = md.load_nifti_folder(root, size=8, spacing=(2.0, 2.0, 2.0))  # resampled: accepted
    assert data.images.shape == (6, 1, 8, 8, 8)
    (root / "a" / "v0.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="cannot read the NIfTI"):
        md.load_nifti_folder(root, size=8, spacing=(2.0, 2.0, 2.0))
    _write_nifti(root / "a" / "v0.nii.gz", value=np.nan)
    with pytest.raises(NonFiniteError, match="v0.nii.gz"):
        md.load_nifti_folder(root, size=8, spacing=(2.0, 2.0, 2.0))


# ---------------------------------------------------------------- DICOM
def test_dicom_ct_window_and_corrupt(tmp_path):
    from pydicom.data import get_testdata_file

    ct = get_testdata_file("CT_small.dcm")
    img, info = md.load_dicom(ct)
    assert info["modality"] == "CT" and img.shape == (1, 128, 128)
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    narrow, _ = md.load_dicom(ct, window=(40.0, 80.0))
    assert (narrow == 1.0).float().mean() > (
        img == 1.0
    ).float().mean()  # narrower window clips more
    mr, info = md.load_dicom(get_testdata_file("MR_small.dcm"))
    assert info["modality"] == "MR" and float(mr.max()) == pytest.approx(1.0)
    (tmp_path / "bad.dcm").write_bytes(b"DICM" * 10)
    with pytest.raises(InputError, match="not a readable DICOM"):
        md.load_dicom(tmp_path / "bad.dcm")


# ---------------------------------------------------------------- Colin27 3-D patches
def test_colin27_lobe_patches():
    s = md.load_colin27_patches(patch=16, stride=12)
    assert s.train.images.shape[1:] == (1, 16, 16, 16) and s.train.num_classes == 7
    assert set(s.train.labels.tolist()) == set(range(7))
    # test patches (right hemisphere) never overlap training ones (left hemisphere)
    tr_x = {int(i.split(",")[0]) for i in s.train.ids}
    te_x = {int(i.split(",")[0]) for i in s.test.ids}
    assert max(tr_x) + 16 <= min(te_x) or min(tr_x) >= max(te_x) + 16
    assert not set(s.train.ids) & set(s.test.ids)
    assert float(s.test.images.max()) <= 1.0


def test_load_dataset_dispatch(tmp_path):
    s = md.load_dataset(_write_npz(tmp_path / "x.npz"))
    assert s.sizes()["train"] == 12
    aptos = md.load_dataset(_write_aptos(tmp_path / "aptos", n=15), size=8)
    assert sum(aptos.sizes().values()) == 15
    with pytest.raises(InputError, match="does not exist"):
        md.load_dataset(tmp_path / "nope")
