"""polyprompt-timeseries depends on the core and its own field only; its import is light."""

from __future__ import annotations

from polyprompt.core import assert_isolated, modules_imported_by


def test_dependency_closure_isolated():
    closure = assert_isolated("polyprompt-timeseries", "timeseries")
    assert {"tsai", "seglearn", "aeon", "polyprompt-core"} <= closure
    assert not {"timm", "monai", "torch-geometric", "transformers", "tree-sitter"} & closure


def test_import_is_light():
    mods = modules_imported_by("import polyprompt.timeseries")
    assert (
        not {"torch", "tsai", "fastai", "seglearn", "aeon", "timm", "monai", "transformers"} & mods
    )


def test_entry_points():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="polyprompt.methods")}
    assert names.get("pond") == "polyprompt.timeseries.method:POND"
    demos = {ep.name for ep in entry_points(group="polyprompt.demos")}
    assert "timeseries" in demos
