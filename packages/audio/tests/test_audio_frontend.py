from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from polyprompt.audio.frontend import (
    LogMelConfig,
    ResampleWarning,
    load_wav,
    log_mel,
    prepare_waveform,
    save_wav,
)
from polyprompt.audio.tasks import Clip
from polyprompt.core.errors import ConfigError, InputError, NonFiniteError


def _tone(seconds: float = 0.5, sr: int = 16_000, freq: float = 440.0) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return 0.3 * torch.sin(2 * math.pi * freq * t) + 0.01 * torch.randn(
        t.shape[0], generator=torch.Generator().manual_seed(0)
    )


def test_config_derived_and_validation():
    cfg = LogMelConfig()
    assert (cfg.win_length, cfg.hop_length, cfg.n_mels, cfg.target_frames) == (400, 160, 128, 1024)
    assert cfg.frames_for(16_000) == 98 and cfg.frames_for(399) == 0
    assert cfg.frames_for(cfg.samples_for(1024)) == 1024
    assert abs(cfg.seconds - 10.255) < 1e-6
    assert LogMelConfig.from_json(LogMelConfig(target_frames=64).to_json()).target_frames == 64
    for bad in ({"n_mels": 0}, {"hop_ms": 30.0}, {"target_frames": 0}, {"max_crop_factor": 0.5}):
        with pytest.raises(ConfigError):
            LogMelConfig(**bad)


def test_prepare_mono_passthrough_no_warning():
    w = _tone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = prepare_waveform(w, 16_000)
    assert out.shape == w.shape and out.dtype == torch.float32 and torch.equal(out, w.float())


def test_prepare_resamples_with_warning():
    w = _tone(0.5, sr=44_100)
    with pytest.warns(ResampleWarning, match="44100 Hz to 16000 Hz"):
        out = prepare_waveform(w, 44_100, where="x.wav")
    assert abs(out.shape[0] - 8000) <= 1
    # the 440 Hz tone survives resampling: spectral peak at 440 Hz
    spec = torch.fft.rfft(out).abs()
    peak_hz = int(spec.argmax()) * 16_000 / out.shape[0]
    assert abs(peak_hz - 440) < 5


@pytest.mark.parametrize("layout", ["ct", "tc"])
def test_prepare_stereo_to_mono(layout):
    left, right = _tone(freq=300), _tone(freq=500)
    stereo = torch.stack([left, right])
    out = prepare_waveform(stereo if layout == "ct" else stereo.T, 16_000)
    assert out.shape == left.shape
    torch.testing.assert_close(out, (left + right) / 2)


def test_prepare_int16_numpy():
    pcm = (_tone().numpy() * 32767).astype(np.int16)
    out = prepare_waveform(pcm, 16_000)
    assert out.dtype == torch.float32 and float(out.abs().max()) <= 1.0


@pytest.mark.parametrize(
    "wave, match",
    [
        (torch.zeros(16_000), "silent"),
        (torch.full((16_000,), 0.25), "constant"),
        (torch.zeros(3, 3, 3), "dimensions"),
        (torch.zeros(16, 400), "neither"),
        (torch.tensor([0.1, -0.1] * 50), "shorter than one 25 ms"),
        ("not audio", "torch.Tensor or numpy"),
    ],
)
def test_prepare_bad_inputs(wave, match):
    with pytest.raises(InputError, match=match):
        prepare_waveform(wave, 16_000, where="clip7")


def test_prepare_nonfinite_names_where():
    w = _tone()
    w[100] = float("nan")
    w[200] = float("inf")
    with pytest.raises(NonFiniteError, match=r"clip7.*1 NaN and 1 infinite"):
        prepare_waveform(w, 16_000, where="clip7")
    with pytest.raises(InputError, match="sample_rate"):
        prepare_waveform(_tone(), 0)


def test_wav_round_trip_and_stereo_file(tmp_path):
    w = _tone(0.4)
    p = save_wav(tmp_path / "a.wav", Clip(w, meta={"word": "x"}))
    clip = load_wav(p)
    assert (
        clip.sample_rate == 16_000 and clip.meta["name"] == "a" and clip.meta["orig_channels"] == 1
    )
    torch.testing.assert_close(clip.waveform, w, atol=1e-4, rtol=0)
    stereo = np.stack([_tone(0.4, 8000).numpy(), _tone(0.4, 8000, 600).numpy()], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 8000)
    with pytest.warns(ResampleWarning):
        clip = load_wav(tmp_path / "s.wav")
    assert clip.waveform.dim() == 1 and abs(clip.num_samples - 6400) <= 1
    assert clip.meta["orig_channels"] == 2 and clip.meta["orig_sample_rate"] == 8000


def test_load_wav_bad_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_wav(tmp_path / "missing.wav")
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not a RIFF file")
    with pytest.raises(InputError, match=r"notes\.wav is not a readable audio file"):
        load_wav(bad)
    good = save_wav(tmp_path / "good.wav", _tone(0.4), 16_000)
    truncated = tmp_path / "trunc.wav"
    truncated.write_bytes(good.read_bytes()[:30])  # header cut mid-way
    with pytest.raises(InputError, match=r"trunc\.wav"):
        load_wav(truncated)
    sf.write(tmp_path / "silent.wav", np.zeros(8000, dtype=np.float32), 16_000)
    with pytest.raises(InputError, match=r"silent\.wav.*silent"):
        load_wav(tmp_path / "silent.wav")


def test_log_mel_shapes_pad_crop_and_frames():
    cfg = LogMelConfig(target_frames=64)
    short, long_ = _tone(0.3), _tone(1.0)  # 28 frames, 98 frames -> cropped to 64
    mel, frames = log_mel([short, long_], cfg, return_frames=True)
    assert mel.shape == (2, 1, 128, 64) and mel.dtype == torch.float32
    assert frames.tolist() == [28, 64]
    assert torch.isfinite(mel).all()
    pad_value = (0 - cfg.norm_mean) / (2 * cfg.norm_std)
    assert torch.allclose(mel[0, 0, :, 28:], torch.full_like(mel[0, 0, :, 28:], pad_value))
    # crop keeps the first frames: equals the uncropped fbank's head
    full = log_mel([long_], LogMelConfig(target_frames=128))
    torch.testing.assert_close(mel[1], full[0, :, :, :64])
    # (T,) and (B, T) tensors; Clip at another rate is resampled
    assert log_mel(short, cfg).shape == (1, 1, 128, 64)
    assert log_mel(torch.stack([short, short]), cfg).shape == (2, 1, 128, 64)
    with pytest.warns(ResampleWarning):
        m8 = log_mel([Clip(_tone(0.3, 8000), 8000)], cfg)
    assert m8.shape == (1, 1, 128, 64)
    # the tone's energy sits in the mel bins around 440 Hz, not at the top of the spectrum
    band = mel[0, 0, :, :28].mean(dim=1)
    assert int(band.argmax()) < 40


def test_log_mel_unnormalised_matches_audiomae_fbank():
    import torchaudio.compliance.kaldi as kaldi

    w = _tone(0.5)
    cfg = LogMelConfig(target_frames=48, normalize=False)
    ref = kaldi.fbank(
        (w - w.mean()).unsqueeze(0),
        htk_compat=True,
        sample_frequency=16_000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )
    torch.testing.assert_close(log_mel([w], cfg)[0, 0, :, :48], ref.T)


def test_log_mel_bad_inputs():
    cfg = LogMelConfig(target_frames=16, max_crop_factor=2.0)
    with pytest.raises(InputError, match="empty batch"):
        log_mel([], cfg)
    with pytest.raises(InputError, match=r"waveforms\[1\].*shorter than one 25 ms frame"):
        log_mel([_tone(0.1), torch.randn(100)], cfg)
    with pytest.raises(InputError, match=r"waveforms\[0\].*over 2x"):
        log_mel([_tone(1.0)], cfg)
    assert log_mel([_tone(1.0)], cfg.replace(max_crop_factor=None)).shape == (1, 1, 128, 16)
    bad = _tone(0.1)
    bad[3] = float("inf")
    with pytest.raises(NonFiniteError, match=r"waveforms\[0\]"):
        log_mel([bad], cfg)
    with pytest.raises(InputError, match="sequence"):
        log_mel("x.wav", cfg)
