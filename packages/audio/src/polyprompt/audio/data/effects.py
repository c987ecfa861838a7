"""Acoustic effects and background noise with SoX (the ``sox`` binary, Debian package ``sox``).

* Noise: white / pink / brown noise from ``sox -R -n synth <s> whitenoise|pinknoise|brownnoise``
  (``-R``: repeatable). One 20 s buffer per colour is made once per process; clips take a
  slice at an offset drawn from a seeded generator, and are mixed at a target SNR in dB
  (signal power / noise power, :func:`mix_at_snr`).
* Reverb: ``sox reverb <reverberance> <hf-damping> <room-scale>`` (Freeverb).
* Tempo: ``sox tempo <factor>`` (WSOLA: faster/slower, pitch unchanged).
* Band-pass: ``sox sinc <low>-<high>`` (e.g. a 300-3400 Hz "telephone" band).

Audio goes through sox as 32-bit float WAV on pipes (no temporary files, no clipping).
:func:`sox_binary` raises :class:`SoxNotFoundError` with install instructions when sox is missing.

Example::

    >>> chain = EffectChain(noise="pink", snr_db=10.0, reverb=50.0)        # doctest: +SKIP
    >>> noisy = chain.apply(clip, seed=0)                                   # doctest: +SKIP
    >>> chain.describe()                                                     # doctest: +SKIP
    'over pink noise, in a reverberant room'
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from polyprompt.audio.tasks import Clip
from polyprompt.core.errors import InputError, PolypromptError

if TYPE_CHECKING:
    import torch

__all__ = [
    "NOISES",
    "EffectChain",
    "SoxNotFoundError",
    "bandpass",
    "mix_at_snr",
    "noise",
    "reverb",
    "run_sox",
    "sox_binary",
    "tempo",
]

NOISES = ("white", "pink", "brown")
_NOISE_SECONDS = 20.0
_INSTALL_HINT = (
    "sox is required for noise and effects but was not found on PATH. Install it with "
    "`sudo apt-get install sox` (Debian/Ubuntu; `brew install sox` on macOS) or run "
    "`make data` / `scripts/install_data.sh`, then retry."
)


class SoxNotFoundError(PolypromptError, RuntimeError):
    """The sox binary is not installed."""


def sox_binary() -> str:
    """Path of ``sox``; raises :class:`SoxNotFoundError` if missing."""
    path = shutil.which("sox")
    if path is None:
        raise SoxNotFoundError(_INSTALL_HINT)
    return path


def _wav_bytes(wave: torch.Tensor, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave.detach().cpu().numpy(), sample_rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def _read_wav_bytes(data: bytes) -> tuple[torch.Tensor, int]:
    import soundfile as sf
    import torch

    arr, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return torch.from_numpy(arr.mean(axis=1).copy()), int(sr)


def run_sox(
    wave: torch.Tensor | None,
    sample_rate: int,
    effects: list[str],
    *,
    inputs: list[str] | None = None,
) -> torch.Tensor:
    """Run ``sox`` on ``wave`` (or on ``inputs``, e.g. ``["-n"]`` to synthesise) and return ``(T,)``.

    The output is 32-bit float mono WAV at ``sample_rate``. Raises :class:`InputError` with
    sox's message if sox fails.
    """
    out_fmt = [
        "-r",
        str(sample_rate),
        "-c",
        "1",
        "-b",
        "32",
        "-e",
        "floating-point",
        "-t",
        "wav",
        "-",
    ]
    if wave is None:
        cmd = [sox_binary(), "-R", "-V1", *(inputs or ["-n"]), *out_fmt, *effects]
        stdin = None
    else:
        cmd = [sox_binary(), "-R", "-V1", "-t", "wav", "-", *out_fmt, *effects]
        stdin = _wav_bytes(wave, sample_rate)
    try:
        res = subprocess.run(cmd, input=stdin, capture_output=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"sox {' '.join(effects)} failed: {exc}") from None
    if res.returncode != 0 or len(res.stdout) <= 44:
        err = res.stderr.decode(errors="replace").strip()
        raise InputError(f"sox {' '.join(effects)} failed (exit {res.returncode}): {err}")
    out, _ = _read_wav_bytes(res.stdout)
    return out


@functools.lru_cache(maxsize=8)
def _noise_buffer(kind: str, sample_rate: int) -> torch.Tensor:
    return run_sox(None, sample_rate, ["synth", f"{_NOISE_SECONDS:g}", f"{kind}noise"])


def noise(kind: str, num_samples: int, sample_rate: int, *, seed: int = 0) -> torch.Tensor:
    """``(num_samples,)`` of ``kind`` noise (white/pink/brown) made by sox, unit RMS.

    Deterministic in ``seed`` (offset into a repeatable 20 s sox buffer; longer requests wrap).
    """
    import torch

    if kind not in NOISES:
        raise InputError(f"noise: kind {kind!r} unknown; choose from {NOISES}")
    if num_samples <= 0:
        raise InputError(f"noise: num_samples must be > 0, got {num_samples}")
    buf = _noise_buffer(kind, sample_rate)
    g = torch.Generator().manual_seed(int(seed))
    start = int(torch.randint(0, buf.shape[0], (1,), generator=g))
    if start + num_samples <= buf.shape[0]:
        out = buf[start : start + num_samples].clone()
    else:
        out = buf[(torch.arange(num_samples) + start) % buf.shape[0]]
    out = out - out.mean()
    return out / out.pow(2).mean().sqrt().clamp_min(1e-12)


def mix_at_snr(signal: torch.Tensor, noise_wave: torch.Tensor, snr_db: float) -> torch.Tensor:
    """``signal + a * noise`` with ``a`` chosen so that 10 log10(P_signal / P_noise) = ``snr_db``."""
    if signal.shape != noise_wave.shape:
        raise InputError(
            f"mix_at_snr: signal {tuple(signal.shape)} and noise {tuple(noise_wave.shape)} differ"
        )
    p_sig = signal.pow(2).mean()
    p_noise = noise_wave.pow(2).mean().clamp_min(1e-12)
    scale = (p_sig / (p_noise * 10 ** (snr_db / 10))).sqrt()
    return signal + scale * noise_wave


def reverb(
    wave: torch.Tensor,
    sample_rate: int,
    reverberance: float = 50.0,
    *,
    hf_damping: float = 50.0,
    room_scale: float = 100.0,
) -> torch.Tensor:
    """SoX Freeverb; the output is longer than the input by the reverb tail."""
    if not 0 <= reverberance <= 100:
        raise InputError(f"reverb: reverberance must be in 0..100, got {reverberance}")
    return run_sox(
        wave, sample_rate, ["reverb", f"{reverberance:g}", f"{hf_damping:g}", f"{room_scale:g}"]
    )


def tempo(wave: torch.Tensor, sample_rate: int, factor: float) -> torch.Tensor:
    """Speed up (``factor > 1``) or slow down speech without changing its pitch (SoX ``tempo``)."""
    if not 0.25 <= factor <= 4.0:
        raise InputError(f"tempo: factor must be in 0.25..4, got {factor}")
    return run_sox(wave, sample_rate, ["tempo", "-s", f"{factor:g}"])


def bandpass(wave: torch.Tensor, sample_rate: int, low: float, high: float) -> torch.Tensor:
    """Keep ``low``..``high`` Hz (SoX ``sinc`` windowed-sinc FIR)."""
    if not 0 < low < high < sample_rate / 2:
        raise InputError(
            f"bandpass: need 0 < low < high < {sample_rate / 2:g} Hz, got {low}-{high}"
        )
    return run_sox(wave, sample_rate, ["sinc", f"{low:g}-{high:g}"])


@dataclass(frozen=True)
class EffectChain:
    """Effects applied in the order band-pass -> tempo -> reverb -> noise.

    Attributes:
        noise: ``None`` or one of :data:`NOISES`.
        snr_db: signal-to-noise ratio of the added noise.
        reverb: ``None`` or reverberance 0..100.
        tempo: ``None`` or a tempo factor.
        bandpass: ``None`` or ``(low_hz, high_hz)``.
    """

    noise: str | None = None
    snr_db: float = 10.0
    reverb: float | None = None
    tempo: float | None = None
    bandpass: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.noise is not None and self.noise not in NOISES:
            raise InputError(f"EffectChain.noise {self.noise!r} unknown; choose from {NOISES}")

    @property
    def is_identity(self) -> bool:
        return (
            self.noise is None
            and self.reverb is None
            and self.tempo is None
            and self.bandpass is None
        )

    def describe(self) -> str:
        """Words for a caption, e.g. ``"over pink noise, in a reverberant room"`` ('' if none)."""
        parts = []
        if self.noise is not None:
            loud = "loud " if self.snr_db < 5 else ""
            parts.append(f"over {loud}{self.noise} noise")
        if self.reverb is not None:
            parts.append("in a reverberant room")
        if self.bandpass is not None:
            parts.append("through a telephone-like filter")
        return ", ".join(parts)

    def apply(self, clip: Clip, *, seed: int = 0) -> Clip:
        """Return a new clip with the effects applied and recorded in ``meta``."""
        wave, sr = clip.waveform, clip.sample_rate
        if self.bandpass is not None:
            wave = bandpass(wave, sr, *self.bandpass)
        if self.tempo is not None:
            wave = tempo(wave, sr, self.tempo)
        if self.reverb is not None:
            wave = reverb(wave, sr, self.reverb)
        if self.noise is not None:
            wave = mix_at_snr(wave, noise(self.noise, wave.shape[0], sr, seed=seed), self.snr_db)
        peak = float(wave.abs().max())
        if peak > 0.99:  # keep the waveform in [-1, 1] for 16-bit WAV caching
            wave = wave * (0.99 / peak)
        meta = {**clip.meta, **{f"fx_{k}": v for k, v in asdict(self).items()}}
        return Clip(wave.contiguous(), sr, meta=meta)
