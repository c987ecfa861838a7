"""Supervised encoder stage (AudioMAE fine-tuning on labelled speech disjoint from the tasks)."""

from __future__ import annotations

import pytest
import torch

from polyprompt.audio.encoder import AudioEncoderConfig, build_audio_encoder
from polyprompt.audio.finetune_encoder import FinetuneConfig, finetune_audio_encoder
from polyprompt.core.errors import ConfigError, InputError, ShapeError

ENC = AudioEncoderConfig(n_mels=32, target_frames=32, embed_dim=32, depth=1, num_heads=2)
CFG = FinetuneConfig(steps=60, batch_size=16, lr=3e-3)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path))
    return tmp_path


def _encoder(seed: int = 0):
    torch.manual_seed(seed)
    return build_audio_encoder(ENC)


def _banded(n: int, seed: int) -> tuple[torch.Tensor, list[str], list[str]]:
    """Spectrograms whose bright mel band (3 classes) and loudness (2 classes) are the labels."""
    g = torch.Generator().manual_seed(seed)
    specs = 0.3 * torch.randn(n, 1, 32, 32, generator=g)
    band = torch.randint(0, 3, (n,), generator=g)
    loud = torch.randint(0, 2, (n,), generator=g)
    for i in range(n):
        specs[i, 0, 10 * int(band[i]) : 10 * int(band[i]) + 8] += 1.0 + float(loud[i])
    return specs, [f"band{int(b)}" for b in band], ["loud" if x else "soft" for x in loud]


def test_audio_finetune_learns_every_label_set_and_freezes(home):
    specs, band, loud = _banded(96, 0)
    enc, info = finetune_audio_encoder(
        _encoder(), specs, {"band": band, "loud": loud}, CFG, progress=False
    )
    assert not info["from_cache"] and info["final_loss"] < info["first_loss"]
    assert info["train_accuracy"]["band"] > 0.9 and info["train_accuracy"]["loud"] > 0.8
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    # the frozen encoder now separates the bands of unseen spectrograms (nearest class mean)
    test, test_band, _ = _banded(60, 1)
    with torch.no_grad():
        f_tr = enc.audio_features(specs)[:, 1:].mean(1)
        f_te = enc.audio_features(test)[:, 1:].mean(1)
    names = sorted(set(band))
    means = torch.stack([f_tr[[b == n for b in band]].mean(0) for n in names])
    pred = torch.cdist(f_te, means).argmin(-1)
    acc = sum(names[int(p)] == t for p, t in zip(pred, test_band, strict=True)) / len(test_band)
    assert acc > 0.8


def test_audio_finetune_caches_by_start_weights_labels_and_data(home):
    specs, band, loud = _banded(32, 0)
    cfg = FinetuneConfig(steps=3, batch_size=8)
    enc, info = finetune_audio_encoder(_encoder(0), specs, {"band": band}, cfg, progress=False)
    again, info2 = finetune_audio_encoder(_encoder(0), specs, {"band": band}, cfg, progress=False)
    assert info2["from_cache"] and info2["path"] == info["path"]
    for a, b in zip(
        enc.model.state_dict().values(), again.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    other_start = finetune_audio_encoder(_encoder(1), specs, {"band": band}, cfg, progress=False)
    other_labels = finetune_audio_encoder(_encoder(0), specs, {"loud": loud}, cfg, progress=False)
    assert not other_start[1]["from_cache"] and not other_labels[1]["from_cache"]
    assert len({info["path"], other_start[1]["path"], other_labels[1]["path"]}) == 3


def test_audio_finetune_rejects_bad_input():
    specs, band, _ = _banded(8, 0)
    cfg = FinetuneConfig(steps=1, batch_size=4)
    with pytest.raises(ShapeError, match=r"\(N, 1, 32, 32\)"):
        finetune_audio_encoder(_encoder(), torch.randn(8, 1, 16, 32), {"band": band}, cfg)
    with pytest.raises(InputError, match="7 entries for 8"):
        finetune_audio_encoder(_encoder(), specs, {"band": band[:7]}, cfg, cache=False)
    with pytest.raises(InputError, match="single class"):
        finetune_audio_encoder(_encoder(), specs, {"band": ["a"] * 8}, cfg, cache=False)
    with pytest.raises(InputError, match="labels is empty"):
        finetune_audio_encoder(_encoder(), specs, {}, cfg, cache=False)
    with pytest.raises(ConfigError, match="steps"):
        FinetuneConfig(steps=0)
