from polyprompt.core.packaging import FIELD_LIBRARIES, dependency_closure, modules_imported_by


def test_dependency_closure_has_no_modality_library():
    closure = dependency_closure("polyprompt-adapt")
    assert "transformers" in closure and "polyprompt-core" in closure
    for field, libs in FIELD_LIBRARIES.items():
        assert closure.isdisjoint(libs), f"polyprompt-adapt pulls {field}: {closure & libs}"


def test_import_is_lazy():
    mods = modules_imported_by("import polyprompt.adapt")
    assert {"transformers", "torch", "skimage", "mlxtend", "sklearn"}.isdisjoint(mods)
    mods = modules_imported_by("from polyprompt.adapt import ChainOfDomainSchedule")
    assert "transformers" not in mods
