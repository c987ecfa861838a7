"""The main demo end to end: pre-training cache, adaptation runs, table, JSON, markdown, plot."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("mlxtend")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from polyprompt.core.demo.digits import METHODS, DemoConfig, main, run_demo
from polyprompt.core.demo.pretrain import (
    DemoViTConfig,
    PretrainConfig,
    cache_key,
    cache_path,
    pretrain_digit_vit,
)
from polyprompt.core.errors import ConfigError

# a backbone that trains in a few seconds: enough to exercise every step, not to be accurate
TINY_PRETRAIN = PretrainConfig(epochs=1, max_train_samples=200, batch_size=50, warmup_epochs=0)
TINY_DEMO = DemoConfig(
    seeds=(0, 1),
    labels_per_class=2,
    epochs=1,
    batch_size=16,
    methods=("linear_probe", "vpt_shallow", "vpt_deep"),
)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these models are tiny, and two OpenMP threads on a busy 2-core
    machine (other test processes) spin-wait and run 10x slower instead of 2x faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _check_outputs(result, out: Path, names: list[str]) -> None:
    assert [r["method"] for r in result.rows] == names
    for name in ("results.json", "results.md", "accuracy.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in saved["rows"]] == names
    assert saved["config"]["seeds"] == list(result.config.seeds)
    md = (out / "results.md").read_text()
    for r in result.rows:
        assert r["title"] in md and r["title"] in result.table("plain")
        assert 0.0 <= r["accuracy_mean"] <= 1.0 and r["accuracy_std"] >= 0.0
        assert len(r["runs"]) == len(result.config.seeds)
        assert r["checkpoint_bytes"] > 0 and r["trainable_params"] > 0
        ckpt = out / "checkpoints" / r["method"]
        assert (ckpt / "prompt.safetensors").stat().st_size == r["checkpoint_bytes"]


def test_tiny_demo_end_to_end(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_demo(
        config=TINY_DEMO, pretrain_config=TINY_PRETRAIN, out_dir=out, progress=False, verbose=False
    )
    _check_outputs(result, out, list(TINY_DEMO.methods))
    # prompt methods train a small fraction of the backbone; the deep prompt is larger
    lp, shallow, deep = (result.row(n) for n in TINY_DEMO.methods)
    assert lp["trainable_percent"] < shallow["trainable_percent"] < deep["trainable_percent"] < 5
    assert lp["checkpoint_bytes"] < shallow["checkpoint_bytes"] < deep["checkpoint_bytes"]
    info = result.info
    assert info["target"]["train_per_seed"] == 20 and info["target"]["name"] == "optdigits"
    assert not info["backbone"]["from_cache"]
    assert (home / "demo").is_dir() and list((home / "demo").glob("digit-vit-*.safetensors"))


def test_pretrain_cache_is_reused_and_keyed(home: Path) -> None:
    first = pretrain_digit_vit(pretrain_config=TINY_PRETRAIN, progress=False, verbose=False)
    assert not first.from_cache and first.path is not None and first.path.is_file()
    assert first.path.parent == home / "demo"
    assert "head.weight" not in first.model.state_dict() or first.model.head.weight.numel() == 0
    start = time.perf_counter()
    second = pretrain_digit_vit(pretrain_config=TINY_PRETRAIN, progress=False, verbose=False)
    assert second.from_cache and time.perf_counter() - start < 3.0
    assert second.mnist_test_accuracy == pytest.approx(first.mnist_test_accuracy, abs=1e-6)
    for (k1, v1), (k2, v2) in zip(
        first.model.state_dict().items(), second.model.state_dict().items()
    ):
        assert k1 == k2 and torch.equal(v1, v2)
    # the key covers architecture, training settings (epochs, seed) and data
    vit, fp = DemoViTConfig(), "data"
    keys = {
        cache_key(vit, TINY_PRETRAIN, fp),
        cache_key(vit, TINY_PRETRAIN.replace(epochs=2), fp),
        cache_key(vit, TINY_PRETRAIN.replace(seed=1), fp),
        cache_key(vit.replace(depth=4), TINY_PRETRAIN, fp),
        cache_key(vit, TINY_PRETRAIN, "other-data"),
        cache_key(vit, PretrainConfig.quick(), fp),
        cache_key(vit, PretrainConfig(), fp),
    }
    assert len(keys) == 7
    # every method gets its own copy of the weights
    a, b = second.backbone(), second.backbone()
    a.model.pos_embed.data.add_(1.0)
    assert not torch.equal(a.model.pos_embed, b.model.pos_embed)


def test_corrupt_cache_is_retrained(home: Path) -> None:
    first = pretrain_digit_vit(pretrain_config=TINY_PRETRAIN, progress=False, verbose=False)
    assert first.path == cache_path(first.key)
    first.path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="pre-training again"):
        again = pretrain_digit_vit(pretrain_config=TINY_PRETRAIN, progress=False, verbose=False)
    assert not again.from_cache and again.path.stat().st_size > 1000


def test_demo_config_validation() -> None:
    with pytest.raises(ConfigError, match="methods"):
        DemoConfig(methods=("nope",))
    with pytest.raises(ConfigError, match="seeds"):
        DemoConfig(seeds=())
    with pytest.raises(ConfigError, match="seeds"):
        DemoConfig(seeds=(1, 1))
    with pytest.raises(ConfigError, match="labels_per_class"):
        DemoConfig(labels_per_class=0)
    with pytest.raises(ConfigError, match="test_fraction"):
        DemoConfig(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="patch_size"):
        DemoViTConfig(patch_size=5)
    with pytest.raises(ConfigError, match="max_train_samples"):
        PretrainConfig(max_train_samples=3)
    assert DemoConfig.from_json(DemoConfig().to_json()) == DemoConfig()
    assert set(DemoConfig().methods) == set(METHODS)
    assert len(DemoConfig().seeds) >= 3


def test_example_main_reports_bad_data_folder(tmp_path: Path, capsys) -> None:
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo(home: Path, tmp_path: Path) -> None:
    """``run_demo(quick=True)``: what ``polyprompt demo --quick`` runs (~40-60 s on 2 cores)."""
    out = tmp_path / "quick"
    result = run_demo(quick=True, out_dir=out, progress=False, verbose=False)
    _check_outputs(result, out, list(METHODS))
    chance = result.info["chance_accuracy"]
    assert result.info["backbone"]["mnist_test_accuracy"] > 0.5
    for name in ("vpt_shallow", "vpt_deep"):
        assert result.row(name)["accuracy_mean"] > chance + 0.05
