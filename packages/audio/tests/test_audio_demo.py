"""The example: CLI errors (fast) and the --quick run end to end (slow)."""

from __future__ import annotations

import json

import pytest

from polyprompt.audio.demo import DemoConfig, main
from polyprompt.core.errors import ConfigError


def test_audio_demo_bad_data_path(tmp_path, capsys):
    assert main(["--quick", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "error" in capsys.readouterr().err


def test_audio_demo_config_validation():
    with pytest.raises(ConfigError, match="methods"):
        DemoConfig(methods=("apt", "lora"))
    assert DemoConfig.quick().seeds == (0,)


def test_audio_demo_benchmark_config():
    from polyprompt.audio.demo import METHOD_NAMES

    bench, example = DemoConfig.benchmark(), DemoConfig()
    assert bench.methods == METHOD_NAMES  # full fine-tuning included
    assert bench.n_train > example.n_train  # more training clips than the example
    # everything but the size, the schedule and the methods is the example's
    differs = {k for k, v in bench.to_dict().items() if example.to_dict()[k] != v}
    assert differs <= {"n_train", "epochs", "methods"}
    assert DemoConfig.from_dict(bench.to_dict()) == bench
    for bad in ({"n_train": 0}, {"epochs": 0}, {"methods": ("apt", "lora")}):
        with pytest.raises(ConfigError):
            bench.replace(**bad)


@pytest.mark.slow
def test_audio_demo_quick_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    assert main(["--quick", "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "results.json").read_text())
    methods = [r["method"] for r in data["rows"]]
    assert methods == ["apt", "text_only", "linear_probe", "full_ft"]
    for name in ("results.md", "scores.png", "spectrograms.png", "apt_prompt/prompt_config.json"):
        assert (out / name).exists(), name
    assert data["samples"] and {"task", "prompt", "reference", "apt"} <= set(data["samples"][0])


def test_audio_demo_lm_texts_describe_each_audio_slot():
    import torch

    from polyprompt.audio.demo import describe_clip, lm_texts
    from polyprompt.audio.tasks import AudioTextExample, Clip

    meta = {"gender": "woman", "accent": "scottish", "word": "river", "speed": "fast"}
    meta |= {"noise": "none", "reverb": False}
    a, b = Clip(torch.randn(1600), meta=meta), Clip(torch.randn(1600), meta={"word": "x"})
    ex = AudioTextExample((a, "Which word is spoken?"), "river", "qa")
    texts = lm_texts([ex], "description", repeats=2)
    assert len(texts) == 2 and texts[0] != texts[1]  # the description's wording varies
    for t in texts:
        assert t.startswith("Audio: ") and " river " in t.split("Answer:")[0]
        assert t.endswith("Which word is spoken? Answer: river")
    assert lm_texts([ex], "none", repeats=3) == ["Which word is spoken? Answer: river"] * 3
    assert describe_clip(b) == ""  # no synthesis facts (e.g. a Clotho clip): no description
    with pytest.raises(ConfigError, match="lm_context"):
        DemoConfig(lm_context="caption")
    with pytest.raises(ConfigError, match="lm_context"):
        lm_texts([ex], "caption")
