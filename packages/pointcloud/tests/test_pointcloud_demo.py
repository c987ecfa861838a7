import json

import pytest

from polyprompt.core.errors import ConfigError
from polyprompt.pointcloud.demo import DemoConfig, main, run_demo


def test_config_validation():
    assert DemoConfig.quick().seeds == (0,)
    with pytest.raises(ConfigError, match="methods"):
        DemoConfig(methods=("nope",))
    with pytest.raises(ConfigError, match="batch_size"):
        DemoConfig(batch_size=1)


def test_cli_bad_data_path_is_a_clear_error(tmp_path, capsys):
    assert main(["--quick", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    cfg = DemoConfig.quick().replace(epochs=2, methods=("linear_probe", "idpt", "vpt_shallow"))
    result = run_demo(quick=True, out_dir=tmp_path, config=cfg, progress=False, verbose=False)
    assert [r["method"] for r in result.rows] == ["linear_probe", "idpt", "vpt_shallow"]
    for key in ("json", "markdown", "plot"):
        assert result.files[key].is_file()
    data = json.loads(result.files["json"].read_text())
    assert data["rows"][1]["cached"] is True
    assert (tmp_path / "checkpoints" / "idpt" / "prompt.safetensors").is_file()
