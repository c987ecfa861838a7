from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path_factory.getbasetemp() / "pp_home"))


@pytest.fixture(scope="session")
def tiny_task():
    """Real digit-on-texture scenes, 32 px (the smallest size the MiT's strides allow)."""
    from polyprompt.adapt.data.scenes import SceneTaskConfig, build_digit_scenes

    return build_digit_scenes(
        SceneTaskConfig(image_size=32, n_source=16, n_target_train=12, n_target_test=8, seed=1)
    )


@pytest.fixture(scope="session")
def tiny_mit():
    from polyprompt.adapt.backbone import MiTConfig

    return MiTConfig(
        hidden_sizes=(16, 32, 48, 64), num_attention_heads=(1, 2, 3, 4), decoder_hidden_size=32
    )
