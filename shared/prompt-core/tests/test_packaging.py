import pytest

from polyprompt.core.errors import InputError
from polyprompt.core.packaging import (
    FIELD_LIBRARIES,
    assert_isolated,
    canonical_name,
    dependency_closure,
    modules_imported_by,
)


def test_canonical_name():
    assert canonical_name("Torch_Geometric") == "torch-geometric"
    assert canonical_name("ruamel.yaml") == "ruamel-yaml"


def test_core_closure_has_its_requirements_and_no_field_library():
    closure = dependency_closure("polyprompt-core")
    assert {"polyprompt-core", "torch", "safetensors", "torchmetrics"} <= closure
    for libs in FIELD_LIBRARIES.values():
        assert not (closure & libs)


def test_extras_are_followed():
    plain = dependency_closure("polyprompt-core")
    with_vision = dependency_closure("polyprompt-core", extras=["vision"])
    assert "timm" not in plain
    assert "timm" in with_vision


def test_assert_isolated_flags_foreign_library():
    # timm's closure contains torchvision but none of the field rows: isolated for any field
    assert "timm" in assert_isolated("timm", "graph")
    with pytest.raises(InputError, match="unknown field"):
        assert_isolated("timm", "chemistry")


def test_missing_distribution_is_a_clear_error():
    with pytest.raises(InputError, match="not installed"):
        dependency_closure("no-such-distribution-xyz")


def test_modules_imported_by_fresh_interpreter():
    mods = modules_imported_by("import polyprompt.core")
    assert "polyprompt" in mods
    assert "torch" not in mods
    with pytest.raises(InputError, match="failed"):
        modules_imported_by("import no_such_module_xyz")


def test_assert_isolated_names_the_foreign_library():
    pytest.importorskip("monai")  # the dev environment has every package's libraries
    with pytest.raises(AssertionError, match=r"monai \(medical\)"):
        assert_isolated("monai", "graph")
    assert "monai" in assert_isolated("monai", "medical")
