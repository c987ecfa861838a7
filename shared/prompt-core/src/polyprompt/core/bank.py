"""PromptBank: one frozen backbone, many named prompts, mixed-task batches.

A bank holds ONE backbone object and any number of named prompt methods built on it
(VPT shallow / deep, linear probes, ...; heads may have different class counts).  Each
sample of a batch names its prompt; :meth:`PromptBank.forward` returns one logits row per
sample, equal (up to float round-off, ``allclose(atol=1e-5)``) to running that sample's
method alone in eval mode.

Two execution plans:

* ``"grouped"``: one backbone pass per prompt name (the rows of that task).  Prompt-free
  methods (linear probes, ``num_prompt_tokens == 0`` and no deep prompts) compute the same
  backbone features, so they share a single pass.
* ``"mixed"``: samples whose methods insert the same number ``n`` of input prompt tokens go
  through ONE backbone pass: the rows are ordered by task, the per-sample prompts
  ``(B, n, D)`` are gathered from each task's prompt (shallow: inserted after the prefix
  tokens; deep: before every block ``i > 0`` the rows of tasks with a prompt for block ``i``
  get it, the other rows keep their propagated prompt outputs), then each task's head is
  applied to its rows.  The embedding (patch projection) runs once for the whole batch in
  both plans.

Plan selection by measurement (``plan="auto"``, the default): the first call for a new
*composition signature* ``(device, dtype, input shape, batch size, {n: number of tasks})``
runs both plans ``calibration_repeats`` times each (default 2, alternating; the best time of
each plan counts, so one-time warm-up costs do not decide), caches the faster plan in
:attr:`PromptBank.plan_choices` and returns that plan's output; that first call therefore
costs ``2 * calibration_repeats`` passes.  Later calls with the same signature run the
cached plan directly (no timing).  When both plans would execute the same passes (e.g. one
task per prompt length) nothing is timed and the grouped plan runs.  Adding or removing a
prompt clears the cached choices.  :meth:`PromptBank.calibrate` does the same ahead of time
from an example batch.  Which plan wins depends on the machine, the batch composition and
the thread count (one large batch vs several small ones), hence the measurement: see
``benchmarks/results/bank.md``.

Everything runs under :func:`torch.inference_mode` with the bank in eval mode.

Example (images ``(B, C, H, W)``, one name per sample -> list of ``B`` logits tensors)::

    >>> import torch
    >>> from timm.models.vision_transformer import VisionTransformer
    >>> from polyprompt.core import PromptBank, TimmViTAdapter, create
    >>> vit = VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=64, depth=3,
    ...                         num_heads=4, num_classes=0)
    >>> bank = PromptBank(TimmViTAdapter(vit))
    >>> bank.add("digits", create("vpt", bank.backbone, num_classes=10, num_tokens=4))
    >>> bank.add("parity", create("vpt", bank.backbone, num_classes=2, num_tokens=4, deep=True))
    >>> bank.add("probe", create("linear_probe", bank.backbone, num_classes=3))
    >>> out = bank(torch.randn(4, 1, 32, 32), ["digits", "parity", "digits", "probe"])
    >>> [tuple(o.shape) for o in out]
    [(10,), (2,), (10,), (3,)]
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polyprompt.core.errors import BackboneMismatchError, InputError, ShapeError
from polyprompt.core.methods.base import PromptMethod
from polyprompt.core.validation import check_tensor

__all__ = ["BankPlan", "PromptBank"]

#: what a method must expose to share a mixed backbone pass (see methods/classify.py)
BANK_INTERFACE = (
    "num_prompt_tokens",
    "deep_prompt_layers",
    "prompt_tokens",
    "deep_prompt",
    "forward_head",
)


class BankPlan(str, Enum):
    """Execution plan of :meth:`PromptBank.forward`."""

    AUTO = "auto"
    MIXED = "mixed"
    GROUPED = "grouped"


@dataclass
class _Task:
    """Rows of one prompt name inside one call."""

    name: str
    method: nn.Module
    rows: list[int] = field(default_factory=list)

    @property
    def mixable(self) -> bool:
        return all(hasattr(self.method, a) for a in BANK_INTERFACE)

    @property
    def n(self) -> int:
        return int(self.method.num_prompt_tokens) if self.mixable else -1

    @property
    def prompt_free(self) -> bool:
        return self.mixable and self.n == 0 and not tuple(self.method.deep_prompt_layers)


class PromptBank(nn.Module):
    """One frozen backbone shared by many named prompt methods.

    Args:
        backbone: the backbone adapter every added method must be built on.
        plan: default plan, ``"auto"`` (measure, see module docstring), ``"mixed"`` or
            ``"grouped"``.
        calibration_repeats: timed runs per plan when ``"auto"`` meets a new signature.

    Attributes:
        backbone: the shared backbone (build methods on it: ``create(..., bank.backbone, ...)``).
        methods: ``nn.ModuleDict`` name -> method.
        plan_choices: ``{signature: {"plan": ..., "mixed_s": ..., "grouped_s": ...}}``.
        last_plan: the plan the latest :meth:`forward` executed.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        plan: BankPlan | str = BankPlan.AUTO,
        calibration_repeats: int = 2,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise InputError(
                f"PromptBank: backbone must be an nn.Module adapter, got {type(backbone).__name__}"
            )
        if not isinstance(calibration_repeats, int) or calibration_repeats < 1:
            raise InputError(
                f"PromptBank: calibration_repeats must be an int >= 1, got {calibration_repeats!r}"
            )
        self.backbone = backbone
        self.methods = nn.ModuleDict()
        self.plan = _plan(plan, "PromptBank")
        self.calibration_repeats = calibration_repeats
        self.plan_choices: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.last_plan: str | None = None
        self.backbone.eval()

    # ------------------------------------------------------------------ registry
    @property
    def names(self) -> list[str]:
        """Prompt names in insertion order."""
        return list(self.methods.keys())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.methods

    def __len__(self) -> int:
        return len(self.methods)

    def add(self, name: str, method: PromptMethod, replace: bool = False) -> None:
        """Register ``method`` under ``name``.

        The method must wrap this bank's backbone object.  A method built on another object
        with the *same* identity (same class, sizes and weight fingerprint) is rebound to the
        bank's backbone, so only one copy stays referenced.

        Raises:
            InputError: bad name, not a method, or ``name`` taken and ``replace=False``.
            BackboneMismatchError: the method's backbone has a different identity.
        """
        self._adopt(name, method, replace, "PromptBank.add")
        method.eval()
        self.methods[name] = method
        self.plan_choices.clear()

    def _adopt(self, name: str, method: PromptMethod, replace: bool, where: str) -> None:
        """Validate ``name`` / ``method`` and bind the method to this bank's backbone."""
        if not isinstance(name, str) or not name or "." in name:
            raise InputError(f"{where}: name must be a non-empty string without '.', got {name!r}")
        if not isinstance(method, nn.Module) or not hasattr(method, "backbone"):
            raise InputError(
                f"{where}: {name!r}: expected a PromptMethod with a .backbone, got "
                f"{type(method).__name__}"
            )
        if name in self.methods and not replace:
            raise InputError(
                f"{where}: a prompt named {name!r} already exists; pass replace=True to overwrite"
            )
        if method.backbone is not self.backbone:
            mine, theirs = _identity(self.backbone), _identity(method.backbone)
            if mine != theirs:
                diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                raise BackboneMismatchError(
                    f"{where}: method {name!r} ({type(method).__name__}) wraps a different "
                    f"backbone than this bank (differs in {diff}); a PromptBank keeps ONE "
                    f"backbone: build the method on bank.backbone"
                )
            method.backbone = self.backbone

    def remove(self, name: str) -> PromptMethod:
        """Remove and return the method called ``name`` (InputError if unknown)."""
        if name not in self:
            raise InputError(f"PromptBank.remove: unknown prompt {name!r}; known: {self.names}")
        method = self.methods[name]
        del self.methods[name]
        self.plan_choices.clear()
        return method  # type: ignore[return-value]

    def load(
        self,
        name: str,
        method: PromptMethod,
        directory: str | Path,
        *,
        replace: bool = False,
        strict_backbone: bool = True,
    ) -> PromptMethod:
        """Load a prompt-only checkpoint into ``method`` (built on :attr:`backbone`) and add it.

        Uses :func:`polyprompt.core.checkpoint.load_prompt`, which checks the backbone identity
        (``BackboneMismatchError``) and the shapes (``CheckpointError``).

        Example::

            >>> bank.load("digits", create("vpt", bank.backbone, num_classes=10), "ckpt/digits")  # doctest: +SKIP
        """
        from polyprompt.core.checkpoint import load_prompt

        self._adopt(name, method, replace, "PromptBank.load")
        load_prompt(method, directory, strict_backbone=strict_backbone)
        method.eval()
        self.methods[name] = method
        self.plan_choices.clear()
        return method

    # ------------------------------------------------------------------ forward
    def forward(
        self, x: torch.Tensor, prompts: Sequence[str], plan: BankPlan | str | None = None
    ) -> list[torch.Tensor]:
        """Per-sample logits for a batch whose samples name their prompt.

        Args:
            x: inputs ``(B, ...)`` (images ``(B, C, H, W)`` for a ViT).
            prompts: ``B`` prompt names, one per sample.
            plan: override the bank's default plan for this call.

        Returns:
            ``B`` tensors; ``out[i]`` has shape ``(num_classes of prompts[i],)``.
        """
        chosen = self.plan if plan is None else _plan(plan, "PromptBank.forward")
        tasks = self._tasks(x, prompts, "PromptBank.forward")
        with torch.inference_mode():
            self._ensure_eval()
            if chosen is BankPlan.AUTO:
                return self._auto(x, tasks)
            self.last_plan = chosen.value
            return self._run(x, tasks, mixed=chosen is BankPlan.MIXED)

    def forward_mixed(self, x: torch.Tensor, prompts: Sequence[str]) -> list[torch.Tensor]:
        """:meth:`forward` with the mixed plan (one pass per prompt length)."""
        return self.forward(x, prompts, plan=BankPlan.MIXED)

    def forward_grouped(self, x: torch.Tensor, prompts: Sequence[str]) -> list[torch.Tensor]:
        """:meth:`forward` with the grouped plan (one pass per prompt name)."""
        return self.forward(x, prompts, plan=BankPlan.GROUPED)

    def calibrate(
        self, example_x: torch.Tensor, names: Sequence[str], repeats: int | None = None
    ) -> str:
        """Time both plans on ``example_x`` / ``names``, cache and return the faster one.

        Later ``plan="auto"`` calls with the same composition signature (see module docstring)
        use the cached choice without timing.
        """
        tasks = self._tasks(example_x, names, "PromptBank.calibrate")
        with torch.inference_mode():
            self._ensure_eval()
            self.plan_choices.pop(self._signature(example_x, tasks), None)
            self._auto(example_x, tasks, repeats=repeats)
        return str(self.last_plan)

    # ------------------------------------------------------------------ internals
    def _tasks(self, x: torch.Tensor, prompts: Sequence[str], where: str) -> list[_Task]:
        check_tensor(x, "x", min_size={0: 1}, where=where)
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise InputError(
                f"{where}: `prompts` must be a sequence of prompt names (one per sample), got "
                f"{type(prompts).__name__}"
            )
        if len(prompts) != x.shape[0]:
            raise ShapeError(
                f"{where}: got {len(prompts)} prompt names for a batch of {x.shape[0]} samples "
                f"(x shape {tuple(x.shape)}); pass one name per sample"
            )
        if not self.methods:
            raise InputError(f"{where}: the bank is empty; add prompts with bank.add(name, method)")
        tasks: dict[str, _Task] = {}
        for i, name in enumerate(prompts):
            task = tasks.get(name) if isinstance(name, str) else None
            if task is None:
                if not isinstance(name, str) or name not in self.methods:
                    raise InputError(
                        f"{where}: unknown prompt {name!r} at sample {i}; known: {self.names}"
                    )
                task = tasks[name] = _Task(name, self.methods[name])
            task.rows.append(i)
        return list(tasks.values())

    def _ensure_eval(self) -> None:
        if (
            self.training
            or self.backbone.training
            or any(m.training for m in self.methods.values())
        ):
            self.eval()

    def _groups(self, tasks: list[_Task], mixed: bool) -> list[list[_Task]]:
        groups: dict[Any, list[_Task]] = {}
        for t in tasks:
            if not t.mixable:
                key: Any = ("alone", t.name)
            elif mixed:
                key = ("n", t.n)
            else:
                key = ("free",) if t.prompt_free else ("task", t.name)
            groups.setdefault(key, []).append(t)
        return list(groups.values())

    def _signature(self, x: torch.Tensor, tasks: list[_Task]) -> tuple[Any, ...]:
        counts: dict[int, int] = {}
        for t in tasks:
            counts[t.n] = counts.get(t.n, 0) + 1
        return (
            x.device.type,
            str(x.dtype),
            tuple(x.shape[1:]),
            int(x.shape[0]),
            tuple(sorted(counts.items())),
        )

    def _auto(
        self, x: torch.Tensor, tasks: list[_Task], repeats: int | None = None
    ) -> list[torch.Tensor]:
        if len(self._groups(tasks, True)) == len(self._groups(tasks, False)):
            self.last_plan = BankPlan.GROUPED.value  # both plans run the same passes
            return self._run(x, tasks, mixed=False)
        sig = self._signature(x, tasks)
        known = self.plan_choices.get(sig)
        if known is not None:
            self.last_plan = known["plan"]
            return self._run(x, tasks, mixed=known["plan"] == BankPlan.MIXED.value)
        repeats = self.calibration_repeats if repeats is None else repeats
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise InputError(f"PromptBank.calibrate: repeats must be an int >= 1, got {repeats!r}")
        best = {True: float("inf"), False: float("inf")}
        outs: dict[bool, list[torch.Tensor]] = {}
        # alternating runs, best of `repeats`: the first run of each plan pays the one-time
        # costs (allocator growth, kernel selection), the later ones are warm
        for _ in range(repeats):
            for mixed in (True, False):
                seconds, outs[mixed] = self._timed(x, tasks, mixed)
                best[mixed] = min(best[mixed], seconds)
        use_mixed = best[True] < best[False]
        choice = BankPlan.MIXED.value if use_mixed else BankPlan.GROUPED.value
        self.plan_choices[sig] = {
            "plan": choice,
            "mixed_s": best[True],
            "grouped_s": best[False],
            "repeats": repeats,
        }
        self.last_plan = choice
        return outs[use_mixed]

    def _timed(
        self, x: torch.Tensor, tasks: list[_Task], mixed: bool
    ) -> tuple[float, list[torch.Tensor]]:
        cuda = x.is_cuda
        if cuda:
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        out = self._run(x, tasks, mixed=mixed)
        if cuda:
            torch.cuda.synchronize(x.device)
        return time.perf_counter() - t0, out

    def _run(self, x: torch.Tensor, tasks: list[_Task], mixed: bool) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * x.shape[0]
        groups = self._groups(tasks, mixed)
        embedded: torch.Tensor | None = None
        for group in groups:
            rows = [r for t in group for r in t.rows]
            if not group[0].mixable:
                index = torch.tensor(rows, device=x.device)
                logits = group[0].method(x.index_select(0, index))
                _scatter(out, group[0].rows, logits)
                continue
            if embedded is None:
                embedded = self.backbone.embed(x)
            if len(groups) == 1 and rows == list(range(x.shape[0])):
                tokens = embedded
            else:
                tokens = embedded.index_select(0, torch.tensor(rows, device=x.device))
            features = self._features(tokens, group)
            offset = 0
            for t in group:
                k = len(t.rows)
                _scatter(out, t.rows, t.method.forward_head(features[offset : offset + k]))
                offset += k
        return out  # type: ignore[return-value]

    def _features(self, tokens: torch.Tensor, group: list[_Task]) -> torch.Tensor:
        """One backbone pass for the rows of ``group`` (ordered task by task) -> ``(Bg, D)``."""
        from polyprompt.core.methods.classify import insert_prompt, pool_tokens, replace_prompt

        bb = self.backbone
        p = int(getattr(bb, "num_prefix_tokens", 0))
        n = group[0].n
        if n:
            tokens = insert_prompt(
                tokens, _stack([t.method.prompt_tokens(1) for t in group], group), p
            )
        layers = sorted({layer for t in group for layer in t.method.deep_prompt_layers})
        start = 0
        for layer in layers:
            tokens = bb.forward_blocks(tokens, start, layer)
            old = tokens[:, p : p + n]
            pieces, offset = [], 0
            for t in group:
                k = len(t.rows)
                new = t.method.deep_prompt(layer, 1)
                pieces.append(old[offset : offset + k] if new is None else new.expand(k, -1, -1))
                offset += k
            tokens = replace_prompt(tokens, torch.cat(pieces) if len(pieces) > 1 else pieces[0], p)
            start = layer
        tokens = bb.forward_blocks(tokens, start)
        return pool_tokens(bb, bb.norm(tokens), n)


# ---------------------------------------------------------------------- helpers
def _plan(plan: BankPlan | str, where: str) -> BankPlan:
    try:
        return BankPlan(plan)
    except ValueError:
        choices = ", ".join(repr(p.value) for p in BankPlan)
        raise InputError(f"{where}: plan must be one of {choices}, got {plan!r}") from None


def _stack(prompts: list[torch.Tensor], group: list[_Task]) -> torch.Tensor:
    """Per-task prompts ``(1, n, D)`` -> per-row prompts ``(Bg, n, D)`` (rows ordered by task)."""
    if len(prompts) == 1:
        return prompts[0].expand(len(group[0].rows), -1, -1)
    return torch.cat([p.expand(len(t.rows), -1, -1) for p, t in zip(prompts, group)])


def _scatter(out: list[torch.Tensor | None], rows: list[int], logits: torch.Tensor) -> None:
    for j, r in enumerate(rows):
        out[r] = logits[j]


def _identity(backbone: nn.Module) -> dict[str, Any]:
    ident = getattr(backbone, "identity", None)
    if callable(ident):
        data = ident()
    else:
        from polyprompt.core.freezing import module_identity

        data = module_identity(backbone)
    return json.loads(json.dumps(data, default=str))
