from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polyprompt.adapt.data import folders
from polyprompt.adapt.data.common import SegmentationSet
from polyprompt.adapt.data.scenes import SceneTaskConfig, build_digit_scenes
from polyprompt.adapt.severity import DarkPixelRule
from polyprompt.core.errors import ConfigError, InputError, NonFiniteError, ShapeError


def test_scenes_are_real_labelled_and_deterministic(tiny_task):
    src, tr, te = tiny_task.source, tiny_task.target_train, tiny_task.target_test
    assert src.images.shape == (16, 3, 32, 32) and src.labels.shape == (16, 32, 32)
    assert tiny_task.num_classes == 7 and len(src.class_names) == 7
    assert int(src.labels.max()) < 7 and float(src.images.min()) >= 0
    assert (src.labels >= 3).any()  # digits are labelled
    again = build_digit_scenes(tiny_task.config)
    assert torch.equal(again.target_test.images, te.images)
    assert set(src.tags) == {"clear"} and set(tr.tags) == {"fog", "dark"}
    # the paper's rule recovers how each target image was made; source scenes are easy
    rule = DarkPixelRule()
    assert not rule(src.images).any()
    for s in (tr, te):
        assert rule(s.images).tolist() == [t == "dark" for t in s.tags]


def test_scene_config_is_validated():
    with pytest.raises(ConfigError, match="image_size"):
        SceneTaskConfig(image_size=8)


def test_segmentation_set_rejects_bad_inputs():
    x, y = torch.rand(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)
    with pytest.raises(ShapeError, match="do not match"):
        SegmentationSet(x, torch.zeros(2, 8, 9, dtype=torch.long), 3)
    with pytest.raises(InputError, match=r"\[7\] are outside"):
        SegmentationSet(x, torch.full((2, 8, 8), 7), 3)
    SegmentationSet(x, torch.full((2, 8, 8), 255), 3)  # the ignore index is fine
    with pytest.raises(ShapeError, match="grayscale"):
        SegmentationSet(torch.rand(2, 1, 8, 8), y, 3)
    with pytest.raises(ShapeError, match="RGBA"):
        SegmentationSet(torch.rand(2, 4, 8, 8), y, 3)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN"):
        SegmentationSet(bad, y, 3)
    with pytest.raises(InputError, match="empty"):
        SegmentationSet(torch.rand(0, 3, 8, 8), None, 3, name="target")


def _png(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)


def _rgb(h=16, w=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _lbl(h=16, w=24, seed=0):
    lab = np.random.default_rng(seed).integers(0, 19, (h, w)).astype(np.uint8)
    lab[0, :3] = 255
    return lab


def test_cityscapes_layout(tmp_path):
    for i, city in enumerate(["aachen", "bochum"]):
        stem = f"{city}_000000_00001{i}"
        _png(tmp_path / "leftImg8bit/train" / city / f"{stem}_leftImg8bit.png", _rgb(seed=i))
        _png(tmp_path / "gtFine/train" / city / f"{stem}_gtFine_labelTrainIds.png", _lbl(seed=i))
    s = folders.cityscapes(tmp_path, "train")
    assert s.images.shape == (2, 3, 16, 24) and s.labels.shape == (2, 16, 24)
    assert int(s.labels[0, 0, 0]) == 255 and s.num_classes == 19
    assert folders.cityscapes(tmp_path, "train", resize=(8, 8), labels=False).labels is None


def test_acdc_dark_and_foggy_zurich_layouts(tmp_path):
    for j, cond in enumerate(["fog", "night"]):
        stem = f"GOPR0475_frame_00001{j}"
        _png(
            tmp_path / "acdc/rgb_anon" / cond / "val/GOPR0475" / f"{stem}_rgb_anon.png",
            _rgb(seed=j),
        )
        _png(
            tmp_path / "acdc/gt" / cond / "val/GOPR0475" / f"{stem}_gt_labelTrainIds.png",
            _lbl(seed=j),
        )
    a = folders.acdc(tmp_path / "acdc", conditions=("fog", "night"), split="val")
    assert len(a) == 2 and list(a.tags) == ["fog", "night"]

    dz = tmp_path / "dz"
    _png(dz / "rgb_anon/val/night/GOPR0356/GOPR0356_000001_rgb_anon.png", _rgb())
    _png(dz / "gt/val/night/GOPR0356/GOPR0356_000001_gt_labelTrainIds.png", _lbl())
    assert folders.dark_zurich(dz, "val").labels.shape == (1, 16, 24)

    fz = tmp_path / "fz"
    _png(fz / "RGB/GP010475/1.png", _rgb())
    _png(fz / "gt_labelTrainIds/test/GP010475/1.png", _lbl())
    (fz / "lists_file_names").mkdir()
    (fz / "lists_file_names/RGB_testv2_filenames.txt").write_text("RGB/GP010475/1.png\n")
    (fz / "lists_file_names/gt_labelTrainIds_testv2_filenames.txt").write_text(
        "gt_labelTrainIds/test/GP010475/1.png\n"
    )
    f = folders.foggy_zurich(fz, "testv2")
    assert f.labels.shape == (1, 16, 24) and list(f.tags) == ["fog"]


def test_loaders_reject_bad_files(tmp_path):
    root = tmp_path / "cs"
    img = root / "leftImg8bit/train/x/a_leftImg8bit.png"
    lbl = root / "gtFine/train/x/a_gtFine_labelTrainIds.png"
    _png(img, _rgb())
    _png(lbl, _lbl(h=16, w=20))
    with pytest.raises(ShapeError, match="same size"):
        folders.cityscapes(root)
    bad = _lbl()
    bad[2, 2] = 40
    _png(lbl, bad)
    with pytest.raises(InputError, match=r"\[40\] are outside"):
        folders.cityscapes(root)
    _png(lbl, _lbl())
    _png(img, _rgb()[..., 0], mode="L")
    with pytest.raises(InputError, match="grayscale"):
        folders.cityscapes(root)
    _png(img, np.concatenate([_rgb(), np.full((16, 24, 1), 255, np.uint8)], 2), mode="RGBA")
    with pytest.raises(InputError, match="RGBA"):
        folders.cityscapes(root)
    with pytest.raises(InputError, match="empty"):
        folders.cityscapes(root, "val") if (root / "leftImg8bit/val").mkdir(
            parents=True
        ) is None else None
