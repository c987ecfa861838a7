from __future__ import annotations

import numpy as np
import pytest
import torch

from polyprompt.audio.tasks import SAMPLE_RATE, TASKS, AudioTextExample, Clip
from polyprompt.core.errors import InputError, NonFiniteError


def _clip(n: int = 1600, **meta) -> Clip:
    return Clip(torch.linspace(-0.5, 0.5, n, dtype=torch.float64), meta=meta)


def test_clip_coerces_and_reports():
    c = _clip(8000, word="river")
    assert c.waveform.dtype == torch.float32 and c.waveform.shape == (8000,)
    assert c.sample_rate == SAMPLE_RATE and c.duration == 0.5 and c.num_samples == 8000
    assert c.meta["word"] == "river"
    with pytest.raises(TypeError):
        c.meta["word"] = "x"  # read-only
    assert "0.50s" in repr(c)
    # identity semantics (tensor fields have no value equality); hashable
    assert c != _clip(8000) and hash(c) == hash(c)


@pytest.mark.parametrize(
    "waveform, err",
    [
        (torch.zeros(2, 100), InputError),  # stereo must go through frontend.prepare_waveform
        (torch.zeros(0), InputError),
        (torch.tensor([0.0, float("nan")]), NonFiniteError),
        (torch.arange(10), InputError),  # integer
        (np.zeros(10, dtype=np.float32), InputError),  # not a tensor
    ],
)
def test_clip_rejects_bad_waveforms(waveform, err):
    with pytest.raises(err):
        Clip(waveform)


def test_clip_rejects_bad_rate():
    with pytest.raises(InputError, match="sample_rate"):
        Clip(torch.zeros(10), sample_rate=0)
    with pytest.raises(InputError, match="sample_rate"):
        Clip(torch.zeros(10), sample_rate=16000.0)


def test_example_segments_and_clips():
    a, b, q = _clip(), _clip(), _clip()
    ex = AudioTextExample(
        [a, "label: scottish", b, "label: american", q, "label:"],
        "scottish",
        "fewshot",
        label=0,
        choices=("scottish", "american"),
    )
    assert isinstance(ex.segments, tuple) and len(ex.segments) == 6
    assert ex.clips() == (a, b, q)
    assert ex.answer == "scottish"
    assert "<clip>" in repr(ex)
    assert set(TASKS) == {"caption", "classify", "qa", "fewshot", "nlar"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"task": "summarise"}, "unknown task"),
        ({"segments": ()}, "empty"),
        ({"segments": ("just text",)}, "at least 1 clip"),
        ({"segments": (None, "Describe.")}, "segment 0 is None - missing audio slot"),
        ({"segments": ("<audio> Describe.",)}, "placeholder"),
        ({"segments": (torch.zeros(10), "x")}, "segment 0 must be a Clip or str"),
        ({"segments": ("  ",)}, "empty string"),
        ({"response": ""}, "response"),
        ({"label": 3, "choices": ("a", "b")}, "out of range"),
        ({"label": -1}, ">= 0"),
        ({"choices": ("a", "a")}, "duplicates"),
        ({"choices": ("a", "")}, "non-empty"),
    ],
)
def test_example_validation(kwargs, match):
    base = {"segments": (_clip(), "Describe the audio."), "response": "speech", "task": "caption"}
    base.update(kwargs)
    with pytest.raises(InputError, match=match):
        AudioTextExample(**base)


def test_interleaved_missing_slot_named():
    a = _clip()
    # few-shot with the query clip missing: only one clip
    with pytest.raises(InputError, match="fewshot.*at least 2 clip"):
        AudioTextExample((a, "label: x", "label:"), "x", "fewshot")
    with pytest.raises(InputError, match="segment 2 is None"):
        AudioTextExample((a, "label: x", None, "label:"), "x", "fewshot")
    with pytest.raises(InputError, match="nlar"):
        AudioTextExample((a, "Is the second faster?"), "yes", "nlar")
