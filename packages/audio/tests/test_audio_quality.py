"""APT hears: on real espeak-ng speech of held-out speakers, the trained aligner answers a
question about the clip better than the text-only LM, which cannot hear.

Same frozen encoder and LM (the example's ``--quick`` sizes, LM pre-trained 300 steps), same
training clips, schedule and seed; the task is the corpus's ``classify`` family with the
background-noise attribute (none / white / pink / brown: an acoustic property that does not
depend on the speaker). The text-only LM can only learn the label prior.
"""

from __future__ import annotations

import pytest
import torch


@pytest.mark.slow
def test_apt_beats_text_only_lm_on_held_out_speakers(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path / "home"))
    from polyprompt.audio import baselines
    from polyprompt.audio.data.corpus import CorpusConfig, build_corpus
    from polyprompt.audio.demo import DemoConfig, apt_config, build_backbone
    from polyprompt.audio.experiment import evaluate, fit
    from polyprompt.audio.method import AcousticPromptTuning

    corpus = build_corpus(
        CorpusConfig(n_train=64, n_val=0, n_test=48, classify_attribute="noise"), progress=False
    )
    train = [e for e in corpus["train"] if e.task == "classify"]
    test = [e for e in corpus["test"] if e.task == "classify"]
    cfg = DemoConfig.quick().replace(lm_steps=300)
    backbone, _ = build_backbone(cfg, corpus["train"], progress=False)
    acc = {}
    for name in ("apt", "text_only"):
        torch.manual_seed(0)
        make = AcousticPromptTuning if name == "apt" else baselines.text_only
        method = make(backbone, apt_config(cfg))
        fit(method, train, epochs=60, batch_size=8, lr=5e-3, seed=0, progress=False)
        acc[name] = evaluate(method, test, max_new_tokens=4)["scores"]["classify"]
    prior = max(
        sum(e.label == k for e in test) / len(test) for k in range(len(test[0].choices or ()))
    )
    # measured here: APT 0.73 vs text-only 0.60 (= the majority class); seed 1 gave 0.73 too
    assert acc["text_only"] <= prior + 1e-9
    assert acc["apt"] >= acc["text_only"] + 0.08, acc
