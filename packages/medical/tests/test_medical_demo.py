"""The example's code path: run_demo writes the table, JSON and both plots."""

from __future__ import annotations

import json

import pytest

from polyprompt.medical.demo import DemoConfig, build_parser, run_demo


def test_demo_config_validation():
    with pytest.raises(Exception, match="methods"):
        DemoConfig(methods=("nope",))
    with pytest.raises(Exception, match="label_fractions"):
        DemoConfig(label_fractions=(0.0,))
    args = build_parser().parse_args(["--quick", "--seeds", "0", "1", "--data", "x.npz"])
    assert args.quick and args.seeds == [0, 1] and args.data == "x.npz"


def test_demo_on_a_small_medmnist_npz(tmp_path):
    """``--data`` path through the MedMNIST loader on a tiny real-format file."""
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("val", 12), ("test", 12)):
        y = np.arange(n) % 2
        x = rng.integers(0, 60, (n, 16, 16)).astype(np.uint8)
        x[y == 1, 4:12, 4:12] += 150  # a bright "lesion" for class 1
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y.reshape(n, 1)
    np.savez(tmp_path / "tiny.npz", **arrays)
    cfg = DemoConfig(
        methods=("linear_probe", "dvpt"),
        seeds=(0,),
        label_fractions=(1.0, 0.5),
        epochs=2,
        img_size=16,
        pretrain_epochs=1,
    )
    res = run_demo(
        False,
        tmp_path / "out",
        config=cfg,
        data_path=str(tmp_path / "tiny.npz"),
        progress=False,
        verbose=False,
    )
    assert {r["method"] for r in res["rows"]} == {"linear_probe", "dvpt"}
    assert len(res["rows"]) == 4 and all(-1 <= r["kappa_mean"] <= 1 for r in res["rows"])
    for key in ("json", "markdown", "plot_labels", "plot_trainable"):
        assert (tmp_path / "out" / res["files"][key].split("/")[-1]).is_file()
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["task"] == "tiny" and saved["num_classes"] == 2


@pytest.mark.slow
def test_quick_example_runs(tmp_path):
    from polyprompt.medical.demo import main

    assert main(["--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "kappa_vs_labels.png").is_file()


def test_example_reports_bad_flags_and_paths_as_errors(tmp_path, capsys):
    from polyprompt.medical.demo import main

    assert main(["--quick", "--epochs", "0"]) == 2
    assert "dvpt_classify: error: DemoConfig.epochs" in capsys.readouterr().err
    assert main(["--quick", "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
