"""PACKAGE.md point 1: own dependencies only; light import."""

from __future__ import annotations

from polyprompt.core import FIELD_LIBRARIES, dependency_closure, modules_imported_by


def test_dependency_closure_holds_no_other_modality_library():
    closure = dependency_closure("polyprompt-continual")
    assert "polyprompt-core" in closure and "timm" in closure
    for field, libs in FIELD_LIBRARIES.items():
        assert not closure & libs, f"polyprompt-continual pulls {field} libraries {closure & libs}"


def test_import_is_light():
    mods = modules_imported_by("import polyprompt.continual")
    heavy = {"torch", "timm", "monai", "tsai", "transformers", "torch_geometric", "trimesh"}
    assert not mods & heavy, mods & heavy


def test_entry_points_are_announced():
    from importlib.metadata import entry_points

    methods = {e.name: e.value for e in entry_points(group="polyprompt.methods")}
    assert methods["mvp"] == "polyprompt.continual.method:MVP"
    assert {"dualprompt", "l2p"} <= set(methods)
    demos = {e.name for e in entry_points(group="polyprompt.demos")}
    examples = {e.name for e in entry_points(group="polyprompt.examples")}
    assert "continual" in demos and "continual" in examples
