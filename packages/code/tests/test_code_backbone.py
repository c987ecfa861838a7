"""The official CodeBERT layout loader, on synthetic checkpoints with the official keys."""

import json

import pytest
import torch

from polyprompt.code.backbone import CodeMLMConfig, load_codebert, save_codebert
from polyprompt.core.errors import CheckpointError


def _outputs(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_maskedlm_layout_round_trip(tiny_backbone, tmp_path):
    save_codebert(tiny_backbone, tmp_path)
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "model.safetensors")))
    assert "roberta.embeddings.word_embeddings.weight" in keys
    assert "roberta.encoder.layer.0.attention.self.query.weight" in keys
    assert {"lm_head.dense.weight", "lm_head.layer_norm.weight", "lm_head.bias"} <= keys
    loaded = load_codebert(tmp_path)
    ids = torch.randint(5, 500, (2, 12))
    assert torch.equal(_outputs(loaded.model, ids), _outputs(tiny_backbone.model, ids))
    text = "def f ( x ) : return x"
    assert loaded.tokenizer(text)["input_ids"] == tiny_backbone.tokenizer(text)["input_ids"]
    assert loaded.info["has_lm_head"]


def test_bare_robertamodel_bin_layout(tiny_backbone, tmp_path):
    """microsoft/codebert-base: RobertaModel keys (no prefix), pooler, position_ids, .bin."""
    save_codebert(tiny_backbone, tmp_path, bare=True, fmt="bin")
    state = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    assert "embeddings.word_embeddings.weight" in state
    d = tiny_backbone.model.config.hidden_size
    state["pooler.dense.weight"] = torch.zeros(d, d)
    state["pooler.dense.bias"] = torch.zeros(d)
    state["embeddings.position_ids"] = torch.arange(66).unsqueeze(0)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="no masked-LM head"):
        load_codebert(tmp_path)
    with pytest.warns(UserWarning, match="randomly initialised"):
        loaded = load_codebert(tmp_path, allow_missing_lm_head=True)
    ids = torch.randint(5, 500, (2, 9))
    with torch.no_grad():
        a = loaded.model.roberta(input_ids=ids).last_hidden_state
        b = tiny_backbone.model.roberta(input_ids=ids).last_hidden_state
    assert torch.equal(a, b)


def test_loader_errors(tiny_backbone, tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_codebert(tmp_path)
    save_codebert(tiny_backbone, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    with pytest.raises(CheckpointError, match="'roberta' model"):
        load_codebert(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_size": 64}))
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_codebert(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "model.safetensors"))
    extra = {**state, "classifier.weight": torch.zeros(2, 2)}
    save_file(extra, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected key 'classifier.weight'"):
        load_codebert(tmp_path)
    state.pop("roberta.encoder.layer.0.output.dense.weight")
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"missing keys \['roberta.encoder.layer.0.output.dense.weight'\]"
    ):
        load_codebert(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        load_codebert(tmp_path)


def test_config_validation():
    from polyprompt.core.errors import ConfigError

    with pytest.raises(ConfigError, match="num_heads"):
        CodeMLMConfig(hidden_size=30, num_heads=4)
    assert CodeMLMConfig().build(50).config.max_position_embeddings == 130
