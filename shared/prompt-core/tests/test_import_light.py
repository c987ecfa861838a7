"""`import polyprompt.core` must stay fast and must not pull any modality library."""

from polyprompt.core.packaging import HEAVY_MODULES, modules_imported_by


def test_import_core_pulls_no_heavy_library():
    loaded = modules_imported_by("import polyprompt.core") & set(HEAVY_MODULES)
    assert not loaded, f"import polyprompt.core imported: {sorted(loaded)}"


def test_lazy_exports_resolve():
    import polyprompt.core as core

    assert core.ConfigError.__name__ == "ConfigError"
    assert "SoftPrompt" in dir(core)
    try:
        core.NotAThing  # noqa: B018
    except AttributeError as exc:
        assert "NotAThing" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("unknown attribute must raise AttributeError")
