"""Freezing a backbone, identifying it, and accounting for what trains.

* :func:`freeze_backbone` turns every parameter of a module off (``requires_grad=False``).
* :func:`module_identity` describes a module by class, parameter count, a digest of its
  parameter names and shapes, and a fingerprint of its weights; prompt checkpoints store
  it so that loading into a different backbone fails loudly.
* :func:`trainable_report` counts trainable / total / backbone parameters and the exact
  size in bytes of the prompt-only checkpoint (``prompt.safetensors``).

Example::

    >>> import torch
    >>> from torch import nn
    >>> backbone = freeze_backbone(nn.Linear(16, 16))
    >>> model = nn.Sequential(backbone, nn.Linear(16, 2))
    >>> report = trainable_report(model)
    >>> report.trainable_params, report.backbone_params
    (34, 272)
    >>> module_identity(backbone)["num_params"]
    272
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from polyprompt.core.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "FingerprintCache",
    "TrainableReport",
    "freeze_backbone",
    "module_identity",
    "tensor_bytes",
    "trainable_report",
]


def _check_module(module: Any, where: str) -> None:
    from torch import nn

    if not isinstance(module, nn.Module):
        raise InputError(f"{where}: expected a torch.nn.Module, got {type(module).__name__}")


def freeze_backbone(module: nn.Module, *, eval_mode: bool = True) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter of ``module`` and return it.

    With ``eval_mode`` (default) the module is also put in eval mode, so dropout and
    batch-norm statistics of the frozen part stay fixed *until a parent's* ``.train()``
    switches it back (the Trainer calls ``model.train()`` every epoch); a method that
    wants its backbone always in eval mode overrides ``train()``.

    Example::

        >>> from torch import nn
        >>> m = freeze_backbone(nn.Linear(2, 2))
        >>> any(p.requires_grad for p in m.parameters()), m.training
        (False, False)
    """
    _check_module(module, "freeze_backbone")
    module.requires_grad_(False)
    if eval_mode:
        module.eval()
    return module


def _qualified_class(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of ``t`` (moved to the CPU, contiguous, bool as uint8), for hashing.

    Shared by the weight fingerprint here and :mod:`polyprompt.core.cache`'s keys.
    """
    import torch

    flat = t.detach().to("cpu").contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return memoryview(flat.view(torch.uint8).numpy())


def module_identity(module: nn.Module) -> dict[str, Any]:
    """Who a module is: class, size, layout digest and weight fingerprint.

    Returns ``{"class": "pkg.mod.Class", "num_params": int, "shapes_digest": str,
    "fingerprint": str | None}``. ``shapes_digest`` is the first 16 hex digits of the
    SHA-256 of the sorted ``(name, shape)`` list of parameters and buffers;
    ``fingerprint`` hashes names, dtypes, shapes and raw bytes of every parameter and
    buffer (on CPU, contiguous) — two modules share it iff they hold the same weights.
    It is ``None`` for modules on the ``meta`` device (no data to hash).

    Example::

        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0) is not None
        True
        >>> a, b = nn.Linear(3, 3), nn.Linear(3, 3)
        >>> module_identity(a)["shapes_digest"] == module_identity(b)["shapes_digest"]
        True
        >>> module_identity(a)["fingerprint"] == module_identity(b)["fingerprint"]
        False
    """
    _check_module(module, "module_identity")
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    layout = sorted((name, list(t.shape)) for name, t in tensors)
    shapes_digest = hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16]
    fingerprint: str | None
    if any(t.device.type == "meta" for _, t in tensors):
        fingerprint = None
    else:
        h = hashlib.sha256()
        for name, t in sorted(tensors, key=lambda item: item[0]):
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(tensor_bytes(t))
        fingerprint = h.hexdigest()[:16]
    return {
        "class": _qualified_class(module),
        "num_params": sum(p.numel() for p in module.parameters()),
        "shapes_digest": shapes_digest,
        "fingerprint": fingerprint,
    }


class FingerprintCache:
    """A module's weight fingerprint (:func:`module_identity`), hashed once and kept.

    Hashing every weight is slow for a large backbone; a backbone adapter asks this cache
    instead, which re-hashes only when a parameter or buffer changed (its ``_version``
    counter, identity or storage moved), e.g. after loading new weights.

    Example::

        >>> from torch import nn
        >>> lin, cache = nn.Linear(3, 2), FingerprintCache()
        >>> cache.get(lin) == module_identity(lin)["fingerprint"]
        True
    """

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._value: str | None = None

    def get(self, module: nn.Module) -> str | None:
        """The fingerprint of ``module``'s current weights (``None`` on the meta device)."""
        tensors = list(module.parameters()) + list(module.buffers())
        key = tuple((id(t), t._version, t.data_ptr()) for t in tensors)
        if key != self._key:
            self._value = module_identity(module)["fingerprint"]
            self._key = key
        return self._value


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@dataclass(frozen=True)
class TrainableReport:
    """Parameter accounting of a prompt method (see :func:`trainable_report`)."""

    trainable_params: int
    total_params: int
    backbone_params: int
    percent_of_backbone: float
    checkpoint_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"trainable {self.trainable_params:,} / {self.total_params:,} params "
            f"({self.percent_of_backbone:.4g}% of a {self.backbone_params:,}-param backbone); "
            f"prompt-only checkpoint {_human_bytes(self.checkpoint_bytes)} "
            f"({self.checkpoint_bytes:,} bytes)"
        )


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """What a prompt-only checkpoint of ``module`` stores: ``trainable_state_dict()`` when
    the module has one (a :class:`~polyprompt.core.methods.base.PromptMethod`), else its
    parameters with ``requires_grad``."""
    fn = getattr(module, "trainable_state_dict", None)
    if callable(fn):
        return dict(fn())
    return {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}


def safetensors_bytes(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> bytes:
    """Serialise ``tensors`` (copied to contiguous CPU tensors) in safetensors format."""
    from safetensors.torch import save

    ready = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in tensors.items()}
    return save(ready, metadata=metadata)


def trainable_report(method: nn.Module) -> TrainableReport:
    """Count what trains in ``method`` against its backbone.

    ``method`` is a :class:`~polyprompt.core.methods.base.PromptMethod` (its ``.backbone``
    module is the backbone) or any ``nn.Module`` (then the backbone is the set of frozen
    parameters). ``checkpoint_bytes`` is the exact size of the ``prompt.safetensors`` file
    :func:`polyprompt.core.checkpoint.save_prompt` writes for it. Shared (tied)
    parameters are counted once.

    Example::

        >>> from torch import nn
        >>> model = nn.Sequential(freeze_backbone(nn.Linear(100, 100)), nn.Linear(100, 1))
        >>> r = trainable_report(model)
        >>> r.trainable_params, r.backbone_params, round(r.percent_of_backbone, 3)
        (101, 10100, 1.0)
    """
    _check_module(method, "trainable_report")
    from torch import nn

    params = list(method.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    backbone = getattr(method, "backbone", None)
    if isinstance(backbone, nn.Module):
        backbone_params = sum(p.numel() for p in backbone.parameters())
    else:
        backbone_params = total - trainable
    percent = 100.0 * trainable / backbone_params if backbone_params else float("inf")
    if trainable == 0:
        percent = 0.0
    checkpoint_bytes = len(safetensors_bytes(trainable_state(method)))
    return TrainableReport(
        trainable_params=trainable,
        total_params=total,
        backbone_params=backbone_params,
        percent_of_backbone=percent,
        checkpoint_bytes=checkpoint_bytes,
    )
