"""POND (polyprompt-timeseries) vs baselines on real smartwatch data + cost vs full fine-tuning.

One run measures, side by side:

* **quality**: leave-one-subject-out on seglearn ``load_watch()`` (10 subjects; every held-out
  subject is a target, the other 9 are sources), 5 labelled target windows per class, macro-F1
  on the target test recordings, mean over targets per seed, mean ± std over 3 seeds, for
  POND and every baseline (``polyprompt.timeseries.demo.run_demo``); plus how often POND's
  criterion-chosen source is the oracle-best source (vs chance 1/9);
* **cost** on the pooled source windows of one scenario (same batches, batch 64, CPU, 1 thread):
  training step time (median), epoch time, trainable share, bytes autograd saves for backward
  in one step (``saved_tensors_hooks``, parameters excluded) and gradient + AdamW state bytes,
  for full fine-tuning of the TSTPlus backbone, POND step 2a (all source prompts), POND step 3
  (one target prompt) and plain prompt tuning.

``--quick``: the last 3 target subjects (8, 9, 10) x 3 seeds with ``PipelineConfig.quick()``
(smaller backbone, fewer epochs); ``--quick --all-targets``: the quick config on all 10 subjects;
default: all 10 subjects x 3 seeds with ``PipelineConfig()``. The quick subset is the last three
subjects because subjects 2-7 served as pseudo-targets of the development protocol that chose
the selection and step-3 defaults (``examples/timeseries/pond_dev_protocol.py``: subject 1 held
out, pseudo-targets among the others); 8, 9 and 10 were never development targets.

Run ``python benchmarks/timeseries.py [--quick [--all-targets]] [--out DIR] [--work DIR]
[--jobs N]`` (``--jobs``: scenarios run at once, one process each, default 2; the results do not
depend on it).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import parse_args, saved_activation_bytes, time_fn, write_results


def cost_rows(cfg, data, target: int = 0, batch: int = 64) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from polyprompt.core.freezing import trainable_report
    from polyprompt.timeseries.pipeline import _local_domains, prepare_split, pretrain_tst

    split = prepare_split(data, target, cfg, 0)
    pre = pretrain_tst(split.sources, cfg)
    xs, ys, _ = split.sources.tensors()
    ds = torch.from_numpy(_local_domains(split.sources, split.source_ids))
    n_steps = (len(xs) + batch - 1) // batch
    xb, yb, db = xs[:batch], ys[:batch], ds[:batch]

    def pond(phase):
        m = pre.pond(cfg.pond(data.num_classes, len(split.source_ids)))
        m.set_phase(phase)
        m.train()
        d = db if phase == "sources" else torch.full_like(db, m.target_id)
        return m, lambda: m.losses(xb, yb, d)["total"]

    def classifier(kind, **kw):
        m = pre.method(kind, **kw)
        m.train()
        return m, lambda: F.cross_entropy(m(xb), yb)

    configs = {
        "full_finetune": lambda: classifier("full_finetune"),
        "pond_sources (step 2a)": lambda: pond("sources"),
        "pond_target (step 3)": lambda: pond("adapt"),
        "prompt_tuning": lambda: classifier("vpt", num_tokens=cfg.num_tokens),
    }
    rows = []
    for name, make in configs.items():
        model, loss_fn = make()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3)

        def step(opt=opt, loss_fn=loss_fn):
            opt.zero_grad(set_to_none=True)
            loss_fn().backward()
            opt.step()

        t = time_fn(step, warmup=2, repeats=10)
        rep = trainable_report(model)
        rows.append(
            {
                "method": name,
                "trainable_params": rep.trainable_params,
                "trainable_percent": round(rep.percent_of_backbone, 2),
                "step_ms": round(1000 * t["median_s"], 2),
                "epoch_s_pooled_sources": round(t["median_s"] * n_steps, 2),
                "saved_activations_MB": round(saved_activation_bytes(loss_fn) / 2**20, 2),
                "grad_adam_state_MB": round(rep.trainable_params * 12 / 2**20, 3),
            }
        )
    return rows


def main(argv=None) -> int:
    import argparse

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--all-targets", action="store_true", help="--quick on all 10 subjects")
    extra.add_argument("--work", type=Path, default=None, help="resumable scenario folder")
    extra.add_argument(
        "--jobs", type=int, default=2, help="scenarios at once, one process each (1 thread each)"
    )
    opts, rest = extra.parse_known_args(argv)
    args = parse_args(__doc__.splitlines()[0], rest)
    import torch

    from polyprompt.timeseries.demo import load_data, run_demo
    from polyprompt.timeseries.pipeline import PipelineConfig

    torch.set_num_threads(1)
    start = time.perf_counter()
    cfg = PipelineConfig.quick() if args.quick else PipelineConfig()
    data = load_data(None)
    quick_subset = args.quick and not opts.all_targets
    targets = data.domain_names[-3:] if quick_subset else data.domain_names
    work = opts.work or Path(tempfile.mkdtemp(prefix="pp-ts-bench-"))
    result = run_demo(
        quick=False,
        out_dir=work,
        config=cfg,
        targets=targets,
        seeds=(0, 1, 2),
        jobs=opts.jobs,
        progress=True,
        verbose=True,
    )
    costs = cost_rows(cfg, data)
    quality = {r["method"]: r for r in result["rows"]}
    rows = []
    for r in result["rows"]:
        rows.append(
            {
                "method": r["title"],
                "macro_F1_%": f"{100 * r['f1_mean']:.1f} ± {100 * r['f1_std']:.1f}",
                "trainable_%": round(r["trainable_percent"], 2),
                "checkpoint_bytes": r["checkpoint_bytes"],
                "s_per_scenario": round(r["seconds_mean"], 1),
            }
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("f1_by_subject", "criteria_vs_f1"):
        src = work / f"{name}.png"
        if src.is_file():
            shutil.copyfile(src, out / f"timeseries_{name}.png")
    sel = result["selection"]
    if quick_subset:
        mode = f"--quick (targets {list(targets)}, PipelineConfig.quick())"
    elif args.quick:
        mode = "--quick --all-targets (10 targets, PipelineConfig.quick())"
    else:
        mode = "full (10 targets, PipelineConfig())"
    notes = "\n".join(
        [
            "## Source selection",
            "",
            f"POND's chosen source = oracle-best source in {sel['agreement_with_oracle']:.0%} of "
            f"{sel['scenarios']} scenarios (chance {sel['chance']:.0%}); mean Spearman(score, real "
            f"target F1) = {sel['spearman_score_vs_f1_mean']}; mean F1 regret of the choice = "
            f"{sel['mean_f1_regret_of_choice']:.3f}.",
            "",
            "## Cost on the pooled source windows of one scenario (batch 64, CPU, 1 thread)",
            "",
            _md(costs),
            "",
            f"Mode: {mode}; "
            f"3 seeds; total {time.perf_counter() - start:.0f} s. Timings taken on a shared, "
            "contended 2-core machine: compare rows with each other, not with other machines.",
            "Plots: timeseries_f1_by_subject.png, timeseries_criteria_vs_f1.png.",
        ]
    )
    write_results(
        "timeseries",
        out,
        {"quality": quality, "selection": sel, "cost": costs, "per_scenario": result["runs"],
         "config": result["config"], "quick": args.quick, "targets": list(targets),
         "mode": mode},
        rows,
        title="POND (polyprompt-timeseries): leave-one-subject-out on seglearn watch",
        notes=notes,
    )  # fmt: skip
    if opts.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _md(rows: list[dict]) -> str:
    from _harness import markdown_table

    return markdown_table(rows)


if __name__ == "__main__":
    raise SystemExit(main())
