"""Zecoler, its baselines and their bad inputs, on a tiny RoBERTa MLM and real pairs."""

import pytest
import torch

from polyprompt.code.method import (
    ManualTemplate,
    ManualTemplateConfig,
    PromptEncoder,
    Zecoler,
    ZecolerConfig,
)
from polyprompt.code.pairs import PairExample
from polyprompt.code.train import build_method, step
from polyprompt.core.checkpoint import load_prompt, save_prompt
from polyprompt.core.errors import ConfigError, InputError
from polyprompt.core.freezing import trainable_report


def _zecoler(backbone, **kw):
    return Zecoler(backbone.adapter(), ZecolerConfig(**kw))


def test_template_layout_and_truncation(tiny_backbone, python_pairs):
    model = _zecoler(tiny_backbone)
    long = PairExample("clone", "python", "x = 1 ; " * 200, "y = 2 ; " * 200, 1)
    batch = model.encode([python_pairs["clone"][0], long])
    ids, pm = batch["input_ids"], batch["prompt_mask"]
    assert ids.shape[1] <= 64 and (pm.sum(1) == 10).all()
    tok = tiny_backbone.tokenizer
    for row in range(2):
        n = int(batch["attention_mask"][row].sum())
        seq = ids[row, :n].tolist()
        assert seq[0] == tok.bos_token_id and seq[-1] == tok.eos_token_id
        assert seq[-2] == tok.mask_token_id and batch["mask_pos"][row] == n - 2
        slots = pm[row].nonzero().flatten().tolist()
        assert slots[:3] == [1, 2, 3] and slots[-3:] == [n - 5, n - 4, n - 3]  # 3 / 4 / 3 split
    assert int(batch["attention_mask"][1].sum()) == 64  # the long pair is cut to the context


def test_forward_shapes_and_gradients_reach_only_the_prompt_encoder(tiny_backbone, python_pairs):
    model = _zecoler(tiny_backbone).train()
    before = {k: v.clone() for k, v in model.backbone.model.state_dict().items()}
    loss, logits, labels = step(model, model.encode(python_pairs["clone"][:6]))
    assert logits.shape == (6, 2) and labels.shape == (6,)
    loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("prompt_encoder.") for n in trainable)
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for n, p in model.named_parameters()
        if p.requires_grad
    )
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    opt.step()
    after = model.backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    enc = model.prompt_encoder
    assert (
        isinstance(enc.lstm_head, torch.nn.LSTM)
        and enc.lstm_head.num_layers == 2
        and enc.lstm_head.bidirectional
    )
    assert [type(m).__name__ for m in enc.mlp_head] == ["Linear", "ReLU", "Linear"]
    assert enc.mlp_head[0].in_features == 2 * 32


def test_save_load_identical(tiny_backbone, python_pairs, tmp_path):
    model = _zecoler(tiny_backbone, task="name")
    with torch.no_grad():
        for p in model.prompt_encoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    batch = model.encode(python_pairs["name"][:5])
    model.eval()
    expected = model(batch)
    save_prompt(model, tmp_path)
    other = _zecoler(tiny_backbone, task="name").eval()
    assert not torch.allclose(other(batch), expected)
    load_prompt(other, tmp_path)
    assert torch.equal(other(batch), expected)


@pytest.mark.parametrize(
    ("name", "prefix", "pct_max"),
    [
        ("soft_prompt", "prompt.", 5),
        ("zecoler_mlp", "prompt_encoder.", 10),
        ("linear_probe", "head.", 1),
        ("finetune", "", 101),
    ],
)
def test_baselines(tiny_backbone, python_pairs, name, prefix, pct_max):
    model = build_method(name, tiny_backbone, "search")
    logits = model(model.encode(python_pairs["search"][:4]))
    assert logits.shape == (4, 2)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.startswith(prefix) for n in names)
    assert 0 < trainable_report(model).percent_of_backbone <= pct_max


def test_manual_template_trains_nothing(tiny_backbone, python_pairs):
    model = ManualTemplate(tiny_backbone.adapter(), ManualTemplateConfig(task="search"))
    assert not any(p.requires_grad for p in model.parameters())
    batch = model.encode(python_pairs["search"][:3])
    assert not batch["prompt_mask"].any()
    assert model(batch).shape == (3, 2)
    assert model.predict_proba(python_pairs["search"][:3]).shape == (3,)


def test_bad_inputs(tiny_backbone, python_pairs):
    with pytest.raises(ConfigError, match="prompt_split"):
        ZecolerConfig(num_prompt_tokens=10, prompt_split=(3, 3, 3))
    with pytest.raises(ConfigError, match="label word 'Maybe-not-a-token' is not a single token"):
        _zecoler(tiny_backbone, label_words=("No", "Maybe-not-a-token"))
    with pytest.raises(ConfigError, match="exceeds the backbone context"):
        _zecoler(tiny_backbone, max_length=500)
    with pytest.raises(ConfigError, match="HFTextAdapter or a transformers masked LM"):
        Zecoler(torch.nn.Linear(2, 2), ZecolerConfig())
    model = _zecoler(tiny_backbone)
    batch = model.encode(python_pairs["clone"][:2])
    with pytest.raises(InputError, match=r"missing \['prompt_mask'\]"):
        model({k: v for k, v in batch.items() if k != "prompt_mask"})
    too_long = {k: (torch.cat([v, v], 1) if v.dim() == 2 else v) for k, v in batch.items()}
    with pytest.raises(InputError, match="exceeds the model context"):
        model(too_long)
    with pytest.raises(InputError, match=r"text_b: must be a non-empty string"):
        model.encode([{"text_a": "x", "text_b": "", "label": 1}])
    with pytest.raises(InputError, match="missing field"):
        model.encode([{"text_a": "x", "label": 1}])
    bad = dict(batch, input_ids=batch["input_ids"].clone())
    bad["input_ids"][0, 1] = 10_000
    with pytest.raises(InputError, match="token ids must lie in"):
        model(bad)


def test_prompt_encoder_block():
    enc = PromptEncoder(10, 16)
    assert enc.prompts().shape == (10, 16)
    from polyprompt.core.errors import ShapeError

    with pytest.raises(ShapeError):
        enc(torch.randn(10, 16))
