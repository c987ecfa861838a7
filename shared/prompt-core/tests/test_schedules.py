"""polyprompt.core.schedules: the one warm-up + cosine factor."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from polyprompt.core.schedules import warmup_cosine


def test_warmup_cosine_ramps_then_decays_to_zero():
    factors = [warmup_cosine(s, warmup=4, total=20) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and all(a >= b for a, b in itertools.pairwise(factors[4:]))
    assert warmup_cosine(20, warmup=4, total=20) == pytest.approx(0.0)
    assert warmup_cosine(12, warmup=4, total=20) == pytest.approx(0.5)  # half-way: cos(pi/2)
    assert warmup_cosine(99, warmup=4, total=20) == pytest.approx(0.0)  # clamped past the end


def test_warmup_cosine_without_warmup_or_cosine():
    assert warmup_cosine(0, warmup=0, total=10) == 1.0
    assert warmup_cosine(5, warmup=0, total=10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
    assert [warmup_cosine(s, 2, 10, cosine=False) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


def test_warmup_cosine_drives_lambda_lr():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, 2, 6))
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.05, 0.1, 0.1, 0.0854, 0.05, 0.0146], abs=1e-4)
