"""AudioMAE-style encoder: shapes, bad spectrograms, core linear probe, official checkpoint loader."""

from __future__ import annotations

import pytest
import torch

from polyprompt.audio.encoder import (
    AudioEncoderConfig,
    build_audio_encoder,
    convert_audiomae_state_dict,
    load_audiomae_checkpoint,
)
from polyprompt.core.errors import CheckpointError, ConfigError, NonFiniteError, ShapeError

TINY = AudioEncoderConfig(n_mels=32, target_frames=64, embed_dim=32, depth=2, num_heads=2)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_audio_encoder(TINY).eval()


def test_audio_encoder_shapes_and_layout(encoder):
    x = torch.randn(3, 1, 32, 64)
    assert encoder.embed(x).shape == (3, 1 + TINY.num_patches, 32)
    assert encoder.audio_features(x).shape == (3, 9, 32)
    assert encoder.forward_features(x).shape == (3, 32)
    # AudioMAE layout: the ViT sees (time, mel); patch_embed is built for (frames, n_mels)
    assert tuple(encoder.model.patch_embed.img_size) == (64, 32)
    assert encoder.identity()["audio_config"]["target_frames"] == 64


@pytest.mark.parametrize(
    "shape", [(2, 32, 64), (2, 2, 32, 64), (2, 1, 64, 32), (2, 1, 32, 100)], ids=str
)
def test_audio_encoder_wrong_spectrogram_shape(encoder, shape):
    with pytest.raises(ShapeError, match="n_mels=32, frames=64"):
        encoder.embed(torch.randn(*shape))


def test_audio_encoder_nonfinite(encoder):
    x = torch.randn(1, 1, 32, 64)
    x[0, 0, 3, 3] = float("nan")
    with pytest.raises(NonFiniteError):
        encoder.embed(x)


def test_audio_encoder_config_validation():
    with pytest.raises(ConfigError, match="n_mels"):
        AudioEncoderConfig(n_mels=30)


def test_audio_encoder_core_linear_probe(encoder):
    from polyprompt.core import create

    probe = create("linear_probe", encoder, num_classes=3)
    logits = probe(torch.randn(2, 1, 32, 64))
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert all(p.grad is None for p in encoder.parameters())


def _official_pretrain_state(enc) -> dict[str, torch.Tensor]:
    """The layout of AudioMAE's pretrained.pth (models_mae.MaskedAutoencoderViT)."""
    state = {k: v.clone() for k, v in enc.model.state_dict().items() if not k.startswith("fc_norm")}
    d = enc.embed_dim
    state["norm.weight"] = torch.randn(d)
    state["norm.bias"] = torch.randn(d)
    state["mask_token"] = torch.zeros(1, 1, 16)
    state["decoder_embed.weight"] = torch.zeros(16, d)
    state["decoder_pos_embed"] = torch.zeros(1, 9, 16)
    state["decoder_blocks.0.attn.qkv.weight"] = torch.zeros(48, 16)
    state["decoder_norm.weight"] = torch.ones(16)
    state["decoder_pred.weight"] = torch.zeros(256, 16)
    return state


def test_audio_encoder_loads_official_pretrain_layout(encoder, tmp_path):
    state = _official_pretrain_state(encoder)
    path = tmp_path / "pretrained.pth"
    torch.save({"model": state}, path)  # AudioMAE saves {"model": state_dict, ...}
    loaded = load_audiomae_checkpoint(path, n_mels=32, num_heads=2).eval()
    assert loaded.audio_config.target_frames == 64 and loaded.num_blocks == 2
    x = torch.randn(2, 1, 32, 64)
    torch.testing.assert_close(loaded.audio_features(x), encoder.audio_features(x))
    # pre-training "norm" becomes the pooled-feature "fc_norm"
    torch.testing.assert_close(loaded.model.fc_norm.weight, state["norm.weight"])
    _, dropped = convert_audiomae_state_dict(state)
    assert "mask_token" in dropped and any(k.startswith("decoder_") for k in dropped)


def test_audio_encoder_loads_finetuned_layout_and_resamples(encoder):
    state = dict(encoder.model.state_dict())
    state["head.weight"] = torch.zeros(527, 32)  # AudioSet classifier: dropped
    state["head.bias"] = torch.zeros(527)
    loaded = load_audiomae_checkpoint(state, n_mels=32, num_heads=2, target_frames=128)
    assert loaded.audio_config.target_frames == 128
    assert loaded.model.pos_embed.shape == (1, 1 + 8 * 2, 32)
    assert loaded.embed(torch.randn(1, 1, 32, 128)).shape == (1, 17, 32)


def test_audio_encoder_checkpoint_errors(encoder, tmp_path):
    state = dict(encoder.model.state_dict())
    del state["blocks.1.mlp.fc1.weight"]
    with pytest.raises(CheckpointError, match="missing"):
        load_audiomae_checkpoint(state, n_mels=32, num_heads=2)
    with pytest.raises(CheckpointError, match="patch_embed.proj.weight"):
        load_audiomae_checkpoint({"x": torch.zeros(1)})
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_audiomae_checkpoint(bad)
