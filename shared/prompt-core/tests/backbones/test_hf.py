"""HFTextAdapter on real transformers classes built from tiny configs (no downloads)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    RobertaForMaskedLM,
    T5Config,
    T5ForConditionalGeneration,
)

from polyprompt.core.backbones.hf import HFTextAdapter, remove_prompt_positions
from polyprompt.core.errors import ConfigError, InputError, NonFiniteError, ShapeError

V, D = 97, 32


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=V, n_positions=40, n_embd=D, n_layer=2, n_head=4, initializer_range=0.2,
        bos_token_id=None, eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    return GPT2LMHeadModel(cfg).eval()


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=V, hidden_size=D, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=40,
        initializer_range=0.2, bos_token_id=None, eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


CAUSAL = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def left_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), t, dtype=torch.long)
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, t - len(r) :] = r
        mask[i, t - len(r) :] = 1
    return ids, mask


def right_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), t, dtype=torch.long)
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def random_rows(lengths, seed=1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, V, (n,), generator=g) for n in lengths]


# -- layout ------------------------------------------------------------------------------


def test_insert_prompt_layout_left_and_right_padding():
    adapter = HFTextAdapter(tiny_gpt2())
    prompt = torch.arange(2 * D, dtype=torch.float32).view(2, D) + 1000  # n = 2, recognisable
    rows = [torch.tensor([5, 6]), torch.tensor([7, 8, 9])]
    wte = adapter.embeddings.weight

    ids, mask = left_pad(rows)  # [[0, 5, 6], [7, 8, 9]]
    labels = ids.clone()
    parts = adapter.insert_prompt(ids, mask, prompt, labels=labels)
    emb = parts["inputs_embeds"]
    assert emb.shape == (2, 5, D)
    # row 0: [pad, P1, P2, 5, 6]
    torch.testing.assert_close(emb[0, 1:3], prompt)
    torch.testing.assert_close(emb[0, 3:], wte[torch.tensor([5, 6])])
    torch.testing.assert_close(emb[0, 0], wte[0])
    # row 1: [P1, P2, 7, 8, 9]
    torch.testing.assert_close(emb[1, :2], prompt)
    assert parts["attention_mask"].tolist() == [[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert parts["position_ids"].tolist() == [[0, 0, 1, 2, 3], [0, 1, 2, 3, 4]]
    assert parts["labels"].tolist() == [[-100, -100, -100, 5, 6], [-100, -100, 7, 8, 9]]

    ids, mask = right_pad(rows)  # [[5, 6, 0], [7, 8, 9]]
    parts = adapter.insert_prompt(ids, mask, prompt[None], labels=ids.clone())
    torch.testing.assert_close(parts["inputs_embeds"][0, :2], prompt)
    torch.testing.assert_close(parts["inputs_embeds"][0, 4], wte[0])
    assert parts["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert parts["position_ids"].tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 3, 4]]
    assert parts["labels"].tolist() == [[-100, -100, 5, 6, -100], [-100, -100, 7, 8, 9]]


def test_remove_prompt_positions_inverts_insertion():
    adapter = HFTextAdapter(tiny_gpt2())
    for pad in (left_pad, right_pad):
        ids, mask = pad(random_rows([2, 5, 3]))
        parts = adapter.insert_prompt(ids, mask, torch.randn(4, D))
        back = remove_prompt_positions(parts["inputs_embeds"], mask, 4)
        torch.testing.assert_close(back, adapter.embed_tokens(ids))


# -- generation: the key test ------------------------------------------------------------


@pytest.mark.parametrize("family", list(CAUSAL))
def test_batched_left_padded_generation_equals_each_row_alone(family):
    """3 rows of different lengths, left padded, one soft prompt: greedy tokens per row
    must equal generating that row alone without padding."""
    adapter = HFTextAdapter(CAUSAL[family]())
    torch.manual_seed(2)
    prompt = torch.randn(4, D)
    rows = random_rows([3, 9, 6])
    ids, mask = left_pad(rows)
    batched = adapter.generate(ids, mask, prompt, max_new_tokens=8, do_sample=False)
    assert batched.shape == (3, 8)
    alone = torch.cat(
        [adapter.generate(r[None], None, prompt, max_new_tokens=8, do_sample=False) for r in rows]
    )
    assert batched.tolist() == alone.tolist()
    assert len(set(map(tuple, alone.tolist()))) == 3  # rows differ: the test can see a mix-up
    # negative control: attending to the padding (mask all ones) changes the short rows
    careless = adapter.generate(
        ids, torch.ones_like(mask), prompt, max_new_tokens=8, do_sample=False
    )
    assert careless.tolist() != alone.tolist()


@pytest.mark.parametrize("family", list(CAUSAL))
def test_batched_prompt_forward_equals_each_row_alone(family):
    adapter = HFTextAdapter(CAUSAL[family]())
    prompt = torch.randn(3, D)
    rows = random_rows([2, 6, 4])
    for pad in (left_pad, right_pad):
        ids, mask = pad(rows)
        with torch.no_grad():
            logits = adapter(ids, mask, prompt=prompt).logits
        assert logits.shape == (3, ids.shape[1], V)
        for i, r in enumerate(rows):
            with torch.no_grad():
                ref = adapter(r[None], prompt=prompt).logits[0]
            torch.testing.assert_close(logits[i][mask[i] == 1], ref, atol=2e-5, rtol=1e-4)


def test_generate_without_prompt_equals_plain_generate():
    model = tiny_gpt2()
    adapter = HFTextAdapter(model)
    ids = random_rows([5])[0][None]
    ours = adapter.generate(ids, max_new_tokens=5, do_sample=False)
    ref = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert ours.tolist() == ref[:, 5:].tolist()


def test_generate_rejects_right_padding_and_encoders():
    adapter = HFTextAdapter(tiny_gpt2())
    ids, mask = right_pad(random_rows([2, 4]))
    with pytest.raises(InputError, match="LEFT padding"):
        adapter.generate(ids, mask, torch.randn(2, D), max_new_tokens=2)
    enc = HFTextAdapter(BertModel(BertConfig(vocab_size=V, hidden_size=D, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32)))  # fmt: skip
    with pytest.raises(ConfigError, match="cannot generate"):
        enc.generate(ids, None, torch.randn(2, D), max_new_tokens=2)


def test_generate_checks_context_length():
    adapter = HFTextAdapter(tiny_gpt2())  # n_positions = 40
    ids = random_rows([20])[0][None]
    with pytest.raises(
        InputError, match=r"prompt length 10 \+ sequence length 20 \+ max_new_tokens 15"
    ):
        adapter.generate(ids, None, torch.randn(10, D), max_new_tokens=15)


# -- training forward -----------------------------------------------------------------


@pytest.mark.parametrize("family", list(CAUSAL))
def test_loss_with_prompt_equals_manual_computation(family):
    model = CAUSAL[family]()
    adapter = HFTextAdapter(model)
    prompt = torch.randn(5, D)
    rows = random_rows([4, 7, 7])[1:]  # two unpadded rows of 7
    ids = torch.stack(rows)
    out = adapter(ids, prompt=prompt, labels=ids)
    # manual: [P, x] embeddings, next-token CE on the x positions only
    embeds = torch.cat([prompt.expand(2, -1, -1), model.get_input_embeddings()(ids)], dim=1)
    logits = model(inputs_embeds=embeds).logits  # (2, 12, V)
    manual = F.cross_entropy(logits[:, 5 - 1 : -1].reshape(-1, V), ids.reshape(-1))
    torch.testing.assert_close(out.loss, manual, atol=1e-5, rtol=1e-5)
    assert out.logits.shape == (2, 7, V)
    torch.testing.assert_close(out.logits, logits[:, 5:])


@pytest.mark.parametrize("family", list(CAUSAL))
def test_padded_batch_loss_is_token_mean_of_rows_alone(family):
    adapter = HFTextAdapter(CAUSAL[family]())
    prompt = torch.randn(3, D)
    rows = random_rows([2, 6, 4])
    ids, mask = left_pad(rows)
    with torch.no_grad():
        batched = adapter(ids, mask, prompt=prompt, labels=ids).loss
        total = sum(adapter(r[None], prompt=prompt, labels=r[None]).loss * len(r) for r in rows)
    # with a prompt every token (including the first) is predicted
    torch.testing.assert_close(batched, total / sum(len(r) for r in rows), atol=1e-5, rtol=1e-5)


def test_gradient_reaches_prompt_only():
    model = tiny_gpt2()
    for p in model.parameters():
        p.requires_grad_(False)
    adapter = HFTextAdapter(model)
    prompt = torch.randn(4, D, requires_grad=True)
    ids, mask = left_pad(random_rows([3, 5]))
    adapter(ids, mask, prompt=prompt, labels=ids).loss.backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


# -- encoders ------------------------------------------------------------------------------


def test_encoder_bert_output_shape_and_mask():
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=V, hidden_size=D, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=32)).eval()  # fmt: skip
    adapter = HFTextAdapter(bert)
    assert adapter.kind == "encoder" and adapter.max_positions == 32
    ids, mask = right_pad(random_rows([3, 6]))
    prompt = torch.randn(4, D)
    parts = adapter.insert_prompt(ids, mask, prompt, token_type_ids=torch.zeros_like(ids))
    assert parts["attention_mask"].shape == (2, 10)
    assert parts["attention_mask"].sum(1).tolist() == [7, 10]
    assert parts["token_type_ids"].shape == (2, 10)
    with torch.no_grad():
        out = adapter(ids, mask, prompt=prompt)
        ref = bert(inputs_embeds=parts["inputs_embeds"], attention_mask=parts["attention_mask"])
    assert out.last_hidden_state.shape == (2, 10, D)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state)
    # the mask is extended: padding stays invisible, so row 0 equals row 0 alone
    with torch.no_grad():
        alone = adapter(ids[:1, :3], prompt=prompt).last_hidden_state
    torch.testing.assert_close(out.last_hidden_state[0, :7], alone[0], atol=1e-5, rtol=1e-4)


def test_encoder_roberta_masked_lm_logits_and_loss():
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=V, hidden_size=D, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40, pad_token_id=1)  # fmt: skip
    adapter = HFTextAdapter(RobertaForMaskedLM(cfg).eval())
    assert adapter.kind == "encoder"
    ids, mask = right_pad(random_rows([3, 6]))
    labels = torch.full_like(ids, -100)
    labels[:, 1] = ids[:, 1]
    out = adapter(ids, mask, prompt=torch.randn(2, D), labels=labels)
    assert out.logits.shape == (2, 6, V)  # realigned with input_ids
    manual = F.cross_entropy(out.logits.reshape(-1, V), labels.reshape(-1))
    torch.testing.assert_close(out.loss, manual, atol=1e-5, rtol=1e-5)


# -- construction, identity, bad input ----------------------------------------------------


def test_kind_detection_and_refusals():
    assert HFTextAdapter(tiny_gpt2()).kind == "causal"
    assert HFTextAdapter(tiny_llama()).kind == "causal"
    base = GPT2Model(GPT2Config(vocab_size=V, n_positions=16, n_embd=D, n_layer=1, n_head=2))
    assert HFTextAdapter(base).kind == "causal"
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=V, d_model=16, d_kv=4, d_ff=32,
                                             num_layers=1, num_heads=2))  # fmt: skip
    with pytest.raises(ConfigError, match="encoder-decoder"):
        HFTextAdapter(t5)
    with pytest.raises(ConfigError, match="PreTrainedModel"):
        HFTextAdapter(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="kind"):
        HFTextAdapter(tiny_gpt2(), kind="seq2seq")


def test_identity():
    adapter = HFTextAdapter(tiny_gpt2())
    ident = adapter.identity()
    assert ident["library"] == "transformers"
    assert ident["class"].endswith("GPT2LMHeadModel")
    assert (ident["model_type"], ident["hidden_size"], ident["num_layers"], ident["vocab_size"]) == (
        "gpt2", D, 2, V,
    )  # fmt: skip
    assert ident == HFTextAdapter(tiny_gpt2()).identity()
    with torch.no_grad():
        adapter.model.lm_head.weight[0, 0] += 1  # tied with wte
    assert adapter.identity()["fingerprint"] != ident["fingerprint"]


def test_bad_inputs():
    adapter = HFTextAdapter(tiny_gpt2())
    ids = torch.tensor([[1, 2, 3]])
    prompt = torch.randn(2, D)
    where = "HFTextAdapter.insert_prompt"
    with pytest.raises(InputError, match=r"\[0, 97\)"):
        adapter.insert_prompt(torch.tensor([[1, 97]]), None, prompt)
    with pytest.raises(InputError, match="integer"):
        adapter.insert_prompt(ids.float(), None, prompt)
    with pytest.raises(ShapeError, match="2 dimensions"):
        adapter.insert_prompt(ids[0], None, prompt)
    with pytest.raises(ShapeError, match="attention_mask"):
        adapter.insert_prompt(ids, torch.ones(1, 4, dtype=torch.long), prompt)
    with pytest.raises(InputError, match="0 and 1"):
        adapter.insert_prompt(ids, torch.full_like(ids, 2), prompt)
    with pytest.raises(NonFiniteError, match=where):
        adapter.insert_prompt(ids, None, torch.full((2, D), float("nan")))
    with pytest.raises(ShapeError, match=f"dimension -1 must be {D}"):
        adapter.insert_prompt(ids, None, torch.randn(2, D + 1))
    with pytest.raises(ShapeError, match="batch size"):
        adapter.insert_prompt(ids, None, torch.randn(3, 2, D))
    with pytest.raises(
        InputError,
        match="prompt length 38 \\+ sequence length 3 = 41 exceeds the model context of 40",
    ):
        adapter.insert_prompt(ids, None, torch.randn(38, D))
    with pytest.raises(InputError, match="position_ids"):
        adapter(ids, prompt=prompt, position_ids=torch.zeros_like(ids))
    with pytest.raises(InputError, match=r"\[0, 97\)"):
        adapter.embed_tokens(torch.tensor([[-1]]))


def test_roberta_context_excludes_the_padding_offset():
    cfg = RobertaConfig(vocab_size=V, hidden_size=D, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=12, pad_token_id=1)  # fmt: skip
    adapter = HFTextAdapter(RobertaForMaskedLM(cfg).eval())
    assert adapter.max_positions == 10  # positions 2..11: padding_idx + 1 is the first
    ids = torch.randint(3, V, (1, 10))
    assert adapter(ids, torch.ones_like(ids)).logits.shape == (1, 10, V)  # the longest that fits
    with pytest.raises(InputError, match="exceeds the model context of 10"):
        adapter(torch.randint(3, V, (1, 11)), torch.ones(1, 11, dtype=torch.long))
    bert = HFTextAdapter(BertModel(BertConfig(vocab_size=V, hidden_size=D, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=12)))  # fmt: skip
    assert bert.max_positions == 12
