"""Interleaved LM input: masks, labels, padding, length errors, batched == per-row generate."""

from __future__ import annotations

import pytest
import torch

from polyprompt.audio.lm import IGNORE_INDEX, InterleavedLM, Piece
from polyprompt.core.errors import ConfigError, InputError, ShapeError


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=40,
        n_positions=48,
        n_embd=16,
        n_layer=2,
        n_head=2,
        bos_token_id=1,
        eos_token_id=2,
    )
    return GPT2LMHeadModel(cfg)


def _llama_family(config_cls, model_cls):
    """A tiny Llama-layout causal LM (Llama, Qwen2 share the config fields used here)."""
    cfg = config_cls(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=48,
        bos_token_id=1,
        eos_token_id=2,
    )
    return model_cls(cfg)


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return _llama_family(LlamaConfig, LlamaForCausalLM)


def _qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return _llama_family(Qwen2Config, Qwen2ForCausalLM)


def _rows(gen):
    a = torch.randn(3, 16, generator=gen)
    b = torch.randn(3, 16, generator=gen)
    return [
        [Piece.ids([1]), Piece.embeds(a), Piece.ids([5, 6])],
        [Piece.ids([1]), Piece.embeds(b), Piece.ids([9, 4, 5]), Piece.embeds(a), Piece.ids([7, 8])],
        [Piece.ids([1]), Piece.ids([3])],
    ]


def test_audio_lm_assemble_masks_labels_positions():
    torch.manual_seed(0)
    lm = InterleavedLM(_gpt2().eval())
    rows = [[*r, Piece.ids([7, 2], target=True)] for r in _rows(torch.Generator().manual_seed(0))]
    batch = lm.assemble(rows)
    lengths = [1 + 3 + 2 + 2, 1 + 3 + 3 + 3 + 2 + 2, 1 + 1 + 2]
    assert batch["inputs_embeds"].shape == (3, max(lengths), 16)
    for r, n in enumerate(lengths):
        mask = batch["attention_mask"][r]
        assert mask.tolist() == [0] * (max(lengths) - n) + [1] * n  # left padded
        assert batch["position_ids"][r, -n:].tolist() == list(range(n))
        labels = batch["labels"][r]
        assert labels[-2:].tolist() == [7, 2]
        assert (labels[:-2] == IGNORE_INDEX).all()  # loss on the response only
    # audio embeddings are placed verbatim
    torch.testing.assert_close(batch["inputs_embeds"][0, -7:-4], rows[0][1].value)


@pytest.mark.parametrize("make", [_gpt2, _llama, _qwen2], ids=["gpt2", "llama", "qwen2"])
def test_audio_lm_batched_generate_equals_per_row(make):
    torch.manual_seed(0)
    lm = InterleavedLM(make().eval())
    rows = _rows(torch.Generator().manual_seed(1))
    batched = lm.generate(rows, max_new_tokens=6, eos_token_id=None)
    single = [lm.generate([r], max_new_tokens=6, eos_token_id=None)[0] for r in rows]
    assert batched == single
    assert all(len(r) <= 6 for r in batched) and any(batched)


def test_audio_lm_loss_backprop_reaches_audio_only():
    lm = InterleavedLM(_gpt2().eval().requires_grad_(False))
    audio = torch.randn(3, 16, requires_grad=True)
    loss = lm.loss([[Piece.ids([1]), Piece.embeds(audio), Piece.ids([4, 2], target=True)]])
    loss.backward()
    assert audio.grad is not None and audio.grad.abs().sum() > 0


def test_audio_lm_errors():
    lm = InterleavedLM(_gpt2().eval())
    with pytest.raises(InputError, match="48 positions"):
        lm.assemble([[Piece.ids([1]), Piece.embeds(torch.zeros(50, 16))]])
    with pytest.raises(InputError, match="new tokens"):
        lm.generate([[Piece.ids([1] * 40)]], max_new_tokens=10)
    with pytest.raises(ShapeError, match=r"\(n, 16\)"):
        lm.assemble([[Piece.embeds(torch.zeros(3, 8))]])
    with pytest.raises(InputError, match="vocab|token ids"):
        lm.assemble([[Piece.ids([99])]])
    with pytest.raises(InputError, match="empty"):
        lm.assemble([[]])
    with pytest.raises(InputError, match="no response"):
        lm.loss([[Piece.ids([1, 2])]])


def test_audio_lm_refuses_encoder():
    from transformers import BertConfig, BertModel

    bert = BertModel(
        BertConfig(
            vocab_size=30,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    )
    with pytest.raises(ConfigError, match="causal"):
        InterleavedLM(bert)
