"""Benchmark (c): PromptBank mixed-task serving vs one batch per task.

Setup: a ViT-S/16 (timm ``vit_small_patch16_224``, ``pretrained=False``: random weights are
fine for timing) shared by 8 VPT prompts -- 4 VPT-shallow and 4 VPT-deep, 10 tokens each,
10 classes each -- and one batch of 64 images = 8 tasks x 8 samples, interleaved
(sample ``i`` asks for task ``i % 8``).

Compared side by side in one process, in round-robin order (so that drift in machine load
hits every variant alike), median of N:

* ``per-task batches`` (baseline): gather each task's 8 samples and call that task's
  method on them -- 8 backbone passes of 8 images;
* ``bank grouped``: ``PromptBank.forward_grouped`` (one pass per prompt name, shared embed);
* ``bank mixed``: ``PromptBank.forward_mixed`` (one pass of 64 images, per-sample prompts);
* ``bank auto``: ``PromptBank.forward`` with ``plan="auto"`` after its one-time calibration
  (the first call; its cost is reported separately).

Every variant's output is compared with the baseline's (max absolute logit difference).
No separate warm-up: the reference call warms the per-task path and the calibration call
warms both bank plans.  Median of 3 (``--quick``: 1).

Outputs: ``<out>/bank.json`` and ``<out>/bank.md``.  On CUDA the same table is measured on
the GPU as well.  ``torch.set_num_threads`` is left at torch's default.

Usage::

    python benchmarks/bank.py [--quick] [--out DIR]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _harness import parse_args, write_results

NUM_TASKS, PER_TASK, NUM_TOKENS, NUM_CLASSES = 8, 8, 10, 10


def build(device: str) -> tuple[Any, torch.Tensor, list[str]]:
    from polyprompt.core import PromptBank, TimmViTAdapter, create

    torch.manual_seed(0)
    backbone = TimmViTAdapter.from_name("vit_small_patch16_224").to(device)
    bank = PromptBank(backbone)
    for t in range(NUM_TASKS):
        deep = t % 2 == 1  # 4 shallow + 4 deep
        method = create(
            "vpt", bank.backbone, num_classes=NUM_CLASSES, num_tokens=NUM_TOKENS, deep=deep
        )
        bank.add(f"task{t}", method.to(device))
    x = torch.randn(NUM_TASKS * PER_TASK, 3, 224, 224, device=device)
    names = [f"task{i % NUM_TASKS}" for i in range(len(x))]
    return bank, x, names


def per_task(bank: Any, x: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
    """Baseline: one batch per task through that task's own forward."""
    out: list[torch.Tensor | None] = [None] * len(names)
    with torch.inference_mode():
        for name in dict.fromkeys(names):
            rows = [i for i, n in enumerate(names) if n == name]
            logits = bank.methods[name](x[torch.tensor(rows, device=x.device)])
            for j, r in enumerate(rows):
                out[r] = logits[j]
    return out  # type: ignore[return-value]


def round_robin(
    fns: dict[str, Callable[[], Any]], *, warmup: int, repeats: int, cuda: bool
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Time every function ``repeats`` times in round-robin order; also return last outputs."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    last: dict[str, Any] = {}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            last[name] = fn()
            if cuda:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    stats = {
        k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "repeats": len(v)}
        for k, v in times.items()
    }
    return stats, last


def measure(device: str, warmup: int, repeats: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    bank, x, names = build(device)
    cuda = device.startswith("cuda")
    ref = per_task(bank, x, names)

    t0 = time.perf_counter()
    with torch.inference_mode():
        auto_first = bank(x, names)  # calibration: times both plans, caches the choice
    if cuda:
        torch.cuda.synchronize()
    calibration_s = time.perf_counter() - t0
    choice = dict(next(iter(bank.plan_choices.values()), {"plan": bank.last_plan}))

    fns = {
        "per-task batches (baseline)": lambda: per_task(bank, x, names),
        "bank grouped": lambda: bank.forward_grouped(x, names),
        "bank mixed (one batch)": lambda: bank.forward_mixed(x, names),
        "bank auto": lambda: bank(x, names),
    }
    timing, last = round_robin(fns, warmup=warmup, repeats=repeats, cuda=cuda)
    base = timing["per-task batches (baseline)"]["median_s"]
    last["bank auto (first call)"] = auto_first
    max_diff = {
        name: max(float((a - b).abs().max()) for a, b in zip(out, ref))
        for name, out in last.items()
    }
    rows = []
    for name, t in timing.items():
        rows.append(
            {
                "device": device,
                "variant": name,
                "median_s": t["median_s"],
                "min_s": t["min_s"],
                "images_per_s": len(x) / t["median_s"],
                "speedup_vs_per_task": base / t["median_s"],
            }
        )
    backbone_params = sum(p.numel() for p in bank.backbone.parameters())
    bank_params = sum(p.numel() for p in bank.parameters())
    extra = {
        "calibration_first_call_s": calibration_s,
        "auto_choice": choice,
        "max_abs_diff_vs_per_task": max_diff,
        "backbone_params": backbone_params,
        "bank_params_total": bank_params,
        "prompt_and_head_params": bank_params - backbone_params,
        "backbones_in_memory": len({id(m.backbone) for m in bank.methods.values()}),
    }
    return rows, extra


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    warmup, repeats = (0, 1) if args.quick else (0, 3)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for device in devices:
        r, extra = measure(device, warmup, repeats)
        rows += r
        details[device] = extra
        print(f"[{device}] auto chose {extra['auto_choice'].get('plan')}; {extra}", flush=True)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    details["load_average_1min"] = {"start": load_start, "end": load_end}
    notes = [
        f"Setup: ViT-S/16 (random weights), {NUM_TASKS} VPT prompts (4 shallow + 4 deep, "
        f"{NUM_TOKENS} tokens, {NUM_CLASSES} classes each), batch {NUM_TASKS * PER_TASK} = "
        f"{NUM_TASKS} tasks x {PER_TASK} samples, interleaved; warm-up {warmup}, median of "
        f"{repeats}, variants measured in round-robin order; torch threads "
        f"{torch.get_num_threads()}; 1-min load average {load_start:.1f} at start, "
        f"{load_end:.1f} at end (other processes share the cores when it exceeds the CPU count).",
    ]
    for device in devices:
        extra = details[device]
        c = extra["auto_choice"]
        timing = (
            f" (calibration: mixed {c['mixed_s']:.3g} s, grouped {c['grouped_s']:.3g} s)"
            if "mixed_s" in c
            else ""
        )
        notes.append(
            f"- {device}: auto plan chose **{c.get('plan')}**{timing}; first call incl. "
            f"calibration {extra['calibration_first_call_s']:.3g} s; max |logit diff| vs per-task "
            f"{max(extra['max_abs_diff_vs_per_task'].values()):.2e}; "
            f"{extra['backbones_in_memory']} backbone in memory "
            f"({extra['backbone_params']:,} params) + {extra['prompt_and_head_params']:,} "
            f"prompt/head params for all {NUM_TASKS} tasks."
        )
    if "cuda" not in devices:
        notes.append("- cuda: no GPU on this machine; rerun there for the GPU rows.")
    write_results(
        "bank",
        args.out,
        {"details": details, "quick": args.quick, "warmup": warmup, "repeats": repeats},
        rows,
        title="PromptBank: mixed-task batch vs per-task batches",
        notes="\n".join(notes),
    )


if __name__ == "__main__":
    main()
