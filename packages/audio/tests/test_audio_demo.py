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
    # everything but the sizes, the LM schedule and the methods is the example's
    differs = {k for k, v in bench.to_dict().items() if example.to_dict()[k] != v}
    assert differs <= {"n_train", "n_test", "lm_steps", "epochs", "methods"}
    assert bench.n_test > example.n_test and bench.lm_steps > example.lm_steps
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
    # NLAR is also reported as balanced accuracy (per-question macro recall)
    assert all(0.0 <= r["nlar_bal_mean"] <= 1.0 for r in data["rows"] if "nlar_mean" in r)
    assert "nlar bal. acc (%)" in (out / "results.md").read_text()


def test_audio_demo_table_has_the_balanced_nlar_column():
    from polyprompt.audio.demo import format_rows, table_metrics

    assert table_metrics(("caption", "nlar")) == ("caption", "nlar", "nlar_bal")
    assert table_metrics(("caption", "qa")) == ("caption", "qa")
    row = {"title": "APT", "nlar_mean": 0.45, "nlar_std": 0.0, "nlar_bal_mean": 0.5,
           "nlar_bal_std": 0.01, "trainable_percent": 1.0, "checkpoint_bytes": 10,
           "seconds_mean": 1.0}  # fmt: skip
    table = format_rows([row], ("nlar",))
    assert "nlar bal. acc (%)" in table and "50.0 ± 1.0" in table and "45.0" in table


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


def test_audio_demo_encoder_finetune_never_labels_a_task_word(tmp_path, monkeypatch):
    """The supervised encoder stage trains on the pre-training corpus minus every task word."""
    import torch

    from polyprompt.audio.demo import finetune_on_pretraining_corpus
    from polyprompt.audio.encoder import AudioEncoderConfig, build_audio_encoder
    from polyprompt.audio.frontend import LogMelConfig
    from polyprompt.audio.tasks import AudioTextExample, Clip

    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path))
    cfg = DemoConfig.quick().replace(finetune_steps=2, finetune_clips=40)
    logmel = LogMelConfig(n_mels=32, target_frames=128)
    enc = build_audio_encoder(
        AudioEncoderConfig(n_mels=32, target_frames=128, embed_dim=32, depth=1, num_heads=2)
    )
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    # every pre-training word but three is a "task word" here
    from polyprompt.audio.data.corpus import PRETRAIN_WORDS

    task_words = PRETRAIN_WORDS[3:]
    train = [
        AudioTextExample((Clip(torch.randn(1600), meta={"word": w}), "Which word?"), w, "qa")
        for w in task_words
    ]
    enc, info = finetune_on_pretraining_corpus(enc, cfg, train, logmel, progress=False)
    assert 0 < info["clips"] < 40
    assert set(info["dropped_task_words"]) == set(task_words)
    assert "word" in info["label_sets"]
    assert any(not torch.equal(before[k], v) for k, v in enc.model.state_dict().items())
    assert not any(p.requires_grad for p in enc.parameters())
