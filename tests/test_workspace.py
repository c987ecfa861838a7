"""A workspace of several packages: two modality packages generated from the template.

They are built as real wheels (hatchling), installed side by side into one folder,
and used together with the core in a fresh interpreter: entry-point discovery,
``polyprompt list``, and prompts of different methods on one backbone in a PromptBank.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "templates" / "modality"


def _render(name: str, cls: str, dest: Path) -> Path:
    """Copy the template to ``dest/name`` replacing its placeholders (what CONTRIBUTING.md says to do)."""
    pkg = dest / name
    for src in TEMPLATE.rglob("*"):
        rel = Path(str(src.relative_to(TEMPLATE)).replace("__NAME__", name))
        target = pkg / rel
        if src.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        text = src.read_text().replace("__NAME__", name).replace("__CLASS__", cls)
        # built outside the workspace: depend on the installed core, not a workspace source
        text = text.replace("[tool.uv.sources]\npolyprompt-core = { workspace = true }\n", "")
        target.write_text(text)
    return pkg


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("pip", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("pip not available in this environment")
    tmp = tmp_path_factory.mktemp("workspace")
    pkgs = [_render("alpha", "AlphaPrompt", tmp), _render("beta", "BetaPrompt", tmp)]
    target = tmp / "site"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--target",
        str(target),
        *map(str, pkgs),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return target


def _run(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_list_shows_every_installed_package(site: Path) -> None:
    out = _run(site, "-m", "polyprompt.core.cli", "list")
    assert out.returncode == 0, out.stderr
    for name in (
        "polyprompt-core",
        "polyprompt-alpha",
        "polyprompt-beta",
        "alpha_method",
        "beta_method",
        "vpt",
    ):
        assert name in out.stdout, f"{name} missing from `polyprompt list`:\n{out.stdout}"


def test_template_tests_pass_for_generated_packages(site: Path, tmp_path: Path) -> None:
    for name in ("alpha", "beta"):
        test_file = site.parent / name / "tests" / "test_import.py"
        out = _run(
            site,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "--import-mode=importlib",
            str(test_file),
        )
        assert out.returncode == 0, out.stdout + out.stderr


def test_prompts_of_different_methods_share_one_backbone_in_a_bank(site: Path) -> None:
    script = textwrap.dedent(
        """
        import torch
        from timm.models.vision_transformer import VisionTransformer
        from polyprompt.core import PromptBank, TimmViTAdapter, create

        torch.manual_seed(0)
        vit = VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=64, depth=2,
                                num_heads=4, num_classes=0)
        backbone = TimmViTAdapter(vit)
        models = {
            "a": create("alpha_method", backbone, num_classes=3, num_tokens=4),
            "b": create("beta_method", backbone, num_classes=5, num_tokens=2),
            "v": create("vpt", backbone, num_classes=4, num_tokens=4),
        }
        bank = PromptBank(backbone)
        for name, model in models.items():
            model.eval()
            bank.add(name, model)
        x = torch.randn(6, 1, 32, 32)
        names = ["a", "b", "v", "v", "a", "b"]
        outs = bank.forward(x, names)
        with torch.no_grad():
            for i, name in enumerate(names):
                alone = models[name](x[i : i + 1])[0]
                assert torch.allclose(outs[i], alone, atol=1e-5), (name, outs[i], alone)
        assert sum(p.data_ptr() == q.data_ptr() for p in models["a"].backbone.parameters()
                   for q in models["b"].backbone.parameters()) > 0
        print("BANK OK", len(bank.names))
        """
    )
    out = _run(site, "-c", script)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "BANK OK 3" in out.stdout
