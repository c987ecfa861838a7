from importlib import metadata

from polyprompt.core import assert_isolated, modules_imported_by


def test_dependency_closure_has_no_other_modality():
    closure = assert_isolated("polyprompt-pointcloud", "pointcloud")
    assert {"trimesh", "h5py", "timm", "polyprompt-core"} <= closure


def test_import_is_light():
    mods = modules_imported_by("import polyprompt.pointcloud")
    assert not mods & {
        "torch",
        "timm",
        "trimesh",
        "h5py",
        "monai",
        "transformers",
        "tsai",
        "torch_geometric",
        "tree_sitter",
    }


def test_entry_points():
    eps = metadata.entry_points()
    assert "idpt" in {e.name for e in eps.select(group="polyprompt.methods")}
    assert "pointcloud" in {e.name for e in eps.select(group="polyprompt.demos")}
    assert "pointcloud" in {e.name for e in eps.select(group="polyprompt.examples")}
