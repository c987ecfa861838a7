"""Real data, real backbone: the prompts beat online head fine-tuning (slow: needs the digit ViT).

The core's MNIST-pre-trained digit ViT (trained once and cached, ~2 min on 2 quiet cores) on
the real optdigits train split delivered online in one pass (a one-task stream: the plain
online setting). The Si-Blurry comparison of every method is the benchmark's job
(benchmarks/continual.py); its numbers are in the package README.
"""

from __future__ import annotations

import pytest
import torch

from polyprompt.continual.backbone import digit_backbone
from polyprompt.continual.data import load_digit_pool
from polyprompt.continual.demo import METHODS, build_model
from polyprompt.continual.learner import LearnerConfig, OnlineLearner
from polyprompt.continual.stream import SiBlurryConfig, SiBlurryStream


@pytest.mark.slow
def test_mvp_prompts_beat_head_finetuning_on_real_digits():
    pre = digit_backbone(progress=False, verbose=False)
    train, test = load_digit_pool("optdigits")
    acc = {}
    for name in ("head_ft", "mvp"):
        stream = SiBlurryStream(
            train.labels, SiBlurryConfig(num_tasks=1, batch_size=16, seed=1), images=train.images
        )
        torch.manual_seed(1)
        model = build_model(METHODS[name], pre.backbone(), 10)
        res = OnlineLearner(model, LearnerConfig(online_iter=3, lr=5e-3)).run(
            stream, test.images, test.labels
        )
        acc[name] = res.a_last
    assert acc["mvp"] > acc["head_ft"] + 0.05, acc
