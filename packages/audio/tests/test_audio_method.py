"""APT method: 33 tokens per clip, gradients only in aligner + indicator, batched generate,
save -> load -> identical generations, baselines, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from polyprompt.audio import baselines
from polyprompt.audio.aligner import AlignerConfig
from polyprompt.audio.method import AcousticPromptTuning, APTBackbone, APTConfig
from polyprompt.audio.tasks import AudioTextExample, Clip
from polyprompt.core.errors import ConfigError, InputError

TEXTS = [
    "Describe the audio.",
    "a woman says river slowly.",
    "a man says seven quickly.",
    "Which word is spoken? Options: river, seven.",
    "river",
    "seven",
    "yes",
    "no",
    "Is the second speaker faster than the first?",
    "Word: river.",
    "Word:",
] * 4


def _clip(seed: int, seconds: float = 0.3) -> Clip:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(16000 * seconds)) / 16000
    wave = 0.3 * torch.sin(2 * math.pi * (200 + 50 * seed) * t) + 0.01 * torch.randn(
        t.shape, generator=g
    )
    return Clip(wave, meta={"name": f"tone{seed}"})


def _examples() -> list[AudioTextExample]:
    c = [_clip(i) for i in range(4)]
    return [
        AudioTextExample((c[0], "Describe the audio."), "a woman says river slowly.", "caption"),
        AudioTextExample(
            (c[1], "Which word is spoken? Options: river, seven."),
            "seven",
            "classify",
            label=1,
            choices=("river", "seven"),
        ),
        AudioTextExample((c[2], "Word: river.", c[3], "Word:"), "river", "fewshot"),
        AudioTextExample(
            (c[1], c[2], "Is the second speaker faster than the first?"), "no", "nlar"
        ),
    ]


@pytest.fixture(scope="module")
def backbone():
    from transformers import GPT2Config, GPT2LMHeadModel

    from polyprompt.audio.encoder import AudioEncoderConfig, build_audio_encoder
    from polyprompt.audio.frontend import LogMelConfig
    from polyprompt.audio.lm import InterleavedLM
    from polyprompt.audio.text_pretrain import train_tokenizer

    torch.manual_seed(0)
    tok = train_tokenizer(TEXTS, 300)
    lm = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok),
            n_positions=256,
            n_embd=32,
            n_layer=2,
            n_head=2,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    enc = build_audio_encoder(
        AudioEncoderConfig(n_mels=32, target_frames=32, embed_dim=32, depth=1, num_heads=2)
    )
    return APTBackbone(enc, InterleavedLM(lm, tok), LogMelConfig(n_mels=32, target_frames=32))


CFG = APTConfig(
    aligner=AlignerConfig(
        qformer_hidden_size=32,
        qformer_layers=1,
        qformer_heads=2,
        qformer_intermediate_size=64,
        cross_attention_frequency=1,
    ),
    max_new_tokens=5,
)


def _method(backbone, seed=0, cfg=CFG):
    torch.manual_seed(seed)
    return AcousticPromptTuning(backbone, cfg)


def test_audio_method_tokens_and_gradients(backbone):
    m = _method(backbone)
    exs = _examples()
    toks = m.audio_tokens(exs)
    assert [t.shape for t in toks] == [(1, 33, 32), (1, 33, 32), (2, 33, 32), (2, 33, 32)]
    loss = m(exs)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("aligner.") for n in trainable)
    assert "aligner.indicator" in trainable and "aligner.query_tokens" in trainable
    assert all(p.grad is None for p in m.backbone.parameters())  # frozen encoder + LM
    assert m.aligner.indicator.grad is not None and m.aligner.proj.weight.grad.abs().sum() > 0
    assert m.aligner.query_tokens.grad.abs().sum() > 0


def test_audio_method_batched_generate_equals_per_row(backbone):
    m = _method(backbone).eval()
    exs = _examples()
    batched = m.generate(exs)
    assert batched == [m.generate([e])[0] for e in exs]


def test_audio_method_save_load_identical(backbone, tmp_path):
    from polyprompt.core.checkpoint import load_prompt, save_prompt

    m = _method(backbone, seed=1).eval()
    with torch.no_grad():  # move away from the init so the check is meaningful
        for p in m.aligner.parameters():
            p.add_(0.05 * torch.randn_like(p))
    exs = _examples()
    before = m.generate(exs)
    loss_before = float(m(exs).detach())
    save_prompt(m, tmp_path / "apt")
    other = _method(backbone, seed=2).eval()
    assert float(other(exs).detach()) != loss_before
    load_prompt(other, tmp_path / "apt")
    assert other.generate(exs) == before
    assert float(other(exs).detach()) == pytest.approx(loss_before, abs=1e-6)


def test_audio_method_training_lowers_loss(backbone):
    from polyprompt.audio.experiment import fit

    m = _method(backbone)
    exs = _examples()
    start = float(m(exs).detach())
    fit(m, exs * 4, epochs=3, batch_size=4, lr=3e-3, progress=False)
    assert float(m(exs).detach()) < start


def test_audio_baselines(backbone):
    lm_before = {k: v.clone() for k, v in backbone.lm.model.state_dict().items()}
    text = baselines.text_only(backbone, CFG)
    assert text.aligner is None
    assert {n for n, p in text.named_parameters() if p.requires_grad} == {"soft_prompt"}
    exs = _examples()
    # no audio reaches the LM: swapping the clips changes nothing
    swapped = AudioTextExample((_clip(9), "Describe the audio."), "x", "caption")
    assert torch.equal(text.audio_tokens([exs[0]])[0], text.audio_tokens([swapped])[0])
    full = baselines.full_finetune(backbone, CFG)
    names = {n for n, p in full.named_parameters() if p.requires_grad}
    assert any(n.startswith("backbone.lm.") for n in names) and any(
        n.startswith("aligner.") for n in names
    )
    assert not any(n.startswith("backbone.encoder.") for n in names)
    full(exs).backward()
    torch.optim.SGD([p for p in full.parameters() if p.requires_grad], lr=0.1).step()
    for k, v in backbone.lm.model.state_dict().items():  # shared frozen LM untouched
        assert torch.equal(v, lm_before[k])
    assert all(not p.requires_grad for p in backbone.parameters())


def test_audio_method_bad_inputs(backbone):
    m = _method(backbone)
    with pytest.raises(InputError, match="missing audio slot"):
        AudioTextExample((None, "Describe the audio."), "x", "caption")
    with pytest.raises(InputError, match="missing audio slot"):
        AudioTextExample(("<audio> Describe the audio.",), "x", "caption")
    with pytest.raises(InputError, match="AudioTextExample"):
        m(["not an example"])
    with pytest.raises(InputError, match="non-empty"):
        m.generate([])
    # too many tokens for the LM's 256 positions: 8 clips x 33 audio tokens
    many = AudioTextExample(
        tuple(x for i in range(8) for x in (_clip(i), "Word: river.")), "river", "fewshot"
    )
    with pytest.raises(InputError, match="256 positions"):
        m([many])
    silent = Clip(torch.zeros(4000))
    with pytest.raises(InputError, match="silent"):
        m([AudioTextExample((silent, "Describe the audio."), "x", "caption")])
    with pytest.raises(ConfigError, match="APTBackbone"):
        AcousticPromptTuning(backbone.encoder, CFG)


def test_audio_method_registered():
    from polyprompt.core.registry import get_method

    assert get_method("acoustic_prompt_tuning") is AcousticPromptTuning
    assert APTConfig.from_dict(CFG.to_dict()).aligner.qformer_hidden_size == 32
