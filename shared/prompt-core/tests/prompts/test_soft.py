"""SoftPrompt: shapes, init modes, gradients, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polyprompt.core.errors import ConfigError, InputError
from polyprompt.core.prompts.soft import PromptInit, SoftPrompt


class StubTokenizer:
    """Whitespace tokenizer with the HF call convention (``tok(text, ...)["input_ids"]``)."""

    def __init__(self, vocab: dict[str, int], bos: int = 1) -> None:
        self.vocab = vocab
        self.bos = bos

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = [self.vocab[w] for w in text.split()]
        return {"input_ids": ([self.bos] if add_special_tokens else []) + ids}


VOCAB = {"classify": 5, "the": 6, "sentiment": 7, "positive": 8}


@pytest.fixture
def embedding() -> nn.Embedding:
    torch.manual_seed(0)
    return nn.Embedding(20, 8)


def test_random_init_shape_and_batch_expand() -> None:
    torch.manual_seed(0)
    prompt = SoftPrompt(num_tokens=5, dim=16, init_std=0.02)
    assert prompt.weight.shape == (5, 16)
    assert prompt.weight.std().item() == pytest.approx(0.02, rel=0.3)
    out = prompt(3)
    assert out.shape == (3, 5, 16)
    assert torch.equal(out[0], prompt.weight) and torch.equal(out[2], prompt.weight)


def test_uniform_init_range() -> None:
    prompt = SoftPrompt(50, 8, init="uniform", init_range=0.5)
    assert prompt.init is PromptInit.UNIFORM
    assert prompt.weight.abs().max().item() <= 0.5
    assert prompt.weight.abs().max().item() > 0.3


def test_from_token_ids_copies_rows(embedding: nn.Embedding) -> None:
    prompt = SoftPrompt.from_token_ids(embedding, [3, 4, 3])
    assert prompt.num_tokens == 3 and prompt.dim == 8
    assert torch.equal(prompt.weight.data, embedding.weight.data[[3, 4, 3]])
    # a copy, not a view: training the prompt leaves the embedding alone
    before = embedding.weight.detach().clone()
    with torch.no_grad():
        prompt.weight.add_(1.0)
    assert torch.equal(embedding.weight, before)
    # a 1-D tensor works too
    t = SoftPrompt.from_token_ids(embedding, torch.tensor([0, 19]))
    assert torch.equal(t.weight.data, embedding.weight.data[[0, 19]])


def test_from_text_equals_embedding_rows(embedding: nn.Embedding) -> None:
    tok = StubTokenizer(VOCAB)
    prompt = SoftPrompt.from_text(embedding, tok, "classify the sentiment")
    assert prompt.num_tokens == 3  # no special tokens
    assert torch.equal(prompt.weight.data, embedding.weight.data[[5, 6, 7]])


def test_from_text_repeats_and_truncates_like_peft(embedding: nn.Embedding) -> None:
    tok = StubTokenizer(VOCAB)
    longer = SoftPrompt.from_text(embedding, tok, "classify the sentiment", num_tokens=7)
    assert torch.equal(longer.weight.data, embedding.weight.data[[5, 6, 7, 5, 6, 7, 5]])
    shorter = SoftPrompt.from_text(embedding, tok, "classify the sentiment", num_tokens=2)
    assert torch.equal(shorter.weight.data, embedding.weight.data[[5, 6]])


def test_init_through_constructor(embedding: nn.Embedding) -> None:
    p = SoftPrompt(2, 8, "token_ids", embedding=embedding, token_ids=[1, 2])
    assert torch.equal(p.weight.data, embedding.weight.data[[1, 2]])
    q = SoftPrompt(4, 8, PromptInit.TEXT, embedding=embedding, tokenizer=StubTokenizer(VOCAB),
                   text="positive")  # fmt: skip
    assert torch.equal(q.weight.data, embedding.weight.data[[8, 8, 8, 8]])


def test_gradients_reach_only_prompt(embedding: nn.Embedding) -> None:
    embedding.requires_grad_(False)
    prompt = SoftPrompt.from_token_ids(embedding, [1, 2, 3])
    x = embedding(torch.tensor([[4, 5]]))
    seq = torch.cat([prompt(1), x], dim=1)
    seq.pow(2).sum().backward()
    assert prompt.weight.grad is not None and prompt.weight.grad.abs().sum() > 0
    assert embedding.weight.grad is None
    assert [n for n, p in prompt.named_parameters() if p.requires_grad] == ["weight"]


def test_dropout_only_in_training() -> None:
    prompt = SoftPrompt(4, 32, dropout=0.5)
    prompt.eval()
    assert torch.equal(prompt(2)[0], prompt.weight)
    prompt.train()
    assert (prompt(2) == 0).any()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_tokens": 0, "dim": 4},
        {"num_tokens": 2, "dim": 0},
        {"num_tokens": 2.5, "dim": 4},
        {"num_tokens": True, "dim": 4},
        {"num_tokens": 2, "dim": 4, "init": "nope"},
        {"num_tokens": 2, "dim": 4, "init_std": -1.0},
        {"num_tokens": 2, "dim": 4, "dropout": 1.0},
        {"num_tokens": 2, "dim": 4, "init": "token_ids"},  # no embedding
    ],
)
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SoftPrompt(**kwargs)


def test_bad_embedding_inputs_raise(embedding: nn.Embedding) -> None:
    with pytest.raises(InputError, match="outside"):
        SoftPrompt.from_token_ids(embedding, [1, 20])
    with pytest.raises(InputError, match="outside"):
        SoftPrompt.from_token_ids(embedding, [-1])
    with pytest.raises(InputError, match="empty"):
        SoftPrompt.from_token_ids(embedding, [])
    with pytest.raises(InputError):
        SoftPrompt.from_token_ids(embedding, [1.0, 2.0])
    with pytest.raises(InputError):
        SoftPrompt.from_token_ids(embedding, torch.tensor([[1, 2]]))
    with pytest.raises(ConfigError, match="Embedding"):
        SoftPrompt.from_token_ids(torch.zeros(3, 4), [1])
    with pytest.raises(ConfigError, match="embedding_dim"):
        SoftPrompt(1, 4, "token_ids", embedding=embedding, token_ids=[1])
    with pytest.raises(ConfigError, match="num_tokens"):
        SoftPrompt(3, 8, "token_ids", embedding=embedding, token_ids=[1])


def test_bad_text_inputs_raise(embedding: nn.Embedding) -> None:
    tok = StubTokenizer(VOCAB)
    with pytest.raises(InputError, match="non-empty"):
        SoftPrompt.from_text(embedding, tok, "   ")
    with pytest.raises(InputError, match="callable"):
        SoftPrompt.from_text(embedding, object(), "the")
    with pytest.raises(InputError, match="input_ids"):
        SoftPrompt.from_text(embedding, lambda text, **kw: {"ids": [1]}, "the")
    with pytest.raises(InputError, match="outside"):
        SoftPrompt.from_text(embedding, StubTokenizer({"big": 99}), "big")


@pytest.mark.parametrize("bad", [0, -1, 2.0, "2", None])
def test_bad_batch_size_raises(bad: object) -> None:
    with pytest.raises(InputError, match="batch_size"):
        SoftPrompt(2, 4)(bad)
