"""Real speech from the espeak-ng synthesiser (Debian/Ubuntu package ``espeak-ng``).

espeak-ng's formant synthesiser speaks English with several regional accent rules
(``espeak-ng --voices=en``) and voice variants that change the speaker (``+m1`` .. ``+m7``
male, ``+f1`` .. ``+f5`` female: pitch base/range, formants, breathiness). Rate (``-s``,
words per minute) and pitch (``-p``, 0-99) are free parameters. Every synthesis parameter
becomes a label (accent, gender, speaker, speed, pitch, word) for the APT tasks.

The binary is found with :func:`shutil.which`; when it is missing, :func:`espeak_binary`
raises :class:`EspeakNotFoundError` saying how to install it.

Example::

    >>> clip = synthesize(SpeechSpec("river", accent="scottish", variant="f2"))  # doctest: +SKIP
    >>> clip.sample_rate, clip.meta["gender"]                                   # doctest: +SKIP
    (16000, 'female')
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from polyprompt.audio.tasks import SAMPLE_RATE, Clip
from polyprompt.core.errors import InputError, PolypromptError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ACCENTS",
    "VARIANTS",
    "EspeakNotFoundError",
    "SpeechSpec",
    "espeak_binary",
    "espeak_version",
    "synthesize",
    "trim_silence",
]

ACCENTS: dict[str, str] = {
    "american": "en-us",
    "british": "en-gb",
    "scottish": "en-gb-scotland",
    "received pronunciation": "en-gb-x-rp",
    "lancastrian": "en-gb-x-gbclan",
    "west midlands": "en-gb-x-gbcwmd",
    "caribbean": "en-029",
    "new york": "en-us-nyc",
}
"""Accent label -> espeak-ng voice (the ``gmw/en*`` language files of espeak-ng 1.51)."""

VARIANTS: dict[str, str] = {
    **{f"m{i}": "male" for i in range(1, 8)},
    **{f"f{i}": "female" for i in range(1, 6)},
}
"""Voice variant -> speaker gender (``espeak-ng-data/voices/!v/<variant>``: ``gender`` line)."""

_INSTALL_HINT = (
    "espeak-ng is required to synthesise the speech corpus but was not found on PATH. "
    "Install it with `sudo apt-get install espeak-ng` (Debian/Ubuntu; `brew install espeak-ng` "
    "on macOS) or run `make data` / `scripts/install_data.sh`, then retry."
)


class EspeakNotFoundError(PolypromptError, RuntimeError):
    """The espeak-ng binary is not installed."""


def espeak_binary() -> str:
    """Path of the ``espeak-ng`` binary; raises :class:`EspeakNotFoundError` if missing."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise EspeakNotFoundError(_INSTALL_HINT)
    return path


def espeak_version() -> str:
    """First line of ``espeak-ng --version`` (part of the corpus cache key)."""
    out = subprocess.run(
        [espeak_binary(), "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


@dataclass(frozen=True)
class SpeechSpec:
    """Parameters of one synthesised utterance.

    Attributes:
        text: what is said (a word or a short phrase).
        accent: key of :data:`ACCENTS`.
        variant: key of :data:`VARIANTS` (speaker / gender).
        rate: speaking rate in words per minute (espeak-ng ``-s``, 80..450; default 175).
        pitch: base pitch 0..99 (espeak-ng ``-p``; default 50).
    """

    text: str
    accent: str = "american"
    variant: str = "m1"
    rate: int = 175
    pitch: int = 50

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise InputError(f"SpeechSpec.text must be a non-empty string, got {self.text!r}")
        if self.accent not in ACCENTS:
            raise InputError(
                f"SpeechSpec.accent {self.accent!r} unknown; choose from {sorted(ACCENTS)}"
            )
        if self.variant not in VARIANTS:
            raise InputError(
                f"SpeechSpec.variant {self.variant!r} unknown; choose from {sorted(VARIANTS)}"
            )
        if not 80 <= int(self.rate) <= 450:
            raise InputError(f"SpeechSpec.rate must be in 80..450 wpm, got {self.rate}")
        if not 0 <= int(self.pitch) <= 99:
            raise InputError(f"SpeechSpec.pitch must be in 0..99, got {self.pitch}")

    @property
    def voice(self) -> str:
        """The espeak-ng ``-v`` argument, e.g. ``en-gb-scotland+f2``."""
        return f"{ACCENTS[self.accent]}+{self.variant}"

    @property
    def gender(self) -> str:
        return VARIANTS[self.variant]

    def key(self) -> str:
        """Stable short hash of the parameters (cache file name)."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:16]

    def command(self) -> list[str]:
        """The espeak-ng command line (WAV on stdout)."""
        return [
            espeak_binary(),
            "-v",
            self.voice,
            "-s",
            str(int(self.rate)),
            "-p",
            str(int(self.pitch)),
            "--stdout",
            "--",
            self.text,
        ]


def trim_silence(
    wave: torch.Tensor, sample_rate: int, *, threshold: float = 0.01, margin_s: float = 0.03
) -> torch.Tensor:
    """Drop leading/trailing samples quieter than ``threshold`` x peak, keeping ``margin_s``."""
    peak = float(wave.abs().max())
    if peak == 0.0:
        return wave
    loud = (wave.abs() > threshold * peak).nonzero().flatten()
    margin = int(margin_s * sample_rate)
    start = max(0, int(loud[0]) - margin)
    end = min(wave.shape[0], int(loud[-1]) + 1 + margin)
    return wave[start:end]


@functools.lru_cache(maxsize=4)
def _resampler(orig: int, new: int):
    """A cached ``torchaudio.transforms.Resample`` (its sinc kernel costs ~0.1 s to build)."""
    import torchaudio.transforms as T

    return T.Resample(orig, new)


def synthesize(
    spec: SpeechSpec, *, sample_rate: int = SAMPLE_RATE, trim: bool = True, resampler: str = "auto"
) -> Clip:
    """Speak ``spec`` with espeak-ng and return a mono :class:`Clip` at ``sample_rate``.

    espeak-ng writes 22,050 Hz 16-bit WAV to stdout. ``resampler="auto"`` pipes it through
    ``sox rate`` when sox is installed (fast), else resamples with a cached
    ``torchaudio.transforms.Resample`` (``"sox"`` / ``"torchaudio"`` force one). The audio is read
    with soundfile and trimmed of leading/trailing silence (after resampling). ``meta`` holds
    every :class:`SpeechSpec` field plus ``voice``, ``gender`` and ``source="espeak-ng"``.

    Raises:
        EspeakNotFoundError: espeak-ng is not installed (with install instructions).
        InputError: espeak-ng failed or produced no audio for ``spec``.
    """
    import soundfile as sf
    import torch

    if resampler not in ("auto", "sox", "torchaudio"):
        raise InputError(
            f"synthesize: resampler must be 'auto', 'sox' or 'torchaudio', got {resampler!r}"
        )
    cmd = spec.command()
    sox = shutil.which("sox") if resampler in ("auto", "sox") else None
    if resampler == "sox" and sox is None:
        from polyprompt.audio.data.effects import sox_binary

        sox_binary()  # raises SoxNotFoundError with install instructions
    procs: list[subprocess.Popen] = []
    try:
        if sox is not None:  # espeak-ng | sox rate <sample_rate>: resampled in C on a pipe
            p1 = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            procs.append(p1)
            rate_cmd = [sox, "-V1", "-t", "wav", "-", "-r", str(sample_rate), "-c", "1"]
            rate_cmd += ["-b", "32", "-e", "floating-point", "-t", "wav", "-"]
            p2 = subprocess.Popen(
                rate_cmd, stdin=p1.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            procs.append(p2)
            assert p1.stdout is not None
            p1.stdout.close()
            stdout, err2 = p2.communicate(timeout=60)
            err1 = p1.communicate(timeout=60)[1]
            returncode = p1.returncode or p2.returncode
            stderr = err1 + err2
        else:
            res = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
            stdout, stderr, returncode = res.stdout, res.stderr, res.returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        for p in procs:  # never leave a pipeline process behind
            p.kill()
            p.wait()
        raise InputError(f"synthesize: espeak-ng failed for {spec}: {exc}") from None
    if returncode != 0 or len(stdout) <= 44:
        err = stderr.decode(errors="replace").strip()
        raise InputError(
            f"synthesize: espeak-ng exited {returncode} with no audio for {spec} ({err})"
        )
    data, sr = sf.read(io.BytesIO(stdout), dtype="float32", always_2d=True)
    wave = torch.from_numpy(data.mean(axis=1).copy())
    if sr != sample_rate:
        wave = _resampler(sr, sample_rate)(wave)
    if trim:
        wave = trim_silence(wave, sample_rate)
    meta = {
        **asdict(spec),
        "voice": spec.voice,
        "gender": spec.gender,
        "source": "espeak-ng",
        "resampler": "sox" if sox is not None else "torchaudio",
        "name": f"{spec.text}-{spec.accent}-{spec.variant}-{spec.rate}-{spec.pitch}",
    }
    return Clip(wave.contiguous(), sample_rate, meta=meta)
