"""Data: real watch windows, few-shot target split, normalisation, bad input, paper-format loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyprompt.core.errors import InputError, NonFiniteError, ShapeError
from polyprompt.timeseries.data import (
    ChannelNormalizer,
    DomainData,
    check_domains,
    few_shot_split,
    impute,
    load_adatime_csv,
    load_adatime_pt,
    load_aeon,
    sliding_windows,
    stack_series,
)


def test_watch_domains(watch):
    assert watch.X.shape[1:] == (6, 128) and watch.X.dtype == np.float32
    assert watch.num_classes == 7 and watch.num_domains == 10
    assert watch.channel_names == ["ax", "ay", "az", "wx", "wy", "wz"]
    assert len(np.unique(watch.group)) == 140  # one group per real recording
    for d in range(10):
        assert len(np.unique(watch.y[watch.domain == d])) == 7


def test_few_shot_split_by_recording(watch):
    tgt = watch.of_domains([0])
    shots, test = few_shot_split(tgt, 3, seed=0)
    assert len(shots) == 3 * 7 and np.bincount(shots.y).tolist() == [3] * 7
    assert not set(shots.group) & set(test.group)  # shots and test never share a recording
    shots2, _ = few_shot_split(tgt, 3, seed=1)
    assert not np.array_equal(shots.X, shots2.X)
    _, all_test = few_shot_split(tgt, 0, seed=0)
    assert len(all_test) == len(tgt)
    with pytest.raises(InputError, match="fewer than shots"):
        few_shot_split(tgt, 500, seed=0)


def test_normaliser_fitted_on_sources(watch):
    src = watch.subset(watch.domain != 0)
    norm = ChannelNormalizer().fit(src.X)
    z = norm.transform(src.X)
    np.testing.assert_allclose(z.mean(axis=(0, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(0, 2)), 1, atol=1e-3)
    with pytest.raises(ShapeError):
        norm.transform(src.X[:, :3])


def _tiny(y, d):
    n = len(y)
    return DomainData(
        np.zeros((n, 2, 8)), np.asarray(y), np.asarray(d), np.arange(n), ["a", "b"], ["s0", "s1"]
    )


def test_degenerate_domains():
    with pytest.raises(InputError, match="single class"):
        check_domains(_tiny([0, 0, 1, 0], [0, 0, 1, 1]), [0])
    with pytest.raises(InputError, match="1 window"):
        check_domains(_tiny([0, 1, 1], [0, 1, 1]), [0])
    check_domains(_tiny([0, 1, 1, 0], [0, 0, 1, 1]), [0, 1])


def test_ragged_short_and_nan():
    with pytest.raises(ShapeError, match="ragged"):
        stack_series([np.zeros((6, 100)), np.zeros((6, 90))])
    assert stack_series([np.zeros((6, 10))] * 3).shape == (3, 6, 10)
    with pytest.raises(ShapeError, match="shorter than one window"):
        sliding_windows(np.zeros((50, 6)), 128, 64)
    x = np.arange(20, dtype=float).reshape(2, 10)
    x[0, 3], x[1, 0] = np.nan, np.inf
    filled = impute(x)
    assert np.isfinite(filled).all() and filled[0, 3] == pytest.approx(3.0)


def _write_adatime(root, numpy: bool):
    rng = np.random.default_rng(0)
    for dom in ("2", "7"):
        for split, n in (("train", 12), ("test", 6)):
            x = rng.normal(size=(n, 32, 3)).astype("float32")  # AdaTime HAR files are (N, T, C)
            y = np.arange(n) % 3
            obj = (
                {"samples": x, "labels": y}
                if numpy
                else {"samples": torch.from_numpy(x), "labels": torch.from_numpy(y)}
            )
            torch.save(obj, root / f"{split}_{dom}.pt")


@pytest.mark.parametrize("numpy", [False, True])
def test_adatime_pt(tmp_path, numpy):
    _write_adatime(tmp_path, numpy)
    data = load_adatime_pt(tmp_path)
    assert data.X.shape == (36, 3, 32) and data.domain_names == ["2", "7"] and data.num_classes == 3
    shots, test = few_shot_split(data.of_domains([0]), 2, seed=0, by="split")
    assert len(shots) == 6 and len(test) == 6 and (test.group < 0).all()
    (tmp_path / "train_7.pt").unlink()
    with pytest.raises(InputError, match="missing"):
        load_adatime_pt(tmp_path, domains=["2", "7"])


def test_adatime_pt_nan(tmp_path):
    torch.save(
        {"samples": torch.full((4, 1, 16), float("nan")), "labels": torch.zeros(4)},
        tmp_path / "train_1.pt",
    )
    torch.save(
        {"samples": torch.zeros((4, 1, 16)), "labels": torch.zeros(4)}, tmp_path / "test_1.pt"
    )
    with pytest.raises(NonFiniteError, match="impute"):
        load_adatime_pt(tmp_path)
    assert np.isfinite(load_adatime_pt(tmp_path, nan_policy="impute").X).all()


def test_adatime_csv(tmp_path):
    rows = ["user,seg,activity,x,y,z"]
    for seg, (user, act) in enumerate([(1, "Walk"), (1, "Sit"), (2, "Walk"), (2, "Sit")]):
        rows += [f"{user},{seg},{act},{t},{-t},{seg}" for t in range(40)]
    path = tmp_path / "wisdm.csv"
    path.write_text("\n".join(rows))
    data = load_adatime_csv(
        path, window=16, stride=8, domain_col="user", series_col="seg", label_col="activity"
    )
    assert (
        data.X.shape == (16, 3, 16)
        and data.class_names == ["Sit", "Walk"]
        and data.domain_names == ["1", "2"]
    )
    with pytest.raises(InputError, match="lacks columns"):
        load_adatime_csv(path, domain_col="subject")
    with pytest.raises(ShapeError, match="shorter than one window"):
        load_adatime_csv(path, window=64, domain_col="user", series_col="seg", label_col="activity")


def test_aeon_bundled():
    train, test = load_aeon("BasicMotions")
    assert train.X.shape[1:] == (6, 100) and train.num_classes == 4 and len(test) > 0
    with pytest.raises(InputError, match="not bundled"):
        load_aeon("NoSuchSet")
