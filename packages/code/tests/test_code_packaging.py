"""polyprompt-code pulls only its own field's libraries and imports lightly."""

from polyprompt.core.packaging import assert_isolated, dependency_closure, modules_imported_by


def test_dependency_closure_is_isolated():
    closure = assert_isolated("polyprompt-code", "code")
    assert {"tree-sitter", "tree-sitter-python", "tree-sitter-go", "tree-sitter-java"} <= closure
    assert "transformers" in dependency_closure("polyprompt-code")
    assert not closure & {"timm", "monai", "torch-geometric", "tsai", "torchaudio", "trimesh"}


def test_import_is_light():
    mods = modules_imported_by("import polyprompt.code")
    assert not mods & {"torch", "transformers", "tree_sitter", "tokenizers", "timm", "monai"}


def test_registered_methods():
    from polyprompt.code.finetune import CodeClassifier
    from polyprompt.code.method import ManualTemplate, Zecoler
    from polyprompt.core import get_method

    assert get_method("zecoler") is Zecoler
    assert get_method("code_manual_template") is ManualTemplate
    assert get_method("code_finetune") is CodeClassifier
