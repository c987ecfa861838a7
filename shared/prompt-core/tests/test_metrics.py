"""polyprompt.core.metrics: torchmetrics-backed metrics and the continual-learning ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polyprompt.core.errors import ConfigError, InputError, ShapeError
from polyprompt.core.metrics import (
    METRIC_NAMES,
    a_auc,
    a_last,
    build_metric,
    compute_metric,
    f_last,
    prepare_preds,
)

sk = pytest.importorskip("sklearn.metrics")


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    targets = torch.arange(60) % 4
    logits = torch.randn(60, 4, generator=g) + 1.5 * torch.nn.functional.one_hot(targets, 4)
    return logits, targets


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_build_metric_returns_torchmetrics_metric(name):
    import torchmetrics

    assert isinstance(build_metric(name, num_classes=3), torchmetrics.Metric)


def test_unknown_metric_lists_choices():
    with pytest.raises(ConfigError, match="macro_f1") as exc:
        build_metric("top5", num_classes=3)
    assert "top5" in str(exc.value)
    with pytest.raises(ConfigError, match="accuracy"):
        compute_metric("nope", torch.zeros(2, 2), torch.zeros(2))


def test_multiclass_needs_num_classes():
    with pytest.raises(ConfigError, match="num_classes"):
        build_metric("accuracy")
    with pytest.raises(ConfigError, match="task"):
        build_metric("accuracy", num_classes=3, task="multilabel")


def test_accuracy_from_logits(data):
    logits, targets = data
    want = float((logits.argmax(1) == targets).float().mean())
    assert compute_metric("accuracy", logits, targets) == pytest.approx(want)
    # class ids and lists work too
    assert compute_metric(
        "accuracy", logits.argmax(1).tolist(), targets.tolist(), 4
    ) == pytest.approx(want)


def test_macro_f1_matches_sklearn(data):
    logits, targets = data
    want = sk.f1_score(targets.numpy(), logits.argmax(1).numpy(), average="macro")
    assert compute_metric("macro_f1", logits, targets) == pytest.approx(want, abs=1e-6)


def test_quadratic_kappa_matches_sklearn(data):
    logits, targets = data
    preds = logits.argmax(1)
    want = sk.cohen_kappa_score(targets.numpy(), preds.numpy(), weights="quadratic")
    assert compute_metric("quadratic_kappa", preds, targets, 4) == pytest.approx(want, abs=1e-6)


def test_roc_auc_multiclass_and_binary_match_sklearn(data):
    logits, targets = data
    probs = logits.softmax(1).numpy()
    want = sk.roc_auc_score(targets.numpy(), probs, multi_class="ovr", average="macro")
    assert compute_metric("roc_auc", logits, targets) == pytest.approx(want, abs=1e-5)
    # binary: (N, 2) logits -> P(class 1); (N,) scores as they are
    yb = (targets > 1).long()
    lb = torch.stack([-logits[:, 2:].sum(1), logits[:, 2:].sum(1)], dim=1)
    want_b = sk.roc_auc_score(yb.numpy(), lb.softmax(1)[:, 1].numpy())
    assert compute_metric("roc_auc", lb, yb, task="binary") == pytest.approx(want_b, abs=1e-5)
    assert compute_metric("roc_auc", lb.softmax(1)[:, 1], yb, task="binary") == pytest.approx(
        want_b, abs=1e-5
    )


def test_roc_auc_rejects_class_ids(data):
    logits, targets = data
    with pytest.raises(InputError, match="scores"):
        compute_metric("roc_auc", logits.argmax(1), targets, 4)


def test_miou_hand_computed_and_ignore_index():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 1]])
    # IoU: class 0: |{(0,0)}| / |{(0,0),(0,1),(1,2)}| = 1/3; class 1: 3/4; class 2: 2/3
    want = (1 / 3 + 3 / 4 + 2 / 3) / 3
    assert compute_metric("miou", pred, target, 3) == pytest.approx(want, abs=1e-6)
    # logits (N, C, H, W) are arg-maxed over the class dim
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 2, 1).float()
    assert compute_metric("miou", logits, target) == pytest.approx(want, abs=1e-6)
    # pixels labelled 255 are ignored
    target_ign = target.clone()
    target_ign[1, 2] = 255
    want_ign = (1 / 2 + 3 / 4 + 2 / 2) / 3
    assert compute_metric("miou", pred, target_ign, 3, ignore_index=255) == pytest.approx(
        want_ign, abs=1e-6
    )


def test_compute_metric_bad_inputs(data):
    logits, targets = data
    with pytest.raises(ShapeError, match="dim 0"):
        compute_metric("accuracy", logits[:10], targets)
    with pytest.raises(InputError, match="empty"):
        compute_metric("accuracy", torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    bad = logits.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        compute_metric("accuracy", bad, targets)


def test_prepare_preds_softmax_only_for_logits():
    probs = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    assert torch.equal(prepare_preds("roc_auc", probs, torch.tensor([1, 0])), probs)
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    out = prepare_preds("roc_auc", logits, torch.tensor([0, 1]))
    assert torch.allclose(out, logits.softmax(1))
    assert prepare_preds("macro_f1", logits, torch.tensor([0, 1])).tolist() == [0, 1]


# -- continual learning ---------------------------------------------------------------
def test_a_auc_uniform_is_mean_like_si_blurry():
    accs = [10.0, 20.0, 40.0, 50.0]
    assert a_auc(accs) == pytest.approx(np.mean(accs))
    assert a_auc(accs, sample_counts=[500, 1000, 1500, 2000]) == pytest.approx(30.0)


def test_a_auc_nonuniform_hand_computed():
    # widths 100, 100, 200 over 400 samples
    assert a_auc([0.5, 0.7, 0.9], [100, 200, 400]) == pytest.approx((50 + 70 + 180) / 400)


def test_a_auc_errors():
    with pytest.raises(ShapeError):
        a_auc([])
    with pytest.raises(ShapeError, match="entries"):
        a_auc([0.1, 0.2], [10])
    with pytest.raises(InputError, match="increasing"):
        a_auc([0.1, 0.2], [10, 10])
    with pytest.raises(InputError, match="NaN"):
        a_auc([0.1, math.nan])


def test_a_last():
    assert a_last([0.9, 0.8, 0.7]) == pytest.approx(0.7)
    assert a_last(0.5) == 0.5
    with pytest.raises(ShapeError):
        a_last([])


def test_f_last_hand_computed():
    acc = [
        [0.80, 0.00, 0.00, 0.00],
        [0.60, 0.90, 0.00, 0.00],
        [0.70, 0.50, 0.60, 0.00],
        [0.40, 0.60, 0.65, 0.90],
    ]
    # class 0: max(0.8, 0.6, 0.7) - 0.4 = 0.4; class 1: 0.9 - 0.6 = 0.3;
    # class 2: 0.6 - 0.65 = -0.05 (it improved); class 3: never seen before -> excluded
    want = (0.4 + 0.3 - 0.05) / 3
    assert f_last(acc) == pytest.approx(want)
    assert f_last(torch.tensor(acc)) == pytest.approx(want)
    # same data as per-class history
    hist = {c: [row[c] for row in acc] for c in range(4)}
    assert f_last(hist) == pytest.approx(want)


def test_f_last_edge_cases():
    assert f_last([[0.5, 0.6]]) == 0.0  # a single evaluation: nothing to forget
    assert f_last([[0.0, 0.0], [0.3, 0.2]]) == 0.0  # nothing learned before the end
    assert f_last([[0.8, math.nan], [0.5, 0.9]]) == pytest.approx(0.3)  # NaN = not measured
    with pytest.raises(ShapeError):
        f_last([0.1, 0.2])
    with pytest.raises(ShapeError):
        f_last({0: [0.1, 0.2], 1: [0.3]})


def test_trainer_evaluates_with_torchmetrics_metric(data):
    """The Trainer accepts any metric name (torchmetrics under the hood)."""
    from torch.utils.data import TensorDataset

    from polyprompt.core.trainer import Trainer, TrainerConfig

    _, targets = data
    x = torch.randn(60, 4, generator=torch.Generator().manual_seed(1))
    model = torch.nn.Linear(4, 4)
    with torch.no_grad():
        want_logits = model(x)
    t = Trainer(TrainerConfig(batch_size=7, progress=False), metric="macro_f1")
    got = t.evaluate(model, TensorDataset(x, targets))["metric"]
    want = sk.f1_score(targets.numpy(), want_logits.argmax(1).numpy(), average="macro")
    assert got == pytest.approx(want, abs=1e-6)
