from dataclasses import dataclass

import pytest
import torch
from torch import nn

from polyprompt.core import (
    ConfigError,
    DuplicateMethodError,
    PromptConfig,
    PromptMethod,
    UnknownMethodError,
    available_methods,
    create,
    get_method,
    register_method,
)
from polyprompt.core.registry import unregister_method


@dataclass
class ToyConfig(PromptConfig):
    width: int = 3
    mode: str = "a"

    def __post_init__(self):
        super().__post_init__()
        self.require(self.width > 0, "width", "must be > 0")


class ToyMethod(PromptMethod):
    config_class = ToyConfig

    def __init__(self, backbone, config):
        super().__init__(backbone, config)
        self.head = nn.Linear(2, config.width)


@pytest.fixture
def registered():
    register_method("toy_method")(ToyMethod)
    yield
    unregister_method("toy_method")


def test_create_builds_the_registered_class(registered):
    model = create("toy_method", nn.Identity(), width=5)
    assert isinstance(model, ToyMethod)
    assert model.head.out_features == 5
    assert ToyMethod.method_name == "toy_method"
    assert get_method("toy_method") is ToyMethod


def test_create_with_config_object_and_override(registered):
    model = create("toy_method", nn.Identity(), ToyConfig(width=2), width=4)
    assert model.config.width == 4


def test_invalid_config_value_names_the_field(registered):
    with pytest.raises(ConfigError, match=r"ToyConfig\.width: must be > 0"):
        create("toy_method", nn.Identity(), width=0)


def test_duplicate_name_from_another_class_is_rejected(registered):
    class Other(ToyMethod):
        pass

    with pytest.raises(DuplicateMethodError, match="toy_method"):
        register_method("toy_method")(Other)
    register_method("toy_method")(ToyMethod)  # same class again: a re-import, allowed


def test_unknown_method_lists_installed_ones():
    with pytest.raises(UnknownMethodError, match="no_such_method.*installed methods: .*vpt"):
        create("no_such_method", nn.Identity())


def test_entry_points_are_listed_without_import():
    names = {m.name: m for m in available_methods()}
    assert {"vpt", "linear_probe", "full_finetune", "prompt_tuning"} <= set(names)
    assert names["vpt"].distribution == "polyprompt-core"


def test_core_method_table_matches_the_pyproject_entry_points():
    import tomllib
    from pathlib import Path

    from polyprompt.core.registry import CORE_METHODS

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["entry-points"]
    assert declared["polyprompt.methods"] == CORE_METHODS


def test_core_methods_are_found_without_installed_metadata():
    """A source tree on PYTHONPATH has no entry points; the core's own methods still load."""
    import subprocess
    import sys

    code = (
        "import importlib.metadata as m; m.entry_points = lambda **kw: []\n"
        "from torch import nn\n"
        "from polyprompt.core.registry import available_methods, get_method\n"
        "print(get_method('vpt').__name__, get_method('full_finetune').__name__)\n"
        "print(sorted(i.name for i in available_methods()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "VPT FullFineTune"
    assert out[1] == str(sorted(["full_finetune", "linear_probe", "prompt_tuning", "vpt"]))


def test_config_json_round_trip(tmp_path):
    cfg = ToyConfig(width=7, mode="b")
    assert ToyConfig.from_json(cfg.to_json()) == cfg
    path = tmp_path / "cfg.json"
    cfg.to_json(path)
    assert ToyConfig.from_json(path) == cfg


def test_config_json_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown field"):
        ToyConfig.from_dict({"width": 1, "nope": 2})
    with pytest.raises(ConfigError, match="invalid JSON"):
        ToyConfig.from_json("{not json")
    with pytest.raises(ConfigError, match="no such file"):
        ToyConfig.from_json(tmp_path / "missing.json")


def test_wrong_config_type_is_rejected():
    with pytest.raises(TypeError, match="expects a ToyConfig"):
        ToyMethod(nn.Identity(), PromptConfig())


def test_trainable_state_dict_only_holds_trainable(registered):
    model = create("toy_method", nn.Linear(2, 2), width=3)
    model.backbone.requires_grad_(False)
    assert set(model.trainable_state_dict()) == {"head.weight", "head.bias"}
    assert all(isinstance(t, torch.Tensor) for t in model.trainable_state_dict().values())
