"""polyprompt-medical pulls only its own field's libraries; importing it stays light."""

from __future__ import annotations

from polyprompt.core import assert_isolated, get_method, modules_imported_by


def test_dependency_closure_is_isolated():
    closure = assert_isolated("polyprompt-medical", "medical")
    assert {"monai", "nibabel", "pydicom", "timm"} <= closure


def test_import_is_light():
    mods = modules_imported_by("import polyprompt.medical")
    assert not mods & {"torch", "monai", "timm", "nibabel", "pydicom", "sklearn"}


def test_methods_registered():
    from polyprompt.medical.dvpt import DVPT
    from polyprompt.medical.peft import SSF, AdaptFormer

    assert get_method("dvpt") is DVPT
    assert get_method("adaptformer") is AdaptFormer and get_method("ssf") is SSF


def test_every_lazy_export_resolves():
    import polyprompt.medical as med

    for name in dir(med):
        assert getattr(med, name) is not None, name
