"""The example pipeline end to end on real optdigits (tiny backbone: no cache needed)."""

from __future__ import annotations

import json

import pytest

from polyprompt.continual.data import load_digit_pool
from polyprompt.continual.demo import DemoConfig, build_parser, main, run_demo


@pytest.fixture(scope="module")
def small_digits():
    train, test = load_digit_pool("optdigits", max_samples=300, seed=0)
    return train, test


def test_run_demo_writes_table_json_and_curve_plot(tmp_path, small_digits, make_backbone):
    cfg = DemoConfig(
        seeds=(1,), methods=("head_ft", "mvp"), num_tasks=3, batch_size=16,
        online_iter=1, eval_period=60,
    )  # fmt: skip
    result = run_demo(
        out_dir=tmp_path, config=cfg, data=small_digits,
        backbone_factory=lambda: make_backbone(img=32), progress=False, verbose=False,
    )  # fmt: skip
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"head_ft", "mvp"}
    for r in rows.values():
        assert 0.0 <= r["a_last_mean"] <= 1.0 and r["checkpoint_bytes"] > 0
    # (a random tiny backbone: quality is tested in test_continual_quality.py, marked slow)
    assert rows["mvp"]["trainable_percent"] < 100
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"][0]["method"] == "head_ft"
    assert (tmp_path / "auc_curve.png").stat().st_size > 1000
    assert "A_auc" in (tmp_path / "results.md").read_text()


def test_cli_errors_are_ours(tmp_path, capsys):
    assert build_parser().parse_args(["--quick"]).quick
    code = main(
        ["--data", str(tmp_path / "missing"), "--data-format", "folder", "--out", str(tmp_path)]
    )
    assert code == 2 and "no such folder" in capsys.readouterr().err
