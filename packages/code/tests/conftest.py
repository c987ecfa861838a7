"""Shared fixtures: real stdlib functions and a tiny RoBERTa MLM built in the session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def python_corpus():
    from polyprompt.code.corpus import load_corpus

    return load_corpus("python", max_functions=300, seed=0)


@pytest.fixture(scope="session")
def tiny_backbone(python_corpus):
    """A freshly initialised tiny RobertaForMaskedLM + a BPE tokenizer trained on real code."""
    import torch

    from polyprompt.code.backbone import CodeBackbone, CodeMLMConfig
    from polyprompt.code.pretrain import pretrain_texts, train_tokenizer

    tok = train_tokenizer(pretrain_texts([python_corpus]), 600, 64)
    torch.manual_seed(0)
    arch = CodeMLMConfig(
        vocab_size=600,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        max_length=64,
    )
    return CodeBackbone(arch.build(len(tok)).eval(), tok)


@pytest.fixture(scope="session")
def python_pairs(python_corpus):
    from polyprompt.code.pairs import build_pairs

    return {
        t: build_pairs(python_corpus.functions, t, num_pairs=24, seed=0)
        for t in ("clone", "search", "name")
    }


@pytest.fixture(scope="session")
def tiny_bert_dir(python_corpus, tmp_path_factory):
    """A tiny BERT checkpoint in MiniLM's layout: bare ``BertModel`` keys (+ pooler,
    position_ids) in model.safetensors, config.json, an uncased WordPiece vocab.txt trained
    on real code with ``tokenizers``; no MLM head (as the sentence encoder)."""
    import json

    import torch
    from safetensors.torch import save_file
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel

    from polyprompt.code.pretrain import pretrain_texts

    d = tmp_path_factory.mktemp("tiny_minilm")
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(
        [*pretrain_texts([python_corpus]), *["yes no"] * 50],
        vocab_size=600,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        show_progress=False,
    )
    wp.save_model(str(d))
    vocab = len((d / "vocab.txt").read_text(encoding="utf-8").splitlines())
    cfg = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in BertModel(cfg).state_dict().items()}
    state["embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    save_file(state, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({**cfg.to_dict(), "architectures": ["BertModel"]}))
    (d / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return d


@pytest.fixture(scope="session")
def tiny_bert_backbone(tiny_bert_dir):
    """The tiny BERT as a BertForMaskedLM (fresh, untrained head) + its tokenizer."""
    from polyprompt.code.minilm import load_bert_encoder

    return load_bert_encoder(tiny_bert_dir)
