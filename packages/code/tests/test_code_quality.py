"""Zecoler on real pairs with the in-situ pre-trained mini-CodeBERT (slow: pre-trains once).

Marked slow: a masked LM that reads context at ``<mask>`` needs minutes of CPU pre-training
(cached under ``$POLYPROMPT_HOME`` afterwards); the default suite checks shapes, gradients,
checkpoints and bad inputs on a tiny untrained model instead.
"""

import pytest

from polyprompt.code.corpus import load_corpus
from polyprompt.code.pairs import build_pairs, split_functions
from polyprompt.code.train import METHODS, TrainSettings, accuracy, build_method, fit


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason="the CPU-budget mini-CodeBERT (held-out MLM accuracy ~14%) leaves Zecoler at chance: "
    "benchmarks/results/code.md; expected to pass with a stronger backbone (load_codebert)",
)
def test_trained_prompt_beats_untuned_template_on_real_clone_pairs():
    from polyprompt.code.pretrain import pretrain_code_mlm

    backbone = pretrain_code_mlm(progress=False)
    fns = load_corpus("python", max_functions=600, seed=0).functions
    train_f, test_f = split_functions(fns, 0.7, seed=0)
    train = build_pairs(train_f, "clone", num_pairs=256, seed=0)
    test = build_pairs(test_f, "clone", num_pairs=128, seed=0)
    manual = accuracy(build_method("manual", backbone, "clone"), test)
    model = build_method("zecoler", backbone, "clone")
    fit(model, train, None, TrainSettings(epochs=4, seed=0), METHODS["zecoler"].lr)
    tuned = accuracy(model, test)
    assert tuned > manual + 0.05, (tuned, manual)
