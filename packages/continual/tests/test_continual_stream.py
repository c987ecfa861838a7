"""Si-Blurry stream: invariants (hypothesis), presets, resume, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyprompt.continual.stream import SiBlurryConfig, SiBlurryStream, build_schedule
from polyprompt.core.errors import ConfigError, InputError, ShapeError

pools = st.tuples(
    st.integers(2, 12),  # classes
    st.integers(1, 15),  # samples per class
    st.integers(1, 6),  # tasks
    st.sampled_from([0.0, 30.0, 50.0, 100.0]),  # N
    st.sampled_from([0.0, 10.0, 50.0]),  # M
    st.booleans(),  # stochastic
    st.integers(0, 2**16),  # seed
    st.integers(1, 9),  # batch size
)


def _labels(n_cls: int, per: int) -> np.ndarray:
    return np.repeat(np.arange(n_cls), per)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pools)
def test_every_sample_exactly_once_and_class_groups(p):
    n_cls, per, t, n, m, stoch, seed, bs = p
    y = _labels(n_cls, per)
    cfg = SiBlurryConfig(num_tasks=t, disjoint_percent=n, blurry_percent=m, batch_size=bs,
                         stochastic=stoch, seed=seed)  # fmt: skip
    sch = build_schedule(y, cfg)
    assert sorted(sch.order.tolist()) == list(range(len(y)))  # a permutation: once each
    disjoint = [c for cs in sch.disjoint_classes for c in cs]
    blurry = [c for cs in sch.blurry_classes for c in cs]
    assert len(disjoint) == int(n_cls * n // 100)  # N % of the classes are disjoint
    assert sorted(disjoint + blurry) == list(range(n_cls))
    # a disjoint class appears in its own task only
    for i, cs in enumerate(sch.disjoint_classes):
        for c in cs:
            tasks = set(sch.task_of[y[sch.order] == c].tolist())
            assert tasks == {i}
    # M % of the blurry-class samples moved, each to a task that is not its home
    n_blurry_samples = int(np.isin(y, blurry).sum())
    if t > 1 and stoch:
        assert len(sch.blurred) == int(n_blurry_samples * m // 100)
    home = {c: i for i, cs in enumerate(sch.blurry_classes) for c in cs}
    pos = {int(s): k for k, s in enumerate(sch.order)}
    if stoch:
        for s in sch.blurred.tolist():
            assert sch.task_of[pos[s]] != home[int(y[s])]
    # unmoved blurry samples stay home
    moved = set(sch.blurred.tolist())
    for s in np.flatnonzero(np.isin(y, blurry)).tolist():
        if s not in moved:
            assert sch.task_of[pos[s]] == home[int(y[s])]
    assert sch.task_ends[-1] == len(y)
    assert (np.diff(sch.task_of) >= 0).all()  # tasks delivered one after the other


@settings(max_examples=12, deadline=None)
@given(pools)
def test_batches_cover_the_stream_once_and_never_span_tasks(p):
    n_cls, per, t, n, m, stoch, seed, bs = p
    y = _labels(n_cls, per)
    cfg = SiBlurryConfig(num_tasks=t, disjoint_percent=n, blurry_percent=m, batch_size=bs,
                         stochastic=stoch, seed=seed)  # fmt: skip
    stream = SiBlurryStream(y, cfg)
    n_batches = len(stream)
    seen = []
    batches = list(stream)
    assert len(batches) == n_batches
    for b in batches:
        assert 1 <= len(b) <= bs
        tasks = {stream.task_of_position(b.start + k) for k in range(len(b))}
        assert len(tasks) == 1
        assert b.labels.tolist() == y[b.indices.numpy()].tolist()
        seen += b.indices.tolist()
    assert sorted(seen) == list(range(len(y)))
    assert list(stream) == []  # one pass: exhausted


@settings(max_examples=10, deadline=None)
@given(pools)
def test_reproducible_by_seed(p):
    n_cls, per, t, n, m, stoch, seed, bs = p
    y = _labels(n_cls, per)
    kw = dict(num_tasks=t, disjoint_percent=n, blurry_percent=m, batch_size=bs, stochastic=stoch)
    a = build_schedule(y, SiBlurryConfig(seed=seed, **kw))
    b = build_schedule(y, SiBlurryConfig(seed=seed, **kw))
    assert np.array_equal(a.order, b.order) and a.disjoint_classes == b.disjoint_classes


def test_different_seeds_differ_and_stochastic_flag_is_honoured():
    y = _labels(20, 10)
    a = build_schedule(y, SiBlurryConfig(seed=0))
    b = build_schedule(y, SiBlurryConfig(seed=1))
    assert not np.array_equal(a.order, b.order)
    fixed = build_schedule(y, SiBlurryConfig(seed=3, stochastic=False, num_tasks=5))
    assert [len(c) for c in fixed.disjoint_classes] == [2] * 5  # equal splits when off
    assert [len(c) for c in fixed.blurry_classes] == [2] * 5
    sizes = {
        tuple(len(c) for c in build_schedule(y, SiBlurryConfig(seed=s)).disjoint_classes)
        for s in range(8)
    }
    assert len(sizes) > 1  # random cut points when on


def test_presets():
    y = _labels(10, 6)
    ci = build_schedule(y, SiBlurryConfig.preset("class_incremental", num_tasks=5))
    assert all(len(c) == 2 for c in ci.disjoint_classes) and not any(ci.blurry_classes)
    assert len(ci.blurred) == 0
    bl = build_schedule(y, SiBlurryConfig.preset("blurry", num_tasks=5, blurry_percent=20))
    assert not any(bl.disjoint_classes) and all(len(c) == 2 for c in bl.blurry_classes)
    assert len(bl.blurred) > 0
    with pytest.raises(ConfigError, match="unknown setting"):
        SiBlurryConfig.preset("nope")


def test_resume_continues_at_the_right_sample_even_mid_batch():
    y = _labels(6, 11)
    cfg = SiBlurryConfig(num_tasks=3, batch_size=4, seed=7)
    full = [b.indices.tolist() for b in SiBlurryStream(y, cfg)]
    flat = [i for b in full for i in b]
    for cut in (0, 5, 13, len(flat)):
        s = SiBlurryStream(y, cfg)
        s.position = cut  # interrupted after `cut` samples (may be inside a batch)
        state = s.state_dict()
        resumed = SiBlurryStream(y, cfg)
        resumed.load_state_dict(state)
        rest = [i for b in resumed for i in b.indices.tolist()]
        assert flat[:cut] + rest == flat  # nothing seen twice, nothing skipped
    # batches after a mid-batch resume point are the uninterrupted batches
    s = SiBlurryStream(y, cfg)
    s.load_state_dict({**s.state_dict(), "position": 5})
    got = [b.indices.tolist() for b in s]
    assert got[1:] == [b for b in full if flat.index(b[0]) >= 8]


def test_resume_state_from_another_stream_is_refused():
    y = _labels(6, 5)
    s = SiBlurryStream(y, SiBlurryConfig(seed=1, num_tasks=2))
    other = SiBlurryStream(y, SiBlurryConfig(seed=2, num_tasks=2))
    with pytest.raises(InputError, match="another stream"):
        other.load_state_dict(s.state_dict())
    with pytest.raises(InputError, match="position"):
        s.load_state_dict({**s.state_dict(), "position": 10_000})
    with pytest.raises(InputError, match="'position'"):
        s.load_state_dict({})


def test_stream_ending_mid_batch_and_drop_last():
    y = _labels(2, 5)  # 10 samples, one task, batch 4 -> 4, 4, 2
    s = SiBlurryStream(y, SiBlurryConfig(num_tasks=1, batch_size=4, disjoint_percent=0))
    assert [len(b) for b in s] == [4, 4, 2]
    d = SiBlurryStream(y, SiBlurryConfig(num_tasks=1, batch_size=4, drop_last=True))
    assert [len(b) for b in d] == [4, 4] and d.num_samples == 8


def test_images_travel_with_the_batches():
    y = _labels(3, 4)
    x = torch.arange(12, dtype=torch.float32).reshape(12, 1, 1, 1).expand(12, 1, 2, 2)
    s = SiBlurryStream(y, SiBlurryConfig(num_tasks=2, batch_size=5), images=x)
    for b in s:
        assert torch.equal(b.images[:, 0, 0, 0].long(), b.indices)


def test_bad_inputs():
    with pytest.raises(InputError, match="non-empty"):
        SiBlurryStream([], SiBlurryConfig())
    with pytest.raises(InputError, match="out of range"):
        SiBlurryStream([0, 1, 12], SiBlurryConfig(num_tasks=1), num_classes=10)
    with pytest.raises(InputError, match="negative"):
        build_schedule(np.array([0, -1]), SiBlurryConfig(num_tasks=1))
    with pytest.raises(InputError, match="integer"):
        build_schedule(np.array([0.5, 1.0]), SiBlurryConfig(num_tasks=1))
    with pytest.raises(ShapeError, match="images"):
        SiBlurryStream([0, 1], SiBlurryConfig(num_tasks=1), images=torch.zeros(3, 1, 2, 2))
    for bad in ({"num_tasks": 0}, {"disjoint_percent": 120}, {"batch_size": 0}, {"seed": -1}):
        with pytest.raises(ConfigError):
            SiBlurryConfig(**bad)
