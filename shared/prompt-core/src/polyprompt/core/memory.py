"""Memory levers for training prompts through a frozen backbone.

Input-level prompts (VPT-shallow, prompt tuning) need the gradient to flow through *every*
frozen block, so the activations the *input* gradient needs are kept, while those only the
*weight* gradients need are not.  What is already free and what each lever costs:

* **Frozen ``nn.Linear`` layers** (qkv, proj, fc1, fc2): PyTorch's autograd already saves only
  the weight (a parameter, no extra memory) when the weight does not require grad -- the
  input is not kept (``y.grad_fn`` has no ``_saved_mat1`` / ``_saved_self``).  No custom
  autograd function can do better; :func:`frozen_linear_saves_input` checks this for the
  installed torch (``False`` on torch 2.x).
* **What stays** per timm ViT block, in units of one ``(B, L, D)`` activation: LayerNorm
  inputs (1 + 1), the qkv output that scaled-dot-product attention keeps (3), its output (1)
  and the GELU input (4) -- about 10, against about 17 for full fine-tuning, which also keeps
  every linear input for the weight gradients (plus weight gradients and Adam moments).
* :func:`lean_frozen_mlps` -- selective recomputation: a frozen ``Mlp`` keeps its ``fc1``
  input (1 unit) instead of the GELU input (4 units) and recomputes ``fc1 -> act`` in backward
  (about 7 units per block instead of 10; costs one extra ``fc1`` + GELU per block).
* :func:`checkpoint_blocks` -- activation checkpointing (``torch.utils.checkpoint``,
  ``use_reentrant=False``): a block keeps only its input (1 unit) and reruns its forward in
  backward (costs about one extra forward).
* :func:`limit_heap_fragmentation` -- process-wide glibc setting: tensors above a fixed size
  are ``mmap``-ed and returned to the OS when freed, instead of fragmenting the heap (glibc
  raises its mmap threshold dynamically up to 32 MiB, so activation-sized blocks otherwise
  land on the heap, and the resident set stays far above the live tensors).

All levers leave parameters, state-dict keys and results unchanged: losses and gradients equal
the plain path's.  Every patch returns a :class:`MemoryPatch` whose ``remove()`` restores the
modules (also usable as a context manager).

Example::

    >>> import torch
    >>> from timm.models.vision_transformer import VisionTransformer
    >>> from polyprompt.core import TimmViTAdapter, create
    >>> from polyprompt.core.memory import checkpoint_blocks, lean_frozen_mlps, saved_tensor_bytes
    >>> vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
    ...                         num_classes=0)
    >>> model = create("vpt", TimmViTAdapter(vit), num_classes=3, num_tokens=4)
    >>> x = torch.randn(2, 3, 32, 32)
    >>> plain = saved_tensor_bytes(lambda: model(x).sum(), exclude=model)
    >>> with lean_frozen_mlps(model):
    ...     lean = saved_tensor_bytes(lambda: model(x).sum(), exclude=model)
    >>> with checkpoint_blocks(model):
    ...     ckpt = saved_tensor_bytes(lambda: model(x).sum(), exclude=model)
    >>> ckpt < lean < plain
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from polyprompt.core.errors import ConfigError, InputError

__all__ = [
    "MemoryPatch",
    "SavedTensorCounter",
    "checkpoint_blocks",
    "frozen_linear_saves_input",
    "lean_frozen_mlps",
    "limit_heap_fragmentation",
    "saved_tensor_bytes",
]

_PATCH_MARK = "_polyprompt_memory_patch"


# --------------------------------------------------------------------------- accounting
class SavedTensorCounter:
    """Counts the bytes autograd saves for backward inside a ``with`` block.

    Each storage is counted once (views such as q, k, v of one qkv output share one storage),
    and storages of ``exclude`` (modules or tensors -- typically the model, whose parameters
    are saved by reference and cost nothing extra) are skipped.  Deterministic: it measures the
    graph, not the allocator.

    Attributes:
        bytes: total unique bytes saved.  count: number of saved tensors seen (incl. excluded).

    Example::

        >>> lin = nn.Linear(8, 4).requires_grad_(False)
        >>> x = torch.randn(5, 8, requires_grad=True)
        >>> with SavedTensorCounter(exclude=lin) as c:
        ...     y = lin(x)
        >>> c.bytes                 # the frozen linear keeps its weight only, not x
        0
    """

    def __init__(self, exclude: nn.Module | Iterable[torch.Tensor] | None = None) -> None:
        self.bytes = 0
        self.count = 0
        self._seen: dict[int, int] = {}
        self._excluded = _storage_ids(exclude)
        self._ctx: Any = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.count += 1
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in self._excluded and key not in self._seen:
            self._seen[key] = storage.nbytes()
            self.bytes += storage.nbytes()
        return t

    def __enter__(self) -> SavedTensorCounter:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
        self._ctx = None


def _storage_ids(exclude: nn.Module | Iterable[torch.Tensor] | None) -> set[int]:
    if exclude is None:
        return set()
    if isinstance(exclude, nn.Module):
        tensors: Iterable[torch.Tensor] = [*exclude.parameters(), *exclude.buffers()]
    else:
        tensors = exclude
    return {t.untyped_storage().data_ptr() for t in tensors}


def saved_tensor_bytes(
    fn: Callable[[], Any], *, exclude: nn.Module | Iterable[torch.Tensor] | None = None
) -> int:
    """Bytes autograd keeps for backward while ``fn()`` builds its graph (graph freed after).

    Example::

        >>> saved_tensor_bytes(lambda: torch.randn(4, 4, requires_grad=True).exp())
        64
    """
    with SavedTensorCounter(exclude=exclude) as counter:
        out = fn()
    del out
    return counter.bytes


def frozen_linear_saves_input() -> bool:
    """Whether this torch keeps the *input* of a Linear whose weight does not require grad.

    ``False`` on torch 2.x: autograd saves only what the requested gradients need (the weight
    for the input gradient), so frozen linears already cost no activation memory.

    Example::

        >>> frozen_linear_saves_input()
        False
    """
    lin = nn.Linear(8, 8).requires_grad_(False)
    x = torch.randn(2, 3, 8, requires_grad=True)
    return saved_tensor_bytes(lambda: lin(x), exclude=lin) > 0


# --------------------------------------------------------------------------- patching
@dataclass
class MemoryPatch:
    """Handle returned by the levers: ``remove()`` restores the patched modules' ``forward``.

    Attributes:
        lever: which lever (``"checkpoint_blocks"``, ``"lean_frozen_mlps"``).
        modules: the patched modules, in order.
    """

    lever: str
    modules: list[nn.Module] = field(default_factory=list)

    def remove(self) -> None:
        for m in self.modules:
            if getattr(m, _PATCH_MARK, None) == self.lever:
                m.__dict__.pop("forward", None)
                m.__dict__.pop(_PATCH_MARK, None)
        self.modules = []

    def __len__(self) -> int:
        return len(self.modules)

    def __enter__(self) -> MemoryPatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _set_forward(module: nn.Module, forward: Callable[..., Any], lever: str) -> None:
    # An instance attribute shadows the class's forward; nn.Module.__call__ looks it up on self.
    # Weights, hooks and state-dict keys are untouched.
    object.__setattr__(module, "forward", forward)
    object.__setattr__(module, _PATCH_MARK, lever)


def _check_unpatched(module: nn.Module, where: str) -> None:
    lever = getattr(module, _PATCH_MARK, None)
    if lever is not None:
        raise ConfigError(
            f"{where}: {type(module).__name__} is already patched by {lever}; "
            "call .remove() on that patch first"
        )
    if "forward" in module.__dict__:
        raise ConfigError(
            f"{where}: {type(module).__name__} already has an instance-level forward "
            "(patched by someone else); refusing to wrap it"
        )


def _resolve_blocks(target: Any, where: str) -> list[nn.Module]:
    """Blocks of an adapter (``.blocks``) or of a method (``.backbone.blocks``)."""
    for owner in (getattr(target, "backbone", None), target):
        blocks = getattr(owner, "blocks", None) if owner is not None else None
        if blocks is not None:
            blocks = list(blocks)
            if not blocks or not all(isinstance(b, nn.Module) for b in blocks):
                raise InputError(f"{where}: `blocks` of {type(owner).__name__} holds no nn.Module")
            return blocks
    raise InputError(
        f"{where}: {type(target).__name__} has no `blocks` (nor `backbone.blocks`); pass a "
        "backbone adapter (e.g. TimmViTAdapter) or a method built on one"
    )


def _needs_graph(args: tuple[Any, ...], kwargs: dict[str, Any], module: nn.Module) -> bool:
    if not torch.is_grad_enabled():
        return False
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    return any(t.requires_grad for t in tensors) or any(
        p.requires_grad for p in module.parameters()
    )


def checkpoint_blocks(target: Any, every: int = 1) -> MemoryPatch:
    """Activation checkpointing of the backbone blocks: keep each block's input, rerun it in backward.

    Args:
        target: a backbone adapter with ``.blocks`` or a method with ``.backbone.blocks``.
        every: checkpoint blocks ``0, every, 2*every, ...`` (``1``: all blocks; ``2``: half of
            them -- half the saving for half the recompute).

    Returns:
        a :class:`MemoryPatch`; ``remove()`` (or leaving its ``with`` block) undoes it.

    Uses ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``, so prompt gradients
    (inputs that require grad) and trainable block weights both work, and results are identical
    to the plain path.  Blocks run under ``no_grad`` or without anything requiring grad are not
    checkpointed.  Only the ``forward`` of each block is wrapped: code that calls a block's
    sub-modules directly (the adapter's prefix-tuning path) is not checkpointed.

    Example::

        >>> from timm.models.vision_transformer import VisionTransformer
        >>> from polyprompt.core import TimmViTAdapter
        >>> adapter = TimmViTAdapter(VisionTransformer(img_size=32, patch_size=8, embed_dim=64,
        ...                                            depth=4, num_heads=4, num_classes=0))
        >>> patch = checkpoint_blocks(adapter, every=2)
        >>> len(patch)
        2
        >>> patch.remove()
    """
    where = "checkpoint_blocks"
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ConfigError(f"{where}: `every` must be an int >= 1, got {every!r}")
    blocks = _resolve_blocks(target, where)
    chosen = blocks[::every]
    for blk in chosen:
        _check_unpatched(blk, where)
    patch = MemoryPatch("checkpoint_blocks")
    for blk in chosen:
        _set_forward(blk, _checkpointed_forward(blk), patch.lever)
        patch.modules.append(blk)
    return patch


def _checkpointed_forward(module: nn.Module) -> Callable[..., Any]:
    original = type(module).forward.__get__(module)

    def forward(*args: Any, **kwargs: Any) -> Any:
        if _needs_graph(args, kwargs, module):
            return checkpoint(original, *args, use_reentrant=False, **kwargs)
        return original(*args, **kwargs)

    return forward


def _is_mlp(module: nn.Module) -> bool:
    """timm ``Mlp`` layout: fc1 -> act -> drop1 -> norm -> fc2 -> drop2 (fc1/fc2 linear)."""
    return (
        isinstance(getattr(module, "fc1", None), nn.Linear)
        and isinstance(getattr(module, "fc2", None), nn.Linear)
        and all(
            isinstance(getattr(module, a, None), nn.Module)
            for a in ("act", "drop1", "norm", "drop2")
        )
    )


def lean_frozen_mlps(target: nn.Module, *, only_frozen: bool = True) -> MemoryPatch:
    """Selective recomputation in frozen MLPs: keep the ``fc1`` input, recompute ``fc1 -> act``.

    A plain frozen timm ``Mlp`` keeps the GELU input ``(B, L, 4D)`` for backward (its linears
    keep nothing, see :func:`frozen_linear_saves_input`).  Patched, it keeps only the ``fc1``
    input ``(B, L, D)`` and recomputes ``fc1`` and the activation during backward, which is
    ``3 (B, L, D)`` activations less per block for one extra ``fc1`` + GELU.  Gradients are
    identical to the plain path (same ops on the same inputs).

    Args:
        target: any module; every sub-module with timm's ``Mlp`` layout (``fc1``, ``act``,
            ``drop1``, ``norm``, ``fc2``, ``drop2``) is patched.
        only_frozen: skip MLPs with a parameter that requires grad (there ``fc1``'s input is kept
            for the weight gradient anyway, so the saving is smaller).

    Raises:
        InputError: ``target`` holds no MLP to patch.

    Example::

        >>> from timm.models.vision_transformer import VisionTransformer
        >>> vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2,
        ...                         num_heads=4, num_classes=0).requires_grad_(False)
        >>> with lean_frozen_mlps(vit) as patch:
        ...     len(patch)
        2
    """
    where = "lean_frozen_mlps"
    if not isinstance(target, nn.Module):
        raise InputError(f"{where}: `target` must be an nn.Module, got {type(target).__name__}")
    mlps = [
        m
        for m in target.modules()
        if _is_mlp(m) and not (only_frozen and any(p.requires_grad for p in m.parameters()))
    ]
    if not mlps:
        raise InputError(
            f"{where}: {type(target).__name__} holds no "
            + ("frozen " if only_frozen else "")
            + "MLP with timm's Mlp layout (fc1, act, drop1, norm, fc2, drop2)"
        )
    for m in mlps:
        _check_unpatched(m, where)
    patch = MemoryPatch("lean_frozen_mlps")
    for m in mlps:
        _set_forward(m, _lean_mlp_forward(m), patch.lever)
        patch.modules.append(m)
    return patch


def _lean_mlp_forward(mlp: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    original = type(mlp).forward.__get__(mlp)

    def hidden(x: torch.Tensor) -> torch.Tensor:
        return mlp.drop1(mlp.act(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)))

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not _needs_graph((x,), {}, mlp):
            return original(x)
        h = checkpoint(hidden, x, use_reentrant=False)
        return mlp.drop2(mlp.fc2(mlp.norm(h)))

    return forward


# --------------------------------------------------------------------------- allocator
_M_MMAP_THRESHOLD = -3  # glibc <malloc.h>


def limit_heap_fragmentation(threshold_bytes: int = 1 << 20) -> bool:
    """Serve allocations of ``threshold_bytes`` or more by ``mmap`` (glibc ``mallopt``).

    glibc raises its mmap threshold dynamically (up to 32 MiB) each time a large block is
    freed, after which activation-sized tensors are carved from the heap; freed in backward in
    a different order than allocated, they fragment it and the process's resident memory stays
    well above the live tensors.  A fixed threshold turns that off: every tensor above it is
    unmapped the moment it is freed.  Same effect as the environment variable
    ``MALLOC_MMAP_THRESHOLD_=<bytes>``.  Process-wide; call it once, early.

    Returns:
        ``True`` if applied, ``False`` where glibc's ``mallopt`` is unavailable (macOS,
        Windows, musl).

    Example::

        >>> limit_heap_fragmentation(1 << 20) in (True, False)
        True
    """
    if (
        not isinstance(threshold_bytes, int)
        or isinstance(threshold_bytes, bool)
        or not (0 < threshold_bytes <= 32 << 20)
    ):
        raise ConfigError(
            f"limit_heap_fragmentation: `threshold_bytes` must be an int in (0, 32 MiB], "
            f"got {threshold_bytes!r}"
        )
    if not sys.platform.startswith("linux"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(ctypes.c_int(_M_MMAP_THRESHOLD), ctypes.c_int(threshold_bytes)))


def _glibc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:  # pragma: no cover - no libc
        return None
