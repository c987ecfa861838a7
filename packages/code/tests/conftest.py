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
