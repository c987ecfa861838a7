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
* :func:`lean_frozen_mlps` -- a frozen ``Mlp`` as one custom autograd function that runs
  ``act -> fc2`` (forward) and ``fc2ᵀ -> act' -> fc1ᵀ`` (backward) over row blocks, so the
  three short-lived ``(B, L, 4D)`` temporaries (GELU output, two gradients) per block are
  never allocated; same saved tensors, lower transient peak, less heap fragmentation, no
  recompute.  ``recompute=True`` also keeps the ``fc1`` input (1 unit) instead of the GELU
  input (4 units), recomputing ``fc1`` in backward (about 7 units per block instead of 10).
* :func:`checkpoint_blocks` -- activation checkpointing (``torch.utils.checkpoint``,
  ``use_reentrant=False``): a block keeps only its input (1 unit) and reruns its forward in
  backward (costs about one extra forward).
* :func:`limit_heap_fragmentation` -- process-wide glibc setting: tensors above a fixed size
  are ``mmap``-ed and returned to the OS when freed, instead of fragmenting the heap (glibc
  raises its mmap threshold dynamically up to 32 MiB, so activation-sized blocks otherwise
  land on the heap, and the resident set stays well above the live tensors).  Costs page
  faults on every fresh allocation (kernel time in every step).

Measured on ViT-S/16, batch 16, CPU, 2 threads (``benchmarks/vpt_step.py``; resident memory
over the steps, net of the built model, relative to full fine-tuning; busy machine): plain
VPT-10 0.74x with glibc's default allocator, 0.58x with :func:`limit_heap_fragmentation`;
:func:`lean_frozen_mlps` 0.65-0.70x (default allocator, varies with heap layout) for about
+3 % CPU time; ``recompute=True`` 0.46x for about +15-20 %; :func:`checkpoint_blocks` 0.22x for
about +35 %.

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
    >>> with lean_frozen_mlps(model, recompute=True):
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


def lean_frozen_mlps(
    target: nn.Module, *, chunk_rows: int = 1024, recompute: bool = False
) -> MemoryPatch:
    """Frozen MLPs that allocate no ``(B, L, 4D)`` temporaries (and optionally keep less).

    A plain frozen timm ``Mlp`` keeps its ``fc1`` output ``h`` ``(B, L, 4D)`` for the GELU
    backward (its linears keep nothing, see :func:`frozen_linear_saves_input`), and on top of
    that allocates the GELU output ``(B, L, 4D)`` in forward and two more ``(B, L, 4D)``
    gradients in backward.  Patched, a custom autograd function runs ``act -> fc2`` in forward
    and ``fc2ᵀ -> act' -> fc1ᵀ`` in backward over blocks of ``chunk_rows`` tokens, writing
    straight into the ``(B, L, D)`` result, so those temporaries shrink to
    ``(chunk_rows, 4D)``.  Besides the lower transient peak this stops the heap fragmentation
    those short-lived 4D blocks cause with glibc's default allocator.

    With ``recompute=True`` it keeps the ``fc1`` input ``(B, L, D)`` instead of ``h`` and
    recomputes ``fc1`` chunk by chunk in backward: 3 ``(B, L, D)`` activations less per block,
    for one extra ``fc1`` per block (about +15 % step time on a ViT).

    Gradients equal the plain path's (the same row-wise ops on row blocks; matmuls of row blocks
    may differ from the full matmul in the last bit).  Only the input gradient is computed: an
    MLP whose parameters require grad, or whose dropout is active, runs its own forward.

    Args:
        target: any module; every sub-module with timm's ``Mlp`` layout (``fc1``, ``act``,
            ``drop1``, ``norm``, ``fc2``, ``drop2``; ``act``/``drop1``/``norm`` row-wise) whose
            parameters are all frozen is patched.
        chunk_rows: tokens per block (``>= 1``).
        recompute: keep the ``fc1`` input and recompute ``fc1`` in backward.

    Raises:
        InputError: ``target`` holds no frozen MLP.  ConfigError: bad ``chunk_rows``.

    Example::

        >>> from timm.models.vision_transformer import VisionTransformer
        >>> vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2,
        ...                         num_heads=4, num_classes=0).requires_grad_(False)
        >>> with lean_frozen_mlps(vit, chunk_rows=256) as patch:
        ...     len(patch)
        2
    """
    where = "lean_frozen_mlps"
    if not isinstance(target, nn.Module):
        raise InputError(f"{where}: `target` must be an nn.Module, got {type(target).__name__}")
    if not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1:
        raise ConfigError(f"{where}: `chunk_rows` must be an int >= 1, got {chunk_rows!r}")
    if not isinstance(recompute, bool):
        raise ConfigError(f"{where}: `recompute` must be a bool, got {recompute!r}")
    mlps = [m for m in target.modules() if _is_mlp(m) and not _trainable(m)]
    if not mlps:
        raise InputError(
            f"{where}: {type(target).__name__} holds no frozen MLP with timm's Mlp layout "
            "(fc1, act, drop1, norm, fc2, drop2)"
        )
    for m in mlps:
        _check_unpatched(m, where)
    patch = MemoryPatch("lean_frozen_mlps")
    for m in mlps:
        _set_forward(m, _lean_mlp_forward(m, chunk_rows, recompute), patch.lever)
        patch.modules.append(m)
    return patch


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _dropout_active(mlp: nn.Module) -> bool:
    return mlp.training and any(
        isinstance(d, nn.modules.dropout._DropoutNd) and d.p > 0 for d in (mlp.drop1, mlp.drop2)
    )


def _lean_mlp_forward(
    mlp: nn.Module, chunk_rows: int, recompute: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    original = type(mlp).forward.__get__(mlp)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if (
            not (torch.is_grad_enabled() and x.requires_grad)
            or _trainable(mlp)
            or _dropout_active(mlp)
        ):
            return original(x)
        return _FrozenMlp.apply(x, mlp, chunk_rows, recompute)

    return forward


def _mid(mlp: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The row-wise part between fc1 and fc2 (activation, dropout in eval, norm)."""
    return mlp.norm(mlp.drop1(mlp.act(h)))


def _mid_backward(mlp: nn.Module, h: torch.Tensor, grad_a: torch.Tensor) -> torch.Tensor:
    """Gradient of :func:`_mid` w.r.t. ``h``: GELU's own backward kernel for timm's default
    layout (GELU, inactive dropout, no norm), autograd on the row block otherwise."""
    act = mlp.act
    if (
        type(act) is nn.GELU
        and isinstance(mlp.norm, nn.Identity)
        and isinstance(mlp.drop1, (nn.Identity, nn.modules.dropout._DropoutNd))
    ):
        return torch.ops.aten.gelu_backward(grad_a, h, approximate=act.approximate)
    with torch.enable_grad():
        h = h.detach().requires_grad_(True)
        a = _mid(mlp, h)
    return torch.autograd.grad(a, h, grad_a)[0]


def _mm_into(out: torch.Tensor, a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None):
    """``out[:] = a @ w (+ bias)`` without a temporary (``out`` a contiguous row block)."""
    if bias is None:
        torch.mm(a, w, out=out)
    else:
        torch.addmm(bias, a, w, out=out)


class _FrozenMlp(torch.autograd.Function):
    """``fc2(mid(fc1(x)))`` of a frozen MLP, chunked over rows; gradient w.r.t. ``x`` only."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mlp: nn.Module, chunk_rows: int, recompute: bool):
        w1, b1, w2, b2 = mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias
        x2 = x.reshape(-1, x.shape[-1])
        rows = x2.shape[0]
        out = x2.new_empty(rows, w2.shape[0])
        h_full = None if recompute else F.linear(x2, w1, b1)
        for s in range(0, rows, chunk_rows):
            e = min(s + chunk_rows, rows)
            h = F.linear(x2[s:e], w1, b1) if h_full is None else h_full[s:e]
            _mm_into(out[s:e], _mid(mlp, h), w2.t(), b2)
        ctx.mlp, ctx.chunk_rows, ctx.recompute = mlp, chunk_rows, recompute
        ctx.in_shape = x.shape
        ctx.save_for_backward(x2 if recompute else h_full)
        return out.view(*x.shape[:-1], w2.shape[0])

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        (saved,) = ctx.saved_tensors
        mlp, chunk_rows = ctx.mlp, ctx.chunk_rows
        w1, b1, w2 = mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        rows = g2.shape[0]
        grad_x = g2.new_empty(rows, w1.shape[1])
        for s in range(0, rows, chunk_rows):
            e = min(s + chunk_rows, rows)
            h = F.linear(saved[s:e], w1, b1) if ctx.recompute else saved[s:e]
            grad_h = _mid_backward(mlp, h, g2[s:e].mm(w2))
            torch.mm(grad_h, w1, out=grad_x[s:e])
        return grad_x.view(ctx.in_shape), None, None, None


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

    The price: every large allocation is a fresh mapping, so each training step page-faults
    all its activations and temporaries in again (about 1.4 s more kernel CPU time per
    ViT-S/16 batch-16 step, see ``benchmarks/vpt_step.py``).  Thresholds above the activation
    size (about 5 MiB there) leave the fragmentation in place.

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
