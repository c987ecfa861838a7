"""In-situ pre-training: AudioMAE on spectrograms and the tiny LM on stdlib docstrings, cached."""

from __future__ import annotations

import pytest
import torch

from polyprompt.audio.encoder import AudioEncoderConfig
from polyprompt.audio.pretrain_encoder import MAEConfig, MaskedAutoencoder, pretrain_audio_mae
from polyprompt.core.errors import ShapeError

ENC = AudioEncoderConfig(n_mels=32, target_frames=32, embed_dim=32, depth=1, num_heads=2)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path))
    return tmp_path


def test_audio_mae_patchify_matches_patch_embed_order():
    from polyprompt.audio.encoder import build_audio_encoder

    mae = MaskedAutoencoder(build_audio_encoder(ENC), MAEConfig(decoder_dim=16, decoder_heads=2))
    spec = torch.randn(2, 1, 32, 32)
    patches = mae.patchify(spec)  # (B, N, p*p)
    # a conv with one-hot kernels reproduces the patchify order of timm's patch_embed
    w = torch.eye(256).view(256, 1, 16, 16)
    ref = (
        torch.nn.functional.conv2d(spec.transpose(-1, -2), w, stride=16).flatten(2).transpose(1, 2)
    )
    torch.testing.assert_close(patches, ref)


def test_audio_mae_pretrain_learns_and_caches(home):
    torch.manual_seed(0)
    t = torch.linspace(0, 1, 32)
    specs = torch.stack(
        [torch.outer(torch.sin(6 * t + k), torch.cos(3 * t * k)) for k in range(16)]
    )
    specs = specs.unsqueeze(1)
    cfg = MAEConfig(steps=30, batch_size=8, lr=3e-3, decoder_dim=16, decoder_heads=2)
    enc, info = pretrain_audio_mae(specs, ENC, cfg, progress=False)
    assert not info["from_cache"] and info["final_loss"] < info["first_loss"]
    assert not any(p.requires_grad for p in enc.parameters())
    again, info2 = pretrain_audio_mae(specs, ENC, cfg, progress=False)
    assert info2["from_cache"]
    for a, b in zip(
        enc.model.state_dict().values(), again.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    with pytest.raises(ShapeError, match="32, 32"):
        pretrain_audio_mae(torch.randn(4, 1, 16, 32), ENC, cfg, progress=False)


def test_audio_mae_pretrain_ignores_the_global_rng():
    # the cache key holds the configs + data, so the weights must not depend on the caller's RNG
    specs = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = MAEConfig(steps=3, batch_size=4, decoder_dim=16, decoder_heads=2)
    states = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        enc, _ = pretrain_audio_mae(specs, ENC, cfg, progress=False, cache=False)
        states.append(enc.model.state_dict())
    for a, b in zip(states[0].values(), states[1].values(), strict=True):
        assert torch.equal(a, b)


def test_audio_tiny_lm_pretrain_caches(home):
    from polyprompt.audio.text_pretrain import TinyLMConfig, pretrain_tiny_lm, stdlib_docstrings

    docs = stdlib_docstrings(20_000)
    assert len(docs) > 20 and all(len(d) >= 40 for d in docs)
    cfg = TinyLMConfig(
        vocab_size=400,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        steps=20,
        batch_size=4,
        block_size=32,
        max_chars=20_000,
        max_positions=64,
    )
    model, tok, info = pretrain_tiny_lm(
        ["Describe the audio. a woman says river."], cfg, progress=False
    )
    assert not info["from_cache"] and info["final_loss"] < 6.5
    ids = tok.encode(" a woman says river", add_special_tokens=False)
    assert tok.decode(ids).strip() == "a woman says river"
    model2, tok2, info2 = pretrain_tiny_lm(
        ["Describe the audio. a woman says river."], cfg, progress=False
    )
    assert info2["from_cache"] and tok2.encode(" river", add_special_tokens=False) == tok.encode(
        " river", add_special_tokens=False
    )
    x = torch.tensor([ids])
    torch.testing.assert_close(model(x).logits, model2(x).logits)
