"""Online learner: protocol, metrics bookkeeping, replay, exact resume, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyprompt.continual.learner import LearnerConfig, OnlineLearner, ReservoirBuffer
from polyprompt.continual.method import MVP, MVPConfig
from polyprompt.continual.stream import SiBlurryConfig, SiBlurryStream
from polyprompt.core import create
from polyprompt.core.errors import InputError, ShapeError
from polyprompt.core.metrics import a_auc, f_last

C = 4


def _data(n_per: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(C).repeat_interleave(n_per)
    # class-dependent brightness so that there is something to learn
    x = torch.rand(len(y), 1, 16, 16, generator=g) * 0.3 + (y.float() / C)[:, None, None, None]
    return x, y


def _stream(x, y, seed=1, bs=4, tasks=2):
    cfg = SiBlurryConfig(num_tasks=tasks, batch_size=bs, seed=seed)
    return SiBlurryStream(y, cfg, images=x, num_classes=C)


def _mvp(make_backbone):
    torch.manual_seed(0)
    return MVP(make_backbone(), MVPConfig(num_classes=C, e_length=2, g_length=2, pool_size=3))


def test_protocol_records_curve_tasks_and_metrics(make_backbone):
    x, y = _data()
    stream = _stream(x, y)
    learner = OnlineLearner(_mvp(make_backbone), LearnerConfig(online_iter=2, eval_period=6))
    res = learner.run(stream, x, y)
    assert res.samples == len(y) and res.updates == 2 * len(list(_stream(x, y)))
    assert len(res.task_acc) == 2 and len(res.cls_acc) == 2
    assert res.curve_samples == sorted(res.curve_samples) and len(res.curve_acc) >= 3
    assert res.a_auc == pytest.approx(a_auc(res.curve_acc))
    assert res.a_last == pytest.approx(res.task_acc[-1])
    assert res.f_last == pytest.approx(f_last(res.cls_acc))
    assert sorted(learner.trained_indices) == list(range(len(y)))  # each sample once
    assert res.samples_per_second > 0


def test_seen_class_masking_in_evaluation(make_backbone):
    x, y = _data()
    learner = OnlineLearner(_mvp(make_backbone), LearnerConfig(online_iter=1))
    learner.observe(x[y == 0][:3], y[y == 0][:3])
    acc, per_class = learner.evaluate(x, y)
    # only class 0 is seen: it is the only possible prediction, so it is always right
    assert acc == 1.0 and per_class[0] == pytest.approx(1.0, abs=1e-4)
    assert per_class[1:] == [0.0] * (C - 1)


def test_test_classes_never_in_the_stream_are_reported_not_evaluated(make_backbone):
    x, y = _data()
    keep = y < 3  # class 3 never streamed
    stream = SiBlurryStream(y[keep], SiBlurryConfig(num_tasks=1, batch_size=6), images=x[keep])
    res = OnlineLearner(_mvp(make_backbone), LearnerConfig(online_iter=1)).run(stream, x, y)
    assert res.unseen_test_classes == [3]
    assert res.cls_acc[-1][3] == 0.0


def test_bad_inputs(make_backbone):
    x, y = _data()
    learner = OnlineLearner(_mvp(make_backbone), LearnerConfig(online_iter=1))
    assert learner.observe(x[:0], y[:0]) is None and learner.samples == 0  # empty: no-op
    with pytest.raises(InputError, match="out of range"):
        learner.observe(x[:2], torch.tensor([0, C]))
    with pytest.raises(InputError, match="integer"):
        learner.observe(x[:2], torch.tensor([0.0, 1.0]))
    with pytest.raises(ShapeError, match="channel|dim"):
        learner.observe(torch.rand(2, 3, 16, 16), y[:2])
    with pytest.raises(ShapeError, match="image size"):
        learner.observe(torch.rand(2, 1, 20, 20), y[:2])
    with pytest.raises(InputError, match="2 images but 3 labels"):
        learner.observe(x[:2], y[:3])
    with pytest.raises(InputError, match="test labels"):
        learner.run(_stream(x, y), x, y + C)
    with pytest.raises(InputError, match="no images"):
        learner.run(SiBlurryStream(y, SiBlurryConfig(num_tasks=1)), x, y)
    assert learner.samples == 0 and not learner.seen.any()  # nothing half-applied


def test_interrupted_run_resumes_exactly(tmp_path, make_backbone):
    x, y = _data()
    cfg = LearnerConfig(online_iter=2, eval_period=5, memory_size=4)
    ref = OnlineLearner(_mvp(make_backbone), cfg).run(_stream(x, y), x, y)

    ckpt = tmp_path / "learner.pt"
    first = OnlineLearner(_mvp(make_backbone), cfg)
    first.run(_stream(x, y), x, y, checkpoint=ckpt, stop_after=3)  # "crash" after 3 batches
    resumed = OnlineLearner(_mvp(make_backbone), cfg)
    stream = _stream(x, y)
    resumed.load(ckpt, stream)
    assert stream.position == first.samples > 0
    res = resumed.run(stream, x, y)
    assert sorted(resumed.trained_indices) == list(range(len(y)))  # nothing seen twice
    assert res.curve_acc == pytest.approx(ref.curve_acc)
    assert res.task_acc == pytest.approx(ref.task_acc)
    assert res.updates == ref.updates


def test_resume_on_another_stream_is_refused(tmp_path, make_backbone):
    x, y = _data()
    learner = OnlineLearner(_mvp(make_backbone), LearnerConfig(online_iter=1))
    learner.run(_stream(x, y), x, y, checkpoint=tmp_path / "l.pt", stop_after=1)
    other = OnlineLearner(_mvp(make_backbone), LearnerConfig(online_iter=1))
    with pytest.raises(InputError, match="another stream"):
        other.load(tmp_path / "l.pt", _stream(x, y, seed=9))


def test_baselines_run_head_only_and_replay(make_backbone):
    x, y = _data()
    head = create("linear_probe", make_backbone(), num_classes=C)
    frozen = {n: p.clone() for n, p in head.backbone.named_parameters()}
    OnlineLearner(head, LearnerConfig(online_iter=1)).run(_stream(x, y), x, y)
    assert all(torch.equal(p, frozen[n]) for n, p in head.backbone.named_parameters())
    er = create("full_finetune", make_backbone(), num_classes=C)
    learner = OnlineLearner(er, LearnerConfig(online_iter=1, memory_size=5, lr=1e-3))
    learner.run(_stream(x, y), x, y)
    assert len(learner.memory) == 5 and learner.memory.offered == len(y)


def test_reservoir_is_uniform():
    counts = np.zeros(20)
    for s in range(300):
        buf = ReservoirBuffer(5, torch.Generator().manual_seed(s))
        buf.add(torch.arange(20))
        counts[buf.items] += 1
    # each index kept with probability 5/20
    assert np.allclose(counts / 300, 0.25, atol=0.1)
