"""`import polyprompt.core` must stay fast and must not pull any modality library."""

import subprocess
import sys

HEAVY = (
    "monai",
    "torch_geometric",
    "tsai",
    "transformers",
    "timm",
    "tree_sitter",
    "torchaudio",
    "stable_baselines3",
    "torch",
)


def test_import_core_pulls_no_heavy_library():
    code = f"import sys, polyprompt.core; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import polyprompt.core imported: {out.stdout.strip()}"


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
