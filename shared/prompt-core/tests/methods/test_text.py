"""SoftPromptLM ("prompt_tuning") on tiny transformers models built from config (no downloads)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel, RobertaConfig, RobertaForMaskedLM

from polyprompt.core.backbones.hf import HFTextAdapter
from polyprompt.core.errors import ConfigError
from polyprompt.core.methods.text import PromptInit, SoftPromptLM, SoftPromptLMConfig
from polyprompt.core.registry import create, get_method

V, D = 128, 32  # vocab = ASCII, so a byte "tokenizer" gives real text ids
TEXT = [
    "the cat sat on the mat.",
    "the dog sat on the log.",
    "a cat and a dog met!!!!",
    "on the mat sat the cat.",
]


class ByteTokenizer:
    """Minimal HF-style tokenizer: one id per ASCII byte."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [b % V for b in text.encode()]}


def tiny_gpt2(seed: int = 0, initializer_range: float = 0.02) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=V, n_positions=64, n_embd=D, n_layer=2, n_head=4,
        bos_token_id=None, eos_token_id=None, pad_token_id=0, initializer_range=initializer_range,
    )  # fmt: skip
    return GPT2LMHeadModel(cfg).eval()


def text_batch() -> torch.Tensor:
    return torch.tensor([ByteTokenizer()(t)["input_ids"] for t in TEXT])  # (4, 23)


# -- config ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_tokens": 0}, "num_tokens"),
        ({"num_tokens": 2.5}, "num_tokens"),
        ({"init_std": 0.0}, "init_std"),
        ({"dropout": 1.0}, "dropout"),
        ({"init": "text"}, "init_text"),
        ({"init": "text", "init_text": "  "}, "init_text"),
        ({"init_text": "hello"}, "init_text"),
        ({"init": "token_ids", "num_tokens": 3, "token_ids": (1, 2)}, "token_ids"),
        ({"init": "token_ids", "num_tokens": 2, "token_ids": (1, -2)}, "token_ids"),
        ({"token_ids": (1, 2)}, "token_ids"),
        ({"init": "nope"}, "init"),
    ],
)
def test_config_rejects_bad_values(kwargs, field):
    with pytest.raises(ConfigError, match=f"SoftPromptLMConfig.{field}"):
        SoftPromptLMConfig(**kwargs)


def test_config_json_round_trip():
    cfg = SoftPromptLMConfig(num_tokens=3, init="token_ids", token_ids=(5, 6, 7))
    assert cfg.init is PromptInit.TOKEN_IDS
    back = SoftPromptLMConfig.from_json(cfg.to_json())
    assert back == cfg and back.token_ids == (5, 6, 7)


# -- construction ----------------------------------------------------------------------


def test_create_through_registry_freezes_the_lm():
    lm = tiny_gpt2()
    model = create("prompt_tuning", lm, num_tokens=5)
    assert isinstance(model, SoftPromptLM) and get_method("prompt_tuning") is SoftPromptLM
    assert isinstance(model.backbone, HFTextAdapter) and model.backbone.model is lm
    assert model.prompt.weight.shape == (5, D)
    assert not any(p.requires_grad for p in lm.parameters())
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompt.weight"]
    assert list(model.trainable_state_dict()) == ["prompt.weight"]
    assert model.backbone_identity()["library"] == "transformers"
    # an adapter works as the backbone too
    assert create("prompt_tuning", HFTextAdapter(tiny_gpt2()), num_tokens=2).num_prompt_tokens == 2


def test_init_modes():
    lm = tiny_gpt2()
    wte = lm.get_input_embeddings().weight
    cfg = SoftPromptLMConfig(num_tokens=3, init="token_ids", token_ids=(5, 6, 7))
    model = SoftPromptLM(lm, cfg)
    torch.testing.assert_close(model.prompt.weight, wte[[5, 6, 7]])

    cfg = SoftPromptLMConfig(num_tokens=5, init="text", init_text="ab")
    model = SoftPromptLM(lm, cfg, tokenizer=ByteTokenizer())
    torch.testing.assert_close(model.prompt.weight, wte[[97, 98, 97, 98, 97]])  # repeated, cut
    # the tokenizer can ride on the adapter, so create() can build text-initialised prompts
    adapter = HFTextAdapter(lm, tokenizer=ByteTokenizer())
    model = create("prompt_tuning", adapter, num_tokens=2, init="text", init_text="xyz")
    torch.testing.assert_close(model.prompt.weight, wte[[120, 121]])
    with pytest.raises(ConfigError, match="tokenizer"):
        SoftPromptLM(tiny_gpt2(), cfg)

    model = SoftPromptLM(lm, SoftPromptLMConfig(num_tokens=50, init="uniform", init_range=0.1))
    assert model.prompt.weight.abs().max() <= 0.1


def test_construction_errors():
    with pytest.raises(ConfigError, match="HFTextAdapter or a transformers"):
        SoftPromptLM(torch.nn.Linear(2, 2), SoftPromptLMConfig())
    with pytest.raises(ConfigError, match="context of 64"):
        SoftPromptLM(tiny_gpt2(), SoftPromptLMConfig(num_tokens=64))
    with pytest.raises(TypeError):
        SoftPromptLM(tiny_gpt2(), GPT2Config())


# -- training ------------------------------------------------------------------------------


def test_only_the_prompt_gets_gradients():
    model = create("prompt_tuning", tiny_gpt2(), num_tokens=4)
    ids = text_batch()
    model(ids, labels=ids).loss.backward()
    assert model.prompt.weight.grad is not None and model.prompt.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters())


def test_adam_steps_reduce_the_loss():
    torch.manual_seed(0)
    # a wider weight init than GPT-2's 0.02 makes the random LM react to its context
    model = create("prompt_tuning", tiny_gpt2(initializer_range=0.2), num_tokens=6, init_std=0.5)
    ids = text_batch()
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    opt = torch.optim.Adam([model.prompt.weight], lr=0.1)
    losses = []
    for _ in range(15):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
    for k, v in model.backbone.state_dict().items():  # the LM did not move
        assert torch.equal(v, frozen[k]), k


def test_trainable_state_round_trip():
    model = create("prompt_tuning", tiny_gpt2(), num_tokens=4, init_std=0.3)
    state = model.trainable_state_dict()
    assert set(state) == {"prompt.weight"} and state["prompt.weight"].shape == (4, D)
    fresh = create("prompt_tuning", tiny_gpt2(), num_tokens=4)
    fresh.load_state_dict(state, strict=False)
    ids = text_batch()
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, model(ids).logits)


def test_generate_left_padded_batch_equals_rows_alone():
    model = create("prompt_tuning", tiny_gpt2(), num_tokens=4, init_std=0.5)
    rows = [text_batch()[0, :5], text_batch()[1, :12], text_batch()[2, :8]]
    ids = torch.zeros(3, 12, dtype=torch.long)
    mask = torch.zeros(3, 12, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, 12 - len(r) :], mask[i, 12 - len(r) :] = r, 1
    out = model.generate(ids, mask, max_new_tokens=5, do_sample=False)
    assert out.shape == (3, 5)
    alone = [model.generate(r[None], max_new_tokens=5, do_sample=False)[0].tolist() for r in rows]
    assert out.tolist() == alone


def test_encoder_masked_lm_prompt_tuning():
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=V, hidden_size=D, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40, pad_token_id=1)  # fmt: skip
    model = create("prompt_tuning", RobertaForMaskedLM(cfg), num_tokens=3)
    assert model.backbone.kind == "encoder"
    ids = text_batch()[:, :10]
    labels = torch.full_like(ids, -100)
    labels[:, 4] = ids[:, 4]
    out = model(ids, labels=labels)
    assert out.logits.shape == (4, 10, V)
    out.loss.backward()
    assert model.prompt.weight.grad.abs().sum() > 0


# -- parity with HF PEFT (basis of the lead's benchmark (b)) -----------------------------------


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_matches_peft_prompt_tuning():
    """Same tiny GPT-2, same prompt, one forward: our loss == PEFT PROMPT_TUNING's loss.

    How the init is copied: both models are built from the same config and seed (identical
    weights); ours is initialised from token ids, then its ``prompt.weight`` ``(n, D)`` is
    copied into PEFT's ``prompt_encoder["default"].embedding.weight`` (an ``nn.Embedding``
    of ``num_virtual_tokens`` rows that PEFT prepends in row order). PEFT puts the prompt
    before the padding and passes no position ids, so we compare on unpadded batches, where
    both layouts are ``[P1..Pn, tokens]`` with positions ``0..n+T-1``.
    """
    peft = pytest.importorskip("peft")
    n = 5
    ours = create(
        "prompt_tuning", tiny_gpt2(), num_tokens=n, init="token_ids", token_ids=(3, 50, 97, 98, 99)
    )
    peft_cfg = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n)
    theirs = peft.get_peft_model(tiny_gpt2(), peft_cfg).eval()
    with torch.no_grad():
        theirs.prompt_encoder["default"].embedding.weight.copy_(ours.prompt.weight)
    ids = text_batch()
    mask = torch.ones_like(ids)
    ref = theirs(input_ids=ids, attention_mask=mask, labels=ids)
    out = ours(ids, mask, labels=ids)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=0)
    # PEFT keeps the prompt positions in its logits; ours are realigned to input_ids
    assert ref.logits.shape == (4, n + ids.shape[1], V)
    torch.testing.assert_close(out.logits, ref.logits[:, n:], atol=1e-5, rtol=0)
    # and the gradient w.r.t. the prompt agrees
    out.loss.backward()
    ref.loss.backward()
    torch.testing.assert_close(
        ours.prompt.weight.grad,
        theirs.prompt_encoder["default"].embedding.weight.grad,
        atol=1e-6,
        rtol=1e-4,
    )
