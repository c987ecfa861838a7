import json

import pytest

from polyprompt.adapt.demo import DemoSettings, main, run


def test_demo_writes_table_json_and_figures(tmp_path):
    tiny = DemoSettings(
        image_size=32, patch_size=4, n_source=12, n_target_train=8, n_target_test=6,
        pretrain_epochs=1, iterations=2, batch_size=2,
    )  # fmt: skip
    result = run(quick=True, out_dir=tmp_path, seeds=1, progress=False, settings=tiny)
    methods = [r["variant"] for r in result["rows"]]
    assert methods == ["source_only", "self_training", "savpt", "coda"]
    for row in result["rows"]:
        assert 0 <= row["miou_mean"] <= 1 and row["checkpoint_bytes"] > 0
        assert (row["savpt_params"] > 0) == (row["variant"] in ("savpt", "coda"))
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["rows"][3]["phases"]["all"] >= 1
    table = (tmp_path / "results.md").read_text()
    assert "mIoU hard (%)" in table and "CoDA (SAVPT + chain)" in table
    assert (tmp_path / "miou.png").stat().st_size > 0
    assert (tmp_path / "qualitative.png").stat().st_size > 0


def test_lazy_exports_resolve():
    import polyprompt.adapt as pa

    for name in pa.__all__:
        assert getattr(pa, name) is not None


@pytest.mark.slow
def test_quick_example_runs(tmp_path):
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "results.json").is_file()


def test_demo_runs_on_the_official_folder_layouts(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)

    def png(path, arr):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)

    for i in range(4):
        img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        if i % 2:
            img //= 8  # a night image: hard by the dark-pixel rule
        lab = rng.integers(0, 19, (40, 48)).astype(np.uint8)
        png(tmp_path / f"cityscapes/leftImg8bit/train/aachen/a_{i}_leftImg8bit.png", img)
        png(tmp_path / f"cityscapes/gtFine/train/aachen/a_{i}_gtFine_labelTrainIds.png", lab)
        for split in ("train", "val"):
            cond = "night" if i % 2 else "fog"
            png(tmp_path / f"acdc/rgb_anon/{cond}/{split}/GP01/g_{i}_rgb_anon.png", img)
            png(tmp_path / f"acdc/gt/{cond}/{split}/GP01/g_{i}_gt_labelTrainIds.png", lab)
    tiny = DemoSettings(pretrain_epochs=1, iterations=2, batch_size=2)
    result = run(
        quick=True, seeds=1, data=tmp_path, target="acdc", size=32, progress=False, settings=tiny
    )
    assert result["n_easy"] == 2 and result["n_hard"] == 2
    assert len(result["rows"]) == 4


def test_example_reports_a_missing_data_root_as_an_error(tmp_path, capsys):
    assert main(["--quick", "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "coda_segmentation: error:" in err and "nowhere" in err
