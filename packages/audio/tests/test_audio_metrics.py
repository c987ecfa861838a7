from __future__ import annotations

import pytest
import torch

from polyprompt.audio.metrics import (
    balanced_choice_accuracy,
    caption_scores,
    choice_accuracy,
    cider_d,
    evaluate_generations,
    match_choice,
    normalize_text,
)
from polyprompt.audio.tasks import AudioTextExample, Clip
from polyprompt.core.errors import InputError

PREDS = [
    "a man says river slowly",
    "a woman says banana quickly over white noise",
    "rain falls on a roof",
    "a dog barks",
]
REFS = [
    ["a man with a scottish accent says river slowly", "the word river is spoken slowly by a man"],
    [
        "a woman says banana quickly over hissing white noise",
        "banana spoken quickly by a woman over white noise",
        "a woman speaks",
    ],
    ["heavy rain falls on a tin roof", "rain is falling on a roof", "water drips"],
    ["a cat meows", "a car passes by"],
]
# Produced by the official scorer, salaniz/pycocoevalcap@ad63453 cider/cider_scorer.py
# (CiderScorer(n=4, sigma=6.0); `scorer += (pred, refs)` for each item; compute_score()).
OFFICIAL_CIDER = 2.3354384656183025
OFFICIAL_CIDER_ITEMS = [2.3643440644900346, 3.9624927112258397, 3.0149170867573356, 0.0]


def test_cider_d_matches_official_scorer():
    score, items = cider_d(PREDS, REFS)
    assert score == pytest.approx(OFFICIAL_CIDER, abs=1e-12)
    assert items == pytest.approx(OFFICIAL_CIDER_ITEMS, abs=1e-12)
    # normalisation: case / punctuation do not change the score
    shouty = [p.upper() + "!" for p in PREDS]
    assert cider_d(shouty, REFS)[0] == pytest.approx(OFFICIAL_CIDER, abs=1e-12)


def test_caption_scores_rank_captions():
    perfect = caption_scores([r[0] for r in REFS], REFS)
    good = caption_scores(PREDS, REFS)
    bad = caption_scores(["the sky is green"] * 4, REFS)
    assert perfect["bleu4"] == pytest.approx(1.0)
    for k in ("bleu4", "rougeL", "cider_d"):
        assert perfect[k] > good[k] > bad[k], k
    assert bad["bleu4"] == 0.0
    # one reference per item may be given as a bare string
    single = caption_scores(PREDS, [r[0] for r in REFS])
    assert single == caption_scores(PREDS, [[r[0]] for r in REFS])
    with pytest.raises(InputError, match="reference"):
        caption_scores(["x"], [[]])
    with pytest.raises(InputError):
        caption_scores(["x", "y"], [["x"]])


def test_normalize_and_match_choice():
    assert normalize_text("  It's a WOMAN, quickly! ") == "it s a woman quickly"
    assert match_choice("Woman.", ("man", "woman")) == 1
    assert match_choice("it is a woman", ("man", "woman")) == 1  # whole words: "woman" has no "man"
    assert match_choice("The first clip is noisier", ("the first", "the second")) == 0
    assert match_choice("the second, not the first", ("the first", "the second")) == 1
    assert match_choice("received pronunciation", ("american", "received pronunciation")) == 1
    assert match_choice("no idea", ("yes", "river")) is None
    assert match_choice("yes yes", ("no", "yes")) == 1


def test_choice_accuracy():
    assert choice_accuracy(
        ["yes", "No.", "maybe"], [("no", "yes")] * 3, [1, 0, 1]
    ) == pytest.approx(2 / 3)
    with pytest.raises(InputError, match="lengths differ"):
        choice_accuracy(["yes"], [("no", "yes")], [1, 0])
    with pytest.raises(InputError):
        choice_accuracy([], [], [])


def test_evaluate_generations_groups_captions_by_clip():
    clip_a = Clip(torch.randn(1600))
    clip_b = Clip(torch.randn(1600))
    exs = [
        AudioTextExample((clip_a, "Describe."), "a dog barks loudly", "caption"),
        AudioTextExample((clip_a, "Describe."), "a dog is barking", "caption"),
        AudioTextExample((clip_b, "Describe."), "rain on a roof", "caption"),
        AudioTextExample((clip_a, "Speaker?"), "woman", "qa", label=1, choices=("man", "woman")),
        AudioTextExample((clip_a, "Word?"), "river", "qa"),
        AudioTextExample(
            (clip_a, clip_b, "Same word?"), "no", "nlar", label=0, choices=("no", "yes")
        ),
    ]
    preds = [
        "a dog barks loudly",
        "ignored second prediction",
        "rain on a roof",
        "a woman",
        "River!",
        "yes",
    ]
    res = evaluate_generations(exs, preds)
    assert res["caption"]["n"] == 2 and res["caption"]["bleu4"] == pytest.approx(1.0)
    assert res["qa"] == {"accuracy": 1.0, "n": 2.0}
    assert res["nlar"] == {"accuracy": 0.0, "n": 1.0, "balanced_accuracy": 0.0}
    with pytest.raises(InputError, match="predictions"):
        evaluate_generations(exs, preds[:2])


def _yes_no(question: str, answer: str) -> AudioTextExample:
    clip = Clip(torch.randn(1600))
    return AudioTextExample(
        (clip, clip, question),
        answer,
        "nlar",
        label=("no", "yes").index(answer),
        choices=("no", "yes"),
    )


def test_balanced_accuracy_puts_audio_blind_answers_at_chance():
    # unbalanced answers: 3 x yes / 1 x no for one question, 1 x yes / 3 x no for the other
    exs = [_yes_no("Same word?", a) for a in ("yes", "yes", "yes", "no")]
    exs += [_yes_no("Same gender?", a) for a in ("yes", "no", "no", "no")]
    constant = ["yes"] * 8
    assert evaluate_generations(exs, constant)["nlar"]["accuracy"] == pytest.approx(0.5)
    assert balanced_choice_accuracy(exs, constant) == pytest.approx(0.5)
    # an answer that follows each question's majority: plain accuracy 75 %, balanced 50 %
    majority = ["yes"] * 4 + ["no"] * 4
    assert evaluate_generations(exs, majority)["nlar"]["accuracy"] == pytest.approx(0.75)
    assert balanced_choice_accuracy(exs, majority) == pytest.approx(0.5)
    # right answers score 1, and one miss on a rare answer costs more than on a common one
    right = [e.response for e in exs]
    assert balanced_choice_accuracy(exs, right) == pytest.approx(1.0)
    miss_rare = right.copy()
    miss_rare[3] = "yes"  # the only "no" of "Same word?"
    miss_common = right.copy()
    miss_common[0] = "no"  # one of three "yes"
    assert balanced_choice_accuracy(exs, miss_rare) < balanced_choice_accuracy(exs, miss_common)
    # unmatched answers are wrong
    assert balanced_choice_accuracy(exs, ["maybe"] * 8) == 0.0


def test_balanced_accuracy_rejects_bad_input():
    exs = [_yes_no("Same word?", "yes")]
    with pytest.raises(InputError, match="predictions"):
        balanced_choice_accuracy(exs, [])
    with pytest.raises(InputError, match="no examples"):
        balanced_choice_accuracy([], [])
    free = AudioTextExample((Clip(torch.randn(1600)), "Word?"), "river", "qa")
    with pytest.raises(InputError, match="no choices"):
        balanced_choice_accuracy([free], ["river"])
