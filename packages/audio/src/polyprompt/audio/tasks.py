"""Shared data types of polyprompt-audio: clips and interleaved audio-text examples.

Acoustic Prompt Tuning (Liang et al., 2023, arXiv 2312.00249, Sec. 3.2 "interleaved input")
feeds a frozen LM ``[BOS, audio_1, text_1, audio_2, text_2, ...]``: any number of clips,
each followed by text. One :class:`AudioTextExample` is one such prompt plus its target
``response`` (the LM loss covers the response tokens only). The five task families of the
paper share this one type:

=========  ===========================================================================
task       segments (illustrative)
=========  ===========================================================================
caption    ``(clip, "Describe the audio.")``
classify   ``(clip, "Which accent is this? Options: ...")`` with ``choices``/``label``
qa         ``(clip, "Is the speaker a woman or a man?")``
fewshot    ``(clip1, "Accent: scottish.", clip2, "Accent: american.", clip3, "Accent:")``
nlar       ``(clip1, clip2, "Is the second speaker faster than the first?")``
=========  ===========================================================================

Example::

    >>> import torch
    >>> clip = Clip(torch.randn(16_000), meta={"word": "river"})
    >>> ex = AudioTextExample((clip, "What word is spoken?"), "river", "qa")
    >>> len(ex.clips()), ex.clips()[0].duration
    (1, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from polyprompt.core.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "AUDIO_PLACEHOLDER",
    "SAMPLE_RATE",
    "TASKS",
    "AudioTextExample",
    "Clip",
    "Segment",
]

SAMPLE_RATE = 16_000
"""Sample rate of every clip the encoder sees (AudioMAE / APT: 16 kHz)."""

TASKS = ("caption", "classify", "qa", "fewshot", "nlar")
"""Task families of APT (paper Sec. 4): captioning, classification as text, audio QA,
few-shot classification with interleaved example clips, natural-language audio reasoning."""

AUDIO_PLACEHOLDER = "<audio>"
"""A text segment must not contain this: pass the :class:`Clip` itself in its slot."""

# Minimum number of clips per task: few-shot needs >= 1 example clip + the query clip,
# NLAR compares two clips (APT Sec. 4.3).
_MIN_CLIPS = {"caption": 1, "classify": 1, "qa": 1, "fewshot": 2, "nlar": 2}


@dataclass(frozen=True, eq=False)
class Clip:
    """One mono waveform at ``sample_rate`` plus the parameters it was made from.

    Args:
        waveform: ``(T,)`` float tensor, mono, finite; stored as contiguous float32.
        sample_rate: samples per second (> 0).
        meta: free-form labels (word, voice, accent, rate, pitch, noise, source path...);
            stored read-only.

    ``eq=False``: clips compare and hash by identity (a tensor field has no value equality).
    Heavier checks (silence, length, resampling) live in :func:`polyprompt.audio.frontend.prepare_waveform`.
    """

    waveform: torch.Tensor
    sample_rate: int = SAMPLE_RATE
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import torch

        from polyprompt.core.validation import check_tensor

        where = f"Clip({self.meta.get('name', '')})" if isinstance(self.meta, Mapping) else "Clip"
        w = check_tensor(self.waveform, "waveform", rank=1, min_size={0: 1}, where=where)
        if not w.is_floating_point():
            raise InputError(f"{where}: `waveform` must be a floating tensor, got {w.dtype}")
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int):
            raise InputError(f"{where}: `sample_rate` must be an int, got {self.sample_rate!r}")
        if self.sample_rate <= 0:
            raise InputError(f"{where}: `sample_rate` must be > 0, got {self.sample_rate}")
        if not isinstance(self.meta, Mapping):
            raise InputError(f"{where}: `meta` must be a mapping, got {type(self.meta).__name__}")
        object.__setattr__(self, "waveform", w.detach().to(torch.float32).contiguous())
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    @property
    def num_samples(self) -> int:
        return int(self.waveform.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / self.sample_rate

    def __repr__(self) -> str:
        keys = ", ".join(f"{k}={v!r}" for k, v in list(self.meta.items())[:4])
        return f"Clip({self.duration:.2f}s @ {self.sample_rate} Hz{', ' + keys if keys else ''})"


Segment = Clip | str
"""One interleaved prompt piece: a clip or a text string, in order."""


@dataclass(frozen=True, eq=False)
class AudioTextExample:
    """One interleaved prompt ``segments`` and its target ``response``.

    Args:
        segments: clips and strings in prompt order (a list is converted to a tuple).
        response: target text; the LM loss is on these tokens only.
        task: one of :data:`TASKS`.
        label: class index for classification-style tasks (``choices[label]`` is the answer).
        choices: the answer strings of a classification-as-text task.

    Raises:
        InputError: unknown task, no clip (or fewer than the task needs: 2 for ``fewshot`` and
            ``nlar``), a ``None`` / non-Clip non-str segment (a missing audio slot), an empty
            string or one holding the ``<audio>`` placeholder, empty response, label out of range.
    """

    segments: tuple[Segment, ...]
    response: str
    task: str
    label: int | None = None
    choices: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        where = "AudioTextExample"
        if self.task not in TASKS:
            raise InputError(f"{where}: unknown task {self.task!r}; known: {', '.join(TASKS)}")
        where = f"AudioTextExample(task={self.task!r})"
        segs = self.segments
        if isinstance(segs, (str, Clip)) or not hasattr(segs, "__iter__"):
            raise InputError(f"{where}: `segments` must be a sequence of Clip/str, got {segs!r}")
        segs = tuple(segs)
        object.__setattr__(self, "segments", segs)
        if not segs:
            raise InputError(f"{where}: `segments` is empty")
        for i, seg in enumerate(segs):
            if seg is None:
                raise InputError(
                    f"{where}: segment {i} is None - missing audio slot; pass a Clip there "
                    f"(segments: {self._describe(segs)})"
                )
            if isinstance(seg, str):
                if not seg.strip():
                    raise InputError(f"{where}: segment {i} is an empty string")
                if AUDIO_PLACEHOLDER in seg:
                    raise InputError(
                        f"{where}: segment {i} ({seg!r}) holds the placeholder "
                        f"{AUDIO_PLACEHOLDER!r} - missing audio slot; pass the Clip as its own segment"
                    )
            elif not isinstance(seg, Clip):
                raise InputError(
                    f"{where}: segment {i} must be a Clip or str, got {type(seg).__name__} "
                    "(wrap waveforms with polyprompt.audio.tasks.Clip)"
                )
        n_clips = sum(isinstance(s, Clip) for s in segs)
        need = _MIN_CLIPS[self.task]
        if n_clips < need:
            raise InputError(
                f"{where}: needs at least {need} clip(s), got {n_clips} - missing audio slot "
                f"(segments: {self._describe(segs)})"
            )
        if not isinstance(self.response, str) or not self.response.strip():
            raise InputError(
                f"{where}: `response` must be a non-empty string, got {self.response!r}"
            )
        if self.choices is not None:
            choices = tuple(self.choices)
            object.__setattr__(self, "choices", choices)
            if not choices or not all(isinstance(c, str) and c.strip() for c in choices):
                raise InputError(f"{where}: `choices` must be non-empty strings, got {choices!r}")
            if len(set(choices)) != len(choices):
                raise InputError(f"{where}: `choices` has duplicates: {choices!r}")
        if self.label is not None:
            if isinstance(self.label, bool) or not isinstance(self.label, int):
                raise InputError(f"{where}: `label` must be an int, got {self.label!r}")
            if self.label < 0:
                raise InputError(f"{where}: `label` must be >= 0, got {self.label}")
            if self.choices is not None and self.label >= len(self.choices):
                raise InputError(
                    f"{where}: `label` {self.label} out of range for {len(self.choices)} choices"
                )

    @staticmethod
    def _describe(segs: tuple[Any, ...]) -> str:
        parts = []
        for s in segs:
            if isinstance(s, Clip):
                parts.append("<clip>")
            elif isinstance(s, str):
                parts.append(repr(s if len(s) <= 24 else s[:21] + "..."))
            else:
                parts.append(f"<{type(s).__name__}>")
        return "[" + ", ".join(parts) + "]"

    def clips(self) -> tuple[Clip, ...]:
        """The clips in prompt order."""
        return tuple(s for s in self.segments if isinstance(s, Clip))

    @property
    def answer(self) -> str | None:
        """``choices[label]`` for classification-style examples, else ``None``."""
        if self.choices is None or self.label is None:
            return None
        return self.choices[self.label]

    def __repr__(self) -> str:
        return (
            f"AudioTextExample(task={self.task!r}, segments={self._describe(self.segments)}, "
            f"response={self.response!r})"
        )
