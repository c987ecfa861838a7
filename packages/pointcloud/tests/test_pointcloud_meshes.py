"""Unlabelled meshes for pre-training: the installed ``pybullet_data`` folder and a local folder."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from polyprompt.core.errors import ConfigError, InputError
from polyprompt.pointcloud.data import (
    load_mesh_folder,
    load_pybullet_meshes,
    pybullet_data_dir,
)

INSTALL_HINT = "pip install --no-deps pybullet==3.2.7 (ships pybullet_data; see shared/DATA.md)"


def _installed_dir():
    try:
        return pybullet_data_dir()
    except InputError as exc:  # a missing data set fails the test, it is not skipped
        pytest.fail(f"pybullet_data is not installed: {INSTALL_HINT} ({exc})")


def test_pybullet_data_is_installed_and_holds_meshes():
    root = _installed_dir()
    files = [f for f in root.rglob("*") if f.suffix.lower() in (".obj", ".stl")]
    assert len(files) > 1000  # ~1,200 OBJ/STL meshes in pybullet 3.2.7
    assert "pybullet" not in __import__("sys").modules  # the C module was never imported


def test_load_pybullet_meshes_samples_real_meshes():
    _installed_dir()
    got = load_pybullet_meshes(64, max_meshes=12, cache=False, progress=False)
    assert got.points.shape == (len(got), 64, 3) and len(got) + got.skipped == 12
    assert len(got) >= 10 and len(got.ids) == len(got) and got.name == "pybullet_data"
    assert torch.isfinite(got.points).all()
    r = got.points.norm(dim=-1).amax(dim=1)
    assert torch.allclose(r, torch.ones_like(r), atol=1e-5)  # unit sphere
    assert got.points.mean(dim=1).abs().max() < 1e-4  # centred
    assert got.points.std(dim=1).min() > 0.01  # real, non-degenerate shapes


def test_missing_pybullet_data_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pybullet_data" else real(name, *a),
    )
    with pytest.raises(InputError, match=r"pip install --no-deps pybullet==3\.2\.7"):
        pybullet_data_dir()
    with pytest.raises(InputError, match="pybullet_data is not installed"):
        load_pybullet_meshes(64, progress=False)


def _write_folder(root):
    import trimesh

    (root / "sub").mkdir(parents=True)
    (root / "tetra.obj").write_text(
        "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"
    )
    trimesh.creation.box(extents=(1, 2, 3)).export(root / "sub" / "box.STL")
    (root / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")  # zero area
    (root / "broken.obj").write_text("this is not a mesh\n")
    (root / "notes.txt").write_text("ignored")


def test_local_folder_skips_unreadable_and_degenerate_meshes(tmp_path):
    _write_folder(tmp_path / "meshes")
    got = load_mesh_folder(tmp_path / "meshes", 128, progress=False)
    assert sorted(got.ids) == ["sub/box.STL", "tetra.obj"]
    assert got.skipped == 2 and got.points.shape == (2, 128, 3)
    box = got.points[got.ids.index("sub/box.STL")].numpy()
    ext = np.ptp(box, axis=0)
    assert np.allclose(ext / ext.max(), [1 / 3, 2 / 3, 1], atol=0.05)  # the box's proportions
    # cached: the same call loads the same clouds; another point count is another entry
    again = load_mesh_folder(tmp_path / "meshes", 128, progress=False)
    assert torch.equal(again.points, got.points) and again.ids == got.ids
    assert again.skipped == 2
    assert load_mesh_folder(tmp_path / "meshes", 64, progress=False).points.shape[1] == 64


def test_local_folder_errors(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        load_mesh_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .obj/.stl meshes"):
        load_mesh_folder(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.obj").write_text("garbage\n")
    with pytest.raises(InputError, match="none of the 1 meshes"):
        load_mesh_folder(tmp_path / "bad", cache=False, progress=False)


def test_pretraining_step_budget_and_mesh_set_in_cache_key():
    from polyprompt.pointcloud.backbone import PointMAEConfig
    from polyprompt.pointcloud.demo import DemoConfig, _pretrain_config
    from polyprompt.pointcloud.pretrain import (
        PointMAEPretrainConfig,
        cache_key,
        pretrain_point_mae,
    )

    cfg = DemoConfig()
    old = _pretrain_config(cfg, 690, 0)  # furniture train split + primitives only
    assert (old.epochs, old.max_steps, old.warmup_epochs) == (10, None, 2)
    new = _pretrain_config(cfg, 690, 1202)  # + pybullet_data: same number of steps
    assert new.max_steps == 10 * 22 and new.epochs * 60 >= new.max_steps
    with pytest.raises(ConfigError, match="max_steps"):
        PointMAEPretrainConfig(max_steps=0)
    arch, pc = PointMAEConfig.tiny(), PointMAEPretrainConfig()
    assert cache_key(arch, pc, "fp", "pybullet_data:1202") != cache_key(arch, pc, "fp", "none")
    res = pretrain_point_mae(
        torch.rand(12, 128, 3),
        arch,
        PointMAEPretrainConfig(
            epochs=5, batch_size=4, warmup_epochs=0, num_points=128, max_steps=4, decoder_depth=1,
            decoder_num_heads=2,
        ),
        progress=False,
        data_tag="local",
    )  # fmt: skip
    assert res.info["steps"] == 4 and len(res.losses) == 2  # 3 steps, then 1: capped at 4


def test_demo_config_mesh_option():
    from polyprompt.pointcloud.demo import DemoConfig, build_parser

    assert DemoConfig().pretrain_meshes == "auto"
    with pytest.raises(ConfigError, match="pretrain_meshes"):
        DemoConfig(pretrain_meshes="shapenet")
    with pytest.raises(ConfigError, match="pretrain_max_meshes"):
        DemoConfig(pretrain_max_meshes=0)
    args = build_parser().parse_args(["--pretrain-meshes", "none"])
    assert args.pretrain_meshes == "none"
