"""Q-Former aligner: 33 tokens per clip, instruction-aware, config validation."""

from __future__ import annotations

import pytest
import torch

from polyprompt.audio.aligner import AlignerConfig, AudioAligner
from polyprompt.core.errors import ConfigError, ShapeError

SMALL = dict(
    qformer_hidden_size=32, qformer_layers=2, qformer_heads=2, qformer_intermediate_size=64
)


def test_audio_aligner_shapes_and_instruction():
    torch.manual_seed(0)
    al = AudioAligner(
        AlignerConfig(**SMALL, dropout=0.0), audio_dim=24, lm_dim=16, vocab_size=50
    ).eval()
    from transformers import InstructBlipQFormerModel

    assert isinstance(al.qformer, InstructBlipQFormerModel)
    feats = torch.randn(2, 9, 24)
    ids = torch.randint(1, 50, (2, 5))
    out = al(feats, ids, torch.ones_like(ids))
    assert out.shape == (2, 33, 16)  # paper: 32 queries + 1 indicator
    torch.testing.assert_close(out[:, 0], al.indicator[0].expand(2, -1))  # indicator first
    other = al(feats, torch.randint(1, 50, (2, 5)))
    assert not torch.allclose(out[:, 1:], other[:, 1:])  # instruction feeds the Q-Former
    # padding of the instruction is masked out
    padded = al(
        feats,
        torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], 1),
        torch.cat([torch.ones_like(ids), torch.zeros(2, 3, dtype=torch.long)], 1),
    )
    torch.testing.assert_close(padded, out, atol=1e-5, rtol=1e-4)


def test_audio_aligner_options_and_errors():
    al = AudioAligner(
        AlignerConfig(**SMALL, use_indicator=False, num_query_tokens=4),
        audio_dim=24,
        lm_dim=16,
        vocab_size=50,
    )
    assert al(torch.randn(1, 5, 24)).shape == (1, 4, 16)
    with pytest.raises(ShapeError):
        al(torch.randn(1, 5, 23))
    with pytest.raises(ConfigError, match="qformer_hidden_size"):
        AlignerConfig(qformer_hidden_size=30, qformer_heads=4)
    assert AlignerConfig().num_audio_tokens == 33


def test_audio_aligner_output_norm_starts_at_lm_embedding_scale():
    torch.manual_seed(0)
    kw = dict(audio_dim=24, lm_dim=16, vocab_size=50)
    raw = AudioAligner(AlignerConfig(**SMALL, dropout=0.0), **kw).eval()
    normed = AudioAligner(
        AlignerConfig(**SMALL, dropout=0.0, output_norm=True), output_scale=0.05, **kw
    ).eval()
    feats = torch.randn(3, 9, 24)
    tokens = normed(feats)[:, 1:]  # the 32 query tokens (indicator excluded)
    rms = tokens.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, 0.05), atol=1e-3, rtol=1e-2)
    assert raw(feats)[:, 1:].pow(2).mean().sqrt() > 0.2  # without it: the Linear's own range
    assert normed.out_gain.requires_grad  # the gain trains with the aligner
    with pytest.raises(ConfigError, match="output_norm"):
        AlignerConfig(output_norm="yes")
