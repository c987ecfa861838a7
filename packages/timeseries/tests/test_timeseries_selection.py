"""Source selection from the two prompt criteria."""

from __future__ import annotations

import torch

from polyprompt.core import create
from polyprompt.timeseries.selection import combine_criteria, prompt_criteria, select_source


def test_combine_criteria():
    assert combine_criteria([0.1, 0.9], [-1.0, -2.0], "similarity") == [0.1, 0.9]
    assert combine_criteria([0.1, 0.9], [-1.0, -2.0], "fidelity") == [-1.0, -2.0]
    both = combine_criteria([0.0, 1.0, 0.5], [-3.0, -1.0, -2.0])
    assert max(range(3), key=both.__getitem__) == 1
    assert combine_criteria([1, 1], [0, 0]) == [0.0, 0.0]  # constant criteria: no preference


def test_select_source_picks_the_copied_source(tst_config):
    torch.manual_seed(0)
    m = create("pond", tst_config.build(), num_classes=3, num_sources=3, num_tokens=2)
    with torch.no_grad():
        for i in range(3):
            m.domain_prompts[i].normal_()
    m.init_target_from(2)  # the target's prompt is a copy of source 2's
    x, y = torch.randn(9, 6, 128), torch.arange(9) % 3
    sim, _fid = prompt_criteria(m, x, y)
    assert max(range(3), key=sim.__getitem__) == 2 and abs(sim[2] - 1) < 1e-5
    assert select_source(m, x, y, criterion="similarity").chosen == 2
    res = select_source(m, x, None)  # unsupervised: fidelity = -entropy
    assert len(res.score) == 3 and 0 <= res.chosen < 3


def test_fidelity_rewards_the_source_that_fits_the_target_labels(tst_config):
    torch.manual_seed(1)
    m = create("pond", tst_config.build(), num_classes=3, num_sources=3, num_tokens=2)
    with torch.no_grad():
        for i in range(3):
            m.domain_prompts[i].normal_(std=3.0)
        m.head.weight.mul_(50.0)  # sharp predictions
    m.eval()
    x = torch.randn(12, 6, 128)
    with torch.no_grad():
        y = m(x, 1).argmax(-1)  # the shots' labels are what source 1's prompt predicts
        others = [m(x, i).argmax(-1) for i in (0, 2)]
    assert all((o != y).any() for o in others)  # the sources disagree somewhere
    _sim, fid = prompt_criteria(m, x, y)
    assert max(range(3), key=fid.__getitem__) == 1  # fidelity = -CE: higher is better
    assert select_source(m, x, y, criterion="fidelity").chosen == 1
