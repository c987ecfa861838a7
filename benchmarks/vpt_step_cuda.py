"""VPT training step vs full fine-tuning vs linear probe on one ViT-B/16, on a CUDA GPU.

The CPU benchmark (``vpt_step.py``) measures resident memory of fresh processes; on a GPU
the allocator's own counters are exact, so every configuration lives in one process and
the step times are measured **round-robin** (each repeat times every configuration once,
so drift in clocks or load hits all alike).

Per configuration (timm ``vit_base_patch16_224``, ``pretrained=False`` -- random weights are
fine for timing; 224x224, batch 64, bfloat16 autocast, AdamW, ``set_to_none`` gradients):

* step time = median over repeats of the mean time of ``--steps`` consecutive training steps
  (forward + backward + optimizer step), CUDA-synchronised;
* step peak = ``max_memory_allocated`` during those steps minus the memory allocated before
  them (activations + gradients + temporaries of one step);
* state = trainable parameters x 4 bytes x 3 (fp32 gradient + AdamW's two moments);
* images/s = batch / step time.

Configurations::

    full_ft        every weight trains
    linear_probe   frozen backbone, head only
    vpt10 / vpt50  VPT-shallow, 10 / 50 prompt tokens (frozen backbone; prompts + head train)
    vpt10_deep     VPT-deep, 10 tokens in every block
    vpt10+ckpt     VPT-10 + polyprompt.core.memory.checkpoint_blocks (blocks rerun in backward)

Run on a GPU machine: ``python benchmarks/vpt_step_cuda.py [--quick] [--out DIR]``.
Without CUDA it stops with a message (``--device cpu --model vit_tiny_patch16_224 --batch 2``
is a smoke run of the script itself, not a measurement).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import RESULTS_DIR, write_results

NAME = "vpt_step_cuda"
MiB = 2**20
CONFIGS = [
    ("full_ft", "full fine-tuning"),
    ("linear_probe", "linear probe"),
    ("vpt10", "VPT-shallow, 10 tokens"),
    ("vpt50", "VPT-shallow, 50 tokens"),
    ("vpt10_deep", "VPT-deep, 10 tokens per block"),
    ("vpt10+ckpt", "VPT-shallow 10 + checkpoint_blocks"),
]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 repeats of 3 steps (smoke run)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder")
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--batch", type=int, default=64)
    return p.parse_args(argv)


def build(config: str, model_name: str, device: str) -> Any:
    import timm
    import torch

    from polyprompt.core import TimmViTAdapter, create
    from polyprompt.core.memory import checkpoint_blocks

    torch.manual_seed(0)
    adapter = TimmViTAdapter(timm.create_model(model_name, pretrained=False, num_classes=0))
    method, _, lever = config.partition("+")
    if method == "full_ft":
        model = create("full_finetune", adapter, num_classes=10)
    elif method == "linear_probe":
        model = create("linear_probe", adapter, num_classes=10)
    else:
        tokens, _, kind = method[3:].partition("_")
        model = create("vpt", adapter, num_classes=10, num_tokens=int(tokens), deep=kind == "deep")
    if lever == "ckpt":
        checkpoint_blocks(model)
    return model.to(device).train()


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    import torch

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("vpt_step_cuda: no CUDA device here; run it on a GPU machine")
    repeats, steps, warmup = (2, 3, 2) if args.quick else (5, 10, 3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, 224, 224, generator=g).to(args.device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(args.device)
    amp_dtype = torch.bfloat16

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    runs: dict[str, dict[str, Any]] = {}
    for config, _ in CONFIGS:
        model = build(config, args.model, args.device)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
        runs[config] = {"model": model, "opt": opt, "trainable": sum(p.numel() for p in params)}
        runs[config]["total"] = sum(p.numel() for p in model.parameters())

    def step(config: str) -> float:
        run = runs[config]
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=amp_dtype):
            loss = torch.nn.functional.cross_entropy(run["model"](x), y)
        loss.backward()
        run["opt"].step()
        run["opt"].zero_grad(set_to_none=True)
        return float(loss.detach())

    losses: dict[str, list[float]] = {c: [] for c, _ in CONFIGS}
    for config, _ in CONFIGS:  # warm-up: kernels, autotuning, optimizer state
        for _ in range(warmup):
            losses[config].append(step(config))
    sync()
    times: dict[str, list[float]] = {c: [] for c, _ in CONFIGS}
    peaks: dict[str, int] = {c: 0 for c, _ in CONFIGS}
    for _ in range(repeats):
        for config, _ in CONFIGS:
            sync()
            before = torch.cuda.memory_allocated() if cuda else 0
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(steps):
                losses[config].append(step(config))
            sync()
            times[config].append((time.perf_counter() - t0) / steps)
            if cuda:
                peaks[config] = max(peaks[config], torch.cuda.max_memory_allocated() - before)

    base_t = statistics.median(times["full_ft"])
    base_m = peaks["full_ft"]
    rows = []
    for config, what in CONFIGS:
        t = statistics.median(times[config])
        run = runs[config]
        state = run["trainable"] * 4 * 3
        rows.append(
            {
                "config": config,
                "what": what,
                "trainable_params": run["trainable"],
                "trainable_percent": 100.0 * run["trainable"] / run["total"],
                "step_ms": 1e3 * t,
                "images_per_s": args.batch / t,
                "step_peak_MiB": peaks[config] / MiB,
                "state_MiB": state / MiB,
                "time_vs_full_ft": t / base_t,
                "peak_vs_full_ft": peaks[config] / base_m if base_m else float("nan"),
                "loss_finite": all(math.isfinite(v) for v in losses[config]),
            }
        )
    notes = (
        f"{args.model} (random weights), batch {args.batch}, 224x224, bfloat16 autocast, AdamW; "
        f"{warmup} warm-up steps per config, then {repeats} round-robin repeats of {steps} steps; "
        "step_ms = median over repeats of the mean step time; step_peak = max_memory_allocated "
        "during the timed steps minus memory allocated before them; state = trainable params x "
        "4 B x 3 (fp32 grad + AdamW moments). Ratios are against full fine-tuning in this run."
    )
    write_results(
        NAME,
        args.out,
        {"device": args.device, "model": args.model, "batch": args.batch, "quick": args.quick},
        rows,
        title="VPT step vs full fine-tuning on a CUDA GPU (ViT-B/16)",
        notes=notes,
    )


if __name__ == "__main__":
    main()
