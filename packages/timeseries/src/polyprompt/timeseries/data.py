"""Multi-domain time-series data: windows, domains, normalisation, few-shot target splits.

Every loader returns a :class:`DomainData`: windows ``X`` ``(N, C, T)`` (float32, tsai's
channel-first layout), labels ``y`` ``(N,)``, a domain index per window (a subject / user /
machine condition) and a *group* per window (the recording it was cut from, so that the
few-shot target shots and the target test windows never come from the same recording).

Loaders:

* :func:`load_watch` — seglearn ``load_watch()``: 140 real smartwatch IMU recordings
  (6 channels: 3-axis accelerometer + gyroscope; 7 shoulder-rehabilitation exercises;
  10 subjects, 2 recordings per subject and class). Subjects are the domains.
* :func:`load_aeon` — a UCR/UEA set bundled with aeon (single domain; for single-domain checks).
* :func:`load_adatime_pt` — the AdaTime layout of POND's datasets (UCIHAR, HHAR, WISDM,
  Sleep-EDF (SSC), MFD): ``<root>/train_<domain>.pt`` / ``test_<domain>.pt``, each a dict
  ``{"samples": (N, C, T) or (N, T, C) or (N, T), "labels": (N,)}`` (AdaTime README,
  "Structure of data").
* :func:`load_adatime_csv` — long CSV with one row per time step (``domain, series, label,
  channels...``; the layout of the raw WISDM / HHAR files), windowed here.

Bad input (ragged lengths, NaN / inf, too-short series, degenerate domains) raises our
errors, naming the recording / file.

Example::

    >>> data = load_watch(window=128, stride=64)        # doctest: +SKIP
    >>> data.X.shape[1:], data.num_classes, data.num_domains  # doctest: +SKIP
    ((6, 128), 7, 10)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from polyprompt.core.errors import InputError, NonFiniteError, ShapeError

__all__ = [
    "ChannelNormalizer",
    "DomainData",
    "NanPolicy",
    "check_domains",
    "few_shot_split",
    "impute",
    "load_adatime_csv",
    "load_adatime_pt",
    "load_aeon",
    "load_watch",
    "sliding_windows",
    "stack_series",
]


class NanPolicy(str, Enum):
    """What to do with NaN / inf values: ``RAISE`` (default) or ``IMPUTE`` (linear interpolation
    along time, edges filled with the nearest finite value, all-missing channels with 0)."""

    RAISE = "raise"
    IMPUTE = "impute"


@dataclass
class DomainData:
    """Windows of several domains.

    Attributes:
        X: ``(N, C, T)`` float32 windows.
        y: ``(N,)`` int64 class indices in ``[0, len(class_names))``.
        domain: ``(N,)`` int64 domain indices in ``[0, len(domain_names))``.
        group: ``(N,)`` int64 recording index of each window (windows of one recording share it).
        class_names, domain_names, channel_names: names.
        name: data set name.
    """

    X: np.ndarray
    y: np.ndarray
    domain: np.ndarray
    group: np.ndarray
    class_names: list[str]
    domain_names: list[str]
    channel_names: list[str] = field(default_factory=list)
    name: str = "data"

    def __post_init__(self) -> None:
        where = f"DomainData({self.name!r})"
        if self.X.ndim != 3:
            raise ShapeError(f"{where}: X must be (N, C, T), got shape {self.X.shape}")
        n = len(self.X)
        for attr in ("y", "domain", "group"):
            arr = getattr(self, attr)
            if arr.shape != (n,):
                raise ShapeError(f"{where}: {attr} must have shape ({n},), got {arr.shape}")
        self.X = np.ascontiguousarray(self.X, dtype=np.float32)
        self.y = self.y.astype(np.int64)
        self.domain = self.domain.astype(np.int64)
        self.group = self.group.astype(np.int64)
        if not self.channel_names:
            self.channel_names = [f"c{i}" for i in range(self.X.shape[1])]

    def __len__(self) -> int:
        return len(self.X)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_domains(self) -> int:
        return len(self.domain_names)

    @property
    def num_channels(self) -> int:
        return int(self.X.shape[1])

    @property
    def seq_len(self) -> int:
        return int(self.X.shape[2])

    def subset(self, mask: np.ndarray) -> DomainData:
        """Windows where ``mask`` (bool ``(N,)`` or indices) selects; names kept."""
        return DomainData(
            self.X[mask], self.y[mask], self.domain[mask], self.group[mask],
            list(self.class_names), list(self.domain_names), list(self.channel_names), self.name,
        )  # fmt: skip

    def of_domains(self, domains: Sequence[int]) -> DomainData:
        return self.subset(np.isin(self.domain, np.asarray(list(domains))))

    def fingerprint(self) -> str:
        """sha256 (16 hex) of the windows, labels and domains (part of cache keys)."""
        h = hashlib.sha256()
        for arr in (self.X, self.y, self.domain):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(repr((self.class_names, self.domain_names)).encode())
        return h.hexdigest()[:16]

    def tensors(self, domain_ids: np.ndarray | None = None) -> tuple[Any, ...]:
        """``(x (N, C, T) float32, y (N,), d (N,))`` torch tensors (``d`` remapped if given)."""
        import torch

        d = self.domain if domain_ids is None else domain_ids
        return torch.from_numpy(self.X), torch.from_numpy(self.y), torch.from_numpy(d)


# --------------------------------------------------------------------------- validation
def impute(series: np.ndarray) -> np.ndarray:
    """Fill NaN / inf along the last axis by linear interpolation (edges: nearest value;
    a channel with no finite value: 0). Shape kept; input not modified."""
    arr = np.array(series, dtype=np.float64, copy=True)
    flat = arr.reshape(-1, arr.shape[-1])
    t = np.arange(flat.shape[1])
    for row in flat:
        ok = np.isfinite(row)
        if ok.all():
            continue
        row[:] = np.interp(t, t[ok], row[ok]) if ok.any() else 0.0
    return flat.reshape(arr.shape).astype(np.float32)


def _finite(arr: np.ndarray, policy: NanPolicy, what: str) -> np.ndarray:
    if np.isfinite(arr).all():
        return arr
    if NanPolicy(policy) is NanPolicy.IMPUTE:
        return impute(arr)
    bad = int((~np.isfinite(arr)).sum())
    raise NonFiniteError(
        f"{what}: {bad} NaN/inf values; clean the data or pass nan_policy='impute' "
        "(linear interpolation along time)"
    )


def stack_series(series: Sequence[Any], where: str = "stack_series") -> np.ndarray:
    """Stack equal-length series ``(C, T)`` into a batch ``(B, C, T)``; ragged lengths or
    channel counts raise :class:`ShapeError` naming the first offending item."""
    if len(series) == 0:
        raise InputError(f"{where}: empty batch")
    arrs = [np.asarray(s, dtype=np.float32) for s in series]
    ref = arrs[0].shape
    for i, a in enumerate(arrs):
        if a.ndim != 2:
            raise ShapeError(f"{where}: item {i} must be (C, T), got shape {a.shape}")
        if a.shape != ref:
            raise ShapeError(
                f"{where}: ragged batch: item {i} has shape (C, T) = {a.shape}, item 0 has {ref}; "
                "window or pad the series to one length first"
            )
    return np.stack(arrs)


def sliding_windows(
    series: np.ndarray, window: int, stride: int, *, where: str = "sliding_windows"
) -> np.ndarray:
    """``(T, C)`` series -> ``(W, C, window)`` windows every ``stride`` steps.

    Raises ShapeError if the series is shorter than one window.
    """
    if series.ndim != 2:
        raise ShapeError(f"{where}: a series must be (T, C), got shape {series.shape}")
    t = series.shape[0]
    if t < window:
        raise ShapeError(f"{where}: series of length {t} is shorter than one window ({window})")
    starts = range(0, t - window + 1, stride)
    return np.stack([series[s : s + window].T for s in starts]).astype(np.float32)


def check_domains(data: DomainData, domains: Sequence[int], role: str = "source") -> None:
    """Each listed domain needs >= 2 windows and >= 2 classes; otherwise InputError."""
    for d in domains:
        m = data.domain == d
        n = int(m.sum())
        name = data.domain_names[d] if 0 <= d < data.num_domains else str(d)
        if n < 2:
            raise InputError(
                f"{role} domain {name!r} of {data.name!r} has {n} window(s); need at least 2"
            )
        k = len(np.unique(data.y[m]))
        if k < 2:
            raise InputError(
                f"{role} domain {name!r} of {data.name!r} has a single class "
                f"({data.class_names[int(data.y[m][0])]!r}); need at least 2 classes"
            )


class ChannelNormalizer:
    """Per-channel z-scoring with statistics fitted on the *source* windows only.

    Example::

        >>> x = np.random.default_rng(0).normal(3, 2, size=(50, 2, 16)).astype("float32")
        >>> norm = ChannelNormalizer().fit(x)
        >>> bool(abs(norm.transform(x).mean()) < 1e-5)
        True
    """

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = eps
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> ChannelNormalizer:
        self.mean = X.mean(axis=(0, 2), keepdims=True).astype(np.float32)
        self.std = (X.std(axis=(0, 2), keepdims=True) + self.eps).astype(np.float32)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self.mean is None or self.std is None:
            raise InputError("ChannelNormalizer.transform: call fit() on the source windows first")
        if X.shape[1] != self.mean.shape[1]:
            raise ShapeError(
                f"ChannelNormalizer.transform: {X.shape[1]} channels, fitted on {self.mean.shape[1]}"
            )
        return ((X - self.mean) / self.std).astype(np.float32)

    def apply(self, data: DomainData) -> DomainData:
        out = data.subset(np.arange(len(data)))
        out.X = self.transform(data.X)
        return out


def few_shot_split(
    target: DomainData, shots: int, seed: int, *, by: str = "recording"
) -> tuple[DomainData, DomainData]:
    """Split a target domain into ``shots`` labelled windows per class and a test set.

    ``by="recording"`` (default): for each class one recording is drawn (seeded) as the
    labelled pool and its ``shots`` windows are drawn from it; the test set is every window of
    the *other* recordings of that class, so no test window overlaps a labelled one.
    ``by="window"``: ``shots`` random windows per class, the rest is the test set.
    ``by="split"``: AdaTime files: shots are drawn from the ``train_<domain>.pt`` windows
    (``group >= 0``), the test set is the ``test_<domain>.pt`` file (``group < 0``).
    ``shots=0``: no labels (unsupervised target), every window is a test window (every
    ``test`` window for ``by="split"``).

    Raises InputError if a class has too few recordings / windows.
    """
    rng = np.random.default_rng(seed)
    if shots == 0:
        test_mask = target.group < 0 if by == "split" else np.ones(len(target), bool)
        return target.subset(np.zeros(len(target), bool)), target.subset(test_mask)
    train = np.zeros(len(target), bool)
    test = np.zeros(len(target), bool)
    for c in np.unique(target.y):
        idx = np.flatnonzero(target.y == c)
        if by == "recording":
            groups = np.unique(target.group[idx])
            if len(groups) < 2:
                raise InputError(
                    f"few_shot_split: class {target.class_names[c]!r} of the target has "
                    f"{len(groups)} recording; need >= 2 for by='recording' (or use by='window')"
                )
            g = rng.choice(groups)
            pool = idx[target.group[idx] == g]
            test[idx[target.group[idx] != g]] = True
        elif by == "window":
            pool = idx
        elif by == "split":
            pool = idx[target.group[idx] >= 0]
            test[idx[target.group[idx] < 0]] = True
        else:
            raise InputError(
                f"few_shot_split: by must be 'recording', 'window' or 'split', got {by!r}"
            )
        if len(pool) < shots + (1 if by == "window" else 0):
            raise InputError(
                f"few_shot_split: class {target.class_names[c]!r} has {len(pool)} windows in its "
                f"labelled pool, fewer than shots={shots}"
            )
        pick = rng.choice(pool, size=shots, replace=False)
        train[pick] = True
        if by == "window":
            test[np.setdiff1d(idx, pick)] = True
    return target.subset(train), target.subset(test)


# --------------------------------------------------------------------------- loaders
def _from_recordings(
    recordings: Sequence[np.ndarray],
    labels: Sequence[int],
    domains: Sequence[Any],
    *,
    window: int,
    stride: int,
    name: str,
    class_names: list[str],
    channel_names: list[str] | None = None,
    nan_policy: NanPolicy | str = NanPolicy.RAISE,
) -> DomainData:
    domain_names = sorted({str(d) for d in domains}, key=_natural)
    index = {d: i for i, d in enumerate(domain_names)}
    xs, ys, ds, gs = [], [], [], []
    c0 = None
    for r, (rec, lab, dom) in enumerate(zip(recordings, labels, domains, strict=True)):
        where = f"{name}: recording {r} (domain {dom}, class {class_names[int(lab)]})"
        rec = np.asarray(rec, dtype=np.float64)
        if rec.ndim == 1:
            rec = rec[:, None]
        if c0 is None:
            c0 = rec.shape[1]
        if rec.shape[1] != c0:
            raise ShapeError(f"{where}: has {rec.shape[1]} channels, recording 0 has {c0}")
        rec = _finite(rec.T, NanPolicy(nan_policy), where).T
        w = sliding_windows(rec, window, stride, where=where)
        xs.append(w)
        ys.append(np.full(len(w), int(lab)))
        ds.append(np.full(len(w), index[str(dom)]))
        gs.append(np.full(len(w), r))
    return DomainData(
        np.concatenate(xs), np.concatenate(ys), np.concatenate(ds), np.concatenate(gs),
        class_names, domain_names, channel_names or [], name,
    )  # fmt: skip


def _natural(s: str) -> tuple:
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def load_watch(
    window: int = 128, stride: int = 64, *, nan_policy: NanPolicy | str = NanPolicy.RAISE
) -> DomainData:
    """seglearn's real smartwatch data, cut into windows; domains = the 10 subjects.

    ``seglearn.datasets.load_watch()``: 140 recordings (6 channels ``ax ay az wx wy wz``,
    947-2618 steps each), 7 exercise classes, 10 subjects x 7 classes x 2 recordings.
    """
    from seglearn.datasets import load_watch as _load

    raw = _load()
    return _from_recordings(
        raw["X"], raw["y"], [int(s) for s in raw["subject"]],
        window=window, stride=stride, name="watch", class_names=list(raw["y_labels"]),
        channel_names=list(raw["X_labels"]), nan_policy=nan_policy,
    )  # fmt: skip


def load_aeon(name: str = "BasicMotions", *, nan_policy: NanPolicy | str = NanPolicy.RAISE):
    """A UCR/UEA set bundled with aeon (no download) as ``(train, test)`` single-domain data.

    The whole series is one window (``T`` = the set's length); domain 0 = train split's
    source. Ragged sets (e.g. JapaneseVowels) raise ShapeError.
    """
    import aeon
    from aeon.datasets import load_from_ts_file

    folder = Path(aeon.__file__).parent / "datasets" / "data" / name
    if not folder.is_dir():
        avail = sorted(p.name for p in folder.parent.iterdir() if p.is_dir())
        raise InputError(f"load_aeon: {name!r} is not bundled with aeon; bundled: {avail}")
    out = []
    classes: list[str] | None = None
    for split in ("TRAIN", "TEST"):
        X, y = load_from_ts_file(str(folder / f"{name}_{split}.ts"))
        if isinstance(X, list):
            lengths = sorted({x.shape[-1] for x in X})
            raise ShapeError(
                f"load_aeon({name!r}): ragged lengths {lengths[:5]}...; pad or window first"
            )
        X = _finite(np.asarray(X, dtype=np.float64), NanPolicy(nan_policy), f"load_aeon({name})")
        if classes is None:
            classes = sorted({str(v) for v in y}, key=_natural)
        idx = {c: i for i, c in enumerate(classes)}
        labels = np.array([idx[str(v)] for v in y])
        n = len(X)
        out.append(DomainData(X, labels, np.zeros(n), np.arange(n), classes, [name], name=name))
    return out[0], out[1]


def _to_numpy(v: Any) -> np.ndarray:
    import torch

    if isinstance(v, torch.Tensor):
        return v.detach().cpu().numpy()
    return np.asarray(v)


def _load_pt(path: Path) -> Any:
    import torch

    from polyprompt.core.errors import CheckpointError

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # numpy arrays need an allow-list, never full unpickling
        try:
            np_core = np.core if hasattr(np, "core") else np._core  # type: ignore[attr-defined]
            allowed = [np_core.multiarray._reconstruct, np.ndarray, np.dtype]
            allowed += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32")]
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise CheckpointError(
                f"load_adatime_pt: {path} is not a weights-only torch file of tensors / numpy "
                f"arrays ({type(first).__name__}: {str(first)[:200]})"
            ) from None


def load_adatime_pt(
    root: str | Path,
    domains: Sequence[str] | None = None,
    *,
    channels: int | None = None,
    splits: Sequence[str] = ("train", "test"),
    class_names: Sequence[str] | None = None,
    nan_policy: NanPolicy | str = NanPolicy.RAISE,
) -> DomainData:
    """AdaTime's preprocessed layout: ``root/{train,test}_<domain>.pt`` -> one :class:`DomainData`.

    Each file is ``{"samples": (N, C, T) | (N, T, C) | (N, T), "labels": (N,)}`` (tensors or
    numpy arrays). Like AdaTime's ``Load_Dataset``, rank-2 samples get one channel and
    ``(N, T, C)`` is transposed when ``channels`` (or, if ``None``, the smaller of the two
    trailing sizes) is the last axis. Each window is its own group (AdaTime files hold windows,
    not recordings); the split is kept in ``group`` sign: train windows >= 0, test < 0.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"load_adatime_pt: {root} is not a folder")
    if domains is None:
        found = {
            p.stem.split("_", 1)[1] for p in root.glob("*_*.pt") if p.stem.split("_")[0] in splits
        }
        domains = sorted(found, key=_natural)
    if not domains:
        raise InputError(f"load_adatime_pt: no {list(splits)}_<domain>.pt files in {root}")
    xs, ys, ds, gs = [], [], [], []
    counter = 0
    for di, dom in enumerate(domains):
        for split in splits:
            path = root / f"{split}_{dom}.pt"
            if not path.is_file():
                raise InputError(f"load_adatime_pt: missing {path}")
            obj = _load_pt(path)
            if not isinstance(obj, dict) or "samples" not in obj or "labels" not in obj:
                raise InputError(
                    f"load_adatime_pt: {path} must hold a dict with 'samples' and 'labels'"
                )
            x = _to_numpy(obj["samples"]).astype(np.float64)
            y = _to_numpy(obj["labels"]).astype(np.int64).reshape(-1)
            if x.ndim == 2:
                x = x[:, None, :]
            if x.ndim != 3:
                raise ShapeError(
                    f"load_adatime_pt: {path} samples must be rank 2 or 3, got {x.shape}"
                )
            c = channels if channels is not None else min(x.shape[1:])
            if x.shape[1] != c and x.shape[2] == c:
                x = x.transpose(0, 2, 1)
            if x.shape[1] != c:
                raise ShapeError(
                    f"load_adatime_pt: {path} samples {x.shape} have no axis of {c} channels"
                )
            if len(y) != len(x):
                raise ShapeError(f"load_adatime_pt: {path}: {len(x)} samples but {len(y)} labels")
            x = _finite(x, NanPolicy(nan_policy), f"load_adatime_pt: {path}")
            if xs and x.shape[1:] != xs[0].shape[1:]:
                raise ShapeError(
                    f"load_adatime_pt: {path} windows {x.shape[1:]} differ from {xs[0].shape[1:]}"
                )
            sign = 1 if split == "train" else -1
            xs.append(x)
            ys.append(y)
            ds.append(np.full(len(x), di))
            gs.append(sign * (np.arange(len(x)) + counter + 1))
            counter += len(x)
    y_all = np.concatenate(ys)
    if y_all.min() < 0:
        raise InputError("load_adatime_pt: negative labels")
    k = int(y_all.max()) + 1
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) < k:
        raise InputError(
            f"load_adatime_pt: labels go up to {k - 1} but {len(names)} class names given"
        )
    return DomainData(
        np.concatenate(xs), y_all, np.concatenate(ds), np.concatenate(gs), names,
        [str(d) for d in domains], name=root.name,
    )  # fmt: skip


def load_adatime_csv(
    path: str | Path,
    *,
    window: int = 128,
    stride: int = 64,
    domain_col: str = "domain",
    series_col: str = "series",
    label_col: str = "label",
    channel_cols: Sequence[str] | None = None,
    nan_policy: NanPolicy | str = NanPolicy.RAISE,
) -> DomainData:
    """Long CSV (one row per time step: domain, series id, label, channel values) -> windows.

    This is the layout of the raw HAR sensor files behind AdaTime's WISDM / HHAR sets (e.g.
    WISDM ``user, activity, timestamp, x, y, z``: pass ``domain_col="user"``,
    ``label_col="activity"``, ``series_col`` = a column that numbers contiguous segments).
    Rows of one series must be in time order and share domain and label. ``channel_cols``
    default: every other column.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"load_adatime_csv: no such file {path}")
    df = pd.read_csv(path)
    missing = [c for c in (domain_col, series_col, label_col) if c not in df.columns]
    if missing:
        raise InputError(
            f"load_adatime_csv: {path} lacks columns {missing}; has {list(df.columns)}"
        )
    chans = list(channel_cols) if channel_cols is not None else [
        c for c in df.columns if c not in (domain_col, series_col, label_col)
    ]  # fmt: skip
    if not chans:
        raise InputError(f"load_adatime_csv: {path} has no channel columns")
    classes = sorted({str(v) for v in df[label_col]}, key=_natural)
    cidx = {c: i for i, c in enumerate(classes)}
    recs, labels, doms = [], [], []
    for sid, part in df.groupby(series_col, sort=False):
        if part[label_col].nunique() != 1 or part[domain_col].nunique() != 1:
            raise InputError(f"load_adatime_csv: series {sid!r} of {path} mixes labels or domains")
        recs.append(part[chans].to_numpy(dtype=np.float64))
        labels.append(cidx[str(part[label_col].iloc[0])])
        doms.append(part[domain_col].iloc[0])
    return _from_recordings(
        recs, labels, doms, window=window, stride=stride, name=path.stem,
        class_names=classes, channel_names=chans, nan_policy=nan_policy,
    )  # fmt: skip
