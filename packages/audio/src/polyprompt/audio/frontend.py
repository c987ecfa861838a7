"""Audio front end: WAV I/O (soundfile), waveform checks, mono, 16 kHz, log-mel fbank.

The spectrogram follows the official AudioMAE input pipeline (facebookresearch/AudioMAE,
``dataset.py: AudiosetDataset._wav2fbank``, inherited from AST), which APT feeds its
frozen AudioMAE encoder (APT paper Sec. 3.1, "128 mel bins, 10 s"):

1. remove the DC offset (``waveform - waveform.mean()``);
2. ``torchaudio.compliance.kaldi.fbank(htk_compat=True, window_type="hanning",
   num_mel_bins=128, frame_shift=10 ms, frame_length=25 ms, dither=0, use_energy=False)``;
3. zero-pad / crop (keep the first frames) along time to ``target_frames`` (1024 frames = 10.26 s of audio);
4. normalise ``(fbank - norm_mean) / (2 * norm_std)`` with the AudioSet statistics
   ``-4.2677393`` / ``4.5689974`` (the factor 2 is AST's/AudioMAE's convention).

The output layout is ``(B, 1, n_mels, target_frames)`` (mel x time; the encoder patches it
16 x 16). ``torchaudio.load`` needs torchcodec (not installable here), so WAV files are read
and written with ``soundfile``.

Length policy (documented choice): clips shorter than one analysis window (25 ms) raise
:class:`InputError`; clips longer than ``target_frames`` are cropped to their first
``target_frames`` frames like AudioMAE, but a clip more than ``max_crop_factor`` times the
window (default 8x: 82 s at the paper's 1024 frames = 10.26 s) raises :class:`InputError`, since silently
dropping most of a recording is almost always a mistake (crop it yourself first).

Example::

    >>> import torch
    >>> cfg = LogMelConfig(target_frames=128)
    >>> wave = prepare_waveform(torch.randn(2, 8000), 8000)   # stereo 8 kHz -> mono 16 kHz (warns)
    >>> log_mel([wave], cfg).shape
    torch.Size([1, 1, 128, 128])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyprompt.audio.tasks import SAMPLE_RATE, Clip
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "AUDIOMAE_NORM_MEAN",
    "AUDIOMAE_NORM_STD",
    "LogMelConfig",
    "ResampleWarning",
    "load_wav",
    "log_mel",
    "prepare_waveform",
    "save_wav",
]

AUDIOMAE_NORM_MEAN = -4.2677393
AUDIOMAE_NORM_STD = 4.5689974
_MAX_CHANNELS = 8


class ResampleWarning(UserWarning):
    """A waveform was resampled to the front end's sample rate."""


@dataclass
class LogMelConfig(PromptConfig):
    """Log-mel front end settings (defaults: AudioMAE / APT, 10.24 s at 16 kHz).

    Attributes:
        sample_rate: rate the fbank is computed at (waveforms are resampled to it).
        n_mels: mel bins (128).
        win_ms / hop_ms: analysis window and hop in milliseconds (25 / 10).
        target_frames: time frames after pad/crop (1024 in the paper; use e.g. 128 on CPU).
        normalize: apply ``(x - norm_mean) / (2 * norm_std)``.
        norm_mean / norm_std: AudioSet fbank statistics from AudioMAE.
        max_crop_factor: longest accepted input, in multiples of ``target_frames``
            (``None`` = any length, cropped).
    """

    sample_rate: int = SAMPLE_RATE
    n_mels: int = 128
    win_ms: float = 25.0
    hop_ms: float = 10.0
    target_frames: int = 1024
    normalize: bool = True
    norm_mean: float = AUDIOMAE_NORM_MEAN
    norm_std: float = AUDIOMAE_NORM_STD
    max_crop_factor: float | None = 8.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(self.sample_rate > 0, "sample_rate", "must be > 0")
        self.require(self.n_mels > 0, "n_mels", "must be > 0")
        self.require(self.win_ms > 0, "win_ms", "must be > 0")
        self.require(0 < self.hop_ms <= self.win_ms, "hop_ms", "must be in (0, win_ms]")
        self.require(self.target_frames > 0, "target_frames", "must be > 0")
        self.require(self.norm_std > 0, "norm_std", "must be > 0")
        self.require(
            self.max_crop_factor is None or self.max_crop_factor >= 1,
            "max_crop_factor",
            "must be >= 1 or None",
        )

    @property
    def win_length(self) -> int:
        """Window length in samples (400 at 16 kHz)."""
        return round(self.sample_rate * self.win_ms / 1000)

    @property
    def hop_length(self) -> int:
        """Hop in samples (160 at 16 kHz)."""
        return round(self.sample_rate * self.hop_ms / 1000)

    @property
    def seconds(self) -> float:
        """Audio length that fills ``target_frames`` exactly."""
        return self.samples_for(self.target_frames) / self.sample_rate

    def frames_for(self, num_samples: int) -> int:
        """Kaldi fbank frame count (``snip_edges=True``) for ``num_samples`` samples."""
        if num_samples < self.win_length:
            return 0
        return 1 + (num_samples - self.win_length) // self.hop_length

    def samples_for(self, frames: int) -> int:
        """Fewest samples that give ``frames`` frames."""
        return self.win_length + (frames - 1) * self.hop_length

    @property
    def max_samples(self) -> int | None:
        if self.max_crop_factor is None:
            return None
        return math.ceil(self.samples_for(self.target_frames) * self.max_crop_factor)


# --------------------------------------------------------------------------- waveforms
def _as_float_tensor(waveform: Any, where: str) -> torch.Tensor:
    import numpy as np
    import torch

    if isinstance(waveform, np.ndarray):
        if waveform.dtype.kind in "iu":
            scale = float(np.iinfo(waveform.dtype).max) + 1.0
            waveform = waveform.astype(np.float32) / scale
        elif waveform.dtype.kind != "f":
            raise InputError(f"{where}: waveform has dtype {waveform.dtype}, expected float or int")
        waveform = torch.from_numpy(np.ascontiguousarray(waveform))
    if not isinstance(waveform, torch.Tensor):
        raise InputError(
            f"{where}: waveform must be a torch.Tensor or numpy array, got {type(waveform).__name__}"
        )
    if not waveform.is_floating_point():
        if waveform.dtype in (torch.int16, torch.int32, torch.int8):
            scale = float(torch.iinfo(waveform.dtype).max) + 1.0
            waveform = waveform.to(torch.float32) / scale
        else:
            raise InputError(f"{where}: waveform has dtype {waveform.dtype}, expected float or int")
    return waveform.detach().to(torch.float32)


def prepare_waveform(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int,
    *,
    where: str = "",
    target_rate: int = SAMPLE_RATE,
    min_seconds: float = 0.025,
    silence_threshold: float = 1e-5,
) -> torch.Tensor:
    """Validate a waveform and return it as mono float32 ``(T,)`` at ``target_rate``.

    Args:
        waveform: ``(T,)``, ``(C, T)`` (torchaudio layout) or ``(T, C)`` (soundfile layout,
            recognised when the first dim is > 8 and the second <= 8); float, or int PCM
            (scaled to [-1, 1)).
        sample_rate: rate of ``waveform``; if it differs from ``target_rate`` the waveform is
            resampled with ``torchaudio.functional.resample`` and a :class:`ResampleWarning` is issued.
        where: prefix for messages (a file path, a clip name).
        min_seconds: shortest accepted clip (default: one 25 ms analysis window).
        silence_threshold: a clip whose standard deviation is below this (silent, or a constant
            / DC-only signal) raises :class:`InputError`.

    Multi-channel audio is averaged to mono. Raises :class:`InputError` (wrong type/rank,
    too short, silent/constant, bad sample rate) or :class:`NonFiniteError` (NaN/inf,
    checked before resampling) naming ``where``.
    """

    from polyprompt.core.validation import check_tensor

    where = where or "prepare_waveform"
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int,)) or sample_rate <= 0:
        raise InputError(f"{where}: sample_rate must be a positive int, got {sample_rate!r}")
    w = _as_float_tensor(waveform, where)
    check_tensor(w, "waveform", rank=(1, 2), where=where)
    if w.dim() == 2:
        c0, c1 = w.shape
        if c0 <= _MAX_CHANNELS:
            w = w.mean(dim=0)  # (C, T)
        elif c1 <= _MAX_CHANNELS:
            w = w.mean(dim=1)  # (T, C)
        else:
            raise InputError(
                f"{where}: waveform shape {tuple(w.shape)} is neither (C, T) nor (T, C) with "
                f"at most {_MAX_CHANNELS} channels"
            )
    check_tensor(w, "waveform", finite=True, where=where)
    if w.numel() < max(1, math.ceil(min_seconds * sample_rate)):
        raise InputError(
            f"{where}: clip is {w.numel()} samples ({w.numel() / sample_rate * 1000:.1f} ms) at "
            f"{sample_rate} Hz, shorter than one {min_seconds * 1000:.0f} ms analysis frame"
        )
    std = float(w.std()) if w.numel() > 1 else 0.0
    if std < silence_threshold:
        kind = "silent" if float(w.abs().max()) < silence_threshold else "constant (DC only)"
        raise InputError(
            f"{where}: clip is {kind} (std {std:.2e} < {silence_threshold:.0e}); nothing to encode"
        )
    if sample_rate != target_rate:
        import torchaudio.functional as AF

        warnings.warn(
            f"{where}: resampled from {sample_rate} Hz to {target_rate} Hz",
            ResampleWarning,
            stacklevel=2,
        )
        w = AF.resample(w, sample_rate, target_rate)
    return w.contiguous()


# --------------------------------------------------------------------------- files
def load_wav(path: str | Path, *, sample_rate: int = SAMPLE_RATE) -> Clip:
    """Read an audio file with soundfile into a mono :class:`Clip` at ``sample_rate``.

    ``meta`` holds ``path``, ``name`` (file stem), ``orig_sample_rate`` and ``orig_channels``.
    Raises :class:`InputError` naming the path for a missing, unreadable, corrupt or
    non-audio file, and the :func:`prepare_waveform` errors (silent, NaN, too short) with the
    path as ``where``.
    """
    import soundfile as sf
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"load_wav: no such file {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise InputError(f"load_wav: {path} is not a readable audio file ({exc})") from None
    if data.shape[0] == 0:
        raise InputError(f"load_wav: {path} holds no samples")
    wave = prepare_waveform(
        torch.from_numpy(data.T.copy()), int(sr), where=str(path), target_rate=sample_rate
    )
    meta = {
        "path": str(path),
        "name": path.stem,
        "orig_sample_rate": int(sr),
        "orig_channels": int(data.shape[1]),
    }
    return Clip(wave, sample_rate, meta=meta)


def save_wav(path: str | Path, clip: Clip | torch.Tensor, sample_rate: int | None = None) -> Path:
    """Write a clip (or a ``(T,)`` tensor) as 16-bit PCM WAV, atomically."""
    import soundfile as sf

    from polyprompt.core.io import atomic_write

    if isinstance(clip, Clip):
        wave, sr = clip.waveform, clip.sample_rate
    else:
        wave, sr = clip, sample_rate
    if sr is None:
        raise InputError("save_wav: pass sample_rate with a raw tensor")
    data = wave.detach().cpu().clamp(-1.0, 1.0).numpy()
    return atomic_write(
        Path(path), lambda p: sf.write(str(p), data, int(sr), subtype="PCM_16", format="WAV")
    )


# --------------------------------------------------------------------------- log-mel
def _fbank(wave: torch.Tensor, cfg: LogMelConfig) -> torch.Tensor:
    """``(frames, n_mels)`` log-mel of one 1-D waveform, AudioMAE settings."""
    import torchaudio.compliance.kaldi as kaldi

    wave = wave - wave.mean()
    return kaldi.fbank(
        wave.unsqueeze(0),
        htk_compat=True,
        sample_frequency=cfg.sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=cfg.n_mels,
        dither=0.0,
        frame_length=cfg.win_ms,
        frame_shift=cfg.hop_ms,
    )


def log_mel(
    waveforms: torch.Tensor | Sequence[torch.Tensor | Clip],
    cfg: LogMelConfig | None = None,
    *,
    return_frames: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Normalised log-mel spectrograms ``(B, 1, n_mels, target_frames)``.

    Args:
        waveforms: a ``(T,)`` or ``(B, T)`` tensor at ``cfg.sample_rate``, or a sequence of
            1-D tensors (any lengths) and/or :class:`Clip` objects (resampled if needed).
        cfg: front end settings (default :class:`LogMelConfig`).
        return_frames: also return the number of real (unpadded) frames per clip, ``(B,)``.

    Each clip is padded with zeros (before normalisation, as AudioMAE) or cropped to its first
    ``target_frames`` frames. Raises :class:`InputError` for an empty batch, a clip shorter than
    one window, a clip over ``cfg.max_crop_factor`` x the window, NaN/inf (naming the index).
    """
    import torch

    from polyprompt.core.validation import check_tensor

    cfg = cfg or LogMelConfig()
    if isinstance(waveforms, torch.Tensor):
        check_tensor(waveforms, "waveforms", rank=(1, 2), where="log_mel")
        items: list[Any] = [waveforms] if waveforms.dim() == 1 else list(waveforms)
    elif isinstance(waveforms, (list, tuple)):
        items = list(waveforms)
    else:
        raise InputError(
            f"log_mel: waveforms must be a tensor or a sequence of tensors/Clips, got {type(waveforms).__name__}"
        )
    if not items:
        raise InputError("log_mel: empty batch")
    out = torch.zeros(len(items), 1, cfg.n_mels, cfg.target_frames)
    frames = torch.zeros(len(items), dtype=torch.long)
    max_samples = cfg.max_samples
    for i, item in enumerate(items):
        where = f"log_mel: waveforms[{i}]"
        if isinstance(item, Clip):
            where += f" ({item.meta.get('name', item.meta.get('path', 'clip'))})"
            wave = item.waveform
            if item.sample_rate != cfg.sample_rate:
                wave = prepare_waveform(
                    wave, item.sample_rate, where=where, target_rate=cfg.sample_rate
                )
        else:
            wave = check_tensor(item, "waveform", rank=1, where=where)
            wave = wave.detach().to(torch.float32)
        check_tensor(wave, "waveform", finite=True, where=where)
        n = int(wave.shape[0])
        if n < cfg.win_length:
            raise InputError(
                f"{where}: {n} samples is shorter than one {cfg.win_ms:g} ms frame ({cfg.win_length} samples)"
            )
        if max_samples is not None and n > max_samples:
            raise InputError(
                f"{where}: {n / cfg.sample_rate:.1f} s is over {cfg.max_crop_factor:g}x the "
                f"{cfg.seconds:.2f} s window (target_frames={cfg.target_frames}); crop the clip first, "
                "raise target_frames, or set max_crop_factor=None to crop silently"
            )
        fb = _fbank(wave, cfg)[
            : cfg.target_frames
        ]  # (frames, n_mels), crop = keep the first frames
        frames[i] = fb.shape[0]
        out[i, 0, :, : fb.shape[0]] = fb.T
    if cfg.normalize:
        out = (out - cfg.norm_mean) / (2.0 * cfg.norm_std)
    return (out, frames) if return_frames else out
