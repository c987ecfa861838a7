"""FeatureCache: compute the frozen part of a backbone once, train on the cached tokens.

When a method needs no gradient below block ``k`` (linear probe: ``k = num_blocks``; IDPT,
DVPT-side: the last blocks) and no data augmentation is on, the tokens that enter block ``k``
are the same every epoch.  :class:`FeatureCache` computes them once::

    tokens = backbone.forward_blocks(backbone.embed(x), 0, start_block)   # (N, L, D)

under :func:`torch.inference_mode` with the backbone in eval mode, and stores them as
safetensors under ``root/<key>.safetensors``.  The key is the sha256 of

* the backbone's identity: class, ``identity()`` when the adapter has one, and a sha256 over
  every parameter and buffer (name, dtype, shape, bytes) -- so changing any weight changes
  the key;
* ``start_block``;
* the data fingerprint: sha256 of the input tensor's bytes, shape and dtype.

A changed backbone or changed data therefore gives a new key: stale features are never
reused.  Writes are atomic (temp file + ``os.replace``); a corrupt or mismatching cache file
is recomputed with a :class:`CacheWarning` and rewritten.  ``in_memory=True`` keeps the
tokens in a dict instead of files.

Example (inputs ``(N, C, H, W)`` -> tokens ``(N, L, D)``; train the probe on them)::

    >>> import torch
    >>> from timm.models.vision_transformer import VisionTransformer
    >>> from polyprompt.core import FeatureCache, TimmViTAdapter, create
    >>> vit = VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=64, depth=3,
    ...                         num_heads=4, num_classes=0)
    >>> probe = create("linear_probe", TimmViTAdapter(vit), num_classes=10)
    >>> cache = FeatureCache(probe.backbone, probe.cache_point, in_memory=True)
    >>> x = torch.randn(20, 1, 32, 32)
    >>> tokens = cache.tokens(x, batch_size=8)
    >>> tuple(tokens.shape)                 # (N, 1 + 16 patches, D)
    (20, 17, 64)
    >>> torch.allclose(probe.forward_from_tokens(tokens, cache.start_block), probe(x), atol=1e-5)
    True
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from polyprompt.core.errors import InputError, ShapeError
from polyprompt.core.freezing import tensor_bytes
from polyprompt.core.io import atomic_write, polyprompt_home
from polyprompt.core.validation import check_tensor

__all__ = ["CacheWarning", "FeatureCache", "FromCachedTokens", "cached_dataset", "data_fingerprint"]

_FORMAT = "polyprompt-feature-cache/1"
_TENSOR_KEY = "tokens"


class CacheWarning(UserWarning):
    """A cache file was unreadable or did not match; the tokens were recomputed."""


def data_fingerprint(x: torch.Tensor) -> str:
    """sha256 (hex) of a tensor's shape, dtype and raw bytes.

    Example::

        >>> import torch
        >>> data_fingerprint(torch.zeros(2, 3)) == data_fingerprint(torch.zeros(2, 3))
        True
        >>> data_fingerprint(torch.zeros(2, 3)) == data_fingerprint(torch.zeros(3, 2))
        False
    """
    h = hashlib.sha256()
    h.update(f"{tuple(x.shape)}|{x.dtype}|".encode())
    if x.numel():
        h.update(tensor_bytes(x))
    return h.hexdigest()


def _weights_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.device.type != "meta" and t.numel():
            h.update(tensor_bytes(t))
    return h.hexdigest()


class FeatureCache:
    """Cache of the tokens entering block ``start_block`` of a frozen backbone.

    Args:
        backbone: a :class:`~polyprompt.core.backbones.PromptableBackbone` adapter.
        start_block: the block the cached tokens enter, ``0 <= start_block <= num_blocks``
            (a method's ``cache_point``; ``num_blocks`` = after the last block, before the norm).
        root: folder of the cache files (default ``polyprompt_home() / "features"``).
        in_memory: keep tokens in memory only (no files).

    Shapes: ``tokens(x)``: inputs ``(N, ...)`` -> ``(N, L, D)`` (float32, CPU).
    """

    def __init__(
        self,
        backbone: nn.Module,
        start_block: int,
        root: str | Path | None = None,
        in_memory: bool = False,
    ) -> None:
        where = "FeatureCache"
        missing = [a for a in ("embed", "forward_blocks", "num_blocks") if not hasattr(backbone, a)]
        if not isinstance(backbone, nn.Module) or missing:
            raise InputError(
                f"{where}: backbone must be a PromptableBackbone nn.Module adapter "
                f"(missing {missing or 'nn.Module'}), got {type(backbone).__name__}"
            )
        nb = int(backbone.num_blocks)
        if isinstance(start_block, bool) or not isinstance(start_block, int):
            raise InputError(f"{where}: start_block must be an int, got {start_block!r}")
        if not 0 <= start_block <= nb:
            raise InputError(f"{where}: start_block must be in [0, {nb}], got {start_block}")
        self.backbone = backbone
        self.start_block = start_block
        self.root = Path(root) if root is not None else polyprompt_home() / "features"
        self.in_memory = bool(in_memory)
        self._memory: dict[str, torch.Tensor] = {}
        self._keys: set[str] = set()
        self._digest_key: tuple[Any, ...] | None = None
        self._digest = ""

    # ------------------------------------------------------------------ keys
    def backbone_fingerprint(self) -> str:
        """sha256 over the backbone's class, ``identity()`` and every weight.

        Recomputed only when a parameter or buffer changed (tensor ``_version`` / storage).
        """
        tensors = list(self.backbone.parameters()) + list(self.backbone.buffers())
        state = tuple((id(t), t._version, t.data_ptr()) for t in tensors)
        if state != self._digest_key:
            ident_fn = getattr(self.backbone, "identity", None)
            ident = ident_fn() if callable(ident_fn) else {}
            cls = type(self.backbone)
            payload = json.dumps(
                {
                    "class": f"{cls.__module__}.{cls.__qualname__}",
                    "identity": ident,
                    "weights": _weights_digest(self.backbone),
                },
                sort_keys=True,
                default=str,
            )
            self._digest = hashlib.sha256(payload.encode()).hexdigest()
            self._digest_key = state
        return self._digest

    def key(self, inputs: torch.Tensor) -> str:
        """Cache key (sha256 hex) of ``inputs`` for this backbone and ``start_block``."""
        check_tensor(inputs, "inputs", min_size={0: 1}, finite=False, where="FeatureCache.key")
        payload = (
            f"{_FORMAT}|{self.backbone_fingerprint()}|{self.start_block}|{data_fingerprint(inputs)}"
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def path(self, key: str) -> Path:
        """File that holds the tokens of ``key``."""
        return self.root / f"{key}.safetensors"

    # ------------------------------------------------------------------ compute / load
    def tokens(
        self,
        data: torch.Tensor | Dataset | Sequence[Any],
        batch_size: int = 64,
        *,
        progress: bool = False,
    ) -> torch.Tensor:
        """Tokens ``(N, L, D)`` entering block ``start_block`` for every input of ``data``.

        Args:
            data: an input tensor ``(N, ...)``, or a dataset / sequence whose items are inputs
                or ``(input, label, ...)`` tuples (the first element is used).
            batch_size: inputs per backbone call.
            progress: show a progress bar while computing.

        Raises:
            InputError / ShapeError: empty or inconsistent data, bad ``batch_size``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(
                f"FeatureCache.tokens: batch_size must be an int >= 1, got {batch_size!r}"
            )
        inputs = _inputs_of(data, "FeatureCache.tokens")
        key = self.key(inputs)
        self._keys.add(key)
        if self.in_memory:
            if key not in self._memory:
                self._memory[key] = self._compute(inputs, batch_size, progress)
            return self._memory[key]
        cached = self._read(key, len(inputs))
        if cached is not None:
            return cached
        tokens = self._compute(inputs, batch_size, progress)
        self._write(key, tokens)
        return tokens

    def cached_dataset(
        self, dataset: Dataset | Sequence[Any], batch_size: int = 64, *, progress: bool = False
    ) -> TensorDataset:
        """``TensorDataset(tokens, labels)`` for a dataset of ``(x, y)`` items."""
        return cached_dataset(dataset, self, batch_size=batch_size, progress=progress)

    def clear(self) -> int:
        """Delete the files (and memory entries) this cache created or read; returns how many."""
        removed = 0
        for key in sorted(self._keys):
            if self._memory.pop(key, None) is not None:
                removed += 1
            path = self.path(key)
            if path.exists():
                path.unlink()
                removed += 1
        self._keys.clear()
        return removed

    def _compute(self, inputs: torch.Tensor, batch_size: int, progress: bool) -> torch.Tensor:
        bb = self.backbone
        param = next(iter(bb.parameters()), None)
        device = param.device if param is not None else inputs.device
        was_training = bb.training
        bb.eval()
        chunks: list[torch.Tensor] = []
        try:
            starts = range(0, len(inputs), batch_size)
            if progress:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc=f"caching tokens @ block {self.start_block}")
            with torch.inference_mode():
                for s in starts:
                    x = inputs[s : s + batch_size].to(device)
                    t = bb.embed(x)
                    if self.start_block:
                        t = bb.forward_blocks(t, 0, self.start_block)
                    chunks.append(t.to("cpu"))
        finally:
            bb.train(was_training)
        return torch.cat(chunks).contiguous()  # outside inference mode: a normal tensor

    def _read(self, key: str, n: int) -> torch.Tensor | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                tokens = fh.get_tensor(_TENSOR_KEY)
            if meta.get("key") != key or tokens.dim() != 3 or tokens.shape[0] != n:
                raise ValueError(
                    f"metadata/shape mismatch (key {meta.get('key')!r}, shape {tuple(tokens.shape)})"
                )
        except Exception as exc:  # safetensors raises its own error types
            warnings.warn(
                f"FeatureCache: cache file {path} is unreadable or does not match ({exc}); "
                "recomputing it",
                CacheWarning,
                stacklevel=3,
            )
            return None
        return tokens

    def _write(self, key: str, tokens: torch.Tensor) -> None:
        from safetensors.torch import save_file

        meta = {"format": _FORMAT, "key": key, "start_block": str(self.start_block)}
        atomic_write(self.path(key), lambda tmp: save_file({_TENSOR_KEY: tokens}, str(tmp), meta))

    def __repr__(self) -> str:
        where = "memory" if self.in_memory else str(self.root)
        return f"FeatureCache(start_block={self.start_block}, at={where})"


class FromCachedTokens(nn.Module):
    """Cached tokens ``(B, L, D)`` -> logits via ``method.forward_from_tokens(tokens, start_block)``.

    Wraps a method whose layers below ``start_block`` are frozen (linear probe, late prompts) so
    the core :class:`~polyprompt.core.trainer.Trainer` trains it directly on the output of a
    :class:`FeatureCache`: every epoch costs the layers from ``start_block`` on, not a full pass.
    """

    def __init__(self, method: nn.Module, start_block: int) -> None:
        super().__init__()
        self.method = method
        self.start_block = start_block

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.method.forward_from_tokens(tokens, self.start_block)


def cached_dataset(
    dataset: Dataset | Sequence[Any],
    cache: FeatureCache,
    *,
    batch_size: int = 64,
    progress: bool = False,
) -> TensorDataset:
    """``TensorDataset(tokens (N, L, D), labels (N, ...))`` for a dataset of ``(x, y)`` items.

    Example::

        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.randn(6, 1, 32, 32), torch.arange(6))
        >>> cached = cached_dataset(data, cache)        # doctest: +SKIP
        >>> cached[0][0].shape                          # doctest: +SKIP
        torch.Size([17, 64])
    """
    where = "cached_dataset"
    if not isinstance(cache, FeatureCache):
        raise InputError(f"{where}: `cache` must be a FeatureCache, got {type(cache).__name__}")
    items = _items(dataset, where)
    labels: list[Any] = []
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise InputError(
                f"{where}: item {i} must be an (input, label) pair, got {type(item).__name__}"
            )
        labels.append(item[1])
    tokens = cache.tokens(
        torch.stack([_as_tensor(it[0], where, i) for i, it in enumerate(items)]),
        batch_size,
        progress=progress,
    )
    try:
        y = torch.stack([torch.as_tensor(v) for v in labels])
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: labels cannot be stacked into one tensor ({exc})") from None
    return TensorDataset(tokens, y)


# ---------------------------------------------------------------------- data helpers
def _items(data: Any, where: str) -> list[Any]:
    if (
        isinstance(data, (str, bytes))
        or not hasattr(data, "__getitem__")
        or not hasattr(data, "__len__")
    ):
        raise InputError(
            f"{where}: expected a tensor, a map-style dataset or a sequence, got {type(data).__name__}"
        )
    n = len(data)
    if n == 0:
        raise InputError(f"{where}: the data is empty")
    return [data[i] for i in range(n)]


def _as_tensor(x: Any, where: str, i: int) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: input of item {i} is not a tensor ({exc})") from None


def _inputs_of(data: Any, where: str) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        check_tensor(data, "data", min_size={0: 1}, finite=False, where=where)
        return data
    items = _items(data, where)
    xs = [
        _as_tensor(it[0] if isinstance(it, (tuple, list)) else it, where, i)
        for i, it in enumerate(items)
    ]
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise ShapeError(
            f"{where}: inputs have different shapes {sorted(shapes)[:4]}; cannot batch"
        )
    return torch.stack(xs)
