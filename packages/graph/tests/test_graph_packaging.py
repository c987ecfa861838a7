"""Packaging: dependency closure isolated to the graph field, light import, registry."""

from __future__ import annotations

from polyprompt.core.packaging import assert_isolated, modules_imported_by


def test_dependencies_isolated():
    closure = assert_isolated("polyprompt-graph", "graph")
    assert {"torch-geometric", "stable-baselines3"} <= closure


def test_import_is_light():
    mods = modules_imported_by("import polyprompt.graph; polyprompt.graph.GINConfig")
    assert not mods & {"torch_geometric", "stable_baselines3", "gymnasium", "rdkit", "datamol"}
    assert not mods & {"timm", "monai", "tsai", "transformers", "trimesh", "tree_sitter"}


def test_methods_registered():
    import polyprompt.graph.relief  # noqa: F401
    from polyprompt.core import get_method

    for name in (
        "relief",
        "graph_linear_probe",
        "graph_full_finetune",
        "graph_gpf",
        "graph_gpf_plus",
        "graph_all_in_one",
    ):
        assert get_method(name).method_name == name
