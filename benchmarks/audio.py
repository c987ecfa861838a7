"""Acoustic Prompt Tuning (polyprompt-audio): quality vs baselines, trainable share, step time, memory.

One run, side by side, on the same frozen encoder (AudioMAE-style ViT, MAE-pre-trained in-situ
on espeak-ng speech) and the same frozen tiny GPT-2 (pre-trained in-situ on stdlib
docstrings), both cached under ``$POLYPROMPT_HOME``, and the same real speech examples:

* quality: the example's protocol (:func:`polyprompt.audio.demo.run_demo`) at the benchmark's
  size (:meth:`polyprompt.audio.demo.DemoConfig.benchmark`: 400 training clips -> 2,000
  multi-task examples, where the example uses 80) — per task metric mean ± std over seeds
  for APT, the text-only LM (trained soft prompt, no audio), the linear probe on the frozen
  encoder (classification) and full fine-tuning of aligner + LM;
* cost per method: trainable parameters (% of the frozen backbone), prompt-only checkpoint
  bytes, training step time (forward + backward + AdamW step on one batch of 16 mixed-task
  examples, median; encoder features cached as in training) and training memory = bytes
  autograd saves for backward in one step (``saved_tensors_hooks``, parameters excluded) +
  gradients and AdamW state of the trainable parameters (3 x 4 bytes each).

Run ``python benchmarks/audio.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import parse_args, peak_rss_bytes, saved_activation_bytes, time_fn, write_results

NAME = "audio"


def _step_cost(method: Any, batch: list, label: str, quick: bool) -> dict[str, Any]:
    import torch

    from polyprompt.core.freezing import trainable_report

    method.train()
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    method(batch)  # warm the per-clip encoder feature cache, as during training

    def one_step() -> None:
        loss = method(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    saved = saved_activation_bytes(lambda: method(batch).backward())
    opt.zero_grad(set_to_none=True)
    timing = time_fn(one_step, warmup=1, repeats=3 if quick else 8)
    rep = trainable_report(method)
    grad_opt = 3 * 4 * rep.trainable_params
    return {
        "label": label,
        "trainable_params": rep.trainable_params,
        "trainable_pct": round(rep.percent_of_backbone, 3),
        "checkpoint_bytes": rep.checkpoint_bytes,
        "step_ms": round(1000 * timing["median_s"], 1),
        "saved_activations_MiB": round(saved / 2**20, 2),
        "grad_optimizer_MiB": round(grad_opt / 2**20, 2),
        "train_memory_MiB": round((saved + grad_opt) / 2**20, 2),
    }


def main(argv: list[str] | None = None) -> None:
    import torch

    from polyprompt.audio import baselines
    from polyprompt.audio.demo import (
        METHOD_NAMES,
        DemoConfig,
        _load_data,
        apt_config,
        build_backbone,
        run_demo,
    )
    from polyprompt.audio.method import AcousticPromptTuning

    args = parse_args(__doc__.splitlines()[0], argv)
    start = time.perf_counter()
    # every method, full fine-tuning included; 400 training clips (the example: 80, to stay
    # within 10 min) -- DemoConfig.benchmark() says why
    cfg = (DemoConfig.quick() if args.quick else DemoConfig.benchmark()).replace(
        methods=METHOD_NAMES
    )
    example_out = Path(tempfile.mkdtemp(prefix="polyprompt-audio-bench-"))
    result = run_demo(quick=args.quick, out_dir=example_out, config=cfg, progress=False)
    corpus = _load_data(cfg, None, progress=False)
    backbone, _ = build_backbone(cfg, corpus["train"], progress=False)  # cached by run_demo
    batch = corpus["train"][:16]
    apt_cfg = apt_config(cfg)
    torch.manual_seed(0)
    cost = [
        _step_cost(AcousticPromptTuning(backbone, apt_cfg), batch, "APT", args.quick),
        _step_cost(baselines.text_only(backbone, apt_cfg), batch, "text-only LM", args.quick),
        _step_cost(baselines.full_finetune(backbone, apt_cfg), batch, "full FT", args.quick),
    ]
    took = time.perf_counter() - start
    rows = [{k: v for k, v in r.items() if k not in ("title",)} for r in result.rows]
    notes = (
        "## Quality per task (mean ± std over seeds; caption BLEU-4, others accuracy)\n\n"
        f"{result.table()}\n\n"
        "## Cost per method (one batch of 16 mixed-task examples, CPU)\n\n"
        "| method | trainable params | trainable % | checkpoint bytes | step (ms) | saved activations (MiB) | grad + AdamW (MiB) | train memory (MiB) |\n"
        "|---|---|---|---|---|---|---|---|\n"
        + "".join(
            f"| {c['label']} | {c['trainable_params']:,} | {c['trainable_pct']} | {c['checkpoint_bytes']:,} | "
            f"{c['step_ms']} | {c['saved_activations_MiB']} | {c['grad_optimizer_MiB']} | {c['train_memory_MiB']} |\n"
            for c in cost
        )
        + f"\n{result.info['n_train']} training / {result.info['n_test']} test examples "
        f"(espeak-ng speech, held-out speakers); seeds {list(cfg.seeds)}.  \n"
        f"Total time {took:.0f} s; process peak RSS {peak_rss_bytes() / 2**20:.0f} MiB. "
        "Times are wall clock on this machine (inflated if other jobs shared its 2 cores).\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(example_out / "scores.png", args.out / f"{NAME}.png")
    write_results(
        NAME,
        args.out,
        {
            "example": result.to_dict(),
            "cost": cost,
            "quick": args.quick,
            "seconds": took,
        },
        rows,
        title="Acoustic Prompt Tuning (polyprompt-audio)" + (" — quick" if args.quick else ""),
        notes=notes,
    )


if __name__ == "__main__":
    main()
