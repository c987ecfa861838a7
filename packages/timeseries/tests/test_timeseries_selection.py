"""Source selection from the two prompt criteria."""

from __future__ import annotations

import pytest
import torch

from polyprompt.core import create
from polyprompt.core.errors import InputError
from polyprompt.timeseries.selection import (
    class_centroid_similarity,
    combine_criteria,
    prompt_criteria,
    select_source,
)


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
    sim, _fid = prompt_criteria(m, x, y, similarity="prompt_cosine")
    assert max(range(3), key=sim.__getitem__) == 2 and abs(sim[2] - 1) < 1e-5
    assert select_source(m, x, y, criterion="similarity", similarity="prompt_cosine").chosen == 2
    res = select_source(m, x, None, similarity="prompt_cosine")  # unsupervised: fidelity = -entropy
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
    _sim, fid = prompt_criteria(m, x, y, similarity="prompt_cosine")
    assert max(range(3), key=fid.__getitem__) == 1  # fidelity = -CE: higher is better
    assert select_source(m, x, y, criterion="fidelity").chosen == 1


def _sources_like(m, x_by_source, y):
    xs = torch.cat(x_by_source)
    ys = torch.cat([y] * len(x_by_source))
    ds = torch.cat([torch.full((len(y),), i) for i in range(len(x_by_source))])
    return xs, ys, ds


def test_class_centroid_similarity_prefers_the_source_whose_windows_match_the_target(tst_config):
    torch.manual_seed(2)
    m = create("pond", tst_config.build(), num_classes=3, num_sources=3, num_tokens=2)
    y = torch.arange(12) % 3
    base = torch.randn(12, 6, 128)
    # source 1 holds (noisy copies of) the target's windows, sources 0 and 2 other series
    sources = [torch.randn(12, 6, 128) * 2 + 1, base + 0.05 * torch.randn(12, 6, 128),
               torch.randn(12, 6, 128) * 2 - 1]  # fmt: skip
    src = _sources_like(m, sources, y)
    sim = class_centroid_similarity(m, base, y, *src)
    assert len(sim) == 3 and all(v <= 0 for v in sim)
    assert max(range(3), key=sim.__getitem__) == 1
    assert select_source(m, base, y, criterion="similarity", sources=src).chosen == 1
    # without target labels the classes come from source i's own predictions: still source 1
    assert max(range(3), key=class_centroid_similarity(m, base, None, *src).__getitem__) == 1
    # shuffling the source labels breaks the class match: source 1 is no longer at distance ~0
    shuffled = (
        src[0],
        src[1][torch.randperm(len(src[1]), generator=torch.Generator().manual_seed(0))],
        src[2],
    )
    assert class_centroid_similarity(m, base, y, *shuffled)[1] < sim[1]


def test_class_centroid_similarity_needs_source_windows(tst_config):
    m = create("pond", tst_config.build(), num_classes=3, num_sources=2, num_tokens=2)
    x, y = torch.randn(6, 6, 128), torch.arange(6) % 3
    with pytest.raises(InputError, match="needs the labelled source windows"):
        prompt_criteria(m, x, y)
    xs, ys = torch.randn(6, 6, 128), torch.arange(6) % 3
    with pytest.raises(InputError, match="source 1 has no windows"):
        class_centroid_similarity(m, x, y, xs, ys, torch.zeros(6, dtype=torch.long))
    with pytest.raises(InputError, match="6 source windows but 5 labels"):
        class_centroid_similarity(m, x, y, xs, ys[:5], torch.zeros(6, dtype=torch.long))
    # fidelity alone needs no source windows
    assert 0 <= select_source(m, x, y, criterion="fidelity").chosen < 2
