"""The espeak-ng task corpus: splits, labels, captions, the five tasks, determinism, cache."""

from __future__ import annotations

import collections
import os

import pytest
import torch

from polyprompt.audio.data import corpus as corpus_mod
from polyprompt.audio.data.corpus import (
    SPLIT_VARIANTS,
    CorpusConfig,
    build_clips,
    build_corpus,
    build_examples,
    caption_for,
    clip_cache_dir,
    plan_clips,
)
from polyprompt.audio.tasks import TASKS, AudioTextExample
from polyprompt.core.errors import ConfigError

TINY = CorpusConfig(n_train=18, n_val=6, n_test=12, seed=3)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    old = os.environ.get("POLYPROMPT_HOME")
    path = tmp_path_factory.mktemp("pp_home_corpus")
    os.environ["POLYPROMPT_HOME"] = str(path)
    yield path
    if old is None:
        os.environ.pop("POLYPROMPT_HOME", None)
    else:
        os.environ["POLYPROMPT_HOME"] = old


@pytest.fixture(scope="module")
def tiny(home):
    return build_corpus(TINY, progress=False)


def test_sizes_and_tasks(tiny):
    assert set(tiny) == {"train", "val", "test"}
    for split, n in TINY.split_sizes().items():
        counts = collections.Counter(ex.task for ex in tiny[split])
        assert counts == {t: n for t in TASKS}, split
        assert all(isinstance(ex, AudioTextExample) for ex in tiny[split])


def test_speaker_holdout_and_balance(tiny):
    speakers = {
        split: {c.meta["speaker"] for ex in exs for c in ex.clips()} for split, exs in tiny.items()
    }
    for split, spk in speakers.items():
        assert spk <= set(SPLIT_VARIANTS[split]), split
    assert not (speakers["train"] & speakers["test"]) and not (speakers["train"] & speakers["val"])
    # every clip of an example comes from the example's split (few-shot supports, NLAR partners)
    for split, exs in tiny.items():
        assert all(c.meta["split"] == split for ex in exs for c in ex.clips())
    words = collections.Counter(ex.response for ex in tiny["train"] if ex.task == "classify")
    assert set(words) == set(TINY.words) and max(words.values()) - min(words.values()) <= 1


def test_clips_are_real_short_speech(tiny):
    clips = {id(c): c for exs in tiny.values() for ex in exs for c in ex.clips()}.values()
    for c in clips:
        assert c.sample_rate == 16_000 and 0.15 < c.duration <= 2.0
        assert float(c.waveform.std()) > 1e-3 and torch.isfinite(c.waveform).all()
        assert os.path.isfile(c.meta["path"]) and c.meta["path"].startswith(str(clip_cache_dir()))
    noisy = [c for c in clips if c.meta["noise"] != "none"]
    assert noisy and len(noisy) < len(list(clips))


def test_labels_match_synthesis_params(tiny):
    for ex in tiny["train"] + tiny["test"]:
        meta = ex.clips()[-1].meta if ex.task == "fewshot" else ex.clips()[0].meta
        if ex.task == "caption":
            text = ex.response
            assert f"'{meta['word']}'" in text and meta["accent"] in text and meta["gender"] in text
            assert (meta["noise"] in text) == (meta["noise"] != "none")
        elif ex.task == "classify":
            assert ex.response == meta["word"] == ex.choices[ex.label]
        elif ex.task == "qa":
            assert ex.choices[ex.label] == ex.response
            q = ex.segments[-1]
            if "man or a woman" in q:
                assert ex.response == meta["gender"]
            elif q == "Is there background noise?":
                assert ex.response == ("no" if meta["noise"] == "none" else "yes")
            elif "word" in q:
                assert ex.response == meta["word"]
        elif ex.task == "fewshot":
            segs = ex.segments
            assert len(ex.clips()) == TINY.fewshot_shots + 1 and segs[-1] == "Word:"
            for clip, text in zip(segs[0:-2:2], segs[1:-2:2], strict=True):
                assert text == f"Word: {clip.meta['word']}."
            assert ex.response == meta["word"] in ex.choices and ex.choices[ex.label] == ex.response
        elif ex.task == "nlar":
            a, b = ex.clips()
            q = ex.segments[-1]
            if "same word" in q:
                assert ex.response == ("yes" if a.meta["word"] == b.meta["word"] else "no")
            elif "same gender" in q:
                assert ex.response == ("yes" if a.meta["gender"] == b.meta["gender"] else "no")
            elif "faster" in q:
                order = {"slow": 0, "normal": 1, "fast": 2}
                assert order[a.meta["speed"]] != order[b.meta["speed"]]
                faster = order[b.meta["speed"]] > order[a.meta["speed"]]
                assert ex.response == ("yes" if faster else "no")
                assert (b.duration < a.duration) == faster  # faster speech is really shorter
            else:
                assert (a.meta["noise"] == "none") != (b.meta["noise"] == "none")
                assert ex.response == ("the first" if a.meta["noise"] != "none" else "the second")


def test_deterministic_and_cached(home, tiny, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("cache miss: synthesize called")

    monkeypatch.setattr(corpus_mod, "synthesize", boom)
    again = build_corpus(TINY, progress=False)  # served from the WAV cache only
    for split in tiny:
        assert [e.response for e in again[split]] == [e.response for e in tiny[split]]
        assert [e.segments[-1] for e in again[split]] == [e.segments[-1] for e in tiny[split]]
        for e1, e2 in zip(again[split], tiny[split], strict=True):
            for c1, c2 in zip(e1.clips(), e2.clips(), strict=True):
                assert torch.equal(c1.waveform, c2.waveform)
    other = plan_clips(TINY.replace(seed=4))
    assert [p.key() for p in other["train"]] != [p.key() for p in plan_clips(TINY)["train"]]


def test_nlar_answers_balanced(home):
    cfg = CorpusConfig(n_train=40, n_val=0, n_test=0, tasks=("nlar",), seed=1)
    exs = build_corpus(cfg, progress=False)["train"]
    counts = collections.Counter(ex.label for ex in exs)
    assert min(counts.values()) >= 0.3 * len(exs)


def test_task_subset_and_attributes(home):
    cfg = CorpusConfig(
        n_train=8,
        n_val=0,
        n_test=0,
        tasks=("classify", "fewshot"),
        classify_attribute="gender",
        fewshot_attribute="speed",
        fewshot_shots=3,
        noise_prob=0.0,
        seed=2,
    )
    clips = build_clips(cfg, progress=False)["train"]
    assert all(c.meta["noise"] == "none" for c in clips)
    exs = build_examples(clips, cfg)
    assert {e.task for e in exs} == {"classify", "fewshot"}
    for e in exs:
        if e.task == "classify":
            assert e.choices == ("man", "woman") and e.response == e.clips()[0].meta["gender"]
        else:
            assert e.segments[-1] == "Speed:" and len(e.clips()) == 4


def test_caption_templates_share_facts():
    meta = {
        "gender": "woman",
        "accent": "american",
        "word": "river",
        "speed": "slow",
        "noise": "white",
    }
    caps = {caption_for(meta, t) for t in range(5)}
    assert len(caps) == 5
    for c in caps:
        assert "woman" in c and "an american accent" in c and "'river'" in c
        assert "slowly" in c and "white noise" in c


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_train": -1},
        {"n_train": 0, "n_val": 0, "n_test": 0},
        {"words": ("yes",)},
        {"words": ("yes", "no", "yes")},
        {"noises": ()},
        {"accents": ("martian",)},
        {"speeds": ("glacial",)},
        {"noise_prob": 1.5},
        {"tasks": ("translate",)},
        {"classify_attribute": "colour"},
        {"fewshot_shots": 1},
        {"fewshot_attribute": "gender", "fewshot_shots": 3},
    ],
)
def test_config_errors(kwargs):
    with pytest.raises(ConfigError):
        CorpusConfig(**kwargs)


def test_pretraining_clips_train_speakers_only(home):
    from polyprompt.audio.data.corpus import PRETRAIN_WORDS, pretraining_clips

    clips = pretraining_clips(8, seed=1, progress=False)
    assert len(clips) == 8
    assert {c.meta["speaker"] for c in clips} <= set(SPLIT_VARIANTS["train"])
    assert {c.meta["word"] for c in clips} <= set(PRETRAIN_WORDS)


def test_log_mel_of_corpus_speech(tiny):
    from polyprompt.audio.frontend import LogMelConfig, log_mel

    clips = [ex.clips()[0] for ex in tiny["test"] if ex.task == "classify"]
    cfg = LogMelConfig(target_frames=128)
    mel, frames = log_mel(clips, cfg, return_frames=True)
    assert mel.shape == (len(clips), 1, 128, 128) and torch.isfinite(mel).all()
    assert all(cfg.frames_for(c.num_samples) == int(f) for c, f in zip(clips, frames, strict=True))
    # speech has more energy than the zero padding region and differs between clips
    assert float(mel[:, :, :, :10].std()) > 0.1
