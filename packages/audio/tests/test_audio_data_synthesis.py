"""espeak-ng synthesis and sox effects on real speech (needs the espeak-ng and sox binaries:
CI installs them with scripts/install_data.sh; these tests fail, not skip, without them)."""

from __future__ import annotations

import math

import pytest
import torch

from polyprompt.audio.data import effects as fx
from polyprompt.audio.data import espeak
from polyprompt.audio.data.effects import EffectChain, SoxNotFoundError, mix_at_snr, noise
from polyprompt.audio.data.espeak import ACCENTS, EspeakNotFoundError, SpeechSpec, synthesize
from polyprompt.audio.frontend import prepare_waveform
from polyprompt.core.errors import InputError


def _f0(wave: torch.Tensor, sr: int = 16_000) -> float:
    """Median autocorrelation pitch (60-400 Hz) over the loud 40 ms frames."""
    frame, hop = int(0.04 * sr), int(0.01 * sr)
    frames = wave.unfold(0, frame, hop)
    energy = frames.pow(2).mean(dim=1)
    pitches = []
    for f in frames[energy > 0.3 * energy.max()]:
        f = f - f.mean()
        ac = torch.fft.irfft(torch.fft.rfft(f, n=2 * frame).abs().pow(2))[:frame]
        lo, hi = sr // 400, sr // 60
        lag = lo + int(ac[lo:hi].argmax())
        pitches.append(sr / lag)
    return float(torch.tensor(pitches).median())


def _centroid(wave: torch.Tensor, sr: int = 16_000) -> float:
    spec = torch.fft.rfft(wave).abs().pow(2)
    freqs = torch.linspace(0, sr / 2, spec.shape[0])
    return float((spec * freqs).sum() / spec.sum())


def test_binaries_present():
    # the audio data needs both tools; fail loudly (CI installs them)
    assert espeak.espeak_binary().endswith("espeak-ng")
    assert fx.sox_binary().endswith("sox")
    assert "eSpeak NG" in espeak.espeak_version()


def test_synthesize_real_speech():
    clip = synthesize(SpeechSpec("river", accent="scottish", variant="f2", rate=150, pitch=50))
    assert clip.sample_rate == 16_000 and clip.waveform.dim() == 1
    assert 0.2 < clip.duration < 2.0
    assert clip.meta["gender"] == "female" and clip.meta["voice"] == "en-gb-scotland+f2"
    assert clip.meta["text"] == "river" and clip.meta["resampler"] == "sox"
    # passes the front end's checks (not silent, finite, long enough)
    prepare_waveform(clip.waveform, clip.sample_rate)
    # speech band: most energy below 4 kHz
    spec = torch.fft.rfft(clip.waveform).abs().pow(2)
    assert spec[: spec.shape[0] // 2].sum() > 0.9 * spec.sum()
    # torchaudio resampler fallback gives the same utterance
    alt = synthesize(
        SpeechSpec("river", accent="scottish", variant="f2", rate=150), resampler="torchaudio"
    )
    assert abs(alt.num_samples - clip.num_samples) < 800 and alt.meta["resampler"] == "torchaudio"


def test_parameters_change_the_audio():
    base = SpeechSpec("banana", accent="american", variant="m1", rate=175, pitch=50)
    w = synthesize(base)
    female = synthesize(SpeechSpec("banana", accent="american", variant="f1", rate=175, pitch=50))
    assert _f0(female.waveform) > 1.3 * _f0(w.waveform)  # female variants have higher pitch
    slow = synthesize(SpeechSpec("banana", variant="m1", rate=100))
    fast = synthesize(SpeechSpec("banana", variant="m1", rate=300))
    assert slow.duration > 1.5 * fast.duration
    scot = synthesize(SpeechSpec("banana", accent="scottish", variant="m1", rate=175, pitch=50))
    n = min(w.num_samples, scot.num_samples)
    assert not torch.allclose(w.waveform[:n], scot.waveform[:n], atol=1e-3)
    # deterministic
    torch.testing.assert_close(synthesize(base).waveform, w.waveform)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"text": ""}, "text"),
        ({"text": "x", "accent": "martian"}, "accent"),
        ({"text": "x", "variant": "m9"}, "variant"),
        ({"text": "x", "rate": 20}, "rate"),
        ({"text": "x", "pitch": 120}, "pitch"),
    ],
)
def test_speech_spec_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        SpeechSpec(**kwargs)


def test_every_accent_voice_speaks():
    for accent in ACCENTS:
        clip = synthesize(SpeechSpec("yes", accent=accent, variant="m3"))
        assert clip.duration > 0.1, accent


def test_missing_binaries_explain_install(monkeypatch):
    monkeypatch.setattr(espeak.shutil, "which", lambda name: None)
    with pytest.raises(EspeakNotFoundError, match="apt-get install espeak-ng.*make data"):
        synthesize(SpeechSpec("yes"))
    monkeypatch.setattr(fx.shutil, "which", lambda name: None)
    with pytest.raises(SoxNotFoundError, match="apt-get install sox"):
        fx.reverb(torch.randn(1600), 16_000)


def test_noise_colours_levels_and_determinism():
    n = {k: noise(k, 32_000, 16_000, seed=1) for k in fx.NOISES}
    for w in n.values():
        assert abs(float(w.pow(2).mean().sqrt()) - 1.0) < 1e-4 and abs(float(w.mean())) < 1e-4
    c = {k: _centroid(w) for k, w in n.items()}
    assert c["white"] > c["pink"] > c["brown"]  # spectral tilt of the three colours
    torch.testing.assert_close(
        noise("pink", 8000, 16_000, seed=3), noise("pink", 8000, 16_000, seed=3)
    )
    assert not torch.allclose(
        noise("pink", 8000, 16_000, seed=3), noise("pink", 8000, 16_000, seed=4)
    )
    with pytest.raises(InputError, match="unknown"):
        noise("blue", 10, 16_000)


def test_mix_at_snr_exact():
    sig = torch.sin(torch.arange(16_000) * 2 * math.pi * 300 / 16_000)
    nz = noise("white", 16_000, 16_000, seed=0)
    for snr in (0.0, 10.0):
        mixed = mix_at_snr(sig, nz, snr)
        measured = 10 * math.log10(float(sig.pow(2).mean() / (mixed - sig).pow(2).mean()))
        assert abs(measured - snr) < 1e-3
    with pytest.raises(InputError, match="differ"):
        mix_at_snr(sig, nz[:10], 5.0)


def test_sox_effects_on_speech():
    clip = synthesize(SpeechSpec("thunder", variant="m2", rate=150))
    w, sr = clip.waveform, clip.sample_rate
    faster = fx.tempo(w, sr, 2.0)
    assert abs(faster.shape[0] - w.shape[0] / 2) < 0.05 * w.shape[0]
    assert abs(_f0(faster) - _f0(w)) < 0.15 * _f0(w)  # tempo keeps the pitch
    low = torch.sin(torch.arange(16_000) * 2 * math.pi * 100 / 16_000)
    filtered = fx.bandpass(low + 0.0 * w.new_zeros(16_000), sr, 300, 3400)
    assert float(filtered[2000:-2000].pow(2).mean()) < 0.01 * float(low.pow(2).mean())
    wet = fx.reverb(w, sr, 80)
    assert wet.shape[0] >= w.shape[0] and not torch.allclose(wet[: w.shape[0]], w, atol=1e-3)
    with pytest.raises(InputError, match="bandpass"):
        fx.bandpass(w, sr, 3000, 300)
    with pytest.raises(InputError, match="tempo"):
        fx.tempo(w, sr, 10.0)


def test_effect_chain_apply_and_describe():
    clip = synthesize(SpeechSpec("seven", variant="f3"))
    chain = EffectChain(noise="brown", snr_db=3.0, reverb=50.0)
    out = chain.apply(clip, seed=2)
    assert out.meta["fx_noise"] == "brown" and out.meta["text"] == "seven"
    assert float(out.waveform.abs().max()) <= 0.99 + 1e-6
    assert chain.describe() == "over loud brown noise, in a reverberant room"
    assert EffectChain().is_identity and EffectChain().describe() == ""
    torch.testing.assert_close(chain.apply(clip, seed=2).waveform, out.waveform)
    with pytest.raises(InputError):
        EffectChain(noise="purple")
