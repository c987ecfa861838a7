"""The example's code path (tiny config) and, marked slow, the real --quick run."""

from __future__ import annotations

import json

import pytest

from polyprompt.core.errors import InputError
from polyprompt.timeseries.demo import main, run_demo
from polyprompt.timeseries.pipeline import PipelineConfig


def test_run_demo_writes_table_and_plots(tmp_path):
    cfg = PipelineConfig(
        d_model=16, n_heads=2, d_ff=32, pretrain_epochs=1, prompt_epochs=1, target_epochs=2,
        adapt_epochs=2, target_only_epochs=2, dann_epochs=1, batch_size=128,
    )  # fmt: skip
    res = run_demo(quick=True, out_dir=tmp_path, config=cfg, progress=False, verbose=False)
    assert {r["method"] for r in res["rows"]} == set(cfg.methods)
    for name in (
        "results.json",
        "results.md",
        "f1_by_subject.png",
        "criteria_vs_f1.png",
        "f1_mean.png",
    ):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "checkpoints" / "pond" / "prompt_config.json").is_file()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["selection"]["scenarios"] == 1
    assert "POND" in (tmp_path / "results.md").read_text()
    # resume: the finished scenario is read back from out/runs/, not recomputed
    again = run_demo(quick=True, out_dir=tmp_path, config=cfg, progress=False, verbose=False)
    assert [r["f1_mean"] for r in again["rows"]] == [r["f1_mean"] for r in res["rows"]]
    assert again["seconds"] < res["seconds"]


def test_main_reports_bad_target(tmp_path, capsys):
    assert main(["--quick", "--targets", "99", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "pond_watch: error: run_demo: unknown target" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_example(tmp_path):
    assert main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "results.md").is_file()


def _adatime_folder(tmp_path):
    import numpy as np
    import torch

    root = tmp_path / "HHAR"
    root.mkdir()
    rng = np.random.default_rng(0)
    for dom in ("0", "1", "2"):
        for split, n in (("train", 24), ("test", 12)):
            y = np.arange(n) % 3
            x = rng.normal(size=(n, 32, 3)) + y[:, None, None]  # (N, T, C) as AdaTime's HAR files
            torch.save({"samples": torch.tensor(x, dtype=torch.float32), "labels": torch.tensor(y)},
                       root / f"{split}_{dom}.pt")  # fmt: skip
    cfg = PipelineConfig(
        shots=2, patch_len=8, d_model=16, n_heads=2, d_ff=32, pretrain_epochs=1, prompt_epochs=1,
        target_epochs=2, adapt_epochs=2, target_only_epochs=2, dann_epochs=1,
    )  # fmt: skip
    return root, cfg


def test_run_demo_on_adatime_layout(tmp_path):
    """--data with a folder in AdaTime's layout (train_<d>.pt / test_<d>.pt) runs end to end."""
    root, cfg = _adatime_folder(tmp_path)
    res = run_demo(
        quick=True, out_dir=tmp_path / "out", data_path=root, config=cfg, targets=["2"],
        progress=False, verbose=False,
    )  # fmt: skip
    assert res["config"]["split_by"] == "split"  # shots from train_2.pt, test = test_2.pt
    assert {r["method"] for r in res["rows"]} == set(cfg.methods)


def test_parallel_scenarios_give_the_same_results(tmp_path):
    """jobs=2 runs scenarios in two spawned processes: same numbers, same files, same order."""
    root, cfg = _adatime_folder(tmp_path)
    kw = dict(quick=False, data_path=root, config=cfg, targets=["1", "2"], seeds=[0],
              progress=False, verbose=False)  # fmt: skip
    one = run_demo(out_dir=tmp_path / "one", jobs=1, **kw)
    two = run_demo(out_dir=tmp_path / "two", jobs=2, **kw)
    f1 = lambda res: [{m: v["f1"] for m, v in r["methods"].items()} for r in res["runs"]]  # noqa: E731
    assert [r["target"] for r in two["runs"]] == ["1", "2"]
    assert f1(two) == f1(one)
    assert (tmp_path / "two" / "runs" / "2-seed0.json").is_file()
    assert (tmp_path / "two" / "checkpoints" / "pond" / "prompt_config.json").is_file()
    with pytest.raises(InputError, match="jobs must be an int >= 1"):
        run_demo(out_dir=tmp_path / "bad", jobs=0, **kw)
