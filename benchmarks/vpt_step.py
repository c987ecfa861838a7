"""VPT-shallow training step vs full fine-tuning vs linear probe on one ViT-S/16 (CPU).

Every configuration runs in its own fresh subprocess (``--child CONFIG``), so its memory is
measured from a clean process:

* baseline = resident memory after building model + optimizer + batch and one no-grad forward
  (the kernel's high-water mark is reset there through ``/proc/self/clear_refs``);
* net peak = high-water resident memory over all training steps - baseline;
* step time = median of the timed steps (forward + backward + optimizer step) after warm-up;
* saved activations = bytes autograd keeps for backward in one step (counted with
  ``saved_tensors_hooks``, parameters excluded -- deterministic, allocator-independent);
* grad + optimizer state = trainable parameters x 4 bytes x 3 (gradient, AdamW's two moments).

Configurations (timm ``vit_small_patch16_224``, ``pretrained=False``, 224x224, CPU, 2 threads,
AdamW for every method)::

    full_ft        every weight trains
    linear_probe   frozen backbone, head only
    vpt10 / vpt50  VPT-shallow, 10 / 50 prompt tokens (frozen backbone, prompts + head)
    +lean          polyprompt.core.memory.lean_frozen_mlps: frozen MLPs run chunked, no (B, L, 4D)
                   temporaries (same saved tensors, no recompute)
    +leanrc        lean_frozen_mlps(recompute=True): also keeps the fc1 input instead of the GELU
                   input and recomputes fc1 in backward
    +ckpt          polyprompt.core.memory.checkpoint_blocks: every block rerun in backward
    @mmap          polyprompt.core.memory.limit_heap_fragmentation() (fixed glibc mmap threshold);
                   rows without it use glibc's default allocator

Run ``python benchmarks/vpt_step.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import current_rss_bytes, parse_args, peak_rss_bytes, write_results

NAME = "vpt_step"
MODEL = "vit_small_patch16_224"
THREADS = 2
MiB = 2**20
CHUNK_ROWS = int(os.environ.get("VPT_STEP_CHUNK_ROWS", "1024"))

# (config, what it is); each runs in a fresh process
FULL_CONFIGS = [
    ("full_ft", "full fine-tuning"),
    ("linear_probe", "linear probe"),
    ("vpt10", "VPT-shallow 10 tokens, naive"),
    ("vpt10+lean", "VPT-10 + lean_frozen_mlps"),
    ("vpt10+leanrc", "VPT-10 + lean_frozen_mlps(recompute=True)"),
    ("vpt10+ckpt", "VPT-10 + checkpoint_blocks"),
    ("vpt50", "VPT-shallow 50 tokens, naive"),
    ("full_ft@mmap", "full fine-tuning"),
    ("vpt10@mmap", "VPT-10, naive"),
]
QUICK_CONFIGS = [
    ("full_ft", "full fine-tuning"),
    ("linear_probe", "linear probe"),
    ("vpt10", "VPT-shallow 10 tokens, naive"),
    ("vpt10+lean", "VPT-10 + lean_frozen_mlps"),
    ("vpt10+ckpt", "VPT-10 + checkpoint_blocks"),
]
TARGET_TIME = 0.70
TARGET_MEM = 0.60


# --------------------------------------------------------------------------- child
def _parse_config(config: str) -> tuple[str, set[str], bool]:
    body, _, alloc = config.partition("@")
    method, *levers = body.split("+")
    if method not in ("full_ft", "linear_probe") and not (
        method.startswith("vpt") and method[3:].isdigit()
    ):
        raise SystemExit(f"unknown method in config {config!r}")
    if alloc not in ("", "mmap") or not set(levers) <= {"lean", "leanrc", "ckpt"}:
        raise SystemExit(f"bad config {config!r}")
    return method, set(levers), alloc == "mmap"


def _reset_peak() -> bool:
    """Reset the kernel's resident high-water mark (VmHWM / ru_maxrss) of this process."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:  # pragma: no cover - not Linux / not permitted
        return False


def run_child(config: str, batch: int, warmup: int, steps: int) -> dict[str, Any]:
    method, levers, mmap = _parse_config(config)
    import torch

    from polyprompt.core.memory import (
        checkpoint_blocks,
        lean_frozen_mlps,
        limit_heap_fragmentation,
        saved_tensor_bytes,
    )

    mmap_applied = limit_heap_fragmentation() if mmap else False
    torch.set_num_threads(THREADS)
    import timm

    from polyprompt.core import TimmViTAdapter, create

    torch.manual_seed(0)
    adapter = TimmViTAdapter(timm.create_model(MODEL, pretrained=False, num_classes=0))
    if method == "full_ft":
        model = create("full_finetune", adapter, num_classes=10)
    elif method == "linear_probe":
        model = create("linear_probe", adapter, num_classes=10)
    else:
        model = create("vpt", adapter, num_classes=10, num_tokens=int(method[3:]), deep=False)
    model.train()
    if "lean" in levers:
        lean_frozen_mlps(model, chunk_rows=CHUNK_ROWS)
    if "leanrc" in levers:
        lean_frozen_mlps(model, chunk_rows=CHUNK_ROWS, recompute=True)
    if "ckpt" in levers:
        checkpoint_blocks(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 224, 224, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)

    def loss_fn() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(x), y)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return float(loss.detach())

    with torch.no_grad():
        loss_fn()
    baseline = current_rss_bytes()
    reset = _reset_peak()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    times, losses = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        losses.append(step())
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = peak_rss_bytes()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    n = warmup + steps
    # deterministic accounting, after the measured steps (so it does not warm the heap before them)
    saved = saved_tensor_bytes(loss_fn, exclude=model)
    trainable = sum(p.numel() for p in params)
    return {
        "config": config,
        "batch": batch,
        "num_tokens": int(method[3:]) if method.startswith("vpt") else 0,
        "step_s": statistics.median(times),
        "step_times_s": times,
        "baseline_bytes": baseline,
        "peak_bytes": peak,
        "net_peak_bytes": peak - baseline,
        "peak_reset": reset,
        "mmap_threshold_applied": mmap_applied,
        "saved_activation_bytes": saved,
        "trainable_params": trainable,
        "grad_and_optimizer_bytes": trainable * 4 * 3,
        "sys_s_per_step": (ru1.ru_stime - ru0.ru_stime) / n,
        "user_s_per_step": (ru1.ru_utime - ru0.ru_utime) / n,
        "minor_faults_per_step": (ru1.ru_minflt - ru0.ru_minflt) / n,
        "losses": losses,
    }


# --------------------------------------------------------------------------- parent
def spawn(config: str, batch: int, warmup: int, steps: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    env.pop("MALLOC_MMAP_THRESHOLD_", None)  # the @mmap configs set it themselves
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", config]
    cmd += ["--batch", str(batch), "--warmup", str(warmup), "--steps", str(steps)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"child {config} failed:\n{out.stderr[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    result = json.loads(line)
    result["child_wall_s"] = time.perf_counter() - t0
    return result


def _probe_frozen_linear() -> dict[str, Any]:
    import torch

    from polyprompt.core.memory import frozen_linear_saves_input

    lin = torch.nn.Linear(8, 8).requires_grad_(False)
    out = lin(torch.randn(4, 8, requires_grad=True))
    attrs = sorted(a for a in dir(out.grad_fn) if a.startswith("_saved_"))
    return {
        "frozen_linear_saves_input": frozen_linear_saves_input(),
        "addmm_grad_fn": type(out.grad_fn).__name__,
        "addmm_saved_attrs": attrs,
        "saved_mat1_is_none": getattr(out.grad_fn, "_saved_mat1", None) is None,
    }


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--child")
    pre.add_argument("--batch", type=int, default=16)
    pre.add_argument("--warmup", type=int, default=1)
    pre.add_argument("--steps", type=int, default=3)
    known, rest = pre.parse_known_args(argv)
    if known.child:
        print(json.dumps(run_child(known.child, known.batch, known.warmup, known.steps)))
        return
    args = parse_args(__doc__.splitlines()[0], rest)
    if args.quick:
        configs, batch, warmup, steps = QUICK_CONFIGS, 2, 1, 2
    else:
        configs, batch, warmup, steps = FULL_CONFIGS, 16, 1, 3
    results = {}
    t_start = time.perf_counter()
    for config, _ in configs:
        results[config] = spawn(config, batch, warmup, steps)
        r = results[config]
        print(
            f"{config:>20}: {r['step_s']:.3f} s/step, net peak {r['net_peak_bytes'] / MiB:.0f} MiB "
            f"({r['child_wall_s']:.0f} s)",
            flush=True,
        )
    rows = []
    for config, what in configs:
        r = results[config]
        alloc = "fixed mmap threshold" if config.endswith("@mmap") else "glibc default"
        ref = results["full_ft@mmap" if config.endswith("@mmap") else "full_ft"]
        rows.append(
            {
                "config": config,
                "what": what,
                "allocator": alloc,
                "step_s": r["step_s"],
                "time_vs_full": r["step_s"] / ref["step_s"],
                "min_time_vs_full": min(r["step_times_s"]) / min(ref["step_times_s"]),
                "sys_s": r["sys_s_per_step"],
                "net_peak_MiB": r["net_peak_bytes"] / MiB,
                "mem_vs_full": r["net_peak_bytes"] / ref["net_peak_bytes"],
                "saved_act_MiB": r["saved_activation_bytes"] / MiB,
                "grad_opt_MiB": r["grad_and_optimizer_bytes"] / MiB,
                "state_vs_full": (r["saved_activation_bytes"] + r["grad_and_optimizer_bytes"])
                / (ref["saved_activation_bytes"] + ref["grad_and_optimizer_bytes"]),
            }
        )

    def verdict(config: str) -> dict[str, Any] | None:
        row = next((r for r in rows if r["config"] == config), None)
        if row is None:
            return None
        return {
            "time_vs_full": row["time_vs_full"],
            "time_target": TARGET_TIME,
            "time_ok": row["time_vs_full"] <= TARGET_TIME,
            "mem_vs_full": row["mem_vs_full"],
            "mem_target": TARGET_MEM,
            "mem_ok": row["mem_vs_full"] <= TARGET_MEM,
        }

    summary = {c: verdict(c) for c, _ in configs if c.startswith("vpt")}
    payload = {
        "model": MODEL,
        "batch": batch,
        "image_size": 224,
        "threads": THREADS,
        "optimizer": "AdamW(lr=1e-3), every method",
        "warmup_steps": warmup,
        "timed_steps": steps,
        "quick": args.quick,
        "targets": {"time_vs_full_ft": TARGET_TIME, "mem_vs_full_ft": TARGET_MEM},
        "summary": summary,
        "autograd_probe": _probe_frozen_linear(),
        "children": results,
        "total_wall_s": time.perf_counter() - t_start,
    }
    verdict_lines = [
        f"- `{c}`: time {v['time_vs_full']:.2f}x ({'met' if v['time_ok'] else 'missed'}), "
        f"memory {v['mem_vs_full']:.2f}x ({'met' if v['mem_ok'] else 'missed'})"
        for c, v in summary.items()
        if v is not None
    ]
    verdicts = "\n".join(verdict_lines)
    notes = f"""
Targets for VPT vs full fine-tuning (same allocator): step time <= {TARGET_TIME}x, net peak
memory <= {TARGET_MEM}x.

{verdicts}

ViT-S/16 (`{MODEL}`, random init), batch {batch}, 224x224, CPU, {THREADS} threads, AdamW for
every method; one fresh process per row. `step_s`: median of {steps} steps (forward + backward +
optimizer step) after {warmup} warm-up (`min_time_vs_full`: the same ratio from the fastest step of each row, less sensitive to other load); `sys_s`: kernel CPU time per step (page faults). `net_peak_MiB`: high-water resident memory over the
steps minus the resident memory after building model, optimizer, batch and one no-grad
forward. `*_vs_full`: ratio to the full fine-tuning row with the same allocator setting
(targets for VPT: time <= {TARGET_TIME}, memory <= {TARGET_MEM}). `saved_act_MiB`: bytes autograd
keeps for backward (counted, parameters excluded); `grad_opt_MiB`: gradients + AdamW moments
of the trainable parameters; `state_vs_full`: their sum relative to full fine-tuning.

Frozen linears: autograd already keeps only the weight, not the input
(`frozen_linear_saves_input() = {payload["autograd_probe"]["frozen_linear_saves_input"]}`), so
plain VPT already keeps only what the input gradient needs (LayerNorm inputs, the qkv output
and output of attention, the GELU input: about 10 (B, L, D) tensors per block, against about
17 for full fine-tuning) -- compare `saved_act_MiB`. What the levers change:
`+lean` keeps the same tensors but never allocates the three short-lived (B, L, 4D) MLP
temporaries per block (GELU output, two gradients), which lowers the transient peak and the
heap fragmentation they cause; `+leanrc` also keeps 3 (B, L, D) less per block and pays one
extra fc1 per block; `+ckpt` keeps block inputs only and reruns every block (about one extra
forward). `@mmap` rows call `limit_heap_fragmentation()` (fixed 1 MiB glibc mmap threshold):
glibc's default dynamic threshold serves activation-sized tensors from the heap, which
fragments (large saved tensors interleaved with freed temporaries and small allocations), so
resident memory exceeds the live tensors; with the fixed threshold every large tensor is
unmapped when freed -- resident memory then follows the live tensors, at the cost of page
faults on every fresh allocation (visible as system time in the step).

Step time: VPT still runs the forward and the input-gradient half of the backward through
all 12 blocks; attention's backward (about 2.5x its forward) and the element-wise ops are
paid in full by both methods, so from FLOPs alone VPT's step is about 0.70x full fine-tuning's.
"""
    write_results(
        NAME,
        args.out,
        payload,
        rows,
        title="VPT step vs full fine-tuning vs linear probe",
        notes=notes,
    )


if __name__ == "__main__":
    main()
